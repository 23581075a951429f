//! Release builds of the agent binary lay out the functions that run while the agent is idle
//! together (`link/idle.order`, written by `scripts/idle-symbol-order.sh`), so the idle agent
//! maps a few hundred KiB of its code instead of half of it (docs/benchmarks.md, "Idle agent").
//!
//! The order is a hint to LLD (`--symbol-ordering-file`); it changes where functions are, never
//! what they do. It is passed only where LLD is known to be the linker: rustc 1.90 and later on
//! x86_64 Linux link with its own LLD unless told otherwise. Anywhere else the build is as
//! before.

use std::env;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=link/idle.order");
    println!("cargo:rerun-if-changed=build.rs");
    let release = env::var("PROFILE").is_ok_and(|p| p == "release");
    let target = env::var("TARGET").unwrap_or_default();
    if !release || target != "x86_64-unknown-linux-gnu" || !rustc_links_with_lld() {
        return;
    }
    let Ok(dir) = env::var("CARGO_MANIFEST_DIR") else {
        return;
    };
    let order = format!("{dir}/link/idle.order");
    if std::path::Path::new(&order).is_file() {
        println!("cargo:rustc-link-arg-bin=agent=-Wl,--symbol-ordering-file={order}");
        // Symbols of the file that this build does not have (renamed or inlined since the file
        // was written) are no error.
        println!("cargo:rustc-link-arg-bin=agent=-Wl,--no-warn-symbol-ordering");
    }
}

/// Whether rustc links this target with its own LLD: 1.90 or later, and no linker, linker
/// flavor or linker features chosen in the flags.
fn rustc_links_with_lld() -> bool {
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if flags.contains("linker") || env::var_os("RUSTC_LINKER").is_some() {
        return false;
    }
    if env::vars().any(|(k, _)| k.starts_with("CARGO_TARGET_") && k.ends_with("_LINKER")) {
        return false;
    }
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Ok(out) = Command::new(rustc).arg("-vV").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(release) = text.lines().find_map(|l| l.strip_prefix("release: ")) else {
        return false;
    };
    let mut parts = release
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (1, 90)
}
