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
use object_store::ObjectStoreExt as _;
use weir::capture::testgen::{generate_dataset, Codec, DatasetSpec};
use weir::capture::PartitionSet;
use weir::curate::{curate, CurateOptions};
use weir::ingest::{ingest, IngestOptions};
use weir::pipeline::{parse_pipeline, LoadedPipeline};
use weir::process::{process, ProcessOptions};
use weir::storage::Location;

/// The Azurite blob endpoint, with the environment set for emulator mode.
fn azurite() -> String {
    let endpoint = std::env::var("WEIR_AZURITE_BLOB_URL").unwrap_or_else(|_| {
        panic!(
            "WEIR_AZURITE_BLOB_URL is not set: these tests need Azurite. Run scripts/test.sh, which installs azurite@3.35.0 from npm and starts it, or start it yourself and set the variable to its blob endpoint (http://127.0.0.1:PORT)"
        )
    });
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
    std::fs::copy(repo.join("pipelines/user_events/user_features.sql"), dir.join("user_events/user_features.sql")).unwrap();
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
    let opts = IngestOptions { partitions: PartitionSet::all(), dry_run: false, run_id: "r".into(), on_progress: None };
    vec![
        ingest(p, &opts).await.expect("ingest"),
        process(p, &ProcessOptions { dry_run: false, run_id: "r".into() }).await.expect("process"),
        curate(p, &CurateOptions { run_id: "r".into(), ..Default::default() }).await.expect("curate"),
    ]
}

/// Sorted rows of a table, without the columns that differ per run or
/// location (run ids, times of processing, source file URLs).
async fn rows(location: &str) -> Vec<String> {
    let loc = Location::parse(location).unwrap();
    let table = weir::delta::open(&loc).await.unwrap().unwrap_or_else(|| panic!("{location} exists"));
    let batches: Vec<RecordBatch> = weir::delta::read_all(&table).await.unwrap();
    let skip = ["_run_id", "run_id", "_processed_at", "_quarantined_at", "recorded_at", "_source_file", "source_file", "ingested_at"];
    let mut out = Vec::new();
    for b in &batches {
        let schema = b.schema();
        let mut names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).filter(|n| !skip.contains(n)).collect();
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

#[tokio::test]
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

    let local = pipeline(dir.path(), "local", &dir.path().join("capture").display().to_string(), &dir.path().join("lake").display().to_string());
    let azure = pipeline(dir.path(), "azure", &format!("az://{capture}/events/hub"), &format!("az://{lake}/user_events"));
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
    assert!(azure_reports[0].events_written > 400, "{}", azure_reports[0].events_written);
    for t in ["raw", "processed", "quarantine", "quality", "curated/user_daily_activity", "curated/user_features"] {
        let here = rows(&format!("{}/{t}", dir.path().join("lake").display())).await;
        let there = rows(&format!("az://{lake}/user_events/{t}")).await;
        assert!(!here.is_empty(), "{t}");
        if here != there {
            let only_here: Vec<_> = here.iter().filter(|r| !there.contains(r)).take(3).collect();
            let only_there: Vec<_> = there.iter().filter(|r| !here.contains(r)).take(3).collect();
            panic!("{t}: Azurite and local folders differ\n local only: {only_here:#?}\n Azurite only: {only_there:#?}");
        }
    }
    // A second run finds nothing new on either.
    let again = run_all(&azure).await;
    assert_eq!(again[0].events_written, 0);
    assert_eq!(again[1].events_written, 0);
}
