//! Shared helpers live in the integration tests.
