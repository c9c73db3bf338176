//! Pipeline files: parsing, interpolation and every-problem validation.

use std::path::{Path, PathBuf};

use weir::pipeline::{load_pipeline, parse_pipeline, OnCorruptFile};
use weir::Error;

fn problems(text: &str, env: &[(&str, &str)]) -> Vec<String> {
    let lookup = |name: &str| env.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string());
    match parse_pipeline(Path::new("pipelines/x.yaml"), text, &lookup) {
        Ok(_) => Vec::new(),
        Err(Error::InvalidPipeline { problems }) => problems.iter().map(|p| p.to_string()).collect(),
        Err(e) => panic!("unexpected error {e}"),
    }
}

const GOOD: &str = "name: x\nsource:\n  capture:\n    url: /data/capture\ntables:\n  raw:\n    path: /data/lake/raw\n";

#[test]
fn example_pipeline_is_valid_with_defaults() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines/user_events.yaml");
    let loaded = load_pipeline(&file).unwrap_or_else(|e| panic!("{e}"));
    let p = &loaded.pipeline;
    assert_eq!(p.name, "user_events");
    assert!(p.source.capture.url == "testdata/capture/user_events" || std::env::var("WEIR_CAPTURE").is_ok());
    assert!(p.tables.raw.path.ends_with("/raw/user_events"));
    assert_eq!(p.source.capture.on_corrupt_file, OnCorruptFile::Halt);
    assert_eq!(p.body.as_ref().unwrap().schema, Some(PathBuf::from("../schemas/user_event.avsc")));
}

#[test]
fn a_minimal_pipeline_gets_defaults() {
    assert_eq!(problems(GOOD, &[]), Vec::<String>::new());
}

#[test]
fn unknown_key_names_file_line_and_path() {
    let text = GOOD.replace("    path: /data/lake/raw", "    pathh: /data/lake/raw");
    let got = problems(&text, &[]);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].starts_with(
            "pipelines/x.yaml:7: tables.raw.pathh: unknown field 'pathh', expected 'path' or 'description'"
        ),
        "{}",
        got[0]
    );
}

#[test]
fn wrong_type_and_bad_enum_are_located() {
    let text = format!("{GOOD}ingest:\n  commit_bytes: lots\n");
    let got = problems(&text, &[]);
    assert!(got[0].starts_with("pipelines/x.yaml:9: ingest.commit_bytes: invalid type"), "{got:?}");

    let text = GOOD.replace("    url: /data/capture\n", "    url: /data/capture\n    on_corrupt_file: ignore\n");
    let got = problems(&text, &[]);
    assert!(
        got[0].starts_with("pipelines/x.yaml:5: source.capture.on_corrupt_file: unknown variant 'ignore'"),
        "{got:?}"
    );
}

#[test]
fn every_semantic_problem_is_reported_at_once() {
    let text = "name: Bad Name\nsource:\n  capture:\n    url: ftp://host/x\n    path_format: \"{PartitionId}/{Year}\"\nbody:\n  schema: missing.avsc\ntables:\n  raw:\n    path: /lake/raw\ningest:\n  commit_events: 0\n";
    let got = problems(text, &[]);
    assert_eq!(got.len(), 5, "{got:#?}");
    assert!(got[0].starts_with("pipelines/x.yaml:1: name: \"Bad Name\" is not a valid pipeline name"));
    assert!(got[1].starts_with("pipelines/x.yaml:4: source.capture.url: unsupported URL scheme 'ftp'"));
    assert!(got[2].starts_with("pipelines/x.yaml:5: source.capture.path_format: path format"));
    assert!(got[2].contains("lacks {Month}"));
    assert!(got[3].starts_with("pipelines/x.yaml:7: body.schema: cannot read pipelines/missing.avsc"));
    assert!(got[4].starts_with("pipelines/x.yaml:12: ingest.commit_events: must be greater than 0"));
}

#[test]
fn environment_interpolation_applies_before_parsing() {
    let text = "name: x\nsource:\n  capture:\n    url: ${CAP}\ntables:\n  raw:\n    path: ${LAKE:-/default}/raw\n";
    let lookup = |n: &str| (n == "CAP").then(|| "/mnt/capture".to_string());
    let loaded = parse_pipeline(Path::new("p.yaml"), text, &lookup).unwrap();
    assert_eq!(loaded.pipeline.source.capture.url, "/mnt/capture");
    assert_eq!(loaded.pipeline.tables.raw.path, "/default/raw");

    let got = problems(text, &[]);
    assert_eq!(
        got,
        vec!["pipelines/x.yaml:4: environment variable CAP is not set (set it, or write `${CAP:-default}`)"]
    );
}

#[test]
fn yaml_syntax_errors_have_a_line() {
    let got = problems("name: x\nsource: [unclosed\n", &[]);
    assert_eq!(got.len(), 1);
    assert!(got[0].starts_with("pipelines/x.yaml:"), "{got:?}");
}

/// Vacuuming a table deletes every file below its folder that no commit of
/// its own names: a table at the lake root, or nested in another, or two at
/// one folder, would lose another table's data. All are refused.
#[test]
fn tables_that_share_or_nest_folders_are_refused() {
    let env = [("WEIR_LAKE", "/data/lake")];
    let base = "name: x\nsource:\n  capture:\n    url: /data/capture\ntables:\n  raw:\n    path: ${WEIR_LAKE}/raw\n";
    let root = format!("{base}  quality_metrics:\n    path: ${{WEIR_LAKE}}\n");
    let got = problems(&root, &env);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].starts_with("pipelines/x.yaml:9: tables.quality_metrics.path: tables.raw.path is inside the folder of tables.quality_metrics.path"),
        "{got:?}"
    );
    let same = format!("{base}  runs:\n    path: /data/lake/raw/\n");
    let got = problems(&same, &env);
    assert!(got.len() == 1 && got[0].contains("tables.raw.path is at the same location"), "{got:?}");
    let nested = format!("{base}  erasure_log:\n    path: /data/lake/raw/erasures\n");
    let got = problems(&nested, &env);
    assert!(
        got.len() == 1 && got[0].contains("tables.erasure_log.path is inside the folder of tables.raw.path"),
        "{got:?}"
    );
    // A shared name prefix is not a shared folder.
    let siblings = format!("{base}  erasure_log:\n    path: /data/lake/raw2\n  runs:\n    path: /data/lake/raw-runs\n");
    assert_eq!(problems(&siblings, &env), Vec::<String>::new());
}

/// Every number a user sets is bounded: one a few digits too long is a
/// problem naming the key and the bound, not memory or an overflow later.
#[test]
fn numbers_beyond_their_bounds_name_key_and_bound() {
    let text = format!(
        "{GOOD}ingest:\n  commit_bytes: 99999999999\n  commit_events: 100000001\n  decode_parallelism: 100000000\n  fetch_parallelism: 257\n  lookback_hours: 87601\nmaintain:\n  target_file_size_mb: 10241\n  vacuum_retention_hours: 999999999999\n  tables:\n    raw:\n      target_file_size_mb: 99999999999999\n      vacuum_retention_hours: 87601\n      retention: {{column: _enqueued_time, days: 36501}}\n"
    );
    let got = problems(&text, &[]);
    let expected = [
        ":9: ingest.commit_bytes: must be at most 4294967296, not 99999999999",
        ":10: ingest.commit_events: must be at most 100000000, not 100000001",
        ":11: ingest.decode_parallelism: must be at most 256, not 100000000",
        ":12: ingest.fetch_parallelism: must be at most 256, not 257",
        ":13: ingest.lookback_hours: must be at most 87600, not 87601",
        ":15: maintain.target_file_size_mb: must be at most 10240, not 10241",
        ":16: maintain.vacuum_retention_hours: must be at most 87600, not 999999999999",
        ":19: maintain.tables.raw.target_file_size_mb: must be at most 10240, not 99999999999999",
        ":20: maintain.tables.raw.vacuum_retention_hours: must be at most 87600, not 87601",
        ":21: maintain.tables.raw.retention.days: must be at most 36500, not 36501",
    ];
    assert_eq!(got.len(), expected.len(), "{got:#?}");
    for e in expected {
        assert!(got.iter().any(|g| g.contains(e)), "{e} in {got:#?}");
    }
    // The bounds themselves are accepted.
    let text =
        format!("{GOOD}ingest:\n  commit_bytes: 4294967296\n  decode_parallelism: 256\n  lookback_hours: 87600\n");
    assert_eq!(problems(&text, &[]), Vec::<String>::new());
}

/// The process section's counts are bounded too: raw versions per commit
/// and the dedup look-back.
#[test]
fn process_counts_beyond_their_bounds_name_key_and_bound() {
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/user_event.avsc");
    let text = format!(
        "{GOOD}body:\n  schema: {}\ntables:\n  processed: {{path: /data/lake/p}}\n  quarantine: {{path: /data/lake/q}}\nprocess:\n  event_time: eventTimestamp\n  raw_versions_per_commit: 10001\n  dedup: {{key: [eventId], lookback_days: 3651}}\n",
        schema.display()
    )
    .replace("tables:\n  raw:\n    path: /data/lake/raw\n", "")
    .replace("tables:\n  processed", "tables:\n  raw: {path: /data/lake/raw}\n  processed");
    let got = problems(&text, &[]);
    assert!(
        got.iter().any(|g| g.contains("process.raw_versions_per_commit: must be at most 10000, not 10001")),
        "{got:#?}"
    );
    assert!(got.iter().any(|g| g.contains("process.dedup.lookback_days: must be at most 3650, not 3651")), "{got:#?}");
    assert_eq!(got.iter().filter(|g| g.contains("must be at most")).count(), 2, "{got:#?}");
}

/// A body schema that is a device is refused, not read without end.
#[test]
fn a_device_as_body_schema_is_refused() {
    let text = format!("{GOOD}body:\n  schema: /dev/zero\n");
    let got = problems(&text, &[]);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(
        got[0].starts_with("pipelines/x.yaml:9: body.schema: cannot read /dev/zero: not a regular file"),
        "{got:#?}"
    );
}

/// `${VAR}` values are part of a scalar, taken literally: `#`, `: ` and
/// quotes in a lake folder name stay in every table's path.
#[test]
fn environment_values_with_yaml_characters_stay_in_the_paths() {
    let text = "name: x\nsource:\n  capture:\n    url: ${CAP}\ntables:\n  raw:\n    path: ${WEIR_LAKE}/raw\n  runs:\n    path: \"${WEIR_LAKE}/runs\"\n  erasure_log: {path: '${WEIR_LAKE}/erasure_log'}\ningest:\n  commit_events: ${EVENTS}\n";
    let lake = "/data/hash # it's: \"x\"";
    let lookup = |n: &str| match n {
        "WEIR_LAKE" => Some(lake.to_string()),
        "CAP" => Some("/data/cap #1".to_string()),
        "EVENTS" => Some("5000".to_string()),
        _ => None,
    };
    let loaded = parse_pipeline(Path::new("x.yaml"), text, &lookup).unwrap_or_else(|e| panic!("{e}"));
    let p = &loaded.pipeline;
    assert_eq!(p.source.capture.url, "/data/cap #1");
    assert_eq!(p.tables.raw.path, format!("{lake}/raw"));
    assert_eq!(p.tables.runs.as_ref().unwrap().path, format!("{lake}/runs"));
    assert_eq!(p.tables.erasure_log.as_ref().unwrap().path, format!("{lake}/erasure_log"));
    assert_eq!(p.ingest.commit_events, 5000, "an unquoted number stays a number");
    let locations: std::collections::BTreeSet<String> =
        loaded.tables_written().iter().map(|t| loaded.location(&t.key).unwrap().to_string()).collect();
    assert_eq!(locations.len(), 3, "{locations:?}");
    // Locations are URLs: `hash # it's: "x"` percent-encoded.
    assert!(locations.iter().all(|l| l.contains("/hash%20%23%20it's:%20%22x%22/")), "{locations:?}");

    let lookup = |n: &str| (n == "WEIR_LAKE").then(|| "/data\n".to_string()).or(Some("/x".into()));
    let got = match parse_pipeline(Path::new("x.yaml"), text, &lookup) {
        Err(Error::InvalidPipeline { problems }) => problems.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    assert_eq!(got.len(), 3, "{got:#?}");
    assert!(got[0].starts_with("x.yaml:7: environment variable WEIR_LAKE holds a line break"), "{got:#?}");
}

/// A pipeline's files stay in its project (the folder that holds the
/// pipeline's folder) unless given absolute: `../../../../../etc/passwd`
/// is refused naming the key, and nothing of the file is shown.
#[test]
fn pipeline_files_may_not_leave_the_project_unless_absolute() {
    let dir = tempfile::tempdir().unwrap();
    let pipelines = dir.path().join("project/pipelines");
    std::fs::create_dir_all(pipelines.join("x")).unwrap();
    std::fs::create_dir_all(dir.path().join("project/schemas")).unwrap();
    let schema = dir.path().join("project/schemas/user_event.avsc");
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/user_event.avsc"), &schema).unwrap();
    std::fs::copy(&schema, dir.path().join("outside.avsc")).unwrap();
    std::fs::write(pipelines.join("x/model.sql"), "SELECT userId FROM processed").unwrap();
    let file = pipelines.join("x.yaml");
    let check = |schema: &str, sql_file: &str| {
        let text = format!(
            "{GOOD}body:\n  schema: {schema}\ncurate:\n  tables:\n    - name: m\n      path: /data/lake/m\n      sql_file: {sql_file}\n      key: [userId]\n"
        );
        match parse_pipeline(&file, &text, &|_| None) {
            Ok(_) => vec![],
            Err(Error::InvalidPipeline { problems }) => problems
                .iter()
                .filter(|p| p.path == "body.schema" || p.path.ends_with("sql_file"))
                .map(|p| p.to_string())
                .collect::<Vec<_>>(),
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(check("../schemas/user_event.avsc", "x/model.sql"), Vec::<String>::new(), "the project's own files");
    assert_eq!(check(&schema.display().to_string(), "/etc/hostname"), Vec::<String>::new(), "absolute paths");

    let got = check("../../outside.avsc", "../../../../../etc/passwd");
    let project = dir.path().join("project");
    assert_eq!(got.len(), 2, "{got:#?}");
    assert_eq!(
        got[0],
        format!(
            "{}:9: body.schema: ../../outside.avsc leaves the pipeline's project folder {} (relative paths may reach the folder that holds the pipeline's folder, no further); give an absolute path to read a file elsewhere",
            file.display(),
            project.display()
        )
    );
    assert!(
        got[1].starts_with(&format!(
            "{}:14: curate.tables[0].sql_file: ../../../../../etc/passwd leaves the pipeline's project folder",
            file.display()
        )),
        "{got:#?}"
    );
    assert!(!got.iter().any(|g| g.contains("root")), "nothing of /etc/passwd is shown: {got:#?}");
}

/// Writer schemas by id: numeric keys as Confluent ids, each checked
/// against the pipeline's schema by Avro's resolution rules at load.
#[test]
fn writer_schemas_are_loaded_by_id_and_checked_against_the_reader() {
    let dir = tempfile::tempdir().unwrap();
    let reader = r#"{"type":"record","name":"T","fields":[
        {"name":"id","type":"string"},
        {"name":"n","type":"long"},
        {"name":"at","type":{"type":"long","logicalType":"timestamp-millis"}},
        {"name":"channel","type":"string","default":"web"}]}"#;
    let older = r#"{"type":"record","name":"T","fields":[
        {"name":"id","type":"string"},{"name":"n","type":"int"},
        {"name":"at","type":{"type":"long","logicalType":"timestamp-millis"}}]}"#;
    let broken = r#"{"type":"record","name":"T","fields":[
        {"name":"id","type":"string"},{"name":"n","type":"boolean"},
        {"name":"at","type":{"type":"long","logicalType":"timestamp-millis"}}]}"#;
    std::fs::create_dir_all(dir.path().join("p")).unwrap();
    std::fs::write(dir.path().join("reader.avsc"), reader).unwrap();
    std::fs::write(dir.path().join("older.avsc"), older).unwrap();
    std::fs::write(dir.path().join("broken.avsc"), broken).unwrap();
    let file = dir.path().join("p/x.yaml");
    let pipeline = |writers: &str| {
        format!(
            "name: x\nsource:\n  capture:\n    url: c\nbody:\n  format: confluent\n  schema: ../reader.avsc\n  writer_schemas: {writers}\ntables:\n  raw:\n    path: lake/raw\n"
        )
    };
    let loaded = parse_pipeline(&file, &pipeline("{1: ../older.avsc, 2: ../reader.avsc}"), &|_| None)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!loaded.body_framing().unwrap().is_plain());

    let err = parse_pipeline(&file, &pipeline("{1: ../older.avsc, 3: ../broken.avsc}"), &|_| None).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("body.writer_schemas.3: schema id 3"), "{text}");
    assert!(text.contains("Avro's resolution rules"), "{text}");
    assert!(!text.contains("schema id 1 "), "the compatible one is not named: {text}");
}

/// With `process.routes`, each route is a process unit with its own marker,
/// table and schema; the raw subject columns are every route's subject
/// fields; routes are refused what only a pipeline without routes takes,
/// and the other way round.
#[test]
fn routes_are_units_with_their_own_marker_table_and_subjects() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("schemas")).unwrap();
    std::fs::create_dir_all(dir.path().join("pipelines")).unwrap();
    let schema = |name: &str, subject: &str| {
        format!(
            r#"{{"type": "record", "name": "{name}", "fields": [
                {{"name": "kind", "type": "string"}},
                {{"name": "{subject}", "type": "string", "weir.pii": "subject"}},
                {{"name": "at", "type": "string", "weir.timestamp": "iso8601"}}]}}"#
        )
    };
    std::fs::write(dir.path().join("schemas/a.avsc"), schema("A", "userId")).unwrap();
    std::fs::write(dir.path().join("schemas/b.avsc"), schema("B", "accountId")).unwrap();
    let routed = "name: r\nsource:\n  capture:\n    url: /c\nbody:\n  format: json\ntables:\n  raw: {path: /l/raw}\n  quarantine: {path: /l/q}\nprocess:\n  routes:\n    by: {field: kind}\n    types:\n      - {name: a, schema: ../schemas/a.avsc, table: {path: /l/a}, event_time: at}\n      - {name: b, when: [B, 2], schema: ../schemas/b.avsc, table: {path: /l/b}, event_time: at}\n";
    let file = dir.path().join("pipelines/r.yaml");
    let loaded = parse_pipeline(&file, routed, &|_| None).unwrap_or_else(|e| panic!("{e}"));
    let units = loaded.process_units();
    let named: Vec<(String, String, String)> =
        units.iter().map(|u| (u.name.clone(), u.app_id("r"), u.table_key.clone())).collect();
    assert_eq!(
        named,
        [
            ("a".into(), "weir/r/process/a".into(), "process.routes.types[0].table.path".into()),
            ("b".into(), "weir/r/process/b".into(), "process.routes.types[1].table.path".into()),
        ]
    );
    assert_eq!(loaded.routes().unwrap().types[1].values(), ["B", "2"]);
    assert_eq!(loaded.subject_fields().unwrap(), ["userId", "accountId"]);
    let tables: Vec<String> = loaded.tables_written().into_iter().map(|t| t.name).collect();
    assert_eq!(tables, ["raw", "a", "b", "quarantine"]);

    let errors = |text: &str| -> Vec<String> {
        match parse_pipeline(&file, text, &|_| None) {
            Ok(_) => vec![],
            Err(Error::InvalidPipeline { problems }) => {
                problems.iter().map(|p| format!("{}: {}", p.path, p.message)).collect()
            }
            Err(e) => panic!("{e}"),
        }
    };
    let with_top_level = routed.replace("process:\n", "process:\n  event_time: at\n  dedup: {key: [kind]}\n");
    assert_eq!(
        errors(&with_top_level),
        [
            "process.event_time: not used with process.routes: each route declares its own event_time",
            "process.dedup: not used with process.routes: each route declares its own dedup",
        ]
    );
    let unrouted = "name: u\nsource:\n  capture:\n    url: /c\nbody:\n  format: json\ntables:\n  raw: {path: /l/raw}\n  processed: {path: /l/p}\n  quarantine: {path: /l/q}\nprocess: {}\n";
    assert_eq!(
        errors(unrouted),
        [
            "process.event_time: missing: name the body field (a timestamp) whose UTC date partitions the processed table",
            "body.schema: missing: the .avsc the process stage parses bodies by",
        ]
    );
}

/// Confluent bodies with routes: each route reads the writer schemas its
/// own schema can read (one type's ids are not another's), and a writer
/// schema no route reads is a problem at load.
#[test]
fn routed_confluent_bodies_are_read_per_route_by_the_writer_schemas_each_route_reads() {
    let dir = tempfile::tempdir().unwrap();
    for d in ["schemas", "writers", "pipelines"] {
        std::fs::create_dir_all(dir.path().join(d)).unwrap();
    }
    let a = r#"{"type":"record","name":"A","fields":[{"name":"id","type":"string"},{"name":"at","type":{"type":"long","logicalType":"timestamp-millis"}},{"name":"kind","type":"string","default":"a"}]}"#;
    let b = r#"{"type":"record","name":"B","fields":[{"name":"ref","type":"int"},{"name":"at","type":{"type":"long","logicalType":"timestamp-millis"}}]}"#;
    let a_v1 = r#"{"type":"record","name":"A","fields":[{"name":"id","type":"string"},{"name":"at","type":{"type":"long","logicalType":"timestamp-millis"}}]}"#;
    let stray = r#"{"type":"record","name":"C","fields":[{"name":"flag","type":"boolean"}]}"#;
    std::fs::write(dir.path().join("schemas/a.avsc"), a).unwrap();
    std::fs::write(dir.path().join("schemas/b.avsc"), b).unwrap();
    std::fs::write(dir.path().join("writers/1.avsc"), a_v1).unwrap();
    std::fs::write(dir.path().join("writers/2.avsc"), b).unwrap();
    let routed = "name: r\nsource:\n  capture:\n    url: /c\nbody:\n  format: confluent\n  writer_schemas: ../writers\ntables:\n  raw: {path: /l/raw}\n  quarantine: {path: /l/q}\nprocess:\n  routes:\n    by: {property: type}\n    types:\n      - {name: a, schema: ../schemas/a.avsc, table: {path: /l/a}, event_time: at}\n      - {name: b, schema: ../schemas/b.avsc, table: {path: /l/b}, event_time: at}\n";
    let file = dir.path().join("pipelines/r.yaml");
    let loaded = parse_pipeline(&file, routed, &|_| None).unwrap_or_else(|e| panic!("{e}"));
    let units = loaded.process_units();
    let framing = |i: usize| loaded.unit_framing(&units[i]).unwrap();
    let json = |i: usize, body: &[u8]| {
        let mut buf = Vec::new();
        framing(i).json(body, &Default::default(), &mut buf).map(|j| String::from_utf8(j.to_vec()).unwrap())
    };
    // id 1 is an older A: route a reads it (with its default), route b does not.
    let a_body = [0, 0, 0, 0, 1, 2, b'x', 8];
    assert_eq!(json(0, &a_body).unwrap(), r#"{"id":"x","at":4,"kind":"a"}"#);
    assert!(json(1, &a_body).unwrap_err().contains("schema id 1 is a writer schema this route's schema does not read"));
    let b_body = [0, 0, 0, 0, 2, 6, 8];
    assert_eq!(json(1, &b_body).unwrap(), r#"{"ref":3,"at":4}"#);
    // Ingest and erase read bodies by the writer's own names.
    let mut buf = Vec::new();
    let base = loaded.body_framing().unwrap();
    assert_eq!(base.json(&a_body, &Default::default(), &mut buf).unwrap(), br#"{"id":"x","at":4}"#);

    std::fs::write(dir.path().join("writers/3.avsc"), stray).unwrap();
    let err = parse_pipeline(&file, routed, &|_| None).unwrap_err().to_string();
    assert!(err.contains("body.writer_schemas.3: schema id 3 can be read as no route's schema"), "{err}");

    let plain = routed.replace("format: confluent\n  writer_schemas: ../writers\n", "format: avro\n");
    let err = parse_pipeline(&file, &plain, &|_| None).unwrap_err().to_string();
    assert!(err.contains("not plain avro"), "{err}");
}
