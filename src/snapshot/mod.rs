//! Snapshotters: a writable root over unpacked layers for one step, and the
//! list of what the step changed (see `changes` for the contract with the
//! layer writer).

pub mod changes;

pub use changes::{Change, ChangeKind, ChangeList};
