//! The `stdout` output: batches printed as they are encoded, for debugging.

use std::sync::Arc;

use tokio::io::AsyncWriteExt;

use super::{BoxFuture, DeliveryError, EncodedBatch, Output};

/// Prints every batch to standard output.
#[derive(Default)]
pub struct StdoutOutput {
    out: Option<tokio::io::Stdout>,
}

impl Output for StdoutOutput {
    fn endpoint(&self) -> String {
        "stdout".to_owned()
    }

    fn deliver<'a>(
        &'a mut self,
        batch: &'a Arc<EncodedBatch>,
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let out = self.out.get_or_insert_with(tokio::io::stdout);
            let mut buf = batch.payload.clone();
            if !buf.ends_with(b"\n") {
                buf.push(b'\n');
            }
            out.write_all(&buf)
                .await
                .map_err(|e| DeliveryError::Retry(format!("cannot write to stdout: {e}")))?;
            out.flush()
                .await
                .map_err(|e| DeliveryError::Retry(format!("cannot write to stdout: {e}")))
        })
    }
}
