//! The sensor example (`pipelines/sensor_readings.yaml`) with the `weir`
//! binary: 100-key sensor messages whose variable readings land in
//! `_rescued`, range alarms computed by a SQL model with the JSON
//! functions, recomputed independently in Python; and `weir validate` on
//! SQL with JSON functions, misspelled ones included.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use chrono::Duration;
use weir_testkit::sensor::{sensor_messages, write_sensor_capture, SensorMessage, SensorSpec};

/// `weir` in the repository, with none of the caller's WEIR_*, AZURE_* or
/// RUST_LOG settings.
fn weir() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_weir"));
    weir_testkit::env::clean(&mut c).current_dir(repo()).env("RUST_LOG", "warn");
    c
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

const EXAMPLE: &str = "pipelines/sensor_readings.yaml";

/// The messages as sent, one JSON line each, for the Python recomputation.
fn write_messages(path: &Path, messages: &[SensorMessage]) {
    let lines: Vec<String> = messages
        .iter()
        .map(|m| {
            serde_json::json!({
                "partition": m.partition,
                "sequence_number": m.sequence_number,
                "enqueued_time": m.enqueued_time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                "body": String::from_utf8(m.body.clone()).expect("ASCII bodies"),
            })
            .to_string()
        })
        .collect();
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

/// Two `weir run`s of the example over generated capture files (the second
/// recomputes only the devices and days its messages touch), then Python
/// recomputes quarantine, processed rows and alarms from the messages and
/// compares them with the tables as exact row multisets.
#[test]
fn sensor_example_alarms_equal_an_independent_recomputation() {
    let dir = tempfile::tempdir().unwrap();
    let (capture, lake) = (dir.path().join("capture"), dir.path().join("lake"));
    let spec = SensorSpec::small(20_261_101);
    let messages = sensor_messages(&spec);
    let cut = spec.start + Duration::minutes(10);
    let (first, second): (Vec<SensorMessage>, Vec<SensorMessage>) =
        messages.iter().cloned().partition(|m| m.enqueued_time < cut);
    assert!(!first.is_empty() && !second.is_empty());

    let run = || {
        let out = weir().args(["run", EXAMPLE]).env("WEIR_CAPTURE", &capture).env("WEIR_LAKE", &lake).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["stages"][2]["stage"], "curate", "{report}");
        report
    };
    write_sensor_capture(&capture, &first).unwrap();
    let one = run();
    assert_eq!(one["stages"][2]["models"][0]["mode"], "full", "{one}");
    write_sensor_capture(&capture, &second).unwrap();
    let two = run();
    let model = &two["stages"][2]["models"][0];
    assert_eq!((model["table"].as_str(), model["mode"].as_str()), (Some("sensor_range_alarms"), Some("incremental")));
    assert!(model["rows_inserted"].as_u64().unwrap() > 0, "{model}");
    // The warn rule over `_rescued` counted FAULT messages without a code.
    let warned: u64 = [&one, &two]
        .iter()
        .flat_map(|r| r["stages"][1]["quality"]["rules"].as_array().unwrap().clone())
        .filter(|r| r["rule"] == "fault_has_code")
        .map(|r| r["rows_failed"].as_u64().unwrap())
        .sum();
    assert!(warned > 0, "{two}");

    let sent = dir.path().join("messages.jsonl");
    write_messages(&sent, &messages);
    let out = Command::new(weir_testkit::env::python())
        .arg(repo().join("jobs/tests/python/check_sensor_alarms.py"))
        .arg(&lake)
        .arg(&sent)
        .output()
        .unwrap();
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).starts_with("ok "), "{}", text(&out));
}

/// `weir validate` plans the example's rules and model, JSON functions
/// included; a misspelled JSON function in either is a configuration
/// problem (exit 2) naming the file, the key and the function DataFusion
/// suggests.
#[test]
fn validate_accepts_json_functions_and_names_a_misspelled_one() {
    let out = weir().args(["validate", EXAMPLE]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let dir = tempfile::tempdir().unwrap();
    let pipelines = dir.path().join("pipelines");
    std::fs::create_dir_all(pipelines.join("sensor_readings")).unwrap();
    std::fs::create_dir_all(dir.path().join("schemas")).unwrap();
    for f in ["schemas/sensor_reading.avsc", EXAMPLE, "pipelines/sensor_readings/range_alarms.sql"] {
        std::fs::copy(repo().join(f), dir.path().join(f)).unwrap();
    }
    let edit = |file: &str, from: &str, to: &str| {
        let path = dir.path().join(file);
        let original = std::fs::read_to_string(&path).unwrap();
        assert!(original.contains(from), "{file} holds {from:?}");
        std::fs::write(&path, original.replacen(from, to, 1)).unwrap();
        original
    };
    let validate = || weir().arg("validate").arg(dir.path().join(EXAMPLE)).output().unwrap();

    let original = edit(EXAMPLE, "json_get_int(_rescued", "json_get_intt(_rescued");
    let out = validate();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains(
            "process.expectations[3]: rule \"fault_has_code\": Invalid function 'json_get_intt'. Did you mean 'json_get_int'?"
        ),
        "{}",
        text(&out)
    );
    std::fs::write(dir.path().join(EXAMPLE), original).unwrap();

    edit("pipelines/sensor_readings/range_alarms.sql", "json_get_float(_rescued", "json_get_flaot(_rescued");
    let out = validate();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains(
            "curate.tables[0].sql_file: model \"sensor_range_alarms\" does not plan: Invalid function 'json_get_flaot'. Did you mean 'json_get_float'?"
        ),
        "{}",
        text(&out)
    );
}

/// The figures docs/guide/sensor-alarms.md states for the committed sample
/// (`testdata/capture/sensor_readings`, the example's default source).
#[test]
fn the_sample_gives_the_figures_the_guide_states() {
    let lake = tempfile::tempdir().unwrap();
    let out = weir().args(["run", EXAMPLE]).env("WEIR_LAKE", lake.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (ingest, process, curate) = (&report["stages"][0], &report["stages"][1], &report["stages"][2]);
    assert_eq!(ingest["events_written"], 245, "{report}");
    assert_eq!(process["events_written"], 236, "{report}");
    assert_eq!(process["quality"]["events_quarantined"], 4, "{report}");
    assert_eq!(process["quality"]["duplicates_dropped"], 5, "{report}");
    let rules: Vec<(String, u64)> = process["quality"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["rule"].as_str().unwrap().to_string(), r["rows_failed"].as_u64().unwrap()))
        .filter(|(_, n)| *n > 0)
        .collect();
    assert_eq!(
        rules,
        [
            ("schema".into(), 2),
            ("temp_01_probe_connected".into(), 2),
            ("fault_has_code".into(), 1),
            ("dedup".into(), 5)
        ]
    );
    assert_eq!(curate["models"][0]["rows_inserted"], 109, "{report}");

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let levels = rt.block_on(async {
        let path = lake.path().join("curated/sensor_range_alarms");
        let loc = weir::storage::Location::parse(path.to_str().unwrap()).unwrap();
        let table = weir::delta::open(&loc).await.unwrap().expect("the alarm table");
        let mut levels = std::collections::BTreeMap::new();
        for b in weir::delta::read_all(&table).await.unwrap() {
            let level = deltalake::arrow::compute::cast(
                b.column_by_name("level").unwrap(),
                &deltalake::arrow::datatypes::DataType::Utf8,
            )
            .unwrap();
            for l in deltalake::arrow::array::AsArray::as_string::<i32>(&level).iter().flatten() {
                *levels.entry(l.to_string()).or_insert(0) += 1;
            }
        }
        levels
    });
    assert_eq!(levels, [("H".into(), 43), ("HH".into(), 37), ("L".into(), 15), ("LL".into(), 14)].into());
}
