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
use weir_testkit::capture::{generate_dataset, Codec, DatasetSpec};

/// Write a synthetic Event Hubs Capture folder.
#[derive(Debug, Parser)]
#[command(name = "weir-capture-gen", version)]
struct Cli {
    /// Root folder of the capture files (created if missing), or a storage
    /// URL (`az://container/path`): the files are written to a temporary
    /// folder, then uploaded. With `AZURE_STORAGE_USE_EMULATOR=true` the
    /// container is created in Azurite first.
    #[arg(long)]
    out: String,
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
    let windows = u32::try_from(cli.events.div_ceil(per_window).max(1)).context("too many windows")?;

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
    let remote = cli.out.contains("://");
    let folder = if remote {
        std::env::temp_dir().join(format!("weir-capture-gen-{}", uuid::Uuid::new_v4().simple()))
    } else {
        PathBuf::from(&cli.out)
    };
    let summary = generate_dataset(&folder, &spec)
        .with_context(|| format!("generating capture files in {}", folder.display()))?;
    if remote {
        let uploaded = upload(&folder, &cli.out);
        let _ = std::fs::remove_dir_all(&folder);
        uploaded?;
    }
    let line = serde_json::json!({
        "out": weir::storage::redact(&cli.out),
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

/// Uploads every file below `folder` to the storage URL `url`, keeping
/// relative names.
fn upload(folder: &std::path::Path, url: &str) -> anyhow::Result<()> {
    use futures::{StreamExt as _, TryStreamExt as _};
    use object_store::ObjectStoreExt as _;
    let location = weir::storage::Location::parse(url).map_err(|e| anyhow::anyhow!(e))?;
    if std::env::var("AZURE_STORAGE_USE_EMULATOR").is_ok_and(|v| v == "true") && url.starts_with("az://") {
        let endpoint = std::env::var("AZURITE_BLOB_STORAGE_URL").unwrap_or_else(|_| "http://127.0.0.1:10000".into());
        let container = location.url().host_str().unwrap_or_default().to_string();
        weir::storage::emulator::create_container(&endpoint, &container).map_err(|e| anyhow::anyhow!(e))?;
    }
    let (store, prefix) = location.object_store()?;
    let mut files = Vec::new();
    let mut dirs = vec![folder.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d)? {
            let p = entry?.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|e| e == "avro") {
                files.push(p);
            }
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(
        futures::stream::iter(files.into_iter().map(|p| {
            let store = store.clone();
            let name = p.strip_prefix(folder).map(|r| r.to_string_lossy().replace('\\', "/")).unwrap_or_default();
            let target = object_store::path::Path::from(format!("{}/{name}", prefix.as_ref()));
            async move {
                let bytes = tokio::fs::read(&p).await?;
                store
                    .put(&target, bytes.into())
                    .await
                    .map_err(|e| anyhow::anyhow!("uploading {name}: {}", weir::storage::scrub(&e.to_string())))?;
                Ok::<_, anyhow::Error>(())
            }
        }))
        .buffer_unordered(16)
        .try_collect::<Vec<()>>(),
    )?;
    Ok(())
}
