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

/// A stand-in for OpenSSH's `ssh`, like git's own test-fake-ssh: it records its arguments and
/// its pid, then runs the remote command (its last argument) locally through `sh`, in a "remote
/// home" directory that is also its `$HOME`. A destination containing `unreachable` fails like
/// a refused connection, one containing `newhost` like an unknown host key under BatchMode.
pub struct FakeSsh {
    /// The program, named `ssh` so it is taken for OpenSSH's.
    pub program: PathBuf,
    /// Where each run appends its pid, arguments (one a line) and a `--` line.
    pub log: PathBuf,
}

impl FakeSsh {
    /// Writes the program into `<dir>/fake-ssh/ssh`, running commands in `home`.
    pub fn new(dir: &Path, home: &Path) -> FakeSsh {
        use std::os::unix::fs::PermissionsExt;
        let bin = dir.join("fake-ssh");
        std::fs::create_dir_all(&bin).expect("fake ssh dir");
        let program = bin.join("ssh");
        let log = bin.join("log");
        let script = format!(
            r#"#!/bin/sh
log='{log}'
echo "pid $$" >>"$log"
for a in "$@"; do printf '%s\n' "$a" >>"$log"; done
echo -- >>"$log"
for a in "$@"; do
  case "$a" in
    *unreachable*) echo "ssh: connect to host $a port 22: Connection refused" >&2; exit 255;;
    *newhost*) echo "No ED25519 host key is known for $a and you have requested strict checking." >&2
               echo "Host key verification failed." >&2; exit 255;;
  esac
done
eval "remote=\${{$#}}"
cd '{home}' || exit 1
HOME='{home}' exec sh -c "$remote"
"#,
            log = log.display(),
            home = home.display(),
        );
        std::fs::write(&program, script).expect("write fake ssh");
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755))
            .expect("chmod fake ssh");
        FakeSsh { program, log }
    }

    /// Each run so far: its pid and its arguments.
    pub fn runs(&self) -> Vec<(u32, Vec<String>)> {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut runs = Vec::new();
        let mut current: Option<(u32, Vec<String>)> = None;
        for line in log.lines() {
            if let Some(pid) = line.strip_prefix("pid ") {
                current = Some((pid.parse().expect("pid"), Vec::new()));
            } else if line == "--" {
                runs.extend(current.take());
            } else if let Some((_, args)) = current.as_mut() {
                args.push(line.to_owned());
            }
        }
        runs
    }
}
