//! The curate stage against real Delta tables built from real capture files:
//! incremental runs equal a full recompute, the change feed shows exactly
//! what moved, point-in-time lookups never see the future.
//!
//! The models are the example pipeline's own (`pipelines/user_events.yaml`),
//! so what is tested is what users copy.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Duration, TimeZone, Utc};
use deltalake::arrow::array::{Array, AsArray, RecordBatch, StringArray, TimestampMicrosecondArray};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType, Field, Schema};
use deltalake::arrow::util::display::array_value_to_string;
use std::sync::Arc;
use weir::capture::PartitionSet;
use weir::curate::{curate, CurateOptions};
use weir::ingest::{ingest, IngestOptions};
use weir::pipeline::{parse_pipeline, LoadedPipeline};
use weir::process::{process, ProcessOptions};
use weir::report::plan::{SourcePlan, StagePlan};
use weir::report::ModelReport;
use weir::storage::Location;
use weir_testkit::capture::{capture_path, user_event_body, write_capture_file, CaptureEvent, FileSpec, Rng};

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
    // Up to the next top-level section (its comment block included).
    let end = text[at + 1..].find("\n\n#").map_or(text.len(), |i| at + 1 + i);
    text[at..end].replace("${WEIR_LAKE:-lake}", &dir.join("lake").display().to_string())
}

/// Events across many days (no timeliness rule), later copies win.
fn pipeline(dir: &Path, curate_section: &str) -> LoadedPipeline {
    std::fs::copy(repo().join("schemas/user_event.avsc"), dir.join("user_event.avsc")).unwrap();
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
    keep: latest
    lookback_days: 30
{curate_section}"#,
        capture = dir.join("capture").display(),
        lake = dir.join("lake").display(),
    );
    std::fs::write(dir.join("p.yaml"), &text).unwrap();
    parse_pipeline(&dir.join("p.yaml"), &text, &|_| None).expect("valid pipeline")
}

fn set_key() {
    std::env::set_var("WEIR_TEST_PII_KEY", "0123456789abcdef-test-key");
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

/// A round of events: fresh ones on random days for a dozen users, and
/// re-sends of earlier ones that move them to another day, user or amount.
fn round(rng: &mut Rng, seq: &mut i64, sent: &mut Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let s = |v: String| serde_json::Value::String(v);
    let mut out = Vec::new();
    for _ in 0..(30 + rng.below(30)) {
        *seq += 1;
        let resend = !sent.is_empty() && rng.below(4) == 0;
        let body = if resend {
            let earlier = sent[rng.below(sent.len() as u64) as usize].clone();
            let day = rng.below(12) as i64;
            let user = rng.below(12) + 1;
            let cents = 100 + rng.below(9_000);
            edit(&earlier, |m| match rng.below(3) {
                0 => {
                    m.insert(
                        "eventTimestamp".into(),
                        s(format!("{}", (t0() + Duration::days(day)).format("%Y-%m-%dT%H:%M:%S%.3fZ"))),
                    );
                }
                1 => {
                    m.insert("userId".into(), s(format!("u-{user}")));
                }
                _ => {
                    m.insert("eventName".into(), s("purchase".into()));
                    m.insert("amount".into(), s(format!("{}.{:02}", cents / 100, cents % 100)));
                    m.insert("currency".into(), s(["EUR", "USD", "GBP"][(cents % 3) as usize].into()));
                }
            })
        } else {
            let at = t0() + Duration::days(rng.below(12) as i64) + Duration::minutes(rng.below(600) as i64);
            let user = rng.below(12) + 1;
            edit(&user_event_body(rng, *seq, at), |m| {
                m.insert("userId".into(), s(format!("u-{user}")));
            })
        };
        sent.push(body.clone());
        out.push(body);
    }
    out
}

async fn run_stages(p: &LoadedPipeline, run: &str) -> Vec<ModelReport> {
    let opts = IngestOptions::new(run);
    ingest(p, &opts).await.expect("ingest");
    process(p, &ProcessOptions { dry_run: false, run_id: run.into(), route: None, follow: None })
        .await
        .expect("process");
    curate(p, &CurateOptions { run_id: run.into(), ..Default::default() }).await.expect("curate").models
}

async fn table(dir: &Path, path: &str) -> deltalake::DeltaTable {
    let loc = Location::parse(dir.join("lake").join(path).to_str().unwrap()).unwrap();
    weir::delta::open(&loc).await.unwrap().unwrap_or_else(|| panic!("{path} exists"))
}

/// Rows as sorted text lines: a multiset comparison that shows diffs.
fn lines(batches: &[RecordBatch], columns: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for b in batches {
        for r in 0..b.num_rows() {
            let cells: Vec<String> = columns
                .iter()
                .map(|c| {
                    let col = b.column_by_name(c).unwrap_or_else(|| panic!("column {c}"));
                    let col = match col.data_type() {
                        DataType::Timestamp(_, _) => cast(col, &weir::capture::decode::utc_micros()).unwrap(),
                        DataType::Utf8View | DataType::Dictionary(_, _) => cast(col, &DataType::Utf8).unwrap(),
                        _ => col.clone(),
                    };
                    if col.is_null(r) {
                        "null".to_string()
                    } else {
                        array_value_to_string(&col, r).unwrap()
                    }
                })
                .collect();
            out.push(cells.join(" | "));
        }
    }
    out.sort();
    out
}

/// The model's SQL run from scratch over the processed table as it is now.
async fn full_recompute(dir: &Path, sql: &str) -> Vec<RecordBatch> {
    let ctx = weir::expectations::session();
    let processed = table(dir, "processed").await;
    processed.update_datafusion_session(&ctx.state()).unwrap();
    ctx.register_table("processed", processed.table_provider().await.unwrap()).unwrap();
    ctx.sql(sql).await.unwrap().collect().await.unwrap()
}

async fn assert_equals_full_recompute(dir: &Path, p: &LoadedPipeline, round: usize) {
    for model in weir::curate::models(p).unwrap() {
        let name = &model.config.name;
        let stored = weir::delta::read_all(&table(dir, &format!("curated/{name}")).await).await.unwrap();
        let expected = full_recompute(dir, &model.sql).await;
        let columns: Vec<String> = expected[0].schema().fields().iter().map(|f| f.name().clone()).collect();
        let (got, want) = (lines(&stored, &columns), lines(&expected, &columns));
        assert!(!want.is_empty());
        if got != want {
            let missing: Vec<_> = want.iter().filter(|l| !got.contains(l)).take(5).collect();
            let extra: Vec<_> = got.iter().filter(|l| !want.contains(l)).take(5).collect();
            panic!("round {round}: {name} differs from a full recompute\n missing: {missing:#?}\n extra: {extra:#?}");
        }
    }
}

#[tokio::test]
async fn incremental_runs_equal_a_full_recompute_on_randomized_multi_run_inputs() {
    set_key();
    for seed in [7u64, 42] {
        let dir = tempfile::tempdir().unwrap();
        let p = pipeline(dir.path(), &example_curate_section(dir.path()));
        let mut rng = Rng::new(seed);
        let (mut seq, mut sent, mut next_seq) = (0i64, Vec::new(), BTreeMap::new());
        let mut totals: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
        let mut modes = Vec::new();
        for r in 0..5 {
            let bodies = round(&mut rng, &mut seq, &mut sent);
            write_window(dir.path(), t0() + Duration::minutes(5 * r as i64), &bodies, &mut next_seq);
            for m in run_stages(&p, &format!("run-{r}")).await {
                let t = totals.entry(m.table.clone()).or_default();
                t.0 += m.rows_inserted;
                t.1 += m.rows_updated;
                t.2 += m.rows_deleted;
                modes.push(m.mode);
            }
            assert_equals_full_recompute(dir.path(), &p, r).await;
        }
        // First run full, then incremental: the comparison above is not a
        // full recompute checking itself.
        assert_eq!(modes[..2], ["full", "full"]);
        assert!(modes[2..].iter().all(|m| *m == "incremental"), "{modes:?}");
        // Re-sent events moved rows between days and users.
        let daily = &totals["user_daily_activity"];
        assert!(daily.1 > 0 && daily.2 > 0, "updates and deletes happened: {daily:?}");

        // A run with nothing new changes nothing and commits nothing.
        let versions = table(dir.path(), "curated/user_daily_activity").await.version();
        for m in run_stages(&p, "idle").await {
            assert_eq!(m.mode, "up_to_date");
        }
        assert_eq!(table(dir.path(), "curated/user_daily_activity").await.version(), versions);
    }
}

/// Change-feed rows of one table version, as (change type, line).
async fn feed(dir: &Path, path: &str, version: u64, columns: &[&str]) -> Vec<(String, String)> {
    let loc = Location::parse(dir.join("lake").join(path).to_str().unwrap()).unwrap();
    let (_, batches) = weir::export::changes(&loc, version, Some(version)).await.unwrap();
    let mut out = Vec::new();
    for b in &batches {
        let types = b.column_by_name("_change_type").unwrap().as_string::<i32>();
        let cols: Vec<String> = columns.iter().map(|c| c.to_string()).collect();
        for r in 0..b.num_rows() {
            let row = b.slice(r, 1);
            out.push((types.value(r).to_string(), lines(&[row], &cols).remove(0)));
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn the_change_feed_shows_each_changed_aggregate_and_an_erased_user_disappears() {
    set_key();
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), &example_curate_section(dir.path()));
    let at = t0();
    let body = |seed: u64, user: &str, minutes: i64| {
        let mut rng = Rng::new(seed);
        // The generator mixes the sequence into the seed: a fixed one keeps
        // event ids distinct per seed.
        edit(&user_event_body(&mut rng, 0, at + Duration::minutes(minutes)), |m| {
            m.insert("userId".into(), serde_json::Value::String(user.into()));
            m.insert("eventName".into(), serde_json::Value::String("click".into()));
        })
    };
    let mut next_seq = BTreeMap::new();
    write_window(dir.path(), at, &[body(1, "u-1", 1), body(2, "u-2", 2)], &mut next_seq);
    run_stages(&p, "r1").await;
    let daily = "curated/user_daily_activity";
    let v1 = table(dir.path(), daily).await.version().unwrap();

    // One more event for u-1 the same day, one for a new user: an update and
    // an insert; u-2's row is recomputed by nobody and not rewritten.
    write_window(dir.path(), at + Duration::minutes(5), &[body(3, "u-1", 3), body(4, "u-3", 4)], &mut next_seq);
    let reports = run_stages(&p, "r2").await;
    let r = reports.iter().find(|m| m.table == "user_daily_activity").unwrap();
    assert_eq!(
        (r.mode.as_str(), r.scope_values, r.rows_inserted, r.rows_updated, r.rows_deleted),
        ("incremental", 2, 1, 1, 0)
    );
    let v2 = table(dir.path(), daily).await.version().unwrap();
    assert_eq!(v2, v1 + 1);
    assert_eq!(
        feed(dir.path(), daily, v2, &["userId", "date", "events"]).await,
        vec![
            ("insert".to_string(), "u-3 | 2026-11-01 | 1".to_string()),
            ("update_postimage".to_string(), "u-1 | 2026-11-01 | 2".to_string()),
            ("update_preimage".to_string(), "u-1 | 2026-11-01 | 1".to_string()),
        ]
    );

    // Erase u-1 from the processed table (as `weir erase` will): its
    // curated rows are deleted, in both tables, by the next incremental run.
    let processed = table(dir.path(), "processed").await;
    processed.delete().with_predicate("\"userId\" = 'u-1'").await.unwrap();
    let reports = run_stages(&p, "r3").await;
    for m in &reports {
        assert_eq!(m.mode, "incremental", "{m:?}");
        assert!(m.rows_deleted > 0, "{m:?}");
        assert_eq!(m.rows_inserted + m.rows_updated, 0, "{m:?}");
    }
    let v3 = table(dir.path(), daily).await.version().unwrap();
    assert_eq!(
        feed(dir.path(), daily, v3, &["userId", "date", "events"]).await,
        vec![("delete".to_string(), "u-1 | 2026-11-01 | 2".to_string())]
    );
    for t in [daily, "curated/user_features"] {
        let rows = weir::delta::read_all(&table(dir.path(), t).await).await.unwrap();
        let users = lines(&rows, &["userId".to_string()]);
        assert!(!users.contains(&"u-1".to_string()), "{t}: {users:?}");
        assert!(users.contains(&"u-2".to_string()));
    }
    assert_equals_full_recompute(dir.path(), &p, 3).await;
}

#[tokio::test]
async fn a_changed_model_is_recomputed_fully_and_only_moved_rows_reach_the_feed() {
    set_key();
    let dir = tempfile::tempdir().unwrap();
    let section = example_curate_section(dir.path());
    let p = pipeline(dir.path(), &section);
    let mut rng = Rng::new(3);
    let (mut seq, mut sent, mut next_seq) = (0i64, Vec::new(), BTreeMap::new());
    write_window(dir.path(), t0(), &round(&mut rng, &mut seq, &mut sent), &mut next_seq);
    run_stages(&p, "r1").await;

    // Clicks no longer count as events: rows with clicks change, others not.
    let edited = section.replace("COUNT(*) AS events", "COUNT(CASE WHEN eventName <> 'click' THEN 1 END) AS events");
    assert_ne!(edited, section);
    let p = pipeline(dir.path(), &edited);
    // A dry run reports what would change and commits nothing.
    let before = table(dir.path(), "curated/user_daily_activity").await.version();
    let dry_report = curate(&p, &CurateOptions { run_id: "dry".into(), dry_run: true, ..Default::default() }).await;
    let dry_report = dry_report.unwrap();
    let dry = dry_report.models.clone();
    assert!(dry[0].mode == "full" && dry[0].rows_updated > 0, "{dry:?}");
    assert_eq!(table(dir.path(), "curated/user_daily_activity").await.version(), before);
    // `weir plan` sees the changed model, and says what the dry run's own
    // plan says.
    let planned = weir::plan::plan(&p, &PartitionSet::all()).await.unwrap();
    let curate_plans: Vec<SourcePlan> =
        planned.stages.iter().filter(|s| s.stage.starts_with("curate ")).cloned().collect();
    let modes: Vec<(&str, String, Option<&str>)> =
        curate_plans.iter().map(|s| (s.stage.as_str(), s.mode.to_string(), s.reason.as_deref())).collect();
    assert_eq!(
        modes,
        [
            (
                "curate user_daily_activity",
                "full".into(),
                Some("the model (SQL, key or scope) changed since the last run")
            ),
            ("curate user_features", "up_to_date".into(), None)
        ]
    );
    let Some(StagePlan::Curate(dry_plans)) = &dry_report.plan else { panic!("a dry run carries its plan") };
    assert_eq!(dry_plans, &curate_plans);
    let models = curate(&p, &CurateOptions { run_id: "r2".into(), ..Default::default() }).await.unwrap().models;
    // The run did what was planned.
    assert_eq!(models[0].source_versions, Some((0, curate_plans[0].to_version.unwrap())));
    assert_eq!((models[0].rows_updated, models[0].rows_unchanged), (dry[0].rows_updated, dry[0].rows_unchanged));
    let daily = models.iter().find(|m| m.table == "user_daily_activity").unwrap();
    assert_eq!(daily.mode, "full");
    assert!(daily.reason.as_deref().unwrap().contains("model"), "{daily:?}");
    assert!(daily.rows_updated > 0 && daily.rows_unchanged > 0, "{daily:?}");
    assert_eq!(daily.rows_inserted + daily.rows_deleted, 0);
    // The untouched model stays as it was.
    let features = models.iter().find(|m| m.table == "user_features").unwrap();
    assert_eq!(features.mode, "up_to_date");
    assert_equals_full_recompute(dir.path(), &p, 2).await;
    // The new fingerprint was stored: the next run has nothing to do.
    let again = curate(&p, &CurateOptions { run_id: "r3".into(), ..Default::default() }).await.unwrap().models;
    assert!(again.iter().all(|m| m.mode == "up_to_date"), "{again:?}");
}

#[tokio::test]
async fn a_model_that_breaks_its_declaration_is_refused_with_the_table_and_row_named() {
    set_key();
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    // The scope claims `date` is `event_date`, but the model shifts it.
    let shifted = format!(
        r#"curate:
  tables:
    - name: shifted
      path: {lake}/curated/shifted
      key: [userId, date]
      incremental: {{by: [userId, {{column: date, source: event_date}}]}}
      sql: SELECT userId, event_date + INTERVAL '1' DAY AS date, COUNT(*) AS n FROM processed GROUP BY userId, event_date
    - name: not_unique
      path: {lake}/curated/not_unique
      key: [eventName]
      sql: SELECT eventName, userId FROM processed
"#,
        lake = lake.display()
    );
    let p = pipeline(dir.path(), &shifted);
    let mut rng = Rng::new(5);
    let (mut seq, mut sent, mut next_seq) = (0i64, Vec::new(), BTreeMap::new());
    write_window(dir.path(), t0(), &round(&mut rng, &mut seq, &mut sent), &mut next_seq);
    let opts = IngestOptions::new("r");
    ingest(&p, &opts).await.unwrap();
    process(&p, &ProcessOptions { dry_run: false, run_id: "r".into(), route: None, follow: None }).await.unwrap();
    let only = |t: &str| CurateOptions { run_id: "r".into(), only: vec![t.into()], ..Default::default() };

    let e = curate(&p, &only("not_unique")).await.unwrap_err();
    assert_eq!(e.class(), weir::ErrorClass::Config);
    let m = e.to_string();
    assert!(m.contains("\"not_unique\"") && m.contains("two rows for key eventName="), "{m}");

    // First run is full (nothing to check against); the second, incremental,
    // sees rows outside the scope it asked for.
    curate(&p, &only("shifted")).await.unwrap();
    write_window(dir.path(), t0() + Duration::minutes(5), &round(&mut rng, &mut seq, &mut sent), &mut next_seq);
    ingest(&p, &opts).await.unwrap();
    process(&p, &ProcessOptions { dry_run: false, run_id: "r".into(), route: None, follow: None }).await.unwrap();
    let before = table(dir.path(), "curated/shifted").await.version();
    let e = curate(&p, &only("shifted")).await.unwrap_err();
    let m = e.to_string();
    assert!(m.contains("\"shifted\"") && m.contains("outside the scope") && m.contains("date=2026-11-"), "{m}");
    assert_eq!(table(dir.path(), "curated/shifted").await.version(), before, "nothing committed");
}

#[tokio::test]
async fn validate_plans_models_and_names_unknown_columns() {
    let dir = tempfile::tempdir().unwrap();
    let section = r#"curate:
  tables:
    - name: daily
      path: lake/daily
      key: [userId, day]
      partition_by: [dt]
      incremental: {by: [userId, {column: day, source: event_day}]}
      sql: SELECT userId, event_date AS day, COUNT(*) AS n FROM processed GROUP BY userId, event_date
    - name: broken
      path: lake/broken
      key: [x]
      sql: SELECT nope FROM daily
"#;
    let p = pipeline(dir.path(), section);
    let problems = weir::curate::check_models(&p).await.unwrap();
    let text = format!("{problems:?}");
    assert!(text.contains("curate.tables[0].partition_by") && text.contains("\\\"dt\\\" is not a column"), "{text}");
    assert!(
        text.contains("curate.tables[0].incremental.by[1]")
            && text.contains("\\\"event_day\\\" is not a column of processed"),
        "{text}"
    );
    assert!(text.contains("curate.tables[1].sql") && text.contains("nope"), "{text}");
    assert_eq!(problems.len(), 3, "{text}");
}

/// Features of `user` at `ts` computed straight from processed events: the
/// windows end at the UTC midnight at or before `ts`.
struct Expected {
    events_7d: i64,
    events_30d: i64,
    last_active: Option<i64>,
}

#[expect(clippy::too_many_lines, reason = "one end-to-end scenario, read top to bottom")]
#[tokio::test]
async fn point_in_time_features_match_a_brute_force_computation_and_never_see_the_future() {
    set_key();
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), &example_curate_section(dir.path()));
    let mut rng = Rng::new(11);
    let (mut seq, mut sent, mut next_seq) = (0i64, Vec::new(), BTreeMap::new());
    for r in 0..3 {
        write_window(dir.path(), t0() + Duration::minutes(5 * r), &round(&mut rng, &mut seq, &mut sent), &mut next_seq);
        run_stages(&p, "r").await;
    }
    // Processed events per user: (event date in days, event time in µs).
    let processed = weir::delta::read_all(&table(dir.path(), "processed").await).await.unwrap();
    let mut events: BTreeMap<String, Vec<(i32, i64)>> = BTreeMap::new();
    for b in &processed {
        let users = cast(b.column_by_name("userId").unwrap(), &DataType::Utf8).unwrap();
        let users = users.as_string::<i32>();
        let dates = cast(b.column_by_name("event_date").unwrap(), &DataType::Date32).unwrap();
        let dates = dates.as_primitive::<deltalake::arrow::datatypes::Date32Type>();
        let times = cast(b.column_by_name("eventTimestamp").unwrap(), &weir::capture::decode::utc_micros()).unwrap();
        let times = times.as_primitive::<deltalake::arrow::datatypes::TimestampMicrosecondType>();
        for i in 0..b.num_rows() {
            events.entry(users.value(i).to_string()).or_default().push((dates.value(i), times.value(i)));
        }
    }
    // Requests from before the first event to well after the last.
    let mut users = Vec::new();
    let mut stamps = Vec::new();
    for i in 0..300 {
        users.push(format!("u-{}", 1 + i % 13));
        stamps.push((t0() - Duration::days(2) + Duration::minutes(rng.below(60 * 24 * 50) as i64)).timestamp_micros());
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("userId", DataType::Utf8, false),
        Field::new("ts", weir::capture::decode::utc_micros(), false),
        Field::new("label", DataType::Utf8, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(users.clone())),
            Arc::new(TimestampMicrosecondArray::from(stamps.clone()).with_timezone("UTC")),
            Arc::new(StringArray::from((0..300).map(|i| format!("row-{i}")).collect::<Vec<_>>())),
        ],
    )
    .unwrap();
    let entities = dir.path().join("entities.parquet");
    let mut w =
        deltalake::parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&entities).unwrap(), schema, None)
            .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();

    let output = dir.path().join("features.parquet");
    let request = weir::curate::features::FeatureRequest {
        table: "user_features".into(),
        entities: entities.clone(),
        as_of_column: "ts".into(),
        output: Some(output.clone()),
    };
    let report = weir::curate::features::lookup(&p, &request).await.unwrap();
    assert_eq!(report.rows, 300);
    let file = std::fs::File::open(&output).unwrap();
    let reader = deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let got: Vec<RecordBatch> = reader.collect::<Result<_, _>>().unwrap();
    let got = deltalake::arrow::compute::concat_batches(&got[0].schema(), &got).unwrap();
    assert_eq!(got.num_rows(), 300);
    let col = |n: &str| got.column_by_name(n).unwrap_or_else(|| panic!("output column {n}")).clone();
    let labels = col("label");
    let e7 = col("events_7d");
    let e30 = col("events_30d");
    let last = cast(&col("last_active_at"), &weir::capture::decode::utc_micros()).unwrap();
    let as_of = cast(&col("feature_as_of"), &weir::capture::decode::utc_micros()).unwrap();
    let (e7, e30) = (
        e7.as_primitive::<deltalake::arrow::datatypes::Int64Type>(),
        e30.as_primitive::<deltalake::arrow::datatypes::Int64Type>(),
    );
    let last = last.as_primitive::<deltalake::arrow::datatypes::TimestampMicrosecondType>();
    let as_of = as_of.as_primitive::<deltalake::arrow::datatypes::TimestampMicrosecondType>();
    let (mut matched, mut unmatched) = (0, 0);
    for i in 0..300 {
        // Order and entity columns are kept.
        assert_eq!(labels.as_string::<i32>().value(i), format!("row-{i}"));
        let day_us = 86_400_000_000i64;
        let midnight = stamps[i].div_euclid(day_us);
        let mine: Vec<&(i32, i64)> = events
            .get(&users[i])
            .map(|v| v.iter().filter(|(d, _)| (*d as i64) < midnight).collect())
            .unwrap_or_default();
        let expected = (!mine.is_empty()).then(|| Expected {
            events_7d: mine.iter().filter(|(d, _)| *d as i64 >= midnight - 7).count() as i64,
            events_30d: mine.iter().filter(|(d, _)| *d as i64 >= midnight - 30).count() as i64,
            last_active: mine.iter().map(|(_, t)| *t).max(),
        });
        match expected {
            None => {
                unmatched += 1;
                assert!(as_of.is_null(i) && e7.is_null(i), "row {i}: no events before the request, no features");
            }
            Some(x) => {
                matched += 1;
                assert!(as_of.value(i) <= stamps[i], "row {i}: a feature row from the future");
                assert_eq!(
                    (e7.value(i), e30.value(i), Some(last.value(i))),
                    (x.events_7d, x.events_30d, x.last_active),
                    "row {i}"
                );
                assert!(last.value(i) < stamps[i], "row {i}: last activity after the request time");
            }
        }
    }
    assert!(matched > 100 && unmatched > 10, "both cases are exercised: {matched} {unmatched}");
    assert_eq!(report.matched, matched);

    // A CSV request with a bad timestamp names the file, row and column.
    let csv = dir.path().join("bad.csv");
    std::fs::write(&csv, "userId,ts\nu-1,2026-11-03T10:00:00Z\nu-2,last tuesday\n").unwrap();
    let e = weir::curate::features::lookup(
        &p,
        &weir::curate::features::FeatureRequest { entities: csv, output: None, ..request },
    )
    .await
    .unwrap_err();
    let m = e.to_string();
    assert!(m.contains("bad.csv") && m.contains("row 2") && m.contains("\"ts\"") && m.contains("last tuesday"), "{m}");
}

/// A model that joins a reference table, and a model whose source is another
/// curated table (its change feed carries update images): both incremental,
/// both equal to a full recompute.
#[tokio::test]
async fn models_read_reference_tables_and_chain_on_curated_tables() {
    set_key();
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    // A reference table of exchange rates, written by someone else.
    let rates = Location::parse(lake.join("reference/fx").to_str().unwrap()).unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("currency", DataType::Utf8, false),
        Field::new("to_eur", DataType::Decimal128(10, 4), false),
    ]));
    let spec = weir::delta::TableSpec {
        name: "fx".into(),
        description: None,
        schema: schema.clone(),
        partition_columns: vec![],
    };
    let fx = weir::delta::open_or_create(&rates, &spec).await.unwrap();
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(vec!["EUR", "USD", "GBP"])),
            Arc::new(
                deltalake::arrow::array::Decimal128Array::from(vec![10_000, 9_200, 11_700])
                    .with_precision_and_scale(10, 4)
                    .unwrap(),
            ),
        ],
    )
    .unwrap();
    weir::delta::write_with_progress(fx, vec![batch], Default::default()).await.unwrap();

    let section = format!(
        r#"{example}
    - name: user_spend_eur
      path: {lake}/curated/user_spend_eur
      key: [userId, date]
      incremental: {{by: [userId, {{column: date, source: event_date}}]}}
      sql: |
        SELECT p.userId, p.event_date AS date, SUM(p.amount * fx.to_eur) AS spend_eur, COUNT(*) AS purchases
        FROM processed p JOIN fx ON p.currency = fx.currency
        WHERE p.eventName = 'purchase'
        GROUP BY p.userId, p.event_date
    - name: user_totals
      path: {lake}/curated/user_totals
      key: [userId]
      incremental: {{source: user_daily_activity, by: [userId]}}
      sql: SELECT userId, SUM(events) AS events, COUNT(*) AS active_days, MAX(date) AS last_day FROM user_daily_activity GROUP BY userId
  references:
    - {{name: fx, path: {lake}/reference/fx}}
"#,
        example = example_curate_section(dir.path()).trim_end(),
        lake = lake.display()
    );
    let p = pipeline(dir.path(), &section);
    assert_eq!(weir::curate::check_models(&p).await.unwrap(), vec![]);
    let mut rng = Rng::new(21);
    let (mut seq, mut sent, mut next_seq) = (0i64, Vec::new(), BTreeMap::new());
    for r in 0..4 {
        write_window(dir.path(), t0() + Duration::minutes(5 * r), &round(&mut rng, &mut seq, &mut sent), &mut next_seq);
        let models = run_stages(&p, "r").await;
        let modes: Vec<(&str, &str)> = models.iter().map(|m| (m.table.as_str(), m.mode.as_str())).collect();
        if r > 0 {
            assert!(modes.iter().all(|(_, m)| *m == "incremental"), "{modes:?}");
        }
        // The full recompute of a chained model reads the curated table it
        // is built on, which the check compares first.
        for model in weir::curate::models(&p).unwrap() {
            let name = &model.config.name;
            let stored = weir::delta::read_all(&table(dir.path(), &format!("curated/{name}")).await).await.unwrap();
            let ctx = weir::expectations::session();
            for (n, path) in [
                ("processed", "processed"),
                ("fx", "reference/fx"),
                ("user_daily_activity", "curated/user_daily_activity"),
            ] {
                let t = table(dir.path(), path).await;
                t.update_datafusion_session(&ctx.state()).unwrap();
                ctx.register_table(n, t.table_provider().await.unwrap()).unwrap();
            }
            let expected = ctx.sql(&model.sql).await.unwrap().collect().await.unwrap();
            let columns: Vec<String> = expected[0].schema().fields().iter().map(|f| f.name().clone()).collect();
            assert_eq!(lines(&stored, &columns), lines(&expected, &columns), "round {r}: {name}");
        }
    }
}

/// What the JSON functions read from one `_rescued` value (the raw JSON as
/// sent): `json_get_str` strings only; `json_get_float` numbers and strings
/// holding one; `json_get_int` integers, floats with an integral value and
/// strings holding an integer; `json_get_bool` booleans and the strings
/// `"true"` and `"false"`. Anything else, and an absent key, is NULL.
#[derive(Default)]
struct Rescued {
    variant: Option<String>,
    score: Option<f64>,
    retries: Option<i64>,
    beta: Option<bool>,
}

fn rescued_fields(i: usize) -> (Vec<(&'static str, serde_json::Value)>, Rescued) {
    use serde_json::json;
    let mut sent = Vec::new();
    let mut read = Rescued::default();
    match i % 4 {
        0 => {}
        1 => {
            sent.push(("abVariant", json!("A")));
            read.variant = Some("A".into());
        }
        2 => {
            sent.push(("abVariant", json!("B")));
            read.variant = Some("B".into());
        }
        _ => sent.push(("abVariant", json!(7))),
    }
    // Quarter steps: every sum is exact in any order.
    let quarters = (i % 9) as f64 / 4.0;
    match i % 5 {
        0 => {}
        1 => {
            sent.push(("score", json!(quarters)));
            read.score = Some(quarters);
        }
        2 => {
            sent.push(("score", json!(quarters.to_string())));
            read.score = Some(quarters);
        }
        3 => sent.push(("score", json!("n/a"))),
        _ => sent.push(("score", json!(null))),
    }
    match i % 6 {
        0 => {}
        1 => {
            sent.push(("retries", json!(2.0)));
            read.retries = Some(2);
        }
        2 => sent.push(("retries", json!(2.5))),
        5 => {
            sent.push(("retries", json!("5")));
            read.retries = Some(5);
        }
        n => {
            sent.push(("retries", json!(n)));
            read.retries = Some(n as i64);
        }
    }
    match i % 3 {
        0 => {}
        1 => {
            sent.push(("beta", json!(i.is_multiple_of(2))));
            read.beta = Some(i.is_multiple_of(2));
        }
        _ if i.is_multiple_of(2) => {
            sent.push(("beta", json!("true")));
            read.beta = Some(true);
        }
        _ => sent.push(("beta", json!("yes"))),
    }
    (sent, read)
}

/// A curated model reads fields the schema does not know from `_rescued`
/// with the JSON functions: its table equals what those fields say,
/// computed here from the bodies sent.
#[tokio::test]
async fn a_model_reads_rescued_fields_with_json_functions() {
    set_key();
    let dir = tempfile::tempdir().unwrap();
    let section = format!(
        r#"curate:
  tables:
    - name: experiments
      path: {lake}/curated/experiments
      key: [userId, date]
      incremental: {{by: [userId, {{column: date, source: event_date}}]}}
      sql: |
        SELECT
          userId,
          event_date AS date,
          COUNT(json_get_str(_rescued, 'abVariant')) AS with_variant,
          COUNT(CASE WHEN (_rescued->>'abVariant') = 'B' THEN 1 END) AS variant_b,
          COALESCE(SUM(json_get_float(_rescued, 'score')), 0) AS score,
          MAX(json_get_int(_rescued, 'retries')) AS max_retries,
          COUNT(CASE WHEN json_get_bool(_rescued, 'beta') THEN 1 END) AS beta_true
        FROM processed
        GROUP BY userId, event_date
"#,
        lake = dir.path().join("lake").display()
    );
    let p = pipeline(dir.path(), &section);
    assert_eq!(weir::curate::check_models(&p).await.unwrap(), vec![]);

    type Row = (i64, i64, f64, Option<i64>, i64);
    let mut expected: BTreeMap<(String, String), Row> = BTreeMap::new();
    let mut bodies = Vec::new();
    let mut rng = Rng::new(5);
    for i in 0..60 {
        let at = t0() + Duration::days((i % 3) as i64) + Duration::minutes(i as i64);
        let user = format!("u-{}", i % 4);
        let (sent, read) = rescued_fields(i);
        bodies.push(edit(&user_event_body(&mut rng, i as i64, at), |m| {
            m.insert("userId".into(), serde_json::Value::String(user.clone()));
            m.insert("eventName".into(), serde_json::Value::String("click".into()));
            for (k, v) in sent {
                m.insert(k.into(), v);
            }
        }));
        let row = expected.entry((user, at.format("%Y-%m-%d").to_string())).or_insert((0, 0, 0.0, None, 0));
        row.0 += i64::from(read.variant.is_some());
        row.1 += i64::from(read.variant.as_deref() == Some("B"));
        row.2 += read.score.unwrap_or(0.0);
        row.3 = row.3.max(read.retries);
        row.4 += i64::from(read.beta == Some(true));
    }
    write_window(dir.path(), t0(), &bodies, &mut BTreeMap::new());
    run_stages(&p, "r1").await;

    let stored = weir::delta::read_all(&table(dir.path(), "curated/experiments").await).await.unwrap();
    let mut got: BTreeMap<(String, String), Row> = BTreeMap::new();
    for b in &stored {
        use deltalake::arrow::datatypes::{Float64Type, Int64Type};
        let text = |c: &str, r: usize| array_value_to_string(b.column_by_name(c).unwrap(), r).unwrap();
        let typed = |c: &str, t: DataType| cast(b.column_by_name(c).unwrap(), &t).unwrap();
        let [with_variant, variant_b, retries, beta_true] =
            ["with_variant", "variant_b", "max_retries", "beta_true"].map(|c| typed(c, DataType::Int64));
        let score = typed("score", DataType::Float64);
        let int = |a: &deltalake::arrow::array::ArrayRef, r: usize| {
            let a = a.as_primitive::<Int64Type>();
            a.is_valid(r).then(|| a.value(r))
        };
        for r in 0..b.num_rows() {
            got.insert(
                (text("userId", r), text("date", r)),
                (
                    int(&with_variant, r).unwrap(),
                    int(&variant_b, r).unwrap(),
                    score.as_primitive::<Float64Type>().value(r),
                    int(&retries, r),
                    int(&beta_true, r).unwrap(),
                ),
            );
        }
    }
    assert_eq!(got, expected);
}

/// `weir validate` (and every curate run, before it writes) type-checks a
/// model, not only its names: `->>` binds more loosely than `=` in
/// DataFusion, so `_rescued->>'k' = 'B'` asks for the key `'k' = 'B'` (a
/// boolean) and fails; the problem names the model and the cause.
#[tokio::test]
async fn validate_finds_a_model_that_does_not_type_check() {
    let dir = tempfile::tempdir().unwrap();
    let section = r#"curate:
  tables:
    - name: variants
      path: lake/variants
      key: [userId]
      sql: SELECT userId, COUNT(CASE WHEN _rescued->>'abVariant' = 'B' THEN 1 END) AS b FROM processed GROUP BY userId
"#;
    let p = pipeline(dir.path(), section);
    let problems = weir::curate::check_models(&p).await.unwrap();
    assert_eq!(
        problems,
        vec![(
            "curate.tables[0].sql".to_string(),
            "model \"variants\" does not plan: WHEN expressions in CASE couldn't be converted to common type (Boolean): Unexpected argument type to 'json_as_text' at position 2, expected string or int, got Boolean.".to_string()
        )]
    );
    // Parenthesised, it plans.
    let fixed = section.replace("_rescued->>'abVariant'", "(_rescued->>'abVariant')");
    assert_eq!(weir::curate::check_models(&pipeline(dir.path(), &fixed)).await.unwrap(), vec![]);
}
