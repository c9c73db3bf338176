//! Body formats end to end: for each format, a Capture set written by
//! independent encoders (fastavro, Azure's Schema Registry Avro encoder,
//! Python's gzip and zlib) with known defects and re-sent events is run
//! through `weir run`, and the processed, quarantine and curated tables are
//! read back with Python `deltalake` and `polars` and compared exactly
//! (`python/body_formats.py`); and two Confluent event types routed by a
//! property to their own tables.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn weir(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_weir"));
    weir_testkit::env::clean(&mut c)
        .env("RUST_LOG", "warn")
        .env("WEIR_PII_KEY", "body-formats-test-key-0123456789abcdef")
        .current_dir(dir);
    c
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/body_formats.py")
}

fn ok(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({:?}):\n{}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn python_ok(args: &[&str]) {
    let out = Command::new(weir_testkit::env::python()).arg(script()).args(args).output().unwrap();
    ok(&format!("body_formats.py {}", args.join(" ")), &out);
}

/// Generates the set, runs it twice (the second run finds nothing new and
/// changes nothing) and checks the tables after each; then erases one
/// account, whose events include undecodable bodies in quarantine.
fn lands_exactly(format: &str) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    python_ok(&["generate", d, format]);

    let out = weir(dir.path()).args(["validate", "pipeline.yaml"]).output().unwrap();
    ok("weir validate", &out);

    let out = weir(dir.path()).args(["run", "pipeline.yaml"]).output().unwrap();
    ok("weir run", &out);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["outcome"], "success", "{report:#}");
    python_ok(&["check", d]);

    let out = weir(dir.path()).args(["run", "pipeline.yaml"]).output().unwrap();
    ok("weir run (again)", &out);
    python_ok(&["check", d]);

    let out = weir(dir.path()).args(["erase", "pipeline.yaml", "--subject", "accountId=a00"]).output().unwrap();
    ok("weir erase", &out);
    python_ok(&["check-erased", d, "a00"]);
}

#[test]
fn gzip_and_zlib_json_bodies_land_exactly() {
    lands_exactly("json");
}

#[test]
fn binary_avro_bodies_land_exactly() {
    lands_exactly("avro");
}

#[test]
fn schema_registry_avro_bodies_land_exactly() {
    lands_exactly("avro-schema-registry");
}

#[test]
fn confluent_avro_bodies_land_exactly() {
    lands_exactly("confluent");
}

/// Two event types in Confluent bodies on one hub, routed by a property:
/// each type lands in its route's table exactly once (re-sends dropped),
/// read by the writer schemas its own schema reads; a type no route takes,
/// an event without the property and a body of one type tagged as the
/// other are quarantined with the reason. The second run changes nothing.
#[test]
fn routed_confluent_event_types_land_in_their_own_tables() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    python_ok(&["generate-routed", d]);
    ok("weir validate", &weir(dir.path()).args(["validate", "pipeline.yaml"]).output().unwrap());
    for _ in 0..2 {
        ok("weir run", &weir(dir.path()).args(["run", "pipeline.yaml"]).output().unwrap());
        python_ok(&["check-routed", d]);
    }
}
