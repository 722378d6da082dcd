//! Giving memory back to the system after a burst of requests.
//!
//! The C library's allocator (glibc) keeps the heap memory that requests freed, for
//! reuse, rather than returning it: after a flood of oversized forms and headers from
//! 200 connections at once, the server stayed about 15 MiB larger (17 → 32 MiB) and
//! crept up with each further flood, as freed blocks fragmented the heap. Nothing
//! leaked: `malloc_trim` gave it all back (36 → 19 MiB). So housekeeping calls
//! [`release_freed_memory`] every 30 seconds. RELIABILITY.md has the figures.

/// Returns the heap memory the process has freed to the operating system (glibc's
/// `malloc_trim`); on other C libraries, nothing to do. Takes about a millisecond for
/// a heap of tens of MiB; meant for a background task, not a request.
#[allow(unsafe_code)]
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers and touches only glibc's own heap
    // bookkeeping, under its own locks; any thread may call it at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
