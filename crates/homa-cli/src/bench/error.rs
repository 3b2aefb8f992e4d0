//! [`BenchError`]: everything that can stop a benchmark, with what was being done.

use std::fmt;
use std::io;

/// Why `homa bench`, `homa server` or `homa client` stopped.
#[derive(Debug)]
pub(crate) enum BenchError {
    /// A Homa socket call failed.
    Homa {
        /// What the benchmark was doing.
        context: String,
        /// The socket library's error.
        source: homa_socket::Error,
    },
    /// A system call (TCP, UDP, files) failed.
    Io {
        /// What the benchmark was doing.
        context: String,
        /// The operating system's error.
        source: io::Error,
    },
    /// A peer sent something the benchmark's framing does not allow.
    Protocol(String),
    /// A server did not answer in time.
    NoResponse {
        /// Which transport and server.
        what: String,
        /// How long the benchmark waited, in seconds.
        waited_s: f64,
    },
    /// A benchmark RPC failed (no server at the address, ...).
    RpcFailed {
        /// Which transport and server.
        what: String,
        /// Why, as the transport says.
        why: String,
    },
    /// A transport made no progress for too long and the run was stopped.
    Stalled(String),
    /// An option's value is unusable; `option` names it.
    Option {
        /// The option, as typed on the command line.
        option: &'static str,
        /// Why.
        reason: String,
    },
}

impl BenchError {
    pub(crate) fn homa(context: impl Into<String>, source: homa_socket::Error) -> Self {
        BenchError::Homa {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        BenchError::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn option(option: &'static str, reason: impl Into<String>) -> Self {
        BenchError::Option {
            option,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BenchError::Homa { context, source } => write!(f, "{context}: {source}"),
            BenchError::Io { context, source } => write!(f, "{context}: {source}"),
            BenchError::Protocol(what) => write!(f, "protocol error: {what}"),
            BenchError::NoResponse { what, waited_s } => write!(
                f,
                "{what} did not answer within {waited_s:.1} s (is the server running and reachable?)"
            ),
            BenchError::RpcFailed { what, why } => write!(
                f,
                "an RPC to {what} failed: {why} (is the server running and reachable?)"
            ),
            BenchError::Stalled(what) => write!(f, "stalled: {what}"),
            BenchError::Option { option, reason } => write!(f, "invalid {option}: {reason}"),
        }
    }
}

impl std::error::Error for BenchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BenchError::Homa { source, .. } => Some(source),
            BenchError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
