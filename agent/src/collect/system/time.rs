//! The kernel's view of clock synchronisation, read with `adjtimex` (modes 0: read only, no
//! privilege needed).
//!
//! What is measurable without asking an NTP server: whether an NTP daemon has marked the clock
//! synchronised, the kernel's maximum and estimated error, and the offset the kernel is still
//! slewing away. The offset and estimated error are only meaningful while the clock is
//! synchronised, so they are emitted only then; `time.synced` and `time.max_error` always.

use super::{Out, Reader};

/// What `adjtimex` reports, in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Clock {
    pub synced: bool,
    pub offset: f64,
    pub max_error: f64,
    pub est_error: f64,
}

pub(super) fn collect(r: &mut Reader, out: &mut Out) {
    match read() {
        Ok(c) => {
            r.recovered(std::path::Path::new("adjtimex"));
            emit(&c, out);
        }
        Err(e) => r.failed(std::path::Path::new("adjtimex"), &e),
    }
}

pub(super) fn emit(c: &Clock, out: &mut Out) {
    out.push("time.synced", if c.synced { 1.0 } else { 0.0 }, &[]);
    out.push("time.max_error", c.max_error, &[]);
    if c.synced {
        out.push("time.offset", c.offset, &[]);
        out.push("time.est_error", c.est_error, &[]);
    }
}

#[allow(unsafe_code)]
fn read() -> std::io::Result<Clock> {
    // SAFETY: `timex` is plain data for which all-zero is valid; with `modes == 0` adjtimex only
    // fills the struct we own and changes nothing.
    let (state, tx) = unsafe {
        let mut tx: libc::timex = std::mem::zeroed();
        let state = libc::adjtimex(&mut tx);
        (state, tx)
    };
    if state < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let unsync = tx.status & libc::STA_UNSYNC != 0;
    let offset_unit = if tx.status & libc::STA_NANO != 0 {
        1e-9
    } else {
        1e-6
    };
    Ok(Clock {
        synced: state != libc::TIME_ERROR && !unsync,
        offset: tx.offset as f64 * offset_unit,
        max_error: tx.maxerror as f64 * 1e-6,
        est_error: tx.esterror as f64 * 1e-6,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_kernel_clock_state() {
        let c = read().expect("adjtimex with modes 0 needs no privilege");
        assert!(c.max_error >= 0.0);
        let mut out = Out::new();
        emit(&c, &mut out);
        let names: Vec<_> = out.metrics.iter().map(|m| m.name.as_str()).collect();
        assert!(names.contains(&"time.synced"));
        assert_eq!(names.contains(&"time.offset"), c.synced);
    }
}
