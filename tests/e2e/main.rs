//! End-to-end tests: the real `agent` and `agentctl` binaries against real peers.
//!
//! One test binary (linking is the slow part on small machines); one module per feature.

mod api;
mod auth;
mod checkouts;
mod cli;
mod console;
mod contain;
mod fleet;
mod herd;
mod lifecycle;
mod metrics;
mod nsq;
mod plugins;
mod registry;
mod reload;
mod spool;
mod sysfam;
mod system;
mod tap;
