//! Event bodies: JSON bodies parsed into typed Arrow columns by an Avro
//! schema file (`.avsc`).
//!
//! Bodies in other formats (compressed JSON, binary Avro, Schema Registry
//! and Confluent Avro) are turned into JSON first by [`framing`], so every
//! format shares this module's semantics.
//!
//! The process stage reads the raw table's `body` column (bytes) and calls
//! [`BodySchema::decode`], which returns one typed row per body plus a
//! `_rescued` column ([`RESCUED_COLUMN`]) and a list of rows that failed,
//! each with a reason. Decoding never fails because of a bad body: bad rows
//! come back all-null with their reason in [`ParsedBodies::failures`].
//!
//! # Avro to Arrow
//!
//! | Avro | Arrow |
//! |------|-------|
//! | `["null", T]` / `[T, "null"]` | T, nullable |
//! | `boolean`, `int`, `long`, `float`, `double` | `Boolean`, `Int32`, `Int64`, `Float32`, `Float64` |
//! | `string` (also `logicalType: uuid`, checked `8-4-4-4-12` hex) | `Utf8` |
//! | `string` with `"weir.timestamp": "iso8601"` | `Timestamp(Microsecond, "UTC")` |
//! | `long` `timestamp-millis` / `timestamp-micros` (JSON integer) | `Timestamp(Microsecond, "UTC")` |
//! | `int` `date` (JSON integer days, or a `"YYYY-MM-DD"` string) | `Date32` |
//! | `bytes` / `fixed` `decimal(p, s)` (JSON string or number) | `Decimal128(p, s)` |
//! | `bytes` / `fixed` without logical type | `Utf8`: the JSON string as received |
//! | `enum` | `Utf8` (values checked against the symbols) |
//! | `record` | `Struct` |
//! | `array` | `List` (items nullable, named `item`) |
//! | `map` | `Map` (`entries` struct of non-null `keys: Utf8` and nullable `values`) |
//!
//! Top-level required fields are non-nullable in [`BodySchema::arrow_schema`];
//! every nested field is nullable. Named types (record, enum, fixed) may be
//! referenced after their definition by short or full name. Other unions,
//! recursive types and a bare `"null"` type are refused with a
//! [`SchemaError`]. Unknown logical types (`time-millis`,
//! `local-timestamp-*`, ...) fall back to their base type, as the Avro
//! specification says.
//!
//! # How a batch is decoded
//!
//! 1. A light per-row pre-pass (serde_json, leaf values only skipped as raw
//!    text) finds null bodies, invalid UTF-8 or JSON, non-objects, repeated
//!    keys, missing or null required fields, JSON kinds that do not match the
//!    schema, integers that are not integers or out of range, and unknown
//!    fields. Failing rows
//!    are not decoded further.
//! 2. The other rows are fed to arrow-json's `Decoder` in chunks of
//!    [`CHUNK_ROWS`] rows. Values parsed from text (ISO timestamps, decimals,
//!    dates) are decoded as `Utf8`, epoch timestamps as `Int64`.
//! 3. Columns are converted to their final types column by column (arrow
//!    casts and tight loops, nested structs, lists and maps included); an
//!    element whose text does not parse fails its row.
//! 4. Should arrow-json still reject a chunk, it is bisected until the rows
//!    it rejects are isolated; the others decode normally.
//!
//! # Hazards
//!
//! - Avro `default`s are not applied: a missing optional field is null, a
//!   missing required field fails the row (as does a required field that is
//!   null).
//! - Unknown fields (at the top level and in nested records, also records
//!   inside arrays and maps) are never dropped: they go to `_rescued` as one
//!   JSON object per row whose keys are paths (`"referrer"`,
//!   `"properties.extra"`, `"items[2].note"`, `"attrs.k.extra"`) and whose
//!   values are the raw JSON text. Map keys are written unescaped into the
//!   path, so a key containing `.` makes the path ambiguous.
//! - Decimals are never rounded: more significant fractional digits than the
//!   scale, or more digits than the precision, fail the row. Trailing zeros
//!   beyond the scale (`"12.340"` for scale 2) are exact and accepted.
//! - ISO-8601 parsing is arrow's: besides RFC 3339 it accepts a space for
//!   `T`, no zone (taken as UTC) and a date alone (midnight UTC).
//! - `bytes` without a logical type are not decoded from Avro's JSON
//!   encoding (one code point per byte): the string is kept as received.
//! - A row that fails for several reasons reports the first one found.
//! - A key repeated in any object of a body (`{"userId": "a", "userId":
//!   "b"}`, also in nested records, maps and unknown fields) fails the row
//!   with `duplicate key "<path>"`: JSON gives such a body no single
//!   meaning, so it is never decoded (ingest's subject columns hold null for
//!   it, see [`subject`]).

pub mod avro;
mod convert;
pub mod framing;
mod prepass;
mod schema;
pub mod subject;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use deltalake::arrow::array::{new_null_array, Array, ArrayRef, AsArray, RecordBatch, StringArray};
use deltalake::arrow::compute::{concat_batches, interleave};
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use deltalake::arrow::error::ArrowError;
use deltalake::arrow::json::reader::ReaderBuilder;

use self::convert::{convert, prefixed};
use self::prepass::{check_body, RowState};
use self::schema::{parse_avsc, RecordDef};

/// Name of the column holding fields the schema does not know.
pub const RESCUED_COLUMN: &str = "_rescued";

/// Rows decoded by arrow-json at once (one flush per chunk). Measured on
/// ~420-byte bodies: 2048 rows (~1 MB of JSON) keeps arrow-json's tape in
/// cache and decodes ~10-20% faster than 8192; one flush for 200k rows is
/// ~1.5x slower.
pub const CHUNK_ROWS: usize = 2048;

/// A schema that cannot be used, or a batch that cannot be decoded at all
/// (an unsupported body column type, an internal Arrow error).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{origin}: {}{message}", if .path.is_empty() { String::new() } else { format!("field '{}': ", .path) })]
pub struct SchemaError {
    /// Where the schema came from (usually the file name).
    pub origin: String,
    /// Dotted path of the field concerned (`properties.durationMs`,
    /// `tags[]` for array items, `attrs{}` for map values), empty when the
    /// error concerns the whole schema or batch.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// A parsed `.avsc` body schema.
#[derive(Debug, Clone)]
pub struct BodySchema {
    origin: String,
    root: Arc<RecordDef>,
    /// Final types, top-level nullability as in Avro.
    arrow_schema: SchemaRef,
    /// Final types, all nullable (the typed part of the output).
    typed_schema: SchemaRef,
    /// What arrow-json decodes into, all nullable.
    decode_schema: SchemaRef,
    /// `typed_schema` followed by `_rescued`.
    output_schema: SchemaRef,
}

/// The result of decoding N bodies.
#[derive(Debug, Clone)]
pub struct ParsedBodies {
    /// Exactly N rows, in input order: the body fields (same names and types
    /// as [`BodySchema::arrow_schema`] but all nullable) followed by a
    /// nullable `_rescued` Utf8 column. Rows that failed are all-null.
    pub batch: RecordBatch,
    /// (row index, human-readable reason) for each failed row, sorted by row.
    pub failures: Vec<(usize, String)>,
}

impl BodySchema {
    /// Reads and parses an `.avsc` file. Errors name the file and the field path.
    pub fn from_file(path: &std::path::Path) -> Result<BodySchema, SchemaError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| SchemaError {
            origin: origin.clone(),
            path: String::new(),
            message: format!("cannot read the schema file: {e}"),
        })?;
        Self::parse(&text, &origin)
    }

    /// Parses `.avsc` JSON text (`origin` is used in messages, e.g. the file name).
    pub fn parse(text: &str, origin: &str) -> Result<BodySchema, SchemaError> {
        let root = parse_avsc(text, origin)?;
        if let Some(f) = root.fields.iter().find(|f| f.name == RESCUED_COLUMN) {
            return Err(SchemaError {
                origin: origin.to_string(),
                path: f.name.clone(),
                message: format!("the field name {RESCUED_COLUMN} is reserved for unknown fields"),
            });
        }
        let field = |f: &schema::FieldDef, nullable: bool, decode: bool| {
            let t = if decode { f.node.decode_type() } else { f.node.arrow_type() };
            Field::new(&f.name, t, nullable)
        };
        let arrow_schema =
            Schema::new(root.fields.iter().map(|f| field(f, f.node.nullable, false)).collect::<Vec<_>>());
        let typed: Vec<Field> = root.fields.iter().map(|f| field(f, true, false)).collect();
        let decode = Schema::new(root.fields.iter().map(|f| field(f, true, true)).collect::<Vec<_>>());
        let mut output = typed.clone();
        output.push(Field::new(RESCUED_COLUMN, DataType::Utf8, true));
        Ok(BodySchema {
            origin: origin.to_string(),
            root,
            arrow_schema: Arc::new(arrow_schema),
            typed_schema: Arc::new(Schema::new(typed)),
            decode_schema: Arc::new(decode),
            output_schema: Arc::new(Schema::new(output)),
        })
    }

    /// The typed Arrow schema of the body fields, in `.avsc` order, final
    /// types. Top-level fields that are required in Avro (not a union with
    /// null) are non-nullable here; every nested field is nullable.
    pub fn arrow_schema(&self) -> SchemaRef {
        self.arrow_schema.clone()
    }

    /// Top-level fields with the custom attribute `key`, in `.avsc` order, as
    /// (field name, attribute value); a value that is not a JSON string is
    /// given as JSON text. E.g. `annotations("weir.pii")` ->
    /// `[("userId", "subject"), ("email", "email"), ("ipAddress", "ip")]`.
    pub fn annotations(&self, key: &str) -> Vec<(String, String)> {
        self.root
            .fields
            .iter()
            .filter_map(|f| f.attrs.iter().find(|(k, _)| k == key).map(|(_, v)| (f.name.clone(), v.clone())))
            .collect()
    }

    /// [`decode`](Self::decode) on up to `threads` slices of the bodies at
    /// once (same result, rows in input order). Inputs under 16,384 rows, or
    /// one thread, decode in place.
    pub fn decode_parallel(&self, bodies: &dyn Array, threads: usize) -> Result<ParsedBodies, SchemaError> {
        let n = bodies.len();
        let threads = threads.clamp(1, n.div_ceil(8_192).max(1));
        if threads == 1 || n < 16_384 {
            return self.decode(bodies);
        }
        let chunk = n.div_ceil(threads);
        let parts: Vec<Result<ParsedBodies, SchemaError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..n)
                .step_by(chunk)
                .map(|start| {
                    let slice = bodies.slice(start, chunk.min(n - start));
                    scope.spawn(move || self.decode(slice.as_ref()))
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("a body decoder thread panicked")).collect()
        });
        let mut batches = Vec::with_capacity(parts.len());
        let mut failures = Vec::new();
        for (i, part) in parts.into_iter().enumerate() {
            let part = part?;
            failures.extend(part.failures.into_iter().map(|(row, reason)| (row + i * chunk, reason)));
            batches.push(part.batch);
        }
        let schema = batches[0].schema();
        let batch = concat_batches(&schema, &batches).map_err(|e| SchemaError {
            origin: "body".into(),
            path: String::new(),
            message: format!("joining decoded slices: {e}"),
        })?;
        Ok(ParsedBodies { batch, failures })
    }

    /// Decodes JSON bodies (`Binary`, `LargeBinary`, `BinaryView` or a
    /// string type; nulls allowed). Never fails on bad input: bad rows are
    /// reported in [`ParsedBodies::failures`]. Errors only for an
    /// unsupported array type or an internal Arrow error.
    pub fn decode(&self, bodies: &dyn Array) -> Result<ParsedBodies, SchemaError> {
        let values = self.body_values(bodies)?;
        let n = values.len();

        // 1. Pre-pass.
        let mut failures: Vec<(usize, String)> = Vec::new();
        let mut rescued: Vec<Option<String>> = vec![None; n];
        let mut ok_rows: Vec<usize> = Vec::with_capacity(n);
        let mut state = RowState::default();
        for (row, value) in values.iter().enumerate() {
            let Some(body) = value else {
                failures.push((row, "body is null".to_string()));
                continue;
            };
            check_body(&self.root, body, &mut state);
            if let Some(reason) = state.failure.take() {
                failures.push((row, reason));
            } else {
                ok_rows.push(row);
                if !state.rescued.is_empty() {
                    rescued[row] = Some(std::mem::take(&mut state.rescued));
                }
            }
        }

        // 2-4. Decode chunk by chunk (see CHUNK_ROWS), bisecting a chunk
        // arrow-json rejects, and convert each piece while it is in cache.
        let mut pieces: Vec<(Vec<usize>, RecordBatch)> = Vec::new();
        let mut decoded = Vec::new();
        let mut buf = Vec::new();
        for chunk in ok_rows.chunks(CHUNK_ROWS) {
            self.decode_isolating(chunk, &values, &mut buf, &mut decoded, &mut failures)?;
            for (rows, batch) in decoded.drain(..) {
                let (typed, fails) = self.convert_batch(&batch)?;
                failures
                    .extend(fails.into_iter().map(|f| (rows[f.index], format!("field '{}': {}", f.path, f.detail))));
                pieces.push((rows, typed));
            }
        }
        // Stable: per row, the first reason found (in column order) stays.
        failures.sort_by_key(|f| f.0);
        failures.dedup_by_key(|f| f.0);

        let batch = self.assemble(n, pieces, &failures, &rescued)?;
        Ok(ParsedBodies { batch, failures })
    }

    /// Puts the decoded pieces in input order, failed rows all-null.
    fn assemble(
        &self,
        n: usize,
        pieces: Vec<(Vec<usize>, RecordBatch)>,
        failures: &[(usize, String)],
        rescued: &[Option<String>],
    ) -> Result<RecordBatch, SchemaError> {
        let mut failed = vec![false; n];
        for (row, _) in failures {
            failed[*row] = true;
        }
        let decoded_rows: usize = pieces.iter().map(|(rows, _)| rows.len()).sum();
        let mut columns: Vec<ArrayRef> = if failures.is_empty() && decoded_rows == n {
            // Every row decoded, in order (pieces are in row order).
            if pieces.len() == 1 {
                pieces[0].1.columns().to_vec()
            } else {
                let batches: Vec<&RecordBatch> = pieces.iter().map(|(_, b)| b).collect();
                concat_batches(&self.typed_schema, batches).map_err(|e| self.arrow(e))?.columns().to_vec()
            }
        } else if pieces.is_empty() {
            self.typed_schema.fields().iter().map(|f| new_null_array(f.data_type(), n)).collect()
        } else {
            // Each output row from its piece, failed rows from a one-row null
            // array after the pieces: one copy.
            let null_source = pieces.len();
            let mut index: Vec<(usize, usize)> = vec![(null_source, 0); n];
            for (p, (rows, _)) in pieces.iter().enumerate() {
                for (j, &row) in rows.iter().enumerate() {
                    if !failed[row] {
                        index[row] = (p, j);
                    }
                }
            }
            let mut columns = Vec::with_capacity(self.typed_schema.fields().len());
            for (i, field) in self.typed_schema.fields().iter().enumerate() {
                let null = new_null_array(field.data_type(), 1);
                let mut sources: Vec<&dyn Array> = pieces.iter().map(|(_, b)| b.column(i).as_ref()).collect();
                sources.push(null.as_ref());
                columns.push(interleave(&sources, &index).map_err(|e| self.arrow(e))?);
            }
            columns
        };
        let rescued: StringArray = (0..n).map(|r| if failed[r] { None } else { rescued[r].as_deref() }).collect();
        columns.push(Arc::new(rescued));
        RecordBatch::try_new(self.output_schema.clone(), columns).map_err(|e| self.arrow(e))
    }

    /// Decodes `rows`; if arrow-json rejects them, bisects until the
    /// rejected rows are alone, and fails those.
    fn decode_isolating(
        &self,
        rows: &[usize],
        values: &[Option<&[u8]>],
        buf: &mut Vec<u8>,
        out: &mut Vec<(Vec<usize>, RecordBatch)>,
        failures: &mut Vec<(usize, String)>,
    ) -> Result<(), SchemaError> {
        match self.try_decode(rows, values, buf)? {
            Ok(batch) => out.push((rows.to_vec(), batch)),
            Err(e) if rows.len() == 1 => {
                failures.push((rows[0], format!("body could not be decoded: {e}")));
            }
            Err(_) => {
                let (a, b) = rows.split_at(rows.len() / 2);
                self.decode_isolating(a, values, buf, out, failures)?;
                self.decode_isolating(b, values, buf, out, failures)?;
            }
        }
        Ok(())
    }

    /// One arrow-json decode of `rows` (one flush). The outer error is a decoder that
    /// cannot be built (a schema problem), the inner one a rejected chunk.
    fn try_decode(
        &self,
        rows: &[usize],
        values: &[Option<&[u8]>],
        buf: &mut Vec<u8>,
    ) -> Result<Result<RecordBatch, ArrowError>, SchemaError> {
        let mut decoder = ReaderBuilder::new(self.decode_schema.clone())
            .with_strict_mode(false)
            .with_coerce_primitive(true)
            .with_batch_size(rows.len() + 1)
            .build_decoder()
            .map_err(|e| self.arrow(e))?;
        let mut run = || -> Result<RecordBatch, ArrowError> {
            // Fed chunk by chunk: `buf` holds one chunk of bodies at a time.
            for chunk in rows.chunks(CHUNK_ROWS) {
                buf.clear();
                for &row in chunk {
                    if let Some(body) = values[row] {
                        buf.extend_from_slice(body);
                        buf.push(b'\n');
                    }
                }
                let mut offset = 0;
                while offset < buf.len() {
                    let read = decoder.decode(&buf[offset..])?;
                    if read == 0 {
                        break;
                    }
                    offset += read;
                }
                if offset < buf.len() {
                    return Err(ArrowError::JsonError("more JSON values than bodies".to_string()));
                }
            }
            let batch = match decoder.flush()? {
                Some(b) => b,
                None => RecordBatch::new_empty(self.decode_schema.clone()),
            };
            if batch.num_rows() != rows.len() {
                return Err(ArrowError::JsonError(format!(
                    "{} JSON values in {} bodies",
                    batch.num_rows(),
                    rows.len()
                )));
            }
            Ok(batch)
        };
        Ok(run())
    }

    /// Converts a decoded batch to the final types; returns the element
    /// failures with row-relative indexes and field paths.
    fn convert_batch(&self, batch: &RecordBatch) -> Result<(RecordBatch, Vec<convert::Fail>), SchemaError> {
        let mut fails = Vec::new();
        let mut columns = Vec::with_capacity(batch.num_columns());
        for (f, column) in self.root.fields.iter().zip(batch.columns()) {
            let mut sub = Vec::new();
            columns.push(convert(column, &f.node, &mut sub).map_err(|e| self.arrow(e))?);
            fails.extend(sub.into_iter().map(|x| convert::Fail {
                index: x.index,
                path: prefixed(&f.name, &x.path),
                detail: x.detail,
            }));
        }
        let typed = RecordBatch::try_new(self.typed_schema.clone(), columns).map_err(|e| self.arrow(e))?;
        Ok((typed, fails))
    }

    /// The bodies as optional byte slices.
    fn body_values<'a>(&self, bodies: &'a dyn Array) -> Result<Vec<Option<&'a [u8]>>, SchemaError> {
        Ok(match bodies.data_type() {
            DataType::Binary => bodies.as_binary::<i32>().iter().collect(),
            DataType::LargeBinary => bodies.as_binary::<i64>().iter().collect(),
            DataType::BinaryView => bodies.as_binary_view().iter().collect(),
            DataType::Utf8 => bodies.as_string::<i32>().iter().map(|v| v.map(str::as_bytes)).collect(),
            DataType::LargeUtf8 => bodies.as_string::<i64>().iter().map(|v| v.map(str::as_bytes)).collect(),
            DataType::Utf8View => bodies.as_string_view().iter().map(|v| v.map(str::as_bytes)).collect(),
            other => {
                return Err(self.internal(format!(
                    "bodies must be Binary, LargeBinary, BinaryView or a string type, found {other}"
                )))
            }
        })
    }

    fn internal(&self, message: String) -> SchemaError {
        SchemaError { origin: self.origin.clone(), path: String::new(), message }
    }

    fn arrow(&self, e: ArrowError) -> SchemaError {
        self.internal(format!("internal Arrow error while decoding bodies: {e}"))
    }
}
