//! Port checks: `PORT.<name>.<port>` is 1 when a TCP connect to the port succeeds within the
//! item's `connect_timeout`, 0 otherwise (refused, unreachable, unresolvable host, or timed out).

use std::time::Duration;

use shared::Metric;
use tokio::net::TcpStream;
use tracing::debug;

use crate::registry::PortItem;

/// Host checked when the item names none.
pub const DEFAULT_HOST: &str = "127.0.0.1";

/// The measurement name of an item: `PORT.<name>.<port>`.
pub fn measurement(item: &PortItem) -> String {
    format!("PORT.{}.{}", item.name, item.port)
}

/// Checks the port once. A `connect_timeout` of 0 is taken as 1 s: a zero deadline would report
/// every port as down.
pub async fn check(item: &PortItem) -> Metric {
    let host = item.host.as_deref().unwrap_or(DEFAULT_HOST);
    let timeout = Duration::from_secs(item.connect_timeout.max(1));
    let up = match tokio::time::timeout(timeout, TcpStream::connect((host, item.port))).await {
        Ok(Ok(_stream)) => true,
        Ok(Err(e)) => {
            debug!(check = %item.name, host, port = item.port, error = %e, "Port check failed.");
            false
        }
        Err(_) => {
            debug!(check = %item.name, host, port = item.port, ?timeout, "Port check timed out.");
            false
        }
    };
    Metric::new(measurement(item), if up { 1.0 } else { 0.0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(port: u16) -> PortItem {
        PortItem {
            name: "web".into(),
            port,
            connect_timeout: 1,
            host: None,
            interval: 30,
        }
    }

    #[tokio::test]
    async fn open_listener_is_1_and_closed_is_0() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let m = check(&item(port)).await;
        assert_eq!(m.name, format!("PORT.web.{port}"));
        assert_eq!(m.value, shared::Value::Float(1.0));
        drop(listener);
        let m = check(&item(port)).await;
        assert_eq!(m.value, shared::Value::Float(0.0), "closed listener");
    }

    #[tokio::test]
    async fn configured_host_is_used() {
        let listener = tokio::net::TcpListener::bind("127.0.0.2:0")
            .await
            .expect("bind 127.0.0.2");
        let port = listener.local_addr().expect("addr").port();
        assert_eq!(check(&item(port)).await.value, shared::Value::Float(0.0));
        let mut it = item(port);
        it.host = Some("127.0.0.2".into());
        assert_eq!(check(&it).await.value, shared::Value::Float(1.0));
    }
}
