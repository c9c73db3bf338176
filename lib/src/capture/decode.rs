//! Decoding capture files into Arrow, one chunk of blocks at a time.
//!
//! Each chunk ([`super::container`]) is decoded with the writer schema
//! embedded in its file (arrow-avro), then normalised to [`capture_schema`]:
//! `EnqueuedTimeUtc` strings (US `11/16/2016 4:44:11 PM` or ISO-8601) become
//! UTC microsecond timestamps, and the Properties maps of
//! `union(long, double, string, bytes[, null])` become `map<string, string>`
//! (bytes that are not UTF-8 are written as `base64:` + standard base64).
//!
//! Hazards:
//! - arrow-avro ends quietly when a file stops in the middle of a block, so
//!   the framing (counts, sizes, sync markers) is walked by
//!   [`super::container::Splitter`] before any block is decoded, and the rows
//!   of a chunk must equal the sum of its block counts.
//! - One arrow-avro decoder never yields two batches: see [`decode_chunk`].

use std::io::Cursor;
use std::sync::{Arc, OnceLock};

use arrow_avro::reader::ReaderBuilder;

use super::container::{put_long, Chunk, DecodeError, Header, Splitter, MAX_BLOCK_BYTES};
use chrono::{DateTime, NaiveDateTime, Utc};
use deltalake::arrow::array::builder::{MapBuilder, MapFieldNames, StringBuilder};
use deltalake::arrow::array::{Array, ArrayRef, AsArray, MapArray, RecordBatch, TimestampMicrosecondArray, UnionArray};
use deltalake::arrow::compute::{cast, concat_batches};
use deltalake::arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

/// The events of one capture file.
#[derive(Debug, Clone)]
pub struct CaptureBatch {
    /// Rows in [`capture_schema`].
    pub batch: RecordBatch,
    /// The file's container codec (`null`, `deflate`, `snappy`, `zstandard`).
    pub codec: String,
}

/// The timestamp type every table uses (Spark-readable: microseconds, UTC).
pub fn utc_micros() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// `map<string, string>` with Delta's field names.
pub fn string_map() -> DataType {
    DataType::Map(
        Arc::new(Field::new(
            "key_value",
            DataType::Struct(Fields::from(vec![
                Field::new("key", DataType::Utf8, false),
                Field::new("value", DataType::Utf8, true),
            ])),
            false,
        )),
        false,
    )
}

/// Columns of a decoded capture file.
pub fn capture_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(vec![
                Field::new("sequence_number", DataType::Int64, false),
                Field::new("offset", DataType::Utf8, false),
                Field::new("enqueued_time", utc_micros(), false),
                Field::new("system_properties", string_map(), true),
                Field::new("properties", string_map(), true),
                Field::new("body", DataType::Binary, true),
            ]))
        })
        .clone()
}

/// Decodes a whole capture file held in memory, chunk by chunk (see
/// [`decode_chunk`]); header-only files give zero rows. Ingest streams files
/// through [`Splitter`] instead and never holds one whole.
pub fn decode_capture_file(bytes: &[u8]) -> Result<CaptureBatch, DecodeError> {
    let mut splitter = Splitter::default();
    let mut items = splitter.push(bytes);
    let header = splitter.header().cloned();
    items.extend(splitter.finish());
    let chunks: Vec<Chunk> = items.into_iter().collect::<Result<_, _>>()?;
    let header = header.ok_or_else(|| DecodeError::file("truncated header"))?;
    let mut out = Vec::with_capacity(chunks.len());
    for chunk in &chunks {
        out.push(decode_chunk(&header, chunk)?);
    }
    let batch = concat_batches(&capture_schema(), &out).map_err(|e| DecodeError::file(format!("internal: {e}")))?;
    Ok(CaptureBatch { batch, codec: header.codec.clone() })
}

/// Decodes one chunk of a file into rows of [`capture_schema`].
///
/// Each chunk gets a decoder of its own that is flushed exactly once:
/// arrow-avro 59.3.2's union decoder does not reset its per-branch offsets
/// after a flush (apache/arrow-rs#10876, fixed upstream after the last 59.x
/// release), so a second batch from one decoder has union offsets past the
/// end of its children, and Capture's property maps are such unions. A
/// decoder costs a schema parse, far below decoding a chunk's records. Drop
/// this once Weir's arrow carries the fix; the one-batch check below stays a
/// cheap guard.
///
/// Deflate blocks (Capture's default codec) are inflated here with
/// libdeflate, whole-buffer, and handed over as a `null`-codec container:
/// arrow-avro's own path streams each block through flate2 into a growing
/// vector, and on capture blocks (a few KB each) whole-buffer inflate was
/// 2.5x faster, inflate being the largest single cost of ingest.
pub fn decode_chunk(header: &Header, chunk: &Chunk) -> Result<RecordBatch, DecodeError> {
    if chunk.records == 0 {
        return Ok(RecordBatch::new_empty(capture_schema()));
    }
    let container = if header.codec == "deflate" {
        inflate_chunk(header, chunk)?
    } else {
        let mut c = Vec::with_capacity(header.bytes.len() + chunk.blocks.len());
        c.extend_from_slice(&header.bytes);
        c.extend_from_slice(&chunk.blocks);
        c
    };
    let at = |rows: u64| chunk.first_record + rows;
    let reader = ReaderBuilder::new()
        .with_batch_size(usize::try_from(chunk.records).unwrap_or(usize::MAX))
        .build(Cursor::new(&container[..]))
        .map_err(|e| DecodeError::file(format!("cannot read Avro header: {e}")))?;
    let mut batch = None;
    for next in reader {
        let next = next.map_err(|e| DecodeError {
            record: Some(at(0)),
            reason: format!("Avro decode failed in blocks {}..: {e}", chunk.first_block),
        })?;
        if batch.replace(next).is_some() {
            return Err(DecodeError {
                record: Some(at(0)),
                reason: format!("blocks from {} decoded into more than one batch", chunk.first_block),
            });
        }
    }
    let batch = batch.unwrap_or_else(|| RecordBatch::new_empty(capture_schema()));
    let rows = batch.num_rows() as u64;
    if rows != chunk.records {
        return Err(DecodeError {
            record: Some(at(rows.min(chunk.records))),
            reason: format!("blocks {}.. declare {} records but {rows} decoded", chunk.first_block, chunk.records),
        });
    }
    normalise(&batch, chunk.first_record)
}

/// A chunk of deflate blocks as a whole `null`-codec container: header
/// entries (but the codec) and sync marker kept, each block inflated.
fn inflate_chunk(header: &Header, chunk: &Chunk) -> Result<Vec<u8>, DecodeError> {
    // Capture's JSON bodies inflate about 3.5x; start above that.
    let mut out = Vec::with_capacity(header.bytes_uncompressed.len() + chunk.blocks.len() * 5);
    out.extend_from_slice(&header.bytes_uncompressed);
    let mut inflater = libdeflater::Decompressor::new();
    let mut scratch: Vec<u8> = Vec::new();
    let mut records = chunk.first_record;
    for (i, (count, data)) in chunk.iter_blocks().enumerate() {
        let block = chunk.first_block + i as u64;
        let mut room = scratch.len().max(data.len() * 4).max(1024);
        let inflated = loop {
            if room > MAX_BLOCK_BYTES {
                return Err(DecodeError {
                    record: Some(records),
                    reason: format!("block {block} inflates to more than {} MB", MAX_BLOCK_BYTES >> 20),
                });
            }
            if scratch.len() < room {
                scratch.resize(room, 0);
            }
            match inflater.deflate_decompress(data, &mut scratch) {
                Ok(n) => break n,
                Err(libdeflater::DecompressionError::InsufficientSpace) => room *= 2,
                Err(libdeflater::DecompressionError::BadData) => {
                    return Err(DecodeError {
                        record: Some(records),
                        reason: format!("block {block}: corrupt deflate data"),
                    })
                }
            }
        };
        if count as u64 > inflated as u64 {
            return Err(DecodeError {
                record: Some(records),
                reason: format!("corrupt block {block}: {count} records in {inflated} inflated bytes"),
            });
        }
        put_long(&mut out, count);
        put_long(&mut out, inflated as i64);
        out.extend_from_slice(&scratch[..inflated]);
        out.extend_from_slice(&header.sync);
        records += count as u64;
    }
    Ok(out)
}

/// One arrow-avro batch → [`capture_schema`]. `first` is the index of its first record in the file.
fn normalise(batch: &RecordBatch, first: u64) -> Result<RecordBatch, DecodeError> {
    let column = |name: &str| {
        batch
            .column_by_name(name)
            .ok_or_else(|| DecodeError::file(format!("field {name} is missing from the file's schema")))
    };
    let cast_to = |name: &str, array: &ArrayRef, to: &DataType| {
        cast(array, to).map_err(|e| DecodeError::file(format!("field {name}: {e}")))
    };
    let seq = cast_to("SequenceNumber", column("SequenceNumber")?, &DataType::Int64)?;
    let offset = cast_to("Offset", column("Offset")?, &DataType::Utf8)?;
    for (name, array) in [("SequenceNumber", &seq), ("Offset", &offset)] {
        if let Some(i) = (0..array.len()).find(|i| array.is_null(*i)) {
            return Err(DecodeError { record: Some(first + i as u64), reason: format!("field {name} is null") });
        }
    }
    let enqueued = enqueued_times(column("EnqueuedTimeUtc")?, first)?;
    let system = properties(column("SystemProperties")?, "SystemProperties")?;
    let props = properties(column("Properties")?, "Properties")?;
    let body = cast_to("Body", column("Body")?, &DataType::Binary)?;
    RecordBatch::try_new(capture_schema(), vec![seq, offset, enqueued, system, props, body])
        .map_err(|e| DecodeError::file(format!("internal: {e}")))
}

fn enqueued_times(array: &ArrayRef, first: u64) -> Result<ArrayRef, DecodeError> {
    if matches!(array.data_type(), DataType::Timestamp(..)) {
        return cast(array, &utc_micros()).map_err(|e| DecodeError::file(format!("field EnqueuedTimeUtc: {e}")));
    }
    let strings = cast(array, &DataType::Utf8).map_err(|e| DecodeError::file(format!("field EnqueuedTimeUtc: {e}")))?;
    let strings = strings.as_string::<i32>();
    let mut out = Vec::with_capacity(strings.len());
    // Events of one file mostly share their second: parse each string once.
    let mut last: Option<(&str, i64)> = None;
    for (i, s) in strings.iter().enumerate() {
        let record = Some(first + i as u64);
        let s = s.ok_or(DecodeError { record, reason: "field EnqueuedTimeUtc is null".into() })?;
        if let Some((prev, micros)) = last {
            if prev == s {
                out.push(micros);
                continue;
            }
        }
        let t = parse_enqueued_time(s).ok_or_else(|| DecodeError {
            record,
            reason: format!("field EnqueuedTimeUtc: cannot read {s:?} as a time (expected e.g. '11/16/2016 4:44:11 PM' or ISO-8601)"),
        })?;
        let micros = t.timestamp_micros();
        last = Some((s, micros));
        out.push(micros);
    }
    Ok(Arc::new(TimestampMicrosecondArray::from(out).with_timezone("UTC")))
}

/// Parses Capture's US format (`11/16/2016 4:44:11 PM`, UTC) or ISO-8601
/// (with offset, or without one meaning UTC).
pub fn parse_enqueued_time(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Some(t) = parse_us_time(s) {
        return Some(t);
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(s, "%m/%d/%Y %I:%M:%S %p") {
        return Some(t.and_utc());
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(s, "%m/%d/%Y %I:%M:%S%.f %p") {
        return Some(t.and_utc());
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    for f in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Some(t.and_utc());
        }
    }
    None
}

/// The common case of Capture's US format, `M/D/YYYY h:mm:ss AM`, without
/// chrono's format interpreter (which was ~2% of ingest). Anything else
/// (fractions, other layouts) returns `None` for the general parser.
fn parse_us_time(s: &str) -> Option<DateTime<Utc>> {
    let (date, rest) = s.split_once(' ')?;
    let (clock, half) = rest.split_once(' ')?;
    let mut d = date.split('/');
    let num = |p: Option<&str>, max_len: usize| -> Option<u32> {
        let p = p?;
        if p.is_empty() || p.len() > max_len || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        p.parse().ok()
    };
    let (month, day, year) = (num(d.next(), 2)?, num(d.next(), 2)?, num(d.next(), 4)?);
    if d.next().is_some() || date.split('/').nth(2)?.len() != 4 {
        return None;
    }
    let mut c = clock.split(':');
    let (hour, minute, second) = (num(c.next(), 2)?, num(c.next(), 2)?, num(c.next(), 2)?);
    if c.next().is_some() || !(1..=12).contains(&hour) {
        return None;
    }
    let hour = match half {
        "AM" => hour % 12,
        "PM" => hour % 12 + 12,
        _ => return None,
    };
    let date = chrono::NaiveDate::from_ymd_opt(year as i32, month, day)?;
    Some(date.and_hms_opt(hour, minute, second)?.and_utc())
}

/// `map<string, union(...)>` → `map<string, string>`.
fn properties(array: &ArrayRef, name: &str) -> Result<ArrayRef, DecodeError> {
    let bad = |what: String| DecodeError::file(format!("field {name}: {what}"));
    let map: &MapArray =
        array.as_map_opt().ok_or_else(|| bad(format!("expected a map, found {}", array.data_type())))?;
    let keys = cast(map.keys(), &DataType::Utf8).map_err(|e| bad(e.to_string()))?;
    let keys = keys.as_string::<i32>();
    let values = map.values();
    let names = MapFieldNames { entry: "key_value".into(), key: "key".into(), value: "value".into() };
    let mut builder = MapBuilder::new(Some(names), StringBuilder::new(), StringBuilder::new());
    let union = values.as_any().downcast_ref::<UnionArray>();
    let plain =
        if union.is_none() { Some(cast(values, &DataType::Utf8).map_err(|e| bad(e.to_string()))?) } else { None };
    let offsets = map.value_offsets();
    let mut scratch = String::new();
    for row in 0..map.len() {
        if map.is_null(row) {
            builder.append(false).map_err(|e| bad(e.to_string()))?;
            continue;
        }
        for i in offsets[row] as usize..offsets[row + 1] as usize {
            builder.keys().append_value(keys.value(i));
            match (union, &plain) {
                (Some(u), _) => append_union_value(u, i, builder.values(), &mut scratch),
                (None, None) => builder.values().append_null(),
                (None, Some(p)) if p.is_null(i) => builder.values().append_null(),
                (None, Some(p)) => builder.values().append_value(p.as_string::<i32>().value(i)),
            }
        }
        builder.append(true).map_err(|e| bad(e.to_string()))?;
    }
    Ok(Arc::new(builder.finish()))
}

/// Appends one union member as a string; `scratch` avoids an allocation per value.
fn append_union_value(u: &UnionArray, i: usize, out: &mut StringBuilder, scratch: &mut String) {
    use deltalake::arrow::datatypes::{Float32Type, Float64Type, Int32Type, Int64Type};
    use std::fmt::Write as _;
    let child = u.child(u.type_id(i));
    let j = u.value_offset(i);
    if child.is_null(j) {
        out.append_null();
        return;
    }
    scratch.clear();
    let _ = match child.data_type() {
        DataType::Utf8 => {
            out.append_value(child.as_string::<i32>().value(j));
            return;
        }
        DataType::Binary => {
            let b = child.as_binary::<i32>().value(j);
            match std::str::from_utf8(b) {
                Ok(s) => out.append_value(s),
                Err(_) => out.append_value(format!("base64:{}", base64(b))),
            }
            return;
        }
        DataType::Null => {
            out.append_null();
            return;
        }
        DataType::Int64 => write!(scratch, "{}", child.as_primitive::<Int64Type>().value(j)),
        DataType::Int32 => write!(scratch, "{}", child.as_primitive::<Int32Type>().value(j)),
        DataType::Float64 => write!(scratch, "{}", child.as_primitive::<Float64Type>().value(j)),
        DataType::Float32 => write!(scratch, "{}", child.as_primitive::<Float32Type>().value(j)),
        DataType::Boolean => write!(scratch, "{}", child.as_boolean().value(j)),
        _ => match cast(&child.slice(j, 1), &DataType::Utf8) {
            Ok(a) if !a.is_null(0) => write!(scratch, "{}", a.as_string::<i32>().value(0)),
            _ => {
                out.append_null();
                return;
            }
        },
    };
    out.append_value(scratch.as_str());
}

fn base64(b: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
    for chunk in b.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * k)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enqueued_time_formats() {
        let us = parse_enqueued_time("11/16/2016 4:44:11 PM").unwrap();
        assert_eq!(us.to_rfc3339(), "2016-11-16T16:44:11+00:00");
        let am = parse_enqueued_time("1/2/2026 12:05:00 AM").unwrap();
        assert_eq!(am.to_rfc3339(), "2026-01-02T00:05:00+00:00");
        let iso = parse_enqueued_time("2016-11-16T16:44:11.5Z").unwrap();
        assert_eq!(iso.timestamp_micros() % 1_000_000, 500_000);
        assert!(parse_enqueued_time("16/11/2016 4:44:11 PM").is_none());
    }

    #[test]
    fn the_us_fast_path_agrees_with_chrono() {
        let chrono_us = |s: &str| NaiveDateTime::parse_from_str(s, "%m/%d/%Y %I:%M:%S %p").ok().map(|t| t.and_utc());
        let mut checked = 0;
        for month in ["0", "1", "01", "2", "12", "13"] {
            for day in ["1", "09", "28", "29", "30", "31", "32"] {
                for year in ["2024", "2026", "999", "20266"] {
                    for clock in [
                        "12:00:00", "12:59:59", "1:02:03", "01:02:03", "11:59:59", "13:00:00", "0:10:00", "4:60:00",
                        "4:44:61", "4:4",
                    ] {
                        for half in ["AM", "PM", "am", "XM"] {
                            let s = format!("{month}/{day}/{year} {clock} {half}");
                            if let Some(fast) = parse_us_time(&s) {
                                assert_eq!(Some(fast), chrono_us(&s), "{s}");
                            }
                            assert_eq!(
                                parse_enqueued_time(&s),
                                chrono_us(&s).or_else(|| parse_enqueued_time(&s)),
                                "{s}"
                            );
                            checked += 1;
                        }
                    }
                }
            }
        }
        assert!(checked > 5000);
        assert_eq!(parse_us_time("2/29/2024 12:00:00 PM").unwrap().to_rfc3339(), "2024-02-29T12:00:00+00:00");
        assert!(parse_us_time("2/29/2026 12:00:00 PM").is_none());
    }

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn framing_rejects_non_avro() {
        let e = decode_capture_file(b"PAR1 not avro").unwrap_err();
        assert!(e.reason.contains("bad magic"), "{e}");
    }
}
