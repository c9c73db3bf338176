//! Data-subject keys: the top-level body fields the schema marks
//! `"weir.pii": "subject"` (e.g. `userId`).
//!
//! Ingest copies each one out of the JSON body into a raw column
//! `subject_<field>`, so `weir erase` finds a subject's raw rows by column
//! instead of parsing every body. Rows whose body is not a JSON object, or
//! that were ingested before the column existed, hold null there; erasure
//! reads the bodies of those rows only, with [`SubjectMatcher`].
//!
//! A body that holds a subject key more than once (`{"userId": "a", …,
//! "userId": "b"}`) has no single subject: its column is null, so erasure
//! reads the body, where [`SubjectMatcher`] matches every occurrence. Such a
//! body belongs to each of its values (the process stage quarantines it).
//!
//! Values are compared as text: a JSON string as is, a number or boolean in
//! its JSON spelling (`42`, `true`), which is also how a `hash` rule and
//! `--subject userId=42` spell it.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use deltalake::arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use deltalake::arrow::datatypes::DataType;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};

use super::BodySchema;

/// Prefix of the raw columns holding subject keys.
pub const COLUMN_PREFIX: &str = "subject_";

/// The raw column holding `field`.
pub fn column_name(field: &str) -> String {
    format!("{COLUMN_PREFIX}{field}")
}

/// The body fields marked `"weir.pii": "subject"`, in schema order.
pub fn subject_fields(schema: &BodySchema) -> Vec<String> {
    schema.annotations("weir.pii").into_iter().filter(|(_, kind)| kind == "subject").map(|(f, _)| f).collect()
}

/// One Utf8 column per field: the field's value in each body, null when the
/// body is null, not a JSON object (or not valid JSON after it), or lacks
/// the field (or holds an object, array or null there), and null when the body holds the field more than
/// once (erasure then reads the body and matches every occurrence).
pub fn extract(bodies: &dyn Array, fields: &[String]) -> Vec<ArrayRef> {
    let mut builders: Vec<StringBuilder> =
        fields.iter().map(|_| StringBuilder::with_capacity(bodies.len(), bodies.len() * 16)).collect();
    let mut found: Vec<Slot> = vec![Slot::Absent; fields.len()];
    for i in 0..bodies.len() {
        found.iter_mut().for_each(|f| *f = Slot::Absent);
        if let Some(bytes) = body_bytes(bodies, i) {
            let parsed = pick(bytes, fields, |field, value| {
                found[field] = match std::mem::replace(&mut found[field], Slot::Repeated) {
                    Slot::Absent => Slot::Once(value),
                    _ => Slot::Repeated,
                }
            });
            if parsed.is_err() {
                found.iter_mut().for_each(|f| *f = Slot::Absent);
            }
        }
        for (b, v) in builders.iter_mut().zip(&found) {
            b.append_option(match v {
                Slot::Once(v) => v.as_deref(),
                Slot::Absent | Slot::Repeated => None,
            });
        }
    }
    builders.into_iter().map(|mut b| Arc::new(b.finish()) as ArrayRef).collect()
}

/// What one body holds under a subject key.
#[derive(Debug, Clone)]
enum Slot {
    Absent,
    /// One occurrence: its value as text (`None` for a non-scalar).
    Once(Option<String>),
    /// The key appears more than once: no single subject.
    Repeated,
}

/// Body `i` as bytes, from any binary or string array; `None` when null.
pub fn body_bytes(bodies: &dyn Array, i: usize) -> Option<&[u8]> {
    if bodies.is_null(i) {
        return None;
    }
    Some(match bodies.data_type() {
        DataType::Binary => bodies.as_binary::<i32>().value(i),
        DataType::LargeBinary => bodies.as_binary::<i64>().value(i),
        DataType::BinaryView => bodies.as_binary_view().value(i),
        DataType::Utf8 => bodies.as_string::<i32>().value(i).as_bytes(),
        DataType::LargeUtf8 => bodies.as_string::<i64>().value(i).as_bytes(),
        DataType::Utf8View => bodies.as_string_view().value(i).as_bytes(),
        _ => return None,
    })
}

/// Finds the values of a set of subjects of one field in bodies.
#[derive(Debug, Clone)]
pub struct SubjectMatcher {
    field: String,
    values: HashMap<String, usize>,
    /// Each value as a quoted JSON string, for bodies that do not parse.
    needles: Vec<Vec<u8>>,
}

impl SubjectMatcher {
    /// Matches bodies whose `field` holds one of `values` (index = position).
    pub fn new(field: &str, values: &[String]) -> SubjectMatcher {
        SubjectMatcher {
            field: field.to_string(),
            values: values.iter().enumerate().map(|(i, v)| (v.clone(), i)).collect(),
            needles: values.iter().map(|v| serde_json::to_string(v).unwrap_or_default().into_bytes()).collect(),
        }
    }

    /// The index of the subject a body belongs to. A body that is a JSON
    /// object is judged by its field alone, every occurrence of it when the
    /// key is repeated (the first match wins); one that does not parse (it
    /// was quarantined as such) matches when it contains a value as a
    /// quoted JSON string anywhere, since personal data in a broken body is
    /// still personal data.
    pub fn find(&self, body: &[u8]) -> Option<usize> {
        let mut found = None;
        let parsed = pick(body, std::slice::from_ref(&self.field), |_, value| {
            if found.is_none() {
                found = value.and_then(|v| self.values.get(&v).copied());
            }
        });
        match parsed {
            Ok(()) => found,
            Err(_) => self.needles.iter().position(|n| !n.is_empty() && contains(body, n)),
        }
    }
}

impl SubjectMatcher {
    /// For a body that is not JSON and could not be decoded (binary Avro
    /// with an unknown schema, corrupt compressed data): the index of a
    /// value found in it as a quoted JSON string or as an Avro string
    /// (length prefix and UTF-8 bytes).
    pub fn find_encoded(&self, body: &[u8]) -> Option<usize> {
        let mut values: Vec<(&String, usize)> = self.values.iter().map(|(v, i)| (v, *i)).collect();
        values.sort_by_key(|(_, i)| *i);
        values.into_iter().find_map(|(v, i)| {
            let quoted = &self.needles[i];
            let avro = avro_string(v);
            ((!quoted.is_empty() && contains(body, quoted)) || (!v.is_empty() && contains(body, &avro))).then_some(i)
        })
    }
}

/// `value` as Avro binary encodes a string: zigzag varint length, bytes.
fn avro_string(value: &str) -> Vec<u8> {
    let mut n = (value.len() as u64) << 1;
    let mut out = Vec::with_capacity(value.len() + 2);
    loop {
        if n < 0x80 {
            out.push(n as u8);
            break;
        }
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.extend_from_slice(value.as_bytes());
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Reads the top-level `fields` of a JSON object, calling `seen(index of
/// the field, value as text)` for every occurrence, repeated keys included;
/// other values are skipped without being built.
fn pick(body: &[u8], fields: &[String], mut seen: impl FnMut(usize, Option<String>)) -> Result<(), serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(body);
    Pick { fields, seen: &mut seen }.deserialize(&mut de)?;
    de.end()
}

struct Pick<'a> {
    fields: &'a [String],
    seen: &'a mut dyn FnMut(usize, Option<String>),
}

impl<'de> DeserializeSeed<'de> for Pick<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Pick<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(Key(key)) = map.next_key()? {
            match self.fields.iter().position(|f| *f == key) {
                Some(i) => {
                    let Scalar(v) = map.next_value()?;
                    (self.seen)(i, v);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// A map key, borrowed unless it holds escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

/// A value as subject text: strings, numbers and booleans; null otherwise.
struct Scalar(Option<String>);

impl<'de> de::Deserialize<'de> for Scalar {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(Some(v.to_string())))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(Some(v.to_string())))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(Some(v.to_string())))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(Some(v.to_string())))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(Some(v.to_string())))
            }
            fn visit_unit<E>(self) -> Result<Scalar, E> {
                Ok(Scalar(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar(None))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar(None))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use deltalake::arrow::array::{BinaryArray, StringArray};

    use super::*;

    fn fields(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn extracts_top_level_fields_only() {
        let bodies = BinaryArray::from(vec![
            Some(br#"{"properties":{"userId":"nested"},"userId":"u-1","n":7}"#.as_slice()),
            Some(br#"{"user\u0049d":"escaped-key","n":42.5}"#.as_slice()),
            Some(br#"{"userId":null,"n":true}"#.as_slice()),
            Some(b"not json {\"userId\":\"u-2\"".as_slice()),
            None,
            Some(br#"[1,2]"#.as_slice()),
            Some(br#"{"userId":{"id":"u-3"},"n":-3}"#.as_slice()),
        ]);
        let out = extract(&bodies, &fields(&["userId", "n"]));
        let user = out[0].as_any().downcast_ref::<StringArray>().unwrap();
        let n = out[1].as_any().downcast_ref::<StringArray>().unwrap();
        let user: Vec<Option<&str>> = user.iter().collect();
        let n: Vec<Option<&str>> = n.iter().collect();
        assert_eq!(user, vec![Some("u-1"), Some("escaped-key"), None, None, None, None, None]);
        assert_eq!(n, vec![Some("7"), Some("42.5"), Some("true"), None, None, None, Some("-3")]);
    }

    #[test]
    fn a_repeated_subject_key_has_no_column_value_and_matches_every_value() {
        let bodies = BinaryArray::from(vec![
            Some(br#"{"userId":"alice","n":1,"userId":"bob"}"#.as_slice()),
            Some(br#"{"userId":null,"userId":"carol"}"#.as_slice()),
            Some(br#"{"userId":"dave","n":2,"n":3}"#.as_slice()),
            Some(br#"{"userId":"erin","friend":"bob","#.as_slice()),
        ]);
        let out = extract(&bodies, &fields(&["userId", "n"]));
        let user: Vec<Option<&str>> = out[0].as_string::<i32>().iter().collect();
        let n: Vec<Option<&str>> = out[1].as_string::<i32>().iter().collect();
        assert_eq!(user, vec![None, None, Some("dave"), None]);
        assert_eq!(n, vec![Some("1"), None, None, None]);

        // Erasure reads those bodies: each of the values finds the body.
        let m = SubjectMatcher::new("userId", &fields(&["bob", "alice", "carol"]));
        assert_eq!(m.find(br#"{"userId":"alice","n":1,"userId":"bob"}"#), Some(1));
        assert_eq!(m.find(br#"{"userId":"zoe","n":1,"userId":"bob"}"#), Some(0));
        assert_eq!(m.find(br#"{"userId":null,"userId":"carol"}"#), Some(2));
        assert_eq!(m.find(br#"{"userId":"zoe","userId":"yan"}"#), None);
    }

    #[test]
    fn matcher_uses_the_field_or_quoted_text_in_broken_bodies() {
        let m = SubjectMatcher::new("userId", &fields(&["u-1", "u\"2"]));
        assert_eq!(m.find(br#"{"userId":"u-1"}"#), Some(0));
        assert_eq!(m.find(br#"{"userId":"u\"2","email":"x"}"#), Some(1));
        // A parsed object is judged by its field: the value elsewhere is not the subject.
        assert_eq!(m.find(br#"{"userId":"u-9","friend":"u-1"}"#), None);
        assert_eq!(m.find(br#"{"userId":"u-10"}"#), None);
        // Broken JSON: any quoted occurrence counts.
        assert_eq!(m.find(br#"{"userId":"u-1","#), Some(0));
        assert_eq!(m.find(br#"garbage "u\"2" trailing"#), Some(1));
        assert_eq!(m.find(br#"{"userId":"u-10","#), None);
    }
}
