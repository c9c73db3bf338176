//! `weir-capture-gen`: writes a synthetic Event Hubs Capture folder of JSON
//! user-interaction events, for trying pipelines out and for benchmarks.
//!
//! ```text
//! weir-capture-gen --out DIR [--events N] [--partitions P] [--events-per-file K]
//!     [--window-secs S] [--codec null|deflate|snappy|zstd|mixed] [--seed S]
//!     [--start RFC3339] [--defect-ppm X] [--duplicate-ppm Y] [--empty-every E]
//! ```
//!
//! Each partition gets `ceil(N / (P * K))` windows of `K` events, so at least
//! `N` events are written (fewer when `--empty-every` makes some windows
//! header-only). Prints one JSON line with what was written. The same
//! arguments always give byte-identical files.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use clap::{Parser, ValueEnum};
use weir::capture::testgen::{generate_dataset, Codec, DatasetSpec};

/// Write a synthetic Event Hubs Capture folder.
#[derive(Debug, Parser)]
#[command(name = "weir-capture-gen", version)]
struct Cli {
    /// Root folder of the capture files (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Number of events to write at least.
    #[arg(long, default_value_t = 10_000)]
    events: u64,
    /// Number of partitions.
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// Events per capture file.
    #[arg(long, default_value_t = 500)]
    events_per_file: u32,
    /// Length of a capture window in seconds.
    #[arg(long, default_value_t = 300)]
    window_secs: i64,
    /// Container codec; `mixed` cycles all four per file.
    #[arg(long, value_enum, default_value_t = CodecArg::Mixed)]
    codec: CodecArg,
    /// Seed of all randomness.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Start of the first window (RFC 3339).
    #[arg(long, default_value = "2026-11-01T08:00:00Z")]
    start: String,
    /// Share of malformed JSON bodies, per million.
    #[arg(long, default_value_t = 0)]
    defect_ppm: u32,
    /// Share of re-sent (duplicate) events, per million.
    #[arg(long, default_value_t = 0)]
    duplicate_ppm: u32,
    /// Every Nth window of a partition is header-only (0 = never).
    #[arg(long, default_value_t = 0)]
    empty_every: u32,
}

/// `--codec` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum CodecArg {
    Null,
    Deflate,
    Snappy,
    Zstd,
    Mixed,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.partitions == 0 || cli.events_per_file == 0 {
        bail!("--partitions and --events-per-file must be at least 1");
    }
    if cli.window_secs <= 0 {
        bail!("--window-secs must be positive");
    }
    let codecs = match cli.codec {
        CodecArg::Null => vec![Codec::Null],
        CodecArg::Deflate => vec![Codec::Deflate],
        CodecArg::Snappy => vec![Codec::Snappy],
        CodecArg::Zstd => vec![Codec::Zstd],
        CodecArg::Mixed => Codec::ALL.to_vec(),
    };
    let start: DateTime<Utc> = DateTime::parse_from_rfc3339(&cli.start)
        .with_context(|| format!("--start {:?} is not an RFC 3339 time", cli.start))?
        .with_timezone(&Utc);
    let per_window = u64::from(cli.partitions) * u64::from(cli.events_per_file);
    let windows =
        u32::try_from(cli.events.div_ceil(per_window).max(1)).context("too many windows")?;

    let spec = DatasetSpec {
        partitions: cli.partitions,
        windows,
        window_secs: cli.window_secs,
        events_per_file: cli.events_per_file,
        start,
        seed: cli.seed,
        codecs,
        empty_every: cli.empty_every,
        defect_rate_ppm: cli.defect_ppm,
        duplicate_rate_ppm: cli.duplicate_ppm,
    };
    let began = Instant::now();
    let summary = generate_dataset(&cli.out, &spec)
        .with_context(|| format!("generating capture files in {}", cli.out.display()))?;
    let line = serde_json::json!({
        "out": cli.out.display().to_string(),
        "files": summary.files,
        "bytes": summary.bytes,
        "events": summary.events,
        "header_only_files": summary.header_only_files,
        "malformed": summary.malformed,
        "duplicates": summary.duplicates,
        "per_partition_last_sequence": summary.per_partition_last_sequence,
        "seconds": (began.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
    });
    println!("{line}");
    Ok(())
}
