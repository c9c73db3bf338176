//! glibc's allocator, tuned once at start-up.
//!
//! glibc gives each thread that allocates an arena of its own, up to eight
//! per core. Weir's jobs allocate Arrow buffers on the async workers, the
//! blocking pool and per-core decode threads, and free them on others: each
//! arena then keeps freed pages of its own, and peak RSS grows with the
//! number of threads that ever touched a batch. Two arenas (one per core of
//! the smallest machine Weir is sized for) measured, on 1M events: process
//! 1.18 → 1.00 GB peak at the same or better wall time (less system time),
//! ingest 0.69 → 0.59 GB at the same speed; on 10M events process lost
//! ~0.6 GB. One arena cost ~10% of process's wall time.
//!
//! `MALLOC_ARENA_MAX` (or `GLIBC_TUNABLES`) in the environment wins: glibc
//! has already applied it, and this leaves it alone.

/// Arenas when the environment does not say.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const ARENAS: libc::c_int = 2;

/// Caps glibc's malloc arenas unless the environment already did. Called
/// first thing in `main`, before any thread exists.
pub fn cap_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let set = |name: &str| std::env::var_os(name).is_some();
        if set("MALLOC_ARENA_MAX") || std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("arena_max")) {
            return;
        }
        // SAFETY: mallopt only changes allocator parameters; it is called
        // before any other thread exists, and M_ARENA_MAX affects only
        // arenas created later.
        #[allow(unsafe_code)]
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, ARENAS);
        }
    }
}
