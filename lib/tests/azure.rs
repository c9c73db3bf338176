//! The whole pipeline with capture files and every table in Azure Blob
//! storage, on Azurite (the real emulator, started by `scripts/test.sh`),
//! compared with the same run on local folders.
//!
//! These tests fail, never skip, when Azurite is not there.

use std::path::Path;

use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::DataType;
use deltalake::arrow::util::display::array_value_to_string;
use object_store::{ObjectStore as _, ObjectStoreExt as _};
use weir::curate::{curate, CurateOptions};
use weir::ingest::{ingest, IngestOptions};
use weir::pipeline::{parse_pipeline, LoadedPipeline};
use weir::process::{process, ProcessOptions};
use weir::storage::Location;
use weir_testkit::capture::{generate_dataset, Codec, DatasetSpec};

/// The Azurite blob endpoint, with the environment set for emulator mode.
fn azurite() -> String {
    let endpoint = std::env::var("WEIR_AZURITE_BLOB_URL").unwrap_or_else(|_| {
        panic!(
            "WEIR_AZURITE_BLOB_URL is not set: these tests need Azurite. Run scripts/test.sh, which installs azurite@3.35.0 from npm and starts it, or start it yourself and set the variable to its blob endpoint (http://127.0.0.1:PORT)"
        )
    });
    // A shell's own Azure or Weir settings must not reach the tests.
    weir_testkit::env::clean_process(&["AZURE_", "WEIR_"], &["WEIR_AZURITE_BLOB_URL"]);
    std::env::set_var("AZURE_STORAGE_USE_EMULATOR", "true");
    std::env::set_var("AZURITE_BLOB_STORAGE_URL", &endpoint);
    std::env::set_var("WEIR_TEST_PII_KEY", "0123456789abcdef-azure-test-key");
    endpoint
}

/// A fresh container.
fn container(endpoint: &str, what: &str) -> String {
    let name = format!("{what}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    weir::storage::emulator::create_container(endpoint, &name).unwrap();
    name
}

/// Uploads every file below `dir` to `target`, keeping relative names.
async fn upload(dir: &Path, target: &Location) {
    let (store, prefix) = target.object_store().unwrap();
    let mut files = vec![dir.to_path_buf()];
    while let Some(p) = files.pop() {
        if p.is_dir() {
            files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else if p.extension().is_some_and(|e| e == "avro") {
            let rel = p.strip_prefix(dir).unwrap().to_str().unwrap().to_string();
            let path = object_store::path::Path::from(format!("{}/{rel}", prefix.as_ref()));
            store.put(&path, std::fs::read(&p).unwrap().into()).await.unwrap();
        }
    }
}

fn pipeline(dir: &Path, name: &str, capture: &str, lake: &str) -> LoadedPipeline {
    let repo = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let example = std::fs::read_to_string(repo.join("pipelines/user_events.yaml")).unwrap();
    let rest = &example[example.find("\nprocess:").unwrap()..];
    std::fs::create_dir_all(dir.join("user_events")).unwrap();
    std::fs::copy(repo.join("pipelines/user_events/user_features.sql"), dir.join("user_events/user_features.sql"))
        .unwrap();
    let text = format!(
        "name: user_events\nsource:\n  capture:\n    url: {capture}\nbody:\n  schema: {schema}\ntables:\n  raw: {{path: {lake}/raw}}\n  processed: {{path: {lake}/processed}}\n  quarantine: {{path: {lake}/quarantine}}\n  quality_metrics: {{path: {lake}/quality}}\ningest:\n  commit_bytes: 20000\n{rest}",
        schema = repo.join("schemas/user_event.avsc").display(),
    )
    .replace("${WEIR_LAKE:-lake}", lake)
    .replace("WEIR_PII_KEY", "WEIR_TEST_PII_KEY")
    .replace("raw_versions_per_commit: 1", "raw_versions_per_commit: 2");
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(&file, &text).unwrap();
    parse_pipeline(&file, &text, &|_| None).expect("valid pipeline")
}

async fn run_all(p: &LoadedPipeline) -> Vec<weir::report::StageReport> {
    let opts = IngestOptions::new("r");
    vec![
        ingest(p, &opts).await.expect("ingest"),
        process(p, &ProcessOptions { dry_run: false, run_id: "r".into(), route: None, follow: None })
            .await
            .expect("process"),
        curate(p, &CurateOptions { run_id: "r".into(), ..Default::default() }).await.expect("curate"),
        // Compaction, z-order, a full vacuum of nothing old enough, checkpoints.
        weir::maintain::maintain(p, &weir::maintain::MaintainOptions { run_id: "r".into(), ..Default::default() })
            .await
            .expect("maintain"),
    ]
}

/// Sorted rows of a table, without the columns that differ per run or
/// location (run ids, times of processing, source file URLs).
async fn rows(location: &str) -> Vec<String> {
    let loc = Location::parse(location).unwrap();
    let table = weir::delta::open(&loc).await.unwrap().unwrap_or_else(|| panic!("{location} exists"));
    let batches: Vec<RecordBatch> = weir::delta::read_all(&table).await.unwrap();
    let skip = [
        "_run_id",
        "run_id",
        "_processed_at",
        "_quarantined_at",
        "recorded_at",
        "_source_file",
        "source_file",
        "ingested_at",
    ];
    let mut out = Vec::new();
    for b in &batches {
        let schema = b.schema();
        let mut names: Vec<&str> =
            schema.fields().iter().map(|f| f.name().as_str()).filter(|n| !skip.contains(n)).collect();
        names.sort();
        for r in 0..b.num_rows() {
            let cells: Vec<String> = names
                .iter()
                .map(|n| {
                    let c = b.column_by_name(n).unwrap();
                    let c = match c.data_type() {
                        DataType::Dictionary(_, _) | DataType::Utf8View => cast(c, &DataType::Utf8).unwrap(),
                        _ => c.clone(),
                    };
                    format!("{n}={}", array_value_to_string(&c, r).unwrap())
                })
                .collect();
            out.push(cells.join(" "));
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_pipeline_on_azurite_equals_the_same_run_on_local_folders() {
    let endpoint = azurite();
    let dir = tempfile::tempdir().unwrap();
    let spec = DatasetSpec {
        partitions: 3,
        windows: 6,
        events_per_file: 40,
        codecs: vec![Codec::Deflate, Codec::Null, Codec::Snappy],
        defect_rate_ppm: 20_000,
        duplicate_rate_ppm: 30_000,
        empty_every: 4,
        ..DatasetSpec::small(9)
    };
    generate_dataset(&dir.path().join("capture"), &spec).unwrap();
    let capture = container(&endpoint, "capture");
    let lake = container(&endpoint, "lake");
    upload(&dir.path().join("capture"), &Location::parse(&format!("az://{capture}/events/hub")).unwrap()).await;

    let local = pipeline(
        dir.path(),
        "local",
        &dir.path().join("capture").display().to_string(),
        &dir.path().join("lake").display().to_string(),
    );
    let azure =
        pipeline(dir.path(), "azure", &format!("az://{capture}/events/hub"), &format!("az://{lake}/user_events"));
    let started = std::time::Instant::now();
    let local_reports = run_all(&local).await;
    let local_time = started.elapsed();
    let started = std::time::Instant::now();
    let azure_reports = run_all(&azure).await;
    let azure_time = started.elapsed();
    eprintln!("local {local_time:?}, azurite {azure_time:?}");
    for (l, a) in local_reports.iter().zip(&azure_reports) {
        assert_eq!((l.events_read, l.events_written), (a.events_read, a.events_written), "{}", l.stage);
    }
    // Maintenance did the same on both.
    let actions = |r: &weir::report::StageReport| {
        r.maintenance.iter().map(|a| (a.table.clone(), a.action, a.outcome, a.files_after)).collect::<Vec<_>>()
    };
    assert_eq!(actions(&local_reports[3]), actions(&azure_reports[3]));
    assert!(
        azure_reports[3].maintenance.iter().any(|a| a.action == "optimize" && a.outcome == "done"),
        "{:?}",
        azure_reports[3].maintenance
    );
    assert!(azure_reports[0].events_written > 400, "{}", azure_reports[0].events_written);
    for t in ["raw", "processed", "quarantine", "quality", "curated/user_daily_activity", "curated/user_features"] {
        let here = rows(&format!("{}/{t}", dir.path().join("lake").display())).await;
        let there = rows(&format!("az://{lake}/user_events/{t}")).await;
        assert!(!here.is_empty(), "{t}");
        if here != there {
            let only_here: Vec<_> = here.iter().filter(|r| !there.contains(r)).take(3).collect();
            let only_there: Vec<_> = there.iter().filter(|r| !here.contains(r)).take(3).collect();
            panic!(
                "{t}: Azurite and local folders differ\n local only: {only_here:#?}\n Azurite only: {only_there:#?}"
            );
        }
    }
    // A second run finds nothing new on either.
    let again = run_all(&azure).await;
    assert_eq!(again[0].events_written, 0);
    assert_eq!(again[1].events_written, 0);
}

/// How the fault proxy answers a create-if-absent (`If-None-Match: *`) of a
/// Delta commit file.
#[derive(Clone, Copy, PartialEq)]
enum Fault {
    /// Azure's other answer to a lost race: 412 instead of Azurite's 409.
    LostRaceAs412,
    /// A store that refuses every commit with 409 although nothing is there.
    Refuse409,
    /// Throttling: every third request of any kind is answered 503.
    Flaky,
}

/// A one-request-per-connection HTTP proxy in front of Azurite that rewrites
/// the answers to commit creates. Returns its endpoint.
async fn fault_proxy(upstream: &str, fault: Fault) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = upstream.trim_start_matches("http://").to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counter = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else { return };
            let upstream = upstream.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                // Read the head, then the body by Content-Length.
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                let head_end = loop {
                    let n = client.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let lower = head.to_ascii_lowercase();
                let length: usize = lower
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
                    .unwrap_or(0);
                while buf.len() < head_end + length {
                    let n = client.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let request_line = head.lines().next().unwrap_or("").to_string();
                let is_commit_create = request_line.starts_with("PUT ")
                    && request_line.contains("/_delta_log/")
                    && request_line.contains(".json")
                    && !request_line.contains(".tmp")
                    && lower.contains("if-none-match: *");
                if fault == Fault::Flaky && counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) % 3 == 2 {
                    let body = "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>ServerBusy</Code></Error>";
                    let response = format!(
                        "HTTP/1.1 503 Service Unavailable\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = client.write_all(response.as_bytes()).await;
                    return;
                }
                if is_commit_create && fault == Fault::Refuse409 {
                    let body = "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>InsufficientAccountPermissions</Code></Error>";
                    let response = format!(
                        "HTTP/1.1 409 Conflict\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = client.write_all(response.as_bytes()).await;
                    return;
                }
                // One request per connection: ask upstream to close after it.
                let head =
                    head.replacen("\r\n", "\r\nConnection: close\r\n", 1).replace("Connection: keep-alive\r\n", "");
                let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else { return };
                let _ = server.write_all(head.as_bytes()).await;
                let _ = server.write_all(&buf[head_end..]).await;
                let mut response = Vec::new();
                let _ = server.read_to_end(&mut response).await;
                if is_commit_create && fault == Fault::LostRaceAs412 && response.starts_with(b"HTTP/1.1 409") {
                    let rest = response.iter().position(|&b| b == b'\n').map_or(response.len(), |i| i + 1);
                    let mut rewritten = b"HTTP/1.1 412 Precondition Failed\r\n".to_vec();
                    rewritten.extend_from_slice(&response[rest..]);
                    response = rewritten;
                }
                let _ = client.write_all(&response).await;
                let _ = client.shutdown().await;
            });
        }
    });
    format!("http://{addr}")
}

fn one_row(n: i64) -> RecordBatch {
    use deltalake::arrow::array::Int64Array;
    use deltalake::arrow::datatypes::{Field, Schema};
    RecordBatch::try_new(
        std::sync::Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)])),
        vec![std::sync::Arc::new(Int64Array::from(vec![n]))],
    )
    .unwrap()
}

/// Two writers race for the same version behind a store that answers the
/// loser with 412: the loser sees a lost race, re-checks and commits next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_race_answered_with_412_is_a_lost_race_not_a_failure() {
    let endpoint = azurite();
    let lake = container(&endpoint, "race");
    let proxy = fault_proxy(&endpoint, Fault::LostRaceAs412).await;
    std::env::set_var("AZURITE_BLOB_STORAGE_URL", &proxy);
    let location = Location::parse(&format!("az://{lake}/t")).unwrap();
    let spec = weir::delta::TableSpec {
        name: "race".into(),
        description: None,
        schema: one_row(0).schema(),
        partition_columns: vec![],
    };
    let table = weir::delta::open_or_create(&location, &spec).await.unwrap();
    let stale = weir::delta::open(&location).await.unwrap().unwrap();
    let v = table.version().unwrap();
    let table = weir::delta::write_with_progress(table, vec![one_row(1)], Default::default()).await.unwrap();
    assert_eq!(table.version(), Some(v + 1));
    // `stale` still thinks v is the latest: its commit at v + 1 is refused
    // with 412 by the proxy.
    let stale = weir::delta::write_with_progress(stale, vec![one_row(2)], Default::default())
        .await
        .expect("a 412 on a commit create is a lost race: retried at the next version");
    assert_eq!(stale.version(), Some(v + 2));
    let rows = weir::delta::read_all(&weir::delta::open(&location).await.unwrap().unwrap()).await.unwrap();
    assert_eq!(rows.iter().map(|b| b.num_rows()).sum::<usize>(), 2);

    // Without the guard the same answer is a failure: the proxy really
    // answers 412, and object_store reports it as a precondition error.
    let (store, prefix) = location.object_store().unwrap();
    let log = object_store::path::Path::from(format!("{}/_delta_log/00000000000000000000.json", prefix.as_ref()));
    let copy = store.copy_if_not_exists(&log, &log).await.unwrap_err();
    assert!(matches!(copy, object_store::Error::Precondition { .. }), "{copy:?}");
    let create = object_store::PutOptions { mode: object_store::PutMode::Create, ..Default::default() };
    let put = store.put_opts(&log, vec![1u8].into(), create.clone()).await.unwrap_err();
    assert!(matches!(put, object_store::Error::Precondition { .. }), "{put:?}");
    // The guard delta-rs stores are wrapped in reports both as a lost race.
    let guarded = weir::storage::azure::CreateGuard::new(store);
    let copy = guarded.copy_if_not_exists(&log, &log).await.unwrap_err();
    assert!(matches!(copy, object_store::Error::AlreadyExists { .. }), "{copy:?}");
    let put = guarded.put_opts(&log, vec![1u8].into(), create).await.unwrap_err();
    assert!(matches!(put, object_store::Error::AlreadyExists { .. }), "{put:?}");
}

/// A store that answers every commit with 409 though nothing is there (a
/// full account) fails the write at once, saying so: not an endless race.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_409_without_an_existing_commit_is_a_storage_error_not_a_race() {
    let endpoint = azurite();
    let lake = container(&endpoint, "full");
    let location = Location::parse(&format!("az://{lake}/t")).unwrap();
    let spec = weir::delta::TableSpec {
        name: "full".into(),
        description: None,
        schema: one_row(0).schema(),
        partition_columns: vec![],
    };
    let table = weir::delta::open_or_create(&location, &spec).await.unwrap();
    std::env::set_var("AZURITE_BLOB_STORAGE_URL", fault_proxy(&endpoint, Fault::Refuse409).await);
    let table = {
        // Reopen through the proxy.
        let _ = table;
        weir::delta::open(&location).await.unwrap().unwrap()
    };
    let started = std::time::Instant::now();
    let err = weir::delta::write_with_progress(table, vec![one_row(1)], Default::default()).await.unwrap_err();
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    let message = err.to_string();
    assert!(message.contains("not a lost commit race"), "{message}");
    assert!(message.contains(&lake), "names the table: {message}");
    assert_eq!(err.class(), weir::ErrorClass::Retryable);
}

/// Writes a capture file of `n` events for `partition` at `window`, with
/// sequence numbers from `first`, below `root` (a local folder or a URL).
async fn put_capture(root: &Location, partition: &str, window: chrono::DateTime<chrono::Utc>, first: i64, n: i64) {
    use weir_testkit::capture::{capture_path, user_event_body, write_capture_file, CaptureEvent, FileSpec, Rng};
    let mut rng = Rng::new(first as u64 * 31 + partition.len() as u64);
    let events: Vec<CaptureEvent> = (first..first + n)
        .map(|s| CaptureEvent {
            sequence_number: s,
            offset: (s * 512).to_string(),
            enqueued_time: window + chrono::Duration::seconds(s % 60),
            system_properties: vec![],
            properties: vec![],
            body: Some(user_event_body(&mut rng, s, window)),
        })
        .collect();
    let bytes = write_capture_file(&events, &FileSpec::default()).unwrap();
    put_object(root, &capture_path(partition, window), bytes).await;
}

async fn put_object(root: &Location, name: &str, bytes: Vec<u8>) {
    if let Some(dir) = root.local_path() {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    } else {
        let (store, prefix) = root.object_store().unwrap();
        let path = object_store::path::Path::from(format!("{}/{name}", prefix.as_ref()));
        store.put(&path, bytes.into()).await.unwrap();
    }
}

/// Once a partition's newest window is known, a run lists only the days from
/// the lookback before it: an object in an older day folder is never seen,
/// while late files within the lookback and files after a gap of days are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_skips_day_folders_the_watermark_says_are_done() {
    use chrono::TimeZone as _;
    let endpoint = azurite();
    let dir = tempfile::tempdir().unwrap();
    let container = container(&endpoint, "listing");
    for root in [dir.path().join("capture").display().to_string(), format!("az://{container}/capture")] {
        let source = Location::parse(&root).unwrap();
        let lake = if root.starts_with("az://") {
            format!("az://{container}/lake")
        } else {
            dir.path().join("lake").display().to_string()
        };
        let text = format!(
            "name: listing\nsource:\n  capture:\n    url: {root}\ntables:\n  raw: {{path: {lake}/raw}}\ningest:\n  lookback_hours: 6\n"
        );
        let p = parse_pipeline(&dir.path().join("listing.yaml"), &text, &|_| None).unwrap();
        let opts = IngestOptions::new("r");
        let day = chrono::Utc.with_ymd_and_hms(2026, 11, 20, 10, 0, 0).unwrap();
        put_capture(&source, "0", day, 0, 5).await;
        put_capture(&source, "0", day + chrono::Duration::minutes(5), 5, 5).await;
        put_capture(&source, "1", day, 0, 5).await;
        let first = ingest(&p, &opts).await.unwrap();
        assert_eq!(first.events_written, 15);

        // Older day folders hold something that is not a capture file: a full
        // listing reports it, a pruned one never reads that folder.
        put_object(&source, "0/2026/11/18/00/00/00.txt", b"not capture".to_vec()).await;
        put_object(&source, "1/2025/01/01/00/00/00.txt", b"not capture".to_vec()).await;
        // A back-filled file inside the lookback, and one three days later.
        put_capture(&source, "0", day - chrono::Duration::hours(1), 10, 3).await;
        put_capture(&source, "0", day + chrono::Duration::days(3), 13, 4).await;
        put_capture(&source, "1", day + chrono::Duration::days(40), 5, 2).await;
        let second = ingest(&p, &opts).await.unwrap();
        assert_eq!(second.events_written, 9, "{root}: the late file and the ones after the gap");
        assert_eq!(
            second.unmatched_files.count, 0,
            "{root}: old day folders were not listed: {:?}",
            second.unmatched_files.sample
        );

        // Without a lookback every folder is listed, and the junk is reported.
        let full = parse_pipeline(
            &dir.path().join("listing.yaml"),
            &text.replace("lookback_hours: 6", "lookback_hours: 0"),
            &|_| None,
        )
        .unwrap();
        let third = ingest(&full, &opts).await.unwrap();
        assert_eq!(third.events_written, 0);
        assert_eq!(third.unmatched_files.count, 2, "{root}: {:?}", third.unmatched_files.sample);
    }
}

/// A capture file larger than one ranged read streams from blob storage in
/// several requests, is committed in several parts, and lands the same rows
/// as from a local folder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_file_larger_than_one_read_streams_from_blob_storage() {
    use chrono::TimeZone as _;
    let endpoint = azurite();
    let dir = tempfile::tempdir().unwrap();
    let container = container(&endpoint, "large");
    let window = chrono::Utc.with_ymd_and_hms(2026, 11, 20, 10, 0, 0).unwrap();
    let mut tables = Vec::new();
    for root in [dir.path().join("capture").display().to_string(), format!("az://{container}/capture")] {
        let source = Location::parse(&root).unwrap();
        let lake = if root.starts_with("az://") {
            format!("az://{container}/lake")
        } else {
            dir.path().join("lake").display().to_string()
        };
        put_capture(&source, "0", window, 0, 40_000).await;
        let text = format!("name: large\nsource:\n  capture:\n    url: {root}\ntables:\n  raw: {{path: {lake}/raw}}\ningest:\n  commit_bytes: 4000000\n");
        let p = parse_pipeline(&dir.path().join("large.yaml"), &text, &|_| None).unwrap();
        let opts = IngestOptions::new("r");
        let r = ingest(&p, &opts).await.unwrap();
        assert!(r.bytes_read > 16 << 20, "{root}: the file needs more than two reads ({} bytes)", r.bytes_read);
        assert_eq!((r.files_read, r.events_written), (1, 40_000), "{root}");
        assert!(
            r.tables[0].versions_written.len() >= 3,
            "{root}: committed in parts: {:?}",
            r.tables[0].versions_written
        );
        assert!(r.problems.is_empty(), "{root}: {:?}", r.problems);
        tables.push(rows(&format!("{lake}/raw")).await);
    }
    assert_eq!(tables[0].len(), 40_000);
    assert!(tables[0] == tables[1], "the same rows from blob storage as from a local folder");
}

/// Storage that throttles every third request (503): the whole pipeline still
/// lands, with the same rows as on local folders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_storage_is_retried_and_the_pipeline_lands_the_same_rows() {
    let endpoint = azurite();
    let dir = tempfile::tempdir().unwrap();
    let spec = DatasetSpec {
        partitions: 2,
        windows: 4,
        events_per_file: 30,
        duplicate_rate_ppm: 30_000,
        ..DatasetSpec::small(4)
    };
    generate_dataset(&dir.path().join("capture"), &spec).unwrap();
    let capture = container(&endpoint, "capture");
    let lake = container(&endpoint, "lake");
    upload(&dir.path().join("capture"), &Location::parse(&format!("az://{capture}/hub")).unwrap()).await;
    let proxy = fault_proxy(&endpoint, Fault::Flaky).await;
    std::env::set_var("AZURITE_BLOB_STORAGE_URL", &proxy);
    let local = pipeline(
        dir.path(),
        "local",
        &dir.path().join("capture").display().to_string(),
        &dir.path().join("lake").display().to_string(),
    );
    let azure = pipeline(dir.path(), "azure", &format!("az://{capture}/hub"), &format!("az://{lake}/e"));
    run_all(&local).await;
    let reports = run_all(&azure).await;
    assert!(reports[0].events_written > 200);
    for t in ["raw", "processed", "curated/user_daily_activity"] {
        let here = rows(&format!("{}/{t}", dir.path().join("lake").display())).await;
        let there = rows(&format!("az://{lake}/e/{t}")).await;
        assert_eq!(here.len(), there.len(), "{t}");
        assert!(here == there, "{t}: same rows through a throttling store");
    }
}
