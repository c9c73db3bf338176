//! The erase job: right-to-be-forgotten across every table of a pipeline.
//!
//! A data subject is named by a subject-key field of the body schema (a
//! top-level field marked `"weir.pii": "subject"`) and a value, e.g.
//! `userId=u-42`. One run erases any number of subjects:
//!
//! 1. **Catch up.** The process stage runs first, so every raw row already
//!    ingested is processed. Raw rows are then erased *at the raw version
//!    process has consumed* (`M`): process reads raw through the change feed,
//!    and a row deleted from raw before process read it would come back from
//!    the old file. Events ingested by a concurrent ingest after `M` are
//!    events after the request, not part of it.
//! 2. **Find.** Rows are found by their table's own lineage keys:
//!    - raw by the `subject_<field>` column ingest fills; rows where it is
//!      null (a body that is not a JSON object, or a row ingested before the
//!      column existed) by reading their bodies only;
//!    - processed by the subject column (hashed with the pipeline key when a
//!      `hash` rule covers it) or by lineage to a raw row found;
//!    - quarantine by lineage or by the subject in the body.
//! 3. **Delete.** One merge per table deletes the rows by lineage keys
//!    (partition, sequence number, date partition). No subject value enters
//!    the Delta log: the commits carry the join predicate, not literals.
//! 4. **Recompute.** Process runs again (it consumes the raw delete) and the
//!    curate stage recomputes curated rows from processed's change feed: the
//!    subject's aggregates disappear and tables keyed otherwise are
//!    recomputed without the subject. A curated row still holding the subject
//!    afterwards (a model reading beyond processed) is deleted by key and
//!    reported.
//! 5. **Log.** One row per subject and table goes to the erasure log table:
//!    the subject only as the HMAC-SHA256 of its value under the pipeline's
//!    PII key, the table, its delete version, rows deleted, and when the data
//!    becomes physically unreadable.
//! 6. **Purge** (`--purge`). Delta keeps deleted rows in removed files and
//!    change-data files until a vacuum. A purge deletes them now and replaces
//!    the log history with a checkpoint: time travel to any version before the
//!    purge is lost. Without a purge the report gives, per table, the time
//!    after which the next `weir maintain` vacuum removes them.
//!
//! Hazards: erase writes to every table of the pipeline; run it where
//! process, curate and maintain of the same pipeline do not run at the same
//! time (one writer per table). Ingest may run beside it. Statistics in old
//! Delta log entries (min/max of a column per file) may hold a subject's
//! value until those entries expire (`delta.logRetentionDuration`) or a
//! purge removes them.

mod purge;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use deltalake::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use deltalake::arrow::compute::{cast, concat_batches, filter_record_batch};
use deltalake::arrow::datatypes::{DataType, Int64Type};
use deltalake::DeltaTable;
use futures::StreamExt as _;

use crate::body::framing::{envelope_columns, Envelope, Framing};
use crate::body::subject::{self, SubjectMatcher};
use crate::curate::CurateOptions;
use crate::delta::{self, TableSpec, WriteOptions};
use crate::lake::commit::{self, CommitInfo};
use crate::lake::contract::{
    erasure_log_schema, PROCESSED_PARTITION_COLUMN, QUARANTINE_PARTITION_COLUMN, RAW_PARTITION_COLUMN,
};
use crate::lake::fault::fault_point;
use crate::pii::PiiAction;
use crate::pipeline::{CuratedTableConfig, LoadedPipeline};
use crate::process::ProcessOptions;
use crate::report::{ErasedTable, ErasureHow, ErasureReport, Stage, StageReport, TableWrite};
use crate::storage::Location;
use crate::{Error, Result};

/// One data subject: a subject-key field and its value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Subject {
    /// The body field, e.g. `userId`.
    pub field: String,
    /// Its value as text (numbers in their JSON spelling).
    pub value: String,
}

impl Subject {
    /// Parses `field=value`; a bare value needs `default_field`.
    pub fn parse(text: &str, default_field: Option<&str>) -> std::result::Result<Subject, String> {
        match (text.split_once('='), default_field) {
            (Some((field, value)), _) if !field.is_empty() && !field.contains(char::is_whitespace) => {
                if value.is_empty() {
                    return Err(format!("{text:?}: the value after '=' is empty"));
                }
                Ok(Subject { field: field.to_string(), value: value.to_string() })
            }
            (_, Some(field)) if !text.is_empty() => Ok(Subject { field: field.to_string(), value: text.to_string() }),
            _ => Err(format!("{text:?} is not FIELD=VALUE (e.g. userId=u-42)")),
        }
    }
}

/// The largest `--subjects-file` read, in bytes (64 MiB: about a million
/// subjects).
pub const MAX_SUBJECTS_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// Reads subjects from a file: one per line, `field=value` or a bare value
/// of the pipeline's only subject-key field; blank lines and lines starting
/// with `#` are skipped. Errors name the file and line. At most
/// [`MAX_SUBJECTS_FILE_BYTES`] are read (a pipe such as `/dev/stdin` is
/// fine; `/dev/zero` is refused at the bound, not read without end).
pub fn read_subjects_file(path: &std::path::Path, default_field: Option<&str>) -> Result<Vec<Subject>> {
    use std::io::Read as _;
    let mut text = String::new();
    // A file that cannot be read is the request's problem, not storage's.
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_SUBJECTS_FILE_BYTES + 1).read_to_string(&mut text))
        .map_err(|e| Error::Request { message: format!("--subjects-file {}: cannot read it: {e}", path.display()) })?;
    if text.len() as u64 > MAX_SUBJECTS_FILE_BYTES {
        return Err(Error::BadInput {
            path: path.to_path_buf(),
            message: format!(
                "--subjects-file: more than {MAX_SUBJECTS_FILE_BYTES} bytes; split the request into several files"
            ),
        });
    }
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        out.push(
            Subject::parse(line, default_field)
                .map_err(|m| Error::BadInput { path: path.to_path_buf(), message: format!("line {}: {m}", i + 1) })?,
        );
    }
    Ok(out)
}

/// Options of one erase run.
#[derive(Debug, Clone, Default)]
pub struct EraseOptions {
    /// The data subjects to erase.
    pub subjects: Vec<Subject>,
    /// Delete removed files, change-data files and log history now.
    pub purge: bool,
    /// Find and count, change nothing.
    pub dry_run: bool,
    /// Stored in commit metadata and the erasure log.
    pub run_id: String,
}

/// Matches rows of one table to subjects.
struct Finder {
    subjects: Vec<Subject>,
    fields: Vec<String>,
    /// Per field: value → subject index.
    by_value: HashMap<String, HashMap<String, usize>>,
    /// Per field: the value as stored in curated tables, as any process
    /// unit stores it (hashed when a hash rule covers the field; absent
    /// when another rule changes it).
    by_stored: Stored,
    /// The same per process unit, in order: as its processed table stores it.
    stored: Vec<Stored>,
    matchers: Vec<(String, SubjectMatcher, Vec<usize>)>,
    /// HMAC of each subject's value, for the erasure log.
    hashes: Vec<String>,
    /// How bodies become JSON.
    framing: Arc<Framing>,
}

/// Per subject-key field: the value as a table stores it → subject index.
type Stored = HashMap<String, HashMap<String, usize>>;

impl Finder {
    fn build(loaded: &LoadedPipeline, subjects: Vec<Subject>) -> Result<Finder> {
        let p = &loaded.pipeline;
        let config_error = |path: &str, message: String| loaded.invalid(path, message);
        let (schema_key, schema_name) = match loaded.routes() {
            None => {
                loaded.body_schema()?.ok_or_else(|| {
                    config_error("body", "erase finds subjects by body fields: declare body: with a schema that marks them \"weir.pii\": \"subject\"".into())
                })?;
                let file = p.body.as_ref().and_then(|b| b.schema.as_ref()).map(|s| s.display().to_string());
                ("body.schema", file.unwrap_or_default())
            }
            Some(_) => ("process.routes", "any route's schema".to_string()),
        };
        let declared = loaded.subject_fields()?;
        if declared.is_empty() {
            return Err(config_error(schema_key, "no field is marked \"weir.pii\": \"subject\": mark the data-subject key (e.g. userId) so ingest keeps it at hand for erasure".into()));
        }
        for s in &subjects {
            if !declared.contains(&s.field) {
                return Err(Error::Request {
                    message: format!(
                        "{:?} is not a subject-key field of {schema_name} (declared: {})",
                        s.field,
                        declared.join(", ")
                    ),
                });
            }
        }
        let units = loaded.process_units();
        if units.is_empty() {
            return Err(config_error(
                "process.pii.key_env",
                "erase records each subject as a keyed hash: declare process.pii.key_env (the PII key)".into(),
            ));
        }
        let mut fields: Vec<String> = Vec::new();
        let mut by_value: HashMap<String, HashMap<String, usize>> = HashMap::new();
        for (i, s) in subjects.iter().enumerate() {
            if !fields.contains(&s.field) {
                fields.push(s.field.clone());
            }
            by_value.entry(s.field.clone()).or_default().insert(s.value.clone(), i);
        }
        // The erasure log hashes subjects with the first unit's key; each
        // table stores a hashed subject under its own unit's.
        let mut hashes = Vec::new();
        let mut stored = Vec::new();
        for (u, unit) in units.iter().enumerate() {
            let (unit_hashes, unit_stored) = stored_values(loaded, unit, &subjects)?;
            if u == 0 {
                hashes = unit_hashes;
            }
            stored.push(unit_stored);
        }
        let mut by_stored = Stored::new();
        for unit in &stored {
            for (field, values) in unit {
                by_stored.entry(field.clone()).or_default().extend(values.iter().map(|(v, i)| (v.clone(), *i)));
            }
        }
        let matchers = fields
            .iter()
            .map(|f| {
                let idx: Vec<usize> =
                    subjects.iter().enumerate().filter(|(_, s)| &s.field == f).map(|(i, _)| i).collect();
                let values: Vec<String> = idx.iter().map(|&i| subjects[i].value.clone()).collect();
                (f.clone(), SubjectMatcher::new(f, &values), idx)
            })
            .collect();
        let framing = loaded.body_framing()?;
        Ok(Finder { subjects, fields, by_value, by_stored, stored, matchers, hashes, framing })
    }

    /// The subject a body belongs to, read from its JSON; a body that
    /// cannot be framed (a quarantined one) is searched for the values'
    /// encodings, since personal data in a broken body is still personal data.
    fn body_match(&self, body: &[u8], envelope: &Envelope<'_>) -> Option<usize> {
        let mut buf = Vec::new();
        match self.framing.json(body, envelope, &mut buf) {
            Ok(json) => self.matchers.iter().find_map(|(_, m, idx)| m.find(json).map(|j| idx[j])),
            Err(_) => self.matchers.iter().find_map(|(_, m, idx)| m.find_encoded(body).map(|j| idx[j])),
        }
    }

    /// The envelope of row `row` of a batch whose columns from `at` on are
    /// `system_properties` and `properties` (when the framing reads them).
    fn envelope_of(&self, batch: &RecordBatch, at: usize, row: usize) -> [Option<String>; 2] {
        if !self.framing.reads_properties() || batch.num_columns() < at + 2 {
            return [None, None];
        }
        let [ct, ce] = envelope_columns(
            1,
            Some(batch.column(at).slice(row, 1).as_ref()),
            Some(batch.column(at + 1).slice(row, 1).as_ref()),
        );
        let text = |c: &ArrayRef| c.as_string_opt::<i32>().filter(|c| c.is_valid(0)).map(|c| c.value(0).to_string());
        [text(&ct), text(&ce)]
    }
}

/// Each subject's value hashed with `unit`'s PII key, and each as `unit`'s
/// processed table stores it.
fn stored_values(
    loaded: &LoadedPipeline,
    unit: &crate::pipeline::ProcessUnit,
    subjects: &[Subject],
) -> Result<(Vec<String>, Stored)> {
    let pii = &unit.process.pii;
    let schema = loaded.unit_body_schema(unit)?.ok_or_else(|| loaded.invalid(&unit.schema_key, "missing"))?;
    let key = std::env::var_os(&pii.key_env).map(|v| v.into_encoded_bytes());
    if key.as_ref().is_none_or(|k| k.is_empty()) {
        return Err(Error::Secret {
            message: format!(
                "the erasure log stores each subject as a keyed hash: set {} (the pipeline's PII key)",
                pii.key_env
            ),
        });
    }
    let rules = pii
        .build_with_key(&schema.arrow_schema(), key.as_deref())
        .map_err(|e| Error::Secret { message: e.to_string() })?;
    let mut hashes = Vec::new();
    let mut stored = Stored::new();
    for (i, s) in subjects.iter().enumerate() {
        let hash = rules.hash_value(&s.value).ok_or_else(|| Error::Internal("PII key missing after check".into()))?;
        match pii.rules.iter().find(|r| r.column == s.field).map(|r| &r.action) {
            None => {
                stored.entry(s.field.clone()).or_default().insert(s.value.clone(), i);
            }
            Some(PiiAction::Hash) => {
                stored.entry(s.field.clone()).or_default().insert(hash.clone(), i);
            }
            // Masked, generalized or dropped: found by lineage only.
            Some(_) => {}
        }
        hashes.push(hash);
    }
    Ok((hashes, stored))
}

/// Rows of one table that belong to the subjects.
struct Found {
    /// Lineage key columns of the rows, named as in the table.
    keys: Option<RecordBatch>,
    /// Per row, the subject it belongs to.
    subject: Vec<usize>,
}

impl Found {
    fn rows(&self) -> u64 {
        self.subject.len() as u64
    }
}

/// Raw lineage of rows found: (partition, sequence number) → subject.
type Lineage = HashMap<(String, i64), usize>;

/// Runs `sql` over `table` and keeps the rows `pick` assigns a subject; the
/// first `keys` columns of the result are kept as the lineage keys.
async fn scan(
    table: &DeltaTable,
    sql: &str,
    keys: usize,
    mut pick: impl FnMut(&RecordBatch, usize) -> Option<usize>,
) -> Result<Found> {
    let err = |e: deltalake::datafusion::error::DataFusionError| {
        let url = crate::storage::redact(table.table_url().as_str());
        Error::query(&url, &e, || Error::Internal(format!("erase: reading {url}: {e}")))
    };
    let ctx = crate::expectations::session();
    let provider = table.table_provider().await.map_err(err)?;
    ctx.register_table("t", provider).map_err(err)?;
    let mut stream = ctx.sql(sql).await.map_err(err)?.execute_stream().await.map_err(err)?;
    let mut kept = Vec::new();
    let mut subject = Vec::new();
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(err)?;
        let mut mask = Vec::with_capacity(batch.num_rows());
        for row in 0..batch.num_rows() {
            let s = pick(&batch, row);
            mask.push(s.is_some());
            subject.extend(s);
        }
        if mask.iter().any(|m| *m) {
            let projected =
                batch.project(&(0..keys).collect::<Vec<_>>()).map_err(|e| Error::Internal(e.to_string()))?;
            kept.push(
                filter_record_batch(&projected, &BooleanArray::from(mask))
                    .map_err(|e| Error::Internal(e.to_string()))?,
            );
        }
    }
    let keys = match kept.first() {
        None => None,
        Some(first) => Some(concat_batches(&first.schema(), &kept).map_err(|e| Error::Internal(e.to_string()))?),
    };
    Ok(Found { keys, subject })
}

fn text(batch: &RecordBatch, col: usize, row: usize) -> Option<String> {
    let c = batch.column(col);
    if c.is_null(row) {
        return None;
    }
    let c = cast(&c.slice(row, 1), &DataType::Utf8).ok()?;
    Some(c.as_string::<i32>().value(0).to_string())
}

fn int(batch: &RecordBatch, col: usize, row: usize) -> i64 {
    batch.column(col).as_primitive::<Int64Type>().value(row)
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn has_column(table: &DeltaTable, name: &str) -> Result<bool> {
    Ok(delta::arrow_schema(table)?.field_with_name(name).is_ok())
}

/// Raw rows of the subjects: by subject column, and by body where it is null.
async fn find_raw(table: &DeltaTable, f: &Finder) -> Result<(Found, Lineage)> {
    let keys = format!("partition_id, sequence_number, {RAW_PARTITION_COLUMN}");
    let mut present = Vec::new();
    for field in &f.fields {
        if has_column(table, &subject::column_name(field))? {
            present.push(field.clone());
        }
    }
    let mut parts = Vec::new();
    if !present.is_empty() {
        let cols: Vec<String> = present.iter().map(|p| quote(&subject::column_name(p))).collect();
        let sql = format!(
            "SELECT {keys}, {} FROM t WHERE {}",
            cols.join(", "),
            cols.iter().map(|c| format!("{c} IS NOT NULL")).collect::<Vec<_>>().join(" OR ")
        );
        parts.push(
            scan(table, &sql, 3, |b, row| {
                present
                    .iter()
                    .enumerate()
                    .find_map(|(i, field)| text(b, 3 + i, row).and_then(|v| f.by_value[field].get(&v).copied()))
            })
            .await?,
        );
    }
    // Rows with no subject value for some requested field: read their bodies.
    let null_filter = if present.len() == f.fields.len() {
        format!(
            "WHERE {}",
            present
                .iter()
                .map(|p| format!("{} IS NULL", quote(&subject::column_name(p))))
                .collect::<Vec<_>>()
                .join(" OR ")
        )
    } else {
        String::new()
    };
    let envelope = if f.framing.reads_properties() { ", system_properties, properties" } else { "" };
    let sql = format!("SELECT {keys}, body{envelope} FROM t {null_filter}");
    parts.push(
        scan(table, &sql, 3, |b, row| {
            let body = b.column(3);
            let [content_type, content_encoding] = f.envelope_of(b, 4, row);
            let envelope =
                Envelope { content_type: content_type.as_deref(), content_encoding: content_encoding.as_deref() };
            subject::body_bytes(body.as_ref(), row).and_then(|bytes| f.body_match(bytes, &envelope))
        })
        .await?,
    );
    merge_found(parts, 0, 1)
}

/// Concatenates findings, keeping the first of rows found twice, and
/// returns their lineage (columns `pid`, `seq` of the keys).
fn merge_found(parts: Vec<Found>, pid: usize, seq: usize) -> Result<(Found, Lineage)> {
    let mut lineage = Lineage::new();
    let mut batches = Vec::new();
    let mut subject = Vec::new();
    for part in parts {
        let Some(keys) = part.keys else { continue };
        let pids = cast(keys.column(pid), &DataType::Utf8).map_err(|e| Error::Internal(e.to_string()))?;
        let pids = pids.as_string::<i32>();
        let mut mask = Vec::with_capacity(keys.num_rows());
        for (row, s) in part.subject.iter().enumerate() {
            let k = (pids.value(row).to_string(), int(&keys, seq, row));
            let new = !lineage.contains_key(&k);
            if new {
                lineage.insert(k, *s);
                subject.push(*s);
            }
            mask.push(new);
        }
        batches
            .push(filter_record_batch(&keys, &BooleanArray::from(mask)).map_err(|e| Error::Internal(e.to_string()))?);
    }
    let keys = match batches.first() {
        None => None,
        Some(first) => Some(concat_batches(&first.schema(), &batches).map_err(|e| Error::Internal(e.to_string()))?),
    };
    Ok((Found { keys, subject }, lineage))
}

/// Processed rows: by the subject column as stored, or by raw lineage.
async fn find_processed(table: &DeltaTable, f: &Finder, stored: &Stored, raw: &Lineage) -> Result<Found> {
    let mut cols = Vec::new();
    for field in &f.fields {
        if stored.contains_key(field) && has_column(table, field)? {
            cols.push(field.clone());
        }
    }
    let extra: String = cols.iter().map(|c| format!(", {}", quote(c))).collect();
    let sql = format!("SELECT _partition_id, _sequence_number, {PROCESSED_PARTITION_COLUMN}{extra} FROM t");
    scan(table, &sql, 3, |b, row| {
        let by_column = cols
            .iter()
            .enumerate()
            .find_map(|(i, field)| text(b, 3 + i, row).and_then(|v| stored[field].get(&v).copied()));
        by_column.or_else(|| {
            let pid = text(b, 0, row)?;
            raw.get(&(pid, int(b, 1, row))).copied()
        })
    })
    .await
}

/// Quarantined rows: by raw lineage, or by the subject in the body.
async fn find_quarantine(table: &DeltaTable, f: &Finder, raw: &Lineage) -> Result<Found> {
    let sql = format!("SELECT _partition_id, _sequence_number, {QUARANTINE_PARTITION_COLUMN}, body FROM t");
    scan(table, &sql, 3, |b, row| {
        let pid = text(b, 0, row)?;
        raw.get(&(pid, int(b, 1, row))).copied().or_else(|| {
            subject::body_bytes(b.column(3).as_ref(), row).and_then(|bytes| f.body_match(bytes, &Envelope::default()))
        })
    })
    .await
}

/// Curated rows still holding a subject (by a column named like its field).
async fn find_curated(table: &DeltaTable, key: &[String], f: &Finder) -> Result<Found> {
    let mut cols = Vec::new();
    for field in &f.fields {
        if f.by_stored.contains_key(field) && has_column(table, field)? {
            cols.push(field.clone());
        }
    }
    if cols.is_empty() {
        return Ok(Found { keys: None, subject: vec![] });
    }
    let keys: Vec<String> = key.iter().map(|k| quote(k)).collect();
    // A key column may be the subject column itself: select it again by alias.
    let extra: Vec<String> =
        cols.iter().enumerate().map(|(i, c)| format!("{} AS __weir_subject_{i}", quote(c))).collect();
    let sql = format!("SELECT {}, {} FROM t", keys.join(", "), extra.join(", "));
    let n = key.len();
    scan(table, &sql, n, |b, row| {
        cols.iter()
            .enumerate()
            .find_map(|(i, field)| text(b, n + i, row).and_then(|v| f.by_stored[field].get(&v).copied()))
    })
    .await
}

struct Plan<'a> {
    loaded: &'a LoadedPipeline,
    options: &'a EraseOptions,
    finder: Finder,
    report: ErasureReport,
    /// Rows deleted per (subject, table).
    per_subject: HashMap<(usize, String), u64>,
    started: DateTime<Utc>,
    /// Tables erased from (or checked), in order: what a purge cleans.
    written: Vec<(String, Location)>,
}

impl Plan<'_> {
    fn metadata(&self) -> HashMap<String, serde_json::Value> {
        CommitInfo::new(&self.loaded.pipeline.name, "erase", &self.options.run_id).into_map()
    }

    /// When the old files holding `table`'s rows of the subjects become
    /// unreadable: now after a purge, else after the next vacuum.
    fn unreadable_after(&self, table: &str) -> Option<DateTime<Utc>> {
        if self.options.purge {
            Some(Utc::now())
        } else {
            self.loaded.vacuum_retention_hours(table).map(|h| Utc::now() + chrono::Duration::hours(h as i64))
        }
    }

    fn record(
        &mut self,
        table: &str,
        location: &Location,
        found: &Found,
        deleted: u64,
        version: Option<u64>,
        how: ErasureHow,
    ) {
        for s in &found.subject {
            *self.per_subject.entry((*s, table.to_string())).or_default() += 1;
        }
        let unreadable_after = match deleted {
            0 => None,
            _ => self.unreadable_after(table),
        };
        self.report.tables.push(ErasedTable {
            table: table.to_string(),
            location: location.to_string(),
            how: if self.options.dry_run && found.rows() > 0 { ErasureHow::Planned } else { how },
            rows_found: found.rows(),
            rows_deleted: deleted,
            version,
            unreadable_after,
            ..Default::default()
        });
    }

    /// Deletes the found rows (unless a dry run) and records them.
    async fn delete(&mut self, name: &str, location: &Location, table: DeltaTable, found: Found) -> Result<DeltaTable> {
        let (table, deleted, version) = match (&found.keys, self.options.dry_run) {
            (Some(keys), false) => {
                fault_point("erase_before_delete");
                let (t, n) = delta::delete_keys(table, keys.clone(), self.metadata()).await?;
                fault_point("erase_after_delete");
                if n != found.rows() {
                    return Err(Error::Internal(format!(
                        "erase: {name}: {} rows were found but the delete removed {n}; the table changed during the erase (is another job writing it?)",
                        found.rows()
                    )));
                }
                let v = t.version();
                (t, n, v)
            }
            _ => (table, 0, None),
        };
        let how = if deleted > 0 { ErasureHow::Delete } else { ErasureHow::None };
        self.record(name, location, &found, deleted, version, how);
        Ok(table)
    }

    /// Finds and deletes the raw rows as of version `v` (the one process
    /// consumed); returns their lineage, by which processed and quarantine
    /// rows are found.
    async fn erase_raw(&mut self, location: &Location, v: u64) -> Result<Lineage> {
        let mut raw_lineage = Lineage::new();
        // An ingest appending to the same partitions may win the commit; the
        // delete is then planned again on the same version.
        for attempt in 0.. {
            let mut raw = delta::open(location).await?.ok_or_else(|| Error::Internal("raw table vanished".into()))?;
            raw.load_version(v).await.map_err(|e| Error::delta(location, e))?;
            let (found, lineage) = find_raw(&raw, &self.finder).await?;
            match self.delete("raw", location, raw, found).await {
                Ok(_) => {
                    raw_lineage = lineage;
                    break;
                }
                Err(Error::ConcurrentProgress { .. }) if attempt < 5 => {
                    tracing::warn!(attempt, "an ingest committed beside the raw delete; planning it again");
                }
                Err(e) => return Err(e),
            }
        }
        self.written.push(("raw".into(), location.clone()));
        Ok(raw_lineage)
    }

    /// Finds and deletes the processed rows (of every route's table, with
    /// routes) and the quarantine rows (where those tables exist).
    async fn erase_processed(&mut self, locations: &Locations, raw_lineage: &Lineage) -> Result<()> {
        for (u, (name, pl)) in locations.processed.iter().enumerate() {
            if let Some(table) = delta::open(pl).await? {
                let found = find_processed(&table, &self.finder, &self.finder.stored[u], raw_lineage).await?;
                self.delete(name, pl, table, found).await?;
                self.written.push((name.clone(), pl.clone()));
            }
        }
        if let Some(ql) = &locations.quarantine {
            if let Some(table) = delta::open(ql).await? {
                let found = find_quarantine(&table, &self.finder, raw_lineage).await?;
                self.delete("quarantine", ql, table, found).await?;
                self.written.push(("quarantine".into(), ql.clone()));
            }
        }
        Ok(())
    }

    /// Looks for the subjects in every curated table after the recompute
    /// (`stages` holds the curate report): rows still there are deleted by
    /// key and warned about; a dry run only counts them.
    async fn check_curated(&mut self, curated: &[CuratedTableConfig], stages: &[StageReport]) -> Result<()> {
        for (i, c) in curated.iter().enumerate() {
            let location = self.loaded.curated_location(i)?;
            let Some(table) = delta::open(&location).await? else { continue };
            let found = find_curated(&table, &c.key, &self.finder).await?;
            if found.rows() > 0 && !self.options.dry_run {
                self.report.warnings.push(format!(
                    "curated table {}: {} rows of the subjects remained after the recompute (its model reads data beyond processed, e.g. a reference table); they were deleted by key, and a later recompute may bring them back",
                    c.name,
                    found.rows()
                ));
                self.delete(&c.name, &location, table, found).await?;
            } else if self.options.dry_run {
                self.record(&c.name, &location, &found, 0, None, ErasureHow::None);
            } else {
                let recomputed = stages
                    .iter()
                    .flat_map(|s| &s.models)
                    .any(|m| m.table == c.name && m.rows_deleted + m.rows_updated > 0);
                let how = if recomputed { ErasureHow::Recomputed } else { ErasureHow::None };
                self.record(&c.name, &location, &found, 0, table.version(), how);
                if recomputed {
                    // The curate stage deleted or rewrote this table's rows of
                    // the subjects: their old versions wait for vacuum too.
                    let unreadable_after = self.unreadable_after(&c.name);
                    if let Some(t) = self.report.tables.last_mut() {
                        t.unreadable_after = unreadable_after;
                    }
                }
            }
            self.written.push((c.name.clone(), location));
        }
        Ok(())
    }

    /// Purges every table written, after every consumer has read the
    /// deletes.
    async fn purge(&mut self) -> Result<()> {
        let keep = purge::consumer_versions(self.loaded).await?;
        for (name, location) in &self.written {
            let Some(table) = delta::open(location).await? else { continue };
            let mut metadata = self.metadata();
            metadata.insert(commit::ACTION.into(), "purge".into());
            let purged = purge::purge(&table, keep.get(name).copied(), metadata).await?;
            fault_point("erase_after_purge");
            if let Some(t) = self.report.tables.iter_mut().find(|t| &t.table == name) {
                t.files_purged = purged.files;
                t.bytes_purged = purged.bytes;
                t.log_files_removed = purged.log_files;
                if t.rows_deleted > 0 || t.how == ErasureHow::Recomputed {
                    t.unreadable_after = Some(Utc::now());
                }
            }
            self.report.warnings.extend(purged.warnings.into_iter().map(|w| format!("{name}: {w}")));
        }
        self.report.warnings.push(
            "purged: time travel and change feeds before this erase are gone for every table above (their old files and log history were deleted)".into(),
        );
        Ok(())
    }

    /// The erase stage's report; `log_version` is the erasure log's commit
    /// (none on a dry run, which lists no table as written).
    fn into_report(mut self, log_version: Option<u64>, started_at: Instant) -> StageReport {
        let mut report = StageReport { stage: Stage::Erase, ..Default::default() };
        if !self.options.dry_run {
            self.report.log_version = log_version;
            for t in &self.report.tables {
                report.tables.push(TableWrite {
                    table: t.table.clone(),
                    location: t.location.clone(),
                    version_before: None,
                    versions_written: t.version.filter(|_| t.rows_deleted > 0).into_iter().collect(),
                });
            }
            report.events_written = self.report.tables.iter().map(|t| t.rows_deleted).sum();
        }
        report.erasure = Some(self.report);
        report.duration_ms = started_at.elapsed().as_millis() as u64;
        report
    }
}

/// The tables rows are found in by lineage.
struct Locations {
    raw: Location,
    /// Each process unit's table (`processed`, or each route's), by name,
    /// in the order of [`LoadedPipeline::process_units`], with the marker
    /// its unit records on it.
    processed: Vec<(String, Location)>,
    /// The app id of each unit's marker, in the same order.
    markers: Vec<String>,
    quarantine: Option<Location>,
}

impl Locations {
    fn of(loaded: &LoadedPipeline) -> Result<Locations> {
        let units = loaded.process_units();
        let mut processed = Vec::new();
        let mut markers = Vec::new();
        for unit in units.iter().filter(|u| u.table.is_some()) {
            processed.push((unit.name.clone(), loaded.location(&unit.table_key)?));
            markers.push(unit.app_id(&loaded.pipeline.name));
        }
        Ok(Locations {
            raw: loaded.location("tables.raw.path")?,
            processed,
            markers,
            quarantine: loaded.table_location("quarantine")?,
        })
    }
}

/// Runs the erase job. Returns the stages it ran: process (catching up,
/// twice when not a dry run), curate (when declared), and the erase itself.
pub async fn erase(loaded: &LoadedPipeline, options: &EraseOptions) -> Result<Vec<StageReport>> {
    let started_at = Instant::now();
    let p = &loaded.pipeline;
    let (finder, log_location) = request(loaded, options)?;
    let mut stages = Vec::new();
    let process_options = ProcessOptions { dry_run: false, run_id: options.run_id.clone(), route: None, follow: None };

    let locations = Locations::of(loaded)?;
    if !options.dry_run {
        leases_free(loaded, &locations).await?;
    }
    // 1. Catch up: raw rows are erased at the version process consumed.
    if p.process.is_some() && !options.dry_run {
        stages.extend(crate::process::process_all(loaded, &process_options).await?);
    }
    let raw_version = raw_version(loaded, &locations, options.dry_run).await?;
    let mut plan = Plan {
        loaded,
        options,
        report: ErasureReport {
            subjects: finder.subjects.len() as u64,
            fields: finder.fields.clone(),
            purged: options.purge && !options.dry_run,
            raw_version,
            ..Default::default()
        },
        finder,
        per_subject: HashMap::new(),
        started: Utc::now(),
        written: Vec::new(),
    };

    // 2-3. Find and delete: raw (at the consumed version), processed, quarantine.
    let raw_lineage = match raw_version {
        Some(v) => plan.erase_raw(&locations.raw, v).await?,
        None => Lineage::new(),
    };
    plan.erase_processed(&locations, &raw_lineage).await?;

    // 4. Recompute: process consumes the raw delete, curate the processed one.
    let curated: Vec<_> = p.curate.iter().flat_map(|c| c.tables.clone()).collect();
    if !options.dry_run {
        stages.extend(recompute(loaded, &process_options, !curated.is_empty()).await?);
    }
    plan.check_curated(&curated, &stages).await?;
    if options.dry_run {
        stages.push(plan.into_report(None, started_at));
        return Ok(stages);
    }

    // 6. Purge, after every consumer has read the deletes.
    if options.purge {
        plan.purge().await?;
    }
    // 5. The erasure log.
    fault_point("erase_before_log");
    let log_version = write_log(loaded, &plan, &log_location).await?;
    stages.push(plan.into_report(log_version, started_at));
    Ok(stages)
}

/// Checks the request: the subjects, each once (at least one), matched by
/// a finder, and the erasure log table it is recorded in.
fn request(loaded: &LoadedPipeline, options: &EraseOptions) -> Result<(Finder, Location)> {
    let mut subjects = options.subjects.clone();
    let mut seen = HashSet::new();
    subjects.retain(|s| seen.insert(s.clone()));
    if subjects.is_empty() {
        return Err(Error::Request {
            message: "no subject to erase: give --subject FIELD=VALUE or --subjects-file".into(),
        });
    }
    let finder = Finder::build(loaded, subjects)?;
    let log_table = loaded.table_location("erasure_log")?.ok_or_else(|| {
        loaded.invalid(
            "tables.erasure_log",
            "erase records every request in an audit table: declare tables.erasure_log.path",
        )
    })?;
    Ok((finder, log_table))
}

/// The raw version rows are erased at: the one process consumed (none
/// without a raw table). A dry run counts everything ingested: the real run
/// processes it first.
/// Every table an erase rewrites must be free of `weir maintain`'s rewrite
/// lease before the first delete: a held one stops the erase with nothing
/// written, not halfway through the tables.
async fn leases_free(loaded: &LoadedPipeline, locations: &Locations) -> Result<()> {
    let curated = loaded.pipeline.curate.iter().flat_map(|c| &c.tables).enumerate();
    let curated: Vec<Location> = curated.map(|(i, _)| loaded.curated_location(i)).collect::<Result<_>>()?;
    let processed = locations.processed.iter().map(|(_, l)| l);
    let all = [Some(&locations.raw), locations.quarantine.as_ref()];
    for location in all.into_iter().flatten().chain(processed).chain(&curated) {
        if let Some(table) = delta::open(location).await? {
            delta::check_rewrite_lease(&table).await?;
        }
    }
    Ok(())
}

async fn raw_version(loaded: &LoadedPipeline, locations: &Locations, dry_run: bool) -> Result<Option<u64>> {
    let Some(raw) = delta::open(&locations.raw).await? else { return Ok(None) };
    if loaded.pipeline.process.is_none() || locations.processed.is_empty() || dry_run {
        return Ok(raw.version());
    }
    // With routes, the version every route has consumed.
    let mut consumed: Option<u64> = None;
    for ((_, location), app_id) in locations.processed.iter().zip(&locations.markers) {
        let Some(processed) = delta::open(location).await? else { return Ok(None) };
        let Some(v) = delta::progress(&processed, app_id).await? else { return Ok(None) };
        consumed = Some(consumed.map_or(v as u64, |c| c.min(v as u64)));
    }
    Ok(consumed)
}

/// Runs process again (it consumes the raw delete) and curate (it consumes
/// the processed one), and returns their reports.
async fn recompute(
    loaded: &LoadedPipeline,
    process_options: &ProcessOptions,
    curate: bool,
) -> Result<Vec<StageReport>> {
    let mut stages = Vec::new();
    if loaded.pipeline.process.is_some() {
        stages.extend(crate::process::process_all(loaded, process_options).await?);
    }
    if curate {
        let curate_options =
            CurateOptions { dry_run: false, run_id: process_options.run_id.clone(), full_refresh: false, only: vec![] };
        let report = crate::curate::curate(loaded, &curate_options).await?;
        for m in &report.models {
            tracing::info!(table = %m.table, mode = %m.mode, deleted = m.rows_deleted, updated = m.rows_updated, "curated table recomputed");
        }
        stages.push(report);
    }
    Ok(stages)
}

/// Appends one row per subject and table to the erasure log.
async fn write_log(loaded: &LoadedPipeline, plan: &Plan<'_>, location: &Location) -> Result<Option<u64>> {
    let p = &loaded.pipeline;
    let spec = TableSpec {
        name: format!("{}_erasure_log", p.name),
        description: p.tables.erasure_log.as_ref().and_then(|t| t.description.clone()),
        schema: erasure_log_schema(),
        partition_columns: vec![],
    };
    let table = delta::open_or_create(location, &spec).await?;
    delta::check_owner(&table, location, &spec)?;
    let mut id = Vec::new();
    let mut field = Vec::new();
    let mut hash = Vec::new();
    let mut name = Vec::new();
    let mut version = Vec::new();
    let mut deleted = Vec::new();
    let mut purged = Vec::new();
    let mut unreadable = Vec::new();
    for (i, s) in plan.finder.subjects.iter().enumerate() {
        for t in &plan.report.tables {
            id.push(plan.options.run_id.clone());
            field.push(s.field.clone());
            hash.push(plan.finder.hashes[i].clone());
            name.push(t.table.clone());
            let rows = plan.per_subject.get(&(i, t.table.clone())).copied().unwrap_or(0);
            let rows = if t.how == ErasureHow::Delete { rows } else { 0 };
            version.push(t.version.map(|v| v as i64));
            deleted.push(rows as i64);
            purged.push(plan.options.purge);
            unreadable.push(t.unreadable_after.map(|d| d.timestamp_micros()));
        }
    }
    let n = id.len();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(id)),
        Arc::new(StringArray::from(vec![p.name.clone(); n])),
        Arc::new(TimestampMicrosecondArray::from(vec![plan.started.timestamp_micros(); n]).with_timezone("UTC")),
        Arc::new(StringArray::from(field)),
        Arc::new(StringArray::from(hash)),
        Arc::new(StringArray::from(name)),
        Arc::new(Int64Array::from(version)),
        Arc::new(Int64Array::from(deleted)),
        Arc::new(BooleanArray::from(purged)),
        Arc::new(TimestampMicrosecondArray::from(unreadable).with_timezone("UTC")),
    ];
    let batch = RecordBatch::try_new(erasure_log_schema(), columns)
        .map_err(|e| Error::Internal(format!("erasure log: {e}")))?;
    let table = delta::write_with_progress(
        table,
        vec![batch],
        WriteOptions { metadata: plan.metadata(), ..Default::default() },
    )
    .await?;
    Ok(table.version())
}
