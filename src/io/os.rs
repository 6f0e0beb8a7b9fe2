//! Small calls on descriptors that the std library does not wrap.

use std::os::fd::{AsRawFd, RawFd};

/// Takes an exclusive advisory lock on `file` (flock), held until the file is closed.
pub fn lock_exclusive(file: &std::fs::File) {
    // SAFETY: flock on a descriptor the caller owns; no memory is passed.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
}

/// Shuts a listening socket down so a pending accept returns at once.
///
/// The caller must own `fd` and keep it open until the accept loop has ended.
pub fn shutdown_listener(fd: RawFd) {
    // SAFETY: shutdown(2) on a descriptor the caller owns and keeps open; no memory is passed.
    unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
}
