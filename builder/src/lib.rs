//! The workstation and CI side of Tender: it turns a colcon workspace and a
//! release recipe into a signed, content-addressed release that robots
//! accept, as a static repository directory and as an offline bundle.
//!
//! The steps, one module each: [`recipe`] reads the recipe, [`colcon`] builds
//! the tree, [`scan`] and [`extra`] list its entries while [`relocate`]
//! rewrites build-machine paths, [`store`] chunks and compresses file
//! contents, and [`release`] writes the manifest, [`targets`] and
//! [`bundle`]. The release format itself is defined by
//! `tender_updater::format`.

pub mod audit;
pub mod bundle;
pub mod colcon;
pub mod cross;
pub mod delta;
pub mod distribution;
pub mod entries;
pub mod extra;
pub mod fsimage;
pub mod fsutil;
pub mod keydir;
pub mod oci;
mod pre_switch;
pub mod progress;
pub mod provenance;
pub mod publish;
pub mod recipe;
pub mod release;
pub mod relocate;
pub mod repo_audit;
pub mod rootchain;
pub mod rootedit;
pub mod scan;
pub mod signer;
pub mod snapshot;
pub mod store;
pub mod targets;
