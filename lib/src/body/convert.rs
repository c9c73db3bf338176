//! Post-decode conversions: from the types arrow-json decodes into
//! ([`Node::decode_type`]) to the final ones ([`Node::arrow_type`]), column
//! by column, recording the elements whose text does not parse.

use std::sync::Arc;

use deltalake::arrow::array::{
    Array, ArrayRef, AsArray, Date32Array, Decimal128Array, Int64Array, ListArray, MapArray, StructArray,
    TimestampMicrosecondArray,
};
use deltalake::arrow::buffer::NullBuffer;
use deltalake::arrow::compute::{cast_with_options, CastOptions};
use deltalake::arrow::datatypes::{DataType, Field, Int64Type, TimeUnit};
use deltalake::arrow::error::ArrowError;

use super::prepass::truncate;
use super::schema::{EnumDef, Kind, Node, RecordDef, UTC};

/// A failed element: its index in the array being converted, its path
/// relative to that array ("" for the element itself, "page",
/// "[2]", "items[0].sku"), and what is wrong.
pub(crate) struct Fail {
    pub(crate) index: usize,
    pub(crate) path: String,
    pub(crate) detail: String,
}

/// `prefix` + `path`, dotted unless `path` is empty or an index.
pub(crate) fn prefixed(prefix: &str, path: &str) -> String {
    if path.is_empty() {
        prefix.to_string()
    } else if path.starts_with('[') {
        format!("{prefix}{path}")
    } else {
        format!("{prefix}.{path}")
    }
}

/// Converts `array` (of `node.decode_type()`) to `node.arrow_type()`.
pub(crate) fn convert(array: &ArrayRef, node: &Node, fails: &mut Vec<Fail>) -> Result<ArrayRef, ArrowError> {
    if !node.needs_post() {
        return Ok(array.clone());
    }
    match &node.kind {
        Kind::Uuid => {
            check_uuids(array, fails);
            Ok(array.clone())
        }
        Kind::Enum(def) => {
            check_symbols(array, def, fails);
            Ok(array.clone())
        }
        Kind::IsoTimestamp => iso_timestamps(array, fails),
        Kind::TimestampMillis => epoch_timestamps(array, 1000, fails),
        Kind::TimestampMicros => epoch_timestamps(array, 1, fails),
        Kind::Decimal { precision, scale } => decimals(array, *precision, *scale, fails),
        Kind::Date => dates(array, fails),
        Kind::Record(rec) => record(array, node, rec, fails),
        Kind::Array(item) => list(array, item, fails),
        Kind::Map(value) => map(array, node, value, fails),
        _ => Ok(array.clone()),
    }
}

/// Fails the strings that are not UUIDs.
fn check_uuids(array: &ArrayRef, fails: &mut Vec<Fail>) {
    let strings = array.as_string::<i32>();
    for (i, v) in strings.iter().enumerate() {
        if let Some(v) = v {
            if !is_uuid(v) {
                fails.push(Fail { index: i, path: String::new(), detail: format!("'{}' is not a UUID", truncate(v)) });
            }
        }
    }
}

/// Fails the strings that are not symbols of the enum `def`.
fn check_symbols(array: &ArrayRef, def: &EnumDef, fails: &mut Vec<Fail>) {
    let strings = array.as_string::<i32>();
    for (i, v) in strings.iter().enumerate() {
        if let Some(v) = v {
            if !def.contains(v) {
                fails.push(Fail {
                    index: i,
                    path: String::new(),
                    detail: format!(
                        "'{}' is not a symbol of enum {} ({})",
                        truncate(v),
                        def.name,
                        def.describe_symbols()
                    ),
                });
            }
        }
    }
}

/// Epoch integers times `factor` (1000 for timestamp-millis, 1 for
/// timestamp-micros) as `Timestamp(Microsecond, "UTC")`; a value out of
/// range fails its row.
fn epoch_timestamps(array: &ArrayRef, factor: i64, fails: &mut Vec<Fail>) -> Result<ArrayRef, ArrowError> {
    let ints: &Int64Array = array.as_primitive::<Int64Type>();
    let mut values = Vec::with_capacity(ints.len());
    let mut valid = Vec::with_capacity(ints.len());
    for (i, v) in ints.iter().enumerate() {
        match v.map(|v| (v, v.checked_mul(factor))) {
            None => {
                values.push(0);
                valid.push(false);
            }
            Some((_, Some(us))) => {
                values.push(us);
                valid.push(true);
            }
            Some((v, None)) => {
                fails.push(Fail {
                    index: i,
                    path: String::new(),
                    detail: format!("{v} is out of range for timestamp-millis"),
                });
                values.push(0);
                valid.push(false);
            }
        }
    }
    let out = TimestampMicrosecondArray::new(values.into(), Some(NullBuffer::from(valid))).with_timezone(UTC);
    Ok(Arc::new(out))
}

/// Decimal strings to `Decimal128(precision, scale)`, never rounded.
fn decimals(array: &ArrayRef, precision: u8, scale: i8, fails: &mut Vec<Fail>) -> Result<ArrayRef, ArrowError> {
    let strings = array.as_string::<i32>();
    let mut out = Vec::with_capacity(strings.len());
    for (i, v) in strings.iter().enumerate() {
        out.push(match v {
            None => None,
            Some(text) => match parse_decimal(text, precision, scale) {
                Ok(v) => Some(v),
                Err(detail) => {
                    fails.push(Fail { index: i, path: String::new(), detail });
                    None
                }
            },
        });
    }
    let out = Decimal128Array::from(out).with_precision_and_scale(precision, scale)?;
    Ok(Arc::new(out))
}

/// Day numbers or `YYYY-MM-DD` strings to `Date32`.
fn dates(array: &ArrayRef, fails: &mut Vec<Fail>) -> Result<ArrayRef, ArrowError> {
    let strings = array.as_string::<i32>();
    let mut out = Vec::with_capacity(strings.len());
    for (i, v) in strings.iter().enumerate() {
        out.push(match v {
            None => None,
            Some(text) => match parse_date(text) {
                Some(d) => Some(d),
                None => {
                    fails.push(Fail {
                        index: i,
                        path: String::new(),
                        detail: format!("'{}' is not a date (days since 1970-01-01 or YYYY-MM-DD)", truncate(text)),
                    });
                    None
                }
            },
        });
    }
    Ok(Arc::new(Date32Array::from(out)))
}

/// A record's fields, each converted; failures are named by field.
fn record(array: &ArrayRef, node: &Node, rec: &RecordDef, fails: &mut Vec<Fail>) -> Result<ArrayRef, ArrowError> {
    let s = array.as_struct();
    let mut children = Vec::with_capacity(rec.fields.len());
    for (f, child) in rec.fields.iter().zip(s.columns()) {
        let mut sub = Vec::new();
        children.push(convert(child, &f.node, &mut sub)?);
        fails.extend(sub.into_iter().map(|x| Fail {
            index: x.index,
            path: prefixed(&f.name, &x.path),
            detail: x.detail,
        }));
    }
    let DataType::Struct(fields) = node.arrow_type() else {
        return Err(ArrowError::SchemaError("record is not a struct".into()));
    };
    let out = StructArray::try_new(fields, children, s.nulls().cloned())?;
    Ok(Arc::new(out))
}

/// An array's items converted; a failing item fails its row, named by
/// position.
fn list(array: &ArrayRef, item: &Node, fails: &mut Vec<Fail>) -> Result<ArrayRef, ArrowError> {
    let list: &ListArray = array.as_list::<i32>();
    let mut sub = Vec::new();
    let values = convert(list.values(), item, &mut sub)?;
    map_to_rows(list.value_offsets(), sub, fails, |_, pos| format!("[{pos}]"));
    let field = Arc::new(Field::new("item", item.arrow_type(), true));
    let out = ListArray::try_new(field, list.offsets().clone(), values, list.nulls().cloned())?;
    Ok(Arc::new(out))
}

/// A map's values converted; a failing value fails its row, named by key.
fn map(array: &ArrayRef, node: &Node, value: &Node, fails: &mut Vec<Fail>) -> Result<ArrayRef, ArrowError> {
    let map: &MapArray = array.as_map();
    let keys = map.keys().as_string::<i32>();
    let mut sub = Vec::new();
    let values = convert(map.values(), value, &mut sub)?;
    map_to_rows(map.value_offsets(), sub, fails, |elem, _| keys.value(elem).to_string());
    let DataType::Map(entries_field, sorted) = node.arrow_type() else {
        return Err(ArrowError::SchemaError("map is not a map".into()));
    };
    let DataType::Struct(entry_fields) = entries_field.data_type().clone() else {
        return Err(ArrowError::SchemaError("map entries are not a struct".into()));
    };
    let entries = StructArray::try_new(entry_fields, vec![map.keys().clone(), values], map.entries().nulls().cloned())?;
    let out = MapArray::try_new(entries_field, map.offsets().clone(), entries, map.nulls().cloned(), sorted)?;
    Ok(Arc::new(out))
}

/// Moves element failures of a list's or map's values to the rows holding
/// them; `segment(element, position_in_row)` names the element.
fn map_to_rows(offsets: &[i32], sub: Vec<Fail>, fails: &mut Vec<Fail>, segment: impl Fn(usize, usize) -> String) {
    for x in sub {
        // The row r with offsets[r] <= index < offsets[r + 1].
        let r = offsets.partition_point(|&o| o as usize <= x.index).saturating_sub(1);
        let pos = x.index - offsets.get(r).map_or(0, |&o| o as usize);
        let seg = segment(x.index, pos);
        let seg = if seg.starts_with('[') { seg } else { format!(".{seg}") };
        let path = if x.path.is_empty() {
            seg
        } else if x.path.starts_with('[') {
            format!("{seg}{}", x.path)
        } else {
            format!("{seg}.{}", x.path)
        };
        fails.push(Fail { index: r, path, detail: x.detail });
    }
}

/// ISO-8601 strings to `Timestamp(Microsecond, "UTC")` via arrow's cast; a
/// value without zone is taken as UTC.
fn iso_timestamps(array: &ArrayRef, fails: &mut Vec<Fail>) -> Result<ArrayRef, ArrowError> {
    // "+00:00" parses without the chrono-tz feature; the zone is renamed to
    // "UTC" (same instant, same values) below.
    let target = DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into()));
    let options = CastOptions { safe: true, ..Default::default() };
    let cast = cast_with_options(array, &target, &options)?;
    if cast.null_count() != array.null_count() {
        let strings = array.as_string::<i32>();
        for i in 0..strings.len() {
            if strings.is_valid(i) && cast.is_null(i) {
                fails.push(Fail {
                    index: i,
                    path: String::new(),
                    detail: format!("'{}' is not an ISO-8601 timestamp", truncate(strings.value(i))),
                });
            }
        }
    }
    let out = cast.as_primitive::<deltalake::arrow::datatypes::TimestampMicrosecondType>().clone().with_timezone(UTC);
    Ok(Arc::new(out))
}

/// Character classes for [`is_uuid`]: 1 = hex digit, 2 = `-`, 0 = other.
const UUID_CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = if b.is_ascii_hexdigit() {
            1
        } else if b == b'-' {
            2
        } else {
            0
        };
        c += 1;
    }
    t
};

/// The classes a UUID's 36 characters must have.
const UUID_PATTERN: [u8; 36] = {
    let mut p = [1u8; 36];
    p[8] = 2;
    p[13] = 2;
    p[18] = 2;
    p[23] = 2;
    p
};

/// `8-4-4-4-12` hexadecimal digits.
pub(crate) fn is_uuid(s: &str) -> bool {
    let Ok(b) = <&[u8; 36]>::try_from(s.as_bytes()) else {
        return false;
    };
    let mut bad = 0u8;
    for (c, want) in b.iter().zip(UUID_PATTERN.iter()) {
        bad |= UUID_CLASS[usize::from(*c)] ^ want;
    }
    bad == 0
}

/// Days since the epoch, from an integer or `YYYY-MM-DD`.
fn parse_date(s: &str) -> Option<i32> {
    if let Ok(days) = s.parse::<i32>() {
        return Some(days);
    }
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let date = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?;
    i32::try_from(date.signed_duration_since(epoch).num_days()).ok()
}

/// Parses a decimal number (`12.34`, `-0.5`, `1e3`, `+7`) into the unscaled
/// value of `decimal(precision, scale)`, exactly: a value needing rounding
/// (non-zero digits beyond the scale) or more than `precision` digits is
/// an error, never rounded. Trailing zeros beyond the scale are exact and
/// accepted.
pub(crate) fn parse_decimal(text: &str, precision: u8, scale: i8) -> Result<i128, String> {
    let not_number = || format!("'{}' is not a decimal number", truncate(text));
    let b = text.as_bytes();
    let start = usize::from(matches!(b.first(), Some(b'-' | b'+')));
    let negative = b.first() == Some(&b'-');
    // The mantissa: b[start..end], digits with at most one '.'.
    let mut end = start;
    let mut frac_len: i64 = 0;
    let mut seen_dot = false;
    let mut n_digits = 0usize;
    while end < b.len() {
        match b[end] {
            b'0'..=b'9' => {
                n_digits += 1;
                if seen_dot {
                    frac_len += 1;
                }
            }
            b'.' if !seen_dot => seen_dot = true,
            b'e' | b'E' => break,
            _ => return Err(not_number()),
        }
        end += 1;
    }
    if n_digits == 0 {
        return Err(not_number());
    }
    let mut exp: i64 = 0;
    if end < b.len() {
        let mut i = end + 1;
        let exp_negative = b.get(i) == Some(&b'-');
        if matches!(b.get(i), Some(b'-' | b'+')) {
            i += 1;
        }
        if i >= b.len() {
            return Err(not_number());
        }
        for &c in &b[i..] {
            if !c.is_ascii_digit() {
                return Err(not_number());
            }
            exp = exp.saturating_mul(10).saturating_add(i64::from(c - b'0'));
        }
        if exp_negative {
            exp = -exp;
        }
    }
    let digits = || b[start..end].iter().filter(|c| c.is_ascii_digit()).map(|c| c - b'0');
    // Significant digits: leading zeros dropped.
    let leading_zeros = digits().take_while(|&d| d == 0).count();
    let mut significant = n_digits - leading_zeros;
    // value = mantissa × 10^(exp − frac_len); unscaled = value × 10^scale.
    let shift = exp.saturating_sub(frac_len).saturating_add(i64::from(scale));
    if shift < 0 {
        // The last `drop` digits go below the scale: they must all be zeros.
        let drop = usize::try_from(shift.unsigned_abs()).unwrap_or(usize::MAX);
        let keep = significant.saturating_sub(drop);
        if digits().skip(leading_zeros + keep).any(|d| d != 0) {
            return Err(format!(
                "'{}' has more fractional digits than the scale {scale} allows (decimal({precision}, {scale})); it is not rounded",
                truncate(text)
            ));
        }
        significant = keep;
    }
    let zeros = if significant == 0 { 0 } else { shift.max(0) };
    if (significant as i64).saturating_add(zeros) > i64::from(precision) {
        return Err(format!(
            "'{}' has more digits than the precision {precision} allows (decimal({precision}, {scale}))",
            truncate(text)
        ));
    }
    // At most 38 digits: fits an i128.
    let mut v: i128 = 0;
    for d in digits().skip(leading_zeros).take(significant) {
        v = v * 10 + i128::from(d);
    }
    for _ in 0..zeros {
        v *= 10;
    }
    Ok(if negative { -v } else { v })
}
