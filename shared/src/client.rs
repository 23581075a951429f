//! A typed client for the agent's HTTP API, used by `agentctl` and the tests.

use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::api::{self, paths};

/// Why a call to the agent failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answered at the address.
    #[error("cannot reach the agent at {addr}: {reason}; is it running? try `agent start`")]
    Unreachable {
        /// The address tried.
        addr: String,
        /// The network error.
        reason: String,
    },
    /// The agent refused the request for want of the right token (401).
    #[error("the agent at {addr} answered 401: {message}; agentctl sent {sent}")]
    Unauthorized {
        /// The address asked.
        addr: String,
        /// The agent's `error` text (it says where the token is).
        message: String,
        /// Which token was sent, or where none was found ("the token in FILE (...)").
        sent: String,
    },
    /// The agent answered with an error status.
    #[error("the agent answered {status}: {message}")]
    Api {
        /// HTTP status code.
        status: u16,
        /// The agent's `error` text.
        message: String,
    },
    /// The agent answered something that is not the expected JSON.
    #[error("unexpected answer from the agent at {addr}: {reason}")]
    Decode {
        /// The address asked.
        addr: String,
        /// What did not parse.
        reason: String,
    },
}

impl ClientError {
    /// True when the agent could not be reached at all (as opposed to answering an error).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, ClientError::Unreachable { .. })
    }

    /// True when the agent answered 503: it is busy (or stopping); ask again later.
    pub fn is_busy(&self) -> bool {
        matches!(self, ClientError::Api { status: 503, .. })
    }

    /// True when the agent answered 404 because it has no such endpoint (an older agent, or a
    /// feature not built yet), as opposed to a 404 about an unknown plugin.
    pub fn is_not_offered(&self) -> bool {
        match self {
            ClientError::Api { status, message } => {
                *status == 404
                    && (message.is_empty() || message.starts_with(api::NO_ENDPOINT_PREFIX))
            }
            _ => false,
        }
    }
}

/// A client bound to one agent address.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    addr: String,
    base: String,
    token: Option<String>,
    token_note: String,
}

impl Client {
    /// A client for `addr` (`host:port` or a full `http://` URL), with an optional bearer token.
    pub fn new(addr: &str, token: Option<String>) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap_or_default();
        Client::new_with(http, addr, token)
    }

    /// Like [`Client::new`], but no connection is kept open after its answer: for talking to a
    /// thousand agents, where an idle pool would hold thousands of sockets (and hit the
    /// open-file limit). Share it across hosts with [`Client::with_addr`].
    pub fn without_idle_pool(addr: &str, token: Option<String>) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(120))
            .pool_max_idle_per_host(0)
            .build()
            .unwrap_or_default();
        Client::new_with(http, addr, token)
    }

    fn new_with(http: reqwest::Client, addr: &str, token: Option<String>) -> Self {
        let base = if addr.starts_with("http://") || addr.starts_with("https://") {
            addr.trim_end_matches('/').to_owned()
        } else {
            format!("http://{addr}")
        };
        Client {
            http,
            addr: addr.to_owned(),
            base,
            token_note: if token.as_deref().is_some_and(|t| !t.is_empty()) {
                "a bearer token".to_owned()
            } else {
                "no token".to_owned()
            },
            token: token.filter(|t| !t.is_empty()),
        }
    }

    /// A client for another agent that shares this one's connection pool (and TLS set-up, which
    /// is costly to build): what `agentctl fleet` uses to talk to a thousand hosts.
    pub fn with_addr(&self, addr: &str, token: Option<String>) -> Self {
        Client::new_with(self.http.clone(), addr, token)
    }

    /// Says where the token came from (or where none was found), for the error of a 401.
    pub fn with_token_note(mut self, note: String) -> Self {
        self.token_note = note;
        self
    }

    /// The address this client talks to, as given.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// `GET /me/status`.
    pub async fn status(&self) -> Result<api::Status, ClientError> {
        self.get(paths::ME_STATUS, &[]).await
    }

    /// `GET /me/ns`.
    pub async fn namespaces(&self) -> Result<api::NamespacesResponse, ClientError> {
        self.get(paths::ME_NS, &[]).await
    }

    /// `GET /update`.
    pub async fn update(&self) -> Result<api::UpdateResponse, ClientError> {
        self.get(paths::UPDATE, &[]).await
    }

    /// `GET /plugins/list`.
    pub async fn plugins(&self) -> Result<api::PluginList, ClientError> {
        self.get(paths::PLUGINS_LIST, &[]).await
    }

    /// `GET /plugins/run`; `timeout` in seconds.
    pub async fn plugin_run(
        &self,
        ns: &str,
        repo: &str,
        timeout: Option<u64>,
        param: Option<&str>,
    ) -> Result<api::RunResponse, ClientError> {
        let timeout = timeout.map(|t| t.to_string());
        let mut query = vec![("ns", ns), ("repo", repo)];
        if let Some(t) = timeout.as_deref() {
            query.push(("timeout", t));
        }
        if let Some(p) = param {
            query.push(("param", p));
        }
        self.get(paths::PLUGINS_RUN, &query).await
    }

    /// `GET /plugins/update`.
    pub async fn plugin_update(
        &self,
        ns: &str,
        repo: &str,
    ) -> Result<api::ActionResponse, ClientError> {
        self.get(paths::PLUGINS_UPDATE, &[("ns", ns), ("repo", repo)])
            .await
    }

    /// `GET /plugins/enable`.
    pub async fn plugin_enable(
        &self,
        ns: &str,
        repo: &str,
    ) -> Result<api::ActionResponse, ClientError> {
        self.get(paths::PLUGINS_ENABLE, &[("ns", ns), ("repo", repo)])
            .await
    }

    /// `GET /plugins/disable`.
    pub async fn plugin_disable(
        &self,
        ns: &str,
        repo: &str,
    ) -> Result<api::ActionResponse, ClientError> {
        self.get(paths::PLUGINS_DISABLE, &[("ns", ns), ("repo", repo)])
            .await
    }

    /// `POST /post`; `line_protocol` selects `text/plain` over JSON.
    pub async fn post(
        &self,
        ns: Option<&str>,
        body: Vec<u8>,
        line_protocol: bool,
    ) -> Result<api::PostResponse, ClientError> {
        let mut req = self.http.post(self.url(paths::POST));
        if let Some(ns) = ns {
            req = req.query(&[("ns", ns)]);
        }
        let content_type = if line_protocol {
            "text/plain"
        } else {
            "application/json"
        };
        req = req.header("content-type", content_type).body(body);
        self.send(req).await
    }

    /// `GET /log/offset`.
    pub async fn log_offset(
        &self,
        path: &str,
        offset: u64,
        num: u64,
    ) -> Result<api::LogChunk, ClientError> {
        let offset = offset.to_string();
        let num = num.to_string();
        self.get(
            paths::LOG_OFFSET,
            &[("fpath", path), ("offset", &offset), ("num", &num)],
        )
        .await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<T, ClientError> {
        let req = self.http.get(self.url(path)).query(query);
        self.send(req).await
    }

    async fn send<T: DeserializeOwned>(
        &self,
        mut req: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await.map_err(|e| ClientError::Unreachable {
            addr: self.addr.clone(),
            reason: describe(&e),
        })?;
        let status = resp.status();
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let bytes = resp.bytes().await.map_err(|e| ClientError::Unreachable {
            addr: self.addr.clone(),
            reason: describe(&e),
        })?;
        if !status.is_success() {
            return Err(self.refused(status.as_u16(), &content_type, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            addr: self.addr.clone(),
            reason: if looks_like_html(&content_type, &bytes) {
                foreign_body(&content_type, &bytes, &self.addr)
            } else {
                e.to_string()
            },
        })
    }
}

impl Client {
    /// The error for an answer with a failure `status`.
    fn refused(&self, status: u16, content_type: &str, body: &[u8]) -> ClientError {
        let message = serde_json::from_slice::<api::ErrorBody>(body)
            .map(|b| b.error)
            .unwrap_or_else(|_| foreign_body(content_type, body, &self.addr));
        if status == 401 {
            return ClientError::Unauthorized {
                addr: self.addr.clone(),
                message,
                sent: self.token_note.clone(),
            };
        }
        ClientError::Api { status, message }
    }

    /// `GET /tap`: opens a live stream of points (`query`: `ns`, `match`, `tag`, `rate`). The
    /// stream has no deadline (a quiet filter may see nothing for minutes); only connecting
    /// has one.
    pub async fn tap(&self, query: &[(&str, String)]) -> Result<TapStream, ClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .build()
            .unwrap_or_default();
        let mut req = http.get(self.url(paths::TAP)).query(query);
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        let unreachable = |e: reqwest::Error| ClientError::Unreachable {
            addr: self.addr.clone(),
            reason: describe(&e),
        };
        let resp = req.send().await.map_err(unreachable)?;
        let status = resp.status();
        if !status.is_success() {
            let content_type = resp
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            // An error answer is small; a foreign server's is cut at the quote limit anyway.
            let body = read_capped(resp, 64 * 1024).await.map_err(unreachable)?;
            return Err(self.refused(status.as_u16(), &content_type, &body));
        }
        Ok(TapStream {
            resp,
            buf: Vec::new(),
            addr: self.addr.clone(),
        })
    }
}

async fn read_capped(mut resp: reqwest::Response, cap: usize) -> Result<Vec<u8>, reqwest::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        out.extend_from_slice(&chunk[..chunk.len().min(cap - out.len())]);
        if out.len() >= cap {
            break;
        }
    }
    Ok(out)
}

/// Longest line a tap stream may send (a point with long tags and a long string value is a
/// few KiB).
pub const MAX_TAP_LINE: usize = 1024 * 1024;

/// An open `GET /tap` stream.
pub struct TapStream {
    resp: reqwest::Response,
    buf: Vec<u8>,
    addr: String,
}

impl TapStream {
    /// The next line; `Ok(None)` when the agent ended the stream (it is stopping).
    pub async fn next(&mut self) -> Result<Option<api::TapLine>, ClientError> {
        loop {
            if let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                let line = line.trim_ascii();
                if line.is_empty() {
                    continue;
                }
                return serde_json::from_slice(line)
                    .map(Some)
                    .map_err(|e| ClientError::Decode {
                        addr: self.addr.clone(),
                        reason: format!("a tap line that is not a point: {e}"),
                    });
            }
            if self.buf.len() > MAX_TAP_LINE {
                return Err(ClientError::Decode {
                    addr: self.addr.clone(),
                    reason: format!("a tap line longer than {MAX_TAP_LINE} bytes"),
                });
            }
            match self.resp.chunk().await {
                Ok(Some(chunk)) => self.buf.extend_from_slice(&chunk),
                Ok(None) => return Ok(None),
                Err(e) => {
                    return Err(ClientError::Unreachable {
                        addr: self.addr.clone(),
                        reason: describe(&e),
                    })
                }
            }
        }
    }
}

/// Longest answer text quoted in an error.
const MAX_QUOTED: usize = 200;

fn looks_like_html(content_type: &str, body: &[u8]) -> bool {
    content_type.starts_with("text/html") || body.trim_ascii_start().starts_with(b"<")
}

/// What to say about an answer that is not the agent's JSON: a short text is quoted (axum's own
/// rejections are plain text), a web page is named by its title and never printed whole.
fn foreign_body(content_type: &str, body: &[u8], addr: &str) -> String {
    let text = String::from_utf8_lossy(body);
    if looks_like_html(content_type, body) {
        let title = html_title(&text)
            .map(|t| format!(", titled \"{t}\""))
            .unwrap_or_default();
        return format!(
            "a web page ({} bytes{title}), not the agent's API: is something else listening at {addr}?",
            body.len()
        );
    }
    let text = text.trim();
    match text.char_indices().nth(MAX_QUOTED) {
        Some((cut, _)) => format!("{}… ({} bytes)", &text[..cut], body.len()),
        None => text.to_owned(),
    }
}

/// The text of a page's `<title>`, whitespace collapsed, at most 80 characters.
fn html_title(page: &str) -> Option<String> {
    let lower = page.to_ascii_lowercase();
    let start = lower.find("<title>")? + "<title>".len();
    let end = start + lower[start..].find("</title>")?;
    let title: String = page[start..end]
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(80)
        .collect();
    (!title.is_empty()).then_some(title)
}

/// reqwest's Display hides the cause ("error sending request"); walk the chain for the real one.
fn describe(err: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut reason = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        reason = s.to_string();
        source = s.source();
    }
    if err.is_timeout() {
        reason = format!("timed out ({reason})");
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "<!DOCTYPE HTML>\n<html><head><title>Error\n response</title></head>\
                        <body><h1>Error response</h1><p>404</p></body></html>\n";

    #[test]
    fn a_web_page_is_named_not_printed() {
        let said = foreign_body("text/html;charset=utf-8", PAGE.as_bytes(), "127.0.0.1:1232");
        assert!(said.contains("titled \"Error response\""), "{said}");
        assert!(said.contains("not the agent's API"), "{said}");
        assert!(said.contains("127.0.0.1:1232"), "{said}");
        assert!(!said.contains("<h1>"), "{said}");
        // Served without a content type, it is still seen for what it is.
        assert!(foreign_body("", PAGE.as_bytes(), "a").contains("web page"));
    }

    #[test]
    fn a_short_text_answer_is_quoted_and_a_long_one_cut() {
        assert_eq!(
            foreign_body("text/plain", b" Failed to deserialize query \n", "a"),
            "Failed to deserialize query"
        );
        let long = "x".repeat(5000);
        let said = foreign_body("text/plain", long.as_bytes(), "a");
        assert!(said.len() < 300 && said.ends_with("(5000 bytes)"), "{said}");
    }
}
