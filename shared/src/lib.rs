//! Wire types and the typed API client shared by `agent` and `agentctl`.
//!
//! Everything that crosses the agent's HTTP API is defined here once: the metric a producer
//! sends, the answers of every endpoint, the endpoint paths, and a client that speaks them.

pub mod api;
pub mod client;
pub mod metric;

pub use client::{Client, ClientError};
pub use metric::{Metric, Value};

/// The API's default listen address, shared so the CLI and the agent agree.
pub const DEFAULT_ADDR: &str = "127.0.0.1:1232";
