//! A seccomp filter that makes the chown family succeed without doing
//! anything: the "chown emulation" of a sandbox with a single-id map, where
//! only container root exists and any `chown` to another id fails with
//! EINVAL, which would fail package installs and `COPY --chown`-like steps.
//!
//! The filter is a small classic-BPF program (hand-written: it is a dozen
//! instructions, and a seccomp crate would add a libseccomp dependency for
//! no gain): check the architecture, then for the chown syscalls of that
//! architecture return `SECCOMP_RET_ERRNO | 0`, which the kernel turns
//! into a return value of 0 without running the syscall; everything else
//! is allowed. An unknown architecture (or ABI) is allowed untouched.

use std::io;

// From <linux/audit.h>: EM_* | __AUDIT_ARCH_64BIT (0x8000_0000) |
// __AUDIT_ARCH_LE (0x4000_0000). libc does not export them.
const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;
const AUDIT_ARCH_I386: u32 = 3 | 0x4000_0000;
const AUDIT_ARCH_AARCH64: u32 = 183 | 0x8000_0000 | 0x4000_0000;
const AUDIT_ARCH_ARM: u32 = 40 | 0x4000_0000;
/// x32 system calls are x86_64 ones with this bit set in the number.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// The chown syscalls of the 32-bit ABIs (i386 and arm share the numbers,
/// arch/x86/entry/syscalls/syscall_32.tbl and arch/arm/tools/syscall.tbl):
/// lchown 16, fchown 95, chown 182, lchown32 198, fchown32 207, chown32 212.
const COMPAT32_CHOWN: [u32; 6] = [16, 95, 182, 198, 207, 212];
/// fchownat on i386 (298) and arm (325).
const I386_FCHOWNAT: u32 = 298;
const ARM_FCHOWNAT: u32 = 325;

/// `offsetof(struct seccomp_data, nr)` and `.arch`.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;

/// The native chown syscalls of the architecture kiln was built for.
fn native_chown() -> Vec<u32> {
    #[cfg(target_arch = "x86_64")]
    let nrs = [
        libc::SYS_chown,
        libc::SYS_fchown,
        libc::SYS_lchown,
        libc::SYS_fchownat,
    ]
    .to_vec();
    // aarch64 has only fchown and fchownat.
    #[cfg(not(target_arch = "x86_64"))]
    let nrs = [libc::SYS_fchown, libc::SYS_fchownat].to_vec();
    nrs.into_iter()
        .filter_map(|n| u32::try_from(n).ok())
        .collect()
}

fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

/// The program, as (architecture, syscall numbers) blocks:
///
/// ```text
///       ld  arch
///       jeq ARCH_1, 0, skip_1      ; not this arch: try the next block
///       ld  nr
///       jeq NR_a, success
///       jeq NR_b, success ...
///       ret ALLOW
/// skip_1: ...
///       ret ALLOW
/// success: ret ERRNO|0
/// ```
fn program() -> Vec<libc::sock_filter> {
    let native_arch = if cfg!(target_arch = "x86_64") {
        AUDIT_ARCH_X86_64
    } else {
        AUDIT_ARCH_AARCH64
    };
    let mut native = native_chown();
    if cfg!(target_arch = "x86_64") {
        let x32: Vec<u32> = native.iter().map(|n| n | X32_SYSCALL_BIT).collect();
        native.extend(x32);
    }
    let compat = if cfg!(target_arch = "x86_64") {
        (AUDIT_ARCH_I386, I386_FCHOWNAT)
    } else {
        (AUDIT_ARCH_ARM, ARM_FCHOWNAT)
    };
    let mut compat_nrs = COMPAT32_CHOWN.to_vec();
    compat_nrs.push(compat.1);
    let blocks = [(native_arch, native), (compat.0, compat_nrs)];

    let ld = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let jeq = libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K;
    let ret = libc::BPF_RET | libc::BPF_K;
    let mut prog: Vec<libc::sock_filter> = Vec::new();
    // Jumps to `success` are patched once its index is known.
    let mut to_success: Vec<usize> = Vec::new();
    for (arch, nrs) in &blocks {
        prog.push(stmt(ld, DATA_ARCH));
        // Block length after the arch check: ld nr + one jeq per nr + ret.
        let skip = 1 + nrs.len() + 1;
        let mut check = stmt(jeq, *arch);
        check.jf = u8::try_from(skip).unwrap_or(u8::MAX);
        prog.push(check);
        prog.push(stmt(ld, DATA_NR));
        for nr in nrs {
            to_success.push(prog.len());
            prog.push(stmt(jeq, *nr));
        }
        prog.push(stmt(ret, libc::SECCOMP_RET_ALLOW));
    }
    prog.push(stmt(ret, libc::SECCOMP_RET_ALLOW));
    let success = prog.len();
    prog.push(stmt(ret, libc::SECCOMP_RET_ERRNO));
    for i in to_success {
        // Relative jump: from the instruction after i to `success`.
        prog[i].jt = u8::try_from(success - i - 1).unwrap_or(u8::MAX);
    }
    prog
}

/// Installs the filter on the calling thread (inherited by children and
/// kept across execve). Sets `no_new_privs` first, which the kernel
/// requires of a process without CAP_SYS_ADMIN and which also keeps a
/// setuid program from running unfiltered.
pub fn emulate_chown() -> io::Result<()> {
    let mut filter = program();
    if filter.len() > usize::from(u8::MAX) {
        return Err(io::Error::other("seccomp program too long for its jumps"));
    }
    let prog = libc::sock_fprog {
        len: u16::try_from(filter.len()).map_err(io::Error::other)?,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) takes only integers.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `prog` points at `filter`, a live, correctly sized array of
    // sock_filter for the whole call; the kernel copies it before returning.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER as libc::c_ulong,
            &prog as *const libc::sock_fprog as libc::c_ulong,
            0,
            0,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jumps_land_on_the_success_return() {
        let prog = program();
        let last = prog.len() - 1;
        assert_eq!(prog[last].k, libc::SECCOMP_RET_ERRNO);
        for (i, ins) in prog.iter().enumerate() {
            if ins.code as u32 == libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K && ins.jt > 0 {
                assert_eq!(i + 1 + usize::from(ins.jt), last, "instruction {i}");
            }
            if ins.jf > 0 {
                let to = i + 1 + usize::from(ins.jf);
                // An arch mismatch lands on the next block's `ld arch` or the final allow.
                assert!(prog[to].k == DATA_ARCH || prog[to].k == libc::SECCOMP_RET_ALLOW);
            }
        }
        assert!(native_chown().contains(&(libc::SYS_fchownat as u32)));
    }
}
