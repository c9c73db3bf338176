//! Data-quality expectations: declared rules every processed row is checked
//! against before anything is published.
//!
//! A rule is a SQL boolean expression evaluated by DataFusion over a whole
//! batch at once (vectorised), or a shorthand that compiles to one:
//! `not_null`, `regex`, `range`, `accepted_values`, `timeliness`. A row
//! passes only when the expression is `TRUE`: `NULL` counts as a failure, so a
//! hand-written rule that should allow missing values says so
//! (`amount IS NULL OR amount >= 0`). The shorthands other than `not_null`
//! already let nulls pass.
//!
//! Each rule has an action for the rows that fail it: `warn` keeps and
//! counts, `drop` discards and counts, `quarantine` moves the row to the
//! quarantine table with the rule name and reason, `fail` publishes nothing
//! and exits with the data-problem code. With `max_failure_rate` the rule is
//! also checked over the whole batch: `warn`/`fail` rules then act only when
//! the share of failing rows exceeds it (rows are kept otherwise), and a
//! `drop`/`quarantine` rule still handles its rows but fails the run when the
//! share is exceeded.
//!
//! Identifiers are case-sensitive (`eventId`, not `eventid`): body fields are
//! camelCase and SQL's usual lower-casing would not find them.
//!
//! Timeliness is measured against the event's enqueue time (`_enqueued_time`),
//! never the wall clock, so a rerun gives the same answer.

use std::sync::Arc;

use deltalake::arrow::array::{Array, BooleanArray, RecordBatch};
use deltalake::arrow::datatypes::Schema;
use deltalake::datafusion::common::DFSchema;
use deltalake::datafusion::execution::session_state::SessionStateBuilder;
use deltalake::datafusion::physical_expr::PhysicalExpr;
use deltalake::datafusion::prelude::{SessionConfig, SessionContext};
use serde::{Deserialize, Serialize};

/// What happens to rows that fail a rule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Keep the row; count it.
    #[default]
    Warn,
    /// Discard the row; count it.
    Drop,
    /// Move the row to the quarantine table with the reason.
    Quarantine,
    /// Publish nothing; the run exits with the data-problem code.
    Fail,
}

impl Action {
    /// The name used in reports and the metrics table.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Warn => "warn",
            Action::Drop => "drop",
            Action::Quarantine => "quarantine",
            Action::Fail => "fail",
        }
    }
}

/// One expectation in `process.expectations`. Exactly one of `sql`,
/// `not_null`, `regex`, `range`, `accepted_values`, `timeliness` is given.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectationConfig {
    /// Rule name: shown in reports, quarantine rows and the metrics table.
    pub name: String,
    /// Free text for humans.
    #[serde(default)]
    pub description: Option<String>,
    /// A SQL boolean expression over the row's columns (DataFusion dialect).
    #[serde(default)]
    pub sql: Option<String>,
    /// The column must not be null.
    #[serde(default)]
    pub not_null: Option<String>,
    /// The column, when present, must match a regular expression.
    #[serde(default)]
    pub regex: Option<RegexRule>,
    /// The column, when present, must lie within bounds (inclusive).
    #[serde(default)]
    pub range: Option<RangeRule>,
    /// The column, when present, must be one of the values.
    #[serde(default)]
    pub accepted_values: Option<AcceptedValuesRule>,
    /// A timestamp column, when present, must lie near the enqueue time.
    #[serde(default)]
    pub timeliness: Option<TimelinessRule>,
    /// What to do with failing rows.
    #[serde(default)]
    pub action: Action,
    /// Dataset-level threshold: the largest share (0..=1) of checked rows that
    /// may fail before the rule acts on the batch as a whole.
    #[serde(default)]
    pub max_failure_rate: Option<f64>,
}

/// `regex:` shorthand.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegexRule {
    /// Column to check.
    pub column: String,
    /// Regular expression (Rust `regex` syntax); anchor it with `^...$` to
    /// match the whole value.
    pub pattern: String,
}

/// `range:` shorthand.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RangeRule {
    /// Column to check.
    pub column: String,
    /// Smallest accepted value (number, or a string for dates and times).
    #[serde(default)]
    pub min: Option<serde_json::Value>,
    /// Largest accepted value.
    #[serde(default)]
    pub max: Option<serde_json::Value>,
}

/// `accepted_values:` shorthand.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AcceptedValuesRule {
    /// Column to check.
    pub column: String,
    /// The accepted values.
    pub values: Vec<serde_json::Value>,
}

/// `timeliness:` shorthand: `column` within `[enqueued - max_delay,
/// enqueued + max_ahead]`. Durations are `<n>s|m|h|d`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TimelinessRule {
    /// Timestamp column to check.
    pub column: String,
    /// How far before its enqueue time an event may have happened.
    #[serde(default)]
    pub max_delay: Option<String>,
    /// How far after its enqueue time an event may claim to have happened
    /// (client clocks run ahead).
    #[serde(default)]
    pub max_ahead: Option<String>,
}

/// The column events are enqueued at; timeliness rules measure against it.
pub const ENQUEUED_TIME_COLUMN: &str = "_enqueued_time";

impl ExpectationConfig {
    /// The SQL boolean expression this rule stands for, or why it has none.
    pub fn to_sql(&self) -> Result<String, String> {
        let given = [
            self.sql.is_some(),
            self.not_null.is_some(),
            self.regex.is_some(),
            self.range.is_some(),
            self.accepted_values.is_some(),
            self.timeliness.is_some(),
        ]
        .iter()
        .filter(|g| **g)
        .count();
        if given != 1 {
            return Err(format!(
                "give exactly one of sql, not_null, regex, range, accepted_values, timeliness (found {given})"
            ));
        }
        if let Some(sql) = &self.sql {
            return Ok(sql.clone());
        }
        if let Some(c) = &self.not_null {
            return Ok(format!("{} IS NOT NULL", ident(c)));
        }
        if let Some(r) = &self.regex {
            regex::Regex::new(&r.pattern).map_err(|e| format!("regex.pattern: {e}"))?;
            let c = ident(&r.column);
            return Ok(format!("{c} IS NULL OR {c} ~ {}", string_literal(&r.pattern)));
        }
        if let Some(r) = &self.range {
            let c = ident(&r.column);
            let mut parts = Vec::new();
            if let Some(min) = &r.min {
                parts.push(format!("{c} >= {}", literal(min).map_err(|e| format!("range.min: {e}"))?));
            }
            if let Some(max) = &r.max {
                parts.push(format!("{c} <= {}", literal(max).map_err(|e| format!("range.max: {e}"))?));
            }
            if parts.is_empty() {
                return Err("range needs min, max or both".to_string());
            }
            return Ok(format!("{c} IS NULL OR ({})", parts.join(" AND ")));
        }
        if let Some(r) = &self.accepted_values {
            if r.values.is_empty() {
                return Err("accepted_values.values is empty".to_string());
            }
            let values = r
                .values
                .iter()
                .map(literal)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("accepted_values.values: {e}"))?;
            let c = ident(&r.column);
            return Ok(format!("{c} IS NULL OR {c} IN ({})", values.join(", ")));
        }
        if let Some(t) = &self.timeliness {
            let c = ident(&t.column);
            let e = ident(ENQUEUED_TIME_COLUMN);
            let mut parts = Vec::new();
            if let Some(d) = &t.max_delay {
                let secs = parse_duration(d).map_err(|m| format!("timeliness.max_delay: {m}"))?;
                parts.push(format!("{c} >= {e} - INTERVAL '{secs} seconds'"));
            }
            if let Some(d) = &t.max_ahead {
                let secs = parse_duration(d).map_err(|m| format!("timeliness.max_ahead: {m}"))?;
                parts.push(format!("{c} <= {e} + INTERVAL '{secs} seconds'"));
            }
            if parts.is_empty() {
                return Err("timeliness needs max_delay, max_ahead or both".to_string());
            }
            return Ok(format!("{c} IS NULL OR ({})", parts.join(" AND ")));
        }
        unreachable!("exactly one form is set")
    }
}

/// The longest duration a rule may give (ten years).
pub const MAX_DURATION_SECS: u64 = 3_650 * 86_400;

/// Parses `<n>s|m|h|d` into seconds, at most [`MAX_DURATION_SECS`].
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = num.parse().map_err(|_| format!("{text:?} is not a duration like 30s, 15m, 6h or 7d"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?} is not a duration like 30s, 15m, 6h or 7d")),
    };
    n.checked_mul(mult)
        .filter(|s| *s <= MAX_DURATION_SECS)
        .ok_or_else(|| format!("{text:?} is longer than the longest duration allowed, 3650d"))
}

fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn string_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn literal(v: &serde_json::Value) -> Result<String, String> {
    match v {
        serde_json::Value::Number(n) => Ok(n.to_string()),
        serde_json::Value::String(s) => Ok(string_literal(s)),
        serde_json::Value::Bool(b) => Ok(if *b { "TRUE" } else { "FALSE" }.to_string()),
        other => Err(format!("{other} is not a number, string or boolean")),
    }
}

/// A rule ready to run.
#[derive(Debug, Clone)]
pub struct Expectation {
    /// Rule name.
    pub name: String,
    /// Action on failing rows.
    pub action: Action,
    /// Dataset-level threshold.
    pub max_failure_rate: Option<f64>,
    /// The SQL it evaluates.
    pub sql: String,
    expr: Arc<dyn PhysicalExpr>,
}

/// Plans a rule against the schema of the rows it will see. The error is a
/// message for the pipeline author (unknown column, SQL syntax, not boolean).
pub fn compile(config: &ExpectationConfig, schema: &Schema) -> Result<Expectation, String> {
    if config.name.trim().is_empty() {
        return Err("name is empty".to_string());
    }
    if let Some(rate) = config.max_failure_rate {
        if !(0.0..=1.0).contains(&rate) {
            return Err(format!("max_failure_rate {rate} is not between 0 and 1"));
        }
    }
    let sql = config.to_sql()?;
    let df_schema = DFSchema::try_from(schema.clone()).map_err(|e| e.to_string())?;
    let ctx = session();
    let expr = ctx.parse_sql_expr(&sql, &df_schema).map_err(|e| clean(&e.to_string()))?;
    if let Some(m) = many_rows(&expr) {
        return Err(format!(
            "expectations are row-level: {m} in `{sql}` needs many rows; check each row's own columns (max_failure_rate bounds the share of rows that may fail)"
        ));
    }
    let physical = ctx.create_physical_expr(expr, &df_schema).map_err(|e| clean(&e.to_string()))?;
    let ty = physical.data_type(schema).map_err(|e| clean(&e.to_string()))?;
    if ty != deltalake::arrow::datatypes::DataType::Boolean {
        return Err(format!("`{sql}` is {ty}, not a boolean expression"));
    }
    Ok(Expectation {
        name: config.name.clone(),
        action: config.action,
        max_failure_rate: config.max_failure_rate,
        sql,
        expr: physical,
    })
}

/// The first aggregate or window function in `expr`, named: a rule is
/// evaluated on each row alone, and planning one of these gives a query
/// plan dump rather than a reason.
fn many_rows(expr: &deltalake::datafusion::logical_expr::Expr) -> Option<String> {
    use deltalake::datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use deltalake::datafusion::logical_expr::Expr;
    let mut found = None;
    let _ = expr.apply(|e| {
        found = match e {
            Expr::AggregateFunction(f) => Some(format!("the aggregate function {}()", f.func.name())),
            Expr::WindowFunction(w) => Some(format!("the window function {}()", w.fun.name())),
            _ => None,
        };
        Ok(if found.is_some() { TreeNodeRecursion::Stop } else { TreeNodeRecursion::Continue })
    });
    found
}

/// The DataFusion session every piece of pipeline SQL runs in (expectations
/// here and in `weir validate`, curated models and their checks, features,
/// exports): identifiers are case-sensitive, and the JSON functions of
/// `datafusion-functions-json` (`json_get_float(_rescued, 'TEMP_07')`,
/// `json_get_str`, `json_contains`, the `->`/`->>` operators, ...) are
/// registered, so SQL that plans in one place plans in all of them.
pub fn session() -> SessionContext {
    session_with(SessionStateBuilder::new())
}

/// [`session`] whose queries hold at most `limit` bytes between them:
/// sorts, aggregations and sort-merge joins beyond it spill to files in the
/// system's temporary folder (`TMPDIR`); what cannot spill (the build side
/// of a hash join) fails with DataFusion's `Resources exhausted`.
pub fn session_within(limit: usize) -> SessionContext {
    use deltalake::datafusion::execution::memory_pool::FairSpillPool;
    use deltalake::datafusion::execution::runtime_env::RuntimeEnvBuilder;
    let runtime = RuntimeEnvBuilder::new().with_memory_pool(Arc::new(FairSpillPool::new(limit))).build_arc();
    match runtime {
        Ok(runtime) => session_with(SessionStateBuilder::new().with_runtime_env(runtime)),
        // Only a disk manager that cannot be set up fails here: run
        // without the bound rather than not at all.
        Err(e) => {
            tracing::warn!(error = %e, "no memory bound for queries");
            session()
        }
    }
}

fn session_with(builder: SessionStateBuilder) -> SessionContext {
    let config = SessionConfig::new().set_bool("datafusion.sql_parser.enable_ident_normalization", false);
    let mut state = builder.with_config(config).with_default_features().build();
    // Registering into a `SessionState` only inserts into its maps: it
    // cannot fail (the `Result` is the registry trait's).
    datafusion_functions_json::register_all(&mut state).expect("registering functions in a session state");
    SessionContext::new_with_state(state)
}

/// DataFusion messages carry backtrace hints, planner jargon prefixes and,
/// from the analyzer, a chain of causes under the name of the rule that
/// failed (`type_coercion\ncaused by\n...`). Each cause's first line says
/// what is wrong; a misspelled function name gets DataFusion's suggestion
/// from the next (`Invalid function 'json_get_flaot'. Did you mean
/// 'json_get_float'?`).
pub(crate) fn clean(message: &str) -> String {
    let causes: Vec<&str> = message.split("\ncaused by\n").collect();
    let mut out: Vec<String> = Vec::new();
    for (i, cause) in causes.iter().enumerate() {
        let mut lines = cause.lines();
        let first = lines
            .next()
            .unwrap_or(cause)
            .trim_start_matches("Error during planning: ")
            .trim_start_matches("Schema error: ")
            .trim_start_matches("SQL error: ");
        // A rule's name (`type_coercion`) says where, not what.
        let rule_name = !first.is_empty() && first.chars().all(|c| c.is_ascii_lowercase() || c == '_');
        if i == 0 && causes.len() > 1 && rule_name {
            continue;
        }
        out.push(match lines.next().filter(|l| l.starts_with("Did you mean")) {
            Some(hint) => format!("{first} {hint}"),
            None => first.to_string(),
        });
    }
    out.join(": ")
}

impl Expectation {
    /// Which rows pass (`true`); a `NULL` result is a failure.
    pub fn evaluate(&self, batch: &RecordBatch) -> Result<BooleanArray, String> {
        let value = self.expr.evaluate(batch).map_err(|e| format!("rule {}: {}", self.name, clean(&e.to_string())))?;
        let array =
            value.into_array(batch.num_rows()).map_err(|e| format!("rule {}: {}", self.name, clean(&e.to_string())))?;
        let bools = array
            .as_any()
            .downcast_ref::<BooleanArray>()
            .ok_or_else(|| format!("rule {}: did not evaluate to booleans", self.name))?;
        // NULL → false, so callers see a plain pass/fail mask.
        Ok(match bools.nulls() {
            None => bools.clone(),
            Some(_) => bools.iter().map(|v| Some(v == Some(true))).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::array::{Decimal128Array, Int64Array, StringArray, TimestampMicrosecondArray};
    use deltalake::arrow::datatypes::{DataType, Field, TimeUnit};

    fn rule(yaml: &str) -> ExpectationConfig {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    fn batch() -> RecordBatch {
        let ts = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp_micros();
        let schema = Arc::new(Schema::new(vec![
            Field::new("eventId", DataType::Utf8, true),
            Field::new("currency", DataType::Utf8, true),
            Field::new("amount", DataType::Decimal128(18, 2), true),
            Field::new("durationMs", DataType::Int64, true),
            Field::new("eventTimestamp", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), true),
            Field::new("_enqueued_time", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![Some("a"), None, Some("c"), Some("d")])),
                Arc::new(StringArray::from(vec![Some("EUR"), Some("eur"), None, Some("USD")])),
                Arc::new(
                    Decimal128Array::from(vec![Some(1234), Some(-1), None, Some(0)])
                        .with_precision_and_scale(18, 2)
                        .unwrap(),
                ),
                Arc::new(Int64Array::from(vec![Some(10), Some(-5), Some(70_000), None])),
                Arc::new(
                    TimestampMicrosecondArray::from(vec![
                        Some(ts("2026-11-01T10:00:00Z")),
                        Some(ts("2026-10-01T10:00:00Z")),
                        Some(ts("2026-11-01T12:00:00Z")),
                        None,
                    ])
                    .with_timezone("UTC"),
                ),
                Arc::new(TimestampMicrosecondArray::from(vec![ts("2026-11-01T10:00:05Z"); 4]).with_timezone("UTC")),
            ],
        )
        .unwrap()
    }

    fn passes(yaml: &str) -> Vec<bool> {
        let b = batch();
        let e = compile(&rule(yaml), &b.schema()).unwrap();
        e.evaluate(&b).unwrap().iter().map(|v| v.unwrap()).collect()
    }

    #[test]
    fn shorthands_compile_and_evaluate() {
        assert_eq!(passes("{name: id, not_null: eventId}"), [true, false, true, true]);
        assert_eq!(passes("{name: cur, regex: {column: currency, pattern: '^[A-Z]{3}$'}}"), [true, false, true, true]);
        assert_eq!(passes("{name: amt, range: {column: amount, min: 0}}"), [true, false, true, true]);
        assert_eq!(passes("{name: dur, range: {column: durationMs, min: 0, max: 60000}}"), [true, false, false, true]);
        assert_eq!(
            passes("{name: cur, accepted_values: {column: currency, values: [EUR, GBP]}}"),
            [true, false, true, false]
        );
        assert_eq!(
            passes("{name: late, timeliness: {column: eventTimestamp, max_delay: 7d, max_ahead: 1h}}"),
            [true, false, false, true]
        );
    }

    /// The JSON functions as docs/reference/sql.md describes them, on
    /// `_rescued` values as the process stage writes them.
    #[test]
    fn json_functions_read_rescued_fields() {
        let schema = Arc::new(Schema::new(vec![Field::new("_rescued", DataType::Utf8, true)]));
        let rescued = StringArray::from(vec![
            Some(r#"{"TEMP_07":21.5,"tag":"A","n":3,"ok":true,"arr":[1,2],"s":"97.5","deep":{"x":1}}"#),
            Some(r#"{"TEMP_07":"ERR","n":3.5,"ok":"true","gone":null}"#),
            None,
        ]);
        let b = RecordBatch::try_new(schema, vec![Arc::new(rescued)]).unwrap();
        let passes = |sql: &str| -> Vec<bool> {
            let e =
                compile(&rule(&format!("{{name: x, sql: {sql:?}}}")), &b.schema()).unwrap_or_else(|e| panic!("{e}"));
            e.evaluate(&b).unwrap().iter().map(|v| v.unwrap()).collect()
        };
        for (sql, expected) in [
            ("json_get_float(_rescued, 'TEMP_07') < 100", [true, false, false]),
            ("json_get_float(_rescued, 'TEMP_07') IS NULL", [false, true, true]),
            ("json_get_float(_rescued, 's') = 97.5", [true, false, false]),
            ("json_get_str(_rescued, 'tag') = 'A'", [true, false, false]),
            ("json_get_str(_rescued, 's') = '97.5'", [true, false, false]),
            ("json_get_int(_rescued, 'n') = 3", [true, false, false]),
            ("json_get_bool(_rescued, 'ok')", [true, true, false]),
            ("json_contains(_rescued, 'TEMP_07')", [true, true, false]),
            ("json_length(_rescued, 'arr') = 2", [true, false, false]),
            ("json_length(_rescued) = 4", [false, true, false]),
            ("json_contains(_rescued, 'gone')", [false, true, false]),
            ("array_length(json_get_array(_rescued, 'arr')) = 2", [true, false, false]),
            ("json_get_int(_rescued, 'deep', 'x') = 1", [true, false, false]),
            ("json_get_json(_rescued, 'deep') = '{\"x\":1}'", [true, false, false]),
            ("(_rescued->>'tag') = 'A'", [true, false, false]),
            ("(_rescued->>'n') = '3.5'", [false, true, false]),
            ("array_has(json_object_keys(_rescued), 'arr')", [true, false, false]),
        ] {
            assert_eq!(passes(sql), expected, "{sql}");
        }
    }

    #[test]
    fn messages_keep_each_cause_and_drop_the_rule_name() {
        let analyzer = "type_coercion\ncaused by\nWHEN expressions in CASE couldn't be converted to common type (Boolean)\ncaused by\nError during planning: Unexpected argument type to 'json_as_text' at position 2, expected string or int, got Boolean.";
        assert_eq!(
            clean(analyzer),
            "WHEN expressions in CASE couldn't be converted to common type (Boolean): Unexpected argument type to 'json_as_text' at position 2, expected string or int, got Boolean."
        );
        assert_eq!(clean("Schema error: No field named eventid.\n\nbacktrace: ..."), "No field named eventid.");
    }

    #[test]
    fn sql_rules_are_case_sensitive_and_null_fails() {
        assert_eq!(passes("{name: amt, sql: 'amount >= 0'}"), [true, false, false, true]);
        assert_eq!(passes("{name: amt, sql: 'amount IS NULL OR amount >= 0'}"), [true, false, true, true]);
        assert_eq!(passes("{name: len, sql: \"length(eventId) = 1\"}"), [true, false, true, true]);
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        let schema = batch().schema();
        let err = |y: &str| compile(&rule(y), &schema).unwrap_err();
        assert!(err("{name: x, sql: 'eventid IS NOT NULL'}").contains("eventid"), "unknown column named");
        assert!(err("{name: x, sql: 'amount + 1'}").contains("not a boolean"));
        assert!(err("{name: x, sql: 'amount >= '}").len() > 5);
        assert!(err("{name: x, not_null: a, sql: 'true'}").contains("exactly one"));
        assert!(err("{name: x, regex: {column: currency, pattern: '('}}").contains("regex.pattern"));
        assert!(err("{name: x, timeliness: {column: eventTimestamp, max_delay: 7 days}}").contains("duration"));
        for (sql, function) in [
            ("count(*) > 0", "the aggregate function count()"),
            ("amount > avg(amount)", "the aggregate function avg()"),
            ("row_number() OVER (ORDER BY amount) < 10", "the window function row_number()"),
        ] {
            let e = err(&format!("{{name: x, sql: '{sql}'}}"));
            assert!(
                e.starts_with(&format!("expectations are row-level: {function} in `{sql}` needs many rows")),
                "{e}"
            );
            assert!(e.len() < 300, "a reason, not a query plan: {e}");
        }
        for too_long in ["3651d", "99999999999999999d"] {
            let rule = format!("{{name: x, timeliness: {{column: eventTimestamp, max_ahead: {too_long}}}}}");
            assert!(err(&rule).contains("longest duration allowed, 3650d"), "{too_long}");
        }
        assert!(err("{name: x, not_null: eventId, max_failure_rate: 5}").contains("between 0 and 1"));
        assert_eq!(
            err("{name: x, sql: \"json_get_flaot(eventId, 'a') > 1\"}"),
            "Invalid function 'json_get_flaot'. Did you mean 'json_get_float'?"
        );
        assert!(serde_yaml_ng::from_str::<ExpectationConfig>("{name: x, not_nul: a}").is_err());
    }

    /// A session bounded to 48 MiB sorts and aggregates two million rows
    /// (about 80 MB) by spilling, with the exact result; a hash join whose build
    /// side cannot fit fails as resources exhausted rather than growing.
    #[tokio::test]
    async fn a_bounded_session_spills_what_it_can_and_refuses_what_it_cannot() {
        use deltalake::datafusion::error::DataFusionError;
        let n = 2_000_000i64;
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("v", DataType::Int64, false),
        ]));
        let batches: Vec<RecordBatch> = (0..n)
            .step_by(8192)
            .map(|start| {
                let ids: Vec<i64> = (start..(start + 8192).min(n)).collect();
                let keys: Vec<String> = ids.iter().map(|i| format!("key-{:012}", (i * 7919) % n)).collect();
                RecordBatch::try_new(
                    schema.clone(),
                    vec![Arc::new(StringArray::from(keys)), Arc::new(Int64Array::from(ids))],
                )
                .unwrap()
            })
            .collect();
        let ctx = session_within(48 * 1024 * 1024);
        let mem = deltalake::datafusion::datasource::MemTable::try_new(schema, vec![batches]).unwrap();
        ctx.register_table("t", Arc::new(mem)).unwrap();

        let sorted = ctx.sql("SELECT k, v FROM t ORDER BY k DESC").await.unwrap().collect().await.unwrap();
        let keys: Vec<String> = sorted
            .iter()
            .flat_map(|b| b.column(0).as_any().downcast_ref::<StringArray>().unwrap().iter())
            .map(|k| k.unwrap().to_string())
            .collect();
        assert_eq!(keys.len(), n as usize);
        assert!(keys.windows(2).all(|w| w[0] >= w[1]), "sorted");
        assert_eq!(keys[0], format!("key-{:012}", n - 1));

        let grouped = ctx.sql("SELECT COUNT(*) FROM (SELECT k, SUM(v) FROM t GROUP BY k)").await.unwrap();
        let grouped = grouped.collect().await.unwrap();
        assert_eq!(grouped[0].column(0).as_any().downcast_ref::<Int64Array>().unwrap().value(0), n);

        let joined = ctx.sql("SELECT COUNT(*) FROM t a JOIN t b ON a.k = b.k AND a.v <> b.v").await.unwrap();
        let err = joined.collect().await.unwrap_err();
        assert!(matches!(err.find_root(), DataFusionError::ResourcesExhausted(_)), "{err}");
    }
}
