//! The `influxdb` output: HTTP `POST {url}/write?db=<ns>&precision=s` to an InfluxDB 1.x server,
//! the database being the namespace.
//!
//! - `204` is delivered.
//! - `404` "database not found": the database is created once with `CREATE DATABASE` through
//!   `/query`, and the write is tried again at once.
//! - Other `4xx` (bad data, a partial write): the batch is refused for good
//!   ([`DeliveryError::Reject`], with the server's answer); the delivery loop logs and counts it.
//! - `5xx`, timeouts and connection errors: [`DeliveryError::Retry`]; the delivery loop backs off.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;

use crate::error_chain::error_chain;
use tracing::info;

use super::{BoxFuture, DeliveryError, EncodedBatch, Output};

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest server answer quoted in an error.
const MAX_BODY_IN_ERROR: usize = 512;

/// Writes batches to an InfluxDB 1.x server.
pub struct InfluxOutput {
    client: reqwest::Client,
    base: String,
    /// Databases this output created (or saw missing and created); not created twice.
    created: HashSet<String>,
}

impl InfluxOutput {
    /// An output for the server at `url` (`http://host:8086`).
    pub fn new(url: &str) -> reqwest::Result<Self> {
        Ok(InfluxOutput {
            client: reqwest::Client::builder()
                .timeout(REQUEST_TIMEOUT)
                .build()?,
            base: url.trim_end_matches('/').to_owned(),
            created: HashSet::new(),
        })
    }

    async fn write(&self, batch: &EncodedBatch) -> Result<(StatusCode, String), DeliveryError> {
        let resp = self
            .client
            .post(format!("{}/write", self.base))
            .query(&[("db", batch.ns.as_str()), ("precision", "s")])
            .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(batch.payload.clone())
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        Ok((status, body))
    }

    async fn create_database(&self, db: &str) -> Result<(), DeliveryError> {
        let q = format!("CREATE DATABASE {}", quote_ident(db));
        let resp = self
            .client
            .post(format!("{}/query", self.base))
            .form(&[("q", q.as_str())])
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        // /query answers 200 with {"results":[{"error": ...}]} for a statement that failed.
        if status.is_success() && !body.contains("\"error\"") {
            info!(db, endpoint = %self.base, "Created the InfluxDB database.");
            return Ok(());
        }
        let e = format!(
            "InfluxDB {}: cannot create database {db:?}: HTTP {status}: {}",
            self.base,
            snippet(&body)
        );
        Err(if status.is_server_error() {
            DeliveryError::Retry(e)
        } else {
            DeliveryError::Reject(e)
        })
    }

    fn unreachable(&self, e: &reqwest::Error) -> DeliveryError {
        DeliveryError::Retry(format!("InfluxDB {}: {}", self.base, error_chain(e)))
    }

    async fn deliver_batch(&mut self, batch: &EncodedBatch) -> Result<(), DeliveryError> {
        let (mut status, mut body) = self.write(batch).await?;
        if status == StatusCode::NOT_FOUND
            && body.contains("database not found")
            && !self.created.contains(&batch.ns)
        {
            self.create_database(&batch.ns).await?;
            self.created.insert(batch.ns.clone());
            (status, body) = self.write(batch).await?;
        }
        if status.is_success() {
            return Ok(());
        }
        let e = format!(
            "InfluxDB {} refused a write to database {:?}: HTTP {status}: {}",
            self.base,
            batch.ns,
            snippet(&body)
        );
        if status.is_client_error() {
            Err(DeliveryError::Reject(e))
        } else {
            Err(DeliveryError::Retry(e))
        }
    }
}

/// An InfluxQL identifier in double quotes.
fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn snippet(body: &str) -> String {
    let body = body.trim();
    match body.char_indices().nth(MAX_BODY_IN_ERROR) {
        Some((at, _)) => format!("{}...", &body[..at]),
        None => body.to_owned(),
    }
}

impl Output for InfluxOutput {
    fn endpoint(&self) -> String {
        self.base.clone()
    }

    fn deliver<'a>(
        &'a mut self,
        batch: &'a Arc<EncodedBatch>,
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(self.deliver_batch(batch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_for_influxql() {
        assert_eq!(quote_ident("web.shop"), "\"web.shop\"");
        assert_eq!(quote_ident("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }

    #[test]
    fn long_answers_are_cut_in_errors() {
        let long = "x".repeat(2000);
        assert_eq!(snippet(&long).len(), MAX_BODY_IN_ERROR + 3);
        assert_eq!(snippet(" short \n"), "short");
    }

    #[tokio::test]
    async fn a_closed_port_is_a_retry_naming_the_server() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let mut out = InfluxOutput::new(&format!("http://127.0.0.1:{port}/")).expect("client");
        assert_eq!(out.endpoint(), format!("http://127.0.0.1:{port}"));
        let batch = Arc::new(EncodedBatch {
            ns: "a".into(),
            points: 1,
            payload: b"m value=1 1764000000\n".to_vec(),
        });
        match out.deliver(&batch).await {
            Err(DeliveryError::Retry(e)) => assert!(e.contains(&port.to_string()), "{e}"),
            other => panic!("expected Retry, got {other:?}"),
        }
    }
}
