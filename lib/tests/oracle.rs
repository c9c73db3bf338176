//! An independent oracle for ingest and process: the capture files are
//! read with a second Avro decoder (apache-avro), the tables through their
//! `_delta_log` JSON and the Parquet files it names (the parquet crate's
//! reader, none of Weir's read path), and the results are checked against
//! each other:
//!
//! - input = raw: every event of every capture file is in raw exactly once,
//!   body bytes equal;
//! - raw = processed ∪ quarantine ∪ dropped duplicates, by lineage
//!   (partition, sequence number): no row in two of them, every raw row in
//!   one, and a dropped row's `eventId` is in processed;
//! - no `eventId` twice in processed; one change-feed insert per key (an
//!   append-only table's inserts are its data files' rows);
//! - every application transaction's version never goes down from one
//!   commit to the next.
//!
//! The data has malformed bodies and re-sent events, spread over four
//! codecs, and is ingested and processed in several runs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use apache_avro::types::Value;
use deltalake::arrow::array::{Array, AsArray, RecordBatch};
use deltalake::arrow::datatypes::Int64Type;
use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use weir::capture::PartitionSet;
use weir::ingest::{ingest, IngestOptions};
use weir::pipeline::parse_pipeline;
use weir::process::{process, ProcessOptions};
use weir_testkit::capture::{generate_dataset, Codec, DatasetSpec};

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

type Lineage = (String, i64);

/// Every (partition, sequence number) → body of the capture files, read
/// with apache-avro.
fn capture_events(root: &Path) -> BTreeMap<Lineage, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let partition = path.strip_prefix(root).unwrap().components().next().unwrap();
            let partition = partition.as_os_str().to_string_lossy().into_owned();
            let reader = apache_avro::Reader::new(std::fs::File::open(&path).unwrap()).unwrap();
            for record in reader {
                let Value::Record(fields) = record.unwrap() else { panic!("not a record") };
                let field = |name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()).unwrap();
                let Value::Long(seq) = field("SequenceNumber") else { panic!("SequenceNumber") };
                let body = match field("Body") {
                    Value::Bytes(b) => b,
                    Value::Union(_, b) => match *b {
                        Value::Bytes(b) => b,
                        _ => Vec::new(),
                    },
                    _ => Vec::new(),
                };
                assert!(out.insert((partition.clone(), seq), body).is_none(), "{partition}/{seq} twice in the input");
            }
        }
    }
    out
}

/// A table read through its log: the data files of the current version
/// (adds minus removes, commit by commit), every commit's application
/// transactions, and the files each commit added.
struct Log {
    live: BTreeSet<String>,
    added: Vec<String>,
    txns: Vec<BTreeMap<String, i64>>,
}

fn read_log(table: &Path) -> Log {
    let mut commits: Vec<PathBuf> = std::fs::read_dir(table.join("_delta_log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    commits.sort();
    let mut log = Log { live: BTreeSet::new(), added: Vec::new(), txns: Vec::new() };
    for (i, commit) in commits.iter().enumerate() {
        let name = commit.file_stem().unwrap().to_string_lossy().parse::<usize>().unwrap();
        assert_eq!(name, i, "commit files are consecutive from 0");
        let mut txns = BTreeMap::new();
        for line in std::fs::read_to_string(commit).unwrap().lines().filter(|l| !l.is_empty()) {
            let action: serde_json::Value = serde_json::from_str(line).unwrap();
            let path = |a: &serde_json::Value| {
                let p = a["path"].as_str().unwrap();
                percent_decode(p)
            };
            if let Some(add) = action.get("add") {
                log.live.insert(path(add));
                if add["dataChange"].as_bool() != Some(false) {
                    log.added.push(path(add));
                }
            }
            if let Some(remove) = action.get("remove") {
                log.live.remove(&path(remove));
            }
            if let Some(txn) = action.get("txn") {
                txns.insert(txn["appId"].as_str().unwrap().to_string(), txn["version"].as_i64().unwrap());
            }
        }
        log.txns.push(txns);
    }
    log
}

/// A log path as a file path (the log percent-encodes them).
fn percent_decode(p: &str) -> String {
    object_store::path::Path::from_url_path(p).unwrap().to_string()
}

fn parquet_rows(table: &Path, files: impl IntoIterator<Item = String>) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    for file in files {
        let f = std::fs::File::open(table.join(&file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let reader = ParquetRecordBatchReaderBuilder::try_new(f).unwrap().build().unwrap();
        out.extend(reader.map(Result::unwrap));
    }
    out
}

fn column_strings(b: &RecordBatch, name: &str) -> Vec<Option<String>> {
    let c = b.column_by_name(name).unwrap_or_else(|| panic!("no column {name}"));
    let c = deltalake::arrow::compute::cast(c, &deltalake::arrow::datatypes::DataType::Utf8).unwrap();
    let c = c.as_string::<i32>();
    (0..c.len()).map(|i| c.is_valid(i).then(|| c.value(i).to_string())).collect()
}

fn lineage(batches: &[RecordBatch], partition: &str, sequence: &str) -> Vec<Lineage> {
    let mut out = Vec::new();
    for b in batches {
        let parts = column_strings(b, partition);
        let seqs = b.column_by_name(sequence).unwrap().as_primitive::<Int64Type>();
        for (i, p) in parts.into_iter().enumerate() {
            out.push((p.unwrap(), seqs.value(i)));
        }
    }
    out
}

fn assert_transactions_monotonic(name: &str, log: &Log) {
    let mut last: HashMap<&str, i64> = HashMap::new();
    for (version, txns) in log.txns.iter().enumerate() {
        for (app, v) in txns {
            if app == "weir/rewrite" {
                continue; // a lease's time, released by a lower one by design
            }
            if let Some(before) = last.get(app.as_str()) {
                assert!(v >= before, "{name}: {app} went from {before} to {v} at version {version}");
            }
            last.insert(app, *v);
        }
    }
}

#[tokio::test]
async fn ingest_and_process_agree_with_an_independent_reading_of_input_and_tables() {
    std::env::set_var("WEIR_ORACLE_PII_KEY", "oracle-key-0123456789abcdef-0123");
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("capture");
    let spec = DatasetSpec {
        partitions: 3,
        windows: 6,
        events_per_file: 40,
        codecs: vec![Codec::Null, Codec::Deflate, Codec::Snappy, Codec::Zstd],
        defect_rate_ppm: 30_000,
        duplicate_rate_ppm: 60_000,
        ..DatasetSpec::small(11)
    };
    let summary = generate_dataset(&capture, &spec).unwrap();
    assert!(summary.malformed > 0 && summary.duplicates > 0, "{summary:?}");

    let example = std::fs::read_to_string(repo().join("pipelines/user_events.yaml")).unwrap();
    let process_section = &example[example.find("\nprocess:").unwrap()..example.find("\ncurate:").unwrap()];
    let lake = dir.path().join("lake");
    let text = format!(
        "name: oracle\nsource:\n  capture:\n    url: {}\nbody:\n  schema: {}\ntables:\n  raw: {{path: {lake}/raw}}\n  processed: {{path: {lake}/processed}}\n  quarantine: {{path: {lake}/quarantine}}\ningest:\n  commit_events: 150\n{}\n",
        capture.display(),
        repo().join("schemas/user_event.avsc").display(),
        process_section.replace("WEIR_PII_KEY", "WEIR_ORACLE_PII_KEY").replace("lookback_days: 7", "lookback_days: 3650"),
        lake = lake.display(),
    );
    let file = dir.path().join("p.yaml");
    std::fs::write(&file, &text).unwrap();
    let pipeline = parse_pipeline(&file, &text, &|_| None).unwrap();
    // Several runs over growing input: partitions one by one.
    for partitions in ["0", "0,1", "0,1,2"] {
        let options = IngestOptions {
            partitions: PartitionSet::parse(partitions).unwrap(),
            dry_run: false,
            run_id: format!("ingest-{partitions}"),
            on_progress: None,
            feed: None,
        };
        ingest(&pipeline, &options).await.unwrap();
        process(
            &pipeline,
            &ProcessOptions { dry_run: false, run_id: format!("process-{partitions}"), route: None, follow: None },
        )
        .await
        .unwrap();
    }

    // Input = raw.
    let input = capture_events(&capture);
    assert_eq!(input.len() as u64, summary.events);
    let raw_dir = lake.join("raw");
    let raw_log = read_log(&raw_dir);
    let raw = parquet_rows(&raw_dir, raw_log.live.iter().cloned());
    let mut raw_rows: BTreeMap<Lineage, Vec<u8>> = BTreeMap::new();
    for b in &raw {
        let parts = column_strings(b, "partition_id");
        let seqs = b.column_by_name("sequence_number").unwrap().as_primitive::<Int64Type>();
        let bodies = b.column_by_name("body").unwrap().as_binary::<i32>();
        for (i, part) in parts.into_iter().enumerate() {
            let key = (part.unwrap(), seqs.value(i));
            assert!(raw_rows.insert(key.clone(), bodies.value(i).to_vec()).is_none(), "{key:?} twice in raw");
        }
    }
    assert_eq!(raw_rows.len(), input.len(), "raw holds every input event once");
    assert!(raw_rows == input, "raw bodies equal the capture files' bodies");

    // Raw = processed ∪ quarantine ∪ dropped duplicates, by lineage.
    let processed_dir = lake.join("processed");
    let processed_log = read_log(&processed_dir);
    let processed = parquet_rows(&processed_dir, processed_log.live.iter().cloned());
    let quarantine_dir = lake.join("quarantine");
    let quarantine_log = read_log(&quarantine_dir);
    let quarantine = parquet_rows(&quarantine_dir, quarantine_log.live.iter().cloned());
    let kept: BTreeSet<Lineage> = lineage(&processed, "_partition_id", "_sequence_number").into_iter().collect();
    let held: BTreeSet<Lineage> = lineage(&quarantine, "_partition_id", "_sequence_number").into_iter().collect();
    assert!(kept.is_disjoint(&held), "a row both processed and quarantined");
    let event_ids: Vec<String> =
        processed.iter().flat_map(|b| column_strings(b, "eventId")).map(Option::unwrap).collect();
    let unique: BTreeSet<&String> = event_ids.iter().collect();
    assert_eq!(unique.len(), event_ids.len(), "an eventId twice in processed");
    let mut dropped = 0;
    for (key, body) in &raw_rows {
        if kept.contains(key) || held.contains(key) {
            continue;
        }
        let event: serde_json::Value = serde_json::from_slice(body).unwrap_or_else(|_| panic!("{key:?} vanished"));
        let id = event["eventId"].as_str().unwrap_or_else(|| panic!("{key:?} vanished without an eventId"));
        assert!(unique.contains(&id.to_string()), "{key:?} was dropped as a duplicate of {id}, not in processed");
        dropped += 1;
    }
    assert!(kept.len() + held.len() + dropped == raw_rows.len());
    eprintln!(
        "oracle: {} input events = raw; {} processed, {} quarantined, {dropped} dropped duplicates",
        input.len(),
        kept.len(),
        held.len()
    );
    assert!(dropped > 0 && !held.is_empty(), "the data exercises dedup ({dropped}) and quarantine ({})", held.len());

    // One insert per key in processed's change feed: its inserts are the
    // rows of the files its commits added (an append-only table).
    let inserted = parquet_rows(&processed_dir, processed_log.added.iter().cloned());
    let inserted_ids: Vec<String> =
        inserted.iter().flat_map(|b| column_strings(b, "eventId")).map(Option::unwrap).collect();
    assert_eq!(inserted_ids.len(), event_ids.len(), "one insert per kept row");
    assert_eq!(inserted_ids.iter().collect::<BTreeSet<_>>(), unique);

    for (name, log) in [("raw", &raw_log), ("processed", &processed_log), ("quarantine", &quarantine_log)] {
        assert_transactions_monotonic(name, log);
    }
}
