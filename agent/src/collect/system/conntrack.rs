//! Connection tracking table fill: entries, limit and the used share
//! (`/proc/sys/net/netfilter/nf_conntrack_{count,max}`). Without the `nf_conntrack` module loaded
//! the files do not exist; the family then says nothing and logs nothing.

use super::{percent, Out, Reader, SystemOptions};

pub(super) fn collect(r: &mut Reader, o: &SystemOptions, out: &mut Out) {
    let dir = o.proc_root.join("sys/net/netfilter");
    let mut read = |name: &str| -> Option<u64> {
        r.read_optional(&dir.join(name))
            .and_then(|t| t.trim().parse().ok())
    };
    let count = read("nf_conntrack_count");
    let max = read("nf_conntrack_max");
    emit(count, max, out);
}

fn emit(count: Option<u64>, max: Option<u64>, out: &mut Out) {
    out.push_opt("conntrack.entries", count.map(|v| v as f64), &[]);
    out.push_opt("conntrack.limit", max.map(|v| v as f64), &[]);
    if let (Some(c), Some(m)) = (count, max) {
        if m > 0 {
            out.push("conntrack.used_percent", percent(c as f64, m as f64), &[]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::get;
    use super::super::{Family, SystemCollector};
    use super::*;

    fn fixture(dir: &str) -> Vec<shared::Metric> {
        let o = SystemOptions {
            proc_root: std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("src/collect/system/fixtures")
                .join(dir),
            ..SystemOptions::default()
        };
        let mut c = SystemCollector::new(o);
        let m = c.collect(Family::Conntrack);
        assert!(c.reader.failing.is_empty());
        m
    }

    #[test]
    fn a_busy_table_and_a_host_without_the_module() {
        let m = fixture("router-5.10");
        let v = |n: &str| m.iter().find(|x| x.name == n).map(|x| x.value.clone());
        assert_eq!(
            v("conntrack.entries"),
            Some(shared::Value::Float(196_608.0))
        );
        assert_eq!(v("conntrack.limit"), Some(shared::Value::Float(262_144.0)));
        assert_eq!(
            v("conntrack.used_percent"),
            Some(shared::Value::Float(75.0))
        );
        assert!(fixture("old-4.19-noipv6").is_empty());
    }

    #[test]
    fn a_zero_limit_gives_no_percent() {
        let mut out = Out::new();
        emit(Some(3), Some(0), &mut out);
        assert_eq!(get(&out, "conntrack.entries"), Some(3.0));
        assert_eq!(get(&out, "conntrack.used_percent"), None);
    }
}
