//! One line from an error and its causes, for messages people read.
//!
//! Many errors already put their cause in their own text (`cannot read it: No such file or
//! directory`) and also return it as `source()`; joining the chain naively then says the cause
//! twice. [`join`] leaves out a cause whose text the message already ends with.

use std::error::Error;

/// The texts of an error chain (outermost first), joined with ": ", each cause left out when
/// the message so far already ends with its text.
pub fn join<I, S>(texts: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut out = String::new();
    for text in texts {
        let text = text.as_ref();
        if text.is_empty() || out.ends_with(text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(text);
    }
    out
}

/// `e` and every source, joined as [`join`] does.
pub fn chain(e: &(dyn Error + 'static)) -> String {
    join(std::iter::successors(Some(e), |&e| e.source()).map(ToString::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("config file x: cannot read it: {0}")]
    struct SaysItsCause(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let e = SaysItsCause(std::io::Error::from(std::io::ErrorKind::NotFound));
        let text = chain(&e);
        assert_eq!(text.matches("not found").count(), 1, "{text}");
        assert_eq!(text, "config file x: cannot read it: entity not found");
    }

    #[test]
    fn a_cause_not_in_the_message_is_added() {
        let e = Outer(std::io::Error::other("connection refused"));
        assert_eq!(chain(&e), "outer: connection refused");
    }

    #[test]
    fn empty_texts_add_no_separator() {
        assert_eq!(join(["a", "", "b"]), "a: b");
    }
}
