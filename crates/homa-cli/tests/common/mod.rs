//! What the `homa testbed` integration tests share: whether a test may build racks here
//! (root, `ip`, `tc`, `ethtool`; otherwise a skip line, or a failure when
//! HOMA_TEST_REQUIRE_PRIVILEGED=1) and which namespaces a run left.
// (Each test binary uses its own part of this module.)
#![allow(dead_code)]

use std::io::{self, Write};
use std::sync::{Mutex, MutexGuard};

/// The environment variable that turns a skipped privileged test into a failure.
pub(crate) const REQUIRE_PRIVILEGED: &str = "HOMA_TEST_REQUIRE_PRIVILEGED";

/// Where `ip netns` keeps named namespaces.
pub(crate) const NETNS_DIR: &str = "/run/netns";

/// Reports that a privileged test cannot run here: prints `<test>: skipped: <reason>` to
/// stderr, or panics when HOMA_TEST_REQUIRE_PRIVILEGED=1.
pub(crate) fn skip_or_fail(reason: &str) {
    if std::env::var(REQUIRE_PRIVILEGED).is_ok_and(|v| v == "1") {
        panic!("{reason}, and {REQUIRE_PRIVILEGED}=1 forbids skipping");
    }
    let test = std::thread::current().name().unwrap_or("?").to_string();
    let _ = writeln!(io::stderr(), "{test}: skipped: {reason}");
}

/// This process's effective uid (`/proc/self/status`).
pub(crate) fn effective_uid() -> Option<u32> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Whether `tool` is an executable file in a `PATH` directory.
pub(crate) fn on_path(tool: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|d| d.join(tool).is_file())
}

/// Whether this test may build racks; if not, it has been reported (or failed) and the
/// test returns.
pub(crate) fn privileged() -> bool {
    if effective_uid() != Some(0) {
        skip_or_fail("homa testbed tests need root (network namespaces, veths, qdiscs)");
        return false;
    }
    for tool in ["ip", "tc", "ethtool"] {
        if !on_path(tool) {
            skip_or_fail(&format!("homa testbed tests need `{tool}` on PATH"));
            return false;
        }
    }
    true
}

/// Namespaces whose name starts with `homa-tb-<pid>-`, sorted.
pub(crate) fn namespaces_of(pid: u32) -> Vec<String> {
    let prefix = format!("homa-tb-{pid}-");
    let mut names: Vec<String> = std::fs::read_dir(NETNS_DIR)
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Racks are built one at a time (within a test binary): a run's sweep of stale
/// namespaces must not meet another test's deliberately killed run, and two cores do not
/// carry two racks' checks.
pub(crate) fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}
