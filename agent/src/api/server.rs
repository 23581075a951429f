//! Serving the router: HTTP/1.1 with a deadline for request heads, so idle and slow clients
//! cannot pile up, and a graceful shutdown that lets requests in progress finish.
//!
//! `axum::serve` sets no header read timeout (hyper needs a timer for it), hence this loop.

use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// A connection must deliver a request's head within this time, also between the requests of a
/// kept-alive connection; past it the connection is closed.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long requests in progress get to finish at shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Largest request head (request line and headers).
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Serves `app` on `listener` until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, app: Router, shutdown: CancellationToken) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES)
        // max_buf_size alone lets a head through that arrives whole in one read, however long.
        .max_header_size(MAX_HEAD_BYTES);
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Typically out of file descriptors: wait for connections to close.
                    warn!(error = %e, "Cannot accept an API connection.");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(%peer, error = %e, "API connection ended with an error.");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        warn!("Some API requests did not finish before the shutdown deadline.");
    }
}
