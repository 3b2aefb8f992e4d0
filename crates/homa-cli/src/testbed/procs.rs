//! The experiment's child processes: `homa server` and `homa client` started on an
//! emulated host with `ip netns exec <netns> <this homa executable> …`, their output in
//! log files of the run's scratch directory, waited for by bounded polling, and always
//! killed and reaped — at the end of their use, on an error (drop), and by the teardown
//! on a signal ([`Children`]).
//!
//! `ip netns exec` enters the namespace and then executes the program in its own
//! process (it forks only in batch mode), so the child's pid is the `homa` process's:
//! its `/proc/<pid>/stat` gives the program's CPU time.

use std::fs::{self, File};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::cpu;
use super::error::TestbedError;
use super::netns::Children;
use crate::bench::system::{self, RunQueue};

/// How often a polled condition (a ready line, an exit) is looked at again.
const POLL: Duration = Duration::from_millis(20);

/// Lines of a log shown in an error.
const LOG_TAIL_LINES: usize = 6;

/// A `homa` process running in an emulated host's namespace.
#[derive(Debug)]
pub(crate) struct HostProcess {
    /// What it is, for messages: e.g. `homa server on host 2`.
    pub(crate) what: String,
    child: Child,
    children: Children,
    stdout: PathBuf,
    stderr: PathBuf,
    /// The write end of its stdin, if it was started with one ([`Self::start_piped`]).
    stdin: Option<ChildStdin>,
    /// Reaped already (exited, or killed).
    done: Option<ExitStatus>,
}

impl HostProcess {
    /// Starts `exe args…` in namespace `netns`, stdout and stderr to
    /// `<logs>/<tag>.out` and `<tag>.err`.
    pub(crate) fn start(
        children: &Children,
        netns: &str,
        exe: &Path,
        args: &[String],
        what: String,
        logs: &Path,
        tag: &str,
    ) -> Result<HostProcess, TestbedError> {
        Self::spawn(children, netns, exe, args, what, logs, tag, false)
    }

    /// As [`Self::start`], with a pipe to its stdin ([`Self::send_line`],
    /// [`Self::close_stdin`]).
    pub(crate) fn start_piped(
        children: &Children,
        netns: &str,
        exe: &Path,
        args: &[String],
        what: String,
        logs: &Path,
        tag: &str,
    ) -> Result<HostProcess, TestbedError> {
        Self::spawn(children, netns, exe, args, what, logs, tag, true)
    }

    #[allow(clippy::too_many_arguments)]
    fn spawn(
        children: &Children,
        netns: &str,
        exe: &Path,
        args: &[String],
        what: String,
        logs: &Path,
        tag: &str,
        piped: bool,
    ) -> Result<HostProcess, TestbedError> {
        let stdout = logs.join(format!("{tag}.out"));
        let stderr = logs.join(format!("{tag}.err"));
        let open = |path: &Path| {
            File::create(path)
                .map_err(|e| TestbedError::io(format!("creating {}", path.display()), e))
        };
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", netns])
            .arg(exe)
            .args(args)
            .stdin(if piped { Stdio::piped() } else { Stdio::null() })
            .stdout(open(&stdout)?)
            .stderr(open(&stderr)?);
        let mut child = children.spawn(&mut command)?;
        let stdin = child.stdin.take();
        Ok(HostProcess {
            what,
            child,
            children: children.clone(),
            stdout,
            stderr,
            stdin,
            done: None,
        })
    }

    /// Writes `line` and a newline to its stdin.
    ///
    /// # Errors
    ///
    /// A [`TestbedError`] naming it if it has no stdin pipe or the write fails (it
    /// exited).
    pub(crate) fn send_line(&mut self, line: &str) -> Result<(), TestbedError> {
        let result = match self.stdin.as_mut() {
            Some(stdin) => writeln!(stdin, "{line}").and_then(|_| stdin.flush()),
            None => Err(std::io::Error::other("it was started without a stdin pipe")),
        };
        result.map_err(|e| self.failure(format!("could not be written to: {e}")))
    }

    /// Closes its stdin (it reads end of file).
    pub(crate) fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// The process id (of the `homa` process, once `ip` has executed it).
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until its stdout has a line starting with `prefix` and returns that line;
    /// an error if it exits first or `limit` passes.
    pub(crate) fn wait_for_line(
        &mut self,
        prefix: &str,
        limit: Duration,
    ) -> Result<String, TestbedError> {
        let deadline = Instant::now() + limit;
        loop {
            let text = fs::read_to_string(&self.stdout).unwrap_or_default();
            if let Some(line) = text.lines().find(|l| l.starts_with(prefix)) {
                return Ok(line.to_string());
            }
            if let Some(status) = self.try_reap()? {
                return Err(self.failure(format!("exited ({status}) before it was ready")));
            }
            if Instant::now() >= deadline {
                return Err(self.failure(format!(
                    "printed no line starting with {prefix:?} within {limit:?}"
                )));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits for it to exit, at most `limit`; after that it is killed. Returns its exit
    /// status, or `None` if it had to be killed.
    pub(crate) fn wait(&mut self, limit: Duration) -> Result<Option<ExitStatus>, TestbedError> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.try_reap()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                self.kill()?;
                return Ok(None);
            }
            std::thread::sleep(POLL);
        }
    }

    /// CPU seconds it has used so far (all its threads); `None` once it is gone.
    pub(crate) fn cpu_seconds(&self) -> Option<f64> {
        match self.done {
            Some(_) => None,
            None => cpu::process_seconds(self.pid()),
        }
    }

    /// How long its threads have waited for a CPU so far; `None` once it is gone (or
    /// where the kernel keeps no such figures).
    pub(crate) fn run_queue(&self) -> Option<RunQueue> {
        match self.done {
            Some(_) => None,
            None => system::run_queue(self.pid()),
        }
    }

    /// Kills it (SIGKILL to its process group) and reaps it; nothing if it is reaped
    /// already.
    pub(crate) fn kill(&mut self) -> Result<(), TestbedError> {
        if self.done.is_none() {
            self.done = Some(self.children.kill(&mut self.child)?);
        }
        Ok(())
    }

    /// The last lines of its stderr (or stdout if stderr is empty), for messages.
    pub(crate) fn log_tail(&self) -> String {
        let read = |p: &Path| fs::read_to_string(p).unwrap_or_default();
        let mut text = read(&self.stderr);
        if text.trim().is_empty() {
            text = read(&self.stdout);
        }
        tail(&text, LOG_TAIL_LINES)
    }

    /// A [`TestbedError::Child`] about it: `why`, and the tail of its output.
    pub(crate) fn failure(&self, why: String) -> TestbedError {
        TestbedError::Child {
            what: self.what.clone(),
            why,
            output: self.log_tail(),
        }
    }

    fn try_reap(&mut self) -> Result<Option<ExitStatus>, TestbedError> {
        if let Some(status) = self.done {
            return Ok(Some(status));
        }
        let status = self.children.try_reap(&mut self.child)?;
        self.done = status;
        Ok(status)
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        if let Err(e) = self.kill() {
            eprintln!("homa testbed: stopping {}: {e}", self.what);
        }
    }
}

/// The last `lines` non-empty lines of `text`, joined by ` | `.
pub(crate) fn tail(text: &str, lines: usize) -> String {
    let kept: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    kept[kept.len().saturating_sub(lines)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_non_empty_lines() {
        assert_eq!(tail("a\n\nb\nc\n", 2), "b | c");
        assert_eq!(tail("a\n", 5), "a");
        assert_eq!(tail("", 3), "");
    }
}
