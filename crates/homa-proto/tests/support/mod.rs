//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test file uses a different subset

pub(crate) mod pcap;
