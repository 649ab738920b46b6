//! kiln's one integration test binary: helpers in `support`, suites beside it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod build_copy;
mod build_diff;
mod build_engine;
mod build_progress;
mod build_registry_cache;
mod build_seeds;
mod cli;
mod conformance;
mod container_tiers;
mod harness;
mod images;
mod k8s_manifests;
mod layer_unpack;
mod layer_write;
mod registry_remote;
mod run_step;
mod sandbox;
mod selfhost;
mod snapshot;
mod support;
