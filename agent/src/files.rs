//! The modes of what the agent creates: its umask, and explicit modes for its folders and
//! files, so nothing of the agent's is writable by the plugin user (or any other user),
//! whatever umask the agent was started with.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The agent's umask: no write for group, nothing for others.
pub const UMASK: u32 = 0o027;
/// Folders only the agent uses (spool, log, output).
pub const PRIVATE_DIR: u32 = 0o750;
/// Folders the plugin user must be able to pass through to reach its checkout (the data dir
/// when it holds the plugins folder), but not list or write.
pub const PASS_DIR: u32 = 0o711;
/// The agent's files (spool segments, acks, output, log, registry cache, plugin state, pid).
pub const FILE: u32 = 0o640;

/// Sets the process umask to [`UMASK`]; call first thing in `main`.
pub fn set_umask() {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(UMASK));
}

/// Creates `dir` and its missing parents with `mode` (exactly, not as the umask leaves it);
/// a folder that exists keeps its mode.
pub fn create_dir_all(dir: &Path, mode: u32) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        if !parent.as_os_str().is_empty() {
            create_dir_all(parent, mode)?;
        }
    }
    match fs::DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => fs::set_permissions(dir, fs::Permissions::from_mode(mode)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Options that create a file with [`FILE`] mode.
pub fn options() -> fs::OpenOptions {
    let mut o = fs::OpenOptions::new();
    o.mode(FILE);
    o
}

/// Like `File::create`, with [`FILE`] mode.
pub fn create(path: &Path) -> io::Result<fs::File> {
    options().write(true).create(true).truncate(true).open(path)
}

/// Takes write access for group and others away from an existing `path` (a file or folder an
/// earlier start made under a looser umask). Best effort.
pub fn tighten(path: &Path) {
    if let Ok(meta) = fs::metadata(path) {
        let mode = meta.permissions().mode();
        if mode & 0o022 != 0 {
            let _ = fs::set_permissions(path, fs::Permissions::from_mode(mode & !0o022 & 0o7777));
        }
    }
}

/// Takes write access for group and others away from `dir`, and from what is in it down to
/// `depth` levels (what an earlier start under a looser umask left). Symlinks are not followed.
pub fn tighten_tree(dir: &Path, depth: usize) {
    tighten(dir);
    if depth == 0 {
        return;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        match e.file_type() {
            Ok(t) if t.is_dir() => tighten_tree(&e.path(), depth - 1),
            Ok(t) if t.is_file() => tighten(&e.path()),
            _ => {}
        }
    }
}

/// Who besides its owner can read `path` (a config file holding a secret), when someone can:
/// every local user (o+r), or a group that is not its owner's own (g+r); `None` when only its
/// owner can.
pub fn readers_besides_owner(path: &Path) -> Option<String> {
    let meta = fs::metadata(path).ok()?;
    let mode = meta.mode();
    if mode & 0o004 != 0 {
        return Some(format!("every local user (mode {:o})", mode & 0o777));
    }
    if mode & 0o040 != 0 {
        let own_group = nix::unistd::User::from_uid(meta.uid().into())
            .ok()
            .flatten()
            .map(|u| u.gid.as_raw());
        if own_group != Some(meta.gid()) {
            let name = nix::unistd::Group::from_gid(meta.gid().into())
                .ok()
                .flatten()
                .map_or_else(|| meta.gid().to_string(), |g| g.name);
            return Some(format!("group {name} (mode {:o})", mode & 0o777));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_get_their_mode_whatever_the_umask() {
        let dir = tempfile::tempdir().expect("tmp");
        let deep = dir.path().join("a/b/c");
        create_dir_all(&deep, PRIVATE_DIR).expect("mkdir");
        for d in [dir.path().join("a"), dir.path().join("a/b"), deep] {
            let mode = fs::metadata(&d).expect("meta").permissions().mode() & 0o7777;
            assert_eq!(mode, PRIVATE_DIR, "{}", d.display());
        }
        let f = dir.path().join("f");
        fs::write(&f, "x").expect("write");
        fs::set_permissions(&f, fs::Permissions::from_mode(0o666)).expect("chmod");
        tighten(&f);
        let mode = fs::metadata(&f).expect("meta").permissions().mode() & 0o7777;
        assert_eq!(mode, 0o644);
    }
}
