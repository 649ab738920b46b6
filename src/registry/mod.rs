//! Talking to OCI / docker registries.
//!
//! The registry client (auth, manifest and blob transfer) will live here. For
//! now it holds only [`reference`], the parser for image references such as
//! `busybox` or `ghcr.io/o/r@sha256:…`, because every later step (pull, push,
//! `FROM` resolution) needs a normalized name first.

pub mod credentials;
pub mod reference;
