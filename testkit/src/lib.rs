//! Weir's test kit: what tests, samples and benchmarks need to make input
//! for Weir, kept out of the `weir` library so production code never links
//! it.
//!
//! - [`capture`]: synthetic Event Hubs Capture files (Capture's container
//!   layout and schema, every codec, both union styles), whole datasets of
//!   JSON user events with malformed bodies and re-sends, and the ways
//!   files get damaged.
//! - [`sensor`]: industrial sensor messages (100-key JSON documents with
//!   variable readings) for the sensor example pipeline.
//! - [`env`]: commands and processes cleaned of a shell's `WEIR_*`,
//!   `AZURE_*` and `RUST_LOG`.
//! - [`fs`]: copying a lake as it stands.

pub mod capture;
pub mod env;
pub mod fs;
pub mod sensor;
