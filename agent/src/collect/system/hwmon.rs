//! Temperatures and fan speeds: every `temp*_input` and `fan*_input` of `/sys/class/hwmon/*`
//! (tagged with the chip's `name` and the sensor's `*_label`, or its file stem without one), and
//! every thermal zone of `/sys/class/thermal`. A machine without sensors (most VMs) has no such
//! entries; the family then says nothing and logs nothing.

use std::path::Path;

use super::{Out, Reader, SystemOptions};

/// More chips or sensors than this on one machine is no hardware; bounds the work on a hostile
/// or broken sysfs.
const MAX_ENTRIES: usize = 512;

pub(super) fn collect(r: &mut Reader, o: &SystemOptions, out: &mut Out) {
    let class = o.sys_root.join("class");
    for (dir, device) in entries(&class.join("hwmon")) {
        let chip = read_trimmed(r, &dir.join("name")).unwrap_or_else(|| device.clone());
        let mut files: Vec<String> = entries(&dir).into_iter().map(|(_, n)| n).collect();
        files.sort_unstable();
        for file in &files {
            let Some(stem) = file.strip_suffix("_input") else {
                continue;
            };
            let (name, scale) = if stem.starts_with("temp") {
                ("hwmon.temp_celsius", 1e-3)
            } else if stem.starts_with("fan") {
                ("hwmon.fan_rpm", 1.0)
            } else {
                continue;
            };
            let Some(v) = read_trimmed(r, &dir.join(file)).and_then(|v| v.parse::<f64>().ok())
            else {
                continue;
            };
            let label = read_trimmed(r, &dir.join(format!("{stem}_label")))
                .unwrap_or_else(|| stem.to_owned());
            let tags = [
                ("chip", chip.as_str()),
                ("sensor", label.as_str()),
                ("device", device.as_str()),
            ];
            out.push(name, v * scale, &tags);
        }
    }
    for (dir, zone) in entries(&class.join("thermal")) {
        if !zone.starts_with("thermal_zone") {
            continue;
        }
        let Some(t) = read_trimmed(r, &dir.join("temp")).and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        let kind = read_trimmed(r, &dir.join("type")).unwrap_or_default();
        out.push(
            "hwmon.thermal_zone_celsius",
            t / 1000.0,
            &[("zone", zone.as_str()), ("type", kind.as_str())],
        );
    }
}

/// The entries of a directory (path, name), at most [`MAX_ENTRIES`], sorted; none if it is
/// missing.
fn entries(dir: &Path) -> Vec<(std::path::PathBuf, String)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<_> = rd
        .filter_map(Result::ok)
        .take(MAX_ENTRIES)
        .filter_map(|e| Some((e.path(), e.file_name().into_string().ok()?)))
        .collect();
    v.sort_unstable_by(|a, b| a.1.cmp(&b.1));
    v
}

/// A sysfs attribute's text; a sensor that is absent or errors on read (some drivers return EIO
/// for a disconnected probe) is simply not reported.
fn read_trimmed(r: &mut Reader, path: &Path) -> Option<String> {
    r.read_optional(path).map(|t| t.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::super::{Family, SystemCollector};
    use super::*;

    #[test]
    fn chips_labels_fans_and_thermal_zones_of_a_captured_layout() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/collect/system/fixtures/server-sensors");
        let o = SystemOptions {
            sys_root: root,
            ..SystemOptions::default()
        };
        let m = SystemCollector::new(o).collect(Family::Hwmon);
        let find = |name: &str, chip: &str, sensor: &str| {
            m.iter()
                .find(|x| {
                    x.name == name
                        && x.tags.get("chip").map(String::as_str) == Some(chip)
                        && x.tags.get("sensor").map(String::as_str) == Some(sensor)
                })
                .map(|x| x.value.clone())
        };
        use shared::Value::Float;
        assert_eq!(
            find("hwmon.temp_celsius", "coretemp", "Package id 0"),
            Some(Float(54.0))
        );
        assert_eq!(
            find("hwmon.temp_celsius", "coretemp", "Core 1"),
            Some(Float(51.5))
        );
        assert_eq!(
            find("hwmon.temp_celsius", "nvme", "Composite"),
            Some(Float(38.85))
        );
        // No label file: the sensor is named by its stem.
        assert_eq!(
            find("hwmon.fan_rpm", "nct6775", "fan2"),
            Some(Float(1210.0))
        );
        let zone = m
            .iter()
            .find(|x| x.name == "hwmon.thermal_zone_celsius")
            .expect("zone");
        assert_eq!(
            zone.tags.get("type").map(String::as_str),
            Some("x86_pkg_temp")
        );
        assert_eq!(zone.value, Float(54.0));
        // 3 coretemp + 1 nvme temps, 1 fan, 1 zone; the unreadable temp3 of nct6775 is left out.
        assert_eq!(m.len(), 6, "{m:?}");
    }

    #[test]
    fn a_vm_without_sensors_says_nothing_quietly() {
        let dir = tempfile::tempdir().expect("tmp");
        let o = SystemOptions {
            sys_root: dir.path().to_owned(),
            ..SystemOptions::default()
        };
        let mut c = SystemCollector::new(o);
        assert!(c.collect(Family::Hwmon).is_empty());
        assert!(c.reader.failing.is_empty());
    }
}
