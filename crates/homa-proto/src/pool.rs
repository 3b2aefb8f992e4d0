//! The bpage receive pool (PROTOCOL.md 5.5). Being written.
