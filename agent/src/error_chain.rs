//! Error chains for messages: reqwest's and hyper's `Display` stop at the outermost layer
//! ("error sending request"), while the cause (connection refused, certificate, timeout) is what
//! an operator needs.

use std::error::Error;

/// `e` and its sources, outermost first.
pub fn sources<'a>(
    e: &'a (dyn Error + 'static),
) -> impl Iterator<Item = &'a (dyn Error + 'static)> {
    std::iter::successors(Some(e), |&e| e.source())
}

/// `e` and every source, joined with ": ".
pub fn error_chain(e: &(dyn Error + 'static)) -> String {
    sources(e)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn the_chain_lists_every_cause_outermost_first() {
        let e = Outer(std::io::Error::other("connection refused"));
        assert_eq!(error_chain(&e), "outer: connection refused");
        assert_eq!(sources(&e).count(), 2);
    }
}
