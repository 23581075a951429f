//! Wire types and the typed API client shared by `agent` and `agentctl`.
//!
//! Everything that crosses the agent's HTTP API is defined here once: the metric a producer
//! sends, the answers of every endpoint, the endpoint paths, and a client that speaks them.

pub mod api;
pub mod client;
pub mod errors;
pub mod metric;
pub mod pointer;

pub use client::{Client, ClientError};
pub use metric::{Metric, Value};

/// The API's default listen address, shared so the CLI and the agent agree.
pub const DEFAULT_ADDR: &str = "127.0.0.1:1232";

/// Name of the token file the agent generates in its data dir when `agent.token` is not set.
pub const TOKEN_FILE_NAME: &str = "auth_token";

/// The token file of an agent installed with the packaged layout (`data_dir = /var/lib/agent`),
/// the last place agentctl looks.
pub const DEFAULT_TOKEN_FILE: &str = "/var/lib/agent/auth_token";

/// `n` and the noun, singular or plural: `1 namespace`, `2 namespaces` (nouns of this project
/// take an `s`).
pub fn count(n: impl Into<u64>, noun: &str) -> String {
    let n = n.into();
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
