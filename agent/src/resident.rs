//! What start-up leaves resident, handed back once start-up is done (docs/benchmarks.md,
//! "Idle agent").
//!
//! Most of an idle agent's resident memory is code, not data: the pages of the agent's binary and
//! of libc that the process has touched stay mapped, and the kernel counts them in its RSS for the
//! life of the process. Start-up runs a lot of code only once (command line, config and registry
//! parsing, the TLS roots check, the spool's recovery scan), and this kernel maps code 64 KiB
//! around each page fault, so about 4.6 MiB of the binary ended up mapped although the idle loop
//! runs a fraction of it.
//!
//! [`drop_code_mappings`] unmaps the read-only pages of the loaded program and its libraries with
//! `madvise(MADV_DONTNEED)`. The pages stay in the page cache; what runs later faults its pages
//! back in from there (a minor fault, no disk read), so what stays resident is the code the agent
//! actually runs. Only mappings with no private (copy-on-write) pages are touched: for those the
//! kernel refills every page from the file, byte for byte what was mapped, so nothing the loader
//! changed (relocations) can be lost.

use std::path::Path;

/// One mapping of `/proc/self/smaps` that may be dropped: start, length.
type Range = (usize, usize);

/// What [`drop_code_mappings`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    /// Mappings handed back.
    pub mappings: usize,
    /// Resident bytes they held just before.
    pub resident_bytes: u64,
}

/// Unmaps the resident pages of the read-only, file-backed mappings of every loaded ELF object
/// (the agent's binary and its shared libraries) that hold no private page. Linux only; an error
/// reading `/proc/self/smaps` means nothing is dropped.
pub fn drop_code_mappings() -> std::io::Result<Dropped> {
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let mut done = Dropped::default();
    for (range, rss) in droppable(&smaps) {
        if madvise_dontneed(range).is_ok() {
            done.mappings += 1;
            done.resident_bytes += rss;
        }
    }
    Ok(done)
}

#[allow(unsafe_code)]
fn madvise_dontneed((start, len): Range) -> std::io::Result<()> {
    // SAFETY: the range is one whole mapping of this process, read-only, file-backed and without
    // private pages (checked by `droppable`); MADV_DONTNEED on such a mapping only drops page
    // table entries, and any later access refills them from the same file contents. No Rust
    // object is invalidated: the bytes read through the mapping stay the same.
    let rc = unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_DONTNEED) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The mappings of `smaps` that can be dropped, with their resident bytes: private read-only or
/// read-execute mappings of a file that is mapped executable somewhere (a loaded ELF object, not a
/// data file some library mapped) and that have no anonymous (copied-on-write) page.
fn droppable(smaps: &str) -> Vec<(Range, u64)> {
    let maps = parse(smaps);
    let objects: Vec<&str> = maps
        .iter()
        .filter(|m| m.perms == "r-xp")
        .map(|m| m.path)
        .collect();
    maps.iter()
        .filter(|m| matches!(m.perms, "r-xp" | "r--p"))
        .filter(|m| m.anonymous_kib == Some(0) && m.len > 0)
        .filter(|m| Path::new(m.path).is_absolute() && objects.contains(&m.path))
        .map(|m| ((m.start, m.len), m.rss_kib.unwrap_or(0) * 1024))
        .collect()
}

struct Mapping<'a> {
    start: usize,
    len: usize,
    perms: &'a str,
    path: &'a str,
    rss_kib: Option<u64>,
    anonymous_kib: Option<u64>,
}

/// The mappings of a `/proc/<pid>/smaps` text: a header line per mapping
/// (`start-end perms offset dev inode path`), then `Key: value kB` lines.
fn parse(smaps: &str) -> Vec<Mapping<'_>> {
    let mut maps: Vec<Mapping<'_>> = Vec::new();
    for line in smaps.lines() {
        let mut words = line.split_ascii_whitespace();
        let Some(first) = words.next() else {
            continue;
        };
        if let Some((a, b)) = first.split_once('-') {
            if let (Ok(start), Ok(end)) =
                (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
            {
                let perms = words.next().unwrap_or("");
                // offset, device, inode, then the path (which may hold spaces).
                let path = words.nth(3).map_or("", |p| {
                    let at = line.find(p).unwrap_or(line.len());
                    line[at..].trim_end()
                });
                maps.push(Mapping {
                    start,
                    len: end.saturating_sub(start),
                    perms,
                    path,
                    rss_kib: None,
                    anonymous_kib: None,
                });
                continue;
            }
        }
        let Some(m) = maps.last_mut() else {
            continue;
        };
        let kib = || words.clone().next().and_then(|v| v.parse::<u64>().ok());
        match first {
            "Rss:" => m.rss_kib = kib(),
            "Anonymous:" => m.anonymous_kib = kib(),
            _ => {}
        }
    }
    maps
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0c0800000-55d0c0a00000 r--p 00000000 fd:01 1234                       /usr/bin/agent
Rss:                 512 kB
Anonymous:             0 kB
VmFlags: rd mr mw me sd
55d0c0a00000-55d0c1200000 r-xp 00200000 fd:01 1234                       /usr/bin/agent
Rss:                4608 kB
Anonymous:             0 kB
55d0c1200000-55d0c1300000 r--p 00a00000 fd:01 1234                       /usr/bin/agent
Rss:                1024 kB
Anonymous:          1024 kB
55d0c1300000-55d0c1310000 rw-p 00b00000 fd:01 1234                       /usr/bin/agent
Rss:                  64 kB
Anonymous:            64 kB
55d0c2000000-55d0c2100000 rw-p 00000000 00:00 0                          [heap]
Rss:                 900 kB
Anonymous:           900 kB
7f0000000000-7f0000100000 r--p 00000000 fd:01 99                         /var/lib/agent/data file
Rss:                 100 kB
Anonymous:             0 kB
7f0000200000-7f0000380000 r-xp 00028000 fd:01 77                         /usr/lib/x86_64-linux-gnu/libc.so.6
Rss:                1400 kB
Anonymous:             0 kB
7f0000400000-7f0000401000 r-xp 00000000 fd:01 78                         /opt/patched.so
Rss:                   4 kB
Anonymous:             4 kB
7ffc00000000-7ffc00002000 r-xp 00000000 00:00 0                          [vdso]
Rss:                   8 kB
Anonymous:             0 kB
";

    #[test]
    fn drops_clean_code_and_rodata_of_loaded_objects_only() {
        let d = droppable(SMAPS);
        let starts: Vec<usize> = d.iter().map(|((s, _), _)| *s).collect();
        assert_eq!(
            starts,
            vec![0x55d0c0800000, 0x55d0c0a00000, 0x7f0000200000],
            "the binary's rodata and text and libc's text; not the relocated part, the \
             data mappings, the heap, a data file, patched code or the vdso"
        );
        assert_eq!(d[1], ((0x55d0c0a00000, 0x800000), 4608 * 1024));
    }

    #[test]
    fn garbage_is_no_mapping() {
        assert!(droppable("").is_empty());
        assert!(droppable("zz-yy r-xp\nRss: x kB\nAnonymous:\n-\n").is_empty());
        // A header without its Anonymous line is left alone: nothing says it is clean.
        assert!(droppable("1000-2000 r-xp 0 fd:01 1 /bin/x\nRss: 4 kB\n").is_empty());
    }

    fn rss_file_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("RssFile:"))
            .and_then(|v| v.split_ascii_whitespace().next()?.parse().ok())
            .expect("RssFile")
    }

    #[test]
    fn the_process_keeps_running_with_less_code_resident() {
        let before = rss_file_kib();
        let done = drop_code_mappings().expect("smaps");
        let after = rss_file_kib();
        assert!(
            done.mappings >= 2,
            "the test binary and libc at least: {done:?}"
        );
        assert!(
            after + 256 < before,
            "file-backed resident memory {before} KiB -> {after} KiB"
        );
        // Code and constants are back from the page cache as soon as they are used.
        let v: Vec<String> = (0..100).map(|i| format!("{i:>4}")).collect();
        assert_eq!(v.concat().len(), 400);
    }
}
