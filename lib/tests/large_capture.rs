//! Capture files of production size: more records than one decoder batch,
//! written and read back by Apache's Rust Avro library (an encoder and a
//! reader independent of Weir's), decoded by Weir row for row; then ingested
//! and processed into real Delta tables, commits cut inside the files.

use std::collections::BTreeMap;
use std::path::Path;

use apache_avro::types::Value;
use chrono::{Duration, NaiveDateTime, TimeZone, Utc};
use deltalake::arrow::array::{Array, AsArray, RecordBatch};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType, Int64Type, TimestampMicrosecondType};
use weir::capture::{decode_capture_file, decode_chunk, Splitter};
use weir::ingest::{ingest, IngestOptions};
use weir::pipeline::{parse_pipeline, LoadedPipeline};
use weir::process::{process, ProcessOptions};
use weir::storage::Location;
use weir_testkit::capture::{capture_path, capture_schema_json, user_event_body, Codec, Rng, UnionStyle};

/// One decoded event, in a form both readers can produce.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    sequence_number: i64,
    offset: String,
    enqueued_micros: i64,
    system_properties: Option<BTreeMap<String, Option<String>>>,
    properties: Option<BTreeMap<String, Option<String>>>,
    body: Option<Vec<u8>>,
}

fn codec(c: Codec) -> apache_avro::Codec {
    match c {
        Codec::Null => apache_avro::Codec::Null,
        Codec::Deflate => apache_avro::Codec::Deflate(apache_avro::DeflateSettings::default()),
        Codec::Snappy => apache_avro::Codec::Snappy,
        Codec::Zstd => apache_avro::Codec::Zstandard(apache_avro::ZstandardSettings::default()),
    }
}

/// Union branch indices of Capture's map values: long, double, string, bytes[, null].
fn long(v: i64) -> Value {
    Value::Union(0, Box::new(Value::Long(v)))
}
fn double(v: f64) -> Value {
    Value::Union(1, Box::new(Value::Double(v)))
}
fn string(v: &str) -> Value {
    Value::Union(2, Box::new(Value::String(v.into())))
}
fn bytes(v: &[u8]) -> Value {
    Value::Union(3, Box::new(Value::Bytes(v.to_vec())))
}

/// Record `i` of a test file: every union branch, empty maps, null bodies,
/// a branch first seen after record 8,192, and (with the `null` branch)
/// records whose values are all null, the shape of apache/arrow-rs#10876.
/// With `user_bodies`, bodies are the example pipeline's user events
/// (which process parses); otherwise small JSON objects.
fn record(i: i64, style: UnionStyle, user_bodies: bool) -> Value {
    let at = Utc.with_ymd_and_hms(2026, 11, 20, 10, 0, 0).unwrap() + Duration::seconds(i / 40);
    let seq = 5_000_000 + i;
    let offset = (i * 517).to_string();
    let mut system = vec![
        ("x-opt-sequence-number".to_string(), long(seq)),
        ("x-opt-offset".to_string(), string(&offset)),
        ("x-opt-enqueued-time".to_string(), long(at.timestamp_millis())),
    ];
    if i % 3 == 0 {
        system.push(("x-opt-publisher".into(), string("device-7")));
    }
    let mut props = Vec::new();
    if i % 7 != 0 {
        props.push(("source".to_string(), string(if i % 2 == 0 { "web" } else { "app" })));
        if i % 2 == 0 {
            props.push(("score".into(), double(i as f64 / 8.0)));
        }
        match i % 5 {
            0 => props.push(("trace".into(), bytes(&[0xff, i as u8, 0x10]))),
            1 => props.push(("trace".into(), bytes(b"plain text"))),
            _ => {}
        }
        if i >= 9_000 {
            props.push(("late".into(), double(-(i as f64))));
        }
    }
    if style == UnionStyle::WithNull {
        if i % 4 == 0 {
            props.push(("maybe".into(), Value::Union(4, Box::new(Value::Null))));
        }
        if i > 8_192 && i % 11 == 0 {
            props = vec![
                ("a".into(), Value::Union(4, Box::new(Value::Null))),
                ("b".into(), Value::Union(4, Box::new(Value::Null))),
            ];
        }
    }
    let body = if i % 97 == 0 {
        Value::Union(0, Box::new(Value::Null))
    } else if user_bodies {
        Value::Union(1, Box::new(Value::Bytes(user_event_body(&mut Rng::new(i as u64), seq, at))))
    } else {
        Value::Union(
            1,
            Box::new(Value::Bytes(
                format!(r#"{{"eventId":"e{i}","n":{i},"pad":"{}"}}"#, "x".repeat((i % 50) as usize)).into_bytes(),
            )),
        )
    };
    Value::Record(vec![
        ("SequenceNumber".into(), Value::Long(seq)),
        ("Offset".into(), Value::String(offset)),
        ("EnqueuedTimeUtc".into(), Value::String(at.format("%-m/%-d/%Y %-I:%M:%S %p").to_string())),
        ("SystemProperties".into(), Value::Map(system.into_iter().collect())),
        ("Properties".into(), Value::Map(props.into_iter().collect())),
        ("Body".into(), body),
    ])
}

/// A capture file of `n` records written by apache-avro.
fn write_file(n: i64, c: Codec, style: UnionStyle, block_size: usize, user_bodies: bool) -> Vec<u8> {
    let schema = apache_avro::Schema::parse_str(capture_schema_json(style)).unwrap();
    let mut w = apache_avro::Writer::builder()
        .schema(&schema)
        .writer(Vec::new())
        .codec(codec(c))
        .block_size(block_size)
        .build();
    for i in 0..n {
        w.append(record(i, style, user_bodies)).unwrap();
    }
    w.into_inner().unwrap()
}

fn base64(b: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (k, x)| n | (u32::from(*x) << (16 - 8 * k)));
        for k in 0..4 {
            out.push(if k <= chunk.len() { ABC[(n >> (18 - 6 * k)) as usize & 63] as char } else { '=' });
        }
    }
    out
}

/// The rows as apache-avro reads them, rendered as Weir documents it: map
/// values as strings, non-UTF-8 bytes as `base64:…`, `null` as null.
fn read_independently(file: &[u8]) -> Vec<Row> {
    let map = |v: &Value| -> Option<BTreeMap<String, Option<String>>> {
        let Value::Map(m) = v else { panic!("map expected, got {v:?}") };
        Some(
            m.iter()
                .map(|(k, v)| {
                    let Value::Union(_, v) = v else { panic!("union expected") };
                    let s = match v.as_ref() {
                        Value::Long(x) => Some(x.to_string()),
                        Value::Double(x) => Some(x.to_string()),
                        Value::String(x) => Some(x.clone()),
                        Value::Bytes(x) => {
                            Some(String::from_utf8(x.clone()).unwrap_or_else(|_| format!("base64:{}", base64(x))))
                        }
                        Value::Null => None,
                        other => panic!("unexpected {other:?}"),
                    };
                    (k.clone(), s)
                })
                .collect(),
        )
    };
    apache_avro::Reader::new(file)
        .unwrap()
        .map(|v| {
            let Value::Record(fields) = v.unwrap() else { panic!("record expected") };
            let f: BTreeMap<String, Value> = fields.into_iter().collect();
            let Value::String(time) = &f["EnqueuedTimeUtc"] else { panic!() };
            let t = NaiveDateTime::parse_from_str(time, "%m/%d/%Y %I:%M:%S %p").unwrap().and_utc();
            Row {
                sequence_number: match f["SequenceNumber"] {
                    Value::Long(x) => x,
                    _ => panic!(),
                },
                offset: match &f["Offset"] {
                    Value::String(x) => x.clone(),
                    _ => panic!(),
                },
                enqueued_micros: t.timestamp_micros(),
                system_properties: map(&f["SystemProperties"]),
                properties: map(&f["Properties"]),
                body: match &f["Body"] {
                    Value::Union(_, b) => match b.as_ref() {
                        Value::Bytes(b) => Some(b.clone()),
                        _ => None,
                    },
                    _ => panic!(),
                },
            }
        })
        .collect()
}

fn rows(batches: &[RecordBatch]) -> Vec<Row> {
    let mut out = Vec::new();
    for b in batches {
        let map = |col: usize, i: usize| -> Option<BTreeMap<String, Option<String>>> {
            let m = b.column(col).as_map();
            if m.is_null(i) {
                return None;
            }
            let e = m.value(i);
            let (k, v) = (e.column(0).as_string::<i32>(), e.column(1).as_string::<i32>());
            Some(
                (0..k.len()).map(|j| (k.value(j).to_string(), v.is_valid(j).then(|| v.value(j).to_string()))).collect(),
            )
        };
        for i in 0..b.num_rows() {
            out.push(Row {
                sequence_number: b.column(0).as_primitive::<Int64Type>().value(i),
                offset: b.column(1).as_string::<i32>().value(i).to_string(),
                enqueued_micros: b.column(2).as_primitive::<TimestampMicrosecondType>().value(i),
                system_properties: map(3, i),
                properties: map(4, i),
                body: b
                    .column(5)
                    .as_binary::<i32>()
                    .is_valid(i)
                    .then(|| b.column(5).as_binary::<i32>().value(i).to_vec()),
            });
        }
    }
    out
}

/// Decodes as ingest does: bytes pushed in reads of `step`, chunk by chunk.
fn decode_streamed(file: &[u8], step: usize) -> Vec<RecordBatch> {
    let mut s = Splitter::default();
    let mut chunks = Vec::new();
    for piece in file.chunks(step) {
        chunks.extend(s.push(piece).into_iter().map(Result::unwrap));
    }
    let header = s.header().cloned().unwrap();
    chunks.extend(s.finish().into_iter().map(Result::unwrap));
    assert!(chunks.iter().all(|c| c.records <= weir::capture::container::CHUNK_RECORDS.max(c.records)));
    chunks.iter().map(|c| decode_chunk(&header, c).unwrap_or_else(|e| panic!("chunk {}: {e}", c.index))).collect()
}

#[test]
fn files_of_every_size_codec_and_union_style_decode_row_for_row() {
    for n in [8_191, 8_192, 8_193, 16_385, 100_000] {
        for c in Codec::ALL {
            for style in [UnionStyle::Legacy, UnionStyle::WithNull] {
                let file = write_file(n, c, style, 16_000, false);
                let want = read_independently(&file);
                assert_eq!(want.len(), n as usize);
                let what = format!("{n} records, {c:?}, {style:?}");
                let got = rows(&decode_streamed(&file, 1_000_003));
                assert_eq!(got.len(), want.len(), "{what}");
                if let Some(i) = (0..got.len()).find(|i| got[*i] != want[*i]) {
                    panic!("{what}: record {i} differs:\n weir: {:?}\n avro: {:?}", got[i], want[i]);
                }
                if n == 16_385 {
                    let whole = decode_capture_file(&file).unwrap_or_else(|e| panic!("{what}: {e}"));
                    assert_eq!(rows(&[whole.batch]), want, "{what}: whole-file decode");
                }
            }
        }
    }
}

#[test]
fn one_block_of_a_hundred_thousand_records_decodes() {
    // A block far larger than a chunk is a chunk of its own.
    for c in [Codec::Null, Codec::Deflate] {
        let file = write_file(100_000, c, UnionStyle::WithNull, 1 << 30, false);
        assert_eq!(weir::capture::container::scan_container(&file).unwrap().blocks, 1);
        let got = rows(&decode_streamed(&file, 65_536));
        assert_eq!(got, read_independently(&file), "{c:?}");
    }
}

/// A pipeline with the example's body schema, its PII columns dropped (no
/// key needed), and no rule that drops valid events: every event must land
/// in processed.
fn pipeline(dir: &Path) -> LoadedPipeline {
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/user_event.avsc"),
        dir.join("user_event.avsc"),
    )
    .unwrap();
    let text = format!(
        r#"name: large
source:
  capture:
    url: {capture}
body:
  schema: user_event.avsc
tables:
  raw: {{path: {lake}/raw}}
  processed: {{path: {lake}/processed}}
  quarantine: {{path: {lake}/quarantine}}
ingest:
  commit_bytes: 3000000
process:
  event_time: eventTimestamp
  raw_versions_per_commit: 2
  pii:
    rules:
      - {{column: email, action: drop}}
      - {{column: ipAddress, action: drop}}
"#,
        capture = dir.join("capture").display(),
        lake = dir.join("lake").display(),
    );
    parse_pipeline(&dir.join("p.yaml"), &text, &|_| None).expect("valid pipeline")
}

/// The sorted (partition, sequence) of a table's rows; `prefix` is `_` for
/// processed, whose lineage columns carry it.
async fn keys(dir: &Path, table: &str, prefix: &str) -> Vec<(String, i64)> {
    let loc = Location::parse(dir.join("lake").join(table).to_str().unwrap()).unwrap();
    let table = weir::delta::open(&loc).await.unwrap().expect("table exists");
    let mut out = Vec::new();
    for b in weir::delta::read_all(&table).await.unwrap() {
        let p = cast(b.column_by_name(&format!("{prefix}partition_id")).unwrap(), &DataType::Utf8).unwrap();
        let s = b.column_by_name(&format!("{prefix}sequence_number")).unwrap().as_primitive::<Int64Type>();
        out.extend((0..b.num_rows()).map(|i| (p.as_string::<i32>().value(i).to_string(), s.value(i))));
    }
    out.sort();
    out
}

/// The sizes above, one partition each (codecs and union styles varied),
/// through ingest (commits cut inside the files) and process: every event
/// once in raw, and once in processed or, for the null bodies, quarantine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_files_are_ingested_and_processed_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let window = Utc.with_ymd_and_hms(2026, 11, 20, 10, 0, 0).unwrap();
    let sizes = [8_191i64, 8_192, 8_193, 16_385, 100_000];
    let (mut all, mut null_bodies, mut bytes) = (Vec::new(), Vec::new(), 0u64);
    for (p, n) in sizes.iter().enumerate() {
        let style = if p % 2 == 0 { UnionStyle::Legacy } else { UnionStyle::WithNull };
        let file = write_file(*n, Codec::ALL[p % 4], style, 16_000, true);
        bytes += file.len() as u64;
        let path = dir.path().join("capture").join(capture_path(&p.to_string(), window));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, file).unwrap();
        for i in 0..*n {
            all.push((p.to_string(), 5_000_000 + i));
            if i % 97 == 0 {
                null_bodies.push((p.to_string(), 5_000_000 + i));
            }
        }
    }
    all.sort();
    null_bodies.sort();
    let total = all.len() as u64;

    let p = pipeline(dir.path());
    let options = IngestOptions::new("large");
    let r = ingest(&p, &options).await.expect("ingest");
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!((r.files_read, r.events_read, r.events_written), (5, total, total));
    assert_eq!(r.bytes_read, bytes, "every byte of every file, once");
    assert!(r.tables[0].versions_written.len() > 5, "commits cut inside files: {:?}", r.tables[0].versions_written);
    assert_eq!(keys(dir.path(), "raw", "").await, all);

    let again = ingest(&p, &options).await.expect("rerun");
    assert_eq!((again.files_read, again.events_read, again.events_written), (0, 0, 0), "no file is read again");

    let po = ProcessOptions { dry_run: false, run_id: "large".into(), route: None, follow: None };
    let r = process(&p, &po).await.expect("process");
    assert!(r.problems.iter().all(|p| !p.blocking), "{:?}", r.problems);
    let mut processed = keys(dir.path(), "processed", "_").await;
    assert_eq!(keys(dir.path(), "quarantine", "_").await, null_bodies, "the null bodies, and only they, quarantined");
    processed.extend(null_bodies);
    processed.sort();
    assert_eq!(processed, all, "every event once in processed or quarantine");
}

/// Events with the given sequence numbers, plain JSON bodies of ~300 bytes.
fn events_with(seqs: impl Iterator<Item = i64>) -> Vec<weir_testkit::capture::CaptureEvent> {
    let at = Utc.with_ymd_and_hms(2026, 11, 20, 10, 0, 0).unwrap();
    seqs.map(|s| weir_testkit::capture::CaptureEvent {
        sequence_number: s,
        offset: (s * 400).to_string(),
        enqueued_time: at,
        system_properties: vec![],
        properties: vec![],
        body: Some(format!(r#"{{"s":{s},"pad":"{}"}}"#, "z".repeat(300)).into_bytes()),
    })
    .collect()
}

fn put(dir: &Path, minute: i64, events: &[weir_testkit::capture::CaptureEvent]) -> u64 {
    let window = Utc.with_ymd_and_hms(2026, 11, 20, 10, 0, 0).unwrap() + Duration::minutes(minute);
    let path = dir.join("capture").join(capture_path("0", window));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let bytes = weir_testkit::capture::write_capture_file(events, &weir_testkit::capture::FileSpec::default()).unwrap();
    std::fs::write(path, &bytes).unwrap();
    bytes.len() as u64
}

fn raw_only(dir: &Path, extra: &str) -> LoadedPipeline {
    let text = format!(
        "name: gaps\nsource:\n  capture:\n    url: {}\ntables:\n  raw: {{path: {}/raw}}\n{extra}",
        dir.join("capture").display(),
        dir.join("lake").display()
    );
    parse_pipeline(&dir.join("p.yaml"), &text, &|_| None).expect("valid pipeline")
}

/// Files of several chunks whose first event is beyond a gap: one waits for
/// a later file that fills the gap, one follows a real gap. Whether their
/// chunks are held (they fit a commit) or the files are read again (they
/// do not), every event lands once and every file is counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_files_beyond_a_gap_are_held_or_read_again_and_land_once() {
    for extra in ["", "ingest:\n  commit_bytes: 1000000\n"] {
        let dir = tempfile::tempdir().unwrap();
        let bytes = put(dir.path(), 0, &events_with(0..20_000))
            + put(dir.path(), 5, &events_with(40_000..60_000))
            + put(dir.path(), 10, &events_with(20_000..40_000))
            + put(dir.path(), 15, &events_with(70_000..80_000));
        let options = IngestOptions::new("gaps");
        let r = ingest(&raw_only(dir.path(), extra), &options).await.expect("ingest");
        let what = if extra.is_empty() { "held" } else { "read again" };
        assert_eq!((r.files_read, r.bytes_read, r.events_read, r.events_written), (4, bytes, 70_000, 70_000), "{what}");
        let gaps: Vec<_> = r.problems.iter().filter(|p| p.kind == "sequence_gap").collect();
        assert_eq!(gaps.len(), 1, "{what}: {:?}", r.problems);
        assert_eq!(r.problems.len(), 1, "{what}: {:?}", r.problems);
        assert_eq!(
            r.partitions["0"].gaps.iter().map(|g| (g.from, g.to)).collect::<Vec<_>>(),
            vec![(60_000, 69_999)],
            "{what}"
        );
        let want: Vec<(String, i64)> = (0..60_000).chain(70_000..80_000).map(|s| ("0".to_string(), s)).collect();
        assert_eq!(keys(dir.path(), "raw", "").await, want, "{what}");
    }
}

/// A file that gives every sequence number twice, across several chunks,
/// lands each event once and is no problem: a number given twice is the
/// same event. A later file of the run holding numbers below what the first
/// one held (never ingested) is one problem naming the file, not one per
/// chunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_and_out_of_order_numbers_over_several_chunks() {
    let dir = tempfile::tempdir().unwrap();
    put(dir.path(), 0, &events_with((20_000..40_000).chain(20_000..40_000)));
    put(dir.path(), 5, &events_with(0..20_000));
    let options = IngestOptions::new("ooo");
    let r = ingest(&raw_only(dir.path(), ""), &options).await.expect("ingest");
    let problems: Vec<_> = r.problems.iter().filter(|p| p.kind == "out_of_order").collect();
    assert_eq!(problems.len(), 1, "{:?}", r.problems);
    assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
    assert!(problems[0].message.contains("0..=19999") && problems[0].message.contains("10/05/00"), "{problems:?}");
    assert_eq!((r.events_written, r.events_already_ingested), (20_000, 20_000));
    let want: Vec<(String, i64)> = (20_000..40_000).map(|s| ("0".to_string(), s)).collect();
    assert_eq!(keys(dir.path(), "raw", "").await, want);
}
