//! Receiver-side grant scheduling (PROTOCOL.md 3.3). Being written.
