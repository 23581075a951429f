//! Core dumps: files that appeared since the last collection in the directory the kernel writes
//! them to, counted, and per program where the file name tells it.
//!
//! Where dumps go is `kernel.core_pattern` (`/proc/sys/kernel/core_pattern`):
//! - a piped pattern naming systemd-coredump (`|/usr/lib/systemd/systemd-coredump %P ...`): the
//!   systemd store, `/var/lib/systemd/coredump`, whose files are
//!   `core.<program>.<uid>.<boot id>.<pid>.<time>[.zst|.xz|.lz4]`;
//! - an absolute path (`/var/crash/core.%e.%p`): its directory, and the program from the file
//!   name where the pattern has `%e` after a literal prefix;
//! - a relative pattern (`core`, the kernel default) writes into each crashing process's working
//!   directory, which no one can watch; another pipe (apport, abrt) keeps its own store. In both
//!   cases the systemd store is still watched if it exists, and nothing else is claimed.
//!
//! The first collection only records what is there; later ones report what is new.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::{Out, Reader, SystemOptions};

/// Files remembered at most: a directory with more is not read further (bounded memory).
const MAX_FILES: usize = 10_000;

const SYSTEMD_STORE: &str = "var/lib/systemd/coredump";

#[derive(Default)]
pub(super) struct State {
    seen: Option<BTreeSet<String>>,
    dir: Option<PathBuf>,
}

/// Where dumps land and how to read a program name out of a file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Target {
    /// Relative to the root filesystem.
    pub dir: PathBuf,
    /// The literal text before `%e` in the file name pattern, and the character after it.
    pub program: Option<(String, Option<char>)>,
}

pub(super) fn collect(r: &mut Reader, o: &SystemOptions, st: &mut State, out: &mut Out) {
    let Some(pattern) = r
        .read(&o.proc_root.join("sys/kernel/core_pattern"))
        .map(|p| p.trim().to_owned())
    else {
        return;
    };
    let t = target(&pattern);
    let dir = o.root.join(&t.dir);
    if st.dir.as_ref() != Some(&dir) {
        // The pattern changed: start over rather than report a whole directory as new.
        st.seen = None;
        st.dir = Some(dir.clone());
    }
    let Ok(rd) = std::fs::read_dir(&dir) else {
        // No such store (no systemd-coredump installed, no dump ever written): nothing to say.
        return;
    };
    let now: BTreeSet<String> = rd
        .filter_map(Result::ok)
        .take(MAX_FILES)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    let Some(seen) = st.seen.replace(now) else {
        return;
    };
    let mut by_program: BTreeMap<String, u32> = BTreeMap::new();
    let mut total = 0u32;
    for f in st.seen.iter().flatten().filter(|f| !seen.contains(*f)) {
        total += 1;
        let p = program(&t, f).unwrap_or("unknown");
        *by_program.entry(p.to_owned()).or_default() += 1;
    }
    out.push("coredump.new", f64::from(total), &[]);
    for (p, n) in &by_program {
        out.push(
            "coredump.program",
            f64::from(*n),
            &[("program", p.as_str())],
        );
    }
}

/// The directory and name scheme `core_pattern` implies.
pub(super) fn target(pattern: &str) -> Target {
    let systemd = Target {
        dir: PathBuf::from(SYSTEMD_STORE),
        program: Some(("core.".to_owned(), Some('.'))),
    };
    if pattern.starts_with('|') || !pattern.starts_with('/') {
        return systemd;
    }
    let path = Path::new(pattern);
    let (Some(dir), Some(file)) = (path.parent(), path.file_name().and_then(|f| f.to_str())) else {
        return systemd;
    };
    let dir = dir.to_string_lossy();
    if dir.contains('%') {
        // A directory per process or host (`/var/crash/%h/core`): not one place to watch.
        return systemd;
    }
    let program = file.split_once("%e").and_then(|(prefix, rest)| {
        (!prefix.contains('%')).then(|| (prefix.to_owned(), rest.chars().next()))
    });
    Target {
        dir: PathBuf::from(dir.trim_start_matches('/')),
        program,
    }
}

/// The program a dump file belongs to, if the name scheme tells it.
pub(super) fn program<'a>(t: &Target, file: &'a str) -> Option<&'a str> {
    let (prefix, sep) = t.program.as_ref()?;
    let rest = file.strip_prefix(prefix.as_str())?;
    let name = match sep {
        Some(c) => rest.split(*c).next()?,
        None => rest,
    };
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::super::{Family, SystemCollector};
    use super::*;

    #[test]
    fn patterns_to_directories_and_program_names() {
        let sd = target("|/usr/lib/systemd/systemd-coredump %P %u %g %s %t %c %h");
        assert_eq!(sd.dir, PathBuf::from("var/lib/systemd/coredump"));
        let f = "core.nginx.33.5f1c0e0d3a8b4c6e.4412.1764740000000000.zst";
        assert_eq!(program(&sd, f), Some("nginx"));
        assert_eq!(target("core"), sd, "relative: the systemd store only");
        assert_eq!(target("|/usr/share/apport/apport %p"), sd);
        let c = target("/var/crash/core.%e.%p.%t");
        assert_eq!(c.dir, PathBuf::from("var/crash"));
        assert_eq!(
            program(&c, "core.redis-server.991.1764740000"),
            Some("redis-server")
        );
        assert_eq!(program(&c, "unrelated"), None);
        let plain = target("/cores/core-%p");
        assert_eq!((plain.dir, plain.program), (PathBuf::from("cores"), None));
        assert_eq!(
            target("/var/crash/%h/core").dir,
            PathBuf::from(SYSTEMD_STORE)
        );
    }

    #[test]
    fn counts_only_files_that_appear_after_the_first_look() {
        let root = tempfile::tempdir().expect("tmp");
        let proc_root = root.path().join("proc");
        std::fs::create_dir_all(proc_root.join("sys/kernel")).expect("mkdir");
        std::fs::write(
            proc_root.join("sys/kernel/core_pattern"),
            "|/usr/lib/systemd/systemd-coredump %P %u %g %s %t %c %h\n",
        )
        .expect("w");
        let store = root.path().join(SYSTEMD_STORE);
        std::fs::create_dir_all(&store).expect("mkdir");
        std::fs::write(store.join("core.old.0.b.1.1.zst"), "").expect("w");
        let mut c = SystemCollector::new(SystemOptions {
            proc_root: proc_root.clone(),
            root: root.path().to_owned(),
            ..SystemOptions::default()
        });
        assert!(
            c.collect(Family::Coredump).is_empty(),
            "first look records only"
        );
        for f in [
            "core.nginx.33.b.10.2.zst",
            "core.nginx.33.b.11.3.zst",
            "core.sh.0.b.12.4",
        ] {
            std::fs::write(store.join(f), "").expect("w");
        }
        let m = c.collect(Family::Coredump);
        let v = |name: &str, prog: Option<&str>| {
            m.iter()
                .find(|x| x.name == name && x.tags.get("program").map(String::as_str) == prog)
                .map(|x| x.value.clone())
        };
        use shared::Value::Float;
        assert_eq!(v("coredump.new", None), Some(Float(3.0)));
        assert_eq!(v("coredump.program", Some("nginx")), Some(Float(2.0)));
        assert_eq!(v("coredump.program", Some("sh")), Some(Float(1.0)));
        let m = c.collect(Family::Coredump);
        assert_eq!(m.len(), 1, "nothing new: a zero and no programs");
        assert!(c.reader.failing.is_empty());
        // A host without the store says nothing.
        std::fs::remove_dir_all(&store).expect("rm");
        assert!(c.collect(Family::Coredump).is_empty());
    }
}
