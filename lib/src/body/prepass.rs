//! The per-row pre-pass: one serde_json scan of a body that finds what
//! arrow-json would silently accept or reject for the whole chunk.
//!
//! Leaf values are taken as `&RawValue` (serde_json skips them without
//! building anything) and only their first bytes are looked at; records,
//! arrays and maps are recursed into. Nothing is allocated per row unless
//! the row fails or has unknown fields. Paths are built lazily from a chain of
//! stack frames ([`Path`]) only when a message needs them.
//!
//! A key repeated in any object of the body (a record, a map, or an object
//! inside an unknown field) fails the row, naming the key's path: JSON
//! leaves its meaning open, and the raw table's subject columns, arrow-json
//! and `_rescued` would each read it their own way. Keys of a record are
//! tracked in a bit set; maps and unknown keys (rare) use a [`KeySet`].

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::schema::{Kind, Node, RecordDef};

/// A dotted field path, as a chain of stack frames.
#[derive(Clone, Copy)]
pub(crate) enum Path<'a> {
    Root,
    Field(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root => Ok(()),
            Path::Field(Path::Root, name) => f.write_str(name),
            Path::Field(parent, name) => write!(f, "{parent}.{name}"),
            Path::Index(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

/// What the pre-pass found in one row.
#[derive(Default)]
pub(crate) struct RowState {
    /// The reason the row fails, if it does.
    pub(crate) failure: Option<String>,
    /// `{"path":raw,...}` being built: empty when the row has no unknown field.
    pub(crate) rescued: String,
}

impl RowState {
    fn fail<E: de::Error>(&mut self, message: String) -> E {
        if self.failure.is_none() {
            self.failure = Some(message);
        }
        E::custom("row rejected by the pre-pass")
    }

    fn duplicate<E: de::Error>(&mut self, path: &Path<'_>) -> E {
        self.fail(format!("duplicate key \"{path}\""))
    }

    fn rescue(&mut self, parent: &Path<'_>, key: &str, raw: &RawValue) {
        self.rescued.push(if self.rescued.is_empty() { '{' } else { ',' });
        let full = match parent {
            Path::Root => key.to_string(),
            p => format!("{p}.{key}"),
        };
        // Serialising a &str cannot fail.
        if let Ok(quoted) = serde_json::to_string(&full) {
            self.rescued.push_str(&quoted);
        }
        self.rescued.push(':');
        self.rescued.push_str(raw.get());
    }
}

/// Shortens a value for a message: at most `MAX` characters, then "…".
pub(crate) fn truncate(s: &str) -> Cow<'_, str> {
    const MAX: usize = 60;
    match s.char_indices().nth(MAX) {
        None => Cow::Borrowed(s),
        Some((cut, _)) => Cow::Owned(format!("{}…", &s[..cut])),
    }
}

/// Checks one body. On success `state.failure` is `None` and
/// `state.rescued` holds the unknown fields (or is empty).
pub(crate) fn check_body(rec: &RecordDef, body: &[u8], state: &mut RowState) {
    state.failure = None;
    state.rescued.clear();
    let text = match std::str::from_utf8(body) {
        Ok(t) => t,
        Err(e) => {
            state.failure = Some(format!("body is not valid JSON: {e}"));
            return;
        }
    };
    let mut de = serde_json::Deserializer::from_str(text);
    let result = TopSeed { rec, state }.deserialize(&mut de).and_then(|()| de.end());
    if let Err(e) = result {
        if state.failure.is_none() {
            state.failure = Some(format!("body is not valid JSON: {e}"));
        }
    }
    if state.failure.is_some() {
        state.rescued.clear();
    } else if !state.rescued.is_empty() {
        state.rescued.push('}');
    }
}

/// An object key, borrowed from the body unless it had escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// The JSON kind of a raw value, from its first byte.
fn kind_of(first: u8) -> &'static str {
    match first {
        b'"' => "string",
        b'{' => "object",
        b'[' => "array",
        b't' | b'f' => "boolean",
        b'n' => "null",
        _ => "number",
    }
}

fn is_number(first: u8) -> bool {
    first == b'-' || first.is_ascii_digit()
}

/// The top level: the body must be an object.
struct TopSeed<'a> {
    rec: &'a RecordDef,
    state: &'a mut RowState,
}

impl<'de> DeserializeSeed<'de> for TopSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

macro_rules! not_an_object {
    ($($method:ident($($t:ty)?)),*) => {
        $(fn $method<E: de::Error>(self $(, _v: $t)?) -> Result<(), E> {
            Err(self.state.fail("body is not a JSON object".to_string()))
        })*
    };
}

impl<'de> Visitor<'de> for TopSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        visit_record(self.rec, &Path::Root, self.state, map)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _seq: A) -> Result<(), A::Error> {
        Err(self.state.fail("body is not a JSON object".to_string()))
    }
    not_an_object!(visit_bool(bool), visit_i64(i64), visit_u64(u64), visit_f64(f64), visit_str(&str), visit_unit());
}

/// Which fields of a record were present (and not null).
enum Seen {
    Small(u64),
    Big(Vec<bool>),
}

impl Seen {
    fn new(n: usize) -> Self {
        if n <= 64 {
            Seen::Small(0)
        } else {
            Seen::Big(vec![false; n])
        }
    }
    fn set(&mut self, i: usize) {
        match self {
            Seen::Small(bits) => *bits |= 1 << i,
            Seen::Big(v) => v[i] = true,
        }
    }
    fn get(&self, i: usize) -> bool {
        match self {
            Seen::Small(bits) => bits & (1 << i) != 0,
            Seen::Big(v) => v[i],
        }
    }
}

/// The keys of one object seen so far: a list while it is short, a hash
/// set beyond (so a huge object is not quadratic).
#[derive(Default)]
struct KeySet<'de> {
    list: Vec<Cow<'de, str>>,
    set: HashSet<Cow<'de, str>>,
}

impl<'de> KeySet<'de> {
    const LIST_MAX: usize = 16;

    fn contains(&self, key: &str) -> bool {
        if self.set.is_empty() {
            self.list.iter().any(|k| k == key)
        } else {
            self.set.contains(key)
        }
    }

    fn insert(&mut self, key: Cow<'de, str>) {
        if !self.set.is_empty() {
            self.set.insert(key);
        } else if self.list.len() < Self::LIST_MAX {
            self.list.push(key);
        } else {
            self.set.extend(self.list.drain(..));
            self.set.insert(key);
        }
    }
}

/// Fails the row when an object inside `raw` (an unknown field's value,
/// kept as received) repeats a key.
fn check_unique_keys<E: de::Error>(raw: &RawValue, path: &Path<'_>, state: &mut RowState) -> Result<(), E> {
    if !matches!(raw.get().as_bytes().first(), Some(b'{' | b'[')) {
        return Ok(());
    }
    let mut duplicate = None;
    let mut de = serde_json::Deserializer::from_str(raw.get());
    // The value is valid JSON (it was just read as one): the only error is
    // the duplicate, recorded in `duplicate`.
    let _ = UniqueSeed { path, duplicate: &mut duplicate }.deserialize(&mut de);
    match duplicate {
        Some(message) => Err(state.fail(message)),
        None => Ok(()),
    }
}

/// Walks a value, stopping at the first object that repeats a key.
struct UniqueSeed<'a, 'p> {
    path: &'a Path<'p>,
    duplicate: &'a mut Option<String>,
}

impl<'de> DeserializeSeed<'de> for UniqueSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for UniqueSeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: de::Error>(self, _v: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _v: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _v: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _v: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _v: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        loop {
            let ipath = Path::Index(self.path, i);
            if seq.next_element_seed(UniqueSeed { path: &ipath, duplicate: &mut *self.duplicate })?.is_none() {
                return Ok(());
            }
            i += 1;
        }
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut keys = KeySet::default();
        while let Some(key) = map.next_key::<Key<'de>>()? {
            let kpath = Path::Field(self.path, &key.0);
            if keys.contains(&key.0) {
                *self.duplicate = Some(format!("duplicate key \"{kpath}\""));
                return Err(de::Error::custom("duplicate key"));
            }
            map.next_value_seed(UniqueSeed { path: &kpath, duplicate: &mut *self.duplicate })?;
            keys.insert(key.0);
        }
        Ok(())
    }
}

/// Checks a record's keys and values; unknown keys are rescued.
fn visit_record<'de, A: MapAccess<'de>>(
    rec: &RecordDef,
    path: &Path<'_>,
    state: &mut RowState,
    mut map: A,
) -> Result<(), A::Error> {
    let mut seen = Seen::new(rec.fields.len());
    let mut keyed = Seen::new(rec.fields.len());
    let mut unknown = KeySet::default();
    let mut hint = 0;
    while let Some(key) = map.next_key::<Key<'de>>()? {
        match rec.find(&key.0, &mut hint) {
            Some(i) => {
                let field = &rec.fields[i];
                let fpath = Path::Field(path, &field.name);
                if keyed.get(i) {
                    return Err(state.duplicate(&fpath));
                }
                keyed.set(i);
                let present =
                    map.next_value_seed(ValueSeed { node: &field.node, path: &fpath, state, in_record: true })?;
                if present {
                    seen.set(i);
                }
            }
            None => {
                let kpath = Path::Field(path, &key.0);
                if unknown.contains(&key.0) {
                    return Err(state.duplicate(&kpath));
                }
                let raw: &RawValue = map.next_value()?;
                check_unique_keys(raw, &kpath, state)?;
                state.rescue(path, &key.0, raw);
                unknown.insert(key.0);
            }
        }
    }
    for (i, field) in rec.fields.iter().enumerate() {
        if !field.node.nullable && !seen.get(i) {
            let fpath = Path::Field(path, &field.name);
            return Err(state.fail(format!("missing required field '{fpath}'")));
        }
    }
    Ok(())
}

/// Checks one value against its node. Returns whether the value was non-null.
struct ValueSeed<'a, 'p> {
    node: &'a Node,
    path: &'a Path<'p>,
    state: &'a mut RowState,
    /// A record field (null means "missing") rather than an array item or
    /// map value.
    in_record: bool,
}

impl ValueSeed<'_, '_> {
    fn mismatch<E: de::Error>(self, found: &str) -> E {
        let message = format!("field '{}': expected {}, found {found}", self.path, self.node.avro_name());
        self.state.fail(message)
    }

    fn null<E: de::Error>(self) -> Result<bool, E> {
        if self.node.nullable {
            Ok(false)
        } else if self.in_record {
            let message = format!("missing required field '{}'", self.path);
            Err(self.state.fail(message))
        } else {
            Err(self.mismatch("null"))
        }
    }

    /// Checks a leaf value's JSON kind (and integer syntax and range).
    fn leaf<E: de::Error>(self, raw: &str) -> Result<bool, E> {
        let Some(&first) = raw.as_bytes().first() else {
            return Err(self.mismatch("nothing"));
        };
        if first == b'n' {
            return self.null();
        }
        let ok = match &self.node.kind {
            Kind::Boolean => first == b't' || first == b'f',
            Kind::Float | Kind::Double => is_number(first),
            Kind::String | Kind::Uuid | Kind::IsoTimestamp | Kind::Bytes | Kind::Enum(_) => first == b'"',
            Kind::Decimal { .. } | Kind::Date => first == b'"' || is_number(first),
            Kind::Int | Kind::Long | Kind::TimestampMillis | Kind::TimestampMicros => {
                if !is_number(first) {
                    false
                } else {
                    return self.integer(raw);
                }
            }
            // Containers are not leaves.
            Kind::Record(_) | Kind::Array(_) | Kind::Map(_) => false,
        };
        if ok {
            Ok(true)
        } else {
            Err(self.mismatch(kind_of(first)))
        }
    }

    /// An integer literal within the type's range (serde_json has already
    /// checked the number syntax).
    fn integer<E: de::Error>(self, raw: &str) -> Result<bool, E> {
        if raw.bytes().any(|b| matches!(b, b'.' | b'e' | b'E')) {
            let found = format!("non-integer number {}", truncate(raw));
            return Err(self.mismatch(&found));
        }
        let digits = raw.len() - usize::from(raw.starts_with('-'));
        let in_range = match self.node.kind {
            Kind::Int => digits < 10 || raw.parse::<i32>().is_ok(),
            _ => digits < 19 || raw.parse::<i64>().is_ok(),
        };
        if in_range {
            Ok(true)
        } else {
            let message =
                format!("field '{}': {} is out of range for {}", self.path, truncate(raw), self.node.avro_name());
            Err(self.state.fail(message))
        }
    }
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_, '_> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        match self.node.kind {
            Kind::Record(_) | Kind::Array(_) | Kind::Map(_) => d.deserialize_any(self),
            _ => {
                let raw = <&RawValue>::deserialize(d)?;
                self.leaf(raw.get())
            }
        }
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_, '_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.node.avro_name())
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        self.null()
    }
    fn visit_none<E: de::Error>(self) -> Result<bool, E> {
        self.null()
    }
    fn visit_bool<E: de::Error>(self, _v: bool) -> Result<bool, E> {
        Err(self.mismatch("boolean"))
    }
    fn visit_i64<E: de::Error>(self, _v: i64) -> Result<bool, E> {
        Err(self.mismatch("number"))
    }
    fn visit_u64<E: de::Error>(self, _v: u64) -> Result<bool, E> {
        Err(self.mismatch("number"))
    }
    fn visit_f64<E: de::Error>(self, _v: f64) -> Result<bool, E> {
        Err(self.mismatch("number"))
    }
    fn visit_str<E: de::Error>(self, _v: &str) -> Result<bool, E> {
        Err(self.mismatch("string"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        let Kind::Array(item) = &self.node.kind else {
            return Err(self.mismatch("array"));
        };
        let mut i = 0;
        loop {
            let ipath = Path::Index(self.path, i);
            let seed = ValueSeed { node: item, path: &ipath, state: &mut *self.state, in_record: false };
            if seq.next_element_seed(seed)?.is_none() {
                break;
            }
            i += 1;
        }
        Ok(true)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        match &self.node.kind {
            Kind::Record(rec) => {
                visit_record(rec, self.path, self.state, map)?;
                Ok(true)
            }
            Kind::Map(value) => {
                let mut keys = KeySet::default();
                while let Some(key) = map.next_key::<Key<'de>>()? {
                    let kpath = Path::Field(self.path, &key.0);
                    if keys.contains(&key.0) {
                        return Err(self.state.duplicate(&kpath));
                    }
                    map.next_value_seed(ValueSeed {
                        node: value,
                        path: &kpath,
                        state: &mut *self.state,
                        in_record: false,
                    })?;
                    keys.insert(key.0);
                }
                Ok(true)
            }
            _ => Err(self.mismatch("object")),
        }
    }
}
