//! Test infrastructure shared by the end-to-end tests: a fault-injecting
//! HTTP server, and the registry and nginx servers of the publishing tests.
//! Fixtures that build releases live in `tests/common/`.

pub mod fault_server;
pub mod local_servers;
