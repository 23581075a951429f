//! `agentctl log`: read or follow a file through `/log/offset`.

use std::time::Duration;

use shared::Client;

use super::{exit, print_json, CommandError};
use crate::cli::LogArgs;

/// The follow poll waits this long at first after an empty read, doubling up to [`MAX_POLL`].
const MIN_POLL: Duration = Duration::from_millis(200);
/// The longest wait between polls while the file is quiet.
const MAX_POLL: Duration = Duration::from_secs(2);

/// Prints the lines; with `--follow`, keeps polling until Ctrl-C (exit 0).
pub async fn run(client: &Client, args: LogArgs, json: bool) -> Result<i32, CommandError> {
    if !args.follow {
        return read(client, &args, json).await;
    }
    // Ctrl-C may come during a request as well as between polls; either way it ends cleanly.
    tokio::select! {
        r = read(client, &args, json) => r,
        _ = tokio::signal::ctrl_c() => Ok(exit::OK),
    }
}

async fn read(client: &Client, args: &LogArgs, json: bool) -> Result<i32, CommandError> {
    let mut offset = args.offset;
    let mut wait = MIN_POLL;
    loop {
        let chunk = match client.log_offset(&args.path, offset, args.num).await {
            Ok(chunk) => chunk,
            // The agent's reads are all taken (503 + Retry-After): a follower waits its turn.
            Err(e) if args.follow && e.is_busy() => {
                tokio::time::sleep(MAX_POLL).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if chunk.size < offset {
            // Truncated or rotated under the same name: what was at `offset` is gone.
            eprintln!(
                "agentctl: {} shrank to {} bytes (truncated or rotated); reading from the start",
                chunk.path, chunk.size
            );
            offset = 0;
            continue;
        }
        let got = !chunk.lines.is_empty();
        if json {
            if got || !args.follow {
                print_json(&chunk)?;
            }
        } else {
            for l in &chunk.lines {
                println!("{l}");
            }
        }
        offset = chunk.next_offset;
        if !args.follow {
            return Ok(exit::OK);
        }
        // More lines may be waiting right away when a read was full; otherwise back off.
        wait = if got {
            MIN_POLL
        } else {
            (wait * 2).min(MAX_POLL)
        };
        // Full, or cut short by the answer's size cap with more of the file already there.
        if got && (chunk.lines.len() as u64 >= args.num || chunk.next_offset < chunk.size) {
            continue;
        }
        tokio::time::sleep(wait).await;
    }
}
