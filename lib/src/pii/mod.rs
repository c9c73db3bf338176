//! PII rules: per-column hashing, masking, generalisation and dropping,
//! applied to the processed table's rows after parsing and expectations and
//! before writing.
//!
//! The rules live in the pipeline file under `process.pii`:
//!
//! ```yaml
//! process:
//!   pii:
//!     key_env: WEIR_PII_KEY       # variable holding the HMAC key (the default)
//!     rules:
//!       - column: email
//!         action: hash            # HMAC-SHA256(key, value), lowercase hex
//!       - column: ipAddress
//!         action: mask
//!         mask: ip                # email | ip | phone | card
//!       - column: eventTimestamp
//!         action: generalize
//!         to: month               # year | month | day | hour (UTC)
//!       - column: durationMs
//!         action: generalize
//!         bucket: 1000            # floor to a multiple of 1000
//!       - column: notes
//!         action: drop
//! ```
//!
//! A rule names a **top-level column**; nested paths (`user.email`) are not
//! supported, a rule always applies to a whole top-level column.
//!
//! Lifecycle: [`PiiConfig::check`] validates the rules against the schema
//! they apply to (no key needed, so `validate` commands can run it);
//! [`PiiConfig::build`] reads the key and returns [`PiiRules`], which
//! [`apply`](PiiRules::apply) to record batches.
//!
//! Actions:
//! - `hash`: HMAC-SHA256 keyed with the secret from `key_env`, as 64
//!   lowercase hex digits. The same value always gives the same token (joins
//!   and counts still work), without the key the token cannot be reversed or
//!   recomputed. Strings are hashed as their UTF-8 bytes, binary columns as
//!   their bytes, anything else (numbers, decimals, dates, timestamps,
//!   booleans) as its Arrow cast to Utf8 (e.g. `42`, `12.50`,
//!   `2024-01-31T10:00:00`). The column becomes Utf8.
//! - `mask`: string columns, see [`MaskKind`]. The column becomes Utf8.
//! - `generalize`: `to:` truncates timestamps (any unit, any timezone: the
//!   instant is truncated in UTC and the timezone is kept) and dates;
//!   `bucket:` floors integers, floats and decimals to a multiple of the
//!   bucket. The type is kept.
//! - `drop`: the column is removed.
//!
//! Nulls stay null under every action. Errors never contain a value or the
//! key.

mod generalize;
pub(crate) mod hmac;
mod mask;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;

use deltalake::arrow::array::StringBuilder;
use deltalake::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, RecordBatchOptions};
use deltalake::arrow::compute::{can_cast_types, cast};
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use deltalake::arrow::error::ArrowError;

use generalize::{Bucket, BucketUnitsError};
use hmac::HmacSha256;

/// The environment variable that holds the HMAC key unless `key_env` says
/// otherwise.
pub const DEFAULT_KEY_ENV: &str = "WEIR_PII_KEY";

/// The shortest key accepted for `hash`, in bytes.
pub const MIN_KEY_BYTES: usize = 16;

fn default_key_env() -> String {
    DEFAULT_KEY_ENV.to_owned()
}

/// `process.pii` in the pipeline file.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct PiiConfig {
    /// The environment variable that holds the HMAC key for `hash` rules
    /// (default `WEIR_PII_KEY`). Its value is used as raw bytes, exactly as
    /// set (no trimming, no decoding), and must be at least 16 bytes long.
    #[serde(default = "default_key_env")]
    pub key_env: String,
    /// One rule per column, applied in the batch's column order.
    #[serde(default)]
    pub rules: Vec<PiiRuleConfig>,
}

impl Default for PiiConfig {
    fn default() -> Self {
        Self { key_env: default_key_env(), rules: Vec::new() }
    }
}

/// One entry of `process.pii.rules`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct PiiRuleConfig {
    /// A top-level column name (nested paths are not supported).
    pub column: String,
    /// What to do with the column.
    pub action: PiiAction,
    /// For `mask`: which masking (required there, not allowed elsewhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask: Option<MaskKind>,
    /// For `generalize` on a timestamp or date column: what to truncate to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<TimeUnit>,
    /// For `generalize` on a number column: the bucket width (> 0; a whole
    /// number for integer columns; no finer than the scale for decimals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<f64>,
}

/// What a rule does with its column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PiiAction {
    /// HMAC-SHA256 of the value, 64 lowercase hex digits (column becomes Utf8).
    Hash,
    /// Partially hide the value, see [`MaskKind`] (column becomes Utf8).
    Mask,
    /// Remove the column.
    Drop,
    /// Coarsen the value: `to:` for timestamps and dates, `bucket:` for
    /// numbers (type kept).
    Generalize,
}

/// How `mask` hides a string value. A value that cannot be masked
/// meaningfully becomes `***`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MaskKind {
    /// First character of the local part and the whole domain:
    /// `john.doe@example.com` → `j***@example.com`; no `@` → `***`.
    Email,
    /// IPv4 → last octet zeroed (`10.1.2.3` → `10.1.2.0`); IPv6 → first three
    /// groups kept (`2001:db8:85a3::8a2e:370:7334` → `2001:db8:85a3::`);
    /// anything else → `***`.
    Ip,
    /// Last 2 digits kept, other digits `*`, other characters kept:
    /// `+44 20 7946 0958` → `+** ** **** **58`; no digit at all → `***`.
    Phone,
    /// Last 4 digits kept, other digits `*`, separators kept:
    /// `4111 1111 1111 1234` → `**** **** **** 1234`; no digit → `***`.
    Card,
}

/// What `generalize` truncates a timestamp or date to (in UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeUnit {
    /// Start of the year.
    Year,
    /// Start of the month.
    Month,
    /// Start of the day.
    Day,
    /// Start of the hour (timestamps only).
    Hour,
}

impl std::fmt::Display for TimeUnit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TimeUnit::Year => "year",
            TimeUnit::Month => "month",
            TimeUnit::Day => "day",
            TimeUnit::Hour => "hour",
        })
    }
}

/// Errors from building or applying PII rules. None of them contains the key
/// or a column value.
#[derive(Debug, thiserror::Error)]
pub enum PiiError {
    /// A `hash` rule needs a key and the variable is unset or empty.
    #[error(
        "PII key missing: environment variable {variable} is not set or empty \
         (a `hash` rule needs a secret key of at least 16 bytes)"
    )]
    MissingKey {
        /// The environment variable that should hold the key.
        variable: String,
    },
    /// The key is shorter than [`MIN_KEY_BYTES`].
    #[error("PII key in environment variable {variable} is too short: use at least 16 bytes")]
    WeakKey {
        /// The environment variable that holds the key.
        variable: String,
    },
    /// The rules do not fit the schema; every problem, each starting with
    /// `rules[i]` (or `key_env`).
    #[error("invalid PII rules: {}", .0.join("; "))]
    Invalid(Vec<String>),
    /// A rule's column is not in the batch being processed.
    #[error("PII rule for column {column:?}: the batch has no such column")]
    MissingColumn {
        /// The rule's column.
        column: String,
    },
    /// A rule's column has a different type than when the rules were built.
    #[error("PII rule for column {column:?}: the column is {found}, the rules were built for {expected}")]
    TypeMismatch {
        /// The rule's column.
        column: String,
        /// The type the rules were checked against.
        expected: DataType,
        /// The type in the batch.
        found: DataType,
    },
    /// Applying a rule failed (e.g. a generalised number does not fit its type).
    #[error("PII rule for column {column:?}: {message}")]
    Apply {
        /// The rule's column.
        column: String,
        /// What went wrong (never a value).
        message: String,
    },
    /// Assembling the output batch failed.
    #[error("PII: assembling the output batch failed: {0}")]
    Arrow(#[from] ArrowError),
}

/// A rule resolved against the schema: what to do, and to which type.
#[derive(Debug, Clone)]
struct Rule {
    column: String,
    /// The type the rule was checked against.
    data_type: DataType,
    op: Op,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Hash,
    Mask(MaskKind),
    Drop,
    Truncate(TimeUnit),
    Floor(Bucket),
}

impl PiiConfig {
    /// Structural checks against the schema the rules apply to, without the
    /// key. Returns every problem as a message starting with `rules[i]` (or
    /// `key_env` for the variable name): unknown column (with close names;
    /// rules name top-level columns only), the same column twice, action and
    /// option mismatches (`mask` without `mask:`, `to:` on `mask`, ...),
    /// types that do not fit the action or option, bucket not > 0 / not a
    /// whole number for integers / finer than a decimal's scale.
    /// Empty when the rules are fine.
    pub fn check(&self, schema: &Schema) -> Vec<String> {
        match self.plan(schema) {
            Ok(_) => Vec::new(),
            Err(problems) => problems,
        }
    }

    /// True when any rule hashes (so a key is required).
    pub fn needs_key(&self) -> bool {
        self.rules.iter().any(|r| r.action == PiiAction::Hash)
    }

    /// Builds the runtime rules; reads the key from the environment variable
    /// `key_env` when a rule hashes (otherwise the variable is not read).
    ///
    /// Errors: [`PiiError::Invalid`] with the problems [`check`](Self::check)
    /// finds, [`PiiError::MissingKey`] when the variable is unset or empty,
    /// [`PiiError::WeakKey`] when it is shorter than 16 bytes. The errors name
    /// the variable, never its value.
    pub fn build(&self, schema: &Schema) -> Result<PiiRules, PiiError> {
        let rules = self.plan(schema).map_err(PiiError::Invalid)?;
        let key = if self.needs_key() { std::env::var_os(&self.key_env).map(|v| v.into_encoded_bytes()) } else { None };
        self.finish(rules, key.as_deref())
    }

    /// Same as [`build`](Self::build), with the key given instead of read
    /// from the environment (tests, tools). A key given when no rule hashes
    /// is still validated and kept, for [`PiiRules::hash_value`].
    pub fn build_with_key(&self, schema: &Schema, key: Option<&[u8]>) -> Result<PiiRules, PiiError> {
        let rules = self.plan(schema).map_err(PiiError::Invalid)?;
        self.finish(rules, key)
    }

    fn finish(&self, rules: Vec<Rule>, key: Option<&[u8]>) -> Result<PiiRules, PiiError> {
        // A key kept in a file usually ends with a line break, which comes
        // along when the file is put in the variable (a Kubernetes secret, a
        // `.env` file): it is not part of the key.
        let key = key.map(|k| k.strip_suffix(b"\n").map_or(k, |k| k.strip_suffix(b"\r").unwrap_or(k)));
        let key = match key.filter(|k| !k.is_empty()) {
            None if self.needs_key() => return Err(PiiError::MissingKey { variable: self.key_env.clone() }),
            None => None,
            Some(k) if k.len() < MIN_KEY_BYTES => return Err(PiiError::WeakKey { variable: self.key_env.clone() }),
            Some(k) => Some(HmacSha256::new(k)),
        };
        let by_column = rules.iter().enumerate().map(|(i, r)| (r.column.clone(), i)).collect();
        Ok(PiiRules { rules, by_column, key })
    }

    /// Resolves every rule against `schema`, or returns every problem.
    fn plan(&self, schema: &Schema) -> Result<Vec<Rule>, Vec<String>> {
        let mut problems = Vec::new();
        let mut rules = Vec::with_capacity(self.rules.len());
        let mut seen: HashMap<&str, usize> = HashMap::new();

        if self.needs_key() && !valid_env_name(&self.key_env) {
            problems.push(format!("key_env: {:?} is not a usable environment variable name", self.key_env));
        }

        for (i, rule) in self.rules.iter().enumerate() {
            let at = format!("rules[{i}]");
            let before = problems.len();

            // Options that do not belong to the action.
            let options = [
                ("mask", rule.mask.is_some(), rule.action == PiiAction::Mask),
                ("to", rule.to.is_some(), rule.action == PiiAction::Generalize),
                ("bucket", rule.bucket.is_some(), rule.action == PiiAction::Generalize),
            ];
            for (name, given, allowed) in options {
                if given && !allowed {
                    problems.push(format!("{at}: `{name}:` does not apply to action {}", action_name(rule.action)));
                }
            }
            match rule.action {
                PiiAction::Mask if rule.mask.is_none() => {
                    problems.push(format!("{at}: action mask needs `mask:` (email | ip | phone | card)"))
                }
                PiiAction::Generalize => match (rule.to, rule.bucket) {
                    (None, None) => problems.push(format!(
                        "{at}: action generalize needs `to:` (year | month | day | hour) for a \
                         timestamp or date column, or `bucket:` for a number column"
                    )),
                    (Some(_), Some(_)) => {
                        problems.push(format!("{at}: action generalize takes `to:` or `bucket:`, not both"))
                    }
                    _ => {}
                },
                _ => {}
            }
            if let Some(b) = rule.bucket {
                if !(b.is_finite() && b > 0.0) {
                    problems.push(format!("{at}: `bucket:` must be a number greater than 0, got {b}"));
                }
            }

            // The column.
            if rule.column.is_empty() {
                problems.push(format!("{at}: `column:` is empty"));
                continue;
            }
            if let Some(first) = seen.get(rule.column.as_str()) {
                problems.push(format!(
                    "{at}: column {:?} already has a rule (rules[{first}]); use one rule per column",
                    rule.column
                ));
                continue;
            }
            seen.insert(&rule.column, i);
            let Some(field) = schema.fields().iter().find(|f| f.name() == &rule.column) else {
                problems.push(unknown_column(&at, &rule.column, schema));
                continue;
            };
            if problems.len() > before {
                // Type checks only make sense once the options are right.
                continue;
            }

            match resolve(rule, field) {
                Ok(op) => rules.push(Rule { column: rule.column.clone(), data_type: field.data_type().clone(), op }),
                Err(message) => problems.push(format!("{at}: {message}")),
            }
        }
        if problems.is_empty() {
            Ok(rules)
        } else {
            Err(problems)
        }
    }
}

fn action_name(action: PiiAction) -> &'static str {
    match action {
        PiiAction::Hash => "hash",
        PiiAction::Mask => "mask",
        PiiAction::Drop => "drop",
        PiiAction::Generalize => "generalize",
    }
}

/// What `std::env::var_os` accepts without panicking, and what a shell can set.
fn valid_env_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(['=', '\0'])
}

/// Resolves a rule whose options are consistent against its column's field.
fn resolve(rule: &PiiRuleConfig, field: &Field) -> Result<Op, String> {
    let name = field.name();
    let dt = field.data_type();
    match rule.action {
        PiiAction::Drop => Ok(Op::Drop),
        PiiAction::Hash => {
            if hashable(dt) {
                Ok(Op::Hash)
            } else {
                Err(format!(
                    "hash needs a string, binary, number, decimal, boolean, date, time or \
                     timestamp column; {name:?} is {dt}"
                ))
            }
        }
        PiiAction::Mask => {
            let kind = rule.mask.ok_or("action mask needs `mask:`")?;
            if is_string(dt) {
                Ok(Op::Mask(kind))
            } else {
                Err(format!("mask needs a string column; {name:?} is {dt}"))
            }
        }
        PiiAction::Generalize => match (rule.to, rule.bucket) {
            (Some(to), None) => match dt {
                DataType::Timestamp(..) => Ok(Op::Truncate(to)),
                DataType::Date32 | DataType::Date64 if to != TimeUnit::Hour => Ok(Op::Truncate(to)),
                DataType::Date32 | DataType::Date64 => {
                    Err(format!("`to: hour` does not apply to date column {name:?} ({dt}); use year, month or day"))
                }
                _ => Err(format!("`to:` needs a timestamp or date column; {name:?} is {dt}")),
            },
            (None, Some(bucket)) => resolve_bucket(bucket, name, dt).map(Op::Floor),
            _ => Err("action generalize takes exactly one of `to:` or `bucket:`".to_owned()),
        },
    }
}

fn resolve_bucket(bucket: f64, name: &str, dt: &DataType) -> Result<Bucket, String> {
    let scale = match dt {
        DataType::Float32 | DataType::Float64 => return Ok(Bucket::Float(bucket)),
        dt if dt.is_integer() => 0,
        DataType::Decimal32(_, s)
        | DataType::Decimal64(_, s)
        | DataType::Decimal128(_, s)
        | DataType::Decimal256(_, s) => *s,
        _ => return Err(format!("`bucket:` needs an integer, float or decimal column; {name:?} is {dt}")),
    };
    let max = generalize::native_max(dt).unwrap_or(i128::MAX);
    match generalize::bucket_units(bucket, scale) {
        Ok(units) if units <= max => Ok(Bucket::Units(units)),
        Ok(_) | Err(BucketUnitsError::TooLarge) => {
            Err(format!("`bucket: {bucket}` is too large for column {name:?} ({dt})"))
        }
        Err(BucketUnitsError::Fractional) if scale == 0 => {
            Err(format!("`bucket: {bucket}` must be a whole number for integer column {name:?} ({dt})"))
        }
        Err(BucketUnitsError::Fractional) => Err(format!(
            "`bucket: {bucket}` is not a multiple of the resolution of decimal column \
             {name:?} ({dt}, scale {scale})"
        )),
    }
}

fn is_string(dt: &DataType) -> bool {
    matches!(dt, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

fn is_binary(dt: &DataType) -> bool {
    matches!(dt, DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::FixedSizeBinary(_))
}

/// Flat types whose bytes or Utf8 cast can be hashed.
fn hashable(dt: &DataType) -> bool {
    is_string(dt)
        || is_binary(dt)
        || ((dt.is_primitive() || *dt == DataType::Boolean) && can_cast_types(dt, &DataType::Utf8))
}

/// `rules[i]: column "x" not found ...`, with close names.
fn unknown_column(at: &str, column: &str, schema: &Schema) -> String {
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let mut message = format!("{at}: column {column:?} not found");
    if let Some((head, _)) = column.split_once(['.', '[']) {
        if names.contains(&head) {
            message.push_str(&format!(
                "; nested paths are not supported, rules apply to whole top-level columns \
                 such as {head:?}"
            ));
            return message;
        }
    }
    let close = close_names(column, &names);
    if close.is_empty() {
        let mut listed: Vec<String> = names.iter().take(10).map(|n| format!("{n:?}")).collect();
        if names.len() > 10 {
            listed.push(format!("... ({} more)", names.len() - 10));
        }
        message.push_str(&format!("; the columns are: {}", listed.join(", ")));
    } else {
        let close: Vec<String> = close.iter().map(|n| format!("{n:?}")).collect();
        message.push_str(&format!("; did you mean {}?", close.join(" or ")));
    }
    message.push_str(" (rules name top-level columns; nested paths are not supported)");
    message
}

/// Up to three names close to `name` (case-insensitive edit distance, or
/// one containing the other), closest first.
fn close_names<'a>(name: &str, candidates: &[&'a str]) -> Vec<&'a str> {
    let wanted = name.to_lowercase();
    let mut scored: Vec<(usize, &'a str)> = candidates
        .iter()
        .filter_map(|&c| {
            let lc = c.to_lowercase();
            let longest = wanted.chars().count().max(lc.chars().count());
            let limit = (longest / 3).max(2);
            let shortest = wanted.chars().count().min(lc.chars().count());
            let mut d = edit_distance(&wanted, &lc);
            if shortest >= 3 && (lc.contains(&wanted) || wanted.contains(&lc)) {
                d = d.min(limit);
            }
            (d <= limit).then_some((d, c))
        })
        .collect();
    scored.sort();
    scored.into_iter().take(3).map(|(_, c)| c).collect()
}

/// Optimal string alignment distance: insertions, deletions, substitutions
/// and transpositions of adjacent characters (`emial` → `email` is 1).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    for (i, cell) in d.iter_mut().step_by(width).enumerate() {
        *cell = i;
    }
    for (j, cell) in d.iter_mut().take(width).enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best =
                (d[(i - 1) * width + j] + 1).min(d[i * width + j - 1] + 1).min(d[(i - 1) * width + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[(i - 2) * width + j - 2] + 1);
            }
            d[i * width + j] = best;
        }
    }
    d[a.len() * width + b.len()]
}

/// Runtime PII rules, built by [`PiiConfig::build`]. Cheap to clone; `Debug`
/// shows the rules and whether a key is set, never the key.
#[derive(Clone)]
pub struct PiiRules {
    rules: Vec<Rule>,
    by_column: HashMap<String, usize>,
    key: Option<HmacSha256>,
}

impl std::fmt::Debug for PiiRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PiiRules")
            .field("rules", &self.rules)
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl PiiRules {
    /// The schema after the rules: `drop` removes the column, `hash` and
    /// `mask` make it Utf8, `generalize` keeps the type. Names, nullability,
    /// field metadata, column order and schema metadata are kept; columns
    /// without a rule pass through.
    pub fn output_schema(&self, input: &Schema) -> SchemaRef {
        let fields: Vec<Field> = input
            .fields()
            .iter()
            .filter_map(|field| match self.rule(field.name()).map(|r| r.op) {
                Some(Op::Drop) => None,
                Some(Op::Hash | Op::Mask(_)) => Some(field.as_ref().clone().with_data_type(DataType::Utf8)),
                _ => Some(field.as_ref().clone()),
            })
            .collect();
        Arc::new(Schema::new_with_metadata(fields, input.metadata().clone()))
    }

    /// Applies the rules to `batch`, whose schema must contain every rule's
    /// column with the type the rules were built for. Other columns (e.g.
    /// lineage) pass through untouched; column order is kept, minus dropped
    /// columns. The result's schema is [`output_schema`](Self::output_schema)
    /// of the batch's schema.
    pub fn apply(&self, batch: &RecordBatch) -> Result<RecordBatch, PiiError> {
        let schema = batch.schema();
        for rule in &self.rules {
            match schema.fields().iter().find(|f| f.name() == &rule.column) {
                None => return Err(PiiError::MissingColumn { column: rule.column.clone() }),
                Some(f) if f.data_type() != &rule.data_type => {
                    return Err(PiiError::TypeMismatch {
                        column: rule.column.clone(),
                        expected: rule.data_type.clone(),
                        found: f.data_type().clone(),
                    })
                }
                Some(_) => {}
            }
        }

        let mut columns = Vec::with_capacity(batch.num_columns());
        for (field, column) in schema.fields().iter().zip(batch.columns()) {
            let Some(rule) = self.rule(field.name()) else {
                columns.push(column.clone());
                continue;
            };
            let out = match rule.op {
                Op::Drop => continue,
                Op::Hash => {
                    let key = self.key.as_ref().ok_or_else(|| PiiError::Apply {
                        column: rule.column.clone(),
                        message: "no key to hash with".to_owned(),
                    })?;
                    hash_column(key, column)
                }
                Op::Mask(kind) => mask_column(kind, column),
                Op::Truncate(to) => generalize::truncate(column, to),
                Op::Floor(bucket) => generalize::floor_to_bucket(column, bucket),
            };
            columns.push(out.map_err(|message| PiiError::Apply { column: rule.column.clone(), message })?);
        }

        let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        Ok(RecordBatch::try_new_with_options(self.output_schema(&schema), columns, &options)?)
    }

    /// Hashes one value exactly as a `hash` rule does (64 lowercase hex
    /// digits), so tools and erasure requests can find a data subject's
    /// rows. For non-string columns pass the value's Arrow Utf8 form (e.g.
    /// `"42"`). `None` when the rules were built without a key.
    pub fn hash_value(&self, value: &str) -> Option<String> {
        let key = self.key.as_ref()?;
        let mut buf = [0u8; 64];
        Some(key.mac_hex(value.as_bytes(), &mut buf).to_owned())
    }

    fn rule(&self, column: &str) -> Option<&Rule> {
        self.by_column.get(column).map(|&i| &self.rules[i])
    }
}

/// HMAC of every value as a Utf8 column; nulls stay null.
fn hash_column(key: &HmacSha256, column: &ArrayRef) -> Result<ArrayRef, String> {
    let len = column.len();
    let out = match column.data_type() {
        DataType::Utf8 => hash_values(key, len, column.as_string::<i32>().iter().map(to_bytes)),
        DataType::LargeUtf8 => hash_values(key, len, column.as_string::<i64>().iter().map(to_bytes)),
        DataType::Utf8View => hash_values(key, len, column.as_string_view().iter().map(to_bytes)),
        DataType::Binary => hash_values(key, len, column.as_binary::<i32>().iter()),
        DataType::LargeBinary => hash_values(key, len, column.as_binary::<i64>().iter()),
        DataType::BinaryView => hash_values(key, len, column.as_binary_view().iter()),
        DataType::FixedSizeBinary(_) => hash_values(key, len, column.as_fixed_size_binary().iter()),
        other => {
            let text = cast(column, &DataType::Utf8)
                .map_err(|_| format!("cannot turn a {other} column into text to hash it"))?;
            hash_values(key, len, text.as_string::<i32>().iter().map(to_bytes))
        }
    };
    Ok(out)
}

fn to_bytes(value: Option<&str>) -> Option<&[u8]> {
    value.map(str::as_bytes)
}

fn hash_values<'a>(key: &HmacSha256, len: usize, values: impl Iterator<Item = Option<&'a [u8]>>) -> ArrayRef {
    let mut builder = StringBuilder::with_capacity(len, len * 64);
    let mut buf = [0u8; 64];
    for value in values {
        match value {
            Some(v) => builder.append_value(key.mac_hex(v, &mut buf)),
            None => builder.append_null(),
        }
    }
    Arc::new(builder.finish())
}

/// Masks every value into a Utf8 column; nulls stay null.
fn mask_column(kind: MaskKind, column: &ArrayRef) -> Result<ArrayRef, String> {
    let len = column.len();
    let out = match column.data_type() {
        DataType::Utf8 => mask_values(kind, len, column.as_string::<i32>().iter()),
        DataType::LargeUtf8 => mask_values(kind, len, column.as_string::<i64>().iter()),
        DataType::Utf8View => mask_values(kind, len, column.as_string_view().iter()),
        other => return Err(format!("cannot mask a {other} column")),
    };
    Ok(out)
}

fn mask_values<'a>(kind: MaskKind, len: usize, values: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
    let mut builder = StringBuilder::with_capacity(len, len * 16);
    let mut scratch = String::new();
    for value in values {
        match value {
            Some(v) => {
                scratch.clear();
                mask::mask_into(kind, v, &mut scratch);
                builder.append_value(&scratch);
            }
            None => builder.append_null(),
        }
    }
    Arc::new(builder.finish())
}
