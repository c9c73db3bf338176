//! `weir`: the jobs a scheduler launches.
//!
//! Parse → validate → run → report → exit code. All work happens in the
//! `weir` library; this file only maps it onto a command line.
//!
//! Exit codes (a contract with schedulers, see README.md):
//! - 0: success, including "nothing new to do";
//! - 1: internal error (a defect in Weir; retrying may or may not help);
//! - 2: invalid usage or configuration (do not retry);
//! - 3: data problem: some input needs a human (corrupt file, failed rule);
//!   everything that could be done was done;
//! - 75: retryable failure (storage unavailable, lost a commit race).

mod alloc;
mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    // Before anything allocates on another thread; see `alloc`.
    alloc::tune(alloc::Tuning::of(std::env::args_os()));
    cli::main()
}
