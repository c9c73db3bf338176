//! Getting rows out of Weir's tables for anyone downstream: a table's change
//! feed (`weir changes`) and the file formats both it and `weir features`
//! write.
//!
//! Formats: JSON lines (one object per row; timestamps RFC 3339 in UTC,
//! decimals as exact strings so no float rounds a cent), CSV with a header,
//! and Parquet (types as in the table). JSON lines and CSV can go to
//! stdout; Parquet needs a file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use deltalake::datafusion::error::DataFusionError;
use deltalake::delta_datafusion::DeltaCdfTableProvider;

use crate::storage::Location;
use crate::{delta, Error, Result};

/// Output file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line.
    Jsonl,
    /// Comma-separated with a header line.
    Csv,
    /// Apache Parquet.
    Parquet,
}

impl Format {
    /// Parses `jsonl`, `csv` or `parquet`.
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "jsonl" | "json" | "ndjson" => Some(Format::Jsonl),
            "csv" => Some(Format::Csv),
            "parquet" => Some(Format::Parquet),
            _ => None,
        }
    }

    /// The format a file name's extension implies.
    pub fn from_path(path: &Path) -> Option<Format> {
        path.extension().and_then(|e| e.to_str()).and_then(|e| Format::parse(&e.to_ascii_lowercase()))
    }
}

/// Writes `batches` to `output` (stdout when `None`).
pub fn write(batches: &[RecordBatch], schema: &SchemaRef, format: Format, output: Option<&Path>) -> Result<u64> {
    let Some(path) = output else { return write_to(batches, schema, format, None) };
    // Into a file beside the output, renamed over it once complete: a
    // failed export leaves no partial file behind.
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let partial = path.with_file_name(format!(".{name}.partial"));
    let result = write_to(batches, schema, format, Some(&partial)).and_then(|rows| {
        std::fs::rename(&partial, path).map(|()| rows).map_err(|source| Error::Io { path: path.to_path_buf(), source })
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

fn write_to(batches: &[RecordBatch], schema: &SchemaRef, format: Format, output: Option<&Path>) -> Result<u64> {
    let io = |path: Option<&Path>| {
        let path = path.map_or_else(|| PathBuf::from("<stdout>"), Path::to_path_buf);
        move |source: std::io::Error| Error::Io { path: path.clone(), source }
    };
    let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
    let sink: Box<dyn Write + Send> = match output {
        Some(p) => Box::new(std::io::BufWriter::new(std::fs::File::create(p).map_err(io(Some(p)))?)),
        None if format == Format::Parquet => {
            return Err(Error::BadInput {
                path: PathBuf::from("<stdout>"),
                message: "Parquet output needs --output FILE".into(),
            })
        }
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    };
    let arrow = |e: deltalake::arrow::error::ArrowError| Error::Io {
        path: output.map_or_else(|| PathBuf::from("<stdout>"), Path::to_path_buf),
        source: std::io::Error::other(e.to_string()),
    };
    match format {
        Format::Parquet => {
            let mut w = deltalake::parquet::arrow::ArrowWriter::try_new(sink, schema.clone(), None)
                .map_err(|e| arrow(e.into()))?;
            for b in batches {
                w.write(b).map_err(|e| arrow(e.into()))?;
            }
            w.close().map_err(|e| arrow(e.into()))?;
        }
        Format::Csv => {
            let mut w = deltalake::arrow::csv::WriterBuilder::new().with_header(true).build(sink);
            for b in batches {
                w.write(&text_friendly(b, true)?).map_err(arrow)?;
            }
        }
        Format::Jsonl => {
            let mut w = deltalake::arrow::json::LineDelimitedWriter::new(sink);
            for b in batches {
                w.write(&text_friendly(b, false)?).map_err(arrow)?;
            }
            w.finish().map_err(arrow)?;
            w.into_inner().flush().map_err(io(output))?;
        }
    }
    Ok(rows)
}

/// Decimals as exact strings (a JSON number would be read back as a
/// float); with `nested_as_json`, records, arrays and maps as JSON text.
fn text_friendly(b: &RecordBatch, nested_as_json: bool) -> Result<RecordBatch> {
    let mut fields = Vec::with_capacity(b.num_columns());
    let mut columns = Vec::with_capacity(b.num_columns());
    for (f, c) in b.schema().fields().iter().zip(b.columns()) {
        let nested = matches!(
            f.data_type(),
            DataType::Struct(_)
                | DataType::List(_)
                | DataType::LargeList(_)
                | DataType::FixedSizeList(_, _)
                | DataType::Map(_, _)
        );
        if matches!(f.data_type(), DataType::Decimal128(_, _) | DataType::Decimal256(_, _)) {
            columns.push(cast(c, &DataType::Utf8).map_err(|e| Error::Internal(e.to_string()))?);
            fields.push(Field::new(f.name(), DataType::Utf8, f.is_nullable()));
        } else if nested && nested_as_json {
            columns.push(json_text(f, c)?);
            fields.push(Field::new(f.name(), DataType::Utf8, true));
        } else {
            columns.push(c.clone());
            fields.push(f.as_ref().clone());
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| Error::Internal(e.to_string()))
}

/// A nested column (record, array, map) as one JSON text per row, as the
/// JSON lines output writes it: CSV has no nested cells.
fn json_text(field: &Field, column: &deltalake::arrow::array::ArrayRef) -> Result<deltalake::arrow::array::ArrayRef> {
    let err = |e: &dyn std::fmt::Display| Error::Internal(format!("column {} as JSON: {e}", field.name()));
    let one =
        RecordBatch::try_new(Arc::new(Schema::new(vec![field.clone()])), vec![column.clone()]).map_err(|e| err(&e))?;
    // One `{"name":value}` line per row (`{}` for a null): the value's text
    // is cut out as written, so fields keep their order.
    let mut w = deltalake::arrow::json::LineDelimitedWriter::new(Vec::new());
    w.write(&text_friendly(&one, false)?).map_err(|e| err(&e))?;
    w.finish().map_err(|e| err(&e))?;
    let text = String::from_utf8(w.into_inner()).map_err(|e| err(&e))?;
    let prefix = format!("{{{}:", serde_json::Value::from(field.name().as_str()));
    let texts: Vec<Option<String>> = text
        .lines()
        .map(|line| line.strip_prefix(&prefix).and_then(|v| v.strip_suffix('}')).map(str::to_string))
        .collect();
    if texts.len() != column.len() {
        return Err(err(&format!("{} lines for {} rows", texts.len(), column.len())));
    }
    Ok(Arc::new(deltalake::arrow::array::StringArray::from(texts)))
}

/// The change feed of the table at `location` for versions `from..=to`
/// (`to` defaults to the latest), ordered by commit version: the table's
/// columns plus `_change_type`, `_commit_version`, `_commit_timestamp`.
pub async fn changes(location: &Location, from: u64, to: Option<u64>) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let table = delta::open(location).await?.ok_or_else(|| Error::InvalidLocation {
        location: location.to_string(),
        reason: "no Delta table here".into(),
    })?;
    let latest = table.version().unwrap_or(0);
    let to = to.unwrap_or(latest).min(latest);
    let url = location.to_string();
    let err = |e: DataFusionError| Error::query(&url, &e, || Error::Internal(format!("change feed of {url}: {e}")));
    let ctx = crate::expectations::session();
    let schema = delta::arrow_schema(&table)?;
    let columns: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .chain(["_change_type", "_commit_version", "_commit_timestamp"].map(String::from))
        .map(|n| format!("\"{}\"", n.replace('"', "\"\"")))
        .collect();
    if from > to {
        // Nothing committed in the range: an empty feed, not an error, so a
        // consumer polling with its last version + 1 just gets no rows.
        return plain(vec![], &schema);
    }
    let oldest = delta::oldest_commit(&table).await?;
    if oldest.is_some_and(|oldest| from < oldest) {
        return Err(Error::Request {
            message: format!(
                "{url}: versions before {} are no longer in the table's log (removed by log cleanup or an erase --purge); read the change feed from --from-version {0}, or the table itself for what came before",
                oldest.unwrap_or_default()
            ),
        });
    }
    let builder = table.scan_cdf().with_starting_version(from).with_ending_version(to);
    let provider = DeltaCdfTableProvider::try_new(builder).map_err(|e| Error::delta(&url, e))?;
    ctx.register_table("changes", Arc::new(provider)).map_err(err)?;
    let df = ctx.sql(&format!("SELECT {} FROM changes", columns.join(", "))).await.map_err(err)?;
    let batches = df.collect().await.map_err(err)?;
    let (schema, batches) = plain(batches, &schema)?;
    Ok((schema.clone(), sorted(&schema, &batches)?))
}

/// Ordered by commit version, then change type (DataFusion 55 cannot sort
/// a change-feed scan with no files, so the sort happens here).
fn sorted(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<RecordBatch>> {
    use deltalake::arrow::compute::{concat_batches, lexsort_to_indices, take_record_batch, SortColumn};
    if batches.is_empty() {
        return Ok(vec![]);
    }
    let err = |e: deltalake::arrow::error::ArrowError| Error::Internal(format!("sorting the change feed: {e}"));
    let all = concat_batches(schema, batches).map_err(err)?;
    let key = |name: &str| -> Result<SortColumn> {
        let values = all.column_by_name(name).ok_or_else(|| Error::Internal(format!("{name} missing")))?.clone();
        Ok(SortColumn { values, options: None })
    };
    let indices = lexsort_to_indices(&[key("_commit_version")?, key("_change_type")?], None).map_err(err)?;
    Ok(vec![take_record_batch(&all, &indices).map_err(err)?])
}

/// Casts scan output (view types, partition columns as dictionaries,
/// timestamps without zone) to the table's types.
fn plain(batches: Vec<RecordBatch>, table: &Schema) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let Some(first) = batches.first() else {
        let mut fields: Vec<Field> = table.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new("_change_type", DataType::Utf8, false));
        fields.push(Field::new("_commit_version", DataType::Int64, false));
        fields.push(Field::new("_commit_timestamp", crate::capture::decode::utc_micros(), false));
        return Ok((Arc::new(Schema::new(fields)), vec![]));
    };
    let fields: Vec<Field> = first
        .schema()
        .fields()
        .iter()
        .map(|f| {
            let ty = match table.field_with_name(f.name()) {
                Ok(t) => t.data_type().clone(),
                Err(_) if f.name() == "_commit_timestamp" => crate::capture::decode::utc_micros(),
                Err(_) if matches!(f.data_type(), DataType::Utf8View | DataType::Dictionary(_, _)) => DataType::Utf8,
                Err(_) => f.data_type().clone(),
            };
            Field::new(f.name(), ty, true)
        })
        .collect();
    let schema: SchemaRef = Arc::new(Schema::new(fields));
    let out = batches
        .iter()
        .map(|b| {
            let columns = b
                .columns()
                .iter()
                .zip(schema.fields())
                .map(|(c, f)| cast(c, f.data_type()))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| Error::Internal(e.to_string()))?;
            RecordBatch::try_new(schema.clone(), columns).map_err(|e| Error::Internal(e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((schema, out))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use deltalake::arrow::array::{Array, Int64Array, ListArray, RecordBatch, StringArray, StructArray};
    use deltalake::arrow::datatypes::{DataType, Field, Int64Type, Schema};

    use super::{write, Format};

    /// CSV has no nested cells: records and arrays are written as the JSON
    /// text JSON lines holds for them, nulls as empty cells.
    #[test]
    fn nested_columns_are_json_text_in_csv() {
        let props = StructArray::from(vec![
            (
                Arc::new(Field::new("page", DataType::Utf8, true)),
                Arc::new(StringArray::from(vec![Some("/a,b"), None])) as _,
            ),
            (
                Arc::new(Field::new("ms", DataType::Int64, true)),
                Arc::new(Int64Array::from(vec![Some(5), Some(7)])) as _,
            ),
        ]);
        let tags = ListArray::from_iter_primitive::<Int64Type, _, _>(vec![Some(vec![Some(1), Some(2)]), None]);
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("props", props.data_type().clone(), true),
            Field::new("tags", tags.data_type().clone(), true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from(vec![1, 2])), Arc::new(props), Arc::new(tags)],
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("changes.csv");
        assert_eq!(write(&[batch], &schema, Format::Csv, Some(&out)).unwrap(), 2);
        let text = std::fs::read_to_string(&out).unwrap();
        assert_eq!(
            text,
            "id,props,tags\n1,\"{\"\"page\"\":\"\"/a,b\"\",\"\"ms\"\":5}\",\"[1,2]\"\n2,\"{\"\"ms\"\":7}\",\n"
        );
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, ["changes.csv"], "no partial file is left");
    }

    /// Versions whose commits log cleanup or a purge removed cannot be
    /// read: a request error naming the oldest readable version, not an
    /// internal one.
    #[tokio::test]
    async fn a_feed_from_before_the_oldest_commit_is_a_request_error() {
        let dir = tempfile::tempdir().unwrap();
        let location = crate::storage::Location::parse(dir.path().join("t").to_str().unwrap()).unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
        let spec = crate::delta::TableSpec {
            name: "t".into(),
            description: None,
            schema: schema.clone(),
            partition_columns: vec![],
        };
        let mut table = crate::delta::open_or_create(&location, &spec).await.unwrap();
        for i in 0..3 {
            let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(vec![i]))]).unwrap();
            table = crate::delta::write_with_progress(table, vec![batch], Default::default()).await.unwrap();
        }
        // As log cleanup leaves it: a checkpoint, the oldest commits gone.
        deltalake::checkpoints::create_checkpoint(&table, None).await.unwrap();
        std::fs::remove_file(dir.path().join("t/_delta_log/00000000000000000000.json")).unwrap();
        std::fs::remove_file(dir.path().join("t/_delta_log/00000000000000000001.json")).unwrap();
        let e = super::changes(&location, 0, None).await.unwrap_err();
        assert_eq!(e.class(), crate::ErrorClass::Config, "{e}");
        assert!(e.to_string().contains("versions before 2 are no longer in the table's log"), "{e}");
        let (_, rows) = super::changes(&location, 2, None).await.unwrap();
        assert_eq!(rows.iter().map(|b| b.num_rows()).sum::<usize>(), 2, "versions 2 and 3");
    }
}
