//! Collectors: producers of metrics on a schedule.

pub mod alive;
pub mod port;
pub mod proc;
pub mod system;
