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

/// `e` and every source, joined with ": " (a cause the text already ends with is not repeated).
pub fn error_chain(e: &(dyn Error + 'static)) -> String {
    shared::errors::chain(e)
}

/// An `anyhow` error and its context chain as one line, as `{:#}` prints it but without a cause
/// said twice (`cannot read it: No such file or directory (os error 2)` once).
pub fn anyhow_chain(e: &anyhow::Error) -> String {
    shared::errors::join(e.chain().map(ToString::to_string))
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
