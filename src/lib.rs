//! kiln: a rootless, daemonless builder of OCI images from Dockerfiles.
//!
//! The pipeline and the module map are described in `../shared/DESIGN.md`.

pub mod context;
pub mod frontend;
pub mod image;
pub mod layer;
pub mod plan;
pub mod registry;
pub mod store;
pub mod sys;
