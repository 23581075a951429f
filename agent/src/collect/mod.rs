//! Collectors: producers of metrics on a schedule.

pub mod alive;
