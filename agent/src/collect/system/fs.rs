//! Filesystem usage and inodes per mount point: the mount table from `/proc/self/mounts`, the
//! figures from `statvfs`, as `df` shows them.
//!
//! Left out: pseudo and virtual filesystems (see [`DEFAULT_SKIP_FSTYPES`]: kernel interfaces,
//! `tmpfs` (memory, already in MEM), `overlay`/`aufs` (container roots that repeat the host
//! filesystem under them), read-only images (`squashfs`, `iso9660`, always full)), and any
//! filesystem that reports zero blocks. A mount point listed twice is reported once, for the
//! mount that is on top, and not at all when that one is of a skipped type.
//!
//! `statvfs` on a network filesystem whose server is gone can block for ever, so for those types
//! ([`may_hang`]) it runs on a thread of its own and is given up after
//! [`SystemOptions::statvfs_timeout`]; the mount is then left out until that call returns, so a
//! dead server costs one waiting thread, not the FS family (nor the families collected after it).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::statvfs::statvfs;

use super::{name_matches, percent, Out, Reader, SystemOptions};

/// Filesystem types skipped by default.
pub const DEFAULT_SKIP_FSTYPES: [&str; 32] = [
    "proc",
    "sysfs",
    "devtmpfs",
    "devpts",
    "tmpfs",
    "ramfs",
    "cgroup",
    "cgroup2",
    "securityfs",
    "pstore",
    "debugfs",
    "tracefs",
    "configfs",
    "fusectl",
    "mqueue",
    "hugetlbfs",
    "bpf",
    "autofs",
    "binfmt_misc",
    "rpc_pipefs",
    "nsfs",
    "selinuxfs",
    "efivarfs",
    "overlay",
    "aufs",
    "squashfs",
    "iso9660",
    "nfsd",
    "fuse.lxcfs",
    "fuse.gvfsd-fuse",
    "fuse.portal",
    "devfs",
];

/// One line of the mount table.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Mount<'a> {
    pub device: Cow<'a, str>,
    pub point: Cow<'a, str>,
    pub fstype: &'a str,
}

pub(super) fn collect(r: &mut Reader, o: &SystemOptions, st: &mut State, out: &mut Out) {
    let Some(text) = r.read(&o.proc_root.join("self/mounts")) else {
        return;
    };
    let mounts: Vec<Mount<'_>> = parse(text).collect();
    // Logged after the loop because `text` borrows the reader's buffer.
    let mut outcomes = Vec::new();
    for (i, m) in mounts.iter().enumerate() {
        // A later mount on the same point hides this one, whatever its type: statvfs sees the top.
        if mounts[i + 1..].iter().any(|later| later.point == m.point) {
            continue;
        }
        if name_matches(&o.skip_fstypes, m.fstype) {
            continue;
        }
        let outcome = if may_hang(m.fstype) {
            let point = m.point.to_string();
            st.stat_within(&m.point, o.statvfs_timeout, move || stat(&point))
        } else {
            Outcome::Done(stat(&m.point))
        };
        if let Outcome::Done(Ok(s)) = &outcome {
            emit(m, s, out);
        }
        outcomes.push((m.point.clone().into_owned(), outcome));
    }
    for (point, outcome) in outcomes {
        let path = Path::new(&point);
        match outcome {
            Outcome::Done(Ok(_)) => r.recovered(path),
            Outcome::Done(Err(e)) => r.failed(path, &e),
            Outcome::TimedOut => r.failed(
                path,
                &format!(
                    "statvfs did not return within {:?} (a network filesystem whose server does not answer?); the mount is left out until it does",
                    o.statvfs_timeout
                ),
            ),
            Outcome::StillHung => {}
        }
    }
}

/// Filesystem types whose `statvfs` waits on a server or a user-space daemon that may never
/// answer.
pub(super) fn may_hang(fstype: &str) -> bool {
    fstype.starts_with("fuse")
        || matches!(
            fstype,
            "nfs"
                | "nfs4"
                | "cifs"
                | "smb3"
                | "smbfs"
                | "ceph"
                | "glusterfs"
                | "9p"
                | "afs"
                | "lustre"
                | "gpfs"
                | "beegfs"
                | "ocfs2"
                | "gfs2"
        )
}

fn stat(point: &str) -> nix::Result<Stat> {
    statvfs(point).map(|s| {
        let frsize = s.fragment_size();
        Stat {
            blocks: s.blocks() * frsize,
            free: s.blocks_free() * frsize,
            avail: s.blocks_available() * frsize,
            files: s.files(),
            files_free: s.files_free(),
        }
    })
}

/// What became of one mount's `statvfs`.
#[derive(Debug)]
pub(super) enum Outcome {
    /// It returned.
    Done(nix::Result<Stat>),
    /// It did not return in time; it goes on in its thread and the mount waits for it.
    TimedOut,
    /// An earlier call that timed out has still not returned; no new one was made.
    StillHung,
}

/// `statvfs` calls that did not return in time, by mount point; each still has its thread.
#[derive(Default)]
pub(super) struct State {
    hung: BTreeMap<String, mpsc::Receiver<nix::Result<Stat>>>,
}

impl State {
    /// Runs `stat` on a thread of its own and waits at most `timeout` for it. While an earlier
    /// call for `point` has not returned, makes no new one: at most one thread per hung mount.
    pub(super) fn stat_within(
        &mut self,
        point: &str,
        timeout: Duration,
        stat: impl FnOnce() -> nix::Result<Stat> + Send + 'static,
    ) -> Outcome {
        if let Some(earlier) = self.hung.get(point) {
            if let Err(mpsc::TryRecvError::Empty) = earlier.try_recv() {
                return Outcome::StillHung;
            }
            // It returned at last (its figures are old now): ask again.
            self.hung.remove(point);
        }
        let (tx, rx) = mpsc::sync_channel(1);
        let spawned = std::thread::Builder::new()
            .name("statvfs".into())
            .spawn(move || {
                // The collector may have stopped waiting; then nobody needs the answer.
                let _ = tx.send(stat());
            });
        if spawned.is_err() {
            return Outcome::Done(Err(Errno::EAGAIN));
        }
        match rx.recv_timeout(timeout) {
            Ok(result) => Outcome::Done(result),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                self.hung.insert(point.to_owned(), rx);
                Outcome::TimedOut
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => Outcome::Done(Err(Errno::EIO)),
        }
    }
}

/// `statvfs` figures in bytes and inodes.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Stat {
    pub blocks: u64,
    pub free: u64,
    pub avail: u64,
    pub files: u64,
    pub files_free: u64,
}

/// Like `df`: used = total - free; `fs.free` is what unprivileged users can still write (blocks
/// reserved for root excluded), and used percent is used / (used + that), so 100 % means full for
/// ordinary processes.
pub(super) fn emit(m: &Mount<'_>, s: &Stat, out: &mut Out) {
    if s.blocks == 0 {
        return;
    }
    let tags = [
        ("mount", m.point.as_ref()),
        ("fstype", m.fstype),
        ("device", m.device.as_ref()),
    ];
    let used = s.blocks.saturating_sub(s.free);
    out.push("fs.total", s.blocks as f64, &tags);
    out.push("fs.used", used as f64, &tags);
    out.push("fs.free", s.avail as f64, &tags);
    out.push(
        "fs.used_percent",
        percent(used as f64, (used + s.avail) as f64),
        &tags,
    );
    // Some filesystems (btrfs, vfat) have no fixed inode table and report 0.
    if s.files > 0 {
        let iused = s.files.saturating_sub(s.files_free);
        out.push("fs.inodes_total", s.files as f64, &tags);
        out.push("fs.inodes_used", iused as f64, &tags);
        out.push("fs.inodes_free", s.files_free as f64, &tags);
        out.push(
            "fs.inodes_used_percent",
            percent(iused as f64, s.files as f64),
            &tags,
        );
    }
}

/// The mount table's lines; malformed lines are left out.
pub(super) fn parse(text: &str) -> impl Iterator<Item = Mount<'_>> {
    text.lines().filter_map(|line| {
        let mut w = line.split_ascii_whitespace();
        let device = unescape(w.next()?);
        let point = unescape(w.next()?);
        let fstype = w.next()?;
        Some(Mount {
            device,
            point,
            fstype,
        })
    })
}

/// The mount table writes space, tab, newline and backslash in names as octal escapes (`\040`).
fn unescape(s: &str) -> Cow<'_, str> {
    if !s.contains('\\') {
        return Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .map(|d| d.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0')))
            .and_then(|v| u8::try_from(v).ok());
        match octal {
            Some(v) => {
                out.push(v);
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_unescapes_mount_points() {
        let text = "/dev/vda / ext4 rw 0 0\n/dev/sdb1 /mnt/my\\040disk xfs rw 0 0\nproc /proc proc rw 0 0\n";
        let m: Vec<_> = parse(text).collect();
        assert_eq!(m.len(), 3);
        assert_eq!(m[1].point, "/mnt/my disk");
        assert_eq!(m[1].fstype, "xfs");
        assert_eq!(unescape("a\\134b"), "a\\b");
        assert_eq!(unescape("trailing\\04"), "trailing\\04");
        assert_eq!(unescape("big\\777"), "big\\777");
    }

    #[test]
    fn usage_like_df() {
        let m = Mount {
            device: "/dev/x".into(),
            point: "/".into(),
            fstype: "ext4",
        };
        let s = Stat {
            blocks: 1000,
            free: 300,
            avail: 200,
            files: 100,
            files_free: 75,
        };
        let mut out = Out::new();
        emit(&m, &s, &mut out);
        let get = |n: &str| {
            out.metrics
                .iter()
                .find(|m| m.name == n)
                .map(|m| m.value.clone())
        };
        assert_eq!(get("fs.used"), Some(shared::Value::Float(700.0)));
        assert_eq!(get("fs.free"), Some(shared::Value::Float(200.0)));
        assert_eq!(
            get("fs.used_percent"),
            Some(shared::Value::Float(700.0 / 900.0 * 100.0))
        );
        assert_eq!(
            get("fs.inodes_used_percent"),
            Some(shared::Value::Float(25.0))
        );
        let tags = &out.metrics[0].tags;
        assert_eq!(tags.get("mount").map(String::as_str), Some("/"));
        assert_eq!(tags.get("fstype").map(String::as_str), Some("ext4"));
    }

    #[test]
    fn a_statvfs_that_hangs_is_given_up_and_not_repeated_until_it_returns() {
        let mut st = State::default();
        let (release, released) = mpsc::channel::<()>();
        let started = std::time::Instant::now();
        let outcome = st.stat_within("/mnt/nfs", Duration::from_millis(50), move || {
            let _ = released.recv_timeout(Duration::from_secs(30));
            Ok(Stat::default())
        });
        assert!(matches!(outcome, Outcome::TimedOut), "{outcome:?}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "it did not wait"
        );
        let outcome = st.stat_within("/mnt/nfs", Duration::from_millis(50), || {
            panic!("no second call while the first hangs")
        });
        assert!(matches!(outcome, Outcome::StillHung), "{outcome:?}");
        let other = st.stat_within("/mnt/other", Duration::from_secs(5), || {
            Ok(Stat {
                blocks: 1,
                ..Stat::default()
            })
        });
        assert!(
            matches!(other, Outcome::Done(Ok(Stat { blocks: 1, .. }))),
            "other mounts go on: {other:?}"
        );

        // The hung call returns: the next collection asks again.
        release.send(()).expect("release");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let outcome = loop {
            let o = st.stat_within("/mnt/nfs", Duration::from_secs(5), || {
                Ok(Stat {
                    blocks: 7,
                    ..Stat::default()
                })
            });
            if !matches!(o, Outcome::StillHung) || std::time::Instant::now() > deadline {
                break o;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(
            matches!(outcome, Outcome::Done(Ok(Stat { blocks: 7, .. }))),
            "{outcome:?}"
        );
    }

    /// A collector whose mount table is `dir/self/mounts`, for the test to write.
    fn reading_mounts_from(dir: &Path) -> super::super::SystemCollector {
        std::fs::create_dir(dir.join("self")).expect("mkdir");
        super::super::SystemCollector::new(SystemOptions {
            proc_root: dir.to_owned(),
            ..SystemOptions::default()
        })
    }

    #[test]
    fn network_filesystems_are_measured_on_a_thread_of_their_own() {
        assert!(may_hang("nfs4") && may_hang("cifs") && may_hang("fuse.sshfs"));
        assert!(!may_hang("ext4") && !may_hang("xfs"));
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = reading_mounts_from(dir.path());
        std::fs::write(
            dir.path().join("self/mounts"),
            format!("server:/export {} nfs4 rw 0 0\n", dir.path().display()),
        )
        .expect("w");
        let m = c.collect(super::super::Family::Fs);
        assert!(
            m.iter().any(|m| m.name == "fs.total"
                && m.tags.get("fstype").map(String::as_str) == Some("nfs4")),
            "{m:?}"
        );
    }

    #[test]
    fn a_skipped_filesystem_mounted_on_top_hides_the_one_below() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = reading_mounts_from(dir.path());
        let table = dir.path().join("self/mounts");
        std::fs::write(&table, "/dev/vda / ext4 rw 0 0\n").expect("w");
        let m = c.collect(super::super::Family::Fs);
        assert!(m.iter().any(|m| m.name == "fs.total"), "{m:?}");
        std::fs::write(&table, "/dev/vda / ext4 rw 0 0\ntmpfs / tmpfs rw 0 0\n").expect("w");
        assert!(c.collect(super::super::Family::Fs).is_empty());
        std::fs::write(&table, "tmpfs / tmpfs rw 0 0\n/dev/vda / ext4 rw 0 0\n").expect("w");
        let m = c.collect(super::super::Family::Fs);
        assert_eq!(
            m[0].tags.get("device").map(String::as_str),
            Some("/dev/vda")
        );
    }
}
