//! `layer::unpack` and the store's unpacked layers: a malicious-layer corpus
//! that must be refused without any write outside the root, and positive
//! cases (whiteouts in both modes, links, modes, xattrs, ownership, the three
//! compressions, chain-id reuse, concurrency, busybox against `tar -x`).

mod build;
mod corpus;
mod positive;
mod store;
mod tree;
