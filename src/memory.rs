//! Process settings made once at start: glibc's allocator kept from hoarding memory (so
//! resident memory follows what is live), and SIGPIPE for the command-line tools.
//!
//! The data path allocates megabyte buffers (batches, packs) on many threads. By default glibc
//! grows its mmap threshold after each large free, so later buffers come from per-thread arenas
//! (up to eight per core) that it rarely gives back: a 200 MB dump then left the operator
//! tens of MiB larger. A fixed threshold sends every buffer of 1 MiB and more to mmap, returned
//! on free, and two arenas per process bound the fragmentation of the rest.

/// Buffers at least this large are mapped and unmapped on their own.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 1024 * 1024;
/// Free memory at the top of a heap kept for reuse instead of given back at once: without it,
/// every chunk freed and allocated again is a fresh page fault (half the restore's sys time).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = 8 * 1024 * 1024;
/// Malloc arenas (glibc's default is eight per core).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const ARENA_MAX: libc::c_int = 2;

/// Applies the settings; call once at start, before other threads exist.
pub fn bound_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_ARENA_MAX, ARENA_MAX);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}

/// For the command-line tools (`rewind repo`, `rewind crd`): a reader that goes away
/// (`rewind repo ls | head -1`) ends the process quietly, as it does every Unix filter,
/// instead of a panic on the next print. Not for the operator, whose sockets must survive it.
pub fn quiet_on_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: restores the default disposition of one signal; no handler runs Rust code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
