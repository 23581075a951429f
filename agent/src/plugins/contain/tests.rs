//! Mode selection against fake cgroup trees (temporary folders shaped like `/sys/fs/cgroup`),
//! and the real thing on this host.

use std::fs;
use std::path::Path;

use super::cgroup::{self, Limits};
use super::choose;
use crate::config::PluginContainment;

const LIMITS: Limits = Limits {
    memory_bytes: 512 * 1024 * 1024,
    pids: 256,
};

fn touch(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    fs::write(path, text).expect("write");
}

/// A pure v2 host: the agent in `/system.slice/agent.service`, pids and memory available.
fn pure_v2(root: &Path) {
    touch(&root.join("cgroup.controllers"), "cpu io memory pids\n");
    let own = root.join("system.slice/agent.service");
    touch(&own.join("cgroup.controllers"), "memory pids\n");
    touch(&own.join("cgroup.procs"), "");
    touch(&own.join("cgroup.subtree_control"), "");
    // What the kernel creates in a new child is not there in a fake tree: make the children.
    touch(&own.join("plugins/cgroup.subtree_control"), "");
    touch(&own.join("agent/cgroup.procs"), "");
}

const PURE_SELF: &str = "0::/system.slice/agent.service\n";

/// This kind of host: v1 controllers, v2 at `unified` without controllers.
fn hybrid(root: &Path) {
    touch(&root.join("unified/cgroup.controllers"), "");
    touch(&root.join("unified/cgroup.procs"), "");
    touch(&root.join("pids/cgroup.procs"), "");
    touch(&root.join("memory/cgroup.procs"), "");
    touch(&root.join("memory/box/cgroup.procs"), "");
}

const HYBRID_SELF: &str = "9:name=systemd:/\n8:pids:/\n4:memory:/box\n1:cpu,cpuacct:/\n0::/\n";

#[test]
fn a_pure_v2_host_moves_the_agent_into_a_leaf_and_hands_pids_and_memory_to_its_runs() {
    let dir = tempfile::tempdir().expect("tmp");
    let root = dir.path();
    pure_v2(root);
    let (layout, cg) = choose(PluginContainment::Auto, root, PURE_SELF, LIMITS, 4242)
        .expect("no error")
        .expect("cgroup mode");
    let own = root.join("system.slice/agent.service");
    assert!(!layout.hybrid);
    assert_eq!(layout.own, own);
    assert_eq!(cg.parent, own.join("plugins"));
    assert_eq!(cg.v2_controllers, vec!["pids", "memory"]);
    assert_eq!((cg.v1_pids.clone(), cg.v1_memory.clone()), (None, None));
    // The agent left <own> before <own> handed controllers down ("no internal processes").
    assert_eq!(
        fs::read_to_string(own.join("agent/cgroup.procs")).expect("procs"),
        "4242"
    );
    for d in [&own, &own.join("plugins")] {
        assert_eq!(
            fs::read_to_string(d.join("cgroup.subtree_control")).expect("ctl"),
            "+pids +memory"
        );
    }
    assert!(cg.notes.is_empty(), "{:?}", cg.notes);
    assert!(
        cg.describe(false).contains("pids 256"),
        "{}",
        cg.describe(false)
    );

    // No limits asked: nothing is enabled and the agent stays where it is.
    let dir = tempfile::tempdir().expect("tmp");
    pure_v2(dir.path());
    let (_, cg) = choose(
        PluginContainment::Auto,
        dir.path(),
        PURE_SELF,
        Limits::default(),
        4242,
    )
    .expect("no error")
    .expect("cgroup mode");
    assert!(cg.v2_controllers.is_empty());
    let moved = dir
        .path()
        .join("system.slice/agent.service/agent/cgroup.procs");
    assert_eq!(fs::read_to_string(moved).expect("procs"), "");
}

#[test]
fn a_hybrid_host_uses_unified_for_membership_and_v1_for_limits() {
    let dir = tempfile::tempdir().expect("tmp");
    let root = dir.path();
    hybrid(root);
    let (layout, cg) = choose(PluginContainment::Auto, root, HYBRID_SELF, LIMITS, 7)
        .expect("no error")
        .expect("cgroup mode");
    assert!(layout.hybrid);
    assert_eq!(layout.v2_mount, root.join("unified"));
    assert_eq!(cg.parent, root.join("unified/plugins"));
    assert!(cg.v2_controllers.is_empty());
    assert_eq!(cg.v1_pids, Some(root.join("pids/plugins")));
    assert_eq!(cg.v1_memory, Some(root.join("memory/box/plugins")));
    // The root of unified is exempt from "no internal processes": the agent is not moved.
    assert!(!root.join("unified/agent").exists());
    let d = cg.describe(true);
    assert!(d.contains("hybrid") && d.contains("pids 256 (v1)"), "{d}");

    // Without a v1 memory hierarchy, the memory limit is a note, not a failure.
    fs::remove_dir_all(root.join("memory")).expect("rm");
    let (_, cg) = choose(PluginContainment::Auto, root, HYBRID_SELF, LIMITS, 7)
        .expect("no error")
        .expect("cgroup mode");
    assert_eq!(cg.v1_memory, None);
    assert!(
        cg.notes
            .iter()
            .any(|n| n.contains("memory limit not applied")),
        "{:?}",
        cg.notes
    );
}

#[test]
fn no_usable_cgroup_falls_back_to_the_reaper_unless_cgroup_is_forced() {
    // Nothing mounted; a v1-only host; an agent whose cgroup path is not in the tree.
    let empty = tempfile::tempdir().expect("tmp");
    let v1_only = tempfile::tempdir().expect("tmp");
    touch(&v1_only.path().join("pids/cgroup.procs"), "");
    let elsewhere = tempfile::tempdir().expect("tmp");
    pure_v2(elsewhere.path());
    for (root, me) in [
        (empty.path(), PURE_SELF),
        (v1_only.path(), "8:pids:/\n"),
        (elsewhere.path(), "0::/user.slice/session-1.scope\n"),
        (elsewhere.path(), "0::/../../etc\n"),
    ] {
        let why = choose(PluginContainment::Auto, root, me, LIMITS, 1)
            .expect("auto never fails")
            .expect_err("reaper mode");
        assert!(!why.is_empty());
        let err = choose(PluginContainment::Cgroup, root, me, LIMITS, 1)
            .expect_err("forced cgroup refuses");
        assert!(err.contains("not usable"), "{err}");
    }
    // Read-only: the agent's cgroup exists but `plugins` cannot be made in it.
    let ro = tempfile::tempdir().expect("tmp");
    touch(&ro.path().join("cgroup.controllers"), "");
    touch(&ro.path().join("cgroup.procs"), "");
    touch(
        &ro.path().join("plugins"),
        "a file where the folder would go",
    );
    let why = choose(PluginContainment::Auto, ro.path(), "0::/\n", LIMITS, 1)
        .expect("auto")
        .expect_err("reaper");
    assert!(why.contains("cannot create cgroup"), "{why}");
    // Asked for: the reaper, even where cgroups work.
    let dir = tempfile::tempdir().expect("tmp");
    hybrid(dir.path());
    let why = choose(
        PluginContainment::Reaper,
        dir.path(),
        HYBRID_SELF,
        LIMITS,
        1,
    )
    .expect("no error")
    .expect_err("reaper");
    assert!(why.contains("reaper"), "{why}");
    assert!(!dir.path().join("unified/plugins").exists());
}

/// This host's real layout: detection must find what `/proc/self/cgroup` and the mounts say,
/// and a real run cgroup must take a process, be killed and removed.
#[test]
fn the_real_host_layout_is_detected_and_a_run_cgroup_is_killed_and_removed() {
    let root = Path::new("/sys/fs/cgroup");
    let me = fs::read_to_string("/proc/self/cgroup").expect("/proc/self/cgroup");
    let layout = match cgroup::detect(root, &me) {
        Ok(l) => l,
        Err(e) => {
            // A host without cgroup v2 is a fine host; the fake trees above cover the logic.
            eprintln!("no cgroup v2 here ({e}); nothing to check on the real host");
            return;
        }
    };
    if !nix::unistd::geteuid().is_root() {
        eprintln!("not root: the real cgroups are not writable; skipped");
        return;
    }
    let unified = root.join("unified").join("cgroup.controllers").is_file()
        && !root.join("cgroup.controllers").is_file();
    assert_eq!(layout.hybrid, unified);
    let cg = cgroup::setup(
        &layout,
        Limits {
            memory_bytes: 64 * 1024 * 1024,
            pids: 16,
        },
        std::process::id(),
    )
    .expect("setup as root");
    let run = cg
        .create_run(&format!("run-{}-test", std::process::id()))
        .expect("run cgroup")
        .expect("a free name");
    let v2 = run.v2.clone();
    let v1 = run.v1.clone();
    // A child joins through the descriptors, as the runner's does, and forks a setsid grandchild.
    let fds = run.join_fds();
    let mut cmd = std::process::Command::new("sh");
    cmd.args(["-c", "setsid sleep 1000 & exec sleep 1000"]);
    {
        use std::os::unix::process::CommandExt;
        #[allow(unsafe_code)]
        // SAFETY: write(2) only, on descriptors opened before the fork.
        unsafe {
            cmd.pre_exec(move || {
                for &fd in &fds {
                    if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn().expect("spawn into the cgroup");
    let joined = (0..200).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(10));
        fs::read_to_string(v2.join("cgroup.procs"))
            .map(|p| p.lines().count() >= 2)
            .unwrap_or(false)
    });
    assert!(
        joined,
        "the child and its grandchild are in {}",
        v2.display()
    );
    for d in &v1 {
        let procs = fs::read_to_string(d.join("cgroup.procs")).expect("v1 procs");
        assert!(procs.contains(&child.id().to_string()), "{procs}");
    }
    let killed = run.kill_and_remove().expect("killed and verified");
    assert!(killed.left_behind >= 2, "{killed:?}");
    let status = child.wait().expect("reaped");
    assert!(!status.success());
    assert!(!v2.exists(), "{} removed", v2.display());
    for d in &v1 {
        assert!(!d.exists(), "{} removed", d.display());
    }
}
