//! Reading a range of raw versions: the rows they added, with only the
//! columns processing needs.

use std::sync::Arc;

use deltalake::arrow::array::{ArrayRef, Date32Array, Int64Array, RecordBatch, RecordBatchOptions};
use deltalake::arrow::compute::{cast, concat_batches};
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use deltalake::delta_datafusion::DeltaCdfTableProvider;
use deltalake::DeltaTable;

use crate::body::framing::{envelope_columns, property_column};
use crate::capture::decode::utc_micros;
use crate::expectations;
use crate::lake::contract::RAW_PARTITION_COLUMN;
use crate::{Error, Result};

/// Reads raw rows committed in versions `from..=to`, with normalised types:
/// partition and file as Utf8, body as Binary, each event's content type
/// and encoding (read from the Capture maps only when `envelopes`, else
/// null), the value of the event's property `property` when given (the
/// discriminator of a pipeline routed by a property, else null),
/// `_commit_version` last.
///
/// Raw versions are almost always appends: their inserted rows are the
/// rows of the files they add, read here straight from Parquet with only the
/// columns processing needs (the Capture maps and the other raw columns are
/// never decoded). A range holding any other change (an erase or retention
/// delete, a deletion vector, column mapping) is read from the change feed,
/// whose inserts are what a plain append would have given.
pub(super) async fn read_raw(
    raw: &DeltaTable,
    from: u64,
    to: u64,
    envelopes: bool,
    property: Option<&str>,
) -> Result<Vec<RecordBatch>> {
    match appended_files(raw, from, to).await? {
        Some(files) => read_appended(raw, files, envelopes, property).await,
        None => read_raw_changes(raw, from, to, property).await,
    }
}

/// The raw read column holding each event's discriminator property.
pub(super) const DISCRIMINATOR_COLUMN: &str = "discriminator";

/// Columns of raw rows as processing reads them.
pub(super) fn raw_read_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("partition_id", DataType::Utf8, false),
        Field::new("sequence_number", DataType::Int64, false),
        Field::new("enqueued_time", utc_micros(), false),
        Field::new("enqueued_date", DataType::Date32, false),
        Field::new("source_file", DataType::Utf8, false),
        Field::new("body", DataType::Binary, true),
        Field::new("content_type", DataType::Utf8, true),
        Field::new("content_encoding", DataType::Utf8, true),
        Field::new(DISCRIMINATOR_COLUMN, DataType::Utf8, true),
        Field::new("_commit_version", DataType::Int64, false),
    ]))
}

/// The files versions `from..=to` added with their versions, or `None` when
/// a version did anything but append (then the change feed is read).
async fn appended_files(raw: &DeltaTable, from: u64, to: u64) -> Result<Option<Vec<(u64, deltalake::kernel::Add)>>> {
    use deltalake::kernel::Action;
    let mapped = raw
        .snapshot()
        .map_err(|e| Error::delta(raw.table_url(), e))?
        .metadata()
        .configuration()
        .get("delta.columnMapping.mode")
        .is_some_and(|m| !m.eq_ignore_ascii_case("none"));
    if mapped {
        return Ok(None);
    }
    let log = raw.log_store();
    let mut files = Vec::new();
    for version in from..=to {
        let bytes = log
            .read_commit_entry(version as _)
            .await
            .map_err(|e| Error::delta(raw.table_url(), e))?
            .ok_or_else(|| Error::Internal(format!("raw version {version} is missing from the log")))?;
        for action in
            deltalake::logstore::get_actions(version as _, &bytes).map_err(|e| Error::delta(raw.table_url(), e))?
        {
            match action {
                Action::Add(add) if add.data_change => {
                    if add.deletion_vector.is_some() {
                        return Ok(None);
                    }
                    files.push((version, add));
                }
                Action::Remove(r) if r.data_change => return Ok(None),
                Action::Cdc(_) => return Ok(None),
                Action::Metadata(m) if m.configuration().contains_key("delta.columnMapping.mode") => return Ok(None),
                _ => {}
            }
        }
    }
    Ok(Some(files))
}

/// Reads the processing columns of appended raw files, in log order.
async fn read_appended(
    raw: &DeltaTable,
    files: Vec<(u64, deltalake::kernel::Add)>,
    envelopes: bool,
    property: Option<&str>,
) -> Result<Vec<RecordBatch>> {
    let property = property.map(str::to_string);
    use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use deltalake::parquet::arrow::ProjectionMask;
    use futures::{StreamExt as _, TryStreamExt as _};
    use object_store::ObjectStoreExt as _;
    let store = raw.log_store().object_store(None);
    let url = raw.table_url().clone();
    let read_one = |(version, add): (u64, deltalake::kernel::Add)| {
        let (store, url, property) = (store.clone(), url.clone(), property.clone());
        async move {
            let fail = |e: &dyn std::fmt::Display| {
                Error::Internal(format!(
                    "reading raw file {} of {}: {e}",
                    add.path,
                    crate::storage::redact(url.as_str())
                ))
            };
            let path = object_store::path::Path::parse(&add.path)
                .unwrap_or_else(|_| object_store::path::Path::from(add.path.as_str()));
            // Whole files: raw files are bounded by the writer's rotation, and
            // one request each is cheaper than one per column chunk on Azure.
            // A failed read is storage's (retryable, or access refused), not Weir's.
            let at = format!("{}{}", url.as_str().trim_end_matches('/'), format_args!("/{}", add.path));
            let fetched = store.get(&path).await.map_err(|e| Error::storage(&at, e))?;
            let bytes = fetched.bytes().await.map_err(|e| Error::storage(&at, e))?;
            let maps = envelopes || property.is_some();
            let decode = move || -> std::result::Result<Vec<RecordBatch>, String> {
                let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|e| e.to_string())?;
                let mut wanted = vec!["partition_id", "sequence_number", "enqueued_time", "source_file", "body"];
                if maps {
                    wanted.extend(["system_properties", "properties"]);
                }
                let roots = wanted
                    .iter()
                    .map(|n| builder.schema().index_of(n).map_err(|_| format!("no column {n}")))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
                let reader = builder
                    .with_projection(mask)
                    .with_batch_size(READ_BATCH_ROWS)
                    .build()
                    .map_err(|e| e.to_string())?;
                reader
                    .map(|b| b.and_then(shrunk))
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| e.to_string())
            };
            let batches = tokio::task::spawn_blocking(decode).await.map_err(|e| fail(&e))?.map_err(|e| fail(&e))?;
            let date = add
                .partition_values
                .get(RAW_PARTITION_COLUMN)
                .and_then(|v| v.as_deref())
                .and_then(|v| chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").ok())
                .map(|d| (d - chrono::NaiveDate::default()).num_days() as i32)
                .ok_or_else(|| fail(&format!("no {} partition value", RAW_PARTITION_COLUMN)))?;
            batches
                .iter()
                .map(|b| read_columns(b, Some(date), version, envelopes, property.as_deref()).map_err(|e| fail(&e)))
                .collect::<Result<Vec<_>>>()
        }
    };
    // Two files at a time: latency hides behind the other's decoding.
    let parts: Vec<Vec<RecordBatch>> = futures::stream::iter(files).map(read_one).buffered(2).try_collect().await?;
    Ok(parts.into_iter().flatten().collect())
}

/// Rows a fused `weir run` handed over from ingest (each raw version with
/// exactly the rows it appended), as [`read_raw`] reads them from the table.
///
/// Ingest hands over one batch per capture file chunk (a few hundred rows
/// for a five-minute file); they are gathered into batches of
/// [`READ_BATCH_ROWS`] as the Parquet reader gives them, since every batch
/// costs the checks a fixed overhead.
pub(super) fn read_handed_over(
    versions: Vec<(u64, Vec<RecordBatch>)>,
    envelopes: bool,
    property: Option<&str>,
) -> Result<Vec<RecordBatch>> {
    let mut out = Vec::new();
    let mut small: Vec<RecordBatch> = Vec::new();
    let mut rows = 0;
    let gather = |small: &mut Vec<RecordBatch>, out: &mut Vec<RecordBatch>| -> Result<()> {
        match small.len() {
            0 => {}
            1 => out.extend(small.pop()),
            _ => {
                let one = concat_batches(&raw_read_schema(), small.iter())
                    .map_err(|e| Error::Internal(format!("raw rows handed over by ingest: {e}")))?;
                small.clear();
                out.push(one);
            }
        }
        Ok(())
    };
    for (version, batches) in versions {
        for b in &batches {
            let read = read_columns(b, None, version, envelopes, property)
                .map_err(|e| Error::Internal(format!("raw rows of version {version} handed over by ingest: {e}")))?;
            rows += read.num_rows();
            small.push(read);
            if rows >= READ_BATCH_ROWS {
                gather(&mut small, &mut out)?;
                rows = 0;
            }
        }
    }
    gather(&mut small, &mut out)?;
    Ok(out)
}

/// Rows per batch of raw rows read.
const READ_BATCH_ROWS: usize = 8192;

/// The processing columns of raw rows `b` (a raw Parquet file's projection,
/// or rows as ingest wrote them) committed in `version`. `date` is the
/// file's partition value; without it the rows' own partition column is read.
fn read_columns(
    b: &RecordBatch,
    date: Option<i32>,
    version: u64,
    envelopes: bool,
    property: Option<&str>,
) -> std::result::Result<RecordBatch, String> {
    let n = b.num_rows();
    let column = |name: &str, t: &DataType| -> std::result::Result<ArrayRef, String> {
        let c = b.column_by_name(name).ok_or_else(|| format!("no column {name}"))?;
        cast(c, t).map_err(|e| e.to_string())
    };
    let date = match date {
        Some(d) => Arc::new(Date32Array::from(vec![d; n])) as ArrayRef,
        None => column(RAW_PARTITION_COLUMN, &DataType::Date32)?,
    };
    let system = b.column_by_name("system_properties").map(|c| c.as_ref());
    let properties = b.column_by_name("properties").map(|c| c.as_ref());
    let [content_type, content_encoding] = match envelopes {
        true => envelope_columns(n, system, properties),
        false => envelope_columns(n, None, None),
    };
    let discriminator = match property {
        Some(key) => property_column(n, properties, system, key),
        None => property_column(n, None, None, ""),
    };
    let columns = vec![
        column("partition_id", &DataType::Utf8)?,
        column("sequence_number", &DataType::Int64)?,
        column("enqueued_time", &utc_micros())?,
        date,
        column("source_file", &DataType::Utf8)?,
        column("body", &DataType::Binary)?,
        content_type,
        content_encoding,
        discriminator,
        Arc::new(Int64Array::from(vec![version as i64; n])) as ArrayRef,
    ];
    RecordBatch::try_new(raw_read_schema(), columns).map_err(|e| e.to_string())
}

/// `batch` with its buffers cut to their length. The Parquet reader grows
/// a batch's bodies by doubling, so they hold up to twice their size; a
/// range's raw rows are held while they are checked (and the next range's
/// meanwhile), and the slack measured ~0.2 GB of a 10M run's peak.
fn shrunk(batch: RecordBatch) -> std::result::Result<RecordBatch, deltalake::arrow::error::ArrowError> {
    let (schema, mut columns, rows) = batch.into_parts();
    for column in &mut columns {
        // Only a column no one else holds can give memory back.
        if let Some(c) = Arc::get_mut(column) {
            c.shrink_to_fit();
        }
    }
    RecordBatch::try_new_with_options(schema, columns, &RecordBatchOptions::new().with_row_count(Some(rows)))
}

/// [`read_raw`] through the change feed (any kind of version).
async fn read_raw_changes(raw: &DeltaTable, from: u64, to: u64, property: Option<&str>) -> Result<Vec<RecordBatch>> {
    // One partition: the read runs beside the previous range's writes (see
    // `Run` in run.rs), and DataFusion's repartitioning only copied rows here.
    let ctx = deltalake::datafusion::prelude::SessionContext::new_with_config(
        expectations::session().copied_config().with_target_partitions(1),
    );
    let builder = raw.clone().scan_cdf().with_starting_version(from as _).with_ending_version(to as _);
    let provider = DeltaCdfTableProvider::try_new(builder).map_err(|e| Error::delta(raw.table_url(), e))?;
    let df_err = |e: deltalake::datafusion::error::DataFusionError| {
        let url = crate::storage::redact(raw.table_url().as_str());
        Error::query(&url, &e, || Error::Internal(format!("reading the change feed of {url}: {e}")))
    };
    ctx.register_table("raw_changes", Arc::new(provider)).map_err(df_err)?;
    let batches = ctx
        .sql(
            "SELECT partition_id, sequence_number, enqueued_time, enqueued_date, source_file, body, \
             system_properties, properties, _commit_version FROM raw_changes WHERE _change_type = 'insert'",
        )
        .await
        .map_err(df_err)?
        .collect()
        .await
        .map_err(df_err)?;
    let schema = raw_read_schema();
    let mut out = Vec::with_capacity(batches.len());
    for b in batches {
        let [content_type, content_encoding] =
            envelope_columns(b.num_rows(), Some(b.column(6).as_ref()), Some(b.column(7).as_ref()));
        let discriminator = match property {
            Some(key) => property_column(b.num_rows(), Some(b.column(7).as_ref()), Some(b.column(6).as_ref()), key),
            None => property_column(b.num_rows(), None, None, ""),
        };
        let mut given: Vec<ArrayRef> = b.columns()[..6].to_vec();
        given.extend([content_type, content_encoding, discriminator, b.column(8).clone()]);
        let columns = schema
            .fields()
            .iter()
            .zip(&given)
            .map(|(f, c)| cast(c, f.data_type()))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::Internal(format!("raw change feed: {e}")))?;
        out.push(
            RecordBatch::try_new(schema.clone(), columns)
                .map_err(|e| Error::Internal(format!("raw change feed: {e}")))?,
        );
    }
    Ok(out)
}
