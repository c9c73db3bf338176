//! Crash and pause hooks for the crash and race tests: inert unless the
//! program [`arm`]s them (the `weir` binary does) and `WEIR_FAULT` or
//! `WEIR_PAUSE` is set. They sit in the lake layer so every stage reaches
//! them without importing another stage.
//!
//! Hazard: a library caller (a test, an embedding program) never aborts
//! because its environment happens to hold `WEIR_FAULT`: unarmed hooks
//! do not read it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

static ARMED: AtomicBool = AtomicBool::new(false);

/// Lets the hooks act on `WEIR_FAULT` and `WEIR_PAUSE`. Called by the
/// `weir` binary before any job runs.
pub fn arm() {
    ARMED.store(true, Ordering::SeqCst);
}

fn armed() -> bool {
    ARMED.load(Ordering::SeqCst)
}

/// Test hook: `WEIR_PAUSE=<point>:<millis>` sleeps at every hit of the
/// point, so tests can hold a job between planning and committing while
/// another one runs.
pub fn pause_point(point: &str) {
    if !armed() {
        return;
    }
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
    if !armed() {
        return;
    }
    static PLAN: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static HITS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let plan = PLAN.get_or_init(|| {
        let v = std::env::var("WEIR_FAULT").ok()?;
        let (p, n) = v.split_once(':')?;
        Some((p.to_string(), n.parse().ok()?))
    });
    if let Some((p, n)) = plan {
        if p == point && HITS.fetch_add(1, Ordering::SeqCst) + 1 == *n {
            eprintln!("WEIR_FAULT: aborting at {point} #{n}");
            std::process::abort();
        }
    }
}
