//! Test helpers shared by the suites. They drive real tools (Debian's
//! `docker-registry`, `skopeo`, `umoci`, busybox-static), never mocks; a
//! missing tool fails the test with the hint to run
//! `scripts/install-test-deps.sh` as root.
// Each suite uses only some helpers.
#![allow(dead_code)]

pub mod buildkit;
pub mod busybox;
pub mod debian;
pub mod flaky_proxy;
pub mod image_tree;
pub mod in_container;
pub mod oci_schema;
pub mod python_base;
pub mod registry;
pub mod token_server;
pub mod tools;
pub mod user;
