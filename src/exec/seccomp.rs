//! Chown emulation for sandboxes with a single-id map (no subordinate ids).
//!
//! With only container root mapped, `chown(path, 1, 1)` fails with EINVAL
//! (the id does not exist in the namespace), and package managers, `tar`,
//! `install -o` and the like abort the RUN. When enabled, the command is
//! started under a seccomp filter (`sys::seccomp::emulate_chown`) that makes
//! `chown`, `fchown`, `lchown`, `fchownat` (and the 32-bit `*chown32`
//! variants) return 0 without doing anything.
//!
//! Limits: the requested owner is not recorded anywhere. The file keeps the
//! owner it had (files the step creates belong to the caller, which is
//! container uid 0 and is written as 0 in the layer; files of lower layers
//! keep the ownership recorded at unpack time, see `layer::write`), so a
//! `chown app:app` in a RUN is lost from the image. A program that checks
//! ownership afterwards (`stat`) sees the old owner. Mode changes are real.
//! `no_new_privs` is set with the filter, so setuid programs run without
//! their privileges (with a single-id map they could not switch ids anyway).

use super::spec::ProcessSpec;

/// Whether the command gets the filter: the spec's explicit choice, else on
/// exactly for a rootless sandbox whose id map is single (`full_map` false).
pub(super) fn wanted(spec: &ProcessSpec, rootless: bool, full_map: bool) -> bool {
    spec.emulate_chown.unwrap_or(rootless && !full_map)
}
