//! Made once at start: glibc's allocator kept from hoarding memory (so resident memory
//! follows what is live).
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
