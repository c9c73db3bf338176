//! What changed between the stored rows of a scope and their recomputation.
//!
//! Rows are matched on the key and compared on every other column through
//! Arrow's row format, so equality is exact per type (decimals by value,
//! floats by bit pattern) and an aggregate recomputed to the same value is
//! not rewritten: the change feed shows only rows whose values moved.

use std::collections::HashMap;
use std::sync::Arc;

use deltalake::arrow::array::{ArrayRef, RecordBatch, StringArray, UInt32Array};
use deltalake::arrow::compute::{concat_batches, take_record_batch};
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use deltalake::arrow::row::{RowConverter, SortField};

/// The column of a change batch that says what to do with the row.
pub const OP_COLUMN: &str = "__weir_op";

/// The changes of one scope, ready to merge.
#[derive(Debug)]
pub struct Changes {
    /// New rows and new values of changed rows (with all columns), then the
    /// stored rows to remove; [`OP_COLUMN`] says which.
    pub batch: RecordBatch,
    /// Rows to insert.
    pub inserted: u64,
    /// Rows whose values changed.
    pub updated: u64,
    /// Stored rows no longer produced.
    pub deleted: u64,
    /// Rows recomputed to the values already stored.
    pub unchanged: u64,
}

impl Changes {
    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.inserted + self.updated + self.deleted == 0
    }
}

/// Why two row sets cannot be compared.
#[derive(Debug, PartialEq, Eq)]
pub enum DiffError {
    /// The recomputed rows hold a key twice.
    DuplicateKey(String),
    /// A key column is null in a recomputed row.
    NullKey(String),
    /// Arrow failed (types that cannot be compared).
    Arrow(String),
}

/// Compares `new` (the model's rows for a scope) with `old` (the stored rows
/// of that scope); both must have `schema`.
pub fn diff(
    schema: &SchemaRef,
    key: &[String],
    new: &[RecordBatch],
    old: &[RecordBatch],
) -> Result<Changes, DiffError> {
    let arrow = |e: deltalake::arrow::error::ArrowError| DiffError::Arrow(e.to_string());
    let new = concat_batches(schema, new).map_err(arrow)?;
    let old = concat_batches(schema, old).map_err(arrow)?;
    let key_idx: Vec<usize> = key.iter().map(|k| schema.index_of(k)).collect::<Result<_, _>>().map_err(arrow)?;
    let value_idx: Vec<usize> = (0..schema.fields().len()).filter(|i| !key_idx.contains(i)).collect();
    let converter = |idx: &[usize]| {
        RowConverter::new(idx.iter().map(|&i| SortField::new(schema.field(i).data_type().clone())).collect())
    };
    let pick = |b: &RecordBatch, idx: &[usize]| -> Vec<ArrayRef> { idx.iter().map(|&i| b.column(i).clone()).collect() };
    let keys = converter(&key_idx).map_err(arrow)?;
    let values = converter(&value_idx).map_err(arrow)?;
    let new_keys = keys.convert_columns(&pick(&new, &key_idx)).map_err(arrow)?;
    let old_keys = keys.convert_columns(&pick(&old, &key_idx)).map_err(arrow)?;
    let new_values = values.convert_columns(&pick(&new, &value_idx)).map_err(arrow)?;
    let old_values = values.convert_columns(&pick(&old, &value_idx)).map_err(arrow)?;

    for &i in &key_idx {
        if let Some(row) = (0..new.num_rows()).find(|&r| new.column(i).is_null(r)) {
            return Err(DiffError::NullKey(describe(&new, &key_idx, row)));
        }
    }
    let mut seen: HashMap<&[u8], usize> = HashMap::with_capacity(new.num_rows());
    for r in 0..new.num_rows() {
        if seen.insert(new_keys.row(r).data(), r).is_some() {
            return Err(DiffError::DuplicateKey(describe(&new, &key_idx, r)));
        }
    }
    let stored: HashMap<&[u8], usize> = (0..old.num_rows()).map(|r| (old_keys.row(r).data(), r)).collect();

    let (mut inserts, mut updates, mut unchanged) = (Vec::new(), Vec::new(), 0u64);
    let mut matched = vec![false; old.num_rows()];
    for r in 0..new.num_rows() {
        match stored.get(new_keys.row(r).data()) {
            None => inserts.push(r as u32),
            Some(&o) => {
                matched[o] = true;
                if new_values.row(r) == old_values.row(o) {
                    unchanged += 1;
                } else {
                    updates.push(r as u32);
                }
            }
        }
    }
    let deletes: Vec<u32> = (0..old.num_rows()).filter(|&o| !matched[o]).map(|o| o as u32).collect();

    let out_schema = with_op(schema);
    let tagged = |b: &RecordBatch, rows: &[u32], op: &str| -> Result<RecordBatch, DiffError> {
        let picked = take_record_batch(b, &UInt32Array::from(rows.to_vec())).map_err(arrow)?;
        let mut columns = picked.columns().to_vec();
        columns.push(Arc::new(StringArray::from(vec![op; rows.len()])));
        RecordBatch::try_new(out_schema.clone(), columns).map_err(arrow)
    };
    let parts =
        [tagged(&new, &inserts, "insert")?, tagged(&new, &updates, "update")?, tagged(&old, &deletes, "delete")?];
    Ok(Changes {
        batch: concat_batches(&out_schema, &parts).map_err(arrow)?,
        inserted: inserts.len() as u64,
        updated: updates.len() as u64,
        deleted: deletes.len() as u64,
        unchanged,
    })
}

fn with_op(schema: &SchemaRef) -> SchemaRef {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(OP_COLUMN, DataType::Utf8, false));
    Arc::new(Schema::new(fields))
}

/// `userId=u-1, date=2026-11-01` for messages.
fn describe(batch: &RecordBatch, idx: &[usize], row: usize) -> String {
    use deltalake::arrow::util::display::{ArrayFormatter, FormatOptions};
    let options = FormatOptions::default().with_null("null");
    idx.iter()
        .map(|&i| {
            let name = batch.schema().field(i).name().clone();
            let value = ArrayFormatter::try_new(batch.column(i).as_ref(), &options)
                .map(|f| f.value(row).to_string())
                .unwrap_or_else(|_| "?".to_string());
            format!("{name}={value}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::array::{AsArray, Int64Array};

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("k", DataType::Utf8, true), Field::new("v", DataType::Int64, true)]))
    }

    fn rows(pairs: &[(Option<&str>, Option<i64>)]) -> RecordBatch {
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(StringArray::from(pairs.iter().map(|p| p.0).collect::<Vec<_>>())),
                Arc::new(Int64Array::from(pairs.iter().map(|p| p.1).collect::<Vec<_>>())),
            ],
        )
        .unwrap()
    }

    fn ops(c: &Changes) -> Vec<(String, String, Option<i64>)> {
        let b = &c.batch;
        let mut out: Vec<_> = (0..b.num_rows())
            .map(|r| {
                let v = b.column(1).as_primitive::<deltalake::arrow::datatypes::Int64Type>();
                (
                    b.column(2).as_string::<i32>().value(r).to_string(),
                    b.column(0).as_string::<i32>().value(r).to_string(),
                    (!v.is_null(r)).then(|| v.value(r)),
                )
            })
            .collect();
        out.sort();
        out
    }

    use deltalake::arrow::array::Array;

    #[test]
    fn classifies_inserts_updates_deletes_and_unchanged() {
        let old = rows(&[(Some("a"), Some(1)), (Some("b"), Some(2)), (Some("c"), Some(3)), (Some("n"), None)]);
        let new = rows(&[(Some("a"), Some(1)), (Some("b"), Some(20)), (Some("d"), Some(4)), (Some("n"), Some(0))]);
        let c = diff(&schema(), &["k".to_string()], &[new], &[old]).unwrap();
        assert_eq!((c.inserted, c.updated, c.deleted, c.unchanged), (1, 2, 1, 1));
        assert_eq!(
            ops(&c),
            vec![
                ("delete".to_string(), "c".to_string(), Some(3)),
                ("insert".to_string(), "d".to_string(), Some(4)),
                ("update".to_string(), "b".to_string(), Some(20)),
                ("update".to_string(), "n".to_string(), Some(0)),
            ]
        );
    }

    #[test]
    fn null_to_null_is_unchanged() {
        let old = rows(&[(Some("a"), None)]);
        let c = diff(&schema(), &["k".to_string()], std::slice::from_ref(&old), std::slice::from_ref(&old)).unwrap();
        assert!(c.is_empty());
        assert_eq!(c.unchanged, 1);
    }

    #[test]
    fn refuses_duplicate_and_null_keys() {
        let dup = rows(&[(Some("a"), Some(1)), (Some("a"), Some(2))]);
        assert_eq!(
            diff(&schema(), &["k".to_string()], &[dup], &[]).unwrap_err(),
            DiffError::DuplicateKey("k=a".into())
        );
        let null = rows(&[(None, Some(1))]);
        assert_eq!(diff(&schema(), &["k".to_string()], &[null], &[]).unwrap_err(), DiffError::NullKey("k=null".into()));
    }
}
