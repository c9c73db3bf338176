//! The `curate:` section of a pipeline file.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The name models use for the pipeline's processed table.
pub const PROCESSED: &str = "processed";

/// `curate:` — curated tables computed by SQL from the processed table.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CurateConfig {
    /// Curated tables, computed in this order (a table may read the ones
    /// declared before it).
    #[serde(default)]
    pub tables: Vec<CuratedTableConfig>,
    /// Other Delta tables the models may read by name (dimensions, rates).
    /// Their changes do not trigger a recompute: run `weir curate
    /// --full-refresh` after changing one.
    #[serde(default)]
    pub references: Vec<ReferenceConfig>,
    /// Memory the models' queries may hold at once, in MiB. Sorts,
    /// aggregations and windows beyond it spill to temporary files; the
    /// build side of a hash join cannot, and a model needing more fails
    /// naming this key. Rows computed and diffed are held besides.
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u64,
}

fn default_memory_mb() -> u64 {
    512
}

impl Default for CurateConfig {
    fn default() -> Self {
        CurateConfig { tables: Vec::new(), references: Vec::new(), memory_mb: default_memory_mb() }
    }
}

/// A Delta table a model reads by name.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceConfig {
    /// The name models use in SQL.
    pub name: String,
    /// Table location: a local path or an object-store URL.
    pub path: String,
}

/// One curated table: a SQL model, its key and how it is kept up to date.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CuratedTableConfig {
    /// Table name: the name other models use in SQL, and part of its
    /// progress marker (`weir/<pipeline>/curate/<name>`).
    pub name: String,
    /// Table location: a local path or an object-store URL.
    pub path: String,
    /// Stored as the table description when it is created.
    #[serde(default)]
    pub description: Option<String>,
    /// The model, inline. Reads `processed`, earlier curated tables and
    /// references by name. Identifiers are case-sensitive (`userId`).
    #[serde(default)]
    pub sql: Option<String>,
    /// The model in a `.sql` file, relative to the pipeline file.
    #[serde(default)]
    pub sql_file: Option<PathBuf>,
    /// Output columns that identify a row: at most one row per key, never
    /// null. Changed rows are merged on it.
    pub key: Vec<String>,
    /// Partition columns of the table (output columns).
    #[serde(default)]
    pub partition_by: Vec<String>,
    /// Columns `weir maintain` clusters files by (z-order).
    #[serde(default)]
    pub zorder_by: Vec<String>,
    /// For feature tables: the output timestamp column that says from when a
    /// row's values hold. The other key columns are the entity; `weir
    /// features` joins on them point-in-time.
    #[serde(default)]
    pub as_of: Option<String>,
    /// How a run finds what to recompute. Absent: the whole model is
    /// recomputed whenever the source changed.
    #[serde(default)]
    pub incremental: Option<IncrementalConfig>,
}

/// Incremental recompute: the source's change feed names which output rows
/// can have changed.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IncrementalConfig {
    /// The table whose change feed drives the recompute: `processed` or a
    /// curated table declared earlier.
    #[serde(default = "default_source")]
    pub source: String,
    /// Scope columns. The model must compute each output row only from
    /// source rows with the same values in these columns (as a GROUP BY on
    /// them does); a run recomputes exactly the values its changes touch.
    pub by: Vec<ScopeColumn>,
}

fn default_source() -> String {
    "processed".to_string()
}

/// One scope column: an output column and the source column it equals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeColumn {
    /// The column of the model's output.
    pub column: String,
    /// The column of the source it is taken from.
    pub source: String,
}

/// `userId` (same name in source and output) or `{column: date, source: event_date}`.
#[derive(Deserialize, Serialize)]
#[serde(untagged)]
enum ScopeColumnRepr {
    Same(String),
    Mapped { column: String, source: String },
}

impl<'de> Deserialize<'de> for ScopeColumn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Mapped {
            column: String,
            source: String,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Same(String),
            Mapped(Mapped),
        }
        match Repr::deserialize(d).map_err(|_| {
            serde::de::Error::custom("expected a column name, or {column: OUTPUT_COLUMN, source: SOURCE_COLUMN}")
        })? {
            Repr::Same(c) => Ok(ScopeColumn { column: c.clone(), source: c }),
            Repr::Mapped(m) => Ok(ScopeColumn { column: m.column, source: m.source }),
        }
    }
}

impl Serialize for ScopeColumn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.column == self.source {
            ScopeColumnRepr::Same(self.column.clone()).serialize(s)
        } else {
            ScopeColumnRepr::Mapped { column: self.column.clone(), source: self.source.clone() }.serialize(s)
        }
    }
}
