//! A smart HTTP git server for the tests: serves the bare repositories under a directory by
//! running the real `git http-backend` CGI, on loopback, and records every request. It can
//! demand basic auth, and some path prefixes misbehave on purpose:
//!
//! - `/moved/<repo>...` answers `301` to `/<repo>...` (a repository that moved);
//! - `/loop/...` redirects to itself;
//! - `/plain/...` answers `200 text/html` (a web server that is not a git server);
//! - `/stall/...` never answers (a stalled server);
//! - `/gzip/...` answers a ref advertisement compressed with gzip whatever the client asked.
//!
//! [`GitHttpServer::start_tls`] serves the same over HTTPS, with a certificate for `localhost`
//! and 127.0.0.1 signed by a throwaway CA whose PEM file a client can trust
//! (`SSL_CERT_FILE`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use axum::Router;
use tokio::io::AsyncWriteExt;

/// One request the server received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET` or `POST`.
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// Every header, names in lower case.
    pub headers: std::collections::BTreeMap<String, String>,
}

#[derive(Default)]
struct Fixture {
    /// `Basic base64(user:pass)` the server demands, when set.
    auth: Option<String>,
    requests: Vec<Request>,
    /// Why TLS handshakes failed (HTTPS mode), e.g. the client's alert refusing the certificate.
    tls_failures: Vec<String>,
}

struct Shared {
    root: PathBuf,
    fixture: Mutex<Fixture>,
}

/// The running server; stops when dropped.
pub struct GitHttpServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The CA's files, in HTTPS mode.
    tls: Option<TestCa>,
}

/// A throwaway CA and the server certificate it signed.
struct TestCa {
    dir: tempfile::TempDir,
    server: Arc<rustls::ServerConfig>,
}

impl TestCa {
    fn new() -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
            KeyUsagePurpose,
        };
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.distinguished_name
            .push(DnType::CommonName, "e2e throwaway CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = ca.self_signed(&ca_key).expect("CA certificate");
        let key = KeyPair::generate().expect("server key");
        let mut leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("server params");
        leaf.distinguished_name
            .push(DnType::CommonName, "localhost");
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf = leaf
            .signed_by(&key, &ca, &ca_key)
            .expect("server certificate");
        let dir = tempfile::tempdir().expect("CA dir");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write CA PEM");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone(), ca.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .expect("server TLS config");
        TestCa {
            dir,
            server: Arc::new(server),
        }
    }

    fn pem_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
}

/// Accepted connections after their TLS handshake. Handshakes run in their own tasks so a client
/// that stalls or refuses the certificate never holds up the next one.
struct TlsListener {
    addr: SocketAddr,
    ready: tokio::sync::mpsc::Receiver<(TlsStream, SocketAddr)>,
}

type TlsStream = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;

impl TlsListener {
    fn new(
        listener: tokio::net::TcpListener,
        config: Arc<rustls::ServerConfig>,
        shared: Arc<Shared>,
    ) -> Self {
        let addr = listener.local_addr().expect("addr");
        let (tx, ready) = tokio::sync::mpsc::channel(16);
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        tokio::spawn(async move {
            while let Ok((tcp, peer)) = listener.accept().await {
                let (acceptor, tx, shared) = (acceptor.clone(), tx.clone(), Arc::clone(&shared));
                tokio::spawn(async move {
                    let handshake = tokio::time::timeout(
                        std::time::Duration::from_secs(10),
                        acceptor.accept(tcp),
                    );
                    match handshake.await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => lock(&shared).tls_failures.push(e.to_string()),
                        Err(_) => lock(&shared)
                            .tls_failures
                            .push("handshake timed out".to_owned()),
                    }
                });
            }
        });
        TlsListener { addr, ready }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accepting task ended (the runtime is shutting down): nothing more comes.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.addr)
    }
}

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Fixture> {
    shared.fixture.lock().expect("fixture lock")
}

impl GitHttpServer {
    /// Serves the bare repositories under `root` (`<root>/<name>.git` is `/<name>.git`) on a
    /// free loopback port.
    pub fn start(root: &Path) -> Self {
        Self::serve(root, None)
    }

    /// Like [`GitHttpServer::start`], over HTTPS with a fresh CA (see [`GitHttpServer::ca_file`]).
    pub fn start_tls(root: &Path) -> Self {
        Self::serve(root, Some(TestCa::new()))
    }

    fn serve(root: &Path, tls: Option<TestCa>) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind git http server");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let shared = Arc::new(Shared {
            root: root.to_owned(),
            fixture: Mutex::default(),
        });
        let app = Router::new()
            .fallback(answer)
            .with_state(Arc::clone(&shared));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let config = tls.as_ref().map(|ca| Arc::clone(&ca.server));
        let for_tls = Arc::clone(&shared);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("git http runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                match config {
                    None => tokio::select! {
                        _ = axum::serve(listener, app) => {}
                        _ = stopped => {}
                    },
                    Some(config) => {
                        let listener = TlsListener::new(listener, config, for_tls);
                        tokio::select! {
                            _ = axum::serve(listener, app) => {}
                            _ = stopped => {}
                        }
                    }
                }
            });
        });
        GitHttpServer {
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
            tls,
        }
    }

    /// `http://127.0.0.1:<port>`, or in HTTPS mode `https://localhost:<port>` (the name the
    /// certificate is for).
    pub fn url(&self) -> String {
        match self.tls {
            None => format!("http://{}", self.addr),
            Some(_) => format!("https://localhost:{}", self.addr.port()),
        }
    }

    /// The PEM file of the CA that signed the server's certificate (HTTPS mode only).
    pub fn ca_file(&self) -> PathBuf {
        self.tls.as_ref().expect("an HTTPS server").pem_path()
    }

    /// Why TLS handshakes failed so far (HTTPS mode): e.g. a client's alert refusing the
    /// certificate.
    pub fn tls_failures(&self) -> Vec<String> {
        self.with(|f| f.tls_failures.clone())
    }

    /// From now on, every request needs basic auth with `user` and `pass`.
    pub fn require_auth(&self, user: &str, pass: &str) {
        let token = base64(format!("{user}:{pass}").as_bytes());
        self.with(|f| f.auth = Some(format!("Basic {token}")));
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        self.with(|f| f.requests.clone())
    }

    fn with<R>(&self, f: impl FnOnce(&mut Fixture) -> R) -> R {
        f(&mut lock(&self.shared))
    }
}

impl Drop for GitHttpServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn text(status: StatusCode, headers: &[(&str, &str)], body: &str) -> Response {
    let mut b = Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Body::from(body.to_owned())).expect("response")
}

async fn answer(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let path = uri.path().to_owned();
    let query = uri.query().unwrap_or("").to_owned();
    let demanded = {
        let mut f = shared.fixture.lock().expect("fixture lock");
        f.requests.push(Request {
            method: method.to_string(),
            path: path.clone(),
            authorization: authorization.clone(),
            headers: headers
                .iter()
                .map(|(k, v)| {
                    let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
                    (k.as_str().to_owned(), v)
                })
                .collect(),
        });
        f.auth.clone()
    };
    if let Some(want) = demanded {
        if authorization.as_deref() != Some(want.as_str()) {
            return text(
                StatusCode::UNAUTHORIZED,
                &[("www-authenticate", "Basic realm=\"git\"")],
                "authentication required\n",
            );
        }
    }
    if path.starts_with("/loop/") {
        return text(StatusCode::FOUND, &[("location", &path)], "again\n");
    }
    if let Some(rest) = path.strip_prefix("/moved/") {
        let rest = format!("/{rest}");
        let to = if query.is_empty() {
            rest.to_owned()
        } else {
            format!("{rest}?{query}")
        };
        return text(
            StatusCode::MOVED_PERMANENTLY,
            &[("location", &to)],
            "moved\n",
        );
    }
    if path.starts_with("/plain/") {
        return text(
            StatusCode::OK,
            &[("content-type", "text/html")],
            "<html><body>Welcome to our website</body></html>\n",
        );
    }
    if path.starts_with("/gzip/") {
        // The gzip header and an empty deflate block: the content hardly matters.
        return Response::builder()
            .status(StatusCode::OK)
            .header(
                "content-type",
                "application/x-git-upload-pack-advertisement",
            )
            .header("content-encoding", "gzip")
            .body(Body::from(
                b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00"
                    .to_vec(),
            ))
            .expect("response");
    }
    if path.starts_with("/stall/") {
        std::future::pending::<()>().await;
    }
    http_backend(&shared.root, &method, &path, &query, &headers, body).await
}

/// Runs `git http-backend` as a CGI for one request.
async fn http_backend(
    root: &Path,
    method: &Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let header = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", root)
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", method.as_str())
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("run git http-backend");
    let mut stdin = child.stdin.take().expect("stdin");
    let feed = async move {
        let _ = stdin.write_all(&body).await;
        drop(stdin);
    };
    let (_, out) = tokio::join!(feed, child.wait_with_output());
    let out = out.expect("git http-backend output");
    cgi_response(&out.stdout, &out.stderr)
}

/// A CGI answer (headers, blank line, body; `Status:` sets the status) as an HTTP response.
fn cgi_response(out: &[u8], stderr: &[u8]) -> Response {
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, i + 4))
        .or_else(|| {
            out.windows(2)
                .position(|w| w == b"\n\n")
                .map(|i| (i, i + 2))
        });
    let Some((head_end, body_start)) = split else {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            &[],
            &format!(
                "git http-backend answered no headers: {}",
                String::from_utf8_lossy(stderr)
            ),
        );
    };
    let head = String::from_utf8_lossy(&out[..head_end]);
    let mut b = Response::builder().status(StatusCode::OK);
    for line in head.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("status") {
            let code = v
                .split_whitespace()
                .next()
                .and_then(|c| c.parse::<u16>().ok())
                .unwrap_or(500);
            b = b.status(code);
        } else {
            b = b.header(k.trim(), v);
        }
    }
    b.body(Body::from(out[body_start..].to_vec()))
        .expect("response")
}

fn base64(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ABC[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_rfc_4648() {
        assert_eq!(super::base64(b"bob:s3cret"), "Ym9iOnMzY3JldA==");
        assert_eq!(super::base64(b"foob"), "Zm9vYg==");
        assert_eq!(super::base64(b"foo"), "Zm9v");
    }
}
