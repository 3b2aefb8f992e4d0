//! `homa bench --quick` end to end: it must finish and print every section (no timing is
//! asserted), write the files asked for, and refuse bad options with a clear message.

use std::process::Command;

fn homa() -> Command {
    Command::new(env!("CARGO_BIN_EXE_homa"))
}

/// Runs `command`, asserts that it succeeded, and returns its standard output.
fn succeed(command: &mut Command) -> String {
    let out = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn quick_run_prints_every_section_and_writes_outputs() {
    let dir = std::env::temp_dir().join(format!("homa-bench-quick-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (json, csv, svg) = (dir.join("r.json"), dir.join("r.csv"), dir.join("r.svg"));
    let stdout = succeed(
        homa()
            .args(["bench", "--quick", "--duration", "0.5", "--json"])
            .arg(&json)
            .arg("--csv")
            .arg(&csv)
            .arg("--plot")
            .arg(&svg),
    );
    for section in [
        "1. Unloaded RTT",
        "2. Throughput",
        "3. Loaded run",
        "Short messages",
        "Summary",
        "Homa/UDP small-RPC latency",
        "Homa/TCP short-message P99 slowdown under load",
    ] {
        assert!(stdout.contains(section), "no {section:?} in:\n{stdout}");
    }
    let json = std::fs::read_to_string(&json).unwrap();
    for key in [
        "\"tool\": \"homa bench\"",
        "\"unloaded\"",
        "\"throughput\"",
        "\"loaded\"",
        "\"p99_slowdown\"",
        "\"cpu_us_per_rpc\"",
        "\"ctx_switches_per_rpc\"",
        "\"server_shards\": null",
    ] {
        assert!(json.contains(key), "no {key} in the JSON");
    }
    assert!(std::fs::read_to_string(&csv)
        .unwrap()
        .starts_with("section,transport"));
    assert!(std::fs::read_to_string(&svg).unwrap().starts_with("<svg"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_sharded_homa_server_port_serves_the_whole_run() {
    let json = std::env::temp_dir().join(format!("homa-bench-shards-{}.json", std::process::id()));
    let stdout = succeed(
        homa()
            .args([
                "bench",
                "--quick",
                "--duration",
                "0.3",
                "--workload",
                "1000",
            ])
            .args(["--server-shards", "2", "--servers", "2", "--json"])
            .arg(&json),
    );
    assert!(stdout.contains("(Homa: one port, 2 shards)"), "{stdout}");
    let text = std::fs::read_to_string(&json).unwrap();
    assert!(text.contains("\"server_shards\": 2"), "{text}");
    let _ = std::fs::remove_file(&json);
}

#[test]
fn bad_options_fail_with_a_message() {
    for args in [
        &["bench", "--workload", "w9"][..],
        &["bench", "--workload", "2M"],
        &["bench", "--load", "0"],
        &["bench", "--clients", "0"],
        &["bench", "--server-shards", "0"],
        &["bench", "--server-shards", "300"],
        &["bench", "--plot", "-"],
        &["bench", "--json", "/nonexistent-dir/x.json"],
        &["client", "--server", "::1"],
    ] {
        let out = homa().args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
        assert!(!stderr.trim().is_empty(), "{args:?}: no message");
    }
}
