//! The maintain job against real Delta tables built from real capture
//! files: compaction, z-order, vacuum, retention, dry runs.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Duration, TimeZone, Utc};
use deltalake::arrow::array::{Array, AsArray};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::DataType;
use weir::ingest::{ingest, IngestOptions};
use weir::maintain::{maintain, MaintainOptions};
use weir::pipeline::{parse_pipeline, LoadedPipeline};
use weir::process::{process, ProcessOptions};
use weir::report::MaintenanceAction;
use weir::storage::Location;
use weir_testkit::capture::{capture_path, user_event_body, write_capture_file, CaptureEvent, FileSpec, Rng};

fn pipeline(dir: &Path, maintain_section: &str) -> LoadedPipeline {
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/user_event.avsc");
    let text = format!(
        r#"name: m
source:
  capture:
    url: {capture}
body:
  schema: {schema}
tables:
  raw: {{path: {lake}/raw}}
  processed: {{path: {lake}/processed}}
  quarantine: {{path: {lake}/quarantine}}
ingest:
  commit_bytes: 30000
process:
  event_time: eventTimestamp
  pii:
    key_env: WEIR_TEST_PII_KEY
    rules:
      - {{column: email, action: hash}}
      - {{column: ipAddress, action: mask, mask: ip}}
  dedup: {{key: [eventId]}}
{maintain_section}"#,
        capture = dir.join("capture").display(),
        lake = dir.join("lake").display(),
        schema = schema.display(),
    );
    std::fs::write(dir.join("p.yaml"), &text).unwrap();
    parse_pipeline(&dir.join("p.yaml"), &text, &|_| None).expect("valid pipeline")
}

/// Capture files for partitions 0 and 1: `windows` windows of `per_file`
/// events from `start`, sequence numbers continuing from `next`.
fn write_capture(
    dir: &Path,
    start: DateTime<Utc>,
    windows: i64,
    per_file: i64,
    next: &mut BTreeMap<&'static str, i64>,
) {
    for w in 0..windows {
        let window = start + Duration::minutes(5 * w);
        for p in ["0", "1"] {
            let first = *next.get(p).unwrap_or(&0);
            let mut rng = Rng::new(first as u64 * 7 + p.len() as u64 + w as u64 * 1000);
            let events: Vec<CaptureEvent> = (first..first + per_file)
                .map(|s| CaptureEvent {
                    sequence_number: s,
                    offset: (s * 512).to_string(),
                    enqueued_time: window + Duration::seconds(s % 250),
                    system_properties: vec![],
                    properties: vec![],
                    body: Some(user_event_body(&mut rng, s, window)),
                })
                .collect();
            next.insert(p, first + per_file);
            let path = dir.join("capture").join(capture_path(p, window));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, write_capture_file(&events, &FileSpec::default()).unwrap()).unwrap();
        }
    }
}

async fn load(p: &LoadedPipeline) {
    std::env::set_var("WEIR_TEST_PII_KEY", "0123456789abcdef-maintain-key");
    let opts = IngestOptions::new("r");
    ingest(p, &opts).await.unwrap();
    process(p, &ProcessOptions { dry_run: false, run_id: "r".into(), route: None, follow: None }).await.unwrap();
}

async fn table(dir: &Path, name: &str) -> deltalake::DeltaTable {
    weir::delta::open(&Location::parse(dir.join("lake").join(name).to_str().unwrap()).unwrap()).await.unwrap().unwrap()
}

/// Sorted rows rendered from the given columns.
async fn rows(dir: &Path, name: &str, columns: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for b in weir::delta::read_all(&table(dir, name).await).await.unwrap() {
        for r in 0..b.num_rows() {
            out.push(
                columns
                    .iter()
                    .map(|c| {
                        deltalake::arrow::util::display::array_value_to_string(b.column_by_name(c).unwrap(), r).unwrap()
                    })
                    .collect::<Vec<_>>()
                    .join(" "),
            );
        }
    }
    out.sort();
    out
}

fn active_files(t: &deltalake::DeltaTable) -> Vec<(String, i64)> {
    t.snapshot().unwrap().log_data().iter().map(|f| (f.path().to_string(), f.size())).collect()
}

/// Every Parquet file below a folder, with paths relative to it.
fn parquet_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(p) = todo.pop() {
        if p.is_dir() {
            todo.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else if p.extension().is_some_and(|e| e == "parquet") && !p.to_str().unwrap().contains("_delta_log") {
            out.push(p.strip_prefix(dir).unwrap().to_str().unwrap().to_string());
        }
    }
    out.sort();
    out
}

fn find<'a>(actions: &'a [MaintenanceAction], table: &str, action: &str) -> &'a MaintenanceAction {
    actions
        .iter()
        .find(|a| a.table == table && a.action == action)
        .unwrap_or_else(|| panic!("{table} {action} in {actions:#?}"))
}

#[tokio::test]
async fn compaction_cuts_the_file_count_and_keeps_every_row_and_a_dry_run_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), "maintain:\n  target_file_size_mb: 64\n");
    let mut next = BTreeMap::new();
    write_capture(dir.path(), Utc::now() - Duration::hours(3), 12, 60, &mut next);
    load(&p).await;
    let raw_rows = rows(dir.path(), "raw", &["partition_id", "sequence_number", "body"]).await;
    let processed_rows = rows(dir.path(), "processed", &["eventId", "userId", "_sequence_number"]).await;
    let before = active_files(&table(dir.path(), "raw").await);
    assert!(before.len() >= 8, "many small files to start with: {}", before.len());
    let versions = (table(dir.path(), "raw").await.version(), table(dir.path(), "processed").await.version());

    let dry =
        maintain(&p, &MaintainOptions { dry_run: true, run_id: "dry".into(), ..Default::default() }).await.unwrap();
    let planned = find(&dry.maintenance, "raw", "optimize");
    assert_eq!(
        (planned.outcome.as_str(), planned.files_before, planned.files_after),
        ("planned", before.len() as u64, before.len() as u64)
    );
    assert!(planned.detail.starts_with(&format!("{} files", before.len())), "{}", planned.detail);
    assert_eq!(
        (table(dir.path(), "raw").await.version(), table(dir.path(), "processed").await.version()),
        versions,
        "a dry run commits nothing"
    );
    assert_eq!(active_files(&table(dir.path(), "raw").await), before);

    let done = maintain(&p, &MaintainOptions { run_id: "m".into(), ..Default::default() }).await.unwrap();
    let raw = find(&done.maintenance, "raw", "optimize");
    assert_eq!(raw.outcome, "done");
    let after = active_files(&table(dir.path(), "raw").await);
    assert!(after.len() < before.len() / 4, "{} → {}", before.len(), after.len());
    assert_eq!(raw.files_after, after.len() as u64);
    assert_eq!(rows(dir.path(), "raw", &["partition_id", "sequence_number", "body"]).await, raw_rows, "rows identical");
    assert_eq!(rows(dir.path(), "processed", &["eventId", "userId", "_sequence_number"]).await, processed_rows);
    // Compaction changes no data: readers of the change feed see nothing new.
    let v = table(dir.path(), "raw").await.version().unwrap();
    let loc = Location::parse(dir.path().join("lake/raw").to_str().unwrap()).unwrap();
    let (_, feed) = weir::export::changes(&loc, v, Some(v)).await.unwrap();
    assert_eq!(feed.iter().map(|b| b.num_rows()).sum::<usize>(), 0);

    // A checkpoint of the compacted version, readable by a fresh reader.
    let cp = find(&done.maintenance, "raw", "checkpoint");
    assert_eq!(cp.outcome, "done", "{cp:?}");
    assert!(dir.path().join(format!("lake/raw/_delta_log/{v:020}.checkpoint.parquet")).exists());
    assert_eq!(rows(dir.path(), "raw", &["partition_id", "sequence_number", "body"]).await, raw_rows);

    // A second run finds the partitions compacted and skips them.
    let again = maintain(&p, &MaintainOptions { run_id: "m2".into(), ..Default::default() }).await.unwrap();
    assert_eq!(find(&again.maintenance, "raw", "optimize").outcome, "skipped");
    assert_eq!(table(dir.path(), "raw").await.version().unwrap(), v, "nothing to commit");
}

/// Files whose userId min/max range holds `user`, from the Delta stats.
fn files_touched(t: &deltalake::DeltaTable, user: &str) -> usize {
    t.snapshot()
        .unwrap()
        .log_data()
        .iter()
        .filter(|f| {
            let stats: serde_json::Value = serde_json::from_str(&f.stats().unwrap()).unwrap();
            let min = stats["minValues"]["userId"].as_str().unwrap().to_string();
            let max = stats["maxValues"]["userId"].as_str().unwrap().to_string();
            min.as_str() <= user && user <= max.as_str()
        })
        .count()
}

#[tokio::test]
async fn zorder_clusters_files_so_a_user_lookup_touches_fewer_files() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(
        dir.path(),
        "maintain:\n  target_file_size_mb: 1\n  tables:\n    processed:\n      zorder_by: [userId, eventTimestamp]\n",
    );
    let mut next = BTreeMap::new();
    write_capture(dir.path(), Utc::now() - Duration::hours(6), 40, 120, &mut next);
    load(&p).await;
    let before_rows = rows(dir.path(), "processed", &["eventId", "userId"]).await;
    let t = table(dir.path(), "processed").await;
    let users: Vec<String> = (1..=40).map(|i| format!("u-{}", i * 97)).collect();
    let touched_before: usize = users.iter().map(|u| files_touched(&t, u)).sum();
    let files_before = active_files(&t).len();

    let report =
        maintain(&p, &MaintainOptions { run_id: "z".into(), only: vec!["processed".into()], ..Default::default() })
            .await
            .unwrap();
    let z = find(&report.maintenance, "processed", "zorder");
    assert_eq!(z.outcome, "done", "{z:?}");
    let t = table(dir.path(), "processed").await;
    let touched_after: usize = users.iter().map(|u| files_touched(&t, u)).sum();
    let files_after = active_files(&t).len();
    assert!(files_after >= 2, "the target size splits the output: {files_after}");
    assert!(
        touched_after * 2 < touched_before,
        "before: {touched_before} file reads for 40 users over {files_before} files; after: {touched_after} over {files_after}"
    );
    assert_eq!(rows(dir.path(), "processed", &["eventId", "userId"]).await, before_rows);
}

/// Once z-ordered, a partition is rewritten again only when the files
/// written since hold `zorder_new_percent` of its bytes: not on every run
/// (it used to be, as soon as it held two files), not for a small append,
/// and as before when the record of what was clustered is gone.
#[tokio::test]
async fn a_zordered_partition_is_rewritten_again_only_when_new_files_warrant_it() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(
        dir.path(),
        "maintain:\n  target_file_size_mb: 1\n  zorder_new_percent: 25\n  tables:\n    processed:\n      zorder_by: [userId, eventTimestamp]\n",
    );
    let start = Utc.with_ymd_and_hms(2026, 11, 1, 8, 0, 0).unwrap();
    let mut next = BTreeMap::new();
    write_capture(dir.path(), start, 40, 120, &mut next);
    load(&p).await;
    let options = MaintainOptions { run_id: "z".into(), only: vec!["processed".into()], ..Default::default() };
    let zorder = |report: &weir::report::StageReport| find(&report.maintenance, "processed", "zorder").clone();

    let first = zorder(&maintain(&p, &options).await.unwrap());
    assert_eq!(first.outcome, "done", "{first:?}");
    let clustered = active_files(&table(dir.path(), "processed").await);
    assert!(clustered.len() >= 2, "the target size splits the output: {clustered:?}");

    // Nothing new: nothing to rewrite, although the partition holds several files.
    let again = zorder(&maintain(&p, &options).await.unwrap());
    assert_eq!(again.outcome, "skipped", "{again:?}");
    assert!(!again.detail.contains("wait"), "{again:?}");
    assert_eq!(active_files(&table(dir.path(), "processed").await), clustered);

    // A small append (well under 25% of the partition) waits.
    write_capture(dir.path(), start + Duration::minutes(200), 1, 20, &mut next);
    load(&p).await;
    let small = zorder(&maintain(&p, &options).await.unwrap());
    assert_eq!(small.outcome, "skipped", "{small:?}");
    assert!(small.detail.contains("1 clustered partitions wait"), "{small:?}");
    let with_small = active_files(&table(dir.path(), "processed").await);
    assert!(clustered.iter().all(|f| with_small.contains(f)), "the clustered files stay");

    // Enough new data: the partition is clustered again, rows unchanged.
    write_capture(dir.path(), start + Duration::minutes(205), 20, 120, &mut next);
    load(&p).await;
    let rows_before = rows(dir.path(), "processed", &["eventId", "userId"]).await;
    let big = zorder(&maintain(&p, &options).await.unwrap());
    assert_eq!(big.outcome, "done", "{big:?}");
    let reclustered = active_files(&table(dir.path(), "processed").await);
    assert!(reclustered.iter().all(|f| !with_small.contains(f)), "the whole partition is rewritten");
    assert_eq!(rows(dir.path(), "processed", &["eventId", "userId"]).await, rows_before);
    let again = zorder(&maintain(&p, &options).await.unwrap());
    assert_eq!(again.outcome, "skipped", "{again:?}");

    // Without the record every file counts as new: z-ordered as before.
    std::fs::remove_file(dir.path().join("lake/processed/_weir/maintain/zorder.json")).unwrap();
    let without = zorder(&maintain(&p, &options).await.unwrap());
    assert_eq!(without.outcome, "done", "{without:?}");
    assert_eq!(rows(dir.path(), "processed", &["eventId", "userId"]).await, rows_before);
}

#[tokio::test]
async fn full_vacuum_removes_old_files_orphans_and_change_feed_files_and_refuses_an_unsafe_retention() {
    let dir = tempfile::tempdir().unwrap();
    let section = "maintain:\n  target_file_size_mb: 64\n  vacuum_retention_hours: 0\n";
    // keep: latest rewrites files with change-feed files on re-sends.
    pipeline(dir.path(), section);
    let text = std::fs::read_to_string(dir.path().join("p.yaml"))
        .unwrap()
        .replace("dedup: {key: [eventId]}", "dedup: {key: [eventId], keep: latest}");
    let p_latest = parse_pipeline(&dir.path().join("p.yaml"), &text, &|_| None).unwrap();
    let mut next = BTreeMap::new();
    let start = Utc::now() - Duration::hours(2);
    write_capture(dir.path(), start, 6, 40, &mut next);
    load(&p_latest).await;
    // Re-send some events (same bodies, later) so the processed table merges.
    let raw = weir::delta::read_all(&table(dir.path(), "raw").await).await.unwrap();
    let body = cast(raw[0].column_by_name("body").unwrap(), &DataType::Binary).unwrap();
    let bodies: Vec<Vec<u8>> = body.as_binary::<i32>().iter().take(10).map(|b| b.unwrap().to_vec()).collect();
    let window = start + Duration::minutes(60);
    let first = next["0"];
    let events: Vec<CaptureEvent> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| CaptureEvent {
            sequence_number: first + i as i64,
            offset: "0".into(),
            enqueued_time: window,
            system_properties: vec![],
            properties: vec![],
            body: Some(b.clone()),
        })
        .collect();
    let path = dir.path().join("capture").join(capture_path("0", window));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, write_capture_file(&events, &FileSpec::default()).unwrap()).unwrap();
    load(&p_latest).await;
    let processed_dir = dir.path().join("lake/processed");
    assert!(processed_dir.join("_change_data").is_dir(), "the merge wrote change-feed files");
    // An orphan: a Parquet file no version ever referenced.
    let orphan = processed_dir.join("event_date=2020-01-01/orphan.parquet");
    std::fs::create_dir_all(orphan.parent().unwrap()).unwrap();
    std::fs::copy(processed_dir.join(&active_files(&table(dir.path(), "processed").await)[0].0), &orphan).unwrap();
    let rows_before = rows(dir.path(), "processed", &["eventId", "userId", "_sequence_number"]).await;

    // Below the table's safety window (7 days by default): refused, nothing done.
    let version = table(dir.path(), "processed").await.version();
    let e = maintain(&p_latest, &MaintainOptions { run_id: "v".into(), ..Default::default() }).await.unwrap_err();
    assert_eq!(e.class(), weir::ErrorClass::Config);
    assert!(e.to_string().contains("safety window of 168 h") && e.to_string().contains("--force"), "{e}");
    assert_eq!(table(dir.path(), "processed").await.version(), version);
    assert!(orphan.exists());

    let report =
        maintain(&p_latest, &MaintainOptions { run_id: "v".into(), force: true, ..Default::default() }).await.unwrap();
    let v = find(&report.maintenance, "processed", "vacuum");
    assert_eq!(v.outcome, "done");
    assert!(v.files_after < v.files_before, "{v:?}");
    assert!(!orphan.exists(), "orphans are removed in full mode");
    let t = table(dir.path(), "processed").await;
    let active: Vec<String> = active_files(&t).into_iter().map(|(p, _)| p).collect::<Vec<_>>();
    let mut active = active.into_iter().map(|p| urlencoding_free(&p)).collect::<Vec<_>>();
    active.sort();
    assert_eq!(parquet_files(&processed_dir), active, "only the current version's files remain (no change-feed files)");
    assert_eq!(
        rows(dir.path(), "processed", &["eventId", "userId", "_sequence_number"]).await,
        rows_before,
        "current data intact"
    );
}

/// Delta paths in the log are URL-encoded; files on disk are not.
fn urlencoding_free(p: &str) -> String {
    p.replace("%3A", ":").replace("%20", " ")
}

#[tokio::test]
async fn retention_deletes_rows_older_than_the_declared_age() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(
        dir.path(),
        "maintain:\n  tables:\n    raw:\n      retention: {column: enqueued_time, days: 60}\n      optimize: false\n    processed:\n      retention: {column: event_date, days: 60}\n",
    );
    let mut next = BTreeMap::new();
    write_capture(dir.path(), Utc::now() - Duration::days(90), 2, 10, &mut next);
    write_capture(dir.path(), Utc::now() - Duration::days(1), 2, 10, &mut next);
    let opts = IngestOptions::new("r");
    // Enqueue-time checks would quarantine the 90-day-old events' bodies;
    // what matters here is the raw table's enqueue times.
    ingest(&p, &opts).await.unwrap();
    let all = rows(dir.path(), "raw", &["partition_id", "sequence_number"]).await;
    assert_eq!(all.len(), 80);
    // Columns are checked against the tables (as `weir validate` does).
    assert_eq!(weir::maintain::check_tables(&p).await.unwrap(), vec![]);
    let typo = parse_pipeline(
        &dir.path().join("p.yaml"),
        &std::fs::read_to_string(dir.path().join("p.yaml"))
            .unwrap()
            .replace("column: enqueued_time", "column: enqueue_time"),
        &|_| None,
    )
    .unwrap();
    let problems = weir::maintain::check_tables(&typo).await.unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].0, "maintain.tables.raw.retention.column");
    assert!(problems[0].1.contains("\"enqueue_time\" is not a column"), "{problems:?}");

    let dry =
        maintain(&p, &MaintainOptions { dry_run: true, only: vec!["raw".into()], ..Default::default() }).await.unwrap();
    let r = find(&dry.maintenance, "raw", "retention");
    assert!(r.outcome == "planned" && r.detail.starts_with("40 rows"), "{r:?}");
    let done = maintain(&p, &MaintainOptions { only: vec!["raw".into()], ..Default::default() }).await.unwrap();
    let retention = find(&done.maintenance, "raw", "retention");
    assert_eq!(retention.outcome, "done");
    let kept = rows(dir.path(), "raw", &["partition_id", "sequence_number"]).await;
    assert_eq!(kept.len(), 40);
    // The older 20 per partition went: sequence numbers 0..19.
    for k in &kept {
        let seq: i64 = k.split(' ').nth(1).unwrap().parse().unwrap();
        assert!(seq >= 20, "{k}");
    }
    let feed_types: Vec<String> = {
        let t = table(dir.path(), "raw").await;
        let loc = Location::parse(dir.path().join("lake/raw").to_str().unwrap()).unwrap();
        // The delete's own version (the rewrite lease is given back after it).
        let v = retention.version.unwrap();
        let optimized =
            done.maintenance.iter().any(|a| a.table == "raw" && a.action == "optimize" && a.version.is_some());
        assert_eq!(t.version(), Some(v + 1 + u64::from(optimized)));
        let (_, b) = weir::export::changes(&loc, v, Some(v)).await.unwrap();
        b.iter()
            .flat_map(|b| b.column_by_name("_change_type").map(|c| cast(c, &DataType::Utf8).unwrap()))
            .flat_map(|c| (0..c.len()).map(move |i| c.as_string::<i32>().value(i).to_string()))
            .collect()
    };
    assert!(
        feed_types.iter().all(|t| t == "delete") && feed_types.len() == 40,
        "a normal Delta delete, in the change feed: {feed_types:?}"
    );
}

/// A Delta table the pipeline does not declare, inside one of its tables'
/// folders (another pipeline's table, say): vacuum on the outer table spares
/// every file of it, and says why it ran in lite mode.
#[tokio::test]
async fn vacuum_never_deletes_a_nested_delta_table_the_pipeline_does_not_know() {
    let dir = tempfile::tempdir().unwrap();
    let outer = pipeline(dir.path(), "maintain:\n  vacuum_retention_hours: 0\n");
    let mut next = BTreeMap::new();
    write_capture(dir.path(), Utc::now() - Duration::hours(2), 3, 20, &mut next);
    load(&outer).await;
    // A second pipeline whose raw table sits inside the first one's
    // processed folder.
    let inner_dir = dir.path().join("inner");
    std::fs::create_dir_all(&inner_dir).unwrap();
    std::os::unix::fs::symlink(dir.path().join("capture"), inner_dir.join("capture")).unwrap();
    let text = format!(
        "name: inner\nsource:\n  capture:\n    url: {}\ntables:\n  raw: {{path: {}}}\n",
        inner_dir.join("capture").display(),
        dir.path().join("lake/processed/nested_raw").display()
    );
    std::fs::write(inner_dir.join("p.yaml"), &text).unwrap();
    let inner = parse_pipeline(&inner_dir.join("p.yaml"), &text, &|_| None).unwrap();
    let opts = IngestOptions::new("i");
    ingest(&inner, &opts).await.unwrap();
    let nested = dir.path().join("lake/processed/nested_raw");
    let files_before = parquet_files(&nested);
    assert!(!files_before.is_empty());
    let rows_before = rows(dir.path(), "processed/nested_raw", &["partition_id", "sequence_number"]).await;
    assert_eq!(rows_before.len(), 120);

    let report =
        maintain(&outer, &MaintainOptions { run_id: "v".into(), force: true, ..Default::default() }).await.unwrap();
    let v = find(&report.maintenance, "processed", "vacuum");
    assert!(v.detail.contains("lite mode") && v.detail.contains("nested_raw"), "{v:?}");
    assert_eq!(parquet_files(&nested), files_before, "no file of the nested table was deleted");
    assert!(nested.join("_delta_log").read_dir().unwrap().count() > 0);
    assert_eq!(rows(dir.path(), "processed/nested_raw", &["partition_id", "sequence_number"]).await, rows_before);
    // A table with nothing inside it still vacuums in full mode.
    let raw = find(&report.maintenance, "raw", "vacuum");
    assert!(!raw.detail.contains("lite mode"), "{raw:?}");
}
