//! Schema comparison and conformance: what a table's schema and the schema
//! a stage now produces have in common, what the new one adds (nullable
//! columns, evolved on append) and what would break the table.
//!
//! Hazard: Delta names list and map children differently from Arrow's
//! defaults, so types compare structurally, never with `==`.

use std::sync::Arc;

use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType, Schema};

use crate::{Error, Result};

/// Differences between a table's schema and the one the pipeline now
/// produces: (columns that would be added, breaking changes with advice).
pub fn schema_changes(table: &Schema, wanted: &Schema) -> (Vec<String>, Vec<String>) {
    let mut added = Vec::new();
    let mut breaking = Vec::new();
    for f in wanted.fields() {
        match table.field_with_name(f.name()) {
            Err(_) if f.is_nullable() => added.push(f.name().clone()),
            Err(_) => breaking.push(format!(
                "new required field {:?}: rows already in the table have no value for it; make it optional (a union with null, default null) or write to a new table",
                f.name()
            )),
            Ok(t) => {
                if !same_type(t.data_type(), f.data_type()) {
                    breaking.push(format!(
                        "field {:?} changed type from {} to {}: existing files cannot be read as the new type; keep the old type, add a new field under a new name, or write to a new table",
                        f.name(),
                        t.data_type(),
                        f.data_type()
                    ));
                } else if t.is_nullable() && !f.is_nullable() {
                    breaking.push(format!(
                        "field {:?} became required: rows already in the table may lack it; keep it optional",
                        f.name()
                    ));
                } else if !t.is_nullable() && f.is_nullable() {
                    breaking.push(format!(
                        "field {:?} became optional but the table column is NOT NULL; keep it required, or drop the NOT NULL constraint on the table first",
                        f.name()
                    ));
                }
            }
        }
    }
    for t in table.fields() {
        if wanted.field_with_name(t.name()).is_err() {
            breaking.push(format!(
                "field {:?} was removed (or is now dropped by a PII rule) but the table has it; keep it in the schema as an optional field, or write to a new table",
                t.name()
            ));
        }
    }
    (added, breaking)
}

/// Types equal up to names of list/map child fields and nested nullability
/// (Delta names them differently from Arrow's defaults).
fn same_type(a: &DataType, b: &DataType) -> bool {
    use DataType as D;
    match (a, b) {
        (D::Utf8 | D::LargeUtf8 | D::Utf8View, D::Utf8 | D::LargeUtf8 | D::Utf8View) => true,
        (D::Binary | D::LargeBinary | D::BinaryView, D::Binary | D::LargeBinary | D::BinaryView) => true,
        (D::List(x) | D::LargeList(x), D::List(y) | D::LargeList(y)) => same_type(x.data_type(), y.data_type()),
        // Entries are (key, value) whatever their names: Arrow's
        // `entries`/`keys`/`values`, Delta's `key_value`/`key`/`value`.
        (D::Map(x, _), D::Map(y, _)) => match (x.data_type(), y.data_type()) {
            (D::Struct(p), D::Struct(q)) if p.len() == 2 && q.len() == 2 => {
                same_type(p[0].data_type(), q[0].data_type()) && same_type(p[1].data_type(), q[1].data_type())
            }
            _ => false,
        },
        (D::Struct(x), D::Struct(y)) => {
            x.len() == y.len()
                && x.iter().zip(y.iter()).all(|(p, q)| p.name() == q.name() && same_type(p.data_type(), q.data_type()))
        }
        _ => a == b,
    }
}

/// Casts columns the table already has to the table's types (Delta's names
/// for list and map children differ from Arrow's defaults); new columns pass.
pub fn conform(batch: &RecordBatch, table: &Schema) -> Result<RecordBatch> {
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (f, c) in batch.schema().fields().iter().zip(batch.columns()) {
        match table.field_with_name(f.name()) {
            Ok(t) if t.data_type() != f.data_type() => {
                columns.push(cast(c, t.data_type()).map_err(arrow_err(f.name()))?);
                fields.push(t.clone().with_nullable(f.is_nullable()));
            }
            _ => {
                columns.push(c.clone());
                fields.push(f.as_ref().clone());
            }
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(arrow_err("conform"))
}

fn arrow_err(context: &str) -> impl Fn(deltalake::arrow::error::ArrowError) -> Error + '_ {
    move |e| Error::Internal(format!("{context}: {e}"))
}
