//! The evaluate step on hand-made raw rows: which rows are kept (and how
//! they look once protected), which are quarantined and why, how many are
//! dropped, and each rule's figures and outcome.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use deltalake::arrow::array::{
    ArrayRef, AsArray, BinaryArray, Date32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use deltalake::arrow::compute::concat_batches;
use deltalake::arrow::datatypes::{Date32Type, Int64Type, TimestampMicrosecondType};

use super::evaluate::{evaluate, Evaluated};
use super::metrics::RuleFigures;
use super::read::raw_read_schema;
use super::Compiled;
use crate::pipeline::parse_pipeline;
use crate::report::{ProblemKind, RuleVerdict};

const KEY_ENV: &str = "WEIR_PROCESS_EVALUATE_TEST_KEY";
const KEY: &str = "process-evaluate-test-key-0123456789";
const RUN_ID: &str = "run-1";

const SCHEMA: &str = r#"{
  "type": "record", "name": "Event",
  "fields": [
    {"name": "id", "type": "string"},
    {"name": "kind", "type": "string"},
    {"name": "amount", "type": ["null", "long"]},
    {"name": "email", "type": ["null", "string"]},
    {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}}
  ]
}"#;

/// The plan of a pipeline with `expectations` (YAML list items) over
/// [`SCHEMA`], `email` hashed.
fn plan(dir: &std::path::Path, expectations: &str) -> Compiled {
    std::fs::write(dir.join("event.avsc"), SCHEMA).unwrap();
    let text = format!(
        r#"name: t
source:
  capture:
    url: {lake}/capture
body:
  schema: event.avsc
tables:
  raw: {{path: {lake}/raw}}
  processed: {{path: {lake}/processed}}
  quarantine: {{path: {lake}/quarantine}}
process:
  event_time: ts
  expectations:
{expectations}  pii:
    key_env: {KEY_ENV}
    rules:
      - {{column: email, action: hash}}
"#,
        lake = dir.display(),
    );
    std::fs::write(dir.join("p.yaml"), &text).unwrap();
    let loaded = parse_pipeline(&dir.join("p.yaml"), &text, &|_| None).expect("valid pipeline");
    std::env::set_var(KEY_ENV, KEY);
    Compiled::build(&loaded, &loaded.process_unit(None).unwrap()).expect("plan")
}

const ROUTING_RULES: &str = r#"    - {name: amount_not_negative, sql: "amount IS NULL OR amount >= 0", action: quarantine}
    - {name: no_test_events, sql: "kind <> 'test'", action: drop}
    - {name: amount_present, not_null: amount, action: warn}
"#;

fn event_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 8, 0, 0).unwrap()
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 2, 9, 30, 0).unwrap()
}

fn body(id: &str, kind: &str, amount: Option<i64>, email: Option<&str>) -> String {
    serde_json::json!({
        "id": id, "kind": kind, "amount": amount, "email": email, "ts": event_time().timestamp_millis()
    })
    .to_string()
}

/// Raw rows as `read_raw` gives them: partition "0", sequence numbers from
/// `first_sequence` on, each body with its raw commit version.
fn raw(first_sequence: i64, rows: &[(Option<&str>, i64)]) -> RecordBatch {
    let n = rows.len();
    let enqueued = event_time().timestamp_micros() + 60_000_000;
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec!["0"; n])),
        Arc::new(Int64Array::from((0..n as i64).map(|i| first_sequence + i).collect::<Vec<_>>())),
        Arc::new(TimestampMicrosecondArray::from(vec![enqueued; n]).with_timezone("UTC")),
        Arc::new(Date32Array::from(vec![days(event_time()); n])),
        Arc::new(StringArray::from(vec!["capture/0/file.avro"; n])),
        Arc::new(BinaryArray::from(rows.iter().map(|(b, _)| b.map(str::as_bytes)).collect::<Vec<_>>())),
        Arc::new(StringArray::from(vec![None::<&str>; n])),
        Arc::new(StringArray::from(vec![None::<&str>; n])),
        Arc::new(StringArray::from(vec![None::<&str>; n])),
        Arc::new(Int64Array::from(rows.iter().map(|(_, v)| *v).collect::<Vec<_>>())),
    ];
    RecordBatch::try_new(raw_read_schema(), columns).unwrap()
}

fn days(t: DateTime<Utc>) -> i32 {
    (t.date_naive() - NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()).num_days() as i32
}

/// Bodies for every route: kept, unparseable, quarantined, dropped, both.
fn routing_bodies() -> Vec<(Option<String>, i64)> {
    vec![
        (Some(body("e1", "click", Some(5), Some("ann@example.com"))), 3),
        (Some(r#"{"id": "e2", "kind": "#.to_string()), 3),
        (Some(body("e3", "purchase", Some(-3), None)), 3),
        (Some(body("e4", "test", Some(1), None)), 4),
        (Some(body("e5", "test", Some(-1), None)), 4),
        (Some(body("e6", "click", None, Some("fay@example.com"))), 4),
        (None, 4),
    ]
}

fn as_rows(bodies: &[(Option<String>, i64)]) -> Vec<(Option<&str>, i64)> {
    bodies.iter().map(|(b, v)| (b.as_deref(), *v)).collect()
}

fn joined(parts: &[RecordBatch]) -> RecordBatch {
    concat_batches(&parts[0].schema(), parts).unwrap()
}

fn strings(batch: &RecordBatch, column: &str) -> Vec<Option<String>> {
    let c = batch.column_by_name(column).unwrap_or_else(|| panic!("no column {column}"));
    c.as_string::<i32>().iter().map(|v| v.map(str::to_string)).collect()
}

fn int64s(batch: &RecordBatch, column: &str) -> Vec<Option<i64>> {
    batch.column_by_name(column).unwrap().as_primitive::<Int64Type>().iter().collect()
}

fn figures(ev: &Evaluated) -> Vec<(&str, &str, u64, u64, RuleVerdict)> {
    ev.rules.iter().map(|r| (r.rule.as_str(), r.action.as_str(), r.checked, r.failed, r.outcome)).collect()
}

#[test]
fn rows_are_kept_quarantined_with_their_reasons_or_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let plan = plan(dir.path(), ROUTING_RULES);
    let bodies = routing_bodies();
    let ev = evaluate(&plan, vec![raw(10, &as_rows(&bodies))], RUN_ID, now()).unwrap();

    // Kept: the valid click and the one without amount (warn keeps it).
    let kept = joined(&ev.kept);
    assert_eq!(kept.schema(), plan.processed_schema);
    assert_eq!(strings(&kept, "id"), [Some("e1".into()), Some("e6".into())]);
    assert_eq!(int64s(&kept, "amount"), [Some(5), None]);
    assert_eq!(int64s(&kept, "_sequence_number"), [Some(10), Some(15)]);
    assert_eq!(ev.kept_versions, [3, 4]);
    // HMAC-SHA256 of the address under KEY, in hex.
    assert_eq!(
        strings(&kept, "email"),
        [
            Some("26b31420ea7a16b11dc30bc51e2f25534634e9ddddd5d0d5af3d63893bfdf9b3".into()),
            Some("59b4a52024a972e5e8c9b7972f6ebc76fee6964b1ed2b4887ad3dada681f12ce".into())
        ]
    );
    assert_eq!(strings(&kept, "_run_id"), [Some(RUN_ID.into()), Some(RUN_ID.into())]);
    let processed_at = kept.column_by_name("_processed_at").unwrap().as_primitive::<TimestampMicrosecondType>();
    assert_eq!(processed_at.values().to_vec(), [now().timestamp_micros(); 2]);
    let event_date = kept.column_by_name("event_date").unwrap().as_primitive::<Date32Type>();
    assert_eq!(event_date.values().to_vec(), [days(event_time()); 2]);

    // Quarantined, in raw order: bodies as received, every rule failed.
    let q = &ev.quarantine;
    assert_eq!(int64s(q, "_sequence_number"), [Some(11), Some(12), Some(14), Some(16)]);
    assert_eq!(int64s(q, "_raw_version"), [Some(3), Some(3), Some(4), Some(4)]);
    assert_eq!(ev.quarantine_versions, [3, 3, 4, 4]);
    let stored: Vec<Option<&[u8]>> = q.column_by_name("body").unwrap().as_binary::<i32>().iter().collect();
    assert_eq!(stored, [1, 2, 4, 6].map(|i| bodies[i].0.as_deref().map(str::as_bytes)));
    let rules: Vec<Vec<String>> = q
        .column_by_name("rules")
        .unwrap()
        .as_list::<i32>()
        .iter()
        .map(|l| l.unwrap().as_string::<i32>().iter().map(|s| s.unwrap().to_string()).collect())
        .collect();
    assert_eq!(
        rules,
        [vec!["schema"], vec!["amount_not_negative"], vec!["amount_not_negative", "no_test_events"], vec!["schema"]]
    );
    let reasons: Vec<String> = strings(q, "reason").into_iter().map(Option::unwrap).collect();
    assert_eq!(reasons[0], "schema: body is not valid JSON: EOF while parsing a value at line 1 column 21");
    assert_eq!(reasons[1], "amount_not_negative (quarantine): not true: amount IS NULL OR amount >= 0");
    assert_eq!(
        reasons[2],
        "amount_not_negative (quarantine): not true: amount IS NULL OR amount >= 0; \
         no_test_events (drop): not true: kind <> 'test'"
    );
    assert_eq!(reasons[3], "schema: body is null");
    assert_eq!(strings(q, "_run_id"), vec![Some(RUN_ID.to_string()); 4]);

    // Dropped: the test event that broke no quarantine rule.
    assert_eq!(ev.dropped, 1);

    // Rules count the rows that parsed, whatever the route.
    assert_eq!(
        figures(&ev),
        [
            ("schema", "quarantine", 7, 2, RuleVerdict::Quarantined),
            ("amount_not_negative", "quarantine", 5, 2, RuleVerdict::Quarantined),
            ("no_test_events", "drop", 5, 2, RuleVerdict::Dropped),
            ("amount_present", "warn", 5, 1, RuleVerdict::Kept),
        ]
    );
    assert_eq!(ev.rules[1].expression.as_deref(), Some("amount IS NULL OR amount >= 0"));
    assert!(ev.failures.is_empty(), "{:?}", ev.failures);
    assert!(ev.warnings.is_empty(), "{:?}", ev.warnings);
}

#[test]
fn a_fail_rule_and_a_rate_over_its_threshold_are_problems_of_the_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let plan = plan(
        dir.path(),
        r#"    - {name: kind_known, sql: "kind <> 'bogus'", action: fail}
    - {name: amount_mostly_present, not_null: amount, action: warn, max_failure_rate: 0.25}
    - {name: email_mostly_present, not_null: email, action: warn, max_failure_rate: 0.5}
"#,
    );
    let bodies = [
        body("e1", "click", Some(1), Some("ann@example.com")),
        body("e2", "bogus", Some(2), None),
        body("e3", "click", None, Some("fay@example.com")),
        body("e4", "click", None, Some("gus@example.com")),
    ];
    let rows: Vec<(Option<&str>, i64)> = bodies.iter().map(|b| (Some(b.as_str()), 7)).collect();
    let ev = evaluate(&plan, vec![raw(20, &rows)], RUN_ID, now()).unwrap();

    assert_eq!(
        figures(&ev),
        [
            ("schema", "quarantine", 4, 0, RuleVerdict::Passed),
            ("kind_known", "fail", 4, 1, RuleVerdict::Failed),
            ("amount_mostly_present", "warn", 4, 2, RuleVerdict::Warned),
            ("email_mostly_present", "warn", 4, 1, RuleVerdict::Kept),
        ]
    );
    assert_eq!(ev.rules[2].max_failure_rate, Some(0.25));
    assert_eq!(ev.failures.len(), 1);
    assert_eq!(ev.failures[0].kind, ProblemKind::ExpectationFailed);
    assert!(ev.failures[0].blocking);
    assert_eq!(
        ev.failures[0].message,
        "rule \"kind_known\" (fail): 1 of 4 rows failed (25.00%); sample: _partition_id=0 _sequence_number=21"
    );
    assert_eq!(ev.warnings.len(), 1);
    assert_eq!(ev.warnings[0].kind, ProblemKind::ExpectationThreshold);
    assert!(!ev.warnings[0].blocking);
    assert_eq!(
        ev.warnings[0].message,
        "rule \"amount_mostly_present\" (warn): 2 of 4 rows failed (50.00%, allowed 25.00%); \
         sample: _partition_id=0 _sequence_number=22, _partition_id=0 _sequence_number=23"
    );
    // Fail and warn rules route no row: the run decides what to publish.
    assert_eq!(joined(&ev.kept).num_rows(), 4);
    assert_eq!(ev.quarantine.num_rows(), 0);
    assert_eq!(ev.dropped, 0);
}

#[test]
fn the_outcome_does_not_depend_on_how_the_rows_are_batched() {
    let dir = tempfile::tempdir().unwrap();
    let plan = plan(dir.path(), ROUTING_RULES);
    let bodies = routing_bodies();
    let rows = as_rows(&bodies);
    let whole = evaluate(&plan, vec![raw(10, &rows)], RUN_ID, now()).unwrap();
    // Batches of 2, 3 and 2 rows: on two or more cores, shared out to threads.
    let parts = vec![raw(10, &rows[..2]), raw(12, &rows[2..5]), raw(15, &rows[5..])];
    let split = evaluate(&plan, parts, RUN_ID, now()).unwrap();

    assert_eq!(split.kept.len(), 3, "one kept batch per raw batch");
    assert_eq!(joined(&split.kept), joined(&whole.kept));
    assert_eq!(split.kept_versions, whole.kept_versions);
    assert_eq!(split.quarantine, whole.quarantine);
    assert_eq!(split.quarantine_versions, whole.quarantine_versions);
    assert_eq!(split.dropped, whole.dropped);
    assert_eq!(split.rules, whole.rules);
}

#[test]
fn no_rows_give_empty_outputs_and_rules_that_passed() {
    let dir = tempfile::tempdir().unwrap();
    let plan = plan(dir.path(), ROUTING_RULES);
    let ev = evaluate(&plan, vec![], RUN_ID, now()).unwrap();

    assert_eq!(ev.kept.len(), 1);
    assert_eq!(ev.kept[0].num_rows(), 0);
    assert_eq!(ev.kept[0].schema(), plan.processed_schema);
    assert_eq!(ev.quarantine.num_rows(), 0);
    assert_eq!(ev.dropped, 0);
    let passed: Vec<RuleFigures> = ev.rules.iter().filter(|r| r.outcome == RuleVerdict::Passed).cloned().collect();
    assert_eq!(passed, ev.rules);
    assert_eq!(figures(&ev)[0], ("schema", "quarantine", 0, 0, RuleVerdict::Passed));
    assert_eq!(ev.rules.len(), 4);
}
