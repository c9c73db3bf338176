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
//! Every job but ingest also fixes the mmap threshold at 4 MiB. glibc
//! otherwise raises it to the size of each large block freed (up to 32 MiB),
//! so the next Arrow buffers of that size come from the arenas, where the
//! pages stay after they are freed and fragment: process's peak then grows
//! with the length of the run. Fixed, on 10M events process peaked at
//! 1.24 GB instead of 1.48 GB at the same speed (1M: no change). Ingest
//! peaked ~80 MB higher with it, so ingest keeps glibc's default.
//!
//! `weir run` gets four arenas: ingest and process then allocate at once,
//! each on threads of its own, and with two arenas they queued on the
//! arenas' locks. On 1M events four took ~7% less wall and CPU time at the
//! same peak.
//!
//! `MALLOC_ARENA_MAX` and `MALLOC_MMAP_THRESHOLD_` (or `GLIBC_TUNABLES`) in
//! the environment win: glibc has already applied them, and this leaves
//! them alone.

/// Arenas when the environment does not say.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const ARENAS: libc::c_int = 2;

/// Arenas of `weir run`, whose stages overlap.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const RUN_ARENAS: libc::c_int = 4;

/// The allocator settings a job gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tuning {
    /// Ingest: default mmap threshold.
    Ingest,
    /// `weir run`: ingest and process at once.
    Run,
    /// Every other job.
    Other,
}

impl Tuning {
    /// The tuning of the job a command line names: the first argument that
    /// is not an option (nor the value of `--log` or `--log-format`).
    pub fn of(args: impl IntoIterator<Item = std::ffi::OsString>) -> Tuning {
        let mut args = args.into_iter().skip(1);
        while let Some(a) = args.next() {
            match a.to_str() {
                Some("--log" | "--log-format") => {
                    args.next();
                }
                Some(s) if s.starts_with('-') => {}
                Some("ingest") => return Tuning::Ingest,
                Some("run") => return Tuning::Run,
                _ => return Tuning::Other,
            }
        }
        Tuning::Other
    }
}

/// Blocks from this size up are mapped on their own and unmapped when freed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 4 << 20;

/// Caps glibc's malloc arenas, and but for ingest fixes its mmap
/// threshold, unless the environment already did. Called first thing in
/// `main`, before any thread exists.
pub fn tune(tuning: Tuning) {
    let fixed_mmap_threshold = tuning != Tuning::Ingest;
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
        let unset = |name: &str, tunable: &str| std::env::var_os(name).is_none() && !tunables.contains(tunable);
        let mut settings = Vec::new();
        if unset("MALLOC_ARENA_MAX", "arena_max") {
            settings.push((libc::M_ARENA_MAX, if tuning == Tuning::Run { RUN_ARENAS } else { ARENAS }));
        }
        if fixed_mmap_threshold && unset("MALLOC_MMAP_THRESHOLD_", "mmap_threshold") {
            settings.push((libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD));
        }
        for (parameter, value) in settings {
            // SAFETY: mallopt only changes allocator parameters; it is
            // called before any other thread exists, and both settings
            // affect only allocations made later.
            #[allow(unsafe_code)]
            unsafe {
                libc::mallopt(parameter, value);
            }
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = fixed_mmap_threshold;
}

#[cfg(test)]
mod tests {
    use super::Tuning;

    fn of(line: &str) -> Tuning {
        Tuning::of(line.split(' ').map(std::ffi::OsString::from))
    }

    #[test]
    fn the_job_is_found_past_the_global_options() {
        assert_eq!(of("weir ingest p.yaml"), Tuning::Ingest);
        assert_eq!(of("weir --log warn run p.yaml"), Tuning::Run);
        assert_eq!(of("weir --log=warn ingest p.yaml"), Tuning::Ingest);
        assert_eq!(of("weir --log-format json --log debug run p.yaml"), Tuning::Run);
        assert_eq!(of("weir process p.yaml"), Tuning::Other);
        // A pipeline file named like a job is not the job.
        assert_eq!(of("weir process run"), Tuning::Other);
        assert_eq!(of("weir"), Tuning::Other);
    }
}
