//! `--filter`: which rows a fleet command shows or acts on.
//!
//! An expression is terms joined by commas, all of which must hold (AND): `key op value`, with
//! keys `state`, `version`, `name`, `addr` and `ns`, and operators `=`, `!=`, `<`, `<=`, `>`, `>=`.
//! `=` and `!=` take `*` (any run of characters) and `?` (one character) in the value; `<` and
//! its kin compare versions part by part as numbers (`0.10.0` > `0.9.1`) and apply only to
//! `version`. `ns` holds when any of the host's namespaces matches (`ns!=` when none does). A
//! host whose version is unknown (it did not answer) matches no version comparison.

use std::cmp::Ordering;

use super::inventory::Host;
use super::probe::{Row, STATE_NAMES};

/// A field a term tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// The probe's state name.
    State,
    /// The agent's version.
    Version,
    /// The host's name.
    Name,
    /// The host's address.
    Addr,
    /// Any of the host's namespaces.
    Ns,
}

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `=` (glob).
    Eq,
    /// `!=` (glob).
    Ne,
    /// `<` (versions).
    Lt,
    /// `<=` (versions).
    Le,
    /// `>` (versions).
    Gt,
    /// `>=` (versions).
    Ge,
}

/// One `key op value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    /// What is tested.
    pub key: Key,
    /// How.
    pub op: Op,
    /// Against what.
    pub value: String,
}

/// A parsed `--filter`; the empty filter selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Every term must hold.
    pub terms: Vec<Term>,
}

impl Filter {
    /// Parses `state!=ok,version<0.2.0,ns=web.*,name=db-*`; the error says which term is wrong
    /// and what would be right.
    pub fn parse(text: &str) -> Result<Filter, String> {
        let mut terms = Vec::new();
        for raw in text.split(',') {
            let term = raw.trim();
            if term.is_empty() {
                continue;
            }
            terms.push(parse_term(term)?);
        }
        Ok(Filter { terms })
    }

    /// True when every term holds for `row`.
    pub fn matches(&self, row: &Row) -> bool {
        self.terms.iter().all(|t| t.matches(row))
    }

    /// True when the filter tests only what the inventory knows (name, addr, and ns for hosts
    /// from a registry), so a fan-out need not ask the hosts first.
    pub fn needs_probe(&self) -> bool {
        self.terms
            .iter()
            .any(|t| matches!(t.key, Key::State | Key::Version | Key::Ns))
    }

    /// True when every name/addr term holds for `host` (terms on other keys are ignored).
    pub fn matches_host(&self, host: &Host) -> bool {
        self.terms.iter().all(|t| match t.key {
            Key::Name => t.text_matches(&host.name),
            Key::Addr => t.text_matches(&host.addr),
            _ => true,
        })
    }
}

impl Term {
    /// True when this term holds for `row`.
    pub fn matches(&self, row: &Row) -> bool {
        match self.key {
            Key::State => self.text_matches(row.state.name()),
            Key::Name => self.text_matches(&row.host.name),
            Key::Addr => self.text_matches(&row.host.addr),
            Key::Ns => {
                let any = row.namespaces.iter().any(|ns| glob(&self.value, ns));
                match self.op {
                    Op::Ne => !any,
                    _ => any,
                }
            }
            Key::Version => match row.version() {
                None => false,
                Some(v) => match self.op {
                    Op::Eq | Op::Ne => self.text_matches(v),
                    op => {
                        let ord = compare_versions(v, &self.value);
                        match op {
                            Op::Lt => ord == Ordering::Less,
                            Op::Le => ord != Ordering::Greater,
                            Op::Gt => ord == Ordering::Greater,
                            _ => ord != Ordering::Less,
                        }
                    }
                },
            },
        }
    }

    fn text_matches(&self, text: &str) -> bool {
        match self.op {
            Op::Ne => !glob(&self.value, text),
            _ => glob(&self.value, text),
        }
    }
}

fn parse_term(term: &str) -> Result<Term, String> {
    // Longest operators first, so `<=` is not read as `<` followed by `=value`.
    const OPS: [(&str, Op); 6] = [
        ("!=", Op::Ne),
        ("<=", Op::Le),
        (">=", Op::Ge),
        ("=", Op::Eq),
        ("<", Op::Lt),
        (">", Op::Gt),
    ];
    let found = term
        .char_indices()
        .find_map(|(i, _)| {
            OPS.iter()
                .find(|(s, _)| term[i..].starts_with(s))
                .map(|(s, op)| (i, s.len(), *op))
        })
        .ok_or_else(|| {
            format!("filter term {term:?}: no operator; write key=value, key!=value, version<0.2.0")
        })?;
    let (at, len, op) = found;
    let key_text = term[..at].trim();
    let value = term[at + len..].trim().to_owned();
    let key = match key_text {
        "state" => Key::State,
        "version" => Key::Version,
        "name" => Key::Name,
        "addr" => Key::Addr,
        "ns" => Key::Ns,
        other => {
            return Err(format!(
                "filter term {term:?}: unknown key {other:?}; the keys are state, version, name, addr, ns"
            ))
        }
    };
    if value.is_empty() {
        return Err(format!("filter term {term:?}: no value after the operator"));
    }
    if matches!(op, Op::Lt | Op::Le | Op::Gt | Op::Ge) {
        if key != Key::Version {
            return Err(format!(
                "filter term {term:?}: <, <=, > and >= compare versions only; use = or != (with *) for {key_text}"
            ));
        }
        if !value
            .split('.')
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
        {
            return Err(format!(
                "filter term {term:?}: {value:?} is not a version like 0.2.0"
            ));
        }
    }
    if key == Key::State && !value.contains(['*', '?']) && !STATE_NAMES.contains(&value.as_str()) {
        return Err(format!(
            "filter term {term:?}: unknown state {value:?}; the states are {}",
            STATE_NAMES.join(", ")
        ));
    }
    Ok(Term { key, op, value })
}

/// Compares dotted versions part by part as numbers; a missing part is 0 (`0.2` = `0.2.0`), and
/// a part's non-numeric tail (`0.2.0-rc1`) is ignored for the order.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let parts = |v: &str| -> Vec<u64> {
        v.split(['.', '-', '+'])
            .take_while(|p| p.chars().next().is_some_and(|c| c.is_ascii_digit()))
            .map(|p| {
                let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().unwrap_or(u64::MAX)
            })
            .collect()
    };
    let (pa, pb) = (parts(a), parts(b));
    let n = pa.len().max(pb.len());
    for i in 0..n {
        let (x, y) = (
            pa.get(i).copied().unwrap_or(0),
            pb.get(i).copied().unwrap_or(0),
        );
        match x.cmp(&y) {
            Ordering::Equal => continue,
            other => return other,
        }
    }
    Ordering::Equal
}

/// `*` matches any run of characters, `?` one character; everything else itself. Iterative, so
/// a hostile pattern costs at most len(pattern) x len(text) steps.
pub fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::probe::State;
    use shared::api::Status;
    use std::time::Duration;

    fn row(name: &str, state: State, version: Option<&str>, ns: &[&str]) -> Row {
        Row {
            host: Host::new(name, "127.0.0.1:1", 1).expect("addr"),
            state,
            status: version.map(|v| Status {
                version: v.into(),
                ..Default::default()
            }),
            failing_plugins: None,
            namespaces: ns.iter().map(|s| s.to_string()).collect(),
            elapsed: Duration::ZERO,
        }
    }

    #[test]
    fn the_issue_examples_select_what_they_say() {
        let rows = [
            row("db-1", State::Ok, Some("0.1.0"), &["db.prod"]),
            row("web-1", State::Ok, Some("0.2.0"), &["web.prod", "web.all"]),
            row(
                "web-2",
                State::Unreachable {
                    error: "refused".into(),
                },
                None,
                &[],
            ),
            row("web-3", State::Ok, Some("0.10.1"), &["web.prod"]),
        ];
        let pick = |f: &str| -> Vec<&str> {
            let f = Filter::parse(f).expect("valid filter");
            rows.iter()
                .filter(|r| f.matches(r))
                .map(|r| r.host.name.as_str())
                .collect()
        };
        assert_eq!(pick("state!=ok"), ["web-2"]);
        assert_eq!(pick("version<0.2.0"), ["db-1"]);
        assert_eq!(pick("version>=0.2"), ["web-1", "web-3"]);
        assert_eq!(pick("ns=web.*"), ["web-1", "web-3"]);
        assert_eq!(pick("name=db-*"), ["db-1"]);
        assert_eq!(pick("name=web-*, state=ok,version>0.2.0"), ["web-3"]);
        assert_eq!(pick("ns!=web.*"), ["db-1", "web-2"]);
        assert_eq!(pick(""), ["db-1", "web-1", "web-2", "web-3"]);
    }

    #[test]
    fn bad_terms_say_what_is_wrong() {
        for (f, needle) in [
            ("state", "no operator"),
            ("colour=red", "unknown key"),
            ("name<x", "compare versions only"),
            ("version<abc", "not a version"),
            ("state=broken", "unknown state"),
            ("name=", "no value"),
        ] {
            let err = Filter::parse(f).expect_err(f);
            assert!(err.contains(needle), "{f}: {err}");
        }
    }

    #[test]
    fn globs_and_versions() {
        assert!(glob("db-*", "db-12"));
        assert!(glob("*", ""));
        assert!(glob("a?c", "abc"));
        assert!(!glob("a?c", "ac"));
        assert!(glob("*.prod", "web.eu.prod"));
        assert!(!glob("web", "web2"));
        assert!(!glob(&"*a".repeat(50), &"a".repeat(40)));
        assert_eq!(compare_versions("0.10.0", "0.9.9"), Ordering::Greater);
        assert_eq!(compare_versions("0.2", "0.2.0"), Ordering::Equal);
        assert_eq!(compare_versions("0.2.0-rc1", "0.2.0"), Ordering::Equal);
    }
}
