//! The erase job against real Delta tables built from real capture files:
//! raw (rows with and without the subject column), processed, quarantine
//! (rule failures and bodies that do not parse), curated tables, the
//! erasure log, and a purge proven by reading every file under the lake.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Duration, TimeZone, Utc};
use deltalake::arrow::array::{Array, AsArray, RecordBatch};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::DataType;
use deltalake::arrow::util::display::array_value_to_string;
use weir::curate::{curate, CurateOptions};
use weir::erase::{erase, EraseOptions, Subject};
use weir::ingest::{ingest, IngestOptions};
use weir::pipeline::{parse_pipeline, LoadedPipeline};
use weir::process::{process, ProcessOptions};
use weir::report::ErasureReport;
use weir::storage::Location;
use weir_testkit::capture::{capture_path, user_event_body, write_capture_file, CaptureEvent, FileSpec, Rng};

const TARGET: &str = "u-3";
const OTHER_TARGET: &str = "u-7";

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The example pipeline's `curate:` section, with its paths in `dir`.
fn example_curate_section(dir: &Path) -> String {
    let text = std::fs::read_to_string(repo().join("pipelines/user_events.yaml")).unwrap();
    let at = text.find("\ncurate:\n").expect("the example declares curated tables");
    std::fs::create_dir_all(dir.join("user_events")).unwrap();
    std::fs::copy(repo().join("pipelines/user_events/user_features.sql"), dir.join("user_events/user_features.sql"))
        .unwrap();
    let end = text[at + 1..].find("\n\n#").map_or(text.len(), |i| at + 1 + i);
    text[at..end].replace("${WEIR_LAKE:-lake}", &dir.join("lake").display().to_string())
}

/// The test pipeline reading bodies with `schema` (a file in `dir`).
fn pipeline(dir: &Path, schema: &str) -> LoadedPipeline {
    let text = format!(
        r#"name: e
source:
  capture:
    url: {capture}
body:
  schema: {schema}
tables:
  raw: {{path: {lake}/raw}}
  processed: {{path: {lake}/processed}}
  quarantine: {{path: {lake}/quarantine}}
  erasure_log: {{path: {lake}/audit/erasure_log}}
process:
  event_time: eventTimestamp
  expectations:
    - {{name: currency_code, accepted_values: {{column: currency, values: [EUR, USD, GBP]}}, action: quarantine}}
  pii:
    key_env: WEIR_TEST_PII_KEY
    rules:
      - {{column: email, action: hash}}
      - {{column: ipAddress, action: mask, mask: ip}}
  dedup:
    key: [eventId]
    lookback_days: 30
{curate}"#,
        capture = dir.join("capture").display(),
        lake = dir.join("lake").display(),
        curate = example_curate_section(dir),
    );
    let file = dir.join(format!("{schema}.yaml"));
    std::fs::write(&file, &text).unwrap();
    parse_pipeline(&file, &text, &|_| None).expect("valid pipeline")
}

/// The real schema, and a copy without the subject mark: raw tables written
/// through it have no subject column (as before the mark existed).
fn schemas(dir: &Path) {
    let text = std::fs::read_to_string(repo().join("schemas/user_event.avsc")).unwrap();
    assert!(text.contains(r#""weir.pii": "subject""#));
    std::fs::write(dir.join("user_event.avsc"), &text).unwrap();
    std::fs::write(dir.join("legacy.avsc"), text.replace(r#""weir.pii": "subject""#, r#""weir.pii": "none""#)).unwrap();
}

fn set_key() {
    std::env::set_var("WEIR_TEST_PII_KEY", "0123456789abcdef-erase-key");
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 8, 0, 0).unwrap()
}

fn edit(body: &[u8], f: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(body).unwrap();
    f(v.as_object_mut().unwrap());
    serde_json::to_vec(&v).unwrap()
}

/// Writes one capture file per partition for `window`.
fn write_window(dir: &Path, window: DateTime<Utc>, bodies: &[Vec<u8>], next_seq: &mut BTreeMap<String, i64>) {
    for p in ["0", "1"] {
        let seq = next_seq.entry(p.to_string()).or_insert(0);
        let events: Vec<CaptureEvent> = bodies
            .iter()
            .enumerate()
            .filter(|(i, _)| (i % 2).to_string() == p)
            .map(|(_, b)| {
                *seq += 1;
                CaptureEvent {
                    sequence_number: *seq - 1,
                    offset: ((*seq - 1) * 512).to_string(),
                    enqueued_time: window + Duration::seconds(*seq % 200),
                    system_properties: vec![],
                    properties: vec![],
                    body: Some(b.clone()),
                }
            })
            .collect();
        let path = dir.join("capture").join(capture_path(p, window));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, write_capture_file(&events, &FileSpec::default()).unwrap()).unwrap();
    }
}

/// A window of events for users u-1..u-12 on several days, with re-sent
/// copies, a currency the rules quarantine, and bodies that do not parse
/// (some naming a target user).
fn window_bodies(rng: &mut Rng, seq: &mut i64) -> Vec<Vec<u8>> {
    let s = |v: &str| serde_json::Value::String(v.into());
    let mut out = Vec::new();
    for i in 0..40 {
        *seq += 1;
        let at = t0() + Duration::days(rng.below(5) as i64) + Duration::minutes(rng.below(600) as i64);
        let user = format!("u-{}", i % 12 + 1);
        let body = edit(&user_event_body(rng, *seq, at), |m| {
            m.insert("userId".into(), s(&user));
        });
        if i % 9 == 0 {
            // Re-sent: two raw rows, one processed row.
            out.push(body.clone());
        }
        out.push(body);
    }
    for user in [TARGET, "u-5"] {
        *seq += 1;
        let at = t0() + Duration::hours(3);
        out.push(edit(&user_event_body(rng, *seq, at), |m| {
            m.insert("userId".into(), s(user));
            m.insert("eventName".into(), s("purchase"));
            m.insert("amount".into(), s("12.50"));
            m.insert("currency".into(), s("JPY"));
        }));
        out.push(format!(r#"{{"eventId": "x-{seq}", "userId": "{user}", "eventName": "cli"#).into_bytes());
    }
    out
}

async fn run_stages(p: &LoadedPipeline, run: &str) {
    let opts = IngestOptions::new(run);
    ingest(p, &opts).await.expect("ingest");
    process(p, &ProcessOptions { dry_run: false, run_id: run.into(), route: None, follow: None })
        .await
        .expect("process");
    curate(p, &CurateOptions { run_id: run.into(), ..Default::default() }).await.expect("curate");
}

async fn table(dir: &Path, path: &str) -> deltalake::DeltaTable {
    let loc = Location::parse(dir.join("lake").join(path).to_str().unwrap()).unwrap();
    weir::delta::open(&loc).await.unwrap().unwrap_or_else(|| panic!("{path} exists"))
}

fn cell(b: &RecordBatch, column: &str, r: usize) -> String {
    let col = b.column_by_name(column).unwrap_or_else(|| panic!("column {column}"));
    if col.is_null(r) {
        return "null".into();
    }
    match col.data_type() {
        DataType::Binary | DataType::BinaryView | DataType::LargeBinary => {
            String::from_utf8_lossy(cast(col, &DataType::Binary).unwrap().as_binary::<i32>().value(r)).into_owned()
        }
        DataType::Utf8View | DataType::Dictionary(_, _) => {
            array_value_to_string(&cast(col, &DataType::Utf8).unwrap(), r).unwrap()
        }
        _ => array_value_to_string(col, r).unwrap(),
    }
}

/// Sorted rows of a table (or of `version`) as text, from the given columns.
async fn rows(dir: &Path, path: &str, version: Option<u64>, columns: &[&str]) -> Vec<Vec<String>> {
    let mut t = table(dir, path).await;
    if let Some(v) = version {
        t.load_version(v).await.unwrap();
    }
    let mut out = Vec::new();
    for b in weir::delta::read_all(&t).await.unwrap() {
        for r in 0..b.num_rows() {
            out.push(columns.iter().map(|c| cell(&b, c, r)).collect::<Vec<_>>());
        }
    }
    out.sort();
    out
}

/// Whether a body belongs to `user`: its userId, or for a body that does not
/// parse, the quoted id anywhere in it.
fn body_of(body: &str, user: &str) -> bool {
    match serde_json::from_str::<serde_json::Value>(body) {
        Ok(v) => v.get("userId").and_then(|u| u.as_str()) == Some(user),
        Err(_) => body.contains(&format!("\"{user}\"")),
    }
}

/// Every data and log file below `dir` that mentions `user`: Parquet files
/// are decoded and every value (strings, bodies, nested values) searched;
/// log JSON is searched as text.
fn files_mentioning(dir: &Path, user: &str) -> Vec<String> {
    use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let quoted = format!("\"{user}\"");
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(p) = todo.pop() {
        if p.is_dir() {
            todo.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        let name = p.display().to_string();
        if name.ends_with(".parquet") {
            let file = std::fs::File::open(&p).unwrap();
            let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
            let mut hit = false;
            for b in reader {
                let b = b.unwrap();
                for col in b.columns() {
                    for r in 0..col.len() {
                        if col.is_null(r) {
                            continue;
                        }
                        let v = match col.data_type() {
                            DataType::Binary | DataType::BinaryView | DataType::LargeBinary => String::from_utf8_lossy(
                                cast(&col.slice(r, 1), &DataType::Binary).unwrap().as_binary::<i32>().value(0),
                            )
                            .into_owned(),
                            _ => array_value_to_string(col, r).unwrap(),
                        };
                        if v == user
                            || v.contains(&quoted)
                            || v.contains(&format!("{user},"))
                            || v.contains(&format!("{user}}}"))
                        {
                            hit = true;
                        }
                    }
                }
            }
            if hit {
                out.push(name);
            }
        } else if name.ends_with(".json") || name.ends_with("_last_checkpoint") {
            let text = std::fs::read_to_string(&p).unwrap();
            // Values appear quoted in actions and single-quoted in predicates.
            if text.contains(&quoted) || text.contains(&format!("'{user}'")) {
                out.push(name);
            }
        }
    }
    out.sort();
    out
}

fn subjects(users: &[&str]) -> Vec<Subject> {
    users.iter().map(|u| Subject { field: "userId".into(), value: u.to_string() }).collect()
}

async fn run_erase(p: &LoadedPipeline, users: &[&str], purge: bool, dry_run: bool) -> ErasureReport {
    let options = EraseOptions { subjects: subjects(users), purge, dry_run, run_id: "erase-1".into() };
    let stages = erase(p, &options).await.expect("erase");
    stages.into_iter().find_map(|s| s.erasure).expect("an erase stage")
}

/// Builds the lake: one window ingested before the subject column existed,
/// then two with it; everything processed and curated.
async fn build(dir: &Path) -> (LoadedPipeline, BTreeMap<String, i64>) {
    set_key();
    schemas(dir);
    let legacy = pipeline(dir, "legacy.avsc");
    let p = pipeline(dir, "user_event.avsc");
    let mut rng = Rng::new(42);
    let mut seq = 0;
    let mut next_seq = BTreeMap::new();
    write_window(dir, t0(), &window_bodies(&mut rng, &mut seq), &mut next_seq);
    let opts = IngestOptions::new("legacy");
    ingest(&legacy, &opts).await.unwrap();
    for w in 1..3 {
        write_window(dir, t0() + Duration::minutes(5 * w), &window_bodies(&mut rng, &mut seq), &mut next_seq);
        run_stages(&p, &format!("r{w}")).await;
    }
    (p, next_seq)
}

/// The rows of every table, for before/after comparisons.
struct Lake {
    raw: Vec<Vec<String>>,
    processed: Vec<Vec<String>>,
    quarantine: Vec<Vec<String>>,
    daily: Vec<Vec<String>>,
    features: Vec<Vec<String>>,
}

async fn lake(dir: &Path) -> Lake {
    Lake {
        raw: rows(dir, "raw", None, &["partition_id", "sequence_number", "body"]).await,
        processed: rows(dir, "processed", None, &["_partition_id", "_sequence_number", "userId", "eventId"]).await,
        quarantine: rows(dir, "quarantine", None, &["_partition_id", "_sequence_number", "body", "reason"]).await,
        daily: rows(dir, "curated/user_daily_activity", None, &["userId", "date", "events", "amount_eur"]).await,
        features: rows(dir, "curated/user_features", None, &["userId", "as_of", "events_30d"]).await,
    }
}

fn without(rows: &[Vec<String>], belongs: impl Fn(&Vec<String>) -> bool) -> Vec<Vec<String>> {
    rows.iter().filter(|r| !belongs(r)).cloned().collect()
}

fn count(rows: &[Vec<String>], belongs: impl Fn(&Vec<String>) -> bool) -> u64 {
    rows.iter().filter(|r| belongs(r)).count() as u64
}

#[expect(clippy::too_many_lines, reason = "one end-to-end scenario, read top to bottom")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erase_deletes_the_subjects_everywhere_logs_them_and_leaves_old_files_until_vacuum() {
    let dir = tempfile::tempdir().unwrap();
    let (p, mut next_seq) = build(dir.path()).await;
    let d = dir.path();
    let before = lake(d).await;
    let raw_version_before = table(d, "raw").await.version().unwrap() as u64;
    let targets = [TARGET, OTHER_TARGET];
    let is_target = |u: &str| targets.contains(&u);
    let raw_of = |r: &Vec<String>| targets.iter().any(|t| body_of(&r[2], t));

    // The subject column: filled for rows ingested with the mark, null for
    // the legacy window (the table gained the column on the next ingest).
    let subject_col = rows(d, "raw", None, &["body", "subject_userId"]).await;
    let legacy = subject_col.iter().filter(|r| r[1] == "null").count();
    assert!(legacy >= 40, "the first window has no subject values: {legacy}");
    for r in subject_col.iter().filter(|r| r[1] != "null") {
        assert!(body_of(&r[0], &r[1]), "subject column {} for body {}", r[1], r[0]);
    }
    let expected_raw = count(&before.raw, raw_of);
    let expected_processed = count(&before.processed, |r| is_target(&r[2]));
    let expected_quarantine = count(&before.quarantine, |r| targets.iter().any(|t| body_of(&r[2], t)));
    assert!(expected_quarantine >= 6, "rule failures and unparsable bodies of u-3: {expected_quarantine}");
    assert!(before.daily.iter().any(|r| r[0] == TARGET) && before.features.iter().any(|r| r[0] == OTHER_TARGET));

    // A dry run counts the same rows and changes nothing.
    let versions = |d: &Path| {
        let d = d.to_path_buf();
        async move {
            let mut v = Vec::new();
            for t in ["raw", "processed", "quarantine", "curated/user_daily_activity", "curated/user_features"] {
                v.push(table(&d, t).await.version());
            }
            v
        }
    };
    let v0 = versions(d).await;
    let dry = run_erase(&p, &targets, false, true).await;
    assert_eq!(versions(d).await, v0, "a dry run commits nothing");
    assert!(!d.join("lake/audit").exists(), "a dry run writes no log");
    let found = |r: &ErasureReport, t: &str| {
        r.tables.iter().find(|x| x.table == t).unwrap_or_else(|| panic!("{t} in {r:#?}")).clone()
    };
    assert_eq!(found(&dry, "raw").rows_found, expected_raw);
    assert_eq!(found(&dry, "processed").rows_found, expected_processed);
    assert_eq!(found(&dry, "quarantine").rows_found, expected_quarantine);
    assert_eq!(found(&dry, "raw").how, "planned");

    let report = run_erase(&p, &targets, false, false).await;
    for (t, n) in [("raw", expected_raw), ("processed", expected_processed), ("quarantine", expected_quarantine)] {
        let e = found(&report, t);
        assert_eq!((e.how.as_str(), e.rows_found, e.rows_deleted), ("delete", n, n), "{e:?}");
        // Physically gone after the first maintain vacuum past 168 h.
        let due = e.unreadable_after.expect("a due time");
        assert!((due - (Utc::now() + Duration::hours(168))).num_minutes().abs() < 5, "{due}");
    }
    for t in ["user_daily_activity", "user_features"] {
        assert_eq!(found(&report, t).how, "recomputed", "{report:#?}");
    }
    assert_eq!(report.raw_version, Some(raw_version_before));
    assert!(!report.purged);

    // Every table holds exactly its other rows.
    let after = lake(d).await;
    assert_eq!(after.raw, without(&before.raw, raw_of));
    assert_eq!(after.processed, without(&before.processed, |r| is_target(&r[2])));
    assert_eq!(after.quarantine, without(&before.quarantine, |r| targets.iter().any(|t| body_of(&r[2], t))));
    assert_eq!(after.daily, without(&before.daily, |r| is_target(&r[0])));
    assert_eq!(after.features, without(&before.features, |r| is_target(&r[0])));

    // The erasure log: one row per subject and table, the subject as a keyed
    // hash only, the deletes counted per subject.
    let log = rows(
        d,
        "audit/erasure_log",
        None,
        &["subject_field", "subject_hash", "table_name", "rows_deleted", "purged", "erasure_id"],
    )
    .await;
    assert_eq!(log.len(), 2 * report.tables.len());
    let raw_deleted: u64 = log.iter().filter(|r| r[2] == "raw").map(|r| r[3].parse::<u64>().unwrap()).sum();
    assert_eq!(raw_deleted, expected_raw);
    let target_raw = log.iter().filter(|r| r[2] == "raw").map(|r| r[3].parse::<u64>().unwrap()).collect::<Vec<_>>();
    assert!(target_raw.iter().all(|n| *n > 0), "both subjects had raw rows: {target_raw:?}");
    let hashes: std::collections::BTreeSet<&String> = log.iter().map(|r| &r[1]).collect();
    assert_eq!(hashes.len(), 2);
    assert!(hashes.iter().all(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit())));
    assert_eq!(files_mentioning(&d.join("lake/audit"), TARGET), Vec::<String>::new());

    // No subject value entered a commit of the erase: the deletes join on
    // lineage keys.
    for t in ["raw", "processed", "quarantine"] {
        let e = found(&report, t);
        let commit = d.join(format!("lake/{t}/_delta_log/{:020}.json", e.version.unwrap()));
        let text = std::fs::read_to_string(&commit).unwrap();
        assert!(
            text.contains("\"MERGE\"")
                && !text.contains(&format!("{TARGET}'"))
                && !text.contains(&format!("{OTHER_TARGET}'")),
            "{commit:?}"
        );
    }

    // Without a purge the old files still hold the rows (time travel).
    assert!(!files_mentioning(&d.join("lake/raw"), TARGET).is_empty());
    let old = rows(d, "raw", Some(raw_version_before), &["partition_id", "sequence_number", "body"]).await;
    assert_eq!(old, before.raw);

    // Later runs do not bring erased rows back; a new event of the subject
    // after the request is a new event.
    let mut rng = Rng::new(7);
    let mut seq = 10_000;
    let fresh = edit(&user_event_body(&mut rng, 1, t0() + Duration::hours(30)), |m| {
        m.insert("userId".into(), serde_json::Value::String(TARGET.into()));
        m.insert("eventName".into(), serde_json::Value::String("click".into()));
    });
    let mut bodies = window_bodies(&mut rng, &mut seq)
        .into_iter()
        .filter(|b| !body_of(&String::from_utf8_lossy(b), TARGET))
        .collect::<Vec<_>>();
    bodies.push(fresh);
    write_window(d, t0() + Duration::minutes(30), &bodies, &mut next_seq);
    run_stages(&p, "after").await;
    let processed = rows(d, "processed", None, &["userId", "eventTimestamp"]).await;
    let target_rows: Vec<_> = processed.iter().filter(|r| r[0] == TARGET).collect();
    assert_eq!(target_rows.len(), 1, "only the event after the erase: {target_rows:?}");
    let daily = rows(d, "curated/user_daily_activity", None, &["userId", "date", "events"]).await;
    assert_eq!(
        daily.iter().filter(|r| r[0] == TARGET).cloned().collect::<Vec<_>>(),
        vec![vec![TARGET.to_string(), "2026-11-02".into(), "1".into()]]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_leaves_no_file_under_any_table_that_holds_the_subject() {
    let dir = tempfile::tempdir().unwrap();
    let (p, mut next_seq) = build(dir.path()).await;
    let d = dir.path();
    let before = lake(d).await;
    let mentioned = files_mentioning(&d.join("lake"), TARGET);
    assert!(
        mentioned.iter().any(|f| f.contains("/raw/")) && mentioned.iter().any(|f| f.contains("/curated/")),
        "{mentioned:#?}"
    );
    // A maintain run first: checkpoints (with file statistics) exist too.
    weir::maintain::maintain(&p, &weir::maintain::MaintainOptions { run_id: "m".into(), ..Default::default() })
        .await
        .unwrap();

    let report = run_erase(&p, &[TARGET], true, false).await;
    assert!(report.purged);
    let raw = report.tables.iter().find(|t| t.table == "raw").unwrap();
    assert!(raw.files_purged > 0 && raw.bytes_purged > 0 && raw.log_files_removed > 0, "{raw:?}");
    for t in &report.tables {
        if t.rows_deleted > 0 || t.how == "recomputed" {
            assert!(t.unreadable_after.unwrap() <= Utc::now(), "{t:?}");
        }
    }
    assert!(report.warnings.iter().any(|w| w.contains("time travel")), "{:?}", report.warnings);

    // Not a byte of the subject in any data, change-data, checkpoint or log file.
    assert_eq!(files_mentioning(&d.join("lake"), TARGET), Vec::<String>::new());
    let after = lake(d).await;
    assert_eq!(after.raw, without(&before.raw, |r| body_of(&r[2], TARGET)));
    assert_eq!(after.processed, without(&before.processed, |r| r[2] == TARGET));
    assert_eq!(after.daily, without(&before.daily, |r| r[0] == TARGET));
    assert_eq!(after.features, without(&before.features, |r| r[0] == TARGET));

    // The purged tables keep working: the stages read on from where they were.
    let mut rng = Rng::new(11);
    let mut seq = 20_000;
    let bodies: Vec<Vec<u8>> = window_bodies(&mut rng, &mut seq)
        .into_iter()
        .filter(|b| !body_of(&String::from_utf8_lossy(b), TARGET))
        .collect();
    write_window(d, t0() + Duration::minutes(45), &bodies, &mut next_seq);
    run_stages(&p, "after").await;
    let grown = lake(d).await;
    assert!(grown.raw.len() > after.raw.len() && grown.processed.len() > after.processed.len());
    assert_eq!(files_mentioning(&d.join("lake"), TARGET), Vec::<String>::new());
    let log = rows(d, "audit/erasure_log", None, &["table_name", "purged"]).await;
    assert!(log.iter().all(|r| r[1] == "true") && !log.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_cannot_be_carried_out_are_refused_before_anything_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _) = build(dir.path()).await;
    let d = dir.path();
    let version = table(d, "raw").await.version();
    let err = |s: Vec<Subject>| {
        let p = p.clone();
        async move { erase(&p, &EraseOptions { subjects: s, run_id: "x".into(), ..Default::default() }).await.unwrap_err() }
    };
    let e = err(vec![Subject { field: "email".into(), value: "a@b.c".into() }]).await;
    assert!(e.to_string().contains("\"email\" is not a subject-key field") && e.to_string().contains("userId"), "{e}");
    assert_eq!(e.class(), weir::ErrorClass::Config);
    let e = err(vec![]).await;
    assert!(e.to_string().contains("no subject"), "{e}");
    std::env::remove_var("WEIR_TEST_PII_KEY");
    let e = err(subjects(&[TARGET])).await;
    set_key();
    assert!(e.to_string().contains("WEIR_TEST_PII_KEY") && !e.to_string().contains("erase-key"), "{e}");
    assert_eq!(table(d, "raw").await.version(), version);
    assert!(!d.join("lake/audit").exists());

    assert_eq!(Subject::parse("userId=u=1", None).unwrap(), Subject { field: "userId".into(), value: "u=1".into() });
    assert_eq!(Subject::parse("u-9", Some("userId")).unwrap().value, "u-9");
    assert!(Subject::parse("u-9", None).is_err());
    assert!(Subject::parse("userId=", None).is_err());
    let file = d.join("subjects.txt");
    std::fs::write(&file, "# erasure requests\nuserId=u-1\n\nu-2\n").unwrap();
    let read = weir::erase::read_subjects_file(&file, Some("userId")).unwrap();
    assert_eq!(read, subjects(&["u-1", "u-2"]));
    let e = weir::erase::read_subjects_file(&file, None).unwrap_err();
    assert!(e.to_string().contains("subjects.txt") && e.to_string().contains("line 4"), "{e}");
}

/// A Delta table the pipeline does not declare, inside the raw table's
/// folder, whose files are old enough for a purge to take: the purge of the
/// raw table deletes none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_spares_a_nested_delta_table_the_pipeline_does_not_know() {
    use std::sync::Arc;

    use deltalake::arrow::array::Int64Array;
    use deltalake::arrow::datatypes::{Field, Schema};
    let dir = tempfile::tempdir().unwrap();
    let (p, _) = build(dir.path()).await;
    let nested = dir.path().join("lake/raw/nested");
    let spec = weir::delta::TableSpec {
        name: "nested".into(),
        description: None,
        schema: Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)])),
        partition_columns: vec![],
    };
    let table = weir::delta::open_or_create(&Location::parse(nested.to_str().unwrap()).unwrap(), &spec).await.unwrap();
    let batch = RecordBatch::try_new(spec.schema.clone(), vec![Arc::new(Int64Array::from(vec![1, 2, 3]))]).unwrap();
    weir::delta::write_with_progress(table, vec![batch], Default::default()).await.unwrap();
    // Old enough that a purge would take any unreferenced file.
    let aged = std::process::Command::new("find")
        .arg(&nested)
        .args(["-exec", "touch", "-d", "10 days ago", "{}", "+"])
        .status()
        .unwrap();
    assert!(aged.success());
    let files = |d: &Path| {
        let mut out = Vec::new();
        let mut todo = vec![d.to_path_buf()];
        while let Some(p) = todo.pop() {
            if p.is_dir() {
                todo.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
            } else {
                out.push(p.strip_prefix(d).unwrap().display().to_string());
            }
        }
        out.sort();
        out
    };
    let before = files(&nested);
    assert!(before.iter().any(|f| f.ends_with(".parquet")) && before.iter().any(|f| f.starts_with("_delta_log")));

    let report = run_erase(&p, &[TARGET], true, false).await;
    assert!(report.purged);
    assert_eq!(files(&nested), before, "the purge deleted none of the nested table's files");
    let table = weir::delta::open(&Location::parse(nested.to_str().unwrap()).unwrap()).await.unwrap().unwrap();
    let rows: usize = weir::delta::read_all(&table).await.unwrap().iter().map(RecordBatch::num_rows).sum();
    assert_eq!(rows, 3);
}

/// A body naming its subject key twice (`"userId": "alice"` first, `"userId":
/// "bob"` last) has no single subject: process quarantines it naming the
/// key, ingest's subject column holds null for it, and erasing either value
/// deletes it from raw and from quarantine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_repeating_its_subject_key_is_quarantined_and_erased_by_any_of_its_values() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    set_key();
    schemas(d);
    let p = pipeline(d, "user_event.avsc");
    let mut rng = Rng::new(5);
    let s = |v: &str| serde_json::Value::String(v.into());
    let body = |rng: &mut Rng, seq: i64, user: &str| {
        edit(&user_event_body(rng, seq, t0() + Duration::minutes(seq)), |m| {
            m.insert("userId".into(), s(user));
            m.insert("currency".into(), s("EUR"));
        })
    };
    let mut repeated = body(&mut rng, 1, "alice");
    assert_eq!(repeated.pop(), Some(b'}'));
    repeated.extend_from_slice(br#","userId":"bob"}"#);
    let bodies = vec![repeated, body(&mut rng, 2, "alice"), body(&mut rng, 3, "bob"), body(&mut rng, 4, "carol")];
    write_window(d, t0(), &bodies, &mut BTreeMap::new());
    run_stages(&p, "r1").await;
    let has = |text: &str, user: &str| text.contains(&format!("\"{user}\""));

    let raw = rows(d, "raw", None, &["body", "subject_userId"]).await;
    assert_eq!(raw.len(), 4);
    let repeated_raw: Vec<_> = raw.iter().filter(|r| has(&r[0], "alice") && has(&r[0], "bob")).collect();
    assert_eq!(repeated_raw.len(), 1, "{raw:#?}");
    assert_eq!(repeated_raw[0][1], "null", "no single subject for a repeated key");
    let quarantine = rows(d, "quarantine", None, &["body", "reason"]).await;
    assert_eq!(quarantine.len(), 1, "{quarantine:#?}");
    assert!(has(&quarantine[0][0], "bob"), "{quarantine:#?}");
    assert_eq!(quarantine[0][1], r#"schema: duplicate key "userId""#);
    let processed = rows(d, "processed", None, &["userId"]).await;
    assert_eq!(processed, vec![vec!["alice".to_string()], vec!["bob".into()], vec!["carol".into()]]);

    let report = run_erase(&p, &["bob"], false, false).await;
    let deleted = |t: &str| report.tables.iter().find(|x| x.table == t).map(|x| x.rows_deleted);
    assert_eq!((deleted("raw"), deleted("processed"), deleted("quarantine")), (Some(2), Some(1), Some(1)));
    let raw = rows(d, "raw", None, &["body"]).await;
    assert!(raw.iter().all(|r| !has(&r[0], "bob")), "raw still holds bob: {raw:#?}");
    assert_eq!(raw.len(), 2);
    assert_eq!(rows(d, "quarantine", None, &["body"]).await, Vec::<Vec<String>>::new());
    let processed = rows(d, "processed", None, &["userId"]).await;
    assert_eq!(processed, vec![vec!["alice".to_string()], vec!["carol".into()]]);
}

/// A subjects file is read up to a bound: `/dev/zero` is refused there
/// with the file named, not read until memory runs out.
#[test]
fn an_endless_subjects_file_is_refused_at_the_bound() {
    let e = weir::erase::read_subjects_file(Path::new("/dev/zero"), Some("userId")).unwrap_err();
    assert_eq!(e.class(), weir::ErrorClass::Config, "{e}");
    assert_eq!(
        e.to_string(),
        "/dev/zero: --subjects-file: more than 67108864 bytes; split the request into several files"
    );
}
