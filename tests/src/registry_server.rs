//! A lodastack registry server for the tests: a real HTTP server on loopback that answers the
//! protocol of SPEC section 3 from a plan the test sets, or misbehaves on request (HTTP errors,
//! `httpstatus` errors, bad JSON, wrong types, slowness), and records every request.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};

/// How the server answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Behaviour {
    /// The protocol, from the plan set with [`RegistryServer::set_namespace`].
    Plan,
    /// Every call answers this HTTP status with a text body.
    HttpError(u16),
    /// Every call answers HTTP 200 with `{"httpstatus": <n>, "msg": "...", "data": null}`.
    StatusError(i64),
    /// Every call answers HTTP 200 with a body that is not JSON.
    BadJson,
    /// The envelope is fine but `data` has the wrong type (a string where a map or list goes).
    WrongTypes,
    /// The protocol, after sleeping this long (past the agent's timeout).
    Slow(Duration),
    /// HTTP 200 with a body of this many bytes (a JSON string that never ends in time).
    Oversized(usize),
}

/// One request the server received.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// `GET` or `POST`.
    pub method: String,
    /// The path.
    pub path: String,
    /// Query parameters.
    pub query: BTreeMap<String, String>,
    /// The body, parsed as JSON when it is.
    pub body: Value,
    /// When it arrived.
    pub at: Instant,
}

#[derive(Default)]
struct Fixture {
    namespaces: BTreeMap<String, Value>,
    behaviour: Option<Behaviour>,
    /// Misbehaviour of one namespace's resource call only.
    namespace_behaviour: BTreeMap<String, Behaviour>,
    requests: Vec<Request>,
    /// Resource requests being answered now, and the most there ever were at once.
    resources_in_flight: usize,
    most_resources_in_flight: usize,
    /// Namespace calls held until it opens (see [`RegistryServer::hold_ns_calls`]).
    gate: Option<Gate>,
}

/// Holds namespace calls until it opens, then answers them all at once.
struct Gate {
    held: usize,
    open: tokio::sync::watch::Sender<bool>,
}

type Shared = Arc<Mutex<Fixture>>;

/// The running server; stops when dropped.
pub struct RegistryServer {
    addr: SocketAddr,
    fixture: Shared,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RegistryServer {
    /// Starts a server on a free loopback port, with no namespaces.
    pub fn start() -> Self {
        Self::start_on("127.0.0.1:0")
    }

    /// Starts a server on a given address (to come back on the same port after [`Self::stop`]).
    pub fn start_on(addr: &str) -> Self {
        let listener = std::net::TcpListener::bind(addr).expect("bind registry fixture");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let fixture: Shared = Arc::default();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = Router::new()
            .route("/api/v1/agent/ns", post(answer_ns))
            .route("/api/v1/agent/resource", get(answer_resource))
            .route("/api/v1/agent/report", post(answer_report))
            .fallback(unknown)
            .with_state(Arc::clone(&fixture));
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("fixture runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let serve = axum::serve(listener, app);
                // Stop at once, dropping slow answers in flight: the agent sees a closed port.
                tokio::select! {
                    _ = serve => {}
                    _ = stopped => {}
                }
            });
        });
        RegistryServer {
            addr,
            fixture,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The base URL to put in `registry.url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets (or replaces) a namespace and its items (a JSON list of string maps).
    pub fn set_namespace(&self, ns: &str, items: Value) {
        self.with(|f| {
            f.namespaces.insert(ns.to_owned(), items);
        });
    }

    /// Removes a namespace.
    pub fn remove_namespace(&self, ns: &str) {
        self.with(|f| {
            f.namespaces.remove(ns);
        });
    }

    /// Changes how the server answers from now on.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        self.with(|f| f.behaviour = Some(behaviour));
    }

    /// Changes how one namespace's resource call answers from now on (the namespace call and
    /// the other namespaces follow [`Self::set_behaviour`]); `Behaviour::Plan` puts it back.
    pub fn set_namespace_behaviour(&self, ns: &str, behaviour: Behaviour) {
        self.with(|f| {
            f.namespace_behaviour.insert(ns.to_owned(), behaviour);
        });
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        self.with(|f| f.requests.clone())
    }

    /// Holds every namespace call unanswered from now until [`Self::answer_held_ns_calls`],
    /// which answers them together (as a fast machine whose agents started in the same instant
    /// would see them).
    pub fn hold_ns_calls(&self) {
        let (open, _) = tokio::sync::watch::channel(false);
        self.with(|f| f.gate = Some(Gate { held: 0, open }));
    }

    /// How many namespace calls are held now.
    pub fn held_ns_calls(&self) -> usize {
        self.with(|f| f.gate.as_ref().map_or(0, |g| g.held))
    }

    /// Answers the held namespace calls together; later ones are answered as usual. Returns
    /// when that was.
    pub fn answer_held_ns_calls(&self) -> Instant {
        self.with(|f| {
            if let Some(gate) = f.gate.take() {
                let _ = gate.open.send(true);
            }
        });
        Instant::now()
    }

    /// When each call to `path` arrived (`/api/v1/agent/ns`: one per refresh of an agent), in
    /// order of arrival.
    pub fn arrivals(&self, path: &str) -> Vec<Instant> {
        self.with(|f| {
            f.requests
                .iter()
                .filter(|r| r.path == path)
                .map(|r| r.at)
                .collect()
        })
    }

    /// The bodies of the agent reports received (`POST /api/v1/agent/report`), in order.
    pub fn reports(&self) -> Vec<Value> {
        self.with(|f| {
            f.requests
                .iter()
                .filter(|r| r.method == "POST" && r.path == "/api/v1/agent/report")
                .map(|r| r.body.clone())
                .collect()
        })
    }

    /// Stops listening; the port refuses connections afterwards.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// The most `GET /api/v1/agent/resource` requests that were being answered at the same time.
    pub fn most_concurrent_resource_requests(&self) -> usize {
        self.with(|f| f.most_resources_in_flight)
    }

    fn with<T>(&self, f: impl FnOnce(&mut Fixture) -> T) -> T {
        let mut guard = self.fixture.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }
}

impl Drop for RegistryServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn record(fixture: &Shared, method: Method, uri: &Uri, body: &[u8]) -> Behaviour {
    let query = uri
        .query()
        .map(|q| {
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        })
        .unwrap_or_default();
    let body = serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()));
    let mut f = fixture.lock().unwrap_or_else(|p| p.into_inner());
    f.requests.push(Request {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query,
        body,
        at: Instant::now(),
    });
    f.behaviour.clone().unwrap_or(Behaviour::Plan)
}

/// The answer for a behaviour other than `Plan`, or `None` to answer the protocol with `data`.
async fn misbehave(behaviour: Behaviour) -> Option<Response> {
    match behaviour {
        Behaviour::Plan => None,
        Behaviour::Slow(d) => {
            tokio::time::sleep(d).await;
            None
        }
        Behaviour::HttpError(code) => Some(
            (
                StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                "registry fixture: internal error",
            )
                .into_response(),
        ),
        Behaviour::StatusError(n) => Some(
            axum::Json(json!({"httpstatus": n, "msg": "fixture: database is down", "data": null}))
                .into_response(),
        ),
        Behaviour::BadJson => Some(
            (
                [("content-type", "application/json")],
                "{\"httpstatus\": 200, \"data\": [",
            )
                .into_response(),
        ),
        Behaviour::Oversized(n) => Some(
            (
                [("content-type", "application/json")],
                format!("{{\"httpstatus\": 200, \"data\": \"{}\"}}", "x".repeat(n)),
            )
                .into_response(),
        ),
        Behaviour::WrongTypes => Some(
            axum::Json(json!({"httpstatus": 200, "data": "not a map or a list"})).into_response(),
        ),
    }
}

async fn answer_ns(State(fixture): State<Shared>, uri: Uri, body: Bytes) -> Response {
    let behaviour = record(&fixture, Method::POST, &uri, &body);
    let held = {
        let mut f = fixture.lock().unwrap_or_else(|p| p.into_inner());
        let mut waiting = None;
        if let Some(gate) = f.gate.as_mut() {
            gate.held += 1;
            waiting = Some(gate.open.subscribe());
        }
        waiting
    };
    if let Some(mut open) = held {
        let _ = open.wait_for(|open| *open).await;
    }
    if let Some(r) = misbehave(behaviour).await {
        return r;
    }
    let data: serde_json::Map<String, Value> = fixture
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .namespaces
        .keys()
        .enumerate()
        .map(|(i, ns)| (ns.clone(), Value::String(format!("resource-{i}"))))
        .collect();
    axum::Json(json!({"httpstatus": 200, "data": data})).into_response()
}

/// Takes the report (recorded) and answers as lodastack's registry does.
async fn answer_report(State(fixture): State<Shared>, uri: Uri, body: Bytes) -> Response {
    let behaviour = record(&fixture, Method::POST, &uri, &body);
    if let Some(r) = misbehave(behaviour).await {
        return r;
    }
    axum::Json(json!({"httpstatus": 200, "data": "success"})).into_response()
}

async fn answer_resource(
    State(fixture): State<Shared>,
    uri: Uri,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    let mut behaviour = record(&fixture, Method::GET, &uri, b"");
    if let Some(own) = query.get("ns").and_then(|ns| {
        let f = fixture.lock().unwrap_or_else(|p| p.into_inner());
        f.namespace_behaviour.get(ns).cloned()
    }) {
        behaviour = own;
    }
    let _in_flight = InFlight::enter(&fixture);
    if let Some(r) = misbehave(behaviour).await {
        return r;
    }
    let items = query.get("ns").and_then(|ns| {
        fixture
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .namespaces
            .get(ns)
            .cloned()
    });
    match items {
        Some(items) => axum::Json(json!({"httpstatus": 200, "data": items})).into_response(),
        None => axum::Json(json!({"httpstatus": 404, "msg": "no such ns", "data": null}))
            .into_response(),
    }
}

/// Counts a resource request as in flight until dropped (also when the server drops the answer).
struct InFlight(Shared);

impl InFlight {
    fn enter(fixture: &Shared) -> InFlight {
        let mut f = fixture.lock().unwrap_or_else(|p| p.into_inner());
        f.resources_in_flight += 1;
        f.most_resources_in_flight = f.most_resources_in_flight.max(f.resources_in_flight);
        InFlight(Arc::clone(fixture))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut f = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f.resources_in_flight -= 1;
    }
}

async fn unknown(uri: Uri) -> Response {
    (StatusCode::NOT_FOUND, format!("no route {}", uri.path())).into_response()
}
