//! The inventory: which agents a fleet command talks to.
//!
//! A host file has one host per line, `name addr[:port] [token]` or `addr[:port]`; `#` starts a
//! comment, blank lines are ignored. Every bad line is reported with its number, all in one pass,
//! so an operator fixes the file once. The registry source (`--registry URL --ns NS`) builds the
//! same [`Host`] list from the machines of a lodastack namespace (see [`super::registry`]).

use std::fmt;
use std::io::Read;
use std::path::Path;

use serde::Serialize;

/// The agents' API port when an address has none (the agent's default listen port).
pub const DEFAULT_PORT: u16 = 1232;

/// A host file larger than this is refused: an inventory is a list of names, not a data set.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// A line longer than this is refused (a token is 64 characters; a name and address a few dozen).
pub const MAX_LINE_CHARS: usize = 4096;

/// One agent of the fleet.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct Host {
    /// What the operator calls it: the file's first column, the registry's hostname, or the
    /// address as written when the line has only an address.
    pub name: String,
    /// `host:port` of the agent's API (the port is always present: [`DEFAULT_PORT`] when the
    /// source gave none).
    pub addr: String,
    /// This host's bearer token, from the file's third column; `None` means the command's
    /// `--token` (if any). Never serialized, never in `Debug`.
    #[serde(skip)]
    pub token: Option<String>,
    /// The registry namespaces the host was found under (empty for a host file). Not
    /// serialized: a probe's row carries the namespaces the agent itself reports.
    #[serde(skip)]
    pub namespaces: Vec<String>,
}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Host")
            .field("name", &self.name)
            .field("addr", &self.addr)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("namespaces", &self.namespaces)
            .finish()
    }
}

impl Host {
    /// A host named `name` at `addr` (`host` or `host:port`, `[v6]:port`), without a token.
    pub fn new(name: &str, addr: &str, default_port: u16) -> Result<Host, String> {
        Ok(Host {
            name: name.to_owned(),
            addr: normalize_addr(addr, default_port)?,
            token: None,
            namespaces: Vec::new(),
        })
    }
}

/// Why the inventory could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// The file (or stdin) could not be read.
    #[error("host file {source_name}: {reason}")]
    Read {
        /// The path, or `stdin`.
        source_name: String,
        /// What went wrong.
        reason: String,
    },
    /// Lines that are not hosts; every bad line is listed.
    #[error("host file {source_name}: {}", .problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "))]
    Lines {
        /// The path, or `stdin`.
        source_name: String,
        /// Each bad line.
        problems: Vec<LineProblem>,
    },
    /// The inventory names no host at all.
    #[error("host file {source_name}: no hosts (every line is blank or a comment)")]
    Empty {
        /// The path, or `stdin`.
        source_name: String,
    },
}

/// One bad line of a host file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineProblem {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for LineProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// Reads a host file: `-` is stdin, anything else a path.
pub fn load(source: &str, default_port: u16) -> Result<Vec<Host>, InventoryError> {
    let source_name = if source == "-" { "stdin" } else { source }.to_owned();
    let read_err = |reason: String| InventoryError::Read {
        source_name: source_name.clone(),
        reason,
    };
    let mut bytes = Vec::new();
    if source == "-" {
        std::io::stdin()
            .lock()
            .take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| read_err(e.to_string()))?;
    } else {
        std::fs::File::open(Path::new(source))
            .and_then(|f| f.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes))
            .map_err(|e| read_err(e.to_string()))?;
    }
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(read_err(format!(
            "larger than {} MiB; is this a host list?",
            MAX_FILE_BYTES / 1024 / 1024
        )));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        read_err(format!(
            "not UTF-8 text (at byte {})",
            e.utf8_error().valid_up_to()
        ))
    })?;
    parse(&text, default_port).map_err(|problems| match problems {
        ParseError::Lines(problems) => InventoryError::Lines {
            source_name: source_name.clone(),
            problems,
        },
        ParseError::Empty => InventoryError::Empty {
            source_name: source_name.clone(),
        },
    })
}

/// Why [`parse`] refused a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Each bad line.
    Lines(Vec<LineProblem>),
    /// No host in the text.
    Empty,
}

/// Parses the text of a host file; returns every bad line, not just the first.
pub fn parse(text: &str, default_port: u16) -> Result<Vec<Host>, ParseError> {
    let mut hosts = Vec::new();
    let mut problems = Vec::new();
    let mut seen = std::collections::HashMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let mut bad = |reason: String| problems.push(LineProblem { line, reason });
        if raw.chars().count() > MAX_LINE_CHARS {
            bad(format!("longer than {MAX_LINE_CHARS} characters"));
            continue;
        }
        let content = raw.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        let fields: Vec<&str> = content.split_whitespace().collect();
        let (name, addr, token) = match fields.as_slice() {
            [addr] => (*addr, *addr, None),
            [name, addr] => (*name, *addr, None),
            [name, addr, token] => (*name, *addr, Some(*token)),
            _ => {
                bad(format!(
                    "{} fields; expected `name addr[:port] [token]` or `addr[:port]`",
                    fields.len()
                ));
                continue;
            }
        };
        if name.chars().any(|c| c.is_control()) {
            bad("the name holds a control character".into());
            continue;
        }
        let mut host = match Host::new(name, addr, default_port) {
            Ok(h) => h,
            Err(reason) => {
                bad(reason);
                continue;
            }
        };
        if let Some(token) = token {
            if token.chars().any(|c| c.is_control() || !c.is_ascii()) {
                bad("the token holds a character that cannot go in an HTTP header".into());
                continue;
            }
            host.token = Some(token.to_owned());
        }
        if let Some(first) = seen.insert(host.name.clone(), line) {
            bad(format!(
                "the name {:?} is already used on line {first}; names must be unique",
                host.name
            ));
            continue;
        }
        hosts.push(host);
    }
    if !problems.is_empty() {
        return Err(ParseError::Lines(problems));
    }
    if hosts.is_empty() {
        return Err(ParseError::Empty);
    }
    Ok(hosts)
}

/// Gives every host without a token of its own the command's `--token`.
pub fn apply_default_token(hosts: &mut [Host], token: Option<&str>) {
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return;
    };
    for host in hosts.iter_mut().filter(|h| h.token.is_none()) {
        host.token = Some(token.to_owned());
    }
}

/// Checks `addr` (`host`, `host:port`, `[v6]` or `[v6]:port`) and adds `default_port` when it
/// has none; a URL is refused (the fleet speaks plain HTTP to `host:port`).
pub fn normalize_addr(addr: &str, default_port: u16) -> Result<String, String> {
    if addr.contains("://") || addr.contains('/') {
        return Err(format!(
            "address {addr:?}: write host[:port], without a scheme or path"
        ));
    }
    let (host, port) = if let Some(rest) = addr.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return Err(format!("address {addr:?}: `[` without `]`"));
        };
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("address {addr:?}: {v6:?} is not an IPv6 address"));
        }
        let port = match after {
            "" => None,
            p => match p.strip_prefix(':') {
                Some(p) => Some(p),
                None => return Err(format!("address {addr:?}: text after `]`")),
            },
        };
        (format!("[{v6}]"), port)
    } else {
        match addr.split_once(':') {
            Some((h, p)) if !p.contains(':') => (h.to_owned(), Some(p)),
            Some(_) => {
                return Err(format!(
                    "address {addr:?}: an IPv6 address goes in brackets, [addr]:port"
                ))
            }
            None => (addr.to_owned(), None),
        }
    };
    if host.is_empty() {
        return Err(format!("address {addr:?}: no host"));
    }
    if !host.starts_with('[')
        && !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
    {
        return Err(format!(
            "address {addr:?}: {host:?} is not a hostname or IP address"
        ));
    }
    let port = match port {
        None => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(0) | Err(_) => {
                return Err(format!(
                    "address {addr:?}: port {p:?} is not a number from 1 to 65535"
                ))
            }
            Ok(p) => p,
        },
    };
    Ok(format!("{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_shapes_comments_and_blanks() {
        let text = "# the web tier\n\
                    web-1 10.0.0.1:1300 s3cret\n\
                    \n\
                    web-2 10.0.0.2   # default port\n\
                    10.0.0.3:1400\n\
                    [::1]:1500\n";
        let hosts = parse(text, DEFAULT_PORT).expect("valid file");
        let got: Vec<(&str, &str, Option<&str>)> = hosts
            .iter()
            .map(|h| (h.name.as_str(), h.addr.as_str(), h.token.as_deref()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("web-1", "10.0.0.1:1300", Some("s3cret")),
                ("web-2", "10.0.0.2:1232", None),
                ("10.0.0.3:1400", "10.0.0.3:1400", None),
                ("[::1]:1500", "[::1]:1500", None),
            ]
        );
    }

    #[test]
    fn every_bad_line_is_named_by_number() {
        let text = "ok 127.0.0.1:1\n\
                    a b c d\n\
                    bad http://x:1\n\
                    p 1.2.3.4:99999\n\
                    ok 127.0.0.1:2\n\
                    q [::1\n";
        let Err(ParseError::Lines(problems)) = parse(text, DEFAULT_PORT) else {
            panic!("expected line errors");
        };
        let lines: Vec<usize> = problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, vec![2, 3, 4, 5, 6]);
        assert!(problems[0].reason.contains("4 fields"), "{problems:?}");
        assert!(
            problems[1].reason.contains("without a scheme"),
            "{problems:?}"
        );
        assert!(problems[2].reason.contains("65535"), "{problems:?}");
        assert!(problems[3].reason.contains("line 1"), "{problems:?}");
    }

    #[test]
    fn an_inventory_without_hosts_is_an_error() {
        assert_eq!(
            parse("# nothing\n\n   \n", DEFAULT_PORT),
            Err(ParseError::Empty)
        );
    }

    #[test]
    fn the_default_token_fills_only_hosts_without_one() {
        let mut hosts = parse("a 127.0.0.1:1 own\nb 127.0.0.1:2\n", 1).expect("valid");
        apply_default_token(&mut hosts, Some("shared"));
        assert_eq!(hosts[0].token.as_deref(), Some("own"));
        assert_eq!(hosts[1].token.as_deref(), Some("shared"));
    }

    #[test]
    fn debug_never_shows_a_token() {
        let hosts = parse("a 127.0.0.1:1 very-secret-token\n", 1).expect("valid");
        let shown = format!("{:?}", hosts[0]);
        assert!(!shown.contains("very-secret"), "{shown}");
        let json = serde_json::to_string(&hosts[0]).expect("json");
        assert!(!json.contains("very-secret"), "{json}");
    }

    #[test]
    fn hostile_input_is_refused_not_panicked_on() {
        for line in [
            "n :80",
            "n host:",
            "n host:abc",
            "n h\u{7f}:1",
            "n a:b:c",
            "n [zz]:1",
            "n [::1]x",
            "n 1.2.3.4:0",
        ] {
            assert!(
                matches!(parse(line, 1), Err(ParseError::Lines(_))),
                "{line:?} accepted"
            );
        }
        let long = "x".repeat(MAX_LINE_CHARS + 1);
        assert!(matches!(parse(&long, 1), Err(ParseError::Lines(_))));
    }
}
