//! [`TestbedError`]: everything that can stop `homa testbed`, saying what was being done.

use std::fmt;
use std::io;

/// Why `homa testbed` stopped.
#[derive(Debug)]
pub(crate) enum TestbedError {
    /// The process is not root: namespaces, veths and qdiscs need CAP_SYS_ADMIN and
    /// CAP_NET_ADMIN.
    NotRoot {
        /// The effective user id the process runs as.
        euid: u32,
    },
    /// A program the testbed runs is not installed.
    MissingTool {
        /// The program (`ip`, `tc`, `ethtool`).
        tool: &'static str,
        /// The Debian package that brings it.
        package: &'static str,
    },
    /// An option's value is out of range; `option` names it as typed.
    Option {
        /// The option, e.g. `--hosts`.
        option: &'static str,
        /// The value given.
        value: String,
        /// What is allowed.
        allowed: String,
    },
    /// A namespace the run would create already exists and is not one of ours.
    NamespaceExists {
        /// The namespace's name.
        name: String,
    },
    /// A command (`ip`, `tc`, `ethtool`) ran but failed.
    Command {
        /// The command line, as run.
        command: String,
        /// Its exit status, as the OS reports it.
        status: String,
        /// What it printed on stderr (trimmed).
        stderr: String,
    },
    /// A system call or file operation failed.
    Io {
        /// What the testbed was doing.
        context: String,
        /// The operating system's error.
        source: io::Error,
    },
    /// `tc -s` printed something the statistics parser does not understand.
    TcParse {
        /// The offending line.
        line: String,
        /// What was expected there.
        expected: &'static str,
    },
    /// An emulation check ran and found the emulated network wrong.
    CheckFailed {
        /// Which check (`bulk transfer`, `priority`).
        check: &'static str,
        /// What was measured and what was expected.
        why: String,
    },
    /// A `homa server` or `homa client` the experiment started failed.
    Child {
        /// Which process, e.g. `homa server on host 2`.
        what: String,
        /// What went wrong.
        why: String,
        /// The last lines it printed.
        output: String,
    },
    /// What a client wrote could not be read back.
    RawSamples {
        /// The file.
        path: String,
        /// Why.
        why: String,
    },
    /// An output file (`--json`, `--csv`, `--plot`) cannot be written.
    Output {
        /// The option naming it.
        option: &'static str,
        /// What is wrong.
        why: String,
    },
    /// A failure injected on purpose (`--inject-failure`), to test the teardown.
    Injected {
        /// The stage after which it was injected.
        stage: &'static str,
    },
    /// A signal (Ctrl-C, SIGTERM, SIGHUP) stopped the run.
    Interrupted,
}

impl TestbedError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        TestbedError::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn option(
        option: &'static str,
        value: impl fmt::Display,
        allowed: impl Into<String>,
    ) -> Self {
        TestbedError::Option {
            option,
            value: value.to_string(),
            allowed: allowed.into(),
        }
    }
}

impl fmt::Display for TestbedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TestbedError::NotRoot { euid } => write!(
                f,
                "homa testbed needs root (it creates network namespaces, veth pairs and \
                 qdiscs); this process runs as uid {euid}: run it with sudo or as root"
            ),
            TestbedError::MissingTool { tool, package } => write!(
                f,
                "`{tool}` is not installed (or not on PATH): install it with \
                 `apt-get install {package}`"
            ),
            TestbedError::Option {
                option,
                value,
                allowed,
            } => write!(f, "{option} {value}: out of range; allowed: {allowed}"),
            TestbedError::NamespaceExists { name } => write!(
                f,
                "network namespace {name} already exists and this run did not create it: \
                 refusing to touch it"
            ),
            TestbedError::Command {
                command,
                status,
                stderr,
            } => {
                write!(f, "`{command}` failed ({status})")?;
                if !stderr.is_empty() {
                    write!(f, ": {stderr}")?;
                }
                Ok(())
            }
            TestbedError::Io { context, source } => write!(f, "{context}: {source}"),
            TestbedError::TcParse { line, expected } => {
                write!(
                    f,
                    "unexpected `tc -s` output: expected {expected} in {line:?}"
                )
            }
            TestbedError::CheckFailed { check, why } => {
                write!(f, "emulation check failed ({check}): {why}")
            }
            TestbedError::Child { what, why, output } => {
                write!(f, "{what}: {why}")?;
                if !output.is_empty() {
                    write!(f, "; it printed: {output}")?;
                }
                Ok(())
            }
            TestbedError::RawSamples { path, why } => {
                write!(f, "reading the raw samples in {path}: {why}")
            }
            TestbedError::Output { option, why } => write!(f, "{option}: {why}"),
            TestbedError::Injected { stage } => {
                write!(f, "failure injected after {stage} (--inject-failure)")
            }
            TestbedError::Interrupted => write!(f, "interrupted by a signal"),
        }
    }
}

impl std::error::Error for TestbedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TestbedError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_say_what_was_wrong() {
        let e = TestbedError::NotRoot { euid: 1000 };
        assert!(e.to_string().contains("needs root"), "{e}");
        assert!(e.to_string().contains("uid 1000"), "{e}");
        let e = TestbedError::option("--hosts", 1, "2..=16");
        assert_eq!(e.to_string(), "--hosts 1: out of range; allowed: 2..=16");
        let e = TestbedError::Command {
            command: "tc -n x qdisc add".into(),
            status: "exit status: 2".into(),
            stderr: "Error: bad".into(),
        };
        assert_eq!(
            e.to_string(),
            "`tc -n x qdisc add` failed (exit status: 2): Error: bad"
        );
        let e = TestbedError::MissingTool {
            tool: "ethtool",
            package: "ethtool",
        };
        assert!(e.to_string().contains("apt-get install ethtool"), "{e}");
        let e = TestbedError::Child {
            what: "homa server on host 1".into(),
            why: "exited (exit status: 1) before it was ready".into(),
            output: "homa: binding port 4000: in use".into(),
        };
        assert_eq!(
            e.to_string(),
            "homa server on host 1: exited (exit status: 1) before it was ready; \
             it printed: homa: binding port 4000: in use"
        );
    }
}
