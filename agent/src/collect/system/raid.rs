//! Linux software RAID (`/proc/mdstat`): per md array its state, disks in the array, active,
//! failed and spare, and the progress of a resync, recovery, check or reshape. Without the md
//! driver there is no file; the family then says nothing and logs nothing.

use super::{Out, Reader, SystemOptions};

/// One array as `/proc/mdstat` shows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Array {
    pub name: String,
    pub active: bool,
    pub level: String,
    /// `[n/m]`: disks the array should have, and those working.
    pub disks: Option<(u32, u32)>,
    pub failed: u32,
    pub spare: u32,
    /// Progress in percent of a running sync, and what kind (`resync`, `recovery`, ...).
    pub sync: Option<(f64, String)>,
}

pub(super) fn collect(r: &mut Reader, o: &SystemOptions, out: &mut Out) {
    let Some(text) = r.read_optional(&o.proc_root.join("mdstat")) else {
        return;
    };
    for a in parse(text) {
        emit(&a, out);
    }
}

pub(super) fn emit(a: &Array, out: &mut Out) {
    let tags = [("md", a.name.as_str()), ("level", a.level.as_str())];
    out.push("raid.active", if a.active { 1.0 } else { 0.0 }, &tags);
    if let Some((total, working)) = a.disks {
        out.push("raid.disks", f64::from(total), &tags);
        out.push("raid.disks_active", f64::from(working), &tags);
        out.push(
            "raid.disks_missing",
            f64::from(total.saturating_sub(working)),
            &tags,
        );
    }
    out.push("raid.disks_failed", f64::from(a.failed), &tags);
    out.push("raid.disks_spare", f64::from(a.spare), &tags);
    // An active array with no sync running is in sync.
    match &a.sync {
        Some((pct, _)) => out.push("raid.sync_percent", *pct, &tags),
        None if a.active => out.push("raid.sync_percent", 100.0, &tags),
        None => {}
    }
}

/// The arrays of `/proc/mdstat`: an `mdN : state [level] disk[i](F|S) ...` line, then indented
/// lines with `[n/m] [UU_]` and maybe a progress line (`recovery = 8.5% (...)`).
pub(super) fn parse(text: &str) -> Vec<Array> {
    let mut arrays: Vec<Array> = Vec::new();
    for line in text.lines() {
        if let Some((name, rest)) = line.split_once(" : ") {
            let name = name.trim();
            if !name.starts_with("md") || arrays.len() >= 1024 {
                continue;
            }
            let mut w = rest.split_ascii_whitespace().peekable();
            let mut a = Array {
                name: name.to_owned(),
                ..Array::default()
            };
            a.active = w.next() == Some("active");
            // "active (auto-read-only) raid1 ..."
            while w.peek().is_some_and(|x| x.starts_with('(')) {
                w.next();
            }
            if let Some(level) = w.peek().filter(|l| !l.contains('[')) {
                a.level = (*level).to_owned();
                w.next();
            }
            for disk in w {
                if disk.ends_with("(F)") {
                    a.failed += 1;
                } else if disk.ends_with("(S)") {
                    a.spare += 1;
                }
            }
            arrays.push(a);
            continue;
        }
        let Some(a) = arrays.last_mut() else {
            continue;
        };
        if !line.starts_with(char::is_whitespace) {
            continue;
        }
        for w in line.split_ascii_whitespace() {
            if let Some((n, m)) = w
                .strip_prefix('[')
                .and_then(|w| w.strip_suffix(']'))
                .and_then(|w| w.split_once('/'))
            {
                if let (Ok(n), Ok(m)) = (n.parse(), m.parse()) {
                    a.disks = Some((n, m));
                }
            }
        }
        for kind in ["recovery", "resync", "check", "reshape", "repair"] {
            let Some(rest) = line
                .split_once(kind)
                .and_then(|(_, r)| r.trim_start().strip_prefix('='))
            else {
                continue;
            };
            if let Some(pct) = rest
                .trim_start()
                .split('%')
                .next()
                .and_then(|p| p.trim().parse::<f64>().ok())
            {
                a.sync = Some((pct, kind.to_owned()));
            }
        }
    }
    arrays
}

#[cfg(test)]
mod tests {
    use super::super::{Family, SystemCollector};
    use super::*;

    fn fixture(dir: &str) -> String {
        std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("src/collect/system/fixtures")
                .join(dir)
                .join("mdstat"),
        )
        .expect("fixture")
    }

    #[test]
    fn healthy_degraded_recovering_and_inactive_arrays() {
        let a = parse(&fixture("server-md"));
        assert_eq!(a.len(), 4, "{a:?}");
        assert_eq!((a[0].name.as_str(), a[0].level.as_str()), ("md0", "raid1"));
        assert_eq!(
            (a[0].disks, a[0].failed, a[0].sync.clone()),
            (Some((2, 2)), 0, None)
        );
        assert_eq!(a[1].disks, Some((2, 1)), "degraded md1");
        assert_eq!(a[1].failed, 1);
        assert_eq!(a[2].sync, Some((8.5, "recovery".to_owned())));
        assert_eq!(a[2].spare, 1);
        assert!(!a[3].active && a[3].disks.is_none(), "inactive md127");
        let mut out = Out::new();
        emit(&a[1], &mut out);
        let missing = out.metrics.iter().find(|m| m.name == "raid.disks_missing");
        assert_eq!(
            missing.map(|m| m.value.clone()),
            Some(shared::Value::Float(1.0))
        );
        assert!(out
            .metrics
            .iter()
            .all(|m| m.tags.get("md").map(String::as_str) == Some("md1")));
    }

    #[test]
    fn no_md_driver_no_file_no_log() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut c = SystemCollector::new(SystemOptions {
            proc_root: dir.path().to_owned(),
            ..SystemOptions::default()
        });
        assert!(c.collect(Family::Raid).is_empty());
        assert!(c.reader.failing.is_empty());
        assert!(parse("Personalities : \nunused devices: <none>\n").is_empty());
        assert!(parse("md0 : \n   [x/] [1/2/3]\n garbage = %\n").len() == 1);
    }
}
