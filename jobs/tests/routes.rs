//! Several event types on one hub (`process.routes`), through the `weir`
//! binary on real Capture files and Delta tables: each type lands in its
//! route's table exactly once, events no route takes land in quarantine
//! with the reason, re-sends are dropped per route; crashes at any commit
//! of either route are repaired exactly by the next run; a body field
//! routes as well as a property; erase finds a subject in every route's
//! table and in the shared quarantine.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use chrono::{DateTime, Duration, TimeZone, Utc};
use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::util::display::array_value_to_string;
use weir_testkit::capture::{capture_path, write_capture_file, CaptureEvent, FileSpec, PropValue};

const PII_KEY: &str = "a-test-key-of-32-bytes-length!!!";
const PIPELINE: &str = "pipelines/shop_events.yaml";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap()
}

/// `weir JOB PIPELINE ARGS…` over the capture folder and lake of `dir`,
/// with none of the caller's WEIR_*, AZURE_* or RUST_LOG settings.
fn weir(pipeline: &Path, dir: &Path, job: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_weir"));
    weir_testkit::env::clean(&mut c)
        .current_dir(repo())
        .env("RUST_LOG", "warn")
        .env("WEIR_LAKE", dir.join("lake"))
        .env("WEIR_CAPTURE", dir.join("capture"))
        .env("WEIR_PII_KEY", PII_KEY)
        .envs(env.iter().copied())
        .arg(job[0])
        .arg(pipeline)
        .args(&job[1..]);
    c.output().unwrap()
}

fn shop(dir: &Path, job: &[&str]) -> Output {
    weir(&repo().join(PIPELINE), dir, job, &[])
}

fn ok(out: &Output) -> serde_json::Value {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

/// The first capture window; the second batch is five minutes later.
fn window(batch: usize) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 10, 0, 0).unwrap() + Duration::minutes(5 * batch as i64)
}

fn iso(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

fn uuid(kind: u8, n: u32) -> String {
    format!("00000000-0000-4000-8{kind:03}-{n:012}")
}

/// One event of a test set: partition, the type property (where it sits),
/// the body.
struct Ev {
    partition: &'static str,
    property: Option<&'static str>,
    /// The type in the system properties instead of the application ones.
    system: bool,
    body: Vec<u8>,
}

fn user_event(n: u32, user: &str, at: DateTime<Utc>) -> Vec<u8> {
    serde_json::json!({
        "eventId": uuid(1, n), "eventName": "page_view", "eventTimestamp": iso(at - Duration::seconds(1)),
        "userId": user, "sessionId": format!("s-{n}"), "email": format!("{user}@example.com"), "ipAddress": "10.1.2.3"
    })
    .to_string()
    .into_bytes()
}

fn purchase(n: u32, user: &str, amount: &str, currency: &str, at: DateTime<Utc>) -> Vec<u8> {
    serde_json::json!({
        "orderId": uuid(2, n), "userId": user, "purchasedAt": iso(at - Duration::seconds(1)),
        "amount": amount, "currency": currency, "items": n, "email": format!("{user}@example.com")
    })
    .to_string()
    .into_bytes()
}

fn ev(partition: &'static str, property: Option<&'static str>, body: Vec<u8>) -> Ev {
    Ev { partition, property, system: false, body }
}

/// The shop's events of `batch` (0 or 1). Sequence numbers follow on per
/// partition from batch to batch.
fn shop_batch(batch: usize) -> Vec<Ev> {
    let at = window(batch);
    match batch {
        0 => vec![
            ev("0", Some("UserEvent"), user_event(1, "u-1", at)),
            ev("0", Some("Purchase"), purchase(1, "u-1", "12.50", "EUR", at)),
            ev("0", Some("user_event"), user_event(2, "u-2", at)),
            ev("0", Some("Refund"), br#"{"refundId": "r-1", "userId": "u-1"}"#.to_vec()),
            ev("0", None, user_event(3, "u-3", at)),
            ev("0", Some("Purchase"), purchase(2, "u-2", "-3.00", "EUR", at)),
            ev("0", Some("UserEvent"), b"{not json".to_vec()),
            ev("1", Some("Purchase"), purchase(3, "u-3", "7.00", "USD", at)),
            ev("1", Some("UserEvent"), user_event(4, "u-3", at)),
            // A re-send within the range: same eventId.
            ev("1", Some("UserEvent"), user_event(1, "u-1", at)),
        ],
        _ => vec![
            // A re-send of a purchase the table holds already.
            ev("0", Some("Purchase"), purchase(1, "u-1", "12.50", "EUR", window(0))),
            ev("0", Some("UserEvent"), user_event(5, "u-1", at)),
            ev("0", Some("Purchase"), purchase(4, "u-1", "5.00", "GBP", at)),
            ev("1", Some("user_event"), user_event(6, "u-2", at)),
            ev("1", Some("Refund"), br#"{"refundId": "r-2", "userId": "u-2"}"#.to_vec()),
            Ev {
                partition: "1",
                property: Some("Purchase"),
                system: true,
                body: purchase(5, "u-2", "1.00", "EUR", at),
            },
        ],
    }
}

/// Writes `events` as Capture files of `window` below `capture`, one per
/// partition, numbering each partition's events from `first[partition]`.
fn write_capture(capture: &Path, key: &str, events: &[Ev], window: DateTime<Utc>, first: &mut BTreeMap<String, i64>) {
    let mut by_partition: BTreeMap<&str, Vec<CaptureEvent>> = BTreeMap::new();
    for (i, e) in events.iter().enumerate() {
        let seq = first.entry(e.partition.to_string()).or_insert(0);
        let prop = e.property.map(|p| (key.to_string(), PropValue::Str(p.to_string())));
        let (system, application) = match e.system {
            true => (prop.into_iter().collect(), vec![("source".to_string(), PropValue::Str("test".into()))]),
            false => (vec![], prop.into_iter().collect()),
        };
        by_partition.entry(e.partition).or_default().push(CaptureEvent {
            sequence_number: *seq,
            offset: (*seq * 100).to_string(),
            enqueued_time: window + Duration::seconds(i as i64),
            system_properties: system,
            properties: application,
            body: Some(e.body.clone()),
        });
        *seq += 1;
    }
    for (partition, events) in by_partition {
        let path = capture.join(capture_path(partition, window));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, write_capture_file(&events, &FileSpec::default()).unwrap()).unwrap();
    }
}

/// The rows of the Delta table at `location`.
fn read(location: &Path) -> Vec<RecordBatch> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let location = weir::storage::Location::parse(location.to_str().unwrap()).unwrap();
        match weir::delta::open(&location).await.unwrap() {
            Some(table) => weir::delta::read_all(&table).await.unwrap(),
            None => vec![],
        }
    })
}

/// `columns` of every row of a table, each row as its values joined by
/// ` | `, sorted (a multiset).
fn column_rows(location: &Path, columns: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for b in read(location) {
        for row in 0..b.num_rows() {
            let cells: Vec<String> = columns
                .iter()
                .map(|c| {
                    let col = b.column_by_name(c).unwrap_or_else(|| panic!("no column {c} in {}", location.display()));
                    array_value_to_string(col, row).unwrap()
                })
                .collect();
            out.push(cells.join(" | "));
        }
    }
    out.sort();
    out
}

/// Every row of a table without what a run stamps on it (run ids, `*_at`
/// times, the raw version a row came from), sorted.
fn all_rows(location: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for b in read(location) {
        let schema = b.schema();
        let kept: Vec<usize> = (0..b.num_columns())
            .filter(|&i| {
                let n = schema.field(i).name();
                !(n.ends_with("_at") || n.contains("run_id") || n == "_raw_version")
            })
            .collect();
        for row in 0..b.num_rows() {
            let cells: Vec<String> = kept
                .iter()
                .map(|&i| format!("{}={}", schema.field(i).name(), array_value_to_string(b.column(i), row).unwrap()))
                .collect();
            out.push(cells.join("|"));
        }
    }
    out.sort();
    out
}

fn sorted(v: &[String]) -> Vec<String> {
    let mut v = v.to_vec();
    v.sort();
    v
}

const USER_EVENTS: &str = "lake/processed/shop_user_events";
const PURCHASES: &str = "lake/processed/shop_purchases";
const QUARANTINE: &str = "lake/quarantine/shop_events";

/// The routes' reasons for the events no route takes.
const TAKEN: &str = "routes take: UserEvent, user_event, Purchase";

fn expected_quarantine() -> Vec<String> {
    sorted(&[
        format!(r#"0 | 3 | [route] | route: eventType "Refund" matches no route ({TAKEN})"#),
        "0 | 4 | [route] | route: the event has no property eventType".to_string(),
        "0 | 5 | [amount_positive] | amount_positive (quarantine): not true: amount > 0".to_string(),
        "0 | 6 | [schema]".to_string(),
        format!(r#"1 | 4 | [route] | route: eventType "Refund" matches no route ({TAKEN})"#),
    ])
}

/// A quarantine row without the schema rule's reason (the parser's words).
fn cut_schema_reason(row: String) -> String {
    match row.find("[schema]") {
        Some(i) => row[..i + "[schema]".len()].to_string(),
        None => row,
    }
}

/// Quarantine rows as (partition, sequence number, rules, reason).
fn quarantine_rows(dir: &Path) -> Vec<String> {
    column_rows(&dir.join(QUARANTINE), &["_partition_id", "_sequence_number", "rules", "reason"])
        .into_iter()
        .map(cut_schema_reason)
        .collect()
}

/// A lake with both batches of the shop's events ingested (two raw
/// versions), not processed.
fn ingested(dir: &Path) {
    let mut first = BTreeMap::new();
    for batch in 0..2 {
        write_capture(&dir.join("capture"), "eventType", &shop_batch(batch), window(batch), &mut first);
        ok(&shop(dir, &["ingest"]));
    }
}

#[test]
fn each_event_type_lands_in_its_route_table_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let mut first = BTreeMap::new();
    write_capture(&dir.join("capture"), "eventType", &shop_batch(0), window(0), &mut first);
    let report = ok(&shop(dir, &["run"]));
    let routes: Vec<&str> = report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["stage"] == "process")
        .map(|s| s["route"].as_str().unwrap())
        .collect();
    assert_eq!(routes, ["user_event", "purchase"], "one process stage per route, in order: {report}");
    assert_eq!(report["stages"][1]["events_read"], 7, "5 user events and the 2 events no route takes: {report}");
    assert_eq!(report["stages"][2]["events_read"], 3, "purchases: {report}");
    write_capture(&dir.join("capture"), "eventType", &shop_batch(1), window(1), &mut first);
    let report = ok(&shop(dir, &["run"]));
    assert_eq!(report["stages"][2]["quality"]["already_written"], 0, "{report}");
    assert_eq!(report["stages"][2]["quality"]["duplicates_dropped"], 1, "the re-sent purchase: {report}");

    let ids = |n: &[u32], kind: u8| sorted(&n.iter().map(|n| uuid(kind, *n)).collect::<Vec<_>>());
    assert_eq!(column_rows(&dir.join(USER_EVENTS), &["eventId"]), ids(&[1, 2, 4, 5, 6], 1));
    assert_eq!(column_rows(&dir.join(PURCHASES), &["orderId"]), ids(&[1, 3, 4, 5], 2));
    assert_eq!(quarantine_rows(dir), expected_quarantine());
    // Each route's own PII rules and columns.
    let purchase_columns: Vec<String> =
        read(&dir.join(PURCHASES))[0].schema().fields().iter().map(|f| f.name().clone()).collect();
    assert!(purchase_columns.contains(&"items".to_string()) && !purchase_columns.contains(&"eventId".to_string()));
    assert!(column_rows(&dir.join(PURCHASES), &["email"]).iter().all(|e| e.len() == 64), "hashed");

    // The metrics name the route of each rule; `route` is the first
    // route's alone.
    let metrics = column_rows(&dir.join("lake/quality/shop_events"), &["route", "rule"]);
    assert!(metrics.contains(&"user_event | route".to_string()), "{metrics:?}");
    assert!(!metrics.contains(&"purchase | route".to_string()), "{metrics:?}");
    assert!(metrics.contains(&"purchase | amount_positive".to_string()), "{metrics:?}");

    // Curated tables read each route's table by its name.
    assert_eq!(
        column_rows(&dir.join("lake/curated/shop_daily_revenue"), &["date", "currency", "orders", "revenue"]),
        ["2026-03-02 | EUR | 2 | 13.50", "2026-03-02 | GBP | 1 | 5.00", "2026-03-02 | USD | 1 | 7.00"]
    );
    assert_eq!(
        column_rows(&dir.join("lake/curated/shop_user_daily_events"), &["userId", "events"]),
        ["u-1 | 2", "u-2 | 2", "u-3 | 1"]
    );

    // Up to date: a further run writes nothing.
    let before = (all_rows(&dir.join(USER_EVENTS)), all_rows(&dir.join(PURCHASES)), all_rows(&dir.join(QUARANTINE)));
    let report = ok(&shop(dir, &["run"]));
    assert!(report["stages"].as_array().unwrap().iter().all(|s| s["events_written"] == 0), "{report}");
    let after = (all_rows(&dir.join(USER_EVENTS)), all_rows(&dir.join(PURCHASES)), all_rows(&dir.join(QUARANTINE)));
    assert_eq!(before, after);

    // Status and plan: one process stage per route, each with its marker.
    let status = ok(&shop(dir, &["status", "--json"]));
    let stages: Vec<(String, u64)> = status["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["stage"].as_str().unwrap().to_string(), s["versions_behind"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        stages,
        [
            ("process user_event".to_string(), 0),
            ("process purchase".to_string(), 0),
            ("curate daily_revenue".to_string(), 0),
            ("curate user_daily_events".to_string(), 0)
        ]
    );
    let tables: Vec<&str> = status["tables"].as_array().unwrap().iter().map(|t| t["table"].as_str().unwrap()).collect();
    assert!(tables.contains(&"user_event") && tables.contains(&"purchase"), "{tables:?}");
    let plan = ok(&shop(dir, &["plan", "--json"]));
    let planned: Vec<&str> = plan["stages"].as_array().unwrap().iter().map(|s| s["stage"].as_str().unwrap()).collect();
    assert_eq!(planned, ["process user_event", "process purchase", "curate daily_revenue", "curate user_daily_events"]);
}

/// Kills at commits of either route, then a rerun: the tables are exactly
/// those of an uninterrupted run (each type once).
#[test]
fn a_crash_at_any_commit_of_either_route_is_repaired_exactly() {
    let base = tempfile::tempdir().unwrap();
    ingested(base.path());
    let reference = tempfile::tempdir().unwrap();
    weir_testkit::fs::copy_dir(base.path(), reference.path());
    let report = ok(&shop(reference.path(), &["process"]));
    // Three raw versions (the table's creation, then one per ingest), and
    // three commits each per route (quarantine, processed, metrics):
    // user_event makes commits 1-9, purchase 10-18.
    for stage in report["stages"].as_array().unwrap() {
        for table in stage["tables"].as_array().unwrap() {
            assert_eq!(table["versions_written"].as_array().unwrap().len(), 3, "{stage}");
        }
    }
    // The metrics too: a repair counts what the interrupted range counted.
    let tables = [USER_EVENTS, PURCHASES, QUARANTINE, "lake/quality/shop_events"];
    let snapshot = |dir: &Path| tables.map(|t| all_rows(&dir.join(t)));
    let expected = snapshot(reference.path());
    assert_eq!(quarantine_rows(reference.path()), expected_quarantine());

    for fault in [
        "process_after_commit:1",
        "process_after_commit:4",
        "process_before_commit:5",
        "process_after_commit:8",
        "process_after_commit:9",
        "process_after_commit:13",
        "process_before_commit:14",
        "process_after_commit:17",
        "process_before_commit:18",
    ] {
        let cell = tempfile::tempdir().unwrap();
        weir_testkit::fs::copy_dir(base.path(), cell.path());
        let out = weir(&repo().join(PIPELINE), cell.path(), &["process"], &[("WEIR_FAULT", fault)]);
        assert!(String::from_utf8_lossy(&out.stderr).contains("WEIR_FAULT: aborting"), "{fault}: did not abort");
        assert_ne!(snapshot(cell.path()), expected, "{fault}: the crash left work");
        ok(&shop(cell.path(), &["process"]));
        assert_eq!(snapshot(cell.path()), expected, "{fault}: exact after the rerun");
        ok(&shop(cell.path(), &["process"]));
        assert_eq!(snapshot(cell.path()), expected, "{fault}: a further run changes nothing");
    }
}

#[test]
fn erase_finds_a_subject_in_every_route_table_and_the_quarantine() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    ingested(dir);
    ok(&shop(dir, &["run"]));
    // A field no route's schema marks as a subject key is refused.
    let out = shop(dir, &["erase", "--subject", "orderId=x"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(r#""orderId" is not a subject-key field of any route's schema (declared: userId)"#),
        "{stderr}"
    );
    let report = ok(&shop(dir, &["erase", "--subject", "userId=u-1"]));
    let erasure = report["stages"].as_array().unwrap().iter().find(|s| s["stage"] == "erase").unwrap();
    let deleted: BTreeMap<&str, u64> = erasure["erasure"]["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["table"].as_str().unwrap(), t["rows_deleted"].as_u64().unwrap()))
        .collect();
    // u-1: events 1 and 5 (and the re-send of 1 in raw), purchases 1 and 4
    // (and the re-send), the refund in quarantine.
    assert_eq!(deleted["raw"], 7, "{deleted:?}");
    assert_eq!(deleted["user_event"], 2, "{deleted:?}");
    assert_eq!(deleted["purchase"], 2, "{deleted:?}");
    assert_eq!(deleted["quarantine"], 1, "{deleted:?}");
    assert_eq!(column_rows(&dir.join(USER_EVENTS), &["userId"]), ["u-2", "u-2", "u-3"]);
    assert_eq!(column_rows(&dir.join(PURCHASES), &["userId"]), ["u-2", "u-3"]);
    let quarantined = column_rows(&dir.join(QUARANTINE), &["_partition_id", "_sequence_number"]);
    assert_eq!(quarantined, ["0 | 4", "0 | 5", "0 | 6", "1 | 4"]);
    assert_eq!(column_rows(&dir.join("lake/curated/shop_user_daily_events"), &["userId"]), ["u-2", "u-3"]);
    assert_eq!(
        column_rows(&dir.join("lake/curated/shop_daily_revenue"), &["currency", "orders"]),
        ["EUR | 1", "USD | 1"]
    );
}

/// A pipeline routed by a top-level body field: strings as they are,
/// numbers in their JSON spelling; bodies without the field (or not JSON)
/// go to quarantine with the reason.
#[test]
fn a_body_field_routes_events() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    std::fs::create_dir_all(dir.join("schemas")).unwrap();
    std::fs::create_dir_all(dir.join("pipelines")).unwrap();
    let schema = |name: &str, kind: &str| {
        format!(
            r#"{{"type": "record", "name": "{name}", "fields": [
                {{"name": "kind", "type": {kind}}},
                {{"name": "id", "type": "string"}},
                {{"name": "at", "type": "string", "weir.timestamp": "iso8601"}}]}}"#
        )
    };
    std::fs::write(dir.join("schemas/click.avsc"), schema("Click", r#""string""#)).unwrap();
    std::fs::write(dir.join("schemas/order.avsc"), schema("Order", r#""string""#)).unwrap();
    std::fs::write(dir.join("schemas/legacy.avsc"), schema("Legacy", r#""long""#)).unwrap();
    let pipeline = dir.join("pipelines/kinds.yaml");
    let route = |name: &str, when: &str| {
        format!(
            "      - name: {name}\n        when: {when}\n        schema: ../schemas/{name}.avsc\n        table: {{path: ${{WEIR_LAKE}}/{name}}}\n        event_time: at\n        dedup: {{key: [id]}}\n"
        )
    };
    std::fs::write(
        &pipeline,
        format!(
            "name: kinds\nsource:\n  capture:\n    url: ${{WEIR_CAPTURE}}\nbody:\n  format: json\ntables:\n  raw: {{path: ${{WEIR_LAKE}}/raw}}\n  quarantine: {{path: ${{WEIR_LAKE}}/quarantine}}\nprocess:\n  routes:\n    by: {{field: kind}}\n    types:\n{}{}{}",
            route("click", "[click]"),
            route("order", "[order, Order]"),
            route("legacy", "[7, true]"),
        ),
    )
    .unwrap();
    let body = |kind: &str, id: &str| format!(r#"{{"kind": {kind}, "id": "{id}", "at": "2026-03-02T10:00:00Z"}}"#);
    let events: Vec<Ev> = [
        body(r#""click""#, "c-1"),
        body(r#""order""#, "o-1"),
        body(r#""Order""#, "o-2"),
        body("7", "l-1"),
        body(r#""click""#, "c-1"),
        body(r#""refund""#, "r-1"),
        r#"{"id": "x-1", "at": "2026-03-02T10:00:00Z"}"#.to_string(),
        body(r#"{"nested": 1}"#, "x-2"),
        "not json".to_string(),
        body("true", "l-2"),
    ]
    .into_iter()
    .map(|b| ev("0", None, b.into_bytes()))
    .collect();
    write_capture(&dir.join("capture"), "unused", &events, window(0), &mut BTreeMap::new());
    let run = |job: &str| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_weir"));
        weir_testkit::env::clean(&mut c)
            .env("RUST_LOG", "warn")
            .env("WEIR_LAKE", dir.join("lake"))
            .env("WEIR_CAPTURE", dir.join("capture"))
            .args([job, pipeline.to_str().unwrap()]);
        ok(&c.output().unwrap())
    };
    run("run");
    let ids = |t: &str| column_rows(&dir.join("lake").join(t), &["id"]);
    assert_eq!(ids("click"), ["c-1"], "re-sent once");
    assert_eq!(ids("order"), ["o-1", "o-2"]);
    // The legacy schema's kind is a number: `7` routes; `true` routes too,
    // then does not parse as a long.
    assert_eq!(ids("legacy"), ["l-1"]);
    let taken = "routes take: click, order, Order, 7, true";
    let no_field =
        "route: the body has no top-level field kind holding a string, number or boolean (or holds it twice)";
    let q = column_rows(&dir.join("lake/quarantine"), &["_sequence_number", "rules", "reason"]);
    let q: Vec<String> = q.into_iter().map(cut_schema_reason).collect();
    assert_eq!(
        q,
        sorted(&[
            format!(r#"5 | [route] | route: kind "refund" matches no route ({taken})"#),
            format!("6 | [route] | {no_field}"),
            format!("7 | [route] | {no_field}"),
            format!("8 | [route] | {no_field}"),
            "9 | [schema]".to_string(),
        ])
    );
}
