//! Orchestration of build steps: composes `store`, `snapshot`, `exec` and
//! `layer`; holds no filesystem or process logic of its own.

pub mod copy;
pub mod engine;
pub mod finish;
mod lower_owners;
pub mod step;

pub use step::{run_step, BuildError, StepInput, StepOutput, StepTimings};
