//! Parsing an `.avsc` body schema into the internal type tree.
//!
//! The tree ([`Node`]) keeps what decoding needs: the JSON kind each value
//! must have, whether it may be null, and which post-decode conversion turns
//! the arrow-json column into the final Arrow type.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use deltalake::arrow::datatypes::{DataType, Field, Fields, TimeUnit};
use serde_json::{Map, Value};

use super::SchemaError;

/// Largest precision a `Decimal128` holds.
const MAX_DECIMAL128_PRECISION: u64 = 38;

/// Field keys of an Avro record field that are not custom attributes.
const RESERVED_FIELD_KEYS: &[&str] = &["name", "type", "doc", "default", "order", "aliases"];

/// The Arrow time zone of every timestamp column (Delta/Spark `timestamp`).
pub(crate) const UTC: &str = "UTC";

/// One Avro type with its nullability (a `["null", T]` union).
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub(crate) kind: Kind,
    /// True for `["null", T]` / `[T, "null"]`.
    pub(crate) nullable: bool,
}

/// The Avro types Weir maps, after logical types and attributes are applied.
#[derive(Debug, Clone)]
pub(crate) enum Kind {
    Boolean,
    Int,
    Long,
    Float,
    Double,
    /// `string` without logical type.
    String,
    /// `string` with `logicalType: uuid`.
    Uuid,
    /// `string` with `"weir.timestamp": "iso8601"`.
    IsoTimestamp,
    /// `bytes` / `fixed` without logical type: kept as the JSON string.
    Bytes,
    /// `bytes` / `fixed` with `logicalType: decimal`.
    Decimal {
        precision: u8,
        scale: i8,
    },
    /// `long` with `logicalType: timestamp-millis`.
    TimestampMillis,
    /// `long` with `logicalType: timestamp-micros`.
    TimestampMicros,
    /// `int` with `logicalType: date`.
    Date,
    Enum(Arc<EnumDef>),
    Record(Arc<RecordDef>),
    Array(Box<Node>),
    Map(Box<Node>),
}

/// An Avro enum.
#[derive(Debug)]
pub(crate) struct EnumDef {
    pub(crate) name: String,
    pub(crate) symbols: Vec<String>,
    /// Symbol lookup for enums with many symbols.
    pub(crate) set: HashSet<String>,
}

impl EnumDef {
    /// True if `value` is one of the symbols.
    pub(crate) fn contains(&self, value: &str) -> bool {
        if self.symbols.len() <= 16 {
            self.symbols.iter().any(|s| s == value)
        } else {
            self.set.contains(value)
        }
    }

    /// The symbols for messages: up to 10, then "…".
    pub(crate) fn describe_symbols(&self) -> String {
        let mut out = self.symbols.iter().take(10).map(String::as_str).collect::<Vec<_>>().join(", ");
        if self.symbols.len() > 10 {
            out.push_str(&format!(", … ({} in all)", self.symbols.len()));
        }
        out
    }
}

/// An Avro record.
#[derive(Debug)]
pub(crate) struct RecordDef {
    pub(crate) name: String,
    pub(crate) fields: Vec<FieldDef>,
    /// Name lookup for records with many fields (small ones scan).
    index: HashMap<String, usize>,
}

impl RecordDef {
    fn new(name: String, fields: Vec<FieldDef>) -> Self {
        let index = fields.iter().enumerate().map(|(i, f)| (f.name.clone(), i)).collect();
        RecordDef { name, fields, index }
    }

    /// Finds the field named `key`. `hint` is where the previous key was
    /// found plus one: JSON objects usually list keys in schema order, so the
    /// scan starting there succeeds at once.
    #[inline]
    pub(crate) fn find(&self, key: &str, hint: &mut usize) -> Option<usize> {
        let n = self.fields.len();
        if n > 32 {
            return self.index.get(key).copied();
        }
        let mut i = if *hint < n { *hint } else { 0 };
        for _ in 0..n {
            if self.fields[i].name == key {
                *hint = i + 1;
                return Some(i);
            }
            i += 1;
            if i == n {
                i = 0;
            }
        }
        None
    }
}

/// A record field.
#[derive(Debug)]
pub(crate) struct FieldDef {
    pub(crate) name: String,
    pub(crate) node: Node,
    /// Custom attributes (keys other than name/type/doc/default/order/aliases),
    /// string values as is, other values as JSON text.
    pub(crate) attrs: Vec<(String, String)>,
}

impl Node {
    /// The final Arrow type (see the module docs for the mapping).
    pub(crate) fn arrow_type(&self) -> DataType {
        match &self.kind {
            Kind::Boolean => DataType::Boolean,
            Kind::Int => DataType::Int32,
            Kind::Long => DataType::Int64,
            Kind::Float => DataType::Float32,
            Kind::Double => DataType::Float64,
            Kind::String | Kind::Uuid | Kind::Bytes | Kind::Enum(_) => DataType::Utf8,
            Kind::IsoTimestamp | Kind::TimestampMillis | Kind::TimestampMicros => {
                DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into()))
            }
            Kind::Decimal { precision, scale } => DataType::Decimal128(*precision, *scale),
            Kind::Date => DataType::Date32,
            Kind::Record(rec) => DataType::Struct(rec.arrow_fields(false)),
            Kind::Array(item) => DataType::List(Arc::new(Field::new("item", item.arrow_type(), true))),
            Kind::Map(values) => map_type(values.arrow_type()),
        }
    }

    /// The type arrow-json decodes into: the final type, except that values
    /// parsed from text afterwards are `Utf8` and timestamps counted from the
    /// epoch are `Int64`.
    pub(crate) fn decode_type(&self) -> DataType {
        match &self.kind {
            Kind::IsoTimestamp | Kind::Decimal { .. } | Kind::Date => DataType::Utf8,
            Kind::TimestampMillis | Kind::TimestampMicros => DataType::Int64,
            Kind::Record(rec) => DataType::Struct(rec.arrow_fields(true)),
            Kind::Array(item) => DataType::List(Arc::new(Field::new("item", item.decode_type(), true))),
            Kind::Map(values) => map_type(values.decode_type()),
            _ => self.arrow_type(),
        }
    }

    /// True if the decoded column must be converted or validated afterwards.
    pub(crate) fn needs_post(&self) -> bool {
        match &self.kind {
            Kind::IsoTimestamp
            | Kind::Decimal { .. }
            | Kind::Date
            | Kind::TimestampMillis
            | Kind::TimestampMicros
            | Kind::Uuid
            | Kind::Enum(_) => true,
            Kind::Record(rec) => rec.fields.iter().any(|f| f.node.needs_post()),
            Kind::Array(item) | Kind::Map(item) => item.needs_post(),
            _ => false,
        }
    }

    /// The Avro type name used in messages ("expected long, found string").
    pub(crate) fn avro_name(&self) -> String {
        match &self.kind {
            Kind::Boolean => "boolean".into(),
            Kind::Int => "int".into(),
            Kind::Long => "long".into(),
            Kind::Float => "float".into(),
            Kind::Double => "double".into(),
            Kind::String => "string".into(),
            Kind::Uuid => "uuid string".into(),
            Kind::IsoTimestamp => "ISO-8601 timestamp string".into(),
            Kind::Bytes => "bytes (as a string)".into(),
            Kind::Decimal { .. } => "decimal (string or number)".into(),
            Kind::TimestampMillis => "timestamp-millis long".into(),
            Kind::TimestampMicros => "timestamp-micros long".into(),
            Kind::Date => "date (int days or string)".into(),
            Kind::Enum(e) => format!("enum {} (string)", e.name),
            Kind::Record(r) => format!("record {} (object)", r.name),
            Kind::Array(_) => "array".into(),
            Kind::Map(_) => "map (object)".into(),
        }
    }
}

impl RecordDef {
    /// Arrow fields of a nested record: all nullable.
    fn arrow_fields(&self, decode: bool) -> Fields {
        self.fields
            .iter()
            .map(|f| {
                let t = if decode { f.node.decode_type() } else { f.node.arrow_type() };
                Field::new(&f.name, t, true)
            })
            .collect()
    }
}

/// Arrow's standard map layout: `entries` struct of non-null `keys` (Utf8)
/// and nullable `values`, unsorted.
pub(crate) fn map_type(values: DataType) -> DataType {
    let entries = Field::new(
        "entries",
        DataType::Struct(Fields::from(vec![
            Field::new("keys", DataType::Utf8, false),
            Field::new("values", values, true),
        ])),
        false,
    );
    DataType::Map(Arc::new(entries), false)
}

/// Parses the `.avsc` text into the top-level record.
pub(crate) fn parse_avsc(text: &str, origin: &str) -> Result<Arc<RecordDef>, SchemaError> {
    let value: Value = serde_json::from_str(text).map_err(|e| SchemaError {
        origin: origin.to_string(),
        path: String::new(),
        message: format!("not valid JSON: {e}"),
    })?;
    let mut parser = AvscParser { origin, named: HashMap::new(), in_progress: HashSet::new() };
    let node = parser.parse_type(&value, None, "")?;
    if node.nullable {
        return Err(parser.err("", "the body schema must be a record, not a union"));
    }
    match node.kind {
        Kind::Record(rec) => Ok(rec),
        _ => Err(parser.err("", format!("the body schema must be a record, found {}", node.avro_name()))),
    }
}

struct AvscParser<'a> {
    origin: &'a str,
    /// Named types by full name.
    named: HashMap<String, Kind>,
    /// Records being defined (a reference to one is recursion).
    in_progress: HashSet<String>,
}

/// `parent.child` (or `child` at the top).
fn join(path: &str, child: &str) -> String {
    if path.is_empty() {
        child.to_string()
    } else {
        format!("{path}.{child}")
    }
}

impl AvscParser<'_> {
    fn err(&self, path: &str, message: impl Into<String>) -> SchemaError {
        SchemaError { origin: self.origin.to_string(), path: path.to_string(), message: message.into() }
    }

    /// Parses a type. `ns` is the enclosing namespace, `path` the dotted
    /// field path for messages.
    fn parse_type(&mut self, v: &Value, ns: Option<&str>, path: &str) -> Result<Node, SchemaError> {
        match v {
            Value::String(name) => self.parse_named_or_primitive(name, ns, path),
            Value::Array(branches) => self.parse_union(branches, ns, path),
            Value::Object(obj) => self.parse_complex(obj, ns, path),
            other => Err(self.err(path, format!("a type must be a string, array or object, found {other}"))),
        }
    }

    fn parse_union(&mut self, branches: &[Value], ns: Option<&str>, path: &str) -> Result<Node, SchemaError> {
        let is_null = |b: &Value| matches!(b, Value::String(s) if s == "null");
        let nulls = branches.iter().filter(|b| is_null(b)).count();
        let others: Vec<&Value> = branches.iter().filter(|b| !is_null(b)).collect();
        if others.len() != 1 || nulls > 1 {
            return Err(self.err(
                path,
                format!("unions other than [null, T] are not supported (found {})", Value::Array(branches.to_vec())),
            ));
        }
        if matches!(others[0], Value::Array(_)) {
            return Err(self.err(path, "a union may not contain a union"));
        }
        let mut node = self.parse_type(others[0], ns, path)?;
        if nulls == 1 {
            node.nullable = true;
        }
        Ok(node)
    }

    fn primitive(name: &str) -> Option<Kind> {
        Some(match name {
            "boolean" => Kind::Boolean,
            "int" => Kind::Int,
            "long" => Kind::Long,
            "float" => Kind::Float,
            "double" => Kind::Double,
            "string" => Kind::String,
            "bytes" => Kind::Bytes,
            _ => return None,
        })
    }

    fn parse_named_or_primitive(&mut self, name: &str, ns: Option<&str>, path: &str) -> Result<Node, SchemaError> {
        if name == "null" {
            return Err(self.err(path, "type \"null\" is only supported in a [null, T] union"));
        }
        if let Some(kind) = Self::primitive(name) {
            return Ok(Node { kind, nullable: false });
        }
        let kind = self.resolve(name, ns, path)?;
        Ok(Node { kind, nullable: false })
    }

    /// Looks a named type up by full name, by the name in the enclosing
    /// namespace, in the null namespace, or by a unique short name.
    fn resolve(&self, name: &str, ns: Option<&str>, path: &str) -> Result<Kind, SchemaError> {
        let mut candidates = Vec::with_capacity(2);
        if !name.contains('.') {
            if let Some(ns) = ns {
                candidates.push(format!("{ns}.{name}"));
            }
        }
        candidates.push(name.to_string());
        for c in &candidates {
            if self.in_progress.contains(c) {
                return Err(self.err(path, format!("recursive type {c:?} is not supported")));
            }
            if let Some(kind) = self.named.get(c) {
                return Ok(kind.clone());
            }
        }
        if !name.contains('.') {
            let suffix = format!(".{name}");
            let matches: Vec<&String> = self.named.keys().filter(|k| k.ends_with(&suffix)).collect();
            if matches.len() == 1 {
                return Ok(self.named[matches[0]].clone());
            }
            if matches.len() > 1 {
                let mut names: Vec<&str> = matches.iter().map(|s| s.as_str()).collect();
                names.sort_unstable();
                return Err(self.err(path, format!("type name {name:?} is ambiguous: {}", names.join(", "))));
            }
            if self.in_progress.iter().any(|k| k.ends_with(&suffix) || k == name) {
                return Err(self.err(path, format!("recursive type {name:?} is not supported")));
            }
        }
        Err(self.err(path, format!("unknown type {name:?} (named types must be defined before they are used)")))
    }

    /// Full name and namespace of a named type definition.
    fn full_name(
        &self,
        obj: &Map<String, Value>,
        ns: Option<&str>,
        path: &str,
    ) -> Result<(String, Option<String>), SchemaError> {
        let name = match obj.get("name") {
            Some(Value::String(s)) if !s.is_empty() => s.as_str(),
            _ => return Err(self.err(path, "a named type needs a non-empty \"name\"")),
        };
        if let Some((space, _)) = name.rsplit_once('.') {
            return Ok((name.to_string(), Some(space.to_string())));
        }
        let space = match obj.get("namespace") {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(Value::String(_)) | Some(Value::Null) => None,
            Some(_) => return Err(self.err(path, "\"namespace\" must be a string")),
            None => ns.map(str::to_string),
        };
        let full = match &space {
            Some(s) => format!("{s}.{name}"),
            None => name.to_string(),
        };
        Ok((full, space))
    }

    fn register(&mut self, full: &str, kind: &Kind, path: &str) -> Result<(), SchemaError> {
        if self.named.contains_key(full) {
            return Err(self.err(path, format!("type {full:?} is defined twice")));
        }
        self.named.insert(full.to_string(), kind.clone());
        Ok(())
    }

    fn parse_complex(&mut self, obj: &Map<String, Value>, ns: Option<&str>, path: &str) -> Result<Node, SchemaError> {
        let ty = match obj.get("type") {
            Some(Value::String(s)) => s.as_str(),
            Some(other @ (Value::Array(_) | Value::Object(_))) => {
                // `{"type": {...}}` or `{"type": [...]}`: the inner type.
                return self.parse_type(other, ns, path);
            }
            _ => return Err(self.err(path, "a type object needs a \"type\"")),
        };
        let logical = match obj.get("logicalType") {
            Some(Value::String(s)) => Some(s.as_str()),
            Some(_) => return Err(self.err(path, "\"logicalType\" must be a string")),
            None => None,
        };
        let kind = match ty {
            "record" | "error" => return self.parse_record(obj, ns, path),
            "enum" => {
                let (full, _) = self.full_name(obj, ns, path)?;
                let symbols = match obj.get("symbols") {
                    Some(Value::Array(items)) => items
                        .iter()
                        .map(|s| match s {
                            Value::String(s) => Ok(s.clone()),
                            _ => Err(self.err(path, "enum symbols must be strings")),
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                    _ => return Err(self.err(path, "an enum needs \"symbols\", an array of strings")),
                };
                if symbols.is_empty() {
                    return Err(self.err(path, "an enum needs at least one symbol"));
                }
                let set: HashSet<String> = symbols.iter().cloned().collect();
                if set.len() != symbols.len() {
                    return Err(self.err(path, "enum symbols must be unique"));
                }
                let short = full.rsplit('.').next().unwrap_or(&full).to_string();
                let kind = Kind::Enum(Arc::new(EnumDef { name: short, symbols, set }));
                self.register(&full, &kind, path)?;
                kind
            }
            "fixed" => {
                let (full, _) = self.full_name(obj, ns, path)?;
                let size = match obj.get("size").and_then(Value::as_u64) {
                    Some(n) => n,
                    None => return Err(self.err(path, "a fixed type needs a non-negative integer \"size\"")),
                };
                let kind = match logical {
                    Some("decimal") => {
                        let kind = self.decimal(obj, path)?;
                        if let Kind::Decimal { precision, .. } = kind {
                            // Digits a two's-complement number of `size` bytes holds.
                            let max = if size == 0 {
                                0
                            } else {
                                ((8 * size - 1) as f64 * std::f64::consts::LOG10_2).floor() as u64
                            };
                            if u64::from(precision) > max {
                                return Err(self.err(
                                    path,
                                    format!("decimal precision {precision} does not fit a fixed of {size} bytes (at most {max} digits)"),
                                ));
                            }
                        }
                        kind
                    }
                    _ => Kind::Bytes,
                };
                self.register(&full, &kind, path)?;
                kind
            }
            "array" => {
                let items = obj.get("items").ok_or_else(|| self.err(path, "an array needs \"items\""))?;
                let item = self.parse_type(items, ns, &format!("{path}[]"))?;
                Kind::Array(Box::new(item))
            }
            "map" => {
                let values = obj.get("values").ok_or_else(|| self.err(path, "a map needs \"values\""))?;
                let value = self.parse_type(values, ns, &format!("{path}{{}}"))?;
                Kind::Map(Box::new(value))
            }
            "null" => return self.parse_named_or_primitive("null", ns, path),
            primitive => {
                let base = match Self::primitive(primitive) {
                    Some(k) => k,
                    // A reference written as an object: {"type": "Name"}.
                    None => return self.parse_named_or_primitive(primitive, ns, path),
                };
                let kind = self.apply_logical(base, logical, obj, path)?;
                let kind = self.apply_weir_timestamp(kind, obj.get("weir.timestamp"), path)?;
                return Ok(Node { kind, nullable: false });
            }
        };
        Ok(Node { kind, nullable: false })
    }

    /// `logicalType` on a primitive. Unknown logical types (time-millis,
    /// local-timestamp-*, duration, ...) fall back to the base type, as the
    /// Avro specification says.
    fn apply_logical(
        &self,
        base: Kind,
        logical: Option<&str>,
        obj: &Map<String, Value>,
        path: &str,
    ) -> Result<Kind, SchemaError> {
        let Some(logical) = logical else {
            return Ok(base);
        };
        let needs = |want: &str| self.err(path, format!("logicalType {logical:?} needs type {want}"));
        Ok(match logical {
            "decimal" => match base {
                Kind::Bytes => self.decimal(obj, path)?,
                _ => return Err(needs("bytes or fixed")),
            },
            "uuid" => match base {
                Kind::String => Kind::Uuid,
                _ => return Err(needs("string")),
            },
            "timestamp-millis" => match base {
                Kind::Long => Kind::TimestampMillis,
                _ => return Err(needs("long")),
            },
            "timestamp-micros" => match base {
                Kind::Long => Kind::TimestampMicros,
                _ => return Err(needs("long")),
            },
            "date" => match base {
                Kind::Int => Kind::Date,
                _ => return Err(needs("int")),
            },
            _ => base,
        })
    }

    fn decimal(&self, obj: &Map<String, Value>, path: &str) -> Result<Kind, SchemaError> {
        let precision = match obj.get("precision").and_then(Value::as_u64) {
            Some(p) if (1..=MAX_DECIMAL128_PRECISION).contains(&p) => p,
            Some(p) => {
                return Err(self.err(
                    path,
                    format!("decimal precision {p} is outside 1..={MAX_DECIMAL128_PRECISION} (Decimal128)"),
                ))
            }
            None => return Err(self.err(path, "a decimal needs an integer \"precision\"")),
        };
        let scale = match obj.get("scale") {
            None => 0,
            Some(v) => match v.as_u64() {
                Some(s) if s <= precision => s,
                _ => {
                    return Err(self
                        .err(path, format!("decimal scale {v} must be an integer in 0..={precision} (the precision)")))
                }
            },
        };
        Ok(Kind::Decimal { precision: precision as u8, scale: scale as i8 })
    }

    /// `"weir.timestamp": "iso8601"` (on the field or on the type object).
    fn apply_weir_timestamp(&self, kind: Kind, attr: Option<&Value>, path: &str) -> Result<Kind, SchemaError> {
        match attr {
            None => Ok(kind),
            Some(Value::String(s)) if s == "iso8601" => match kind {
                Kind::String | Kind::IsoTimestamp => Ok(Kind::IsoTimestamp),
                _ => {
                    Err(self.err(path, "\"weir.timestamp\" applies to fields of type string (or [null, string]) only"))
                }
            },
            Some(other) => Err(self.err(path, format!("\"weir.timestamp\" must be \"iso8601\", found {other}"))),
        }
    }

    fn parse_record(&mut self, obj: &Map<String, Value>, ns: Option<&str>, path: &str) -> Result<Node, SchemaError> {
        let (full, space) = self.full_name(obj, ns, path)?;
        if self.named.contains_key(&full) || self.in_progress.contains(&full) {
            return Err(self.err(path, format!("type {full:?} is defined twice")));
        }
        let fields_json = match obj.get("fields") {
            Some(Value::Array(f)) => f,
            _ => return Err(self.err(path, format!("record {full:?} needs \"fields\", an array"))),
        };
        self.in_progress.insert(full.clone());
        let mut fields: Vec<FieldDef> = Vec::with_capacity(fields_json.len());
        for (i, fv) in fields_json.iter().enumerate() {
            let Value::Object(f) = fv else {
                return Err(self.err(path, format!("field #{i} of record {full:?} is not an object")));
            };
            let name = match f.get("name") {
                Some(Value::String(s)) if !s.is_empty() => s.clone(),
                _ => return Err(self.err(path, format!("field #{i} of record {full:?} needs a non-empty \"name\""))),
            };
            let fpath = join(path, &name);
            if fields.iter().any(|g| g.name == name) {
                return Err(self.err(&fpath, "duplicate field name"));
            }
            let ty = f.get("type").ok_or_else(|| self.err(&fpath, "a field needs a \"type\""))?;
            let mut node = self.parse_type(ty, space.as_deref(), &fpath)?;
            node.kind = self.apply_weir_timestamp(node.kind, f.get("weir.timestamp"), &fpath)?;
            let attrs = f
                .iter()
                .filter(|(k, _)| !RESERVED_FIELD_KEYS.contains(&k.as_str()))
                .map(|(k, v)| {
                    let text = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), text)
                })
                .collect();
            fields.push(FieldDef { name, node, attrs });
        }
        self.in_progress.remove(&full);
        let short = full.rsplit('.').next().unwrap_or(&full).to_string();
        let kind = Kind::Record(Arc::new(RecordDef::new(short, fields)));
        self.register(&full, &kind, path)?;
        Ok(Node { kind, nullable: false })
    }
}
