//! The fleet: many agents at once. [`inventory`] names the hosts (a host file or a registry
//! namespace), [`probe`] asks them how they are; the `agentctl fleet` commands and the TUI's
//! Fleet screen are built on these two. See docs/fleet.md.

pub mod action;
pub mod filter;
pub mod inventory;
pub mod probe;
pub mod registry;
