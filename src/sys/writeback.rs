//! Early writeback of a file being written, so that its final `fsync`
//! finds little left to do.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Starts writeback of the dirty pages of `fd` from `offset` to its end,
/// without waiting for it (`sync_file_range(SYNC_FILE_RANGE_WRITE)`): the
/// disk writes while the caller keeps computing. It promises no durability;
/// the caller still `fsync`s at the end. Not in rustix.
pub fn start(fd: BorrowedFd<'_>, offset: u64) -> io::Result<()> {
    let offset = libc::off64_t::try_from(offset).map_err(|_| io::Error::other("offset"))?;
    // SAFETY: sync_file_range takes a descriptor, kept open by the borrow
    // for the call, and plain integers; it touches no memory of ours.
    let rc =
        unsafe { libc::sync_file_range(fd.as_raw_fd(), offset, 0, libc::SYNC_FILE_RANGE_WRITE) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
