//! Point-in-time feature lookups: for each (entity, timestamp) row of a file,
//! the feature values as they were at that time.
//!
//! A feature table is a curated table with `as_of:`: its key is the entity
//! columns plus the as-of timestamp, and a row's values hold from its
//! `as_of` until the entity's next row. The lookup takes, per request row,
//! the entity's row with the greatest `as_of` not after the request's
//! timestamp — never a later one, so training sets see no values from their
//! own future. A request before the entity's first row gets nulls.
//!
//! What "as they were" means is the model's business: the example model
//! computes each row from events whose event time is before `as_of`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use deltalake::arrow::array::{Array, RecordBatch, UInt64Array};
use deltalake::arrow::compute::{cast_with_options, CastOptions};
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use deltalake::datafusion::datasource::MemTable;
use deltalake::datafusion::error::DataFusionError;
use deltalake::datafusion::prelude::{CsvReadOptions, ParquetReadOptions};

use super::{models, quote};
use crate::export::Format;
use crate::pipeline::LoadedPipeline;
use crate::{delta, Error, Result};

/// A point-in-time lookup.
#[derive(Debug, Clone)]
pub struct FeatureRequest {
    /// The curated feature table (by name in the pipeline).
    pub table: String,
    /// Parquet or CSV file of entity rows with a timestamp column.
    pub entities: PathBuf,
    /// The timestamp column of the entity file.
    pub as_of_column: String,
    /// Output file (`.parquet`, `.csv` or `.jsonl`); stdout as JSON lines
    /// when absent.
    pub output: Option<PathBuf>,
}

/// What a lookup returned.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FeatureReport {
    /// Entity rows read (and written, in the same order).
    pub rows: u64,
    /// Rows for which a feature row existed at their timestamp.
    pub matched: u64,
    /// The feature table version read.
    pub table_version: u64,
    /// The output file, when one was written.
    pub output: Option<String>,
}

const ROW: &str = "__weir_row";
const TS: &str = "__weir_ts";
/// The output column holding the as-of time of the feature row used.
pub const FEATURE_AS_OF: &str = "feature_as_of";

fn bad(path: &Path, message: String) -> Error {
    Error::BadInput { path: path.to_path_buf(), message }
}

/// Runs a point-in-time lookup and writes the result.
pub async fn lookup(loaded: &LoadedPipeline, request: &FeatureRequest) -> Result<FeatureReport> {
    let models = models(loaded)?;
    let config_error = |message: String| loaded.invalid("curate.tables", message);
    let model = models
        .iter()
        .find(|m| m.config.name == request.table)
        .ok_or_else(|| config_error(format!("no curated table named {:?}", request.table)))?;
    let as_of = model.config.as_of.clone().ok_or_else(|| {
        config_error(format!("{:?} has no as_of: column; point-in-time lookups need a feature table", request.table))
    })?;
    let entity_columns: Vec<String> = model.config.key.iter().filter(|k| **k != as_of).cloned().collect();
    let table = delta::open(&model.location).await?.ok_or_else(|| Error::InvalidLocation {
        location: model.location.to_string(),
        reason: format!("feature table {:?} does not exist yet; run `weir curate` first", request.table),
    })?;
    let table_version = table.version().unwrap_or(0);

    let entities = read_entities(&request.entities, &request.as_of_column, &entity_columns).await?;
    let rows: u64 = entities.iter().map(|b| b.num_rows() as u64).sum();
    let entity_schema = entities.first().map(|b| b.schema()).ok_or_else(|| bad(&request.entities, "no rows".into()))?;

    let ctx = crate::expectations::session();
    let err = |e: DataFusionError| {
        Error::query(&"the feature table", &e, || Error::Internal(format!("point-in-time join: {e}")))
    };
    let mem = MemTable::try_new(entity_schema.clone(), vec![entities]).map_err(err)?;
    ctx.register_table("entities", Arc::new(mem)).map_err(err)?;
    super::register(&ctx, "features", &table).await?;
    let feature_schema = delta::arrow_schema(&table)?;

    let given: Vec<String> =
        entity_schema.fields().iter().map(|f| f.name().clone()).filter(|n| n != ROW && n != TS).collect();
    // Both sides hold the entity columns: alias every column uniquely inside,
    // name them for the user outside.
    let mut inner: Vec<String> = vec![format!("e.{ROW} AS {ROW}")];
    let mut outer: Vec<String> = vec![ROW.to_string()];
    for (i, n) in given.iter().enumerate() {
        inner.push(format!("e.{} AS e{i}", quote(n)));
        outer.push(format!("e{i} AS {}", quote(n)));
    }
    inner.push(format!("f.{} AS fa", quote(&as_of)));
    outer.push(format!("fa AS {}", quote(FEATURE_AS_OF)));
    for (i, f) in feature_schema.fields().iter().filter(|f| !model.config.key.contains(f.name())).enumerate() {
        let name = if given.contains(f.name()) { format!("feature_{}", f.name()) } else { f.name().clone() };
        inner.push(format!("f.{} AS f{i}", quote(f.name())));
        outer.push(format!("f{i} AS {}", quote(&name)));
    }
    let mut on: Vec<String> = entity_columns.iter().map(|c| format!("f.{q} = e.{q}", q = quote(c))).collect();
    on.push(format!("f.{} <= e.{TS}", quote(&as_of)));
    let sql = format!(
        "SELECT {outer} FROM (
           SELECT {inner}, ROW_NUMBER() OVER (PARTITION BY e.{ROW} ORDER BY f.{asof} DESC NULLS LAST) AS __weir_rank
           FROM entities e LEFT JOIN features f ON {on}
         ) WHERE __weir_rank = 1 ORDER BY {ROW}",
        outer = outer.join(", "),
        inner = inner.join(", "),
        asof = quote(&as_of),
        on = on.join(" AND "),
    );
    let df = ctx.sql(&sql).await.map_err(err)?;
    let batches = df.collect().await.map_err(err)?;
    let batches = super::plain_types_all(batches)?
        .into_iter()
        .map(|mut b| {
            b.remove_column(0);
            b
        })
        .collect::<Vec<_>>();
    let schema: SchemaRef = match batches.first() {
        Some(b) => b.schema(),
        None => Arc::new(Schema::empty()),
    };
    let matched: u64 =
        batches.iter().map(|b| b.column_by_name(FEATURE_AS_OF).map_or(0, |c| (c.len() - c.null_count()) as u64)).sum();
    let format = match &request.output {
        Some(p) => Format::from_path(p)
            .ok_or_else(|| bad(p, "unknown output format: name the file .parquet, .csv or .jsonl".into()))?,
        None => Format::Jsonl,
    };
    crate::export::write(&batches, &schema, format, request.output.as_deref())?;
    Ok(FeatureReport { rows, matched, table_version, output: request.output.as_ref().map(|p| p.display().to_string()) })
}

/// Reads the entity file, checks its columns and adds the row number and the
/// timestamp as microseconds in UTC (naive timestamps are taken as UTC).
async fn read_entities(path: &Path, as_of_column: &str, entity_columns: &[String]) -> Result<Vec<RecordBatch>> {
    if !path.is_file() {
        return Err(bad(path, "no such file".into()));
    }
    let ctx = crate::expectations::session();
    let name = path.to_str().ok_or_else(|| bad(path, "the path is not UTF-8".into()))?;
    let err = |e: DataFusionError| bad(path, e.to_string().lines().next().unwrap_or_default().to_string());
    let df = match Format::from_path(path) {
        Some(Format::Parquet) => ctx.read_parquet(name, ParquetReadOptions::default()).await.map_err(err)?,
        Some(Format::Csv) => ctx.read_csv(name, CsvReadOptions::new().has_header(true)).await.map_err(err)?,
        _ => return Err(bad(path, "entity files are .parquet or .csv".into())),
    };
    let schema = df.schema().as_arrow().clone();
    for c in entity_columns.iter().chain(std::iter::once(&as_of_column.to_string())) {
        if schema.field_with_name(c).is_err() {
            let have: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            return Err(bad(path, format!("no column {c:?} (the file has: {})", have.join(", "))));
        }
    }
    let batches = super::plain_types_all(df.collect().await.map_err(err)?)?;
    let mut out = Vec::with_capacity(batches.len());
    let mut row = 0u64;
    let utc = crate::capture::decode::utc_micros();
    for b in batches {
        let given = b.column_by_name(as_of_column).expect("checked above");
        let ts = cast_with_options(given, &utc, &CastOptions { safe: true, ..Default::default() })
            .map_err(|e| bad(path, format!("column {as_of_column:?}: {e}")))?;
        if let Some(i) = (0..ts.len()).find(|&i| ts.is_null(i)) {
            let value = deltalake::arrow::util::display::array_value_to_string(given, i).unwrap_or_default();
            return Err(bad(
                path,
                format!(
                    "row {}: column {as_of_column:?} is {} — not a timestamp (use ISO-8601, e.g. 2026-11-01T08:00:00Z)",
                    row + i as u64 + 1,
                    if given.is_null(i) { "empty".to_string() } else { format!("{value:?}") }
                ),
            ));
        }
        let mut fields: Vec<Field> = b.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new(ROW, DataType::UInt64, false));
        fields.push(Field::new(TS, utc.clone(), false));
        let mut columns = b.columns().to_vec();
        columns.push(Arc::new(UInt64Array::from_iter_values(row..row + b.num_rows() as u64)));
        columns.push(ts);
        row += b.num_rows() as u64;
        out.push(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| bad(path, e.to_string()))?);
    }
    Ok(out)
}
