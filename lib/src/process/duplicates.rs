//! Dedup of a range's kept rows: first within the range (lineage-aware, so
//! a repair run counts what the original run counted), then against the
//! keys the processed table holds within `dedup.lookback_days` of the
//! range's oldest event date.
//!
//! Stored keys are read once per run (again only when a range reaches
//! further back); the keys of the rows the run writes are added to them.

use std::sync::Arc;

use deltalake::arrow::array::{AsArray, RecordBatch};
use deltalake::arrow::compute::{cast, concat_batches};
use deltalake::arrow::datatypes::{DataType, Date32Type, Field, Schema};
use deltalake::DeltaTable;
use futures::StreamExt as _;

use super::arrow_err;
use super::background::Background;
use super::metrics::RuleFigures;
use super::output::Outputs;
use super::select::{filter_parts, flagged};
use crate::dedup::{self, DedupConfig, StoredIndex};
use crate::expectations;
use crate::lake::contract::{DEDUP_RULE, PROCESSED_PARTITION_COLUMN};
use crate::report::RuleVerdict;
use crate::{Error, Result};

/// Kept rows of a range, one batch per raw batch, with the raw commit
/// version of each row and, with dedup, its key hash.
pub(super) struct KeptRows {
    pub(super) batches: Vec<RecordBatch>,
    pub(super) versions: Vec<i64>,
    /// One per row; empty without dedup.
    pub(super) hashes: Vec<Option<u128>>,
}

impl KeptRows {
    /// The rows from raw versions after `progress` (all for `None`): what a
    /// table whose marker is `progress` lacks.
    pub(super) fn after(self, progress: Option<i64>) -> Result<KeptRows> {
        let Some(p) = progress else { return Ok(self) };
        let newer: Vec<bool> = self.versions.iter().map(|v| *v > p).collect();
        let hashes = if self.hashes.is_empty() { self.hashes } else { flagged(&self.hashes, &newer) };
        Ok(KeptRows { batches: filter_parts(self.batches, &newer)?, versions: flagged(&self.versions, &newer), hashes })
    }

    /// The number of rows.
    pub(super) fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// The processed table's keys from an event date on, with the keys of
/// what this run wrote since they were read.
pub(super) struct StoredKeys {
    /// The oldest event date whose keys are held.
    from: i32,
    index: StoredIndex,
}

impl StoredKeys {
    /// Adds the keys of `rows`, written to the processed table.
    pub(super) fn remember(&mut self, d: &DedupConfig, rows: &KeptRows) -> Result<()> {
        let mut offset = 0;
        for part in &rows.batches {
            let indices = d
                .stored_columns()
                .iter()
                .map(|n| part.schema().index_of(n))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(arrow_err("dedup keys"))?;
            let n = part.num_rows();
            let projected = part.project(&indices).map_err(arrow_err("dedup keys"))?;
            self.index.add_hashed(&projected, &rows.hashes[offset..offset + n]).map_err(Error::Internal)?;
            offset += n;
        }
        Ok(())
    }
}

/// What dedup leaves of a range's kept rows, and what it found.
pub(super) struct Deduplicated {
    pub(super) kept: KeptRows,
    /// Rows dropped as duplicates, within the range and of stored rows.
    pub(super) duplicates: u64,
    /// Rows the table holds already (written by an interrupted run).
    pub(super) already_written: u64,
    /// `keep: latest` found newer copies of stored rows: merge, not append.
    pub(super) replacing: bool,
    /// The oldest event date whose stored keys were consulted: a merge must
    /// see every stored row the keys came from.
    pub(super) merge_from: Option<i32>,
    /// The dedup rule's figures; none without dedup.
    pub(super) figures: Option<RuleFigures>,
}

impl Deduplicated {
    /// A pipeline without dedup keeps every row.
    pub(super) fn without_dedup(kept: KeptRows) -> Deduplicated {
        Deduplicated { kept, duplicates: 0, already_written: 0, replacing: false, merge_from: None, figures: None }
    }
}

/// Drops the duplicates of `kept` by `d`: within the range, then against
/// the stored keys, which are (re)read first when this range reaches
/// further back than they do. Reading them waits for the writes in flight.
pub(super) async fn drop_duplicates(
    d: &DedupConfig,
    kept: KeptRows,
    stored: &mut Option<StoredKeys>,
    outs: &mut Background<Outputs>,
) -> Result<Deduplicated> {
    // Dedup reads only its own columns, joined (small); the rows
    // themselves are filtered once, batch by batch.
    let tagged = dedup_columns(&kept.batches, d)?;
    // Keys are hashed once; the index filters and records by hash.
    let hashes = dedup::key_hashes(&tagged, d).map_err(Error::Internal)?;
    let (mut keep, within) = dedup::within_batch_mask(&tagged, &hashes, d).map_err(Error::Internal)?;
    let oldest = tagged
        .column_by_name(PROCESSED_PARTITION_COLUMN)
        .and_then(|c| c.as_primitive_opt::<Date32Type>())
        .and_then(|a| a.iter().zip(&keep).filter_map(|(date, k)| date.filter(|_| *k)).min());
    if let Some(oldest) = oldest {
        reach_back(d, oldest, stored, outs).await?;
    }
    // The merge must see every stored row the keys came from.
    let merge_from = oldest.and(stored.as_ref().map(|s| s.from));
    let counts = match stored.as_mut() {
        Some(s) => s.index.filter_mask(&tagged, &hashes, &mut keep).map_err(Error::Internal)?,
        None => dedup::DedupCounts::default(),
    };
    let duplicates = within + counts.against_table;
    let figures = RuleFigures {
        rule: DEDUP_RULE.to_string(),
        expression: Some(format!("first of each ({})", d.key.join(", "))),
        action: expectations::Action::Drop,
        checked: tagged.num_rows() as u64,
        failed: duplicates,
        max_failure_rate: None,
        outcome: if duplicates == 0 { RuleVerdict::Passed } else { RuleVerdict::Dropped },
    };
    Ok(Deduplicated {
        kept: KeptRows {
            batches: filter_parts(kept.batches, &keep)?,
            versions: flagged(&kept.versions, &keep),
            hashes: flagged(&hashes, &keep),
        },
        duplicates,
        already_written: counts.already_written,
        replacing: counts.replacing > 0,
        merge_from,
        figures: Some(figures),
    })
}

/// Makes `stored` hold the keys from `oldest - lookback_days` on, reading
/// them when it holds none or fewer. Without a processed table (a dry run
/// before the first write) there is nothing to read.
async fn reach_back(
    d: &DedupConfig,
    oldest: i32,
    stored: &mut Option<StoredKeys>,
    outs: &mut Background<Outputs>,
) -> Result<()> {
    let from = oldest - d.lookback_days as i32;
    if stored.as_ref().is_some_and(|s| s.from <= from) {
        return Ok(());
    }
    // Reading stored keys needs the previous write to have landed.
    if let Some(t) = &outs.get().await?.processed.table {
        *stored = Some(StoredKeys { from, index: stored_keys(t, d, oldest).await? });
    }
    Ok(())
}

/// Indexes the stored keys and lineage within the dedup lookback, batch by
/// batch as the scan gives them (never all of their columns at once).
async fn stored_keys(table: &DeltaTable, dedup: &DedupConfig, oldest: i32) -> Result<StoredIndex> {
    let ctx = expectations::session();
    let df_err = |e: deltalake::datafusion::error::DataFusionError| {
        let url = crate::storage::redact(table.table_url().as_str());
        Error::query(&url, &e, || Error::Internal(format!("reading keys of {url}: {e}")))
    };
    table.update_datafusion_session(&ctx.state()).map_err(|e| Error::delta(table.table_url(), e))?;
    let provider = table.table_provider().await.map_err(df_err)?;
    ctx.register_table("processed", provider).map_err(df_err)?;
    let cols: Vec<String> = dedup.stored_columns().iter().map(|k| format!("\"{}\"", k.replace('"', "\"\""))).collect();
    let from =
        chrono::NaiveDate::from_num_days_from_ce_opt(oldest - dedup.lookback_days as i32 + 719_163).unwrap_or_default();
    let sql =
        format!("SELECT {} FROM processed WHERE \"{PROCESSED_PARTITION_COLUMN}\" >= DATE '{from}'", cols.join(", "));
    let mut batches = ctx.sql(&sql).await.map_err(df_err)?.execute_stream().await.map_err(df_err)?;
    let mut index = StoredIndex::new(dedup);
    let mut pending = Vec::new();
    while let Some(b) = batches.next().await {
        let b = b.map_err(df_err)?;
        // Scans return view types; the key converter wants the batch's types.
        let columns = b
            .columns()
            .iter()
            .map(|c| match c.data_type() {
                DataType::Utf8View => cast(c, &DataType::Utf8),
                DataType::BinaryView => cast(c, &DataType::Binary),
                _ => Ok(c.clone()),
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(arrow_err("stored keys"))?;
        let fields: Vec<Field> = b
            .schema()
            .fields()
            .iter()
            .zip(&columns)
            .map(|(f, c)| Field::new(f.name(), c.data_type().clone(), true))
            .collect();
        let b = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(arrow_err("stored keys"))?;
        index.load_batch(&b, &mut pending).map_err(Error::Internal)?;
    }
    index.finish_load(pending);
    Ok(index)
}

/// The columns dedup reads (key, order, lineage, event date) of the kept
/// rows, in one batch.
fn dedup_columns(parts: &[RecordBatch], d: &DedupConfig) -> Result<RecordBatch> {
    let mut names = d.stored_columns();
    for c in d.order_by.iter().map(String::as_str).chain([PROCESSED_PARTITION_COLUMN]) {
        if !names.iter().any(|n| n == c) {
            names.push(c.to_string());
        }
    }
    let schema = parts.first().map(RecordBatch::schema).ok_or_else(|| Error::Internal("no kept rows batch".into()))?;
    let indices = names
        .iter()
        .map(|n| schema.index_of(n))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(arrow_err("dedup columns"))?;
    let projected = parts
        .iter()
        .map(|p| p.project(&indices))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(arrow_err("dedup columns"))?;
    concat_batches(&projected[0].schema(), &projected).map_err(arrow_err("dedup columns"))
}
