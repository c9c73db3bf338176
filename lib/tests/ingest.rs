//! Ingest against real Delta tables on disk and real Avro files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeZone, Utc};
use deltalake::arrow::array::{Array, AsArray, RecordBatch};
use deltalake::arrow::datatypes::{Int64Type, TimestampMicrosecondType};
use weir::capture::PartitionSet;
use weir::ingest::{ingest, IngestOptions};
use weir::lake::Marker;
use weir::pipeline::{parse_pipeline, LoadedPipeline};
use weir::report::StageReport;
use weir::storage::Location;
use weir_testkit::capture::{
    capture_path, corrupt, generate_dataset, user_event_body, write_capture_file, CaptureEvent, Codec, Corruption,
    DatasetSpec, FileSpec, PropValue, Rng, TimeFormat, UnionStyle,
};

fn pipeline(dir: &Path, capture: &Path, extra: &str) -> LoadedPipeline {
    let text = format!(
        "name: t\nsource:\n  capture:\n    url: {}\n{extra}tables:\n  raw:\n    path: {}\n",
        capture.display(),
        dir.join("lake/raw").display()
    );
    parse_pipeline(&dir.join("p.yaml"), &text, &|_| None).expect("valid pipeline")
}

fn options() -> IngestOptions {
    IngestOptions::new("test-run")
}

async fn run(p: &LoadedPipeline) -> StageReport {
    ingest(p, &options()).await.expect("ingest")
}

async fn raw_table(dir: &Path) -> deltalake::DeltaTable {
    let loc = Location::parse(dir.join("lake/raw").to_str().unwrap()).unwrap();
    weir::delta::open(&loc).await.unwrap().expect("raw table exists")
}

/// The exact multiset of (partition, sequence) in the raw table, sorted.
async fn keys(dir: &Path) -> Vec<(String, i64)> {
    let table = raw_table(dir).await;
    let batches: Vec<RecordBatch> = weir::delta::read_all(&table).await.unwrap();
    let mut out = Vec::new();
    for b in &batches {
        let p = deltalake::arrow::compute::cast(
            b.column_by_name("partition_id").unwrap(),
            &deltalake::arrow::datatypes::DataType::Utf8,
        )
        .unwrap();
        let p = p.as_string::<i32>();
        let s = b.column_by_name("sequence_number").unwrap().as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            out.push((p.value(i).to_string(), s.value(i)));
        }
    }
    out.sort();
    out
}

fn expected_keys(last: &BTreeMap<String, i64>) -> Vec<(String, i64)> {
    let mut v: Vec<(String, i64)> = last.iter().flat_map(|(p, l)| (0..=*l).map(move |s| (p.clone(), s))).collect();
    v.sort();
    v
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 8, 0, 0).unwrap()
}

fn events(first_seq: i64, n: i64, at: DateTime<Utc>) -> Vec<CaptureEvent> {
    let mut rng = Rng::new(first_seq as u64 + 7);
    (first_seq..first_seq + n)
        .map(|seq| CaptureEvent {
            sequence_number: seq,
            offset: (seq * 512).to_string(),
            enqueued_time: at + chrono::Duration::seconds(seq - first_seq),
            system_properties: vec![("x-opt-sequence-number".into(), PropValue::Long(seq))],
            properties: vec![
                ("source".into(), PropValue::Str("web".into())),
                ("score".into(), PropValue::Double(0.5)),
                ("trace".into(), PropValue::Bytes(vec![0xff, 0x00, 0x10])),
            ],
            body: Some(user_event_body(&mut rng, seq, at)),
        })
        .collect()
}

fn write(root: &Path, partition: &str, window: DateTime<Utc>, events: &[CaptureEvent], spec: &FileSpec) -> PathBuf {
    let path = root.join(capture_path(partition, window));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, write_capture_file(events, spec).unwrap()).unwrap();
    path
}

fn real_capture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/real-capture/05.avro")
}

#[test]
fn real_azure_capture_file_decodes() {
    let bytes = std::fs::read(real_capture()).unwrap();
    let decoded = weir::capture::decode_capture_file(&bytes).unwrap();
    let b = &decoded.batch;
    assert_eq!(decoded.codec, "null");
    assert_eq!(b.num_rows(), 1);
    assert_eq!(b.column(0).as_primitive::<Int64Type>().value(0), 0);
    assert_eq!(b.column(1).as_string::<i32>().value(0), "0");
    let t = b.column(2).as_primitive::<TimestampMicrosecondType>().value(0);
    assert_eq!(DateTime::from_timestamp_micros(t).unwrap().to_rfc3339(), "2016-11-16T16:44:11+00:00");
    let sys = b.column(3).as_map();
    let entries = sys.value(0);
    let k = entries.column(0).as_string::<i32>();
    let v = entries.column(1).as_string::<i32>();
    let pairs: Vec<(&str, &str)> = (0..k.len()).map(|i| (k.value(i), v.value(i))).collect();
    assert!(pairs.contains(&("x-opt-publisher", "buddy1234")), "{pairs:?}");
    assert_eq!(b.column(4).as_map().value(0).len(), 0, "empty Properties");
    assert_eq!(b.column(5).as_binary::<i32>().value(0), br#"{"field1": "value1", "field2": "value2"}"#);
}

#[test]
fn every_codec_union_and_time_format_decodes_identically() {
    let at = Utc.with_ymd_and_hms(2026, 11, 1, 16, 4, 5).unwrap();
    let mut evs = events(100, 30, at);
    evs[3].body = None;
    let mut reference = None;
    for codec in [Codec::Null, Codec::Deflate, Codec::Snappy, Codec::Zstd] {
        for union_style in [UnionStyle::Legacy, UnionStyle::WithNull] {
            for time_format in [TimeFormat::Us, TimeFormat::Iso] {
                let mut these = evs.clone();
                if union_style == UnionStyle::WithNull {
                    these[0].properties.push(("maybe".into(), PropValue::Null));
                }
                let spec = FileSpec { codec, union_style, time_format };
                let bytes = write_capture_file(&these, &spec).unwrap();
                let d = weir::capture::decode_capture_file(&bytes)
                    .unwrap_or_else(|e| panic!("{codec:?} {union_style:?} {time_format:?}: {e}"));
                assert_eq!(d.batch.num_rows(), 30);
                let seqs: Vec<i64> = d.batch.column(0).as_primitive::<Int64Type>().values().to_vec();
                assert_eq!(seqs, (100..130).collect::<Vec<_>>());
                let times = d.batch.column(2).as_primitive::<TimestampMicrosecondType>();
                assert_eq!(times.value(5), (at + chrono::Duration::seconds(5)).timestamp_micros());
                assert!(d.batch.column(5).is_null(3), "null body stays null");
                let props = d.batch.column(4).as_map().value(1);
                let k = props.column(0).as_string::<i32>();
                let v = props.column(1).as_string::<i32>();
                let got: BTreeMap<&str, &str> = (0..k.len()).map(|i| (k.value(i), v.value(i))).collect();
                assert_eq!(got["source"], "web");
                assert_eq!(got["score"], "0.5");
                assert_eq!(got["trace"], "base64:/wAQ", "non-UTF-8 bytes are base64");
                if union_style == UnionStyle::WithNull {
                    let first = d.batch.column(4).as_map().value(0);
                    assert_eq!(first.column(1).null_count(), 1, "null union member is a null value");
                }
                // Same rows whatever the codec (excluding the null-union extra key).
                let body: Vec<Option<Vec<u8>>> =
                    d.batch.column(5).as_binary::<i32>().iter().map(|b| b.map(<[u8]>::to_vec)).collect();
                match &reference {
                    None => reference = Some(body),
                    Some(r) => assert_eq!(r, &body),
                }
            }
        }
    }
}

#[test]
fn corrupt_files_are_refused_with_a_reason() {
    let evs = events(0, 200, t0());
    let good = write_capture_file(&evs, &FileSpec { codec: Codec::Deflate, ..FileSpec::default() }).unwrap();
    let cases = [
        (Corruption::Truncate { keep: good.len() - 40 }, "truncated"),
        (Corruption::BadMagic, "bad magic"),
        (Corruption::BadSync, "sync marker"),
        (Corruption::GarbageBlock, "block 0: corrupt deflate data"),
    ];
    for (how, reason) in cases {
        let bad = corrupt(&good, how);
        let e = weir::capture::decode_capture_file(&bad).expect_err(&format!("{how:?} must fail"));
        assert!(e.reason.contains(reason), "{how:?}: {e}");
    }
    let empty = write_capture_file(&[], &FileSpec::default()).unwrap();
    assert_eq!(weir::capture::decode_capture_file(&empty).unwrap().batch.num_rows(), 0);
}

/// Files cut off before their header says so: an empty file and a
/// two-byte file are reported as empty and truncated, not as foreign files
/// with a bad magic.
#[tokio::test]
async fn empty_and_two_byte_files_are_reported_as_empty_and_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("capture");
    for (partition, bytes) in [("0", &b""[..]), ("1", b"Ob"), ("2", b"\0\0")] {
        let path = write(&capture, partition, t0(), &events(0, 3, t0()), &FileSpec::default());
        std::fs::write(path, bytes).unwrap();
    }
    let r = run(&pipeline(dir.path(), &capture, "    on_corrupt_file: skip\n")).await;
    let mut reasons: Vec<(String, String)> = r
        .problems
        .iter()
        .filter(|p| p.kind == "corrupt_file")
        .map(|p| (p.file.clone().unwrap_or_default(), p.message.clone()))
        .collect();
    reasons.sort();
    assert_eq!(reasons.len(), 3, "{reasons:#?}");
    assert!(reasons[0].1.starts_with("0/2026/11/01/08/00/00.avro: empty file (0 bytes"), "{reasons:#?}");
    assert!(reasons[1].1.starts_with("1/2026/11/01/08/00/00.avro: truncated file (2 bytes"), "{reasons:#?}");
    assert!(reasons[2].1.starts_with("2/2026/11/01/08/00/00.avro: truncated file (2 bytes"), "{reasons:#?}");
}

#[tokio::test]
async fn ingests_everything_once_and_reruns_are_no_ops() {
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("capture");
    let spec =
        DatasetSpec { codecs: vec![Codec::Null, Codec::Deflate, Codec::Snappy, Codec::Zstd], ..DatasetSpec::small(11) };
    let summary = generate_dataset(&capture, &spec).unwrap();
    // 4 KiB commits: many commits, each with its own watermarks.
    let p = pipeline(dir.path(), &capture, "ingest:\n  commit_bytes: 4096\n");

    let first = run(&p).await;
    assert_eq!(first.events_written, summary.events);
    assert!(first.problems.is_empty(), "{:?}", first.problems);
    assert!(first.tables[0].versions_written.len() > 3, "cut into several commits");
    assert_eq!(keys(dir.path()).await, expected_keys(&summary.per_partition_last_sequence));

    let table = raw_table(dir.path()).await;
    for (partition, last) in &summary.per_partition_last_sequence {
        let w = weir::delta::progress(&table, &Marker::IngestWatermark { pipeline: "t", partition }.app_id())
            .await
            .unwrap();
        assert_eq!(w, Some(*last), "watermark of partition {partition}");
        assert_eq!(first.partitions[partition].watermark_after, Some(*last));
    }
    let config = table.snapshot().unwrap().metadata().configuration().clone();
    assert_eq!(config.get("delta.enableChangeDataFeed").map(String::as_str), Some("true"));
    let version = table.version();

    let second = run(&p).await;
    assert_eq!(second.events_written, 0);
    assert_eq!((second.files_read, second.events_already_ingested), (0, 0), "no file is read again");
    assert_eq!(second.files_skipped_as_done, summary.files);
    assert!(second.tables[0].versions_written.is_empty());
    assert_eq!(raw_table(dir.path()).await.version(), version, "no commit when nothing is new");
}

/// `ingest.commit_memory_mb` cuts commits by the decoded size of their
/// events, where `commit_bytes` (capture bytes, which a codec shrinks)
/// would not: four files of 4,000 events, each over 1 MiB decoded.
#[tokio::test]
async fn commits_are_cut_by_their_decoded_size() {
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("capture");
    let spec = DatasetSpec {
        partitions: 2,
        windows: 2,
        events_per_file: 4_000,
        codecs: vec![Codec::Deflate],
        ..DatasetSpec::small(5)
    };
    let summary = generate_dataset(&capture, &spec).unwrap();
    let whole = pipeline(dir.path(), &capture, "");
    let one = run(&whole).await;
    assert_eq!((one.events_written, one.tables[0].versions_written.len()), (summary.events, 1));

    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), &capture, "ingest:\n  commit_memory_mb: 1\n");
    let cut = run(&p).await;
    assert!(cut.problems.is_empty(), "{:?}", cut.problems);
    assert!(cut.tables[0].versions_written.len() >= 4, "{:?}", cut.tables[0].versions_written);
    assert_eq!(keys(dir.path()).await, expected_keys(&summary.per_partition_last_sequence));
}

#[tokio::test]
async fn late_backfilled_file_with_newer_sequences_is_ingested() {
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("capture");
    let spec = FileSpec::default();
    write(&capture, "0", t0(), &events(0, 10, t0()), &spec);
    write(&capture, "0", t0() + chrono::Duration::minutes(10), &events(10, 10, t0()), &spec);
    let p = pipeline(dir.path(), &capture, "");
    assert_eq!(run(&p).await.events_written, 20);

    // Written late, for an older window, but holding the next sequences.
    write(&capture, "0", t0() + chrono::Duration::minutes(5), &events(20, 5, t0()), &spec);
    let r = run(&p).await;
    assert_eq!(r.events_written, 5);
    assert_eq!(keys(dir.path()).await, expected_keys(&BTreeMap::from([("0".to_string(), 24)])));
}

#[tokio::test]
async fn sequence_gap_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("capture");
    let spec = FileSpec::default();
    write(&capture, "2", t0(), &events(0, 10, t0()), &spec);
    write(&capture, "2", t0() + chrono::Duration::minutes(10), &events(15, 5, t0()), &spec);
    let r = run(&pipeline(dir.path(), &capture, "")).await;
    let gaps = &r.partitions["2"].gaps;
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert_eq!((gaps[0].from, gaps[0].to), (10, 14));
    assert!(gaps[0].before_file.ends_with("08/10/00.avro"), "{}", gaps[0].before_file);
    assert!(r.problems.iter().any(|p| p.kind == "sequence_gap" && p.blocking), "a gap needs a human");
    assert_eq!(r.events_written, 15);
}

#[tokio::test]
async fn corrupt_file_halts_its_partition_only_and_skip_moves_on() {
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("capture");
    let spec = FileSpec { codec: Codec::Deflate, ..FileSpec::default() };
    for p in ["0", "1"] {
        write(&capture, p, t0(), &events(0, 10, t0()), &spec);
        let bad = write(&capture, p, t0() + chrono::Duration::minutes(5), &events(10, 10, t0()), &spec);
        if p == "1" {
            let good = std::fs::read(&bad).unwrap();
            std::fs::write(&bad, corrupt(&good, Corruption::Truncate { keep: good.len() / 2 })).unwrap();
        }
        write(&capture, p, t0() + chrono::Duration::minutes(10), &events(20, 10, t0()), &spec);
    }
    let halt = pipeline(dir.path(), &capture, "");
    let r = run(&halt).await;
    assert_eq!(r.partitions["0"].watermark_after, Some(29));
    assert_eq!(r.partitions["1"].watermark_after, Some(9), "stops before the corrupt file");
    assert_eq!(r.partitions["1"].halted_at.as_deref(), Some("1/2026/11/01/08/05/00.avro"));
    let problem = r.problems.iter().find(|p| p.kind == "corrupt_file").expect("reported");
    assert!(problem.blocking);
    assert_eq!(problem.file.as_deref(), Some("1/2026/11/01/08/05/00.avro"));
    assert!(problem.message.contains("truncated"), "{}", problem.message);

    // A rerun still stops there: nothing is skipped silently.
    let again = run(&halt).await;
    assert_eq!(again.events_written, 0);
    assert_eq!(again.partitions["1"].halted_at.as_deref(), Some("1/2026/11/01/08/05/00.avro"));

    let skip = pipeline(dir.path(), &capture, "    on_corrupt_file: skip\n");
    let r = run(&skip).await;
    assert_eq!(r.events_written, 10);
    assert_eq!(r.partitions["1"].watermark_after, Some(29));
    assert!(r.problems.iter().any(|p| p.kind == "corrupt_file" && !p.blocking));
    assert!(r.problems.iter().all(|p| !p.blocking), "the gap of a skipped file is expected: {:?}", r.problems);
    assert_eq!(r.partitions["1"].gaps.first().map(|g| (g.from, g.to)), Some((10, 19)));
    let mut want = expected_keys(&BTreeMap::from([("0".to_string(), 29), ("1".to_string(), 29)]));
    want.retain(|(p, s)| !(p == "1" && (10..20).contains(s)));
    assert_eq!(keys(dir.path()).await, want);
}

#[tokio::test]
async fn partition_selection_and_dry_run() {
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("capture");
    let summary = generate_dataset(&capture, &DatasetSpec::small(5)).unwrap();
    let p = pipeline(dir.path(), &capture, "");

    let dry = ingest(&p, &IngestOptions { dry_run: true, ..options() }).await.unwrap();
    assert_eq!(dry.events_written, summary.events);
    assert!(!dir.path().join("lake/raw/_delta_log").exists(), "a dry run writes nothing");

    let only =
        ingest(&p, &IngestOptions { partitions: PartitionSet::parse("0,2").unwrap(), ..options() }).await.unwrap();
    let got = keys(dir.path()).await;
    let mut want = expected_keys(&summary.per_partition_last_sequence);
    want.retain(|(p, _)| p == "0" || p == "2");
    assert!(!want.is_empty());
    assert_eq!(got, want, "exactly partitions 0 and 2");
    assert_eq!(only.events_written as usize, got.len());
    run(&p).await;
    assert_eq!(keys(dir.path()).await, expected_keys(&summary.per_partition_last_sequence));
}

#[tokio::test]
async fn unmatched_objects_are_reported_not_guessed() {
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("capture");
    write(&capture, "0", t0(), &events(0, 3, t0()), &FileSpec::default());
    std::fs::write(capture.join("0/notes.txt"), "x").unwrap();
    std::fs::create_dir_all(capture.join("0/2026/11")).unwrap();
    std::fs::write(capture.join("0/2026/11/stray.avro"), "x").unwrap();
    let r = run(&pipeline(dir.path(), &capture, "")).await;
    assert_eq!(r.unmatched_files.count, 2);
    assert_eq!(r.unmatched_files.sample, vec!["0/2026/11/stray.avro", "0/notes.txt"]);
    assert_eq!(r.events_written, 3);
}

#[test]
fn committed_bad_and_edge_files_decode_as_documented() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/bad");
    let decode = |name: &str| weir::capture::decode_capture_file(&std::fs::read(dir.join(name)).unwrap());
    for (name, reason) in [
        ("truncated.avro", "truncated"),
        ("bad-magic.avro", "bad magic"),
        ("bad-sync.avro", "sync marker"),
        ("garbage-block.avro", "block 0: corrupt deflate data"),
    ] {
        let e = decode(name).expect_err(name);
        assert!(e.reason.contains(reason), "{name}: {e}");
    }
    assert_eq!(decode("empty-header-only.avro").unwrap().batch.num_rows(), 0);
    for (name, third) in [
        ("us-time-legacy-union.avro", "2026-11-02T00:30:05+00:00"),
        ("iso-time-with-null-union.avro", "2026-11-02T00:30:05.250+00:00"),
    ] {
        let b = decode(name).unwrap().batch;
        assert_eq!(b.num_rows(), 3, "{name}");
        let t = b.column(2).as_primitive::<TimestampMicrosecondType>().value(2);
        assert_eq!(DateTime::from_timestamp_micros(t).unwrap().to_rfc3339(), third, "{name}: 12 AM is midnight");
        assert!(b.column(5).is_null(2), "{name}: null body");
        assert_eq!(b.column(1).as_string::<i32>().value(1), "312");
    }
}

#[tokio::test]
async fn backfill_read_in_the_same_run_fills_the_gap() {
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("capture");
    let spec = FileSpec::default();
    write(&capture, "0", t0(), &events(0, 10, t0()), &spec);
    // Back-filled under an older path than the file holding 10..19.
    write(&capture, "0", t0() + chrono::Duration::minutes(5), &events(20, 5, t0()), &spec);
    write(&capture, "0", t0() + chrono::Duration::minutes(10), &events(10, 10, t0()), &spec);
    write(&capture, "0", t0() + chrono::Duration::minutes(15), &events(25, 5, t0()), &spec);
    let r = run(&pipeline(dir.path(), &capture, "ingest:\n  commit_bytes: 1\n")).await;
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(r.events_written, 30);
    assert_eq!(keys(dir.path()).await, expected_keys(&BTreeMap::from([("0".to_string(), 29)])));
}

#[tokio::test]
async fn several_event_hubs_under_one_source_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("capture");
    for hub in ["ns/orders", "ns/clicks"] {
        write(&capture.join(hub), "0", t0(), &events(0, 3, t0()), &FileSpec::default());
    }
    let p = pipeline(
        dir.path(),
        &capture,
        "    path_format: \"{Namespace}/{EventHub}/{PartitionId}/{Year}/{Month}/{Day}/{Hour}/{Minute}/{Second}\"\n",
    );
    let e = ingest(&p, &options()).await.expect_err("two hubs, one watermark per partition");
    assert_eq!(e.class(), weir::ErrorClass::Config);
    assert!(e.to_string().contains("ns/clicks, ns/orders"), "{e}");
}

#[test]
fn block_count_that_disagrees_with_its_size_is_corrupt() {
    let good = write_capture_file(&events(0, 3, t0()), &FileSpec::default()).unwrap();
    let framing = weir::capture::container::scan_container(&good).unwrap();
    assert_eq!((framing.blocks, framing.records), (1, 3));
    // Rewrite the block's record count (zig-zag 3 = 6) to 0.
    let header_end = good.len() - framing_block_len(&good);
    let mut bad = good.clone();
    assert_eq!(bad[header_end], 6);
    bad[header_end] = 0;
    let e = weir::capture::decode_capture_file(&bad).unwrap_err();
    assert!(e.reason.contains("0 records in"), "{e}");
}

/// Bytes of the single data block (count, size, data, sync) at the file's end.
fn framing_block_len(file: &[u8]) -> usize {
    // Walk back: the block is `count size data sync`; find the offset whose
    // varints describe exactly the rest of the file.
    (0..file.len())
        .rev()
        .find(|&at| {
            let (count, n1) = varint(&file[at..]);
            if count != 3 || at + n1 >= file.len() {
                return false;
            }
            let (size, n2) = varint(&file[at + n1..]);
            size >= 0 && (at + n1 + n2).checked_add(size as usize + 16) == Some(file.len())
        })
        .map(|at| file.len() - at)
        .expect("one block")
}

fn varint(b: &[u8]) -> (i64, usize) {
    let mut v: u64 = 0;
    for (i, byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return ((v >> 1) as i64 ^ -((v & 1) as i64), i + 1);
        }
    }
    (-1, 1)
}

#[tokio::test]
async fn a_table_of_another_pipeline_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("capture");
    write(&capture, "0", t0(), &events(0, 3, t0()), &FileSpec::default());
    run(&pipeline(dir.path(), &capture, "")).await;
    let renamed = format!(
        "name: renamed\nsource:\n  capture:\n    url: {}\ntables:\n  raw:\n    path: {}\n",
        capture.display(),
        dir.path().join("lake/raw").display()
    );
    let p = parse_pipeline(&dir.path().join("p.yaml"), &renamed, &|_| None).unwrap();
    let e = ingest(&p, &options()).await.expect_err("renamed pipeline on an old table");
    assert_eq!(e.class(), weir::ErrorClass::Config);
    assert!(e.to_string().contains("created as 't_raw'"), "{e}");
    assert_eq!(keys(dir.path()).await.len(), 3, "nothing written twice");
}

#[tokio::test]
async fn files_far_behind_the_newest_window_are_not_read_again() {
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("capture");
    let spec = FileSpec::default();
    let h = chrono::Duration::hours;
    write(&capture, "0", t0(), &events(0, 5, t0()), &spec);
    write(&capture, "0", t0() + h(1), &events(5, 5, t0()), &spec);
    write(&capture, "0", t0() + h(30), &events(10, 5, t0()), &spec);
    let p = pipeline(dir.path(), &capture, "");
    assert_eq!(run(&p).await.events_written, 15);

    // A back-fill within the 24 h lookback is found; older files are not re-read.
    write(&capture, "0", t0() + h(10), &events(15, 5, t0()), &spec);
    // `weir plan` asks ingest's own planning: it names the files the run reads.
    let options = IngestOptions {
        partitions: PartitionSet::all(),
        dry_run: true,
        run_id: String::new(),
        on_progress: None,
        feed: None,
    };
    let plan = weir::stage::plan(&p, &options).await.unwrap();
    let r = run(&p).await;
    assert_eq!(r.events_written, 5);
    assert_eq!((plan.files, plan.partitions["0"].files), (r.files_read, r.files_read), "{plan:?}");
    assert_eq!(plan.partitions["0"].watermark, Some(14));
    assert_eq!(plan.new_files, 0, "the back-fill is older than the newest window ingested");
    assert_eq!(r.files_skipped_as_done, 3, "hours 0 and 1 behind the lookback, hour 30 read to its end before");
    assert_eq!(r.files_read, 1, "only the back-fill");
    assert_eq!(keys(dir.path()).await, expected_keys(&BTreeMap::from([("0".to_string(), 19)])));

    // lookback_hours: 0 lists every file again. The ledger dropped the
    // files behind the 24 h lookback, so those two are read once more; from
    // then on it keeps every file.
    let all = pipeline(dir.path(), &capture, "ingest:\n  lookback_hours: 0\n");
    let r = run(&all).await;
    assert_eq!((r.files_read, r.files_skipped_as_done, r.events_written), (2, 2, 0));
    let r = run(&all).await;
    assert_eq!((r.files_read, r.files_skipped_as_done, r.events_written), (0, 4, 0));
    // Without its ledger the table's watermark still decides: every file is
    // read again and nothing is taken twice.
    std::fs::remove_dir_all(dir.path().join("lake/raw/_weir")).unwrap();
    let r = run(&all).await;
    assert_eq!((r.files_read, r.files_skipped_as_done, r.events_written, r.events_already_ingested), (4, 0, 0, 20));
}

/// The ledger of files read (`_weir/ingest/<partition>.json` in the raw
/// table) only ever saves a reread: a file rewritten in place is read again,
/// and a file the ledger claims but whose numbers the table's watermark does
/// not cover is read (a ledger ahead of the table, e.g. after a crash
/// between a commit and the ledger's write, or a forged one).
#[tokio::test]
async fn a_ledger_entry_never_hides_events_the_table_does_not_hold() {
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("capture");
    let spec = FileSpec::default();
    let first = write(&capture, "0", t0(), &events(0, 5, t0()), &spec);
    let p = pipeline(dir.path(), &capture, "");
    assert_eq!(run(&p).await.events_written, 5);

    // Capture files do not change, but a tool that rewrites one with more
    // events must not have them skipped.
    std::fs::write(&first, write_capture_file(&events(0, 8, t0()), &spec).unwrap()).unwrap();
    let r = run(&p).await;
    assert_eq!((r.files_read, r.events_written, r.events_already_ingested), (1, 3, 5));

    // A new file the ledger claims with numbers above the watermark.
    let later = t0() + chrono::Duration::minutes(5);
    let new = write(&capture, "0", later, &events(8, 2, later), &spec);
    let ledger_path = dir.path().join("lake/raw/_weir/ingest/0.json");
    let mut ledger: serde_json::Value = serde_json::from_slice(&std::fs::read(&ledger_path).unwrap()).unwrap();
    assert_eq!(ledger["files"].as_array().unwrap().len(), 1, "{ledger}");
    ledger["files"].as_array_mut().unwrap().push(serde_json::json!({
        "name": "0/2026/11/01/08/05/00.avro",
        "size": std::fs::metadata(&new).unwrap().len(),
        "window": later.timestamp(),
        "last": 9,
    }));
    std::fs::write(&ledger_path, serde_json::to_vec(&ledger).unwrap()).unwrap();
    let r = run(&p).await;
    assert_eq!((r.files_read, r.files_skipped_as_done, r.events_written), (1, 1, 2));
    assert_eq!(keys(dir.path()).await, expected_keys(&BTreeMap::from([("0".to_string(), 9)])));

    // A ledger that cannot be read is a reread, not an error.
    std::fs::write(&ledger_path, b"{not json").unwrap();
    let r = run(&p).await;
    assert_eq!((r.files_read, r.events_written, r.events_already_ingested), (2, 0, 10));
    let r = run(&p).await;
    assert_eq!((r.files_read, r.files_skipped_as_done), (0, 2), "the ledger is written again");
}

/// Events of the given sequence numbers, in that order, one a second.
fn events_in_order(seqs: impl IntoIterator<Item = i64>) -> Vec<CaptureEvent> {
    seqs.into_iter().flat_map(|s| events(s, 1, t0())).collect()
}

/// Within one capture file the order of sequence numbers does not matter:
/// a file running backwards (57 down to 48) is ingested whole, on a fresh
/// partition and after earlier files; gaps are found over the file's sorted
/// numbers; a rerun adds nothing. Numbers below the high mark in a later file
/// of the same run, never ingested, are reported as out of order.
#[tokio::test]
async fn a_file_whose_sequence_numbers_run_backwards_is_ingested_whole() {
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("capture");
    let spec = FileSpec::default();
    let later = t0() + chrono::Duration::minutes(5);
    // 0: only the backwards file. 1: after a file ending at 47.
    write(&capture, "0", t0(), &events_in_order((48..=57).rev()), &spec);
    write(&capture, "1", t0(), &events_in_order(0..=47), &spec);
    write(&capture, "1", later, &events_in_order((48..=57).rev()), &spec);
    // 2: shuffled, with 7 really missing and 4 given twice.
    write(&capture, "2", t0(), &events_in_order(0..=2), &spec);
    write(&capture, "2", later, &events_in_order([5, 3, 9, 4, 8, 4, 6]), &spec);
    // 3: a later file holding numbers below the partition's high mark.
    write(&capture, "3", t0(), &events_in_order(10..=19), &spec);
    write(&capture, "3", later, &events_in_order([4, 3, 20, 2]), &spec);
    let p = pipeline(dir.path(), &capture, "");

    let r = run(&p).await;
    let written: BTreeMap<&str, u64> = r.partitions.iter().map(|(k, v)| (k.as_str(), v.events_written)).collect();
    assert_eq!(written, BTreeMap::from([("0", 10), ("1", 58), ("2", 9), ("3", 11)]));
    let watermarks: Vec<Option<i64>> = r.partitions.values().map(|p| p.watermark_after).collect();
    assert_eq!(watermarks, vec![Some(57), Some(57), Some(9), Some(20)]);
    let gaps: Vec<(&str, i64, i64)> =
        r.partitions.iter().flat_map(|(k, p)| p.gaps.iter().map(move |g| (k.as_str(), g.from, g.to))).collect();
    assert_eq!(gaps, vec![("2", 7, 7)]);
    let problems: Vec<(&str, Option<&str>, bool)> =
        r.problems.iter().map(|p| (p.kind.as_str(), p.partition.as_deref(), p.blocking)).collect();
    assert_eq!(
        problems,
        vec![("sequence_gap", Some("2"), true), ("out_of_order", Some("3"), true)],
        "{:?}",
        r.problems
    );
    let out_of_order = &r.problems[1].message;
    assert!(out_of_order.contains("2..=4") && out_of_order.contains("08/05/00.avro"), "{out_of_order}");
    assert_eq!(r.events_already_ingested, 1, "the second copy of 4");
    let mut want: Vec<(String, i64)> = (48..=57).map(|s| ("0".to_string(), s)).collect();
    want.extend((0..=57).map(|s| ("1".to_string(), s)));
    want.extend([0, 1, 2, 3, 4, 5, 6, 8, 9].map(|s| ("2".to_string(), s)));
    want.extend((10..=20).map(|s| ("3".to_string(), s)));
    assert_eq!(keys(dir.path()).await, want);

    // Every file was read to its end: the rerun reads none of them again.
    let again = run(&p).await;
    let read = (again.events_written, again.events_already_ingested, again.files_read, again.files_skipped_as_done);
    assert_eq!(read, (0, 0, 0, 7), "{:?}", again.problems);
    assert!(again.problems.is_empty(), "{:?}", again.problems);
    assert_eq!(keys(dir.path()).await, want);
}

/// Commits cut as small as they go (`commit_events: 1`) through files out of
/// order, each of several chunks: one in swapped pairs, one running
/// backwards, one interleaving two halves. A crash leaves the table at some
/// version and the rerun takes every number above that version's
/// watermark; so at every version the table must hold exactly the numbers
/// up to its watermark, each once. Commits are cut inside the file whose
/// numbers run without a hole after each chunk, never inside the others
/// (all three are the same size, so a cut inside the first shows that each
/// is several chunks).
#[tokio::test]
async fn commits_cut_inside_files_out_of_order_keep_every_version_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("capture");
    let spec = FileSpec::default();
    let at = |m: i64| t0() + chrono::Duration::minutes(m);
    write(&capture, "0", at(0), &events_in_order(0..1_000), &spec);
    write(&capture, "0", at(5), &events_in_order((1_000..7_000).map(|s| s ^ 1)), &spec);
    write(&capture, "0", at(10), &events_in_order((7_000..13_000).rev()), &spec);
    let halves = (13_000..16_000).flat_map(|s| [s, s + 3_000]);
    write(&capture, "0", at(15), &events_in_order(halves), &spec);
    let p = pipeline(dir.path(), &capture, "ingest:\n  commit_events: 1\n");

    let r = run(&p).await;
    assert!(r.problems.is_empty(), "{} problems, the first: {:?}", r.problems.len(), r.problems.first());
    assert_eq!(r.events_written, 19_000);
    let all: Vec<(String, i64)> = (0..19_000).map(|s| ("0".to_string(), s)).collect();
    assert_eq!(keys(dir.path()).await, all);

    let mut table = raw_table(dir.path()).await;
    let id = Marker::IngestWatermark { pipeline: "t", partition: "0" }.app_id();
    let mut marks = Vec::new();
    for v in r.tables[0].versions_written.iter().copied() {
        table.load_version(v).await.unwrap();
        let w = weir::delta::progress(&table, &id).await.unwrap().expect("a watermark");
        let mut held: Vec<(String, i64)> = Vec::new();
        for b in weir::delta::read_all(&table).await.unwrap() {
            let s = b.column_by_name("sequence_number").unwrap().as_primitive::<Int64Type>();
            held.extend(s.values().iter().map(|s| ("0".to_string(), *s)));
        }
        held.sort();
        assert_eq!(held, all[..=w as usize].to_vec(), "version {v}: exactly the numbers up to its watermark {w}");
        marks.push(w);
    }
    assert!(marks.iter().any(|w| (1_000..6_999).contains(w)), "cut inside the file in swapped pairs: {marks:?}");
    assert!(!marks.iter().any(|w| (7_000..12_999).contains(w) || (13_000..18_999).contains(w)), "{marks:?}");
    assert_eq!(marks.last(), Some(&18_999));
    let again = run(&p).await;
    let read = (again.events_written, again.events_already_ingested, again.files_read, again.files_skipped_as_done);
    assert_eq!(read, (0, 0, 0, 4));
}
