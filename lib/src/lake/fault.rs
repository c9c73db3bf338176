//! Crash and pause hooks for the crash and race tests: inert unless
//! `WEIR_FAULT` or `WEIR_PAUSE` is set. They sit in the lake layer so every
//! stage reaches them without importing another stage.

use std::sync::OnceLock;

/// Test hook: `WEIR_PAUSE=<point>:<millis>` sleeps at every hit of the
/// point, so tests can hold a job between planning and committing while
/// another one runs.
pub fn pause_point(point: &str) {
    static PLAN: OnceLock<Option<(String, u64)>> = OnceLock::new();
    let plan = PLAN.get_or_init(|| {
        let v = std::env::var("WEIR_PAUSE").ok()?;
        let (p, ms) = v.split_once(':')?;
        Some((p.to_string(), ms.parse().ok()?))
    });
    if let Some((p, ms)) = plan {
        if p == point {
            std::thread::sleep(std::time::Duration::from_millis(*ms));
        }
    }
}

/// Test hook: `WEIR_FAULT=<point>:<n>` aborts the process (as a kill -9
/// would, no cleanup) the n-th time `point` is reached. Used by the crash
/// tests; inert otherwise.
pub fn fault_point(point: &str) {
    static PLAN: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static HITS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let plan = PLAN.get_or_init(|| {
        let v = std::env::var("WEIR_FAULT").ok()?;
        let (p, n) = v.split_once(':')?;
        Some((p.to_string(), n.parse().ok()?))
    });
    if let Some((p, n)) = plan {
        if p == point && HITS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == *n {
            eprintln!("WEIR_FAULT: aborting at {point} #{n}");
            std::process::abort();
        }
    }
}
