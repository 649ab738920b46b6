//! kiln's one integration test binary: helpers in `support`, suites beside it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cli;
mod conformance;
mod harness;
mod layer_unpack;
mod support;
