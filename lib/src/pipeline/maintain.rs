//! The `maintain:` section of a pipeline file.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `maintain:` — per-table upkeep. Every table of the pipeline is maintained
/// with the defaults unless its entry under `tables` says otherwise.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MaintainConfig {
    /// Compaction target: files are bin-packed up to this size.
    #[serde(default = "default_target_file_size_mb")]
    pub target_file_size_mb: u64,
    /// Files no version younger than this needs are deleted by vacuum.
    #[serde(default = "default_vacuum_retention_hours")]
    pub vacuum_retention_hours: u64,
    /// Per table (`raw`, `processed`, `quarantine`, `quality_metrics`, or a
    /// curated table's name).
    #[serde(default)]
    pub tables: BTreeMap<String, TablePolicy>,
    /// A z-ordered partition is z-ordered again once the files written
    /// since hold at least this share (percent) of its bytes.
    #[serde(default = "default_zorder_new_percent")]
    pub zorder_new_percent: u64,
    /// Memory a z-order's sort may hold, in MiB, before it spills to
    /// temporary files.
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u64,
}

impl Default for MaintainConfig {
    fn default() -> Self {
        MaintainConfig {
            target_file_size_mb: default_target_file_size_mb(),
            vacuum_retention_hours: default_vacuum_retention_hours(),
            tables: BTreeMap::new(),
            zorder_new_percent: default_zorder_new_percent(),
            memory_mb: default_memory_mb(),
        }
    }
}

fn default_memory_mb() -> u64 {
    512
}

fn default_zorder_new_percent() -> u64 {
    10
}

fn default_target_file_size_mb() -> u64 {
    128
}

fn default_vacuum_retention_hours() -> u64 {
    168
}

fn yes() -> bool {
    true
}

/// What maintenance one table gets.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TablePolicy {
    /// Compact small files (partitions already compacted are skipped).
    #[serde(default = "yes")]
    pub optimize: bool,
    /// Cluster files by these columns (z-order) instead of plain compaction,
    /// on partitions holding more than one file. Curated tables default to
    /// their `zorder_by`.
    #[serde(default)]
    pub zorder_by: Option<Vec<String>>,
    /// Overrides the compaction target.
    #[serde(default)]
    pub target_file_size_mb: Option<u64>,
    /// Delete unreferenced files (full mode: orphans and change-feed files
    /// too).
    #[serde(default = "yes")]
    pub vacuum: bool,
    /// Overrides the vacuum retention.
    #[serde(default)]
    pub vacuum_retention_hours: Option<u64>,
    /// Write a checkpoint and remove expired log files.
    #[serde(default = "yes")]
    pub checkpoint: bool,
    /// Delete rows older than an age (a normal Delta delete).
    #[serde(default)]
    pub retention: Option<RowRetention>,
}

impl Default for TablePolicy {
    fn default() -> Self {
        TablePolicy {
            optimize: true,
            zorder_by: None,
            target_file_size_mb: None,
            vacuum: true,
            vacuum_retention_hours: None,
            checkpoint: true,
            retention: None,
        }
    }
}

/// Rows older than `days` on `column` (a timestamp or date) are deleted.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RowRetention {
    /// The time column.
    pub column: String,
    /// Age in days.
    pub days: u64,
}

impl super::LoadedPipeline {
    /// The vacuum retention `weir maintain` applies to a table of the
    /// pipeline, in hours; `None` when its policy turns vacuum off (or the
    /// pipeline writes no such table).
    pub fn vacuum_retention_hours(&self, table: &str) -> Option<u64> {
        if !self.tables_written().iter().any(|t| t.name == table) {
            return None;
        }
        let config = self.pipeline.maintain.clone().unwrap_or_default();
        let policy = config.tables.get(table).cloned().unwrap_or_default();
        policy.vacuum.then(|| policy.vacuum_retention_hours.unwrap_or(config.vacuum_retention_hours))
    }
}
