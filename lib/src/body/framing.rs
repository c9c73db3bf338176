//! How a body's bytes become the JSON the body decoder reads: as they are
//! (`json`), inflated (`json` with `compression`), or decoded from binary
//! Avro (`avro`, `avro-schema-registry`, `confluent`, see [`super::avro`]).
//!
//! Every stage that reads bodies goes through [`Framing`]: process (typed
//! columns), ingest (subject columns for erasure) and erase (bodies whose
//! subject column is null, quarantined bodies). A body that cannot be
//! framed fails with a reason naming what is wrong (`schema id 42 is not
//! in body.writer_schemas`), which process puts into quarantine.
//!
//! # Properties
//!
//! `avro-schema-registry` reads the schema id from the event's content
//! type (`avro/binary+<schema id>`), and `compression: auto` reads a
//! content encoding (`gzip`, `deflate`, `identity`). Both are looked up in
//! the Capture record's system properties, then its application
//! properties, under the property names in [`CONTENT_TYPE_KEYS`] and
//! [`CONTENT_ENCODING_KEYS`] (case-insensitive).
//!
//! # Hazards
//!
//! - A body inflates to at most [`MAX_INFLATED`] bytes; a larger one fails
//!   (a compression bomb costs one body, not the run).
//! - `compression: auto` without an encoding property sniffs the bytes: the
//!   gzip magic `1f 8b`, a zlib header (`78 ..`, never the start of JSON),
//!   otherwise the body is read as plain JSON.

use std::collections::HashMap;
use std::sync::Arc;

use deltalake::arrow::array::{new_null_array, Array, ArrayRef, AsArray, BinaryBuilder, MapArray, StringArray};
use deltalake::arrow::datatypes::DataType;

use super::avro::AvroTranscoder;

/// Largest body after inflating (64 MiB; an Event Hubs event is at most 1 MB
/// compressed).
pub const MAX_INFLATED: usize = 64 << 20;

/// Property names that carry an event's content type.
pub const CONTENT_TYPE_KEYS: &[&str] = &["content-type", "content_type", "contenttype"];

/// Property names that carry an event's content encoding.
pub const CONTENT_ENCODING_KEYS: &[&str] = &["content-encoding", "content_encoding", "contentencoding"];

/// Compression of JSON bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain JSON.
    None,
    /// gzip (RFC 1952).
    Gzip,
    /// zlib (RFC 1950, HTTP's `deflate`) or raw deflate (RFC 1951).
    Deflate,
    /// By the content-encoding property, else by the bytes.
    Auto,
}

/// A compiled body format.
#[derive(Debug, Clone)]
pub enum Framing {
    /// UTF-8 JSON, maybe compressed.
    Json(Compression),
    /// A binary Avro datum written with the pipeline's schema.
    Avro(Arc<AvroTranscoder>),
    /// Azure Schema Registry: the datum's writer schema is named by the
    /// content type `avro/binary+<id>`. An id mapped to `None` is declared
    /// but not read by this schema (a route's: another event type's).
    SchemaRegistry(Arc<HashMap<String, Option<Arc<AvroTranscoder>>>>),
    /// Confluent's wire format: byte 0, a 4-byte big-endian schema id, the datum.
    Confluent(Arc<HashMap<u32, Option<Arc<AvroTranscoder>>>>),
}

/// What an event says about its body besides the bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Envelope<'a> {
    /// The content type property, if any.
    pub content_type: Option<&'a str>,
    /// The content encoding property, if any.
    pub content_encoding: Option<&'a str>,
}

impl Framing {
    /// Plain JSON: bodies are read as they are.
    pub fn is_plain(&self) -> bool {
        matches!(self, Framing::Json(Compression::None))
    }

    /// Whether framing reads the event's properties (content type or encoding).
    pub fn reads_properties(&self) -> bool {
        matches!(self, Framing::SchemaRegistry(_) | Framing::Json(Compression::Auto))
    }

    /// The JSON of one body: `body` itself when it is plain JSON, else
    /// written into `buf`.
    pub fn json<'b>(&self, body: &'b [u8], envelope: &Envelope<'_>, buf: &'b mut Vec<u8>) -> Result<&'b [u8], String> {
        buf.clear();
        match self {
            Framing::Json(Compression::None) => return Ok(body),
            Framing::Json(c) => {
                let kind = match c {
                    Compression::Auto => match encoding(envelope)? {
                        Some(kind) => kind,
                        None => sniff(body),
                    },
                    other => *other,
                };
                match kind {
                    Compression::None | Compression::Auto => return Ok(body),
                    Compression::Gzip => inflate(body, Inflate::Gzip, buf)?,
                    Compression::Deflate => {
                        let how = if zlib_header(body) { Inflate::Zlib } else { Inflate::Raw };
                        inflate(body, how, buf)?;
                    }
                }
            }
            Framing::Avro(t) => t.to_json(body, buf)?,
            Framing::SchemaRegistry(ids) => {
                let id = registry_id(envelope)?;
                writer(ids.get(id), id)?.to_json(body, buf).map_err(|e| format!("schema id {id}: {e}"))?;
            }
            Framing::Confluent(ids) => {
                let (id, datum) = confluent(body)?;
                writer(ids.get(&id), id)?.to_json(datum, buf).map_err(|e| format!("schema id {id}: {e}"))?;
            }
        }
        Ok(buf)
    }

    /// The JSON of every body (`Binary` or a string type), null where the
    /// body is null or cannot be framed; those rows are listed with their
    /// reason. `envelopes` gives each row's properties.
    pub fn json_array(
        &self,
        bodies: &dyn Array,
        envelopes: &Envelopes<'_>,
    ) -> (deltalake::arrow::array::BinaryArray, Vec<(usize, String)>) {
        let mut out = BinaryBuilder::with_capacity(bodies.len(), bodies.len() * 256);
        let mut failures = Vec::new();
        let mut buf = Vec::new();
        for row in 0..bodies.len() {
            match super::subject::body_bytes(bodies, row) {
                None => out.append_null(),
                Some(body) => match self.json(body, &envelopes.get(row), &mut buf) {
                    Ok(json) => out.append_value(json),
                    Err(reason) => {
                        out.append_null();
                        failures.push((row, reason));
                    }
                },
            }
        }
        (out.finish(), failures)
    }
}

/// The content type and encoding of a batch of events, as two Utf8
/// columns (see [`envelope_columns`]; either may be absent).
#[derive(Debug, Clone, Copy, Default)]
pub struct Envelopes<'a> {
    content_type: Option<&'a StringArray>,
    content_encoding: Option<&'a StringArray>,
}

impl<'a> Envelopes<'a> {
    /// From the two columns [`envelope_columns`] gives (Utf8; others are ignored).
    pub fn new(content_type: Option<&'a dyn Array>, content_encoding: Option<&'a dyn Array>) -> Envelopes<'a> {
        Envelopes {
            content_type: content_type.and_then(|a| a.as_string_opt::<i32>()),
            content_encoding: content_encoding.and_then(|a| a.as_string_opt::<i32>()),
        }
    }

    /// Row `row`'s content type and encoding.
    pub fn get(&self, row: usize) -> Envelope<'a> {
        let at = |c: Option<&'a StringArray>| c.filter(|c| row < c.len() && c.is_valid(row)).map(|c| c.value(row));
        Envelope { content_type: at(self.content_type), content_encoding: at(self.content_encoding) }
    }
}

/// The content type and encoding of each event (Utf8, null where absent),
/// from the Capture record's `system_properties`, then `properties` (string
/// maps; either may be absent).
pub fn envelope_columns(rows: usize, system: Option<&dyn Array>, properties: Option<&dyn Array>) -> [ArrayRef; 2] {
    let maps: Vec<&MapArray> = [system, properties].into_iter().flatten().filter_map(|a| a.as_map_opt()).collect();
    let column = |keys: &[&str]| -> ArrayRef {
        if maps.is_empty() {
            return new_null_array(&DataType::Utf8, rows);
        }
        let values: StringArray = (0..rows).map(|row| maps.iter().find_map(|m| lookup(m, row, keys))).collect();
        Arc::new(values)
    };
    [column(CONTENT_TYPE_KEYS), column(CONTENT_ENCODING_KEYS)]
}

/// The value of property `key` of each event (Utf8, null where absent or
/// null): from the Capture record's application `properties`, then its
/// `system_properties` (string maps; either may be absent), by exact,
/// case-sensitive name.
pub fn property_column(rows: usize, properties: Option<&dyn Array>, system: Option<&dyn Array>, key: &str) -> ArrayRef {
    let maps: Vec<&MapArray> = [properties, system].into_iter().flatten().filter_map(|a| a.as_map_opt()).collect();
    if maps.is_empty() {
        return new_null_array(&DataType::Utf8, rows);
    }
    let found = |m: &&MapArray, row: usize| -> Option<String> {
        if row >= m.len() || m.is_null(row) {
            return None;
        }
        let names = m.keys().as_string_opt::<i32>()?;
        let values = m.values().as_string_opt::<i32>()?;
        let offsets = m.value_offsets();
        (offsets[row] as usize..offsets[row + 1] as usize)
            .find(|&i| names.value(i) == key && values.is_valid(i))
            .map(|i| values.value(i).to_string())
    };
    let values: StringArray = (0..rows).map(|row| maps.iter().find_map(|m| found(m, row))).collect();
    Arc::new(values)
}

/// The value of the first of `keys` (case-insensitive) in row `row` of a
/// string map.
fn lookup<'a>(map: &'a MapArray, row: usize, keys: &[&str]) -> Option<&'a str> {
    if row >= map.len() || map.is_null(row) {
        return None;
    }
    let names = map.keys().as_string_opt::<i32>()?;
    let values = map.values().as_string_opt::<i32>()?;
    let offsets = map.value_offsets();
    (offsets[row] as usize..offsets[row + 1] as usize)
        .find(|&i| keys.iter().any(|k| names.value(i).eq_ignore_ascii_case(k)) && values.is_valid(i))
        .map(|i| values.value(i))
}

fn encoding(envelope: &Envelope<'_>) -> Result<Option<Compression>, String> {
    let Some(e) = envelope.content_encoding else { return Ok(None) };
    match e.trim().to_ascii_lowercase().as_str() {
        "gzip" | "x-gzip" => Ok(Some(Compression::Gzip)),
        "deflate" => Ok(Some(Compression::Deflate)),
        "identity" | "" => Ok(Some(Compression::None)),
        other => Err(format!("content encoding {other:?} is not gzip, deflate or identity")),
    }
}

fn sniff(body: &[u8]) -> Compression {
    if body.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if zlib_header(body) {
        Compression::Deflate
    } else {
        Compression::None
    }
}

/// A zlib stream header: method 8, window ≤ 32K, check bits right.
fn zlib_header(body: &[u8]) -> bool {
    body.len() >= 2
        && body[0] & 0x0f == 8
        && body[0] >> 4 <= 7
        && (u16::from(body[0]) << 8 | u16::from(body[1])) % 31 == 0
}

#[derive(Clone, Copy)]
enum Inflate {
    Gzip,
    Zlib,
    Raw,
}

fn inflate(body: &[u8], how: Inflate, out: &mut Vec<u8>) -> Result<(), String> {
    let name = match how {
        Inflate::Gzip => "gzip",
        Inflate::Zlib => "zlib",
        Inflate::Raw => "deflate",
    };
    thread_local! {
        // One inflater per thread: its state is ~32 KiB, too much to build per body.
        static INFLATER: std::cell::RefCell<libdeflater::Decompressor> =
            std::cell::RefCell::new(libdeflater::Decompressor::new());
    }
    // gzip records the inflated size (mod 4 GiB) in its last 4 bytes.
    let hint = match how {
        Inflate::Gzip if body.len() >= 18 => {
            u32::from_le_bytes(body[body.len() - 4..].try_into().expect("4 bytes")) as usize
        }
        _ => body.len() * 4,
    };
    let mut room = hint.clamp(64, MAX_INFLATED);
    loop {
        out.resize(room, 0);
        let result = INFLATER.with_borrow_mut(|d| match how {
            Inflate::Gzip => d.gzip_decompress(body, out),
            Inflate::Zlib => d.zlib_decompress(body, out),
            Inflate::Raw => d.deflate_decompress(body, out),
        });
        match result {
            Ok(n) => {
                out.truncate(n);
                return Ok(());
            }
            Err(libdeflater::DecompressionError::InsufficientSpace) if room < MAX_INFLATED => {
                room = (room * 2).min(MAX_INFLATED);
            }
            Err(libdeflater::DecompressionError::InsufficientSpace) => {
                out.clear();
                return Err(format!("the body inflates to more than {MAX_INFLATED} bytes"));
            }
            Err(libdeflater::DecompressionError::BadData) => {
                out.clear();
                return Err(format!("the body is not valid {name} data"));
            }
        }
    }
}

/// The compiled writer schema of `id`, or why there is none.
fn writer(
    found: Option<&Option<Arc<AvroTranscoder>>>,
    id: impl std::fmt::Display,
) -> Result<&Arc<AvroTranscoder>, String> {
    match found {
        Some(Some(t)) => Ok(t),
        Some(None) => Err(format!(
            "schema id {id} is a writer schema this route's schema does not read (another event type's, tagged as this one?)"
        )),
        None => Err(format!("schema id {id} is not in body.writer_schemas")),
    }
}

fn registry_id<'a>(envelope: &Envelope<'a>) -> Result<&'a str, String> {
    let Some(ct) = envelope.content_type else {
        return Err("the event has no content-type property; Schema Registry bodies name their schema in it (avro/binary+<schema id>)".into());
    };
    match ct.split_once('+') {
        Some((kind, id)) if kind.trim().eq_ignore_ascii_case("avro/binary") && !id.trim().is_empty() => Ok(id.trim()),
        _ => Err(format!("content type {ct:?} is not avro/binary+<schema id>")),
    }
}

fn confluent(body: &[u8]) -> Result<(u32, &[u8]), String> {
    match body {
        [0, a, b, c, d, datum @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), datum)),
        [m, ..] if *m != 0 => Err(format!("not Confluent's wire format: magic byte {m:#04x}, expected 0x00")),
        _ => Err(format!("not Confluent's wire format: {} bytes, fewer than the 5-byte header", body.len())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut c = libdeflater::Compressor::new(libdeflater::CompressionLvl::default());
        let mut out = vec![0; c.gzip_compress_bound(data.len())];
        let n = c.gzip_compress(data, &mut out).unwrap();
        out.truncate(n);
        out
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut c = libdeflater::Compressor::new(libdeflater::CompressionLvl::default());
        let mut out = vec![0; c.zlib_compress_bound(data.len())];
        let n = c.zlib_compress(data, &mut out).unwrap();
        out.truncate(n);
        out
    }

    fn frame(f: &Framing, body: &[u8], env: Envelope<'_>) -> Result<String, String> {
        let mut buf = Vec::new();
        f.json(body, &env, &mut buf).map(|j| String::from_utf8(j.to_vec()).unwrap())
    }

    #[test]
    fn compressed_json_is_inflated_by_setting_property_or_magic() {
        let json = br#"{"a":1}"#;
        let none = Envelope::default();
        assert_eq!(frame(&Framing::Json(Compression::Gzip), &gzip(json), none).unwrap(), r#"{"a":1}"#);
        assert_eq!(frame(&Framing::Json(Compression::Deflate), &zlib(json), none).unwrap(), r#"{"a":1}"#);
        let auto = Framing::Json(Compression::Auto);
        assert_eq!(frame(&auto, &gzip(json), none).unwrap(), r#"{"a":1}"#);
        assert_eq!(frame(&auto, &zlib(json), none).unwrap(), r#"{"a":1}"#);
        assert_eq!(frame(&auto, json, none).unwrap(), r#"{"a":1}"#);
        let gz = Envelope { content_encoding: Some("GZIP"), ..none };
        assert!(frame(&auto, json, gz).unwrap_err().contains("not valid gzip"));
        let odd = Envelope { content_encoding: Some("br"), ..none };
        assert!(frame(&auto, json, odd).unwrap_err().contains("\"br\""));
        let err = frame(&Framing::Json(Compression::Gzip), b"{}", none).unwrap_err();
        assert!(err.contains("not valid gzip"), "{err}");
    }

    #[test]
    fn a_compression_bomb_fails_its_body() {
        let zeros = vec![b' '; MAX_INFLATED + 10];
        let err = frame(&Framing::Json(Compression::Gzip), &gzip(&zeros), Envelope::default()).unwrap_err();
        assert!(err.contains("more than"), "{err}");
    }

    #[test]
    fn registry_and_confluent_ids_are_read_and_unknown_ones_named() {
        let w = apache_avro::Schema::parse_str(r#""string""#).unwrap();
        let t = Arc::new(AvroTranscoder::new(&w, None).unwrap());
        let reg = Framing::SchemaRegistry(Arc::new(
            [("abc".to_string(), Some(t.clone())), ("other".to_string(), None)].into_iter().collect(),
        ));
        let datum = [6, b'x', b'y', b'z'];
        let env = |ct| Envelope { content_type: Some(ct), content_encoding: None };
        assert_eq!(frame(&reg, &datum, env("avro/binary+abc")).unwrap(), r#""xyz""#);
        assert!(frame(&reg, &datum, env("avro/binary+zzz")).unwrap_err().contains("schema id zzz"));
        assert!(frame(&reg, &datum, env("avro/binary+other")).unwrap_err().contains("does not read"));
        assert!(frame(&reg, &datum, env("application/json")).unwrap_err().contains("avro/binary+<schema id>"));
        assert!(frame(&reg, &datum, Envelope::default()).unwrap_err().contains("no content-type"));
        let conf = Framing::Confluent(Arc::new([(7u32, Some(t))].into_iter().collect()));
        assert_eq!(frame(&conf, &[0, 0, 0, 0, 7, 2, b'q'], Envelope::default()).unwrap(), r#""q""#);
        assert!(frame(&conf, &[0, 0, 0, 0, 8, 2, b'q'], Envelope::default()).unwrap_err().contains("schema id 8"));
        assert!(frame(&conf, b"{}", Envelope::default()).unwrap_err().contains("magic byte 0x7b"));
    }

    /// A string map column of `rows`, each a list of (key, value).
    fn string_map(rows: &[&[(&str, Option<&str>)]]) -> ArrayRef {
        use deltalake::arrow::array::{MapBuilder, StringBuilder};
        let mut b = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
        for row in rows {
            for (k, v) in *row {
                b.keys().append_value(k);
                b.values().append_option(*v);
            }
            b.append(true).unwrap();
        }
        Arc::new(b.finish())
    }

    #[test]
    fn a_property_is_read_from_the_application_properties_then_the_system_ones_by_exact_name() {
        let app =
            string_map(&[&[("eventType", Some("Purchase"))], &[], &[("EventType", Some("x"))], &[("eventType", None)]]);
        let system = string_map(&[
            &[("eventType", Some("UserEvent"))],
            &[("eventType", Some("UserEvent"))],
            &[],
            &[("eventType", Some("Refund"))],
        ]);
        let got = property_column(4, Some(app.as_ref()), Some(system.as_ref()), "eventType");
        let got = got.as_string::<i32>();
        let values: Vec<Option<&str>> = (0..4).map(|i| got.is_valid(i).then(|| got.value(i))).collect();
        assert_eq!(values, [Some("Purchase"), Some("UserEvent"), None, Some("Refund")]);
        assert_eq!(property_column(2, None, None, "eventType").null_count(), 2);
    }
}
