//! kiln: a rootless, daemonless builder of OCI images from Dockerfiles.
//!
//! The pipeline and the module map are described in `../shared/DESIGN.md`.

pub mod build;
pub mod context;
pub mod exec;
pub mod frontend;
pub mod image;
pub mod layer;
pub mod plan;
pub mod registry;
pub mod snapshot;
pub mod store;
pub mod sys;
pub mod transport;
