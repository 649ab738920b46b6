//! The only place with `unsafe` and raw `libc` calls: namespaces, mounts,
//! processes. Each unsafe block says why it is sound.
#![allow(unsafe_code)]

pub mod ffi;
pub mod mount;
pub mod ns;
pub mod proc;
