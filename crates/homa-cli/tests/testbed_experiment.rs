//! `homa testbed --quick` end to end: the experiment runs Homa, Homa with one priority and
//! TCP across the emulated hosts, prints every section of its report, writes the JSON
//! with every key, each transport completes RPCs, and no namespace is left afterwards.
//! No timing is asserted.
//!
//! Needs root (namespaces, veths, qdiscs) and `ip`, `tc`, `ethtool`: without them the
//! test prints a skip message and passes — or fails when HOMA_TEST_REQUIRE_PRIVILEGED=1
//! (CI), as the other testbed tests do.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{namespaces_of, privileged, serial};

/// The number after the first `"key": ` in `text`.
fn number_after(text: &str, key: &str) -> Option<f64> {
    let needle = format!("\"{key}\": ");
    let rest = &text[text.find(&needle)? + needle.len()..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == 'e'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The part of the pretty-printed JSON about transport `name`: from its `"transport"`
/// key to the next transport's.
fn transport_section<'a>(json: &'a str, name: &str) -> &'a str {
    let start = json
        .find(&format!("\"transport\": \"{name}\","))
        .unwrap_or_else(|| panic!("no transport {name} in the JSON"));
    let rest = &json[start + 1..];
    let end = rest
        .find("\"transport\": \"")
        .map_or(json.len(), |i| start + 1 + i);
    &json[start..end]
}

/// Upper bound of the quick run; it only turns a hang into a failure.
const WAIT_LIMIT: Duration = Duration::from_secs(900);

/// Waits for `child` (bounded polling, at most [`WAIT_LIMIT`]; past it the child gets
/// SIGTERM, which tears its rack down, and the test fails); returns its status and
/// output.
fn wait_bounded(mut child: Child) -> (ExitStatus, String, String) {
    let read = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = read(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = read(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + WAIT_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for homa testbed") {
            break status;
        }
        if Instant::now() >= deadline {
            let pid = libc::pid_t::try_from(child.id()).expect("a pid");
            // SAFETY: kill(2) takes two integers; `pid` is our unreaped child.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let _ = child.wait();
            panic!("homa testbed --quick did not finish within {WAIT_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (
        status,
        stdout.join().unwrap_or_default(),
        stderr.join().unwrap_or_default(),
    )
}

#[test]
fn a_quick_experiment_reports_every_transport_and_leaves_nothing_behind() {
    if !privileged() {
        return;
    }
    let _serial = serial();
    let dir = std::env::temp_dir().join(format!("homa-tb-experiment-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json_path = dir.join("testbed.json");
    let child = Command::new(env!("CARGO_BIN_EXE_homa"))
        .args(["testbed", "--quick", "--json"])
        .arg(&json_path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting homa testbed");
    let pid = child.id();
    let (status, stdout, stderr) = wait_bounded(child);
    assert!(
        status.success(),
        "{status}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    for needle in [
        "homa testbed: 3 hosts",
        "check 1, bulk transfer",
        "check 2, priority",
        "RTT-bytes per host pair",
        "experiment: homa: loaded run",
        "experiment: homa-1prio: loaded run",
        "experiment: tcp: loaded run",
        "1. Unloaded RTT",
        "2. Loaded runs",
        "3. Slowdown per message size",
        "Short messages (<=",
        "4. The emulated links",
        "peak switch-port backlog",
        "Summary",
        "TCP / Homa short-message P99 slowdown:",
        "Homa 1 priority / Homa short-message P99:",
        "Targets (issue 12",
        "JSON report written to",
        "teardown: removed 4 of 4 namespaces",
    ] {
        assert!(stdout.contains(needle), "no {needle:?} in:\n{stdout}");
    }
    for transport in ["Homa (8 priorities)", "Homa (1 priority)", "TCP"] {
        assert!(
            stdout.contains(&format!("     {transport}")),
            "no short-message line for {transport}:\n{stdout}"
        );
    }

    let json = std::fs::read_to_string(&json_path).unwrap();
    for key in [
        "\"tool\": \"homa testbed\"",
        "\"config\"",
        "\"load_definition\"",
        "\"unsched_bytes\"",
        "\"baseline\"",
        "\"baselines\"",
        "\"transports\"",
        "\"summary\"",
        "\"tcp_homa_short_p99_slowdown\"",
        "\"homa1_homa_short_p99_slowdown\"",
        "\"targets\"",
    ] {
        assert!(json.contains(key), "no {key} in the JSON:\n{json}");
    }
    for name in ["homa", "homa-1prio", "tcp"] {
        let section = transport_section(&json, name);
        for key in [
            "\"unloaded\"",
            "\"loaded\"",
            "\"buckets\"",
            "\"short\"",
            "\"p99_slowdown\"",
            "\"throughput_gbps\"",
            "\"failed\"",
            "\"cpu\"",
            "\"servers_s\"",
            "\"machine_busy\"",
            "\"run_queue_wait_us_per_slice\"",
            "\"qdisc\"",
            "\"switch_drops\"",
            "\"host_drops\"",
            "\"peak_backlog\"",
            "\"problems\"",
        ] {
            assert!(section.contains(key), "{name}: no {key} in:\n{section}");
        }
        let rpcs = number_after(section, "rpcs").unwrap_or(0.0);
        assert!(rpcs > 0.0, "{name} completed no RPCs:\n{section}");
    }
    assert_eq!(
        namespaces_of(pid),
        Vec::<String>::new(),
        "namespaces left behind"
    );
    assert!(
        !std::env::temp_dir()
            .join(format!("homa-testbed-{pid}"))
            .exists(),
        "the scratch directory was left behind"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--one-engine-per-host`: Homa's loaded runs are one serving client per host (no
/// servers), every Homa RPC measured completes or is counted, and nothing is left.
#[test]
fn one_engine_per_host_serves_from_the_clients() {
    if !privileged() {
        return;
    }
    let _serial = serial();
    let dir = std::env::temp_dir().join(format!("homa-tb-one-engine-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json_path = dir.join("testbed.json");
    let child = Command::new(env!("CARGO_BIN_EXE_homa"))
        .args([
            "testbed",
            "--quick",
            "--skip-checks",
            "--one-engine-per-host",
        ])
        .arg("--json")
        .arg(&json_path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting homa testbed");
    let pid = child.id();
    let (status, stdout, stderr) = wait_bounded(child);
    assert!(
        status.success(),
        "{status}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.contains("one engine per host"),
        "the setup does not say so:\n{stdout}"
    );
    let json = std::fs::read_to_string(&json_path).unwrap();
    for name in ["homa", "homa-1prio", "tcp"] {
        let section = transport_section(&json, name);
        let rpcs = number_after(section, "rpcs").unwrap_or(0.0);
        assert!(rpcs > 0.0, "{name} completed no RPCs:\n{section}");
        // A run whose serving clients failed lists them as problems.
        assert!(
            section.contains("\"problems\": []"),
            "{name} had problems:\n{section}"
        );
    }
    assert_eq!(namespaces_of(pid), Vec::<String>::new());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn output_options_are_checked_before_anything_is_built() {
    let out = Command::new(env!("CARGO_BIN_EXE_homa"))
        .args(["testbed", "--quick", "--json", "-"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    // Without root it stops at the root check first; as root at the output check.
    assert!(
        stderr.contains("--json: homa testbed prints its progress on stdout")
            || stderr.contains("homa testbed needs root"),
        "{stderr}"
    );
}
