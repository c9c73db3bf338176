//! Snapshots of what `weir` prints: the help of every command, `weir
//! validate`'s messages for broken pipelines, and the JSON run report of
//! every job on the example pipeline and its committed test data.
//!
//! They pin behaviour while code moves: a change to any of these outputs
//! shows up as a snapshot diff to be reviewed (`cargo insta review`, or
//! read the `.snap.new` file next to the snapshot). Times, durations, run
//! ids and temporary paths are replaced by placeholders; everything else
//! is compared exactly.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const PII_KEY: &str = "a-test-key-of-32-bytes-length!!!";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap()
}

/// `weir` in the repository, with none of the caller's WEIR_*, AZURE_* or
/// RUST_LOG settings.
fn weir() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_weir"));
    weir_testkit::env::clean(&mut c).current_dir(repo()).env("RUST_LOG", "error").env("COLUMNS", "100");
    c
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn help_of_every_command() {
    let out = weir().arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    insta::assert_snapshot!("help", text(&out));
    for command in
        ["validate", "ingest", "process", "curate", "maintain", "run", "erase", "plan", "status", "changes", "features"]
    {
        let out = weir().args([command, "--help"]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{command}");
        insta::assert_snapshot!(format!("help_{command}"), text(&out));
    }
}

/// Broken pipelines: the example with one thing wrong each.
const BROKEN: &[(&str, &str, &str)] = &[
    ("unknown_key", "tables:\n  raw:", "tabels:\n  raw:"),
    ("bad_name", "name: user_events", "name: User Events"),
    ("unset_variable", "${WEIR_CAPTURE:-testdata/capture/user_events}", "${WEIR_NOT_SET_ANYWHERE}"),
    ("missing_schema", "../schemas/user_event.avsc", "../schemas/nowhere.avsc"),
    ("bad_path_format", "{PartitionId}/{Year}/{Month}", "{PartitionId}/{Yaer}/{Month}"),
    ("table_at_lake_root", "path: ${WEIR_LAKE:-lake}/quality/user_events", "path: ${WEIR_LAKE:-lake}"),
    (
        "same_folder_twice",
        "path: ${WEIR_LAKE:-lake}/quarantine/user_events",
        "path: ${WEIR_LAKE:-lake}/processed/user_events",
    ),
    ("unknown_action", "      action: warn\n      max_failure_rate", "      action: shout\n      max_failure_rate"),
    ("pii_unknown_column", "      - column: email\n", "      - column: e_mail\n"),
    ("dedup_unknown_key", "key: [eventId]", "key: [event_id]"),
    ("curate_bad_sql", "COUNT(sessionId) AS sessions", "COUNT(session_id) AS sessions"),
    ("maintain_unknown_table", "  tables:\n    raw:\n      retention", "  tables:\n    rawr:\n      retention"),
    ("zero_commit_bytes", "commit_bytes: 67108864", "commit_bytes: 0"),
    ("yaml_syntax", "  raw:\n    path:", "  raw:\n   path: ["),
    ("unknown_body_format", "  format: json\n", "  format: protobuf\n"),
    ("avro_with_compression", "  format: json\n", "  format: avro\n  compression: gzip\n"),
    ("registry_without_writer_schemas", "  format: json\n", "  format: avro-schema-registry\n"),
    ("json_with_writer_schemas", "  format: json\n", "  format: json\n  writer_schemas: ../schemas\n"),
    (
        "writer_schema_folder_missing",
        "  format: json\n",
        "  format: confluent\n  writer_schemas: ../schemas/registry\n",
    ),
    (
        "confluent_id_not_a_number",
        "  format: json\n",
        "  format: confluent\n  writer_schemas: {v1: ../schemas/user_event.avsc}\n",
    ),
];

#[test]
fn validate_messages_for_broken_pipelines() {
    let example = std::fs::read_to_string(repo().join("pipelines/user_events.yaml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pipelines = dir.path().join("pipelines");
    std::fs::create_dir_all(pipelines.join("user_events")).unwrap();
    std::fs::create_dir_all(dir.path().join("schemas")).unwrap();
    for f in ["schemas/user_event.avsc", "pipelines/user_events/user_features.sql"] {
        std::fs::copy(repo().join(f), dir.path().join(f)).unwrap();
    }
    let mut all = String::new();
    for (name, from, to) in BROKEN {
        assert!(example.contains(from), "{name}: the example no longer holds {from:?}");
        let file = pipelines.join(format!("{name}.yaml"));
        std::fs::write(&file, example.replacen(from, to, 1)).unwrap();
        let out = weir().arg("validate").arg(&file).env("WEIR_LAKE", dir.path().join("lake")).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{name}: {}", text(&out));
        all += &format!("== {name}: exit {}\n{}\n", out.status.code().unwrap(), text(&out));
    }
    insta::assert_snapshot!("validate_broken", all.replace(&dir.path().display().to_string(), "[dir]"));
}

/// Broken pipelines with routes: the routed example with one thing wrong
/// each.
const BROKEN_ROUTES: &[(&str, &str, &str)] = &[
    (
        "route_without_table",
        "        table:\n          path: ${WEIR_LAKE:-lake}/processed/shop_purchases\n          description: Parsed, checked, deduplicated purchases.\n",
        "",
    ),
    ("route_name_twice", "      - name: purchase\n", "      - name: user_event\n"),
    ("route_bad_name", "      - name: purchase\n", "      - name: Purchase\n"),
    ("route_value_twice", "when: [Purchase]", "when: [Purchase, UserEvent]"),
    ("route_when_empty", "when: [Purchase]", "when: []"),
    ("route_field_not_in_schema", "by: {property: eventType}", "by: {field: eventType}"),
    ("route_by_two_keys", "by: {property: eventType}", "by: {property: eventType, field: type}"),
    ("route_unknown_key", "        event_time: purchasedAt\n", "        event_tme: purchasedAt\n"),
    (
        "route_top_level_event_time",
        "  raw_versions_per_commit: 1\n  routes:",
        "  raw_versions_per_commit: 1\n  event_time: eventTimestamp\n  routes:",
    ),
    ("route_rule_sql", "sql: amount > 0", "sql: total > 0"),
    ("route_avro_body", "  format: json\n", "  format: avro\n"),
    ("route_curated_without_source", "        source: purchase\n", ""),
];

#[test]
fn validate_messages_for_broken_routed_pipelines() {
    let example = std::fs::read_to_string(repo().join("pipelines/shop_events.yaml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pipelines = dir.path().join("pipelines");
    std::fs::create_dir_all(&pipelines).unwrap();
    std::fs::create_dir_all(dir.path().join("schemas")).unwrap();
    for f in ["schemas/user_event.avsc", "schemas/purchase.avsc"] {
        std::fs::copy(repo().join(f), dir.path().join(f)).unwrap();
    }
    let out = weir().arg("validate").arg(repo().join("pipelines/shop_events.yaml")).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "the example is valid: {}", text(&out));
    let mut all = String::new();
    for (name, from, to) in BROKEN_ROUTES {
        assert!(example.contains(from), "{name}: the example no longer holds {from:?}");
        let file = pipelines.join(format!("{name}.yaml"));
        std::fs::write(&file, example.replacen(from, to, 1)).unwrap();
        let out = weir().arg("validate").arg(&file).env("WEIR_LAKE", dir.path().join("lake")).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{name}: {}", text(&out));
        all += &format!("== {name}: exit {}\n{}\n", out.status.code().unwrap(), text(&out));
    }
    insta::assert_snapshot!("validate_broken_routes", all.replace(&dir.path().display().to_string(), "[dir]"));
}

/// The sensor example with one thing wrong each, in the pipeline file or in
/// its model's SQL file: (name, file, from, to).
const BROKEN_SENSOR: &[(&str, &str, &str, &str)] = &[
    ("json_function_typo_in_rule", "pipelines/sensor_readings.yaml", "json_get_int(_rescued", "json_get_intt(_rescued"),
    (
        "json_function_typo_in_model",
        "pipelines/sensor_readings/range_alarms.sql",
        "json_get_float(_rescued",
        "json_get_flaot(_rescued",
    ),
    (
        "json_operator_precedence_in_model",
        "pipelines/sensor_readings/range_alarms.sql",
        "  WHERE _rescued IS NOT NULL\n",
        "  WHERE _rescued->>'SIMULATED' = 'false'\n",
    ),
];

#[test]
fn validate_messages_for_broken_sensor_pipelines() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("pipelines/sensor_readings")).unwrap();
    std::fs::create_dir_all(dir.path().join("schemas")).unwrap();
    let files =
        ["schemas/sensor_reading.avsc", "pipelines/sensor_readings.yaml", "pipelines/sensor_readings/range_alarms.sql"];
    for f in files {
        std::fs::copy(repo().join(f), dir.path().join(f)).unwrap();
    }
    let pipeline = dir.path().join("pipelines/sensor_readings.yaml");
    let out = weir().arg("validate").arg(&pipeline).env("WEIR_LAKE", dir.path().join("lake")).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "the example validates: {}", text(&out));
    let mut all = String::new();
    for (name, file, from, to) in BROKEN_SENSOR {
        let original = std::fs::read_to_string(repo().join(file)).unwrap();
        assert!(original.contains(from), "{name}: {file} no longer holds {from:?}");
        std::fs::write(dir.path().join(file), original.replacen(from, to, 1)).unwrap();
        let out = weir().arg("validate").arg(&pipeline).env("WEIR_LAKE", dir.path().join("lake")).output().unwrap();
        std::fs::write(dir.path().join(file), original).unwrap();
        assert_eq!(out.status.code(), Some(2), "{name}: {}", text(&out));
        all += &format!("== {name}: exit {}\n{}\n", out.status.code().unwrap(), text(&out));
    }
    insta::assert_snapshot!("validate_broken_sensor", all.replace(&dir.path().display().to_string(), "[dir]"));
}

/// The example pipeline job by job on one lake, then `weir run` again (up
/// to date) and on a fresh lake as a dry run.
#[test]
fn run_reports_of_every_job_on_the_example() {
    let lake = tempfile::tempdir().unwrap();
    let job = |args: &[&str]| -> (i32, Value) {
        let out = weir().args(args).env("WEIR_LAKE", lake.path()).env("WEIR_PII_KEY", PII_KEY).output().unwrap();
        let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {}", text(&out)));
        (out.status.code().unwrap_or(-1), normalise(report, lake.path()))
    };
    let example = "pipelines/user_events.yaml";
    for (name, args) in [
        ("plan_empty", vec!["plan", example, "--json"]),
        ("ingest", vec!["ingest", example]),
        ("plan_after_ingest", vec!["plan", example, "--json"]),
        ("process", vec!["process", example]),
        ("curate_dry_run", vec!["curate", example, "--dry-run"]),
        ("curate", vec!["curate", example]),
        ("status", vec!["status", example, "--json"]),
        ("maintain_dry_run", vec!["maintain", example, "--dry-run"]),
        ("maintain", vec!["maintain", example]),
        ("erase", vec!["erase", example, "--subject", "userId=u-1071"]),
        ("erase_dry_run", vec!["erase", example, "--subject", "userId=u-753", "--dry-run"]),
        ("run_up_to_date", vec!["run", example]),
    ] {
        let (code, report) = job(&args);
        assert_eq!(code, 0, "{name}: {report:#}");
        insta::assert_snapshot!(format!("report_{name}"), serde_json::to_string_pretty(&report).unwrap());
    }
    let fresh = tempfile::tempdir().unwrap();
    let out = weir()
        .args(["run", example, "--dry-run"])
        .env("WEIR_LAKE", fresh.path())
        .env("WEIR_PII_KEY", PII_KEY)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report = normalise(serde_json::from_slice(&out.stdout).unwrap(), fresh.path());
    insta::assert_snapshot!("report_run_dry_run", serde_json::to_string_pretty(&report).unwrap());
}

/// Report keys whose times come from the clock of the run (the times of
/// the data, such as `newest_file_window`, are compared).
const CLOCK_KEYS: &[&str] =
    &["started_at", "finished_at", "checked_at", "planned_at", "last_commit_at", "unreadable_after"];

/// Replaces what differs between two identical runs: times of the run
/// itself, durations, table sizes, run ids and the lake's temporary folder.
fn normalise(v: Value, lake: &Path) -> Value {
    let lake = lake.display().to_string();
    fn walk(v: Value, key: &str, lake: &str) -> Value {
        match v {
            Value::Object(map) => Value::Object(map.into_iter().map(|(k, v)| (k.clone(), walk(v, &k, lake))).collect()),
            Value::Array(items) => Value::Array(items.into_iter().map(|v| walk(v, key, lake)).collect()),
            Value::Null => Value::Null,
            // Parquet sizes of tables that hold times vary with them.
            v if key.ends_with("_ms")
                || key == "minutes_behind"
                || matches!(key, "bytes" | "bytes_before" | "bytes_after") =>
            {
                Value::String(format!("[{}]", kind(&v)))
            }
            Value::String(_) if key == "run_id" => Value::String("[run_id]".into()),
            Value::String(_) if CLOCK_KEYS.contains(&key) => Value::String("[clock]".into()),
            Value::String(s) => Value::String(retention_cutoff(&byte_counts(&s.replace(lake, "[lake]")))),
            v => v,
        }
    }
    /// "3 files (18697 bytes)" → "3 files ([n] bytes)".
    fn byte_counts(s: &str) -> String {
        let mut out = String::new();
        for (i, word) in s.split(' ').enumerate() {
            if i > 0 {
                out.push(' ');
            }
            let digits = word.trim_start_matches('(');
            let is_count = !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit());
            let next_is_bytes = s.split(' ').nth(i + 1).is_some_and(|n| n.starts_with("bytes"));
            if is_count && next_is_bytes {
                out += &word.replace(digits, "[n]");
            } else {
                out += word;
            }
        }
        out
    }
    /// "rows with enqueued_time before 2026-10-08 14:55 UTC" (now minus
    /// the retention) → "… before [clock] UTC".
    fn retention_cutoff(s: &str) -> String {
        match (s.find(" before "), s.rfind(" UTC")) {
            (Some(b), Some(u)) if u > b => format!("{} before [clock]{}", &s[..b], &s[u..]),
            _ => s.to_string(),
        }
    }
    fn kind(v: &Value) -> &'static str {
        if v.is_number() {
            "number"
        } else {
            "value"
        }
    }
    walk(v, "", &lake)
}
