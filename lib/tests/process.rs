//! The process stage against real Delta tables and real capture files with
//! known defects: which events land where, and why.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use chrono::{DateTime, Duration, TimeZone, Utc};
use deltalake::arrow::array::{Array, AsArray, RecordBatch};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType, Int64Type};
use weir::ingest::{ingest, IngestOptions};
use weir::pipeline::{parse_pipeline, LoadedPipeline};
use weir::process::{process, ProcessOptions};
use weir::report::StageReport;
use weir::storage::Location;
use weir_testkit::capture::{capture_path, user_event_body, write_capture_file, CaptureEvent, FileSpec, Rng};

const KEY: &str = "0123456789abcdef-test-key";

/// The example pipeline's rules, pointed at a temporary lake.
fn pipeline(dir: &Path, extra_rules: &str) -> LoadedPipeline {
    let schema = dir.join("user_event.avsc");
    if !schema.exists() {
        std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/user_event.avsc"), &schema).unwrap();
    }
    let text = format!(
        r#"name: t
source:
  capture:
    url: {capture}
body:
  schema: user_event.avsc
tables:
  raw: {{path: {lake}/raw}}
  processed: {{path: {lake}/processed}}
  quarantine: {{path: {lake}/quarantine}}
  quality_metrics: {{path: {lake}/quality}}
process:
  event_time: eventTimestamp
  expectations:
    - {{name: event_id_present, not_null: eventId, action: quarantine}}
    - {{name: user_id_present, not_null: userId, action: quarantine}}
    - name: event_time_plausible
      timeliness: {{column: eventTimestamp, max_delay: 7d, max_ahead: 1h}}
      action: quarantine
    - {{name: currency_code, regex: {{column: currency, pattern: "^[A-Z]{{3}}$"}}, action: quarantine}}
    - {{name: amount_not_negative, sql: "amount IS NULL OR amount >= 0", action: quarantine}}
    - {{name: no_logout, sql: "\"eventName\" <> 'logout'", action: drop}}
    - {{name: session_mostly_present, not_null: sessionId, action: warn, max_failure_rate: 0.05}}
{extra_rules}  pii:
    key_env: WEIR_TEST_PII_KEY
    rules:
      - {{column: email, action: hash}}
      - {{column: ipAddress, action: mask, mask: ip}}
  dedup:
    key: [eventId]
    lookback_days: 7
"#,
        capture = dir.join("capture").display(),
        lake = dir.join("lake").display(),
    );
    std::fs::write(dir.join("p.yaml"), &text).unwrap();
    parse_pipeline(&dir.join("p.yaml"), &text, &|_| None).expect("valid pipeline")
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 8, 0, 0).unwrap()
}

/// One event body and what the process stage must do with it.
#[derive(Clone)]
struct Case {
    body: Option<Vec<u8>>,
    /// None: lands in processed. Some(rules): quarantined with these rules.
    quarantined: Option<Vec<&'static str>>,
    dropped: bool,
}

fn valid(seed: u64, at: DateTime<Utc>) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    // The generator mixes the sequence number into the seed: a fixed one
    // keeps bodies (and event ids) distinct per seed.
    let mut body = user_event_body(&mut rng, 0, at);
    // Logout events are dropped by a rule; keep valid cases unambiguous.
    while String::from_utf8_lossy(&body).contains("\"logout\"") {
        body = user_event_body(&mut rng, 0, at);
    }
    body
}

fn edit(body: &[u8], f: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(body).unwrap();
    f(v.as_object_mut().unwrap());
    serde_json::to_vec(&v).unwrap()
}

fn cases(at: DateTime<Utc>) -> Vec<Case> {
    let ok = |b: Vec<u8>| Case { body: Some(b), quarantined: None, dropped: false };
    let bad = |b: Option<Vec<u8>>, rules: Vec<&'static str>| Case { body: b, quarantined: Some(rules), dropped: false };
    let s = |v: &str| serde_json::Value::String(v.to_string());
    let mut out: Vec<Case> = (0..40).map(|i| ok(valid(1000 + i, at))).collect();
    out.push(bad(Some(b"{\"eventId\": \"x".to_vec()), vec!["schema"]));
    out.push(bad(None, vec!["schema"]));
    out.push(bad(
        Some(edit(&valid(1, at), |m| {
            m.remove("userId");
        })),
        vec!["schema"],
    ));
    out.push(bad(
        Some(edit(&valid(2, at), |m| {
            m.insert("eventTimestamp".into(), s("yesterday"));
        })),
        vec!["schema"],
    ));
    out.push(bad(
        Some(edit(&valid(3, at), |m| {
            m.insert("eventName".into(), s("teleport"));
        })),
        vec!["schema"],
    ));
    out.push(bad(
        Some(edit(&valid(4, at), |m| {
            m.insert("amount".into(), s("twelve"));
            m.insert("currency".into(), s("EUR"));
        })),
        vec!["schema"],
    ));
    out.push(bad(
        Some(edit(&valid(5, at), |m| {
            m.insert("eventName".into(), s("purchase"));
            m.insert("amount".into(), s("12.50"));
            m.insert("currency".into(), s("eur"));
        })),
        vec!["currency_code"],
    ));
    out.push(bad(
        Some(edit(&valid(6, at), |m| {
            m.insert("eventName".into(), s("purchase"));
            m.insert("amount".into(), s("-3.00"));
            m.insert("currency".into(), s("usd"));
        })),
        vec!["currency_code", "amount_not_negative"],
    ));
    out.push(bad(
        Some(edit(&valid(7, at), |m| {
            m.insert("eventTimestamp".into(), s("2026-10-01T08:00:00Z"));
        })),
        vec!["event_time_plausible"],
    ));
    // Unknown fields are rescued, not dropped, and do not fail the row.
    out.push(ok(edit(&valid(8, at), |m| {
        m.insert("referrerCampaign".into(), s("autumn"));
    })));
    out.push(Case {
        body: Some(edit(&valid(9, at), |m| {
            m.insert("eventName".into(), s("logout"));
        })),
        quarantined: None,
        dropped: true,
    });
    out
}

fn event_id(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get("eventId")?.as_str().map(str::to_string)
}

/// Writes one capture file per partition with `bodies` spread over them.
fn write_window(dir: &Path, window: DateTime<Utc>, bodies: &[Option<Vec<u8>>], next_seq: &mut BTreeMap<String, i64>) {
    for p in ["0", "1"] {
        let mine: Vec<&Option<Vec<u8>>> =
            bodies.iter().enumerate().filter(|(i, _)| (i % 2).to_string() == p).map(|(_, b)| b).collect();
        let seq = next_seq.entry(p.to_string()).or_insert(0);
        let events: Vec<CaptureEvent> = mine
            .into_iter()
            .map(|b| {
                *seq += 1;
                CaptureEvent {
                    sequence_number: *seq - 1,
                    offset: ((*seq - 1) * 512).to_string(),
                    enqueued_time: window + Duration::seconds(*seq),
                    system_properties: vec![],
                    properties: vec![],
                    body: b.clone(),
                }
            })
            .collect();
        let path = dir.join("capture").join(capture_path(p, window));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, write_capture_file(&events, &FileSpec::default()).unwrap()).unwrap();
    }
}

async fn run_all(p: &LoadedPipeline, run_id: &str) -> StageReport {
    let opts = IngestOptions::new(run_id);
    ingest(p, &opts).await.expect("ingest");
    process(p, &ProcessOptions { dry_run: false, run_id: run_id.into(), route: None, follow: None })
        .await
        .expect("process")
}

async fn table(dir: &Path, name: &str) -> deltalake::DeltaTable {
    let loc = Location::parse(dir.join("lake").join(name).to_str().unwrap()).unwrap();
    weir::delta::open(&loc).await.unwrap().unwrap_or_else(|| panic!("{name} exists"))
}

async fn rows(dir: &Path, name: &str) -> Vec<RecordBatch> {
    weir::delta::read_all(&table(dir, name).await).await.unwrap()
}

fn strings(batches: &[RecordBatch], column: &str) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for b in batches {
        let c = cast(b.column_by_name(column).unwrap(), &DataType::Utf8).unwrap();
        let c = c.as_string::<i32>();
        out.extend((0..c.len()).map(|i| c.is_valid(i).then(|| c.value(i).to_string())));
    }
    out
}

/// (partition, sequence) → sorted rule names, for the quarantine table.
fn quarantined(batches: &[RecordBatch]) -> BTreeMap<(String, i64), Vec<String>> {
    let mut out = BTreeMap::new();
    for b in batches {
        let p = cast(b.column_by_name("_partition_id").unwrap(), &DataType::Utf8).unwrap();
        let s = b.column_by_name("_sequence_number").unwrap().as_primitive::<Int64Type>();
        let rules = b.column_by_name("rules").unwrap().as_list::<i32>();
        for i in 0..b.num_rows() {
            let r = rules.value(i);
            let r = cast(&r, &DataType::Utf8).unwrap();
            let mut names: Vec<String> = r.as_string::<i32>().iter().flatten().map(str::to_string).collect();
            names.sort();
            out.insert((p.as_string::<i32>().value(i).to_string(), s.value(i)), names);
        }
    }
    out
}

fn set_key() {
    // Every test in this file sets the same value (nextest runs each test in
    // its own process anyway).
    std::env::set_var("WEIR_TEST_PII_KEY", KEY);
}

#[tokio::test]
async fn golden_processed_and_quarantine_hold_exactly_the_right_events() {
    set_key();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = pipeline(d, "");
    let cases = cases(t0());
    let mut bodies: Vec<Option<Vec<u8>>> = cases.iter().map(|c| c.body.clone()).collect();
    // Two re-sends of valid events in the same run, with new sequence numbers.
    bodies.push(cases[0].body.clone());
    bodies.push(cases[5].body.clone());
    let mut seq = BTreeMap::new();
    write_window(d, t0(), &bodies, &mut seq);
    let report = run_all(&p, "run-1").await;

    // Where each body landed, by (partition, sequence).
    let mut expect_quarantine = BTreeMap::new();
    let mut expect_ids = BTreeSet::new();
    let mut counters: BTreeMap<String, i64> = BTreeMap::new();
    for (i, body) in bodies.iter().enumerate() {
        let part = (i % 2).to_string();
        let n = counters.entry(part.clone()).or_insert(0);
        let key = (part, *n);
        *n += 1;
        let case = cases.get(i);
        match case.and_then(|c| c.quarantined.clone()) {
            Some(mut rules) => {
                rules.sort();
                expect_quarantine.insert(key, rules.iter().map(|r| r.to_string()).collect::<Vec<_>>());
            }
            None if case.is_some_and(|c| c.dropped) => {}
            None => {
                expect_ids.insert(event_id(body.as_ref().unwrap()).unwrap());
            }
        }
    }

    assert_eq!(expect_ids.len(), 41, "the fixture's valid events are distinct");
    assert_eq!(expect_quarantine.len(), 9);
    let processed = rows(d, "processed").await;
    let ids = strings(&processed, "eventId");
    let unique: BTreeSet<String> = ids.iter().flatten().cloned().collect();
    assert_eq!(ids.len(), unique.len(), "no duplicates in processed");
    assert_eq!(unique, expect_ids, "processed holds exactly the valid, unique events");
    assert_eq!(quarantined(&rows(d, "quarantine").await), expect_quarantine);

    // PII: email is an HMAC token, the IP lost its last octet.
    for e in strings(&processed, "email").into_iter().flatten() {
        assert!(e.len() == 64 && e.chars().all(|c| c.is_ascii_hexdigit()), "hashed email {e}");
    }
    for ip in strings(&processed, "ipAddress").into_iter().flatten() {
        assert!(ip.ends_with(".0"), "masked ip {ip}");
    }
    // The unknown field is rescued.
    let rescued: Vec<String> = strings(&processed, "_rescued").into_iter().flatten().collect();
    assert_eq!(rescued.len(), 1);
    assert!(rescued[0].contains("referrerCampaign") && rescued[0].contains("autumn"), "{}", rescued[0]);

    let q = report.quality.as_ref().unwrap();
    assert_eq!(q.duplicates_dropped, 2);
    assert_eq!(q.events_dropped, 1);
    assert_eq!(q.events_quarantined, expect_quarantine.len() as u64);
    assert_eq!(report.events_written, expect_ids.len() as u64);
    assert!(report.problems.iter().all(|p| !p.blocking), "{:?}", report.problems);

    // The metrics table has one row per rule (plus schema and dedup).
    let metrics = rows(d, "quality").await;
    let rules: BTreeSet<String> = strings(&metrics, "rule").into_iter().flatten().collect();
    assert!(rules.contains("schema") && rules.contains("dedup") && rules.contains("currency_code"), "{rules:?}");

    // A rerun changes nothing: no new versions anywhere.
    let versions = |names: &'static [&'static str]| async move {
        let mut v = Vec::new();
        for n in names {
            v.push(table(d, n).await.version());
        }
        v
    };
    let before = versions(&["processed", "quarantine", "quality"]).await;
    let again = run_all(&p, "run-2").await;
    assert_eq!(again.events_read, 0);
    assert_eq!(versions(&["processed", "quarantine", "quality"]).await, before);

    // A re-send arriving in a later run is dropped against the table; a new
    // event lands; a window with only duplicates still records progress.
    let fresh = valid(5000, t0() + Duration::minutes(5));
    write_window(d, t0() + Duration::minutes(5), &[cases[1].body.clone(), Some(fresh.clone())], &mut seq);
    let third = run_all(&p, "run-3").await;
    assert_eq!(third.quality.as_ref().unwrap().duplicates_dropped, 1);
    assert_eq!(third.events_written, 1);
    let ids: BTreeSet<String> = strings(&rows(d, "processed").await, "eventId").into_iter().flatten().collect();
    expect_ids.insert(event_id(&fresh).unwrap());
    assert_eq!(ids, expect_ids);

    write_window(d, t0() + Duration::minutes(10), &[cases[2].body.clone()], &mut seq);
    let before = table(d, "processed").await.version().unwrap();
    let fourth = run_all(&p, "run-4").await;
    assert_eq!(fourth.events_written, 0);
    let processed_table = table(d, "processed").await;
    assert_eq!(processed_table.version().unwrap(), before + 1, "an empty output still commits progress");
    let raw_version = table(d, "raw").await.version().unwrap() as i64;
    assert_eq!(weir::delta::progress(&processed_table, "weir/t/process").await.unwrap(), Some(raw_version));
}

#[tokio::test]
async fn a_fail_rule_publishes_nothing_and_names_the_rule() {
    set_key();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = pipeline(d, "    - {name: no_search, sql: \"\\\"eventName\\\" <> 'search'\", action: fail}\n");
    let mut bodies: Vec<Option<Vec<u8>>> = (0..30).map(|i| Some(valid(i, t0()))).collect();
    for i in [3, 17] {
        bodies[i] = Some(edit(bodies[i].as_ref().unwrap(), |m| {
            m.insert("eventName".into(), serde_json::Value::String("search".into()));
        }));
    }
    let mut seq = BTreeMap::new();
    write_window(d, t0(), &bodies, &mut seq);
    let report = run_all(&p, "run-1").await;
    let blocking: Vec<_> = report.problems.iter().filter(|p| p.blocking).collect();
    assert_eq!(blocking.len(), 1, "{:?}", report.problems);
    assert_eq!(blocking[0].kind, "expectation_failed");
    assert!(
        blocking[0].message.contains("no_search") && blocking[0].message.contains("eventId="),
        "{}",
        blocking[0].message
    );
    assert_eq!(report.events_written, 0);
    assert!(rows(d, "processed").await.iter().all(|b| b.num_rows() == 0), "nothing published");
    assert!(rows(d, "quarantine").await.iter().all(|b| b.num_rows() == 0), "nothing quarantined either");
    let processed_table = table(d, "processed").await;
    // Progress stops before the raw version holding the failing rows.
    let raw_version = table(d, "raw").await.version().unwrap() as i64;
    let progress = weir::delta::progress(&processed_table, "weir/t/process").await.unwrap();
    assert!(progress.is_none_or(|p| p < raw_version), "{progress:?} < {raw_version}");
    // The failure is on record in the metrics table, as not published.
    let metrics = rows(d, "quality").await;
    let outcomes: Vec<(Option<String>, Option<String>)> =
        strings(&metrics, "rule").into_iter().zip(strings(&metrics, "outcome")).collect();
    assert!(outcomes.contains(&(Some("no_search".into()), Some("failed".into()))), "{outcomes:?}");
}

#[tokio::test]
async fn adding_an_optional_field_evolves_the_table_and_breaking_changes_are_refused() {
    set_key();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = pipeline(d, "");
    let mut seq = BTreeMap::new();
    write_window(d, t0(), &[Some(valid(1, t0())), Some(valid(2, t0()))], &mut seq);
    run_all(&p, "run-1").await;

    // Add an optional field: the next run adds a nullable column.
    let avsc = d.join("user_event.avsc");
    let original = std::fs::read_to_string(&avsc).unwrap();
    let mut schema: serde_json::Value = serde_json::from_str(&original).unwrap();
    schema["fields"].as_array_mut().unwrap().push(serde_json::json!(
        {"name": "appVersion", "type": ["null", "string"], "default": null}
    ));
    std::fs::write(&avsc, serde_json::to_string_pretty(&schema).unwrap()).unwrap();
    let p = pipeline(d, "");
    assert!(weir::process::check_table_schema(&p).await.unwrap().is_empty());
    let newer = edit(&valid(3, t0()), |m| {
        m.insert("appVersion".into(), serde_json::json!("2.1.0"));
    });
    write_window(d, t0() + Duration::minutes(5), &[Some(newer)], &mut seq);
    run_all(&p, "run-2").await;
    let versions: Vec<Option<String>> = strings(&rows(d, "processed").await, "appVersion");
    assert_eq!(versions.iter().filter(|v| v.is_none()).count(), 2, "older rows read null");
    assert_eq!(versions.iter().flatten().collect::<Vec<_>>(), ["2.1.0"]);

    // A type change is refused by validation, with what changed and what to do.
    let mut broken = schema.clone();
    for f in broken["fields"].as_array_mut().unwrap() {
        if f["name"] == "sessionId" {
            f["type"] = serde_json::json!(["null", "long"]);
        }
    }
    std::fs::write(&avsc, serde_json::to_string_pretty(&broken).unwrap()).unwrap();
    let p = pipeline(d, "");
    let problems = weir::process::check_table_schema(&p).await.unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].1.contains("sessionId") && problems[0].1.contains("changed type"), "{problems:?}");
    let err = process(&p, &ProcessOptions { dry_run: false, run_id: "run-3".into(), route: None, follow: None })
        .await
        .unwrap_err();
    assert_eq!(err.class(), weir::ErrorClass::Config);

    // A removed field the table has is refused too.
    let mut removed = schema.clone();
    removed["fields"].as_array_mut().unwrap().retain(|f| f["name"] != "properties");
    std::fs::write(&avsc, serde_json::to_string_pretty(&removed).unwrap()).unwrap();
    let problems = weir::process::check_table_schema(&pipeline(d, "")).await.unwrap();
    assert!(problems.iter().any(|p| p.1.contains("\"properties\" was removed")), "{problems:?}");
}

#[tokio::test]
async fn a_missing_pii_key_stops_before_anything_runs_and_names_only_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let text = std::fs::read_to_string({
        pipeline(d, "");
        d.join("p.yaml")
    })
    .unwrap()
    .replace("WEIR_TEST_PII_KEY", "WEIR_TEST_PII_KEY_UNSET");
    let p = parse_pipeline(&d.join("p.yaml"), &text, &|_| None).unwrap();
    let err = process(&p, &ProcessOptions { dry_run: false, run_id: "r".into(), route: None, follow: None })
        .await
        .unwrap_err();
    assert_eq!(err.class(), weir::ErrorClass::Config);
    assert!(err.to_string().contains("WEIR_TEST_PII_KEY_UNSET"), "{err}");
    assert!(!d.join("lake/processed").exists(), "nothing created");
}

#[tokio::test]
async fn keep_latest_replaces_the_stored_copy_and_the_change_feed_shows_the_update() {
    set_key();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    pipeline(d, "");
    let text = std::fs::read_to_string(d.join("p.yaml"))
        .unwrap()
        .replace("key: [eventId]\n", "key: [eventId]\n    keep: latest\n");
    let p = parse_pipeline(&d.join("p.yaml"), &text, &|_| None).unwrap();
    let first = valid(1, t0());
    let other = valid(2, t0());
    let mut seq = BTreeMap::new();
    write_window(d, t0(), &[Some(first.clone()), Some(other.clone())], &mut seq);
    let report = run_all(&p, "run-1").await;
    assert_eq!(report.events_written, 2);

    // The same event again, corrected, enqueued later: it replaces the first.
    let corrected = edit(&first, |m| {
        m.insert("sessionId".into(), serde_json::json!("s-corrected"));
    });
    write_window(d, t0() + Duration::minutes(5), &[Some(corrected.clone())], &mut seq);
    let report = run_all(&p, "run-2").await;
    assert_eq!(report.events_written, 1);
    let processed = rows(d, "processed").await;
    let ids = strings(&processed, "eventId");
    let sessions = strings(&processed, "sessionId");
    assert_eq!(ids.len(), 2, "still one row per event");
    let id = event_id(&first).unwrap();
    let row = ids.iter().position(|i| i.as_deref() == Some(id.as_str())).unwrap();
    assert_eq!(sessions[row].as_deref(), Some("s-corrected"));

    // Consumers see the replacement as an update in the change feed.
    let t = table(d, "processed").await;
    let ctx = deltalake::datafusion::prelude::SessionContext::new();
    let provider =
        deltalake::delta_datafusion::DeltaCdfTableProvider::try_new(t.scan_cdf().with_starting_version(0)).unwrap();
    ctx.register_table("c", std::sync::Arc::new(provider)).unwrap();
    let changes = ctx.sql("SELECT _change_type FROM c").await.unwrap().collect().await.unwrap();
    let mut kinds: Vec<String> = strings(&changes, "_change_type").into_iter().flatten().collect();
    kinds.sort();
    assert_eq!(kinds, ["insert", "insert", "update_postimage", "update_preimage"]);

    // A rerun changes nothing.
    let before = table(d, "processed").await.version();
    run_all(&p, "run-3").await;
    assert_eq!(table(d, "processed").await.version(), before);
}

#[test]
fn a_personal_field_without_a_pii_rule_is_a_validation_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    pipeline(d, "");
    let text =
        std::fs::read_to_string(d.join("p.yaml")).unwrap().replace("      - {column: email, action: hash}\n", "");
    let err = parse_pipeline(&d.join("p.yaml"), &text, &|_| None).unwrap_err();
    let shown = err.to_string();
    assert!(shown.contains("process.pii") && shown.contains("\"email\"") && shown.contains("no PII rule"), "{shown}");
}

/// Appended raw versions are read from the files they add, any other version
/// through the change feed. A delete between two ingests rewrites part of a
/// raw file: its new file must not be taken for inserted rows (they would
/// come back as rows already written), and the rows it deleted had been
/// inserted by the earlier version, so they are processed as the change feed
/// says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_version_that_deleted_rows_adds_no_rows_to_process() {
    set_key();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = pipeline(d, "");
    let mut seq = BTreeMap::new();
    let first: Vec<Option<Vec<u8>>> = (0..40).map(|i| Some(valid(i, t0()))).collect();
    write_window(d, t0(), &first, &mut seq);
    let opts = IngestOptions::new("i-1");
    ingest(&p, &opts).await.expect("ingest");

    let raw = table(d, "raw").await;
    let (raw, metrics) = raw.delete().with_predicate("partition_id = '0' AND sequence_number < 5").await.unwrap();
    assert_eq!(metrics.num_deleted_rows, Some(5));
    let delete_version = raw.version().unwrap();
    let log = std::fs::read_to_string(d.join(format!("lake/raw/_delta_log/{delete_version:020}.json"))).unwrap();
    assert!(log.contains("\"remove\"") && log.contains("\"add\""), "the delete rewrote a file: {log}");

    let second: Vec<Option<Vec<u8>>> = (100..140).map(|i| Some(valid(i, t0() + Duration::minutes(5)))).collect();
    write_window(d, t0() + Duration::minutes(5), &second, &mut seq);
    let report = run_all(&p, "run-1").await;

    let quality = report.quality.as_ref().unwrap();
    assert_eq!(report.events_read, 80, "every inserted raw row once, none from the rewrite: {report:#?}");
    assert_eq!((quality.already_written, quality.duplicates_dropped, quality.events_quarantined), (0, 0, 0));
    let ids: Vec<String> = strings(&rows(d, "processed").await, "eventId").into_iter().flatten().collect();
    let expected: BTreeSet<String> = first.iter().chain(&second).filter_map(|b| event_id(b.as_deref()?)).collect();
    assert_eq!(ids.len(), 80);
    assert_eq!(ids.into_iter().collect::<BTreeSet<_>>(), expected);
}

/// Fields the schema does not know land in `_rescued` as a JSON object of
/// their raw JSON values (`{"TEMP_07":21.5}`: the number itself, not a
/// string holding it), and rules read them with the JSON functions.
/// `json_get_float` reads a JSON number or a string holding one; anything
/// else (`"ERR"`, `null`, an object, an absent key) is NULL.
#[tokio::test]
async fn a_rule_over_rescued_fields_with_json_functions_quarantines_exactly_the_rows_over_the_limit() {
    set_key();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = pipeline(
        d,
        "    - {name: temp_07_below_100, sql: \"json_get_float(_rescued, 'TEMP_07') IS NULL OR json_get_float(_rescued, 'TEMP_07') < 100\", action: quarantine}\n    - {name: temp_07_sent, sql: \"json_contains(_rescued, 'TEMP_07')\", action: warn}\n",
    );
    // (TEMP_07 as sent, or absent; quarantined by temp_07_below_100)
    let cases: Vec<(Option<&str>, bool)> = vec![
        (Some("21.5"), false),
        (Some("150"), true),
        (Some("100"), true),
        (Some("100.0"), true),
        (Some("99.99"), false),
        (Some("1e3"), true),
        (Some("-1e3"), false),
        (Some("\"150.5\""), true),
        (Some("\"ERR\""), false),
        (Some("null"), false),
        (Some("{\"v\": 150}"), false),
        (Some("[150]"), false),
        (None, false),
    ];
    let bodies: Vec<Option<Vec<u8>>> = cases
        .iter()
        .enumerate()
        .map(|(i, (temp, _))| {
            let body = edit(&valid(7000 + i as u64, t0()), |m| {
                if temp.is_some() {
                    m.insert("TEMP_07".into(), serde_json::Value::String("<temp>".into()));
                }
            });
            // The value's text exactly as given (`1e3` stays `1e3`).
            let text = String::from_utf8(body).unwrap().replace("\"<temp>\"", temp.unwrap_or_default());
            Some(text.into_bytes())
        })
        .collect();
    let mut seq = BTreeMap::new();
    write_window(d, t0(), &bodies, &mut seq);
    run_all(&p, "run-1").await;

    let mut expect_quarantine = BTreeMap::new();
    let mut expect_kept = BTreeSet::new();
    for (i, (body, (_, over))) in bodies.iter().zip(&cases).enumerate() {
        let key = ((i % 2).to_string(), (i / 2) as i64);
        if *over {
            expect_quarantine.insert(key, vec!["temp_07_below_100".to_string()]);
        } else {
            expect_kept.insert(event_id(body.as_ref().unwrap()).unwrap());
        }
    }
    assert_eq!(quarantined(&rows(d, "quarantine").await), expect_quarantine);
    let processed = rows(d, "processed").await;
    let ids: BTreeSet<String> = strings(&processed, "eventId").into_iter().flatten().collect();
    assert_eq!(ids, expect_kept);
    // The representation the functions read: the value as sent, as JSON.
    let rescued: BTreeSet<String> = strings(&processed, "_rescued").into_iter().flatten().collect();
    for kept in [
        r#"{"TEMP_07":21.5}"#,
        r#"{"TEMP_07":-1e3}"#,
        r#"{"TEMP_07":"ERR"}"#,
        r#"{"TEMP_07":null}"#,
        r#"{"TEMP_07":{"v": 150}}"#,
    ] {
        assert!(rescued.contains(kept), "{kept} in {rescued:?}");
    }
    // The warn rule flagged the one kept row without TEMP_07 (and the rows
    // whose _rescued is absent: none here).
    let metrics = rows(d, "quality").await;
    let failed: Vec<(Option<String>, Option<String>)> =
        strings(&metrics, "rule").into_iter().zip(strings(&metrics, "rows_failed")).collect();
    assert!(failed.contains(&(Some("temp_07_sent".into()), Some("1".into()))), "{failed:?}");
    assert!(failed.contains(&(Some("temp_07_below_100".into()), Some("5".into()))), "{failed:?}");
}

/// The example pipeline with ingest committing every `commit_events`
/// events, so one run writes many raw versions.
fn pipeline_in_small_commits(dir: &Path, commit_events: u64) -> LoadedPipeline {
    pipeline(dir, "");
    let text = std::fs::read_to_string(dir.join("p.yaml")).unwrap();
    let text = text.replacen("body:\n", &format!("ingest:\n  commit_events: {commit_events}\nbody:\n"), 1);
    std::fs::write(dir.join("p.yaml"), &text).unwrap();
    parse_pipeline(&dir.join("p.yaml"), &text, &|_| None).expect("valid pipeline")
}

/// What the process stage's tables hold, compared between two lakes:
/// processed rows by lineage, and the quarantine's rules by lineage.
async fn outcome(dir: &Path) -> (Vec<Vec<Option<String>>>, BTreeMap<(String, i64), Vec<String>>) {
    let processed = rows(dir, "processed").await;
    let columns = ["_partition_id", "_sequence_number", "eventId", "userId", "email", "ipAddress", "event_date"];
    let values: Vec<Vec<Option<String>>> = columns.iter().map(|c| strings(&processed, c)).collect();
    let mut rows: Vec<Vec<Option<String>>> =
        (0..values[0].len()).map(|i| values.iter().map(|v| v[i].clone()).collect()).collect();
    rows.sort();
    (rows, quarantined(&self::rows(dir, "quarantine").await))
}

#[tokio::test]
async fn weir_run_takes_ingest_rows_from_memory_and_writes_what_the_stages_write_one_after_the_other() {
    set_key();
    let at = t0();
    let cases = cases(at);
    let bodies: Vec<Option<Vec<u8>>> = cases.iter().map(|c| c.body.clone()).collect();
    // Later windows re-send events of window 1 (duplicates against the
    // table) and carry new ones, some sent twice within the run.
    let mut later: Vec<Option<Vec<u8>>> = (0..30).map(|i| Some(valid(5000 + i, at))).collect();
    later.extend(bodies[..6].iter().cloned());
    later.extend(later[..4].to_vec());
    let (fused, apart) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for dir in [fused.path(), apart.path()] {
        let p = pipeline_in_small_commits(dir, 15);
        let mut seq = BTreeMap::new();
        write_window(dir, at, &bodies, &mut seq);
        // Window 1 is ingested only: a backlog raw holds before the run.
        let opts = IngestOptions::new("i-1");
        ingest(&p, &opts).await.expect("ingest");
        // Three windows of two files: six raw commits.
        for (i, part) in later.chunks(later.len().div_ceil(3)).enumerate() {
            write_window(dir, at + Duration::minutes(5 * (i as i64 + 1)), part, &mut seq);
        }
    }

    // One lake: `weir run` (ingest and process at once).
    let p = pipeline_in_small_commits(fused.path(), 15);
    let mut stages = Vec::new();
    weir::run::run_stages(weir::run::Job::Run, &weir::run::JobRequest::default(), &p, "run-2", &mut stages)
        .await
        .expect("run");
    let [ingested, processed] = &stages[..] else { panic!("ingest and process reports, got {}", stages.len()) };
    // The other: ingest, then process.
    let q = pipeline_in_small_commits(apart.path(), 15);
    let apart_ingest = IngestOptions::new("run-2");
    let apart_ingested = ingest(&q, &apart_ingest).await.expect("ingest");
    let apart_processed =
        process(&q, &ProcessOptions { dry_run: false, run_id: "run-2".into(), route: None, follow: None })
            .await
            .expect("process");

    // The later windows' events came from memory, window 1's backlog from
    // the table.
    let new_events = later.len() as u64;
    assert_eq!(ingested.events_written, new_events);
    assert!(
        ingested.tables[0].versions_written.len() >= 2,
        "ingest committed several raw versions: {:?}",
        ingested.tables
    );
    assert_eq!(processed.events_read, (bodies.len() + later.len()) as u64);
    assert_eq!(processed.events_from_ingest, new_events);
    assert_eq!(apart_processed.events_from_ingest, 0);
    assert_eq!(processed.events_written, apart_processed.events_written);
    assert_eq!(ingested.tables[0].versions_written, apart_ingested.tables[0].versions_written);
    let (q1, q2) = (processed.quality.as_ref().unwrap(), apart_processed.quality.as_ref().unwrap());
    assert_eq!(
        (q1.events_quarantined, q1.duplicates_dropped, q1.already_written),
        (q2.events_quarantined, q2.duplicates_dropped, q2.already_written)
    );
    assert!(q1.duplicates_dropped + q1.already_written >= 10, "the re-sends were deduplicated");

    let (fused_rows, fused_quarantine) = outcome(fused.path()).await;
    let (apart_rows, apart_quarantine) = outcome(apart.path()).await;
    assert_eq!(fused_rows, apart_rows);
    assert_eq!(fused_quarantine, apart_quarantine);
    let ids: Vec<&Option<String>> = fused_rows.iter().map(|r| &r[2]).collect();
    assert_eq!(ids.len(), ids.iter().collect::<BTreeSet<_>>().len(), "no duplicates in processed");
    // Every output table's progress marker names the raw table's version.
    let raw_version = table(fused.path(), "raw").await.version().unwrap();
    for name in ["processed", "quarantine"] {
        let t = table(fused.path(), name).await;
        assert_eq!(weir::delta::progress(&t, "weir/t/process").await.unwrap(), Some(raw_version as i64), "{name}");
    }
}
