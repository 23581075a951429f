//! The `file` output: one file per namespace under a directory, rotated by size.
//!
//! `{dir}/{ns}.lp` receives every batch of `ns` as written; past `max_bytes` it is renamed to
//! `{ns}.lp.1` (older ones shift to `.2` ... up to `keep`, the oldest removed) and a new file starts.
//! A batch counts as delivered once `write` returned (it is in the page cache, not fsynced).
//! A batch of at most 64 KiB to a file already open is written on the async thread, as the
//! spool's push is; opening, rotating and larger batches go to the blocking pool.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{BoxFuture, DeliveryError, EncodedBatch, Output};

struct Open {
    file: File,
    len: u64,
}

struct State {
    dir: PathBuf,
    max_bytes: u64,
    keep: usize,
    files: HashMap<String, Open>,
}

/// Writes batches to per-namespace files.
pub struct FileOutput {
    state: Arc<Mutex<State>>,
    dir: PathBuf,
}

impl FileOutput {
    /// An output writing under `dir` (created if missing).
    pub fn new(dir: PathBuf, max_bytes: u64, keep: usize) -> std::io::Result<Self> {
        crate::files::create_dir_all(&dir, crate::files::PRIVATE_DIR).map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot create {}: {e}", dir.display()))
        })?;
        Ok(FileOutput {
            state: Arc::new(Mutex::new(State {
                dir: dir.clone(),
                max_bytes,
                keep,
                files: HashMap::new(),
            })),
            dir,
        })
    }

    /// The file a namespace's points are written to.
    pub fn path_for(dir: &Path, ns: &str) -> PathBuf {
        dir.join(format!("{ns}.lp"))
    }
}

/// Largest batch written on the async thread (see [`State::write_open`]).
const INLINE_MAX: usize = 64 << 10;

impl State {
    /// Writes `batch` at once when its file is open and no rotation is due: one `write(2)` of
    /// a small batch into the page cache, as the spool's push does, instead of a trip to the
    /// blocking pool (a thread wakeup each, most of what an idle agent's output cost). `None`:
    /// it needs [`State::write`] on the blocking pool (opening, rotating, a large batch).
    fn write_open(&mut self, batch: &EncodedBatch) -> Option<std::io::Result<()>> {
        let len = batch.payload.len();
        let open = self.files.get_mut(&batch.ns)?;
        if len > INLINE_MAX || (open.len > 0 && open.len + len as u64 > self.max_bytes) {
            return None;
        }
        if let Err(e) = open.file.write_all(&batch.payload) {
            self.files.remove(&batch.ns);
            return Some(Err(e));
        }
        open.len += len as u64;
        Some(Ok(()))
    }

    fn write(&mut self, batch: &EncodedBatch) -> std::io::Result<()> {
        let path = FileOutput::path_for(&self.dir, &batch.ns);
        let needs_rotation = self
            .files
            .get(&batch.ns)
            .is_some_and(|o| o.len > 0 && o.len + batch.payload.len() as u64 > self.max_bytes);
        if needs_rotation {
            self.files.remove(&batch.ns);
            rotate(&path, self.keep)?;
        }
        let open = match self.files.entry(batch.ns.clone()) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let file = crate::files::options()
                    .create(true)
                    .append(true)
                    .open(&path)?;
                let len = file.metadata()?.len();
                v.insert(Open { file, len })
            }
        };
        if let Err(e) = open.file.write_all(&batch.payload) {
            // The handle may point at a removed or broken file; reopen next time.
            self.files.remove(&batch.ns);
            return Err(e);
        }
        open.len += batch.payload.len() as u64;
        Ok(())
    }
}

/// Shifts `p.lp.N` to `p.lp.N+1` (dropping the oldest beyond `keep`) and `p.lp` to `p.lp.1`.
fn rotate(path: &Path, keep: usize) -> std::io::Result<()> {
    let numbered = |n: usize| PathBuf::from(format!("{}.{n}", path.display()));
    if keep == 0 {
        return fs::remove_file(path);
    }
    let _ = fs::remove_file(numbered(keep));
    for n in (1..keep).rev() {
        let from = numbered(n);
        if from.exists() {
            fs::rename(&from, numbered(n + 1))?;
        }
    }
    fs::rename(path, numbered(1))
}

impl Output for FileOutput {
    fn endpoint(&self) -> String {
        self.dir.display().to_string()
    }

    fn deliver<'a>(
        &'a mut self,
        batch: &'a Arc<EncodedBatch>,
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        let state = Arc::clone(&self.state);
        let batch = Arc::clone(batch);
        Box::pin(async move {
            let now = {
                let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
                st.write_open(&batch).map(|r| {
                    r.map_err(|e| {
                        format!(
                            "cannot write {}: {e}",
                            FileOutput::path_for(&st.dir, &batch.ns).display()
                        )
                    })
                })
            };
            if let Some(written) = now {
                return written.map_err(DeliveryError::Retry);
            }
            let result = tokio::task::spawn_blocking(move || {
                let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
                st.write(&batch).map_err(|e| {
                    format!(
                        "cannot write {}: {e}",
                        FileOutput::path_for(&st.dir, &batch.ns).display()
                    )
                })
            })
            .await;
            match result {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(DeliveryError::Retry(e)),
                Err(e) => Err(DeliveryError::Retry(format!(
                    "file writer task failed: {e}"
                ))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(ns: &str, text: &str) -> Arc<EncodedBatch> {
        Arc::new(EncodedBatch {
            ns: ns.into(),
            points: 1,
            payload: text.as_bytes().to_vec(),
        })
    }

    #[test]
    fn a_small_batch_to_an_open_file_does_not_wait_for_the_blocking_pool() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .max_blocking_threads(1)
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        rt.block_on(async {
            let mut out = FileOutput::new(dir.path().to_path_buf(), 1 << 20, 2).expect("new");
            out.deliver(&batch("a", "m value=1 1764000000\n"))
                .await
                .expect("opens the file");
            // The pool's only thread is busy until released.
            let (release, held) = std::sync::mpsc::channel::<()>();
            let busy = tokio::task::spawn_blocking(move || held.recv());
            tokio::time::timeout(
                std::time::Duration::from_secs(5),
                out.deliver(&batch("a", "m value=2 1764000001\n")),
            )
            .await
            .expect("written without the blocking pool")
            .expect("write");
            release.send(()).expect("release");
            busy.await.expect("join").expect("released");
        });
        let a = fs::read_to_string(dir.path().join("a.lp")).expect("a");
        assert_eq!(a, "m value=1 1764000000\nm value=2 1764000001\n");
    }

    #[tokio::test]
    async fn writes_per_namespace_and_rotates_by_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut out = FileOutput::new(dir.path().to_path_buf(), 4096, 2).expect("new");
        let line = format!("m,host=h value=1 1764000000{}\n", " ".repeat(0));
        for _ in 0..400 {
            out.deliver(&batch("a", &line)).await.expect("write");
        }
        out.deliver(&batch("b", "b value=2 1764000000\n"))
            .await
            .expect("write");
        let b = fs::read_to_string(dir.path().join("b.lp")).expect("b");
        assert_eq!(b, "b value=2 1764000000\n");
        let cur = fs::metadata(dir.path().join("a.lp")).expect("a").len();
        let one = fs::metadata(dir.path().join("a.lp.1")).expect("a.1").len();
        assert!(cur <= 4096 && one <= 4096 && one > 4000, "{cur} {one}");
        assert!(dir.path().join("a.lp.2").exists());
        assert!(
            !dir.path().join("a.lp.3").exists(),
            "keep = 2 bounds rotation"
        );
    }
}
