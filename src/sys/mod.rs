//! The kernel interface: the only module allowed `unsafe` and raw `libc`
//! calls (namespaces, mounts, processes, filesystem `*at` calls). Each unsafe
//! block carries a `// SAFETY:` comment; everything else calls these wrappers.
#![allow(unsafe_code)]

pub mod ffi;
pub mod fs;
pub mod mount;
pub mod ns;
pub mod proc;
pub mod seccomp;
pub mod tree;
pub mod writeback;
