//! The kernel interface: the only module allowed `unsafe` (each block with a
//! `// SAFETY:` comment). Everything else calls these safe wrappers.
#![allow(unsafe_code)]

pub mod fs;
