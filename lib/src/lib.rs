//! Weir: declarative lakehouse batch jobs that land Azure Event Hubs Capture
//! files in Delta Lake, exactly once.
//!
//! The crate is the framework; the `weir` binary (crate `weir-jobs`) only
//! parses arguments, calls into it and maps outcomes to exit codes.
//!
//! Where things live:
//! - [`pipeline`]: the pipeline file format, `${VAR}` interpolation and
//!   validation with file/line/key-path diagnostics.
//! - [`capture`]: discovering Capture files below a source URL and decoding
//!   them into Arrow record batches.
//! - [`storage`]: turning a location (local path or object-store URL) into
//!   something that can be listed, read or opened as a Delta table.
//! - [`delta`]: Delta table access: create with change data feed, append with
//!   application transactions (`txn`) for exactly-once progress.
//! - [`ingest`]: the ingest stage (capture → raw table).
//! - [`process`]: the process stage (raw → processed, quarantine, quality
//!   metrics).
//! - [`curate`]: the curate stage (SQL models → curated and feature tables,
//!   incremental by change feed) and point-in-time feature lookups.
//! - [`maintain`]: the maintain job (retention, compaction, z-order,
//!   vacuum, checkpoints).
//! - [`report`]: the JSON run report every job prints.
//! - [`run`]: the job driver (a run's lifecycle, exit codes) and the
//!   stage jobs; [`erase`] and [`plan`] (`weir plan`) are the other jobs.
//! - [`lake`]: what the stages share about the tables (contracts, progress
//!   markers, commit metadata, schema conformance).
//! - [`error`]: the crate's error type and its exit-code classes.
//!
//! Hazard: call the async jobs from a multi-thread tokio runtime. On object
//! storage, delta-rs's checkpoint and vacuum I/O stalls on a current-thread
//! runtime until the HTTP timeout (30 s per call, measured against Azurite).

pub mod body;
pub mod capture;
pub mod curate;
pub mod dedup;
pub mod delta;
pub mod erase;
pub mod error;
pub mod expectations;
pub mod export;
pub mod ingest;
pub mod lake;
pub mod maintain;
pub mod pii;
pub mod pipeline;
pub mod plan;
pub mod process;
pub mod redact;
pub mod report;
pub mod run;
pub mod stage;
pub mod status;
pub mod storage;

pub use error::{Error, ErrorClass, Result};
