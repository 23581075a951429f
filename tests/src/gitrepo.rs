//! Real git repositories for plugin tests: a bare repository made with the `git` CLI, with a
//! work tree beside it to commit and push new versions of `plugin.sh`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `git` in `dir` with a fixed identity and `main` as the default branch; panics on failure.
pub fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=test",
            "-c",
            "user.email=test@example.com",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A bare repository `<root>/<name>.git` whose `main` holds `plugin.sh`.
pub struct BareRepo {
    /// The bare repository.
    pub bare: PathBuf,
    /// The working clone commits are made in.
    pub work: PathBuf,
}

impl BareRepo {
    /// Creates the repository with a first commit of `script` as `plugin.sh`.
    pub fn new(root: &Path, name: &str, script: &str) -> BareRepo {
        let bare = root.join(format!("{name}.git"));
        let work = root.join(format!("{name}-work"));
        std::fs::create_dir_all(&bare).expect("bare dir");
        std::fs::create_dir_all(&work).expect("work dir");
        git(&bare, &["init", "--bare", "-q"]);
        git(&work, &["init", "-q"]);
        git(
            &work,
            &["remote", "add", "origin", bare.to_str().expect("utf8 path")],
        );
        let repo = BareRepo { bare, work };
        repo.push(script);
        repo
    }

    /// Commits `script` as the new `plugin.sh` and pushes it to `main`.
    pub fn push(&self, script: &str) {
        std::fs::write(self.work.join("plugin.sh"), script).expect("write plugin.sh");
        git(&self.work, &["add", "plugin.sh"]);
        git(&self.work, &["commit", "-q", "-m", "plugin"]);
        git(&self.work, &["push", "-q", "origin", "HEAD:main"]);
    }

    /// The `file://` address.
    pub fn url(&self) -> String {
        format!("file://{}", self.bare.display())
    }
}
