//! `agentctl post`: push metrics from a file or stdin.

use std::io::Read;
use std::path::Path;

use shared::Client;

use super::{exit, print_json, CommandError};
use crate::cli::PostArgs;

/// Sends the input; exit 0 only when every metric was accepted (accepted ones are kept either way).
pub async fn run(client: &Client, args: PostArgs, json: bool) -> Result<i32, CommandError> {
    let path = args.file.filter(|p| p.as_os_str() != "-");
    let body = match &path {
        Some(p) => {
            let p = p.clone();
            tokio::task::spawn_blocking(move || std::fs::read(&p))
                .await
                .map_err(|e| CommandError::Input(format!("reading the input failed: {e}")))?
                .map_err(|e| {
                    CommandError::Input(format!(
                        "cannot read {}: {e}",
                        path.as_deref().unwrap_or(Path::new("-")).display()
                    ))
                })?
        }
        None => tokio::task::spawn_blocking(|| {
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf).map(|_| buf)
        })
        .await
        .map_err(|e| CommandError::Input(format!("reading stdin failed: {e}")))?
        .map_err(|e| CommandError::Input(format!("cannot read stdin: {e}")))?,
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(CommandError::Input(
            "nothing to post: the input is empty (give a file or pipe metrics on stdin)".into(),
        ));
    }
    let line = args.line || is_line_protocol(path.as_deref(), &body);
    let resp = client.post(args.ns.as_deref(), body, line).await?;
    if json {
        print_json(&resp)?;
    } else {
        println!(
            "{}: {} accepted, {} rejected",
            resp.ns, resp.accepted, resp.rejected
        );
        for e in &resp.errors {
            println!("  rejected: {e}");
        }
    }
    Ok(if resp.rejected == 0 {
        exit::OK
    } else {
        exit::FAILED
    })
}

/// Line protocol unless the extension or the first non-blank byte says JSON.
fn is_line_protocol(path: Option<&Path>, body: &[u8]) -> bool {
    match path.and_then(|p| p.extension()).and_then(|e| e.to_str()) {
        Some("json") => return false,
        Some("lp" | "line" | "txt") => return true,
        _ => {}
    }
    !matches!(
        body.iter().find(|b| !b.is_ascii_whitespace()),
        Some(b'[' | b'{')
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_comes_from_the_extension_then_the_content() {
        assert!(!is_line_protocol(None, b"  [{\"name\":\"a\",\"value\":1}]"));
        assert!(is_line_protocol(None, b"cpu,host=a value=1 1764000000"));
        assert!(is_line_protocol(Some(Path::new("m.lp")), b"[not json]"));
        assert!(!is_line_protocol(Some(Path::new("m.json")), b"cpu value=1"));
        assert!(!is_line_protocol(Some(Path::new("m.data")), b"{}"));
    }
}
