//! `homa server` and `homa client` as separate processes: a client spreads its loaded
//! run over several servers, `--phase` writes one phase's raw samples, and a serving
//! client (`--serve`) answers requests on its port while it loads.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};

fn homa() -> Command {
    Command::new(env!("CARGO_BIN_EXE_homa"))
}

/// A `homa server` on loopback that is ready (it printed its line); killed on drop.
struct Server {
    child: Child,
    port: u16,
    udp_port: u16,
}

impl Server {
    fn start() -> Server {
        // Homa server ports are 1..=32767, below the kernel's ephemeral range, so they are
        // chosen here; a port in use makes the server exit, and the next one is tried.
        let base = 20_000 + (std::process::id() % 5_000) as u16;
        for attempt in 0..20u16 {
            let port = base + attempt * 7;
            let udp_port = port + 3;
            let mut child = homa()
                .args(["server", "--servers", "1", "--bind", "127.0.0.1"])
                .args([
                    "--port",
                    &port.to_string(),
                    "--udp-port",
                    &udp_port.to_string(),
                ])
                .args(["--homa-unsched-bytes", "20000"])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let mut line = String::new();
            let read = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
            if read.is_ok_and(|n| n > 0) && line.starts_with("homa server:") {
                return Server {
                    child,
                    port,
                    udp_port,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("no free port pair for homa server");
    }

    fn client(&self, servers: &str, phase: &[&str]) -> String {
        let out = homa()
            .args(["client", "--server", servers, "--servers", "1", "--quick"])
            .args(["--port", &self.port.to_string()])
            .args(["--udp-port", &self.udp_port.to_string()])
            .args([
                "--duration",
                "0.3",
                "--workload",
                "1000",
                "--load",
                "0.0005",
            ])
            .args(["--homa-unsched-bytes", "20000", "--raw-out", "-"])
            .args(phase)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{phase:?}: exit {:?}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn value(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {key} in:\n{text}"))
        .parse()
        .unwrap()
}

#[test]
fn a_loaded_phase_over_two_servers_writes_every_rpc() {
    let server = Server::start();
    // The same server twice: the client's RPCs spread over both entries.
    let text = server.client(
        "127.0.0.1,127.0.0.1",
        &["--phase", "loaded", "--kind", "homa"],
    );
    assert!(
        text.starts_with("homa-raw 1\nphase loaded\nkind homa\n"),
        "{text}"
    );
    assert_eq!(value(&text, "failed"), 0, "{text}");
    let rtts: Vec<&str> = text.lines().filter(|l| l.starts_with("rtt ")).collect();
    assert!(!rtts.is_empty(), "{text}");
    for l in &rtts {
        let f: Vec<u64> = l[4..].split(' ').map(|v| v.parse().unwrap()).collect();
        assert_eq!(f[0], 1000, "{l}");
        assert!(f[1] > 0, "{l}");
    }
    assert!(value(&text, "started") >= rtts.len() as u64);
}

#[test]
fn an_unloaded_phase_writes_one_line_per_size() {
    let server = Server::start();
    let text = server.client("127.0.0.1", &["--phase", "unloaded", "--kind", "tcp"]);
    assert!(
        text.starts_with("homa-raw 1\nphase unloaded\nkind tcp\n"),
        "{text}"
    );
    let sizes: Vec<u64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("unloaded "))
        .map(|l| l.split(' ').next().unwrap().parse().unwrap())
        .collect();
    for size in [100, 1_000, 10_000, 100_000, 1_000_000] {
        assert!(sizes.contains(&size), "{size} missing: {text}");
    }
}

/// A serving client whose server is itself: its one socket, bound to the port, sends
/// the requests and serves them (both roles of one engine), between the `ready` and
/// `done` lines, and exits when its stdin closes.
#[test]
fn a_serving_client_serves_its_port_while_it_loads() {
    let dir = std::env::temp_dir().join(format!("homa-serve-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let raw = dir.join("loaded.raw");
    let base = 25_000 + (std::process::id() % 5_000) as u16;
    for attempt in 0..20u16 {
        let port = (base + attempt * 11).to_string();
        let mut child = homa()
            .args([
                "client",
                "--server",
                "127.0.0.1",
                "--servers",
                "1",
                "--quick",
            ])
            .args(["--port", &port, "--duration", "0.3", "--workload", "1000"])
            .args(["--load", "0.0005", "--homa-unsched-bytes", "20000"])
            .args(["--phase", "loaded", "--kind", "homa", "--serve"])
            .arg("--raw-out")
            .arg(&raw)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        if line.trim() != "ready" {
            // The port was taken: the client exited with an error. Try the next one.
            let out = child.wait_with_output().unwrap();
            assert!(!out.status.success(), "no ready line, yet it succeeded");
            continue;
        }
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "go").unwrap();
        line.clear();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "done");
        // Still serving until stdin closes: the raw file is complete already.
        let text = std::fs::read_to_string(&raw).unwrap();
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.starts_with("homa-raw 1\nphase loaded\nkind homa\n"),
            "{text}"
        );
        assert_eq!(value(&text, "failed"), 0, "{text}");
        let rtts = text.lines().filter(|l| l.starts_with("rtt 1000 ")).count();
        assert!(rtts > 0 && value(&text, "started") >= rtts as u64, "{text}");
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    panic!("no free port for the serving client");
}

#[test]
fn phase_options_come_together() {
    for args in [
        &["client", "--server", "127.0.0.1", "--phase", "loaded"][..],
        &["client", "--server", "127.0.0.1", "--kind", "homa"],
        &["client", "--server", "127.0.0.1,::1"],
        &["client", "--server", "127.0.0.1", "--homa-priorities", "9"],
        // --serve: a loaded Homa phase with one server port only.
        &["client", "--server", "127.0.0.1", "--serve"],
        &[
            "client",
            "--server",
            "127.0.0.1",
            "--phase",
            "unloaded",
            "--kind",
            "homa",
            "--raw-out",
            "-",
            "--serve",
        ],
        &[
            "client",
            "--server",
            "127.0.0.1",
            "--phase",
            "loaded",
            "--kind",
            "homa",
            "--raw-out",
            "-",
            "--serve",
            "--servers",
            "2",
        ],
    ] {
        let out = homa().args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.trim().is_empty() && !stderr.contains("panicked"),
            "{args:?}: {stderr}"
        );
    }
}
