//! Map fields in bodies end to end: a top-level map, a map inside a record
//! and a map inside an array are created in the processed table, appended
//! to by later runs, evolved (a new optional map field), and read back as
//! maps with their entries.

use std::path::Path;

use chrono::{TimeZone, Utc};
use deltalake::arrow::array::Array;
use deltalake::arrow::datatypes::DataType;
use deltalake::arrow::util::display::array_value_to_string;
use weir::ingest::{ingest, IngestOptions};
use weir::pipeline::parse_pipeline;
use weir::process::{process, ProcessOptions};
use weir_testkit::capture::{capture_path, write_capture_file, CaptureEvent, FileSpec, PropValue};

fn schema(extra: &str) -> String {
    format!(
        r#"{{"type": "record", "name": "Payment", "namespace": "shop", "fields": [
  {{"name": "id", "type": "string"}},
  {{"name": "paidAt", "type": "string", "weir.timestamp": "iso8601"}},
  {{"name": "metadata", "type": {{"type": "map", "values": "string"}}, "default": {{}}}},
  {{"name": "card", "type": ["null", {{"type": "record", "name": "Card", "fields": [
      {{"name": "brand", "type": "string"}},
      {{"name": "attrs", "type": ["null", {{"type": "map", "values": "long"}}], "default": null}}]}}], "default": null}},
  {{"name": "legs", "type": {{"type": "array", "items": {{"type": "map", "values": "double"}}}}, "default": []}}{extra}
]}}"#
    )
}

fn write_window(dir: &Path, minute: u32, first: i64, bodies: &[String]) {
    let at = Utc.with_ymd_and_hms(2026, 11, 1, 8, minute, 0).unwrap();
    let events: Vec<CaptureEvent> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| CaptureEvent {
            sequence_number: first + i as i64,
            offset: ((first + i as i64) * 100).to_string(),
            enqueued_time: at + chrono::Duration::seconds(i as i64),
            system_properties: vec![],
            properties: vec![("k".into(), PropValue::Str("v".into()))],
            body: Some(b.replacen('{', r#"{"paidAt": "2026-11-01T08:00:00Z", "#, 1).into_bytes()),
        })
        .collect();
    let path = dir.join("capture").join(capture_path("0", at));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, write_capture_file(&events, &FileSpec::default()).unwrap()).unwrap();
}

async fn run(dir: &Path, extra: &str, run_id: &str) {
    std::fs::write(dir.join("payment.avsc"), schema(extra)).unwrap();
    let text = format!(
        "name: pay\nsource:\n  capture:\n    url: {capture}\nbody:\n  schema: payment.avsc\ntables:\n  raw: {{path: {lake}/raw}}\n  processed: {{path: {lake}/processed}}\n  quarantine: {{path: {lake}/quarantine}}\nprocess:\n  event_time: paidAt\n  dedup: {{key: [id]}}\n",
        capture = dir.join("capture").display(),
        lake = dir.join("lake").display(),
    );
    std::fs::write(dir.join("p.yaml"), &text).unwrap();
    let p = parse_pipeline(&dir.join("p.yaml"), &text, &|_| None).unwrap();
    let options = IngestOptions::new(run_id);
    ingest(&p, &options).await.unwrap();
    let report = process(&p, &ProcessOptions { dry_run: false, run_id: run_id.into(), route: None, follow: None })
        .await
        .unwrap();
    let quality = report.quality.unwrap();
    assert_eq!(quality.events_quarantined, 0, "{quality:?}");
}

/// The processed rows, ordered by id, as `column=value` text.
async fn processed(dir: &Path, columns: &[&str]) -> Vec<String> {
    let location = weir::storage::Location::parse(dir.join("lake/processed").to_str().unwrap()).unwrap();
    let table = weir::delta::open(&location).await.unwrap().unwrap();
    let mut out = Vec::new();
    for b in weir::delta::read_all(&table).await.unwrap() {
        for name in ["metadata", "legs"] {
            let t = b.column_by_name(name).unwrap().data_type().clone();
            let is_map = match &t {
                DataType::Map(_, _) => true,
                DataType::List(f) => matches!(f.data_type(), DataType::Map(_, _)),
                _ => false,
            };
            assert!(is_map, "{name} is {t}");
        }
        for row in 0..b.num_rows() {
            let cells: Vec<String> = columns
                .iter()
                .map(|c| {
                    let col = b.column_by_name(c).unwrap();
                    if col.is_null(row) {
                        format!("{c}=null")
                    } else {
                        format!("{c}={}", array_value_to_string(col, row).unwrap())
                    }
                })
                .collect();
            out.push(cells.join(" "));
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn maps_in_bodies_are_created_appended_evolved_and_read_back_as_maps() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_window(
        d,
        0,
        0,
        &[
            r#"{"id": "a", "metadata": {"channel": "web", "region": "eu"}, "card": {"brand": "visa", "attrs": {"exp": 2027}}, "legs": [{"fx": 1.5}]}"#.into(),
            r#"{"id": "b", "metadata": {}, "legs": []}"#.into(),
        ],
    );
    run(d, "", "r1").await;
    // A second run appends to the table the first one created.
    write_window(d, 5, 2, &[r#"{"id": "c", "metadata": {"channel": "app"}, "card": {"brand": "amex"}, "legs": [{"fx": 2.0, "fee": 0.1}, {}]}"#.into()]);
    run(d, "", "r2").await;
    let columns = ["id", "metadata", "card", "legs"];
    assert_eq!(
        processed(d, &columns).await,
        [
            "id=a metadata={channel: web, region: eu} card={brand: visa, attrs: {exp: 2027}} legs=[{fx: 1.5}]",
            "id=b metadata={} card=null legs=[]",
            "id=c metadata={channel: app} card={brand: amex, attrs: } legs=[{fx: 2.0, fee: 0.1}, {}]",
        ]
    );
    // The schema evolves: a new optional map field is added to the table.
    let extra = r#",
  {"name": "tags", "type": ["null", {"type": "map", "values": "boolean"}], "default": null}"#;
    write_window(d, 10, 3, &[r#"{"id": "d", "metadata": {"x": "y"}, "tags": {"vip": true}, "legs": []}"#.into()]);
    run(d, extra, "r3").await;
    let columns = ["id", "metadata", "tags"];
    let rows = processed(d, &columns).await;
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[3], "id=d metadata={x: y} tags={vip: true}");
    assert_eq!(rows[0], "id=a metadata={channel: web, region: eu} tags=null");
}
