//! OCI distribution registries as Tender repositories: references
//! ([`reference`]), authentication ([`auth`]), the artifact layout
//! ([`index`]) and the read side ([`client`], and [`RegistryFetcher`] for
//! the TUF client). `tender publish` writes the same layout.

pub mod auth;
pub mod client;
pub mod index;
pub mod reference;

pub use auth::{Credentials, RegistryAuth};
pub use client::{RegistryClient, RegistryError, RegistryFetcher};
pub use reference::{is_registry_reference, Reference};
