//! Paths built from outside data: every folder or file name that comes from the registry (a
//! namespace, a project name derived from a repository address) is joined to its root here, and
//! every branch name is checked here before it reaches git.
//!
//! The registry is not trusted with choosing paths on the host (docs/security.md, "Paths built
//! from outside data"): a namespace `..` would turn `{plugins_dir}/{ns}/{project}` into a folder
//! beside the plugins folder, and replacing a checkout there deletes whatever was in its place.
//! So [`join`] refuses names that are not one plain path component, then checks that the joined
//! path, once what exists of it is resolved (symlinks included), is still under its root.

use std::path::{Component, Path, PathBuf};

/// What a name is, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum What {
    /// A namespace: `{plugins_dir}/{ns}`, `{output.path}/{ns}.lp`.
    Namespace,
    /// A plugin's project name: `{plugins_dir}/{ns}/{project}`.
    Project,
}

impl std::fmt::Display for What {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            What::Namespace => "namespace",
            What::Project => "project name",
        })
    }
}

/// Longest name accepted as one path component (the common filesystem limit).
pub const MAX_NAME_BYTES: usize = 255;

/// Why a path could not be built from a name, or a branch name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// An empty name would name its parent folder.
    #[error("{what} is empty; it would name the folder above it, so it is refused")]
    Empty {
        /// What the name is.
        what: What,
    },
    /// `.`, `..` (or any name made only of dots).
    #[error(
        "{what} {name:?} is refused: a name made only of dots ('.', '..') would name a folder \
         outside the plugin root (its parent or itself) instead of a folder of its own"
    )]
    Dots {
        /// What the name is.
        what: What,
        /// The name.
        name: String,
    },
    /// A separator or NUL inside the name.
    #[error(
        "{what} {name:?} is refused: it contains {found:?}, which would reach into other folders \
         (a name must be one folder name)"
    )]
    Separator {
        /// What the name is.
        what: What,
        /// The name.
        name: String,
        /// The separator found.
        found: char,
    },
    /// Longer than a filesystem takes.
    #[error("{what} {name:?} is refused: it is {len} bytes, at most {MAX_NAME_BYTES} make a folder name")]
    TooLong {
        /// What the name is.
        what: What,
        /// The name.
        name: String,
        /// Its length in bytes.
        len: usize,
    },
    /// The joined path resolves (through a symlink) to somewhere outside its root.
    #[error(
        "{path} is refused: it resolves to {resolved}, outside {root} (a symlink in the tree leads \
         out); remove the symlink"
    )]
    Escapes {
        /// The path as joined.
        path: PathBuf,
        /// Where it leads.
        resolved: PathBuf,
        /// The root it must stay under.
        root: PathBuf,
    },
    /// What exists of the path could not be resolved.
    #[error("cannot resolve {path}: {message}")]
    Resolve {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        message: String,
    },
    /// A branch name git would refuse, or that could be read as an option.
    #[error("branch {name:?} is refused: {reason}")]
    Branch {
        /// The branch name.
        name: String,
        /// The `git check-ref-format` rule it breaks.
        reason: String,
    },
}

/// Checks that `name` is one plain path component: not empty, not made only of dots, without
/// `/`, `\` or NUL, at most [`MAX_NAME_BYTES`].
///
/// A `\` is not a separator on Unix, but it is refused as one: such a name is a mistake, and it
/// would be one on any tool that reads the path back on another system.
pub fn check_name(what: What, name: &str) -> Result<(), PathError> {
    if name.is_empty() {
        return Err(PathError::Empty { what });
    }
    if let Some(found) = name.chars().find(|c| matches!(c, '/' | '\\' | '\0')) {
        return Err(PathError::Separator {
            what,
            name: name.to_owned(),
            found,
        });
    }
    if name.chars().all(|c| c == '.') {
        return Err(PathError::Dots {
            what,
            name: name.to_owned(),
        });
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(PathError::TooLong {
            what,
            name: name.to_owned(),
            len: name.len(),
        });
    }
    Ok(())
}

/// Builds `root/name1/name2/...` from outside names, proven inside `root`: each name passes
/// [`check_name`], and the joined path, with its longest existing prefix resolved (symlinks
/// followed, as the kernel will when the path is used), stays under `root` (resolved the same
/// way). Returns the path as joined (not resolved), so messages show the configured folders.
///
/// Blocking (it reads the filesystem); call it where the path is about to be used.
pub fn join(root: &Path, names: &[(What, &str)]) -> Result<PathBuf, PathError> {
    let path = join_names(root, names)?;
    check_under(root, &path)?;
    Ok(path)
}

/// The lexical part of [`join`]: the names checked and joined, the filesystem not read.
pub fn join_names(root: &Path, names: &[(What, &str)]) -> Result<PathBuf, PathError> {
    let mut path = root.to_path_buf();
    for (what, name) in names {
        check_name(*what, name)?;
        path.push(name);
    }
    Ok(path)
}

/// Checks that `path`, resolved as far as it exists, is `root` or under it (`root` resolved the
/// same way).
pub fn check_under(root: &Path, path: &Path) -> Result<(), PathError> {
    let resolved_root = resolve_existing(root)?;
    let resolved = resolve_existing(path)?;
    if resolved.starts_with(&resolved_root) {
        Ok(())
    } else {
        Err(PathError::Escapes {
            path: path.to_path_buf(),
            resolved,
            root: root.to_path_buf(),
        })
    }
}

/// `path` with its longest existing prefix canonicalised and the rest appended as it is. The
/// rest holds no `..` (a `..` after a missing folder is refused, since the kernel would refuse
/// it too and it cannot be resolved here).
fn resolve_existing(path: &Path) -> Result<PathBuf, PathError> {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| PathError::Resolve {
                path: path.to_path_buf(),
                message: format!("no current directory: {e}"),
            })?
            .join(path)
    };
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    loop {
        match existing.canonicalize() {
            Ok(mut resolved) => {
                for part in rest.iter().rev() {
                    resolved.push(part);
                }
                return Ok(resolved);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if existing.symlink_metadata().is_ok() {
                    // A dangling symlink: whatever it names could be created through it.
                    return Err(PathError::Resolve {
                        path: existing.to_path_buf(),
                        message: "a symlink to something that does not exist; remove it".into(),
                    });
                }
                let (Some(parent), Some(last)) =
                    (existing.parent(), existing.components().next_back())
                else {
                    return Err(PathError::Resolve {
                        path: path.to_path_buf(),
                        message: e.to_string(),
                    });
                };
                match last {
                    Component::Normal(name) => rest.push(name.to_owned()),
                    Component::CurDir => {}
                    _ => {
                        return Err(PathError::Resolve {
                            path: path.to_path_buf(),
                            message: "'..' after a folder that does not exist".into(),
                        })
                    }
                }
                existing = parent;
            }
            Err(e) => {
                return Err(PathError::Resolve {
                    path: existing.to_path_buf(),
                    message: e.to_string(),
                })
            }
        }
    }
}

/// Checks a branch name from the registry as `git check-ref-format --branch` would (the rules
/// of `git help check-ref-format`), and refuses a leading `-`, which git could read as an
/// option. Git stores a branch as a file under `refs/heads/`, so these rules are also what
/// keeps it a path inside the clone.
pub fn check_branch(name: &str) -> Result<(), PathError> {
    let refuse = |reason: &str| {
        Err(PathError::Branch {
            name: name.to_owned(),
            reason: reason.to_owned(),
        })
    };
    if name.is_empty() {
        return refuse("it is empty; leave `branch` out to follow the remote's default branch");
    }
    if name.starts_with('-') {
        return refuse("it starts with '-', which git could read as an option");
    }
    if name == "@" {
        return refuse("'@' alone is not a branch name (git reads it as HEAD)");
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return refuse(&format!("it contains the control character {c:?}"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| matches!(c, ' ' | '~' | '^' | ':' | '?' | '*' | '[' | '\\'))
    {
        return refuse(&format!(
            "it contains {c:?}, which git does not allow in a ref"
        ));
    }
    if name.contains("..") {
        return refuse("it contains '..', which git does not allow in a ref");
    }
    if name.contains("@{") {
        return refuse("it contains '@{', which git does not allow in a ref");
    }
    if name.starts_with('/') || name.ends_with('/') || name.contains("//") {
        return refuse("it starts or ends with '/' or has an empty part ('//')");
    }
    if name.ends_with('.') {
        return refuse("it ends with '.'");
    }
    for part in name.split('/') {
        if part.starts_with('.') {
            return refuse(&format!("its part {part:?} starts with '.'"));
        }
        if part.ends_with(".lock") {
            return refuse(&format!("its part {part:?} ends with '.lock'"));
        }
        if part.len() > MAX_NAME_BYTES {
            return refuse(&format!(
                "its part {:?}... is {} bytes, git stores each part as a file name of at most {MAX_NAME_BYTES}",
                part.chars().take(20).collect::<String>(),
                part.len()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_are_not_one_folder_name_are_refused_with_the_reason() {
        for (name, why) in [
            ("", "is empty"),
            (".", "only of dots"),
            ("..", "only of dots"),
            ("...", "only of dots"),
            ("a/..", "contains '/'"),
            ("/abs", "contains '/'"),
            ("a\\b", "contains '\\\\'"),
            ("a\0b", "contains '\\0'"),
        ] {
            let e = check_name(What::Namespace, name).expect_err(name);
            assert!(e.to_string().contains(why), "{name:?}: {e}");
            assert!(e.to_string().starts_with("namespace"), "{e}");
        }
        let long = "x".repeat(256);
        assert!(matches!(
            check_name(What::Project, &long),
            Err(PathError::TooLong { len: 256, .. })
        ));
        for ok in ["web.shop", ".hidden", "a..b", "%2e%2e", "-x", "é"] {
            check_name(What::Project, ok).expect(ok);
        }
    }

    #[test]
    fn a_joined_path_stays_under_its_root_also_through_symlinks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("plugins");
        // Nothing exists yet: resolved lexically.
        let p = join(&root, &[(What::Namespace, "ns"), (What::Project, "p")]).expect("join");
        assert_eq!(p, root.join("ns").join("p"));
        std::fs::create_dir_all(root.join("ns")).expect("mkdir");
        std::fs::create_dir(dir.path().join("outside")).expect("mkdir");
        // A planted symlink that leads out, as the namespace folder or as the checkout.
        std::os::unix::fs::symlink(dir.path().join("outside"), root.join("evil")).expect("ln");
        std::os::unix::fs::symlink("/etc", root.join("ns").join("etc")).expect("ln");
        for names in [
            [(What::Namespace, "evil"), (What::Project, "p")],
            [(What::Namespace, "ns"), (What::Project, "etc")],
        ] {
            let e = join(&root, &names).expect_err("escapes");
            assert!(
                matches!(e, PathError::Escapes { .. }) && e.to_string().contains("outside"),
                "{e}"
            );
        }
        // A symlink that stays inside is fine, and so is a root that is itself a symlink.
        std::os::unix::fs::symlink(root.join("ns"), root.join("alias")).expect("ln");
        join(&root, &[(What::Namespace, "alias"), (What::Project, "p")]).expect("inside");
        let link_root = dir.path().join("link-root");
        std::os::unix::fs::symlink(&root, &link_root).expect("ln");
        join(&link_root, &[(What::Namespace, "ns"), (What::Project, "p")]).expect("inside");
        // The names are checked first.
        assert!(matches!(
            join(&root, &[(What::Namespace, ".."), (What::Project, "p")]),
            Err(PathError::Dots { .. })
        ));
    }

    #[test]
    fn branches_follow_git_check_ref_format() {
        for ok in ["main", "release/1.2", "feature-x", "v1.0", "a@b", "é"] {
            check_branch(ok).expect(ok);
        }
        for (bad, why) in [
            ("", "empty"),
            ("-x", "option"),
            ("--upload-pack=sh", "option"),
            ("a..b", "'..'"),
            ("../x", "'..'"),
            ("/abs", "'/'"),
            ("a/", "'/'"),
            ("a//b", "'//'"),
            ("a/.b", "starts with '.'"),
            (".b", "starts with '.'"),
            ("a.lock", ".lock"),
            ("a.", "ends with '.'"),
            ("a b", "' '"),
            ("a~1", "'~'"),
            ("a^", "'^'"),
            ("a:b", "':'"),
            ("a?", "'?'"),
            ("a*", "'*'"),
            ("a[", "'['"),
            ("a\\b", "'\\\\'"),
            ("a@{1}", "'@{'"),
            ("@", "HEAD"),
            ("a\0b", "control"),
            ("a\nb", "control"),
        ] {
            let e = check_branch(bad).expect_err(bad);
            assert!(e.to_string().contains(why), "{bad:?}: {e}");
        }
        check_branch(&"x".repeat(256)).expect_err("long");
    }
}
