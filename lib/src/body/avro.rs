//! Binary Avro bodies: one datum (no container, no header) decoded by its
//! writer's schema and written out as the JSON the body decoder reads, so
//! Avro bodies get exactly the typed columns, checks, PII, dedup and rescue
//! of JSON ones.
//!
//! # Writer and reader
//!
//! A datum is walked by its writer's schema (the bytes mean nothing
//! without it). Each record becomes a JSON object under the writer's field
//! names; a field the pipeline's schema (the reader) names by an alias is
//! written under the reader's name; a reader field the writer lacks is
//! written with the reader's `default` when it has one. The JSON decoder
//! then applies the reader schema: promoted numbers (`int` → `long`,
//! `float`, `double`), `string` ↔ `bytes` and union branches need nothing
//! more, and writer fields the reader does not know land in `_rescued`
//! (a producer that adds a field before the pipeline does loses nothing).
//! [`check_compatible`] runs Avro's own resolution check once per writer
//! schema, when the pipeline is loaded.
//!
//! # JSON spelling of Avro values
//!
//! | Avro | JSON |
//! |------|------|
//! | `decimal` (bytes or fixed) | a string, `"-123.45"` |
//! | `timestamp-*`, `date`, `time-*` | the integer as encoded |
//! | `bytes`, `fixed` | a string of code points 0–255 (Avro's JSON encoding) |
//! | `enum` | the symbol |
//! | `map` | an object (entries in the writer's order) |
//! | union | the branch's value |
//!
//! # Hazards
//!
//! - `NaN` and infinite floats have no JSON spelling: the body fails, naming
//!   the field.
//! - A datum must be consumed exactly: trailing bytes fail the body (a
//!   wrong schema id often shows up this way).
//! - Recursive writer schemas are refused when the schema is compiled.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use apache_avro::schema::{Name, RecordSchema, ResolvedSchema};
use apache_avro::Schema;

/// A writer schema compiled for decoding, with the reader's defaults for
/// the fields it lacks.
#[derive(Debug)]
pub struct AvroTranscoder {
    root: Node,
}

#[derive(Debug)]
enum Node {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    /// Bytes or a string: `utf8` says whether to check UTF-8.
    Text {
        utf8: bool,
    },
    Fixed(usize),
    Decimal {
        scale: usize,
        fixed: Option<usize>,
    },
    Enum(Vec<String>),
    Array(Box<Node>),
    Map(Box<Node>),
    Record {
        /// JSON key (quoted, escaped, followed by `:`) and node per field.
        fields: Vec<(String, String, Node)>,
        /// `"key":default` texts for reader fields the writer lacks.
        defaults: Vec<String>,
    },
    Union(Vec<Node>),
}

/// Parses an Avro schema's JSON text (a `.avsc`), naming `origin` on error.
pub fn parse_schema(text: &str, origin: &str) -> Result<Schema, String> {
    Schema::parse_str(text).map_err(|e| format!("{origin}: not a valid Avro schema: {e}"))
}

/// Avro's resolution check on two schema texts: can data written with
/// `writer` be read with `reader`? The reason names what does not resolve.
///
/// Checked on the underlying types (logical types removed): resolution is
/// defined on them, and the checker does not match logical types such as
/// `decimal` even against themselves.
pub fn check_compatible(writer: &str, reader: &str) -> Result<(), String> {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                m.remove("logicalType");
                m.values_mut().for_each(strip);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let base = |text: &str| -> Result<Schema, String> {
        let mut v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        strip(&mut v);
        Schema::parse(&v).map_err(|e| e.to_string())
    };
    apache_avro::schema_compatibility::SchemaCompatibility::can_read(&base(writer)?, &base(reader)?)
        .map_err(|e| e.to_string())
}

impl AvroTranscoder {
    /// Compiles `writer`; `reader` (the pipeline's schema) supplies aliases
    /// and defaults for the fields the writer lacks.
    pub fn new(writer: &Schema, reader: Option<&Schema>) -> Result<AvroTranscoder, String> {
        let writer_names = names(writer)?;
        let reader_names = match reader {
            Some(r) => names(r)?,
            None => HashMap::new(),
        };
        let mut c = Compiler { writer: &writer_names, reader: &reader_names, active: HashSet::new() };
        Ok(AvroTranscoder { root: c.node(writer, reader, None)? })
    }

    /// Appends the JSON of the datum in `bytes` to `out`; the reason names
    /// the field path where decoding stopped.
    pub fn to_json(&self, bytes: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        let mut r = Reader { bytes, at: 0 };
        write(&self.root, &mut r, out).map_err(|Fail { mut path, message }| {
            if path.is_empty() {
                message
            } else {
                // Segments were added innermost first, while unwinding.
                path.reverse();
                let mut dotted = String::new();
                for segment in path {
                    if !dotted.is_empty() && !segment.starts_with('[') {
                        dotted.push('.');
                    }
                    dotted.push_str(&segment);
                }
                format!("field '{dotted}': {message}")
            }
        })?;
        if r.at != bytes.len() {
            return Err(format!(
                "the Avro datum ends at byte {} of {}: the body does not match its writer schema",
                r.at,
                bytes.len()
            ));
        }
        Ok(())
    }
}

fn names(schema: &Schema) -> Result<HashMap<Name, Schema>, String> {
    let resolved = ResolvedSchema::try_from(schema).map_err(|e| e.to_string())?;
    Ok(resolved.get_names().iter().map(|(n, s)| (n.clone(), (*s).clone())).collect())
}

struct Compiler<'a> {
    writer: &'a HashMap<Name, Schema>,
    reader: &'a HashMap<Name, Schema>,
    /// Named writer types being compiled (a repeat is recursion).
    active: HashSet<Name>,
}

impl Compiler<'_> {
    /// The reader's schema behind references and nullable unions, when it
    /// is a record (the only place defaults and aliases apply).
    fn reader_record<'s>(&'s self, reader: Option<&'s Schema>) -> Option<&'s RecordSchema> {
        match reader? {
            Schema::Record(r) => Some(r),
            Schema::Ref { name } => self.reader_record(self.reader.get(name)),
            Schema::Union(u) => u.variants().iter().find_map(|v| self.reader_record(Some(v))),
            _ => None,
        }
    }

    /// The reader's schema for items or values, through nullable unions.
    fn reader_child<'s>(&'s self, reader: Option<&'s Schema>, map: bool) -> Option<&'s Schema> {
        match reader? {
            Schema::Array(a) if !map => Some(&a.items),
            Schema::Map(m) if map => Some(&m.types),
            Schema::Union(u) => u.variants().iter().find_map(|v| self.reader_child(Some(v), map)),
            _ => None,
        }
    }

    fn node(&mut self, writer: &Schema, reader: Option<&Schema>, named: Option<&Name>) -> Result<Node, String> {
        Ok(match writer {
            Schema::Null => Node::Null,
            Schema::Boolean => Node::Boolean,
            Schema::Int | Schema::Date | Schema::TimeMillis => Node::Int,
            Schema::Long
            | Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos => Node::Long,
            Schema::Float => Node::Float,
            Schema::Double => Node::Double,
            Schema::Bytes => Node::Text { utf8: false },
            Schema::String | Schema::Uuid => Node::Text { utf8: true },
            Schema::BigDecimal => return Err("the big-decimal logical type is not supported".into()),
            Schema::Fixed(f) => Node::Fixed(f.size),
            Schema::Duration => Node::Fixed(12),
            Schema::Decimal(d) => Node::Decimal {
                scale: d.scale,
                fixed: match d.inner.as_ref() {
                    Schema::Fixed(f) => Some(f.size),
                    _ => None,
                },
            },
            Schema::Enum(e) => Node::Enum(e.symbols.iter().map(|s| json_string(s)).collect()),
            Schema::Array(a) => {
                let child = self.reader_child(reader, false).cloned();
                Node::Array(Box::new(self.node(&a.items, child.as_ref(), None)?))
            }
            Schema::Map(m) => {
                let child = self.reader_child(reader, true).cloned();
                Node::Map(Box::new(self.node(&m.types, child.as_ref(), None)?))
            }
            Schema::Union(u) => Node::Union(
                u.variants()
                    .iter()
                    .map(|v| {
                        // A branch meets the reader's branch of its own kind.
                        self.node(v, reader, None)
                    })
                    .collect::<Result<_, _>>()?,
            ),
            Schema::Record(r) => {
                let name = named.unwrap_or(&r.name).clone();
                if !self.active.insert(name.clone()) {
                    return Err(format!("the record {} is recursive, which Weir does not decode", r.name.name));
                }
                let node = self.record(r, reader)?;
                self.active.remove(&name);
                node
            }
            Schema::Ref { name } => {
                let target = self.writer.get(name).ok_or_else(|| format!("unknown type {}", name.name))?.clone();
                self.node(&target, reader, Some(name))?
            }
        })
    }

    fn record(&mut self, w: &RecordSchema, reader: Option<&Schema>) -> Result<Node, String> {
        let r = self.reader_record(reader).cloned();
        let mut fields = Vec::with_capacity(w.fields.len());
        let mut seen = HashSet::new();
        for f in &w.fields {
            // The reader's field of this name, or the one that has it as an alias.
            let rf = r.as_ref().and_then(|r| {
                r.fields
                    .iter()
                    .find(|x| x.name == f.name)
                    .or_else(|| r.fields.iter().find(|x| x.aliases.as_ref().is_some_and(|a| a.contains(&f.name))))
            });
            let key = rf.map_or(&f.name, |x| &x.name);
            seen.insert(key.clone());
            let node = self.node(&f.schema, rf.map(|x| &x.schema), None)?;
            fields.push((format!("{}:", json_string(key)), f.name.clone(), node));
        }
        let defaults = r
            .iter()
            .flat_map(|r| r.fields.iter())
            .filter(|x| !seen.contains(&x.name))
            .filter_map(|x| x.default.as_ref().map(|d| format!("{}:{d}", json_string(&x.name))))
            .collect();
        Ok(Node::Record { fields, defaults })
    }
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn long(&mut self) -> Result<i64, String> {
        let mut value: u64 = 0;
        let mut shift = 0;
        loop {
            let Some(&b) = self.bytes.get(self.at) else {
                return Err("the datum ends inside a number".into());
            };
            self.at += 1;
            if shift >= 64 {
                return Err("a variable-length number is longer than 10 bytes".into());
            }
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        Ok((value >> 1) as i64 ^ -((value & 1) as i64))
    }

    fn int(&mut self) -> Result<i32, String> {
        let v = self.long()?;
        i32::try_from(v).map_err(|_| format!("{v} does not fit an Avro int"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or_else(|| {
            format!("the datum ends inside a value ({n} bytes wanted, {} left)", self.bytes.len() - self.at)
        })?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn length(&mut self) -> Result<usize, String> {
        let n = self.long()?;
        usize::try_from(n).map_err(|_| format!("negative length {n}"))
    }

    /// The item count of the next array or map block (0 ends the value).
    fn block(&mut self) -> Result<usize, String> {
        let n = self.long()?;
        if n < 0 {
            self.long()?; // the block's size in bytes, for skipping
        }
        let n = n.unsigned_abs();
        // Each item takes at least one byte unless it is null: a count the
        // remaining bytes cannot hold is corrupt (never loop for it).
        let left = (self.bytes.len() - self.at) as u64;
        if n > left.max(1 << 20) {
            return Err(format!("a block of {n} items in {left} remaining bytes"));
        }
        Ok(n as usize)
    }
}

/// Where a datum failed: the field path (innermost segment first; built
/// only on failure, so decoding allocates nothing for it) and why.
struct Fail {
    path: Vec<String>,
    message: String,
}

impl From<String> for Fail {
    fn from(message: String) -> Fail {
        Fail { path: Vec::new(), message }
    }
}

/// Adds the segment `at` to a failure's path.
fn at<T>(result: Result<T, Fail>, at: impl FnOnce() -> String) -> Result<T, Fail> {
    result.map_err(|mut f| {
        f.path.push(at());
        f
    })
}

fn write(node: &Node, r: &mut Reader<'_>, out: &mut Vec<u8>) -> Result<(), Fail> {
    match node {
        Node::Null => out.extend_from_slice(b"null"),
        Node::Boolean => match r.take(1)?[0] {
            0 => out.extend_from_slice(b"false"),
            1 => out.extend_from_slice(b"true"),
            b => return Err(format!("{b} is not a boolean").into()),
        },
        Node::Int => number(out, r.int()?),
        Node::Long => number(out, r.long()?),
        Node::Float => {
            let v = f32::from_le_bytes(r.take(4)?.try_into().expect("4 bytes"));
            float(out, f64::from(v), &v.to_string())?;
        }
        Node::Double => {
            let v = f64::from_le_bytes(r.take(8)?.try_into().expect("8 bytes"));
            float(out, v, &v.to_string())?;
        }
        Node::Text { utf8: true } => {
            let n = r.length()?;
            let s = std::str::from_utf8(r.take(n)?).map_err(|e| format!("a string is not valid UTF-8: {e}"))?;
            escape(out, s);
        }
        Node::Text { utf8: false } => {
            let n = r.length()?;
            latin1(out, r.take(n)?);
        }
        Node::Fixed(n) => latin1(out, r.take(*n)?),
        Node::Decimal { scale, fixed } => {
            let n = match fixed {
                Some(n) => *n,
                None => r.length()?,
            };
            decimal(out, r.take(n)?, *scale)?;
        }
        Node::Enum(symbols) => {
            let i = r.int()?;
            let s = usize::try_from(i)
                .ok()
                .and_then(|i| symbols.get(i))
                .ok_or_else(|| format!("enum index {i} is out of range ({} symbols)", symbols.len()))?;
            out.extend_from_slice(s.as_bytes());
        }
        Node::Array(item) => items(item, r, out)?,
        Node::Map(value) => entries(value, r, out)?,
        Node::Record { fields, defaults } => {
            out.push(b'{');
            for (i, (key, name, field)) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(key.as_bytes());
                at(write(field, r, out), || name.clone())?;
            }
            for (i, d) in defaults.iter().enumerate() {
                if i > 0 || !fields.is_empty() {
                    out.push(b',');
                }
                out.extend_from_slice(d.as_bytes());
            }
            out.push(b'}');
        }
        Node::Union(branches) => {
            let i = r.long()?;
            let branch = usize::try_from(i)
                .ok()
                .and_then(|i| branches.get(i))
                .ok_or_else(|| format!("union branch {i} is out of range ({} branches)", branches.len()))?;
            write(branch, r, out)?;
        }
    }
    Ok(())
}

/// An array's blocks as a JSON array.
fn items(item: &Node, r: &mut Reader<'_>, out: &mut Vec<u8>) -> Result<(), Fail> {
    out.push(b'[');
    let mut i = 0;
    loop {
        let n = r.block()?;
        if n == 0 {
            break;
        }
        for _ in 0..n {
            if i > 0 {
                out.push(b',');
            }
            at(write(item, r, out), || format!("[{i}]"))?;
            i += 1;
        }
    }
    out.push(b']');
    Ok(())
}

/// A map's blocks as a JSON object, entries in the writer's order.
fn entries(value: &Node, r: &mut Reader<'_>, out: &mut Vec<u8>) -> Result<(), Fail> {
    out.push(b'{');
    let mut first = true;
    loop {
        let n = r.block()?;
        if n == 0 {
            break;
        }
        for _ in 0..n {
            if !first {
                out.push(b',');
            }
            first = false;
            let len = r.length()?;
            let key = std::str::from_utf8(r.take(len)?).map_err(|e| format!("a map key is not UTF-8: {e}"))?;
            escape(out, key);
            out.push(b':');
            at(write(value, r, out), || key.to_string())?;
        }
    }
    out.push(b'}');
    Ok(())
}

fn number(out: &mut Vec<u8>, v: impl std::fmt::Display) {
    let mut s = String::new();
    let _ = write!(s, "{v}");
    out.extend_from_slice(s.as_bytes());
}

fn float(out: &mut Vec<u8>, v: f64, text: &str) -> Result<(), String> {
    if !v.is_finite() {
        return Err(format!("{text} has no JSON spelling (NaN and infinities are not accepted)"));
    }
    // Rust prints whole floats without a fraction (`3`): still a JSON number.
    out.extend_from_slice(text.as_bytes());
    Ok(())
}

fn escape(out: &mut Vec<u8>, s: &str) {
    // serde_json's escaping, straight into the buffer.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Bytes as Avro's JSON encoding spells them: one code point per byte.
fn latin1(out: &mut Vec<u8>, bytes: &[u8]) {
    let s: String = bytes.iter().map(|&b| char::from(b)).collect();
    escape(out, &s);
}

/// A two's-complement big-endian unscaled value as a decimal string.
fn decimal(out: &mut Vec<u8>, bytes: &[u8], scale: usize) -> Result<(), String> {
    if bytes.is_empty() {
        return Err("a decimal has no bytes".into());
    }
    let negative = bytes[0] & 0x80 != 0;
    // Sign-extension bytes beyond 16 carry no value.
    let extra = bytes.len().saturating_sub(16);
    if bytes[..extra].iter().any(|&b| b != if negative { 0xff } else { 0 }) {
        return Err(format!("a decimal of {} bytes does not fit 38 digits", bytes.len()));
    }
    let mut v: i128 = if negative { -1 } else { 0 };
    for &b in &bytes[extra..] {
        v = (v << 8) | i128::from(b);
    }
    let digits = v.unsigned_abs().to_string();
    let mut s = String::with_capacity(digits.len() + 3);
    s.push('"');
    if v < 0 {
        s.push('-');
    }
    if scale == 0 {
        s.push_str(&digits);
    } else if digits.len() > scale {
        let (int, frac) = digits.split_at(digits.len() - scale);
        let _ = write!(s, "{int}.{frac}");
    } else {
        let _ = write!(s, "0.{}{digits}", "0".repeat(scale - digits.len()));
    }
    s.push('"');
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::types::Value;

    fn json_of(writer: &str, reader: Option<&str>, value: Value) -> String {
        let w = Schema::parse_str(writer).unwrap();
        let r = reader.map(|r| Schema::parse_str(r).unwrap());
        let bytes = apache_avro::to_avro_datum(&w, value).unwrap();
        let t = AvroTranscoder::new(&w, r.as_ref()).unwrap();
        let mut out = Vec::new();
        t.to_json(&bytes, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn records_maps_arrays_unions_decimals_and_enums_become_json() {
        let schema = r#"{"type":"record","name":"T","fields":[
            {"name":"id","type":"string"},
            {"name":"n","type":"int"},
            {"name":"amount","type":{"type":"bytes","logicalType":"decimal","precision":10,"scale":2}},
            {"name":"at","type":{"type":"long","logicalType":"timestamp-millis"}},
            {"name":"meta","type":{"type":"map","values":"string"}},
            {"name":"tags","type":{"type":"array","items":"string"}},
            {"name":"note","type":["null","string"]},
            {"name":"kind","type":{"type":"enum","name":"K","symbols":["A","B"]}},
            {"name":"ratio","type":"double"}]}"#;
        let v = Value::Record(vec![
            ("id".into(), Value::String("x\"1".into())),
            ("n".into(), Value::Int(-3)),
            ("amount".into(), Value::Decimal(apache_avro::Decimal::from((-12345i64).to_be_bytes().to_vec()))),
            ("at".into(), Value::TimestampMillis(1_700_000_000_123)),
            ("meta".into(), Value::Map([("k".to_string(), Value::String("v".into()))].into_iter().collect())),
            ("tags".into(), Value::Array(vec![Value::String("a".into()), Value::String("b".into())])),
            ("note".into(), Value::Union(0, Box::new(Value::Null))),
            ("kind".into(), Value::Enum(1, "B".into())),
            ("ratio".into(), Value::Double(0.5)),
        ]);
        assert_eq!(
            json_of(schema, None, v),
            r#"{"id":"x\"1","n":-3,"amount":"-123.45","at":1700000000123,"meta":{"k":"v"},"tags":["a","b"],"note":null,"kind":"B","ratio":0.5}"#
        );
    }

    #[test]
    fn reader_defaults_and_aliases_fill_what_the_writer_lacks() {
        let writer = r#"{"type":"record","name":"T","fields":[{"name":"old","type":"int"}]}"#;
        let reader = r#"{"type":"record","name":"T","fields":[
            {"name":"new","aliases":["old"],"type":"long"},
            {"name":"channel","type":"string","default":"web"},
            {"name":"extra","type":["null","string"],"default":null}]}"#;
        let v = Value::Record(vec![("old".into(), Value::Int(7))]);
        assert_eq!(json_of(writer, Some(reader), v), r#"{"new":7,"channel":"web","extra":null}"#);
    }

    #[test]
    fn small_decimals_and_trailing_bytes() {
        let mut out = Vec::new();
        decimal(&mut out, &[0x05], 3).unwrap();
        assert_eq!(out, br#""0.005""#);
        let w = Schema::parse_str(r#""int""#).unwrap();
        let t = AvroTranscoder::new(&w, None).unwrap();
        let err = t.to_json(&[2, 0], &mut Vec::new()).unwrap_err();
        assert!(err.contains("ends at byte 1 of 2"), "{err}");
        let err = t.to_json(&[], &mut Vec::new()).unwrap_err();
        assert!(err.contains("ends inside a number"), "{err}");
    }

    #[test]
    fn compatibility_follows_resolution_rules_with_logical_types() {
        let reader = r#"{"type":"record","name":"T","fields":[
            {"name":"amount","type":{"type":"bytes","logicalType":"decimal","precision":18,"scale":2}},
            {"name":"n","type":"long"},
            {"name":"channel","type":"string","default":"web"}]}"#;
        let older = r#"{"type":"record","name":"T","fields":[
            {"name":"amount","type":{"type":"bytes","logicalType":"decimal","precision":18,"scale":2}},
            {"name":"n","type":"int"}]}"#;
        check_compatible(older, reader).unwrap();
        let wrong =
            r#"{"type":"record","name":"T","fields":[{"name":"amount","type":"boolean"},{"name":"n","type":"long"}]}"#;
        assert!(check_compatible(wrong, reader).unwrap_err().contains("amount"));
        let lacking = r#"{"type":"record","name":"T","fields":[{"name":"amount","type":"bytes"}]}"#;
        assert!(check_compatible(lacking, reader).is_err());
    }

    #[test]
    fn a_failure_names_the_field_path() {
        let w = Schema::parse_str(
            r#"{"type":"record","name":"T","fields":[{"name":"items","type":{"type":"array","items":
                {"type":"record","name":"I","fields":[{"name":"attrs","type":{"type":"map","values":"double"}}]}}}]}"#,
        )
        .unwrap();
        let item = |x: f64| {
            Value::Record(vec![(
                "attrs".into(),
                Value::Map([("w".to_string(), Value::Double(x))].into_iter().collect()),
            )])
        };
        let v = Value::Record(vec![("items".into(), Value::Array(vec![item(1.0), item(f64::NAN)]))]);
        let bytes = apache_avro::to_avro_datum(&w, v).unwrap();
        let err = AvroTranscoder::new(&w, None).unwrap().to_json(&bytes, &mut Vec::new()).unwrap_err();
        assert!(err.starts_with("field 'items[1].attrs.w': NaN has no JSON spelling"), "{err}");
    }

    #[test]
    fn recursive_writer_schemas_are_refused() {
        let w = Schema::parse_str(
            r#"{"type":"record","name":"L","fields":[{"name":"next","type":["null","L"]},{"name":"v","type":"int"}]}"#,
        )
        .unwrap();
        assert!(AvroTranscoder::new(&w, None).unwrap_err().contains("recursive"));
    }
}
