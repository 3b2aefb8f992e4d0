//! Discrete-event network simulation for Homa engines. Being written.
