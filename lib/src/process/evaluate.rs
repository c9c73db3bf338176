//! The evaluate step, pure: raw rows in, each body parsed by the `.avsc`,
//! checked against the expectations and routed (kept, quarantined with its
//! reasons, or dropped), kept rows protected by the PII rules; per-rule
//! figures and outcomes over the whole chunk out. Dedup comes after.
//!
//! Routing: a row failing to parse, or failing any `quarantine` rule, is
//! quarantined (quarantine wins over drop: keep the evidence); else a row
//! failing a `drop` rule is dropped; `warn` and `fail` rules never route
//! a row. A `fail` rule that fires (beyond its `max_failure_rate` when it
//! has one), or a `drop` or `quarantine` rule beyond its
//! `max_failure_rate`, fails the chunk; a `warn` rule beyond it warns.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use deltalake::arrow::array::{
    Array, ArrayRef, AsArray, Date32Array, ListBuilder, RecordBatch, StringArray, StringBuilder,
    TimestampMicrosecondArray, UInt32Array,
};
use deltalake::arrow::compute::{cast, concat_batches, take, take_record_batch};
use deltalake::arrow::datatypes::{DataType, Field, Int64Type, TimeUnit};

use super::metrics::RuleFigures;
use super::read::raw_read_schema;
use super::{arrow_err, Compiled};
use crate::body::framing::Envelopes;
use crate::expectations::{Action, Expectation};
use crate::lake::contract::{quarantine_schema, SCHEMA_RULE};
use crate::report::{DataProblem, ProblemKind, RuleVerdict};
use crate::{Error, Result};

/// What one chunk of raw rows turns into, before dedup against the table.
pub(super) struct Evaluated {
    /// Kept rows with the processed schema (PII applied), one batch per raw
    /// batch (never joined: the writer takes them as they are), with their
    /// raw commit versions alongside.
    pub(super) kept: Vec<RecordBatch>,
    pub(super) kept_versions: Vec<i64>,
    /// Quarantine rows, with their raw commit versions alongside.
    pub(super) quarantine: RecordBatch,
    pub(super) quarantine_versions: Vec<i64>,
    pub(super) dropped: u64,
    /// The schema rule's figures, then each expectation's, in declaration
    /// order.
    pub(super) rules: Vec<RuleFigures>,
    /// `fail` rules that fired: the run publishes nothing of this chunk.
    pub(super) failures: Vec<DataProblem>,
    /// Threshold warnings.
    pub(super) warnings: Vec<DataProblem>,
}

/// Parses, checks and transforms one chunk of raw rows. Pure: the same rows
/// give the same result, which is what makes repair runs exact.
///
/// The batches are shared out in runs of about equal rows, one per core,
/// and each batch is parsed, checked, routed and protected on its own (the
/// raw rows are never copied into one batch); rule figures and outcomes
/// are then taken over the whole chunk, so they depend neither on the
/// number of cores nor on batch sizes.
pub(super) fn evaluate(plan: &Compiled, raw: Vec<RecordBatch>, run_id: &str, now: DateTime<Utc>) -> Result<Evaluated> {
    let n: usize = raw.iter().map(RecordBatch::num_rows).sum();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let parts = evaluate_runs(plan, share_out(raw, n, threads), run_id, now)?;
    let Verdicts { rules, failures, warnings } = judge_rules(plan, &parts, n);
    let quarantine = match parts.as_slice() {
        [one] => one.quarantine.clone(),
        _ => concat_batches(&quarantine_schema(), parts.iter().map(|p| &p.quarantine))
            .map_err(arrow_err("quarantine rows"))?,
    };
    Ok(Evaluated {
        kept_versions: parts.iter().flat_map(|p| p.kept_versions.iter().copied()).collect(),
        kept: parts.iter().map(|p| p.kept.clone()).collect(),
        quarantine,
        quarantine_versions: parts.iter().flat_map(|p| p.quarantine_versions.iter().copied()).collect(),
        dropped: parts.iter().map(|p| p.dropped).sum(),
        rules,
        failures,
        warnings,
    })
}

/// The `n` rows of `raw` shared out in runs of about equal rows, one per
/// thread; no run is empty.
fn share_out(raw: Vec<RecordBatch>, n: usize, threads: usize) -> Vec<Vec<RecordBatch>> {
    let share = n.div_ceil(threads.max(1)).max(1);
    let mut runs: Vec<Vec<RecordBatch>> = vec![Vec::new()];
    let mut rows = 0;
    for b in raw {
        rows += b.num_rows();
        runs.last_mut().expect("never empty").push(b);
        if rows >= share {
            runs.push(Vec::new());
            rows = 0;
        }
    }
    runs.retain(|r| !r.is_empty());
    runs
}

/// Evaluates every batch of `runs`, each run on a thread of its own (on
/// this one when there is one run); the slices come back in raw order. No
/// rows at all still give one (empty) slice.
fn evaluate_runs(
    plan: &Compiled,
    mut runs: Vec<Vec<RecordBatch>>,
    run_id: &str,
    now: DateTime<Utc>,
) -> Result<Vec<SliceEval>> {
    // Each raw batch is dropped once checked: the bodies are most of a
    // range's memory.
    let each = |run: Vec<RecordBatch>| {
        run.into_iter().map(|b| evaluate_slice(plan, &b, run_id, now)).collect::<Result<Vec<_>>>()
    };
    Ok(match runs.len() {
        0 => vec![evaluate_slice(plan, &RecordBatch::new_empty(raw_read_schema()), run_id, now)?],
        1 => each(runs.pop().expect("one run"))?,
        _ => std::thread::scope(|scope| {
            let handles: Vec<_> = runs.into_iter().map(|run| scope.spawn(move || each(run))).collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(Error::Internal("a row-check thread panicked".into()))))
                .collect::<Result<Vec<_>>>()
        })?
        .into_iter()
        .flatten()
        .collect(),
    })
}

/// Every rule's figures over a chunk, and the problems its outcomes raise.
struct Verdicts {
    rules: Vec<RuleFigures>,
    failures: Vec<DataProblem>,
    warnings: Vec<DataProblem>,
}

/// Judges the schema rule and every expectation over the `n` rows of the
/// chunk `parts` came from; an expectation's rate is over the rows that
/// parsed.
fn judge_rules(plan: &Compiled, parts: &[SliceEval], n: usize) -> Verdicts {
    let parsed_ok: usize = parts.iter().map(|p| p.parsed_ok).sum();
    let mut rules = vec![RuleFigures {
        rule: SCHEMA_RULE.to_string(),
        expression: None,
        action: Action::Quarantine,
        checked: n as u64,
        failed: (n - parsed_ok) as u64,
        max_failure_rate: None,
        outcome: if parsed_ok == n { RuleVerdict::Passed } else { RuleVerdict::Quarantined },
    }];
    let mut failures = Vec::new();
    let mut warnings = Vec::new();
    for (r, e) in plan.expectations.iter().enumerate() {
        let failed: usize = parts.iter().map(|p| p.rule_failed[r]).sum();
        let samples: Vec<&str> =
            parts.iter().flat_map(|p| p.rule_samples[r].iter().map(String::as_str)).take(SAMPLES).collect();
        let rate = if parsed_ok == 0 { 0.0 } else { failed as f64 / parsed_ok as f64 };
        let outcome = rule_outcome(e, failed, rate);
        let summary = format!(
            "rule {:?} ({}): {} of {} rows failed ({:.2}%{}); sample: {}",
            e.name,
            e.action.as_str(),
            failed,
            parsed_ok,
            rate * 100.0,
            e.max_failure_rate.map(|m| format!(", allowed {:.2}%", m * 100.0)).unwrap_or_default(),
            if samples.is_empty() { "none".to_string() } else { samples.join(", ") }
        );
        if outcome == RuleVerdict::Failed {
            failures.push(problem(ProblemKind::ExpectationFailed, summary, true));
        } else if outcome == RuleVerdict::Warned {
            warnings.push(problem(ProblemKind::ExpectationThreshold, summary, false));
        }
        rules.push(RuleFigures {
            rule: e.name.clone(),
            expression: Some(e.sql.clone()),
            action: e.action,
            checked: parsed_ok as u64,
            failed: failed as u64,
            max_failure_rate: e.max_failure_rate,
            outcome,
        });
    }
    Verdicts { rules, failures, warnings }
}

/// What `failed` failing rows (at `rate` of the parsed rows) make of rule
/// `e`: a rule with a `max_failure_rate` acts on the chunk only beyond it.
fn rule_outcome(e: &Expectation, failed: usize, rate: f64) -> RuleVerdict {
    let exceeded = e.max_failure_rate.is_some_and(|max| rate > max);
    let row_level = e.max_failure_rate.is_none();
    match (e.action, failed == 0) {
        (_, true) => RuleVerdict::Passed,
        (Action::Fail, false) if row_level || exceeded => RuleVerdict::Failed,
        (Action::Fail | Action::Warn, false) if exceeded => RuleVerdict::Warned,
        (Action::Fail | Action::Warn, false) => RuleVerdict::Kept,
        (Action::Drop, false) if exceeded => RuleVerdict::Failed,
        (Action::Drop, false) => RuleVerdict::Dropped,
        (Action::Quarantine, false) if exceeded => RuleVerdict::Failed,
        (Action::Quarantine, false) => RuleVerdict::Quarantined,
    }
}

/// Failing rows named per rule in messages.
const SAMPLES: usize = 5;

/// What one slice of a chunk turns into; [`evaluate`] joins the slices.
struct SliceEval {
    parsed_ok: usize,
    /// Per expectation: rows that failed it, and up to [`SAMPLES`] of them.
    rule_failed: Vec<usize>,
    rule_samples: Vec<Vec<String>>,
    kept: RecordBatch,
    kept_versions: Vec<i64>,
    quarantine: RecordBatch,
    quarantine_versions: Vec<i64>,
    dropped: u64,
}

/// Parses, checks, routes and protects one raw batch.
fn evaluate_slice(plan: &Compiled, raw: &RecordBatch, run_id: &str, now: DateTime<Utc>) -> Result<SliceEval> {
    let checks = check_rows(plan, raw)?;
    let Routes { keep, quarantine, dropped } = route(plan, &checks);
    let versions = raw_column(raw, "_commit_version")?;
    let versions = versions.as_primitive::<Int64Type>();
    let quarantine_rows = quarantine_rows(plan, raw, &quarantine, &checks, run_id, now)?;
    let kept = kept_rows(plan, &checks.rows, &keep, run_id, now)?;
    Ok(SliceEval {
        parsed_ok: checks.schema_reason.iter().filter(|r| r.is_none()).count(),
        rule_failed: checks.rule_failed,
        rule_samples: checks.rule_samples,
        quarantine_versions: quarantine.iter().map(|&i| versions.value(i)).collect(),
        kept_versions: keep.iter().map(|&i| versions.value(i)).collect(),
        quarantine: quarantine_rows,
        kept,
        dropped,
    })
}

fn raw_column(raw: &RecordBatch, name: &str) -> Result<ArrayRef> {
    raw.column_by_name(name).cloned().ok_or_else(|| Error::Internal(format!("raw column {name} missing")))
}

/// One slice's rows as the rules see them, and what each failed.
struct RowChecks {
    /// Parsed bodies, `_rescued` and lineage, in the plan's checked schema.
    rows: RecordBatch,
    /// Per row: why its body did not parse, if it did not.
    schema_reason: Vec<Option<String>>,
    /// Per row: the expectations it failed (indices into the plan's); a
    /// row that did not parse fails none.
    failed_rules: Vec<Vec<usize>>,
    /// Per expectation: rows that failed it, and up to [`SAMPLES`] of them.
    rule_failed: Vec<usize>,
    rule_samples: Vec<Vec<String>>,
}

/// Parses the bodies of `raw` and checks every expectation on the rows
/// that parsed.
fn check_rows(plan: &Compiled, raw: &RecordBatch) -> Result<RowChecks> {
    let n = raw.num_rows();
    let bodies = raw_column(raw, "body")?;
    let mut schema_reason: Vec<Option<String>> = vec![None; n];
    let parsed = if plan.framing.is_plain() {
        plan.body.decode(bodies.as_ref())
    } else {
        let envelopes = Envelopes::new(
            raw.column_by_name("content_type").map(|c| c.as_ref()),
            raw.column_by_name("content_encoding").map(|c| c.as_ref()),
        );
        let (json, unframed) = plan.framing.json_array(bodies.as_ref(), &envelopes);
        for (row, reason) in unframed {
            schema_reason[row] = Some(reason);
        }
        plan.body.decode(&json)
    }
    .map_err(|e| Error::Internal(e.to_string()))?;
    for (row, reason) in parsed.failures {
        // A body that could not be framed decodes as null: its reason stays.
        schema_reason[row].get_or_insert(reason);
    }

    // The rows the rules see: parsed body, `_rescued`, lineage.
    let mut columns: Vec<ArrayRef> = parsed.batch.columns().to_vec();
    for name in ["partition_id", "sequence_number", "enqueued_time", "source_file"] {
        columns.push(raw_column(raw, name)?);
    }
    let rows = RecordBatch::try_new(plan.checked_schema.clone(), columns).map_err(arrow_err("rows to check"))?;

    let mut failed_rules: Vec<Vec<usize>> = vec![Vec::new(); n];
    let keys = sample_key_columns(plan, &rows);
    let mut rule_failed = Vec::with_capacity(plan.expectations.len());
    let mut rule_samples = Vec::with_capacity(plan.expectations.len());
    for (r, e) in plan.expectations.iter().enumerate() {
        let pass = e.evaluate(&rows).map_err(|message| Error::RuleError { rule: e.name.clone(), message })?;
        let mut failing = Vec::new();
        for (i, ok) in pass.iter().enumerate() {
            if schema_reason[i].is_none() && ok != Some(true) {
                failed_rules[i].push(r);
                failing.push(i);
            }
        }
        rule_failed.push(failing.len());
        rule_samples.push(sample_keys(&keys, &failing));
    }
    Ok(RowChecks { rows, schema_reason, failed_rules, rule_failed, rule_samples })
}

/// Where the rows of a slice go, by index.
struct Routes {
    keep: Vec<usize>,
    quarantine: Vec<usize>,
    dropped: u64,
}

/// Routes every row: quarantine wins over drop (keep the evidence).
fn route(plan: &Compiled, checks: &RowChecks) -> Routes {
    let mut routes = Routes { keep: Vec::new(), quarantine: Vec::new(), dropped: 0 };
    for (i, failed) in checks.failed_rules.iter().enumerate() {
        let actions = failed.iter().map(|&r| plan.expectations[r].action);
        let mut q = checks.schema_reason[i].is_some();
        let mut d = false;
        for a in actions {
            q |= a == Action::Quarantine;
            d |= a == Action::Drop;
        }
        if q {
            routes.quarantine.push(i);
        } else if d {
            routes.dropped += 1;
        } else {
            routes.keep.push(i);
        }
    }
    routes
}

/// A data problem of the whole chunk (no file or record to name).
fn problem(kind: ProblemKind, message: String, blocking: bool) -> DataProblem {
    DataProblem { kind, partition: None, file: None, record: None, message, blocking }
}

/// Columns that identify a row to a human: the dedup key when declared.
fn sample_key_columns(plan: &Compiled, checked: &RecordBatch) -> Vec<(String, ArrayRef)> {
    let mut names: Vec<String> = plan.dedup.as_ref().map(|d| d.key.clone()).unwrap_or_default();
    // Samples are taken before the PII rules: never show a protected column.
    names.retain(|n| checked.column_by_name(n).is_some() && !plan.config.pii.rules.iter().any(|r| &r.column == n));
    names.extend(["_partition_id".to_string(), "_sequence_number".to_string()]);
    names
        .into_iter()
        .filter_map(|n| {
            let c = checked.column_by_name(&n)?;
            cast(c, &DataType::Utf8).ok().map(|c| (n, c))
        })
        .collect()
}

/// Up to [`SAMPLES`] of `rows`, each named by its key columns.
fn sample_keys(keys: &[(String, ArrayRef)], rows: &[usize]) -> Vec<String> {
    rows.iter()
        .take(SAMPLES)
        .map(|&i| {
            keys.iter()
                .map(|(name, c)| {
                    let s = c.as_string::<i32>();
                    format!("{name}={}", if s.is_null(i) { "null" } else { s.value(i) })
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// The quarantine rows for `rows` of `raw`: lineage, the body as received,
/// and every rule each failed with its reason.
fn quarantine_rows(
    plan: &Compiled,
    raw: &RecordBatch,
    rows: &[usize],
    checks: &RowChecks,
    run_id: &str,
    now: DateTime<Utc>,
) -> Result<RecordBatch> {
    let mut names = Vec::with_capacity(rows.len());
    let mut reasons = Vec::with_capacity(rows.len());
    for &i in rows {
        let mut rules = Vec::new();
        let mut text = Vec::new();
        if let Some(reason) = &checks.schema_reason[i] {
            rules.push(SCHEMA_RULE);
            text.push(format!("{SCHEMA_RULE}: {reason}"));
        }
        for &r in &checks.failed_rules[i] {
            let e = &plan.expectations[r];
            rules.push(e.name.as_str());
            text.push(format!("{} ({}): not true: {}", e.name, e.action.as_str(), e.sql));
        }
        names.push(rules);
        reasons.push(text.join("; "));
    }
    quarantine_batch(raw, rows, &names, &reasons, run_id, now)
}

/// Quarantine rows for `rows` of `raw` (lineage, raw version, the body as
/// received), each with its rule names and reason.
pub(super) fn quarantine_batch(
    raw: &RecordBatch,
    rows: &[usize],
    rules: &[Vec<&str>],
    reasons: &[String],
    run_id: &str,
    now: DateTime<Utc>,
) -> Result<RecordBatch> {
    let idx = UInt32Array::from(rows.iter().map(|&i| i as u32).collect::<Vec<_>>());
    let pick = |name: &str| -> Result<ArrayRef> {
        let c = raw.column_by_name(name).ok_or_else(|| Error::Internal(format!("raw column {name} missing")))?;
        take(c, &idx, None).map_err(arrow_err("quarantine rows"))
    };
    let mut names =
        ListBuilder::new(StringBuilder::new()).with_field(Arc::new(Field::new("element", DataType::Utf8, true)));
    for row in rules {
        for rule in row {
            names.values().append_value(rule);
        }
        names.append(true);
    }
    let k = rows.len();
    RecordBatch::try_new(
        quarantine_schema(),
        vec![
            pick("partition_id")?,
            pick("sequence_number")?,
            pick("enqueued_time")?,
            pick("source_file")?,
            pick("_commit_version")?,
            pick("body")?,
            Arc::new(names.finish()),
            Arc::new(StringArray::from(reasons.iter().map(String::as_str).collect::<Vec<_>>())),
            Arc::new(StringArray::from(vec![run_id; k])),
            Arc::new(TimestampMicrosecondArray::from(vec![now.timestamp_micros(); k]).with_timezone("UTC")),
            pick("enqueued_date")?,
        ],
    )
    .map_err(arrow_err("quarantine rows"))
}

/// The processed rows for `rows` of `checked`: typed by the body schema,
/// stamped with run and event date, PII rules applied.
fn kept_rows(
    plan: &Compiled,
    checked: &RecordBatch,
    rows: &[usize],
    run_id: &str,
    now: DateTime<Utc>,
) -> Result<RecordBatch> {
    let idx = UInt32Array::from(rows.iter().map(|&i| i as u32).collect::<Vec<_>>());
    let picked = take_record_batch(checked, &idx).map_err(arrow_err("kept rows"))?;
    let k = picked.num_rows();
    let event_time =
        picked.column_by_name(&plan.event_time).ok_or_else(|| Error::Internal("event_time column missing".into()))?;
    let event_time = cast(event_time, &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())))
        .map_err(arrow_err("event time"))?;
    let event_time = event_time.as_primitive::<deltalake::arrow::datatypes::TimestampMicrosecondType>();
    let enqueued = picked.column_by_name("_enqueued_time").ok_or_else(|| Error::Internal("lineage missing".into()))?;
    let enqueued = enqueued.as_primitive::<deltalake::arrow::datatypes::TimestampMicrosecondType>();
    const DAY_MICROS: i64 = 86_400_000_000;
    let dates: Date32Array = (0..k)
        .map(|i| {
            let t = if event_time.is_null(i) { enqueued.value(i) } else { event_time.value(i) };
            Some(t.div_euclid(DAY_MICROS) as i32)
        })
        .collect();
    let mut columns = picked.columns().to_vec();
    columns.push(Arc::new(StringArray::from(vec![run_id; k])));
    columns.push(Arc::new(TimestampMicrosecondArray::from(vec![now.timestamp_micros(); k]).with_timezone("UTC")));
    columns.push(Arc::new(dates));
    // Casting to the declared schema makes required fields NOT NULL; rows
    // missing one were quarantined by the parser already.
    let typed = RecordBatch::try_new(plan.pre_pii_schema.clone(), columns).map_err(arrow_err("processed rows"))?;
    plan.pii.apply(&typed).map_err(|e| Error::Internal(format!("PII rules: {e}")))
}
