//! git's smart HTTP protocol, fetch side, over reqwest (rustls, the system's roots): the
//! transport libgit2 uses for `http://` and `https://` now that it is built without TLS.
//!
//! One fetch is `GET <repo>/info/refs?service=git-upload-pack` (the ref advertisement), then
//! `POST <repo>/git-upload-pack` with the wants; libgit2 speaks the protocol, this module only
//! moves the bytes. Requests are sent lazily: the GET on the first read, the POST on the first
//! read after libgit2 has written its whole request.
//!
//! reqwest is async; the transport is called by libgit2 on the blocking thread doing the clone,
//! so it waits with `block_on` on the caller's runtime (callers are inside `spawn_blocking`), or
//! on a small runtime of its own when the thread has none.

use std::future::Future;
use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use git2::transport::{Service, SmartSubtransport, SmartSubtransportStream};
use reqwest::header::{ACCEPT, ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_TYPE, LOCATION, PRAGMA};
use reqwest::{Response, StatusCode, Url};

const ADVERTISEMENT: &str = "application/x-git-upload-pack-advertisement";
const REQUEST: &str = "application/x-git-upload-pack-request";
const RESULT: &str = "application/x-git-upload-pack-result";
const INFO_REFS: &str = "/info/refs";
const QUERY: &str = "service=git-upload-pack";
/// Some servers (GitHub among them) only speak the smart protocol to clients that say "git/".
const USER_AGENT: &str = concat!("git/2.0 (agent ", env!("CARGO_PKG_VERSION"), ")");
/// As many redirects as git lets curl follow.
const MAX_REDIRECTS: usize = 20;
/// The HTTP client decodes no compressed bodies (reqwest without its gzip feature), so it asks
/// for none; git itself offers `deflate, gzip`.
const NO_COMPRESSION: &str = "identity";

/// Where async work runs: the caller's runtime, or one of our own on a thread without one.
enum Rt {
    Caller(tokio::runtime::Handle),
    Own(tokio::runtime::Runtime),
}

impl Rt {
    fn pick() -> io::Result<Rt> {
        match tokio::runtime::Handle::try_current() {
            Ok(h) => Ok(Rt::Caller(h)),
            Err(_) => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map(Rt::Own),
        }
    }

    /// Runs `f` to completion. Build request futures inside `f`: reqwest arms its timers when
    /// the future is created, which needs the runtime's context.
    fn block_on<F: Future>(&self, f: F) -> F::Output {
        match self {
            Rt::Caller(h) => h.block_on(f),
            Rt::Own(rt) => rt.block_on(f),
        }
    }
}

/// Basic-auth credentials and the origin (scheme, host, port) they may be sent to.
#[derive(Clone)]
struct Creds {
    origin: Origin,
    user: String,
    pass: Option<String>,
}

type Origin = (String, String, Option<u16>);

fn origin(url: &Url) -> Origin {
    (
        url.scheme().to_owned(),
        url.host_str().unwrap_or_default().to_owned(),
        url.port_or_known_default(),
    )
}

struct Session {
    /// The repository's URL without credentials, after the GET's redirects: where POSTs go.
    base: Option<String>,
    creds: Option<Creds>,
    /// git's credential helpers are asked at most once per fetch, so a refusal does not loop.
    helper_asked: bool,
}

struct Shared {
    // Dropped before `rt`: the client's pooled connections belong to that runtime.
    client: reqwest::Client,
    rt: Rt,
    session: Mutex<Session>,
    /// Added to the environment of `git credential fill`.
    credential_env: Vec<(String, String)>,
}

/// The subtransport libgit2 creates per remote connection.
pub(super) struct SmartHttp {
    shared: Arc<Shared>,
}

impl SmartHttp {
    /// A transport whose connects give up after `connect` and whose reads give up after
    /// `stall` without data; `credential_env` is added to the environment of git's
    /// credential helpers.
    pub(super) fn new(
        connect: Duration,
        stall: Duration,
        credential_env: Vec<(String, String)>,
    ) -> Result<SmartHttp, git2::Error> {
        let rt = Rt::pick()
            .map_err(|e| super::git2_error(&format!("cannot start a runtime for HTTP: {e}")))?;
        let client = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(connect)
            .read_timeout(stall)
            // git's `http.followRedirects=initial`: the ref advertisement may be redirected,
            // the POSTs after it go where it ended up and are never redirected themselves.
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                let first_is_get = attempt
                    .previous()
                    .first()
                    .is_some_and(|u| u.path().ends_with(INFO_REFS));
                if !first_is_get {
                    attempt.stop()
                } else if attempt.previous().len() > MAX_REDIRECTS {
                    attempt.error("too many redirects")
                } else {
                    attempt.follow()
                }
            }))
            .build()
            .map_err(|e| super::git2_error(&format!("cannot build an HTTP client: {e}")))?;
        Ok(SmartHttp {
            shared: Arc::new(Shared {
                client,
                rt,
                session: Mutex::new(Session {
                    base: None,
                    creds: None,
                    helper_asked: false,
                }),
                credential_env,
            }),
        })
    }
}

impl SmartSubtransport for SmartHttp {
    fn action(
        &self,
        url: &str,
        action: Service,
    ) -> Result<Box<dyn SmartSubtransportStream>, git2::Error> {
        match action {
            Service::UploadPackLs | Service::UploadPack => Ok(Box::new(HttpStream {
                shared: Arc::clone(&self.shared),
                url: url.to_owned(),
                service: action,
                request: Vec::new(),
                response: None,
                chunk: Bytes::new(),
            })),
            Service::ReceivePackLs | Service::ReceivePack => Err(super::git2_error(
                "pushing over HTTP is not supported (the agent only fetches)",
            )),
        }
    }

    fn close(&self) -> Result<(), git2::Error> {
        Ok(())
    }
}

struct HttpStream {
    shared: Arc<Shared>,
    url: String,
    service: Service,
    /// What libgit2 wrote: the body of the POST.
    request: Vec<u8>,
    response: Option<Response>,
    /// The rest of the last chunk received.
    chunk: Bytes,
}

// libgit2 gets every error through `io_for_libgit2`: see there why.
impl Read for HttpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_response(buf).map_err(super::io_for_libgit2)
    }
}

impl Write for HttpStream {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.write_request(data).map_err(super::io_for_libgit2)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl HttpStream {
    fn read_response(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.response.is_none() {
            let response = match self.service {
                Service::UploadPackLs => self.shared.advertisement(&self.url)?,
                _ => self
                    .shared
                    .upload_pack(&self.url, std::mem::take(&mut self.request))?,
            };
            self.response = Some(response);
        }
        while self.chunk.is_empty() {
            let Some(response) = self.response.as_mut() else {
                return Ok(0);
            };
            let url = redacted(response.url());
            match self.shared.rt.block_on(async { response.chunk().await }) {
                Ok(Some(c)) => self.chunk = c,
                Ok(None) => return Ok(0),
                Err(e) => return Err(net_error(&url, e)),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }

    fn write_request(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.service != Service::UploadPack || self.response.is_some() {
            return Err(io::Error::other(
                "libgit2 wrote to an HTTP stream that takes no request body",
            ));
        }
        self.request.extend_from_slice(data);
        Ok(data.len())
    }
}

impl Shared {
    fn session(&self) -> MutexGuard<'_, Session> {
        self.session
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The ref advertisement: GET, one retry with git's credential helpers after a 401, and
    /// the base URL moved to wherever redirects ended.
    fn advertisement(&self, remote: &str) -> io::Result<Response> {
        let (base, creds) = split_credentials(remote)?;
        let mut url = parse(&format!("{base}{INFO_REFS}?{QUERY}"))?;
        {
            let mut s = self.session();
            s.base = Some(base);
            if creds.is_some() {
                s.creds = creds;
            }
        }
        loop {
            // As git: no cached ref advertisement from a proxy.
            let req = self
                .authorize(self.client.get(url.clone()), &url)
                .header(ACCEPT, "*/*")
                .header(ACCEPT_ENCODING, NO_COMPRESSION)
                .header(PRAGMA, "no-cache");
            let response = self
                .rt
                .block_on(async { req.send().await })
                .map_err(|e| net_error(&redacted(&url), e))?;
            if response.status() == StatusCode::UNAUTHORIZED {
                let asked = std::mem::replace(&mut self.session().helper_asked, true);
                if !asked {
                    if let Some(c) = self.helper_credentials(response.url()) {
                        self.session().creds = Some(c);
                        url = response.url().clone();
                        continue;
                    }
                }
            }
            let response = self.check(response, ADVERTISEMENT)?;
            // git's rule: the repository's base follows the redirects of this GET, provided the
            // final URL still ends in the same `/info/refs?service=...`.
            let end = response.url();
            let moved = end.as_str().strip_suffix(&format!("{INFO_REFS}?{QUERY}"));
            let Some(moved) = moved else {
                return Err(io::Error::other(format!(
                    "{}: redirected to {}, which is not a git repository's {INFO_REFS}",
                    redacted(&url),
                    redacted(end)
                )));
            };
            self.session().base = Some(moved.to_owned());
            return Ok(response);
        }
    }

    fn upload_pack(&self, remote: &str, body: Vec<u8>) -> io::Result<Response> {
        let base = match self.session().base.clone() {
            Some(b) => b,
            None => split_credentials(remote)?.0,
        };
        let url = parse(&format!("{base}/git-upload-pack"))?;
        let req = self
            .authorize(self.client.post(url.clone()), &url)
            .header(CONTENT_TYPE, REQUEST)
            .header(ACCEPT, RESULT)
            .header(ACCEPT_ENCODING, NO_COMPRESSION)
            .body(body);
        let response = self
            .rt
            .block_on(async { req.send().await })
            .map_err(|e| net_error(&redacted(&url), e))?;
        self.check(response, RESULT)
    }

    fn user(&self) -> Option<String> {
        self.session().creds.as_ref().map(|c| c.user.clone())
    }

    /// Asks git's credential helpers for the repository whose ref advertisement at `url` wants
    /// credentials; they are sent to that origin only.
    fn helper_credentials(&self, url: &Url) -> Option<Creds> {
        let mut repo = url.clone();
        repo.set_query(None);
        if let Some(base) = repo.path().strip_suffix(INFO_REFS).map(str::to_owned) {
            repo.set_path(&base);
        }
        let user = self.user();
        let filled = super::credential::fill(
            &repo,
            user.as_deref(),
            &self.credential_env,
            super::credential::TIMEOUT,
        )?;
        Some(Creds {
            origin: origin(url),
            user: filled.username,
            pass: Some(filled.password),
        })
    }

    /// Adds basic auth when there are credentials for `url`'s origin (never to another host).
    fn authorize(&self, req: reqwest::RequestBuilder, url: &Url) -> reqwest::RequestBuilder {
        match self.session().creds.as_ref() {
            Some(c) if c.origin == origin(url) => req.basic_auth(&c.user, c.pass.as_ref()),
            _ => req,
        }
    }

    /// A 200 with git's content type, or an error that names the URL and what came back.
    fn check(&self, response: Response, want: &str) -> io::Result<Response> {
        let url = redacted(response.url());
        let status = response.status();
        if status != StatusCode::OK {
            let hint = match status.as_u16() {
                401 if self.session().creds.is_some() => {
                    "; the credentials were refused".to_owned()
                }
                401 => "; the server wants credentials: put them in the address \
                        (https://user:token@host/...) or configure a git credential helper \
                        for the agent's user"
                    .to_owned(),
                404 => "; check the repository address".to_owned(),
                300..=399 if want == RESULT => match response.headers().get(LOCATION) {
                    Some(to) => format!(
                        "; it redirects to {:?}, and git does not follow redirects of its POST",
                        to.to_str().unwrap_or("?")
                    ),
                    None => String::new(),
                },
                _ => String::new(),
            };
            return Err(io::Error::other(format!("{url}: HTTP {status}{hint}")));
        }
        let got = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        // As git: the media type only, without parameters such as `; charset=...`.
        let media = got.split(';').next().unwrap_or_default().trim();
        if !media.eq_ignore_ascii_case(want) {
            return Err(io::Error::other(format!(
                "{url}: not a git smart HTTP server (Content-Type {got:?}, expected {want}); \
                 dumb HTTP servers are not supported"
            )));
        }
        // libgit2 would get compressed bytes and fail with a protocol error that says nothing.
        if let Some(coding) = response.headers().get(CONTENT_ENCODING) {
            let coding = coding.to_str().unwrap_or("?");
            if !coding.trim().eq_ignore_ascii_case(NO_COMPRESSION) {
                return Err(io::Error::other(format!(
                    "{url}: the server sent a compressed answer (Content-Encoding {coding:?}) \
                     although the agent asked for none (Accept-Encoding: identity) and cannot \
                     decode it; a proxy in between may be compressing"
                )));
            }
        }
        Ok(response)
    }
}

fn parse(s: &str) -> io::Result<Url> {
    Url::parse(s).map_err(|e| {
        io::Error::other(format!(
            "bad URL {}: {e} (characters such as '/', '?', '#' and '@' in a user name or \
             password must be percent-encoded)",
            super::redact_address(s)
        ))
    })
}

/// The repository URL without user and password (and without a trailing `/`), and the
/// credentials that were in it. They are sent as basic auth, to that origin only.
fn split_credentials(remote: &str) -> io::Result<(String, Option<Creds>)> {
    let mut url = parse(remote)?;
    let decode = |s: &str| {
        percent_decode(s).map_err(|()| {
            io::Error::other(format!(
                "{}: the credentials in the address are not valid percent-encoded UTF-8",
                redacted(&url)
            ))
        })
    };
    let creds = if url.username().is_empty() && url.password().is_none() {
        None
    } else {
        Some(Creds {
            origin: origin(&url),
            user: decode(url.username())?,
            pass: url.password().map(decode).transpose()?,
        })
    };
    // Cannot fail for http(s) URLs, which always have a host.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_query(None);
    url.set_fragment(None);
    Ok((url.as_str().trim_end_matches('/').to_owned(), creds))
}

pub(super) fn percent_decode(s: &str) -> Result<String, ()> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            // Two hex digits exactly: `from_str_radix` alone would also take a sign (`%+4`).
            let hex = b.get(i + 1..i + 3).ok_or(())?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return Err(());
            }
            let hex = std::str::from_utf8(hex).map_err(|_| ())?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| ())?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ())
}

/// `url` for messages: never the credentials.
fn redacted(url: &Url) -> String {
    super::redact_address(url.as_str())
}

fn net_error(url: &str, e: reqwest::Error) -> io::Error {
    // reqwest's Display stops at the outermost layer ("error sending request"); the cause
    // (connection refused, certificate, timeout) is what an operator needs. The URL is already
    // in front.
    let timeout = e.is_timeout();
    let e = e.without_url();
    let mut msg = format!("{url}: {}", crate::error_chain::error_chain(&e));
    if timeout && !msg.contains("timed out") {
        msg.push_str(" (timed out)");
    }
    io::Error::other(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_taken_out_of_the_url_and_decoded() {
        let (base, creds) =
            split_credentials("https://bob:p%40ss%3Aw@git.example.com:8443/ops/x.git/")
                .expect("parses");
        assert_eq!(base, "https://git.example.com:8443/ops/x.git");
        let c = creds.expect("creds");
        assert_eq!(c.user, "bob");
        assert_eq!(c.pass.as_deref(), Some("p@ss:w"));
        assert_eq!(
            c.origin,
            ("https".into(), "git.example.com".into(), Some(8443))
        );
        let (base, creds) = split_credentials("http://h/x.git").expect("parses");
        assert_eq!(base, "http://h/x.git");
        assert!(creds.is_none());
        assert!(split_credentials("https://bob:%zz@h/x").is_err());
    }

    #[test]
    fn percent_decoding_takes_two_hex_digits_only() {
        assert_eq!(percent_decode("a%41%c3%a9"), Ok("aAé".to_owned()));
        for bad in ["%+4", "%-1", "%4", "%", "%g0", "% 1"] {
            assert_eq!(percent_decode(bad), Err(()), "{bad}");
        }
    }

    #[test]
    fn messages_never_show_the_credentials() {
        let u = Url::parse("https://bob:secret@h/x.git").expect("url");
        assert_eq!(redacted(&u), "https://bob:***@h/x.git");
        // Unencoded characters in the password, a bad port, a bad host: Url refuses them all,
        // and its error must not show the password.
        for bad in [
            "https://bob:S3#cret@h/x.git",
            "https://bob:S3?cret@h/x.git",
            "https://bob:S3/cret@h/x.git",
            "http://bob:S3cret@127.0.0.1:99999/x.git",
            "https://bob:S3cret@h%zz/x.git",
        ] {
            let e = parse(bad).expect_err(bad).to_string();
            assert!(e.contains("bad URL") && e.contains("bob:***@"), "{e}");
            assert!(!e.contains("S3") && !e.contains("cret"), "{e}");
        }
    }
}
