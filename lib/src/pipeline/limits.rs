//! The bounds on every size, count and depth a pipeline declares.
//!
//! Each number a user writes becomes a buffer, a queue width, a duration or
//! a loop count somewhere; one typed a few digits too long must be a clear
//! configuration problem at validation, not memory growing until the
//! process is killed or an overflow deep in a stage. The bounds are well
//! above any sensible setting and are listed in
//! `docs/reference/pipeline-keys.md` (Limits).

use super::LoadedPipeline;

/// Largest pipeline file, body schema or SQL file read, in bytes (4 MiB).
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;
/// Deepest nesting of mappings and sequences in a pipeline file.
pub const MAX_NESTING: usize = 32;
/// `ingest.commit_bytes` (4 GiB): pending rows of this many capture bytes
/// are held in memory.
pub const MAX_COMMIT_BYTES: u64 = 4 * 1024 * 1024 * 1024;
/// `ingest.commit_events`.
pub const MAX_COMMIT_EVENTS: u64 = 100_000_000;
/// `ingest.decode_parallelism` and `ingest.fetch_parallelism`: each slot
/// holds a chunk or a file's first 8 MB in memory.
pub const MAX_PARALLELISM: usize = 256;
/// `ingest.lookback_hours` and the vacuum retentions (ten years).
pub const MAX_HOURS: u64 = 87_600;
/// `process.raw_versions_per_commit`.
pub const MAX_RAW_VERSIONS_PER_COMMIT: u64 = 10_000;
/// `process.dedup.lookback_days` (ten years).
pub const MAX_LOOKBACK_DAYS: u32 = 3_650;
/// `target_file_size_mb` of `maintain:` (10 GiB).
pub const MAX_TARGET_FILE_SIZE_MB: u64 = 10_240;
/// `curate.memory_mb` and `maintain.memory_mb` (1 TiB).
pub const MAX_MEMORY_MB: u64 = 1024 * 1024;
/// `retention.days` of a `maintain:` table policy (a hundred years).
pub const MAX_RETENTION_DAYS: u64 = 36_500;

/// Every number of the pipeline outside its bounds, as (key path, message).
pub fn check(loaded: &LoadedPipeline) -> Vec<(String, String)> {
    let p = &loaded.pipeline;
    let mut problems = Vec::new();
    // Lower bounds (greater than 0) are checked with each section.
    let mut bounded = |key: &str, value: u64, max: u64| {
        if value > max {
            problems.push((key.to_string(), format!("must be at most {max}, not {value}")));
        }
    };
    let parallelism = MAX_PARALLELISM as u64;
    bounded("ingest.commit_bytes", p.ingest.commit_bytes, MAX_COMMIT_BYTES);
    bounded("ingest.commit_events", p.ingest.commit_events, MAX_COMMIT_EVENTS);
    bounded("ingest.commit_memory_mb", p.ingest.commit_memory_mb, MAX_COMMIT_BYTES / (1024 * 1024));
    bounded("ingest.decode_parallelism", p.ingest.decode_parallelism as u64, parallelism);
    bounded("ingest.fetch_parallelism", p.ingest.fetch_parallelism as u64, parallelism);
    bounded("ingest.lookback_hours", p.ingest.lookback_hours, MAX_HOURS);
    if let Some(process) = &p.process {
        let versions = process.raw_versions_per_commit;
        bounded("process.raw_versions_per_commit", versions, MAX_RAW_VERSIONS_PER_COMMIT);
    }
    for unit in loaded.process_units() {
        if let Some(d) = &unit.process.dedup {
            bounded(&format!("{}.dedup.lookback_days", unit.at), d.lookback_days.into(), MAX_LOOKBACK_DAYS.into());
        }
    }
    if let Some(c) = &p.curate {
        bounded("curate.memory_mb", c.memory_mb, MAX_MEMORY_MB);
    }
    if let Some(m) = &p.maintain {
        bounded("maintain.target_file_size_mb", m.target_file_size_mb, MAX_TARGET_FILE_SIZE_MB);
        bounded("maintain.vacuum_retention_hours", m.vacuum_retention_hours, MAX_HOURS);
        bounded("maintain.zorder_new_percent", m.zorder_new_percent, 100);
        bounded("maintain.memory_mb", m.memory_mb, MAX_MEMORY_MB);
        for (name, policy) in &m.tables {
            let at = format!("maintain.tables.{name}");
            if let Some(size) = policy.target_file_size_mb {
                bounded(&format!("{at}.target_file_size_mb"), size, MAX_TARGET_FILE_SIZE_MB);
            }
            if let Some(hours) = policy.vacuum_retention_hours {
                bounded(&format!("{at}.vacuum_retention_hours"), hours, MAX_HOURS);
            }
            if let Some(r) = &policy.retention {
                bounded(&format!("{at}.retention.days"), r.days, MAX_RETENTION_DAYS);
            }
        }
    }
    problems
}
