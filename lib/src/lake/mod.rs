//! The lake: what every stage shares about the tables Weir writes. It sits
//! below the pipeline declaration and the stages, above storage and Delta
//! access, so stages agree on the lake without importing one another.
//!
//! - [`contract`]: column names, partitioning and schemas of the raw,
//!   processed, quarantine, quality-metrics, runs and erasure-log tables.
//! - [`marker`]: progress markers (Delta application transactions), one
//!   type naming every app id.
//! - [`commit`]: the commit-metadata vocabulary.
//! - [`conform`]: schema comparison (what an evolved output adds or
//!   breaks) and conformance of batches to a table's types.
//! - [`location`]: table folders that must neither coincide nor nest.
//! - [`refresh`]: how a table computed from another's versions catches
//!   up (up to date, incremental, or full and why): curate decides by it,
//!   `weir plan` predicts with it.
//! - [`fault`]: crash and pause hooks of the crash tests.
//! - [`feed`]: freshly committed versions handed from one stage to the
//!   next within a run (ingest to process in `weir run`).
//! - [`state`]: Weir's cache files in a table's `_weir/` folder.

pub mod commit;
pub mod conform;
pub mod contract;
pub mod fault;
pub mod feed;
pub mod location;
pub mod marker;
pub mod refresh;
pub mod state;

pub use marker::Marker;
