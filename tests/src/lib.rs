//! Test infrastructure shared by the end-to-end tests: a fault-injecting
//! HTTP server. Fixtures that build releases live in `tests/common/`.

pub mod fault_server;
