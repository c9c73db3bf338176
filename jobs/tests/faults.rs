//! Storage faults in every job: each cell runs one job of the example
//! pipeline with one storage operation failing (`WEIR_STORE_FAULT`: before
//! or after its effect, on data files, log files, listings, deletes), then
//! runs it again with storage healthy. The faulted run must end with its
//! documented exit code and no panic; the rerun must succeed and leave
//! every table with exactly the rows an uninterrupted run leaves.
//!
//! The lake before each job is built once without faults and copied into
//! every cell; rows are compared without the columns a run stamps (run
//! ids, `*_at` times, the raw version a row came from).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use deltalake::arrow::util::display::array_value_to_string;

const PII_KEY: &str = "a-test-key-of-32-bytes-length!!!";
const PIPELINE: &str = "pipelines/user_events.yaml";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap()
}

/// `weir` in the repository on `lake`, with none of the caller's WEIR_*,
/// AZURE_* or RUST_LOG settings.
fn weir(lake: &Path, job: &[&str], fault: Option<&str>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_weir"));
    weir_testkit::env::clean(&mut c)
        .current_dir(repo())
        .env("RUST_LOG", "warn")
        .env("WEIR_LAKE", lake)
        .env("WEIR_PII_KEY", PII_KEY)
        .arg(job[0])
        .arg(PIPELINE)
        .args(&job[1..]);
    if let Some(f) = fault {
        c.env("WEIR_STORE_FAULT", f);
    }
    c.output().unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// Tables whose rows a rerun must reproduce exactly (the audit tables
/// record runs, so a failed run may leave its own row there).
const TABLES: &[&str] = &[
    "raw/user_events",
    "processed/user_events",
    "quarantine/user_events",
    "curated/user_daily_activity",
    "curated/user_features",
];

/// Each table's rows as sorted text, without what a run stamps on them.
fn rows(lake: &Path) -> BTreeMap<&'static str, Vec<String>> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut out = BTreeMap::new();
        for name in TABLES {
            let location = weir::storage::Location::parse(lake.join(name).to_str().unwrap()).unwrap();
            let Some(table) = weir::delta::open(&location).await.unwrap() else { continue };
            let mut lines = Vec::new();
            for batch in weir::delta::read_all(&table).await.unwrap() {
                let schema = batch.schema();
                let kept: Vec<usize> = (0..batch.num_columns())
                    .filter(|&i| {
                        let n = schema.field(i).name();
                        !(n.ends_with("_at") || n.contains("run_id") || n == "_raw_version")
                    })
                    .collect();
                for row in 0..batch.num_rows() {
                    let cells: Vec<String> = kept
                        .iter()
                        .map(|&i| {
                            format!(
                                "{}={}",
                                schema.field(i).name(),
                                array_value_to_string(batch.column(i), row).unwrap()
                            )
                        })
                        .collect();
                    lines.push(cells.join("|"));
                }
            }
            lines.sort();
            out.insert(*name, lines);
        }
        out
    })
}

/// The jobs in the order they run on one lake, each with the faults its
/// cells inject.
fn jobs() -> Vec<(&'static str, Vec<&'static str>)> {
    vec![
        ("ingest", vec!["ingest"]),
        ("process", vec!["process"]),
        ("curate", vec!["curate"]),
        ("maintain", vec!["maintain", "--force"]),
        ("erase", vec!["erase", "--subject", "userId=u-1071"]),
        ("erase --purge", vec!["erase", "--subject", "userId=u-753", "--purge"]),
    ]
}

/// Operation × fault × which call: before and after the effect, on data
/// files, log files, reads, listings and deletes; disk full; access
/// refused.
const FAULTS: &[&str] = &[
    "put:error:1:.parquet",
    "put:after:1:.parquet",
    "put:error:1:_delta_log",
    "put:after:1:_delta_log",
    "put:error:2:_delta_log",
    "put:after:2:_delta_log",
    "put:after:3:_delta_log",
    "get:error:1:_delta_log",
    "get:error:2:_delta_log",
    "get:error:5:_delta_log",
    "get:error:1:.parquet",
    "get:error:1:.avro",
    "list:error:1",
    "list:error:2",
    "list:error:3",
    "delete:error:1",
    "delete:error:2",
    "delete:after:1",
    "put:full:1:.parquet",
    "put:denied:1:.parquet",
    "put:denied:1:_delta_log",
];

#[test]
fn every_job_survives_every_storage_fault_and_its_rerun_converges() {
    let dir = tempfile::tempdir().unwrap();
    // The lake before each job, and after it, without faults.
    let mut before = Vec::new();
    let base = dir.path().join("base");
    for (name, args) in jobs() {
        let snapshot = dir.path().join(format!("before-{}", before.len()));
        if base.exists() {
            copy_dir(&base, &snapshot);
        } else {
            std::fs::create_dir_all(&snapshot).unwrap();
        }
        let out = weir(&base, &args, None);
        assert_eq!(out.status.code(), Some(0), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        before.push((name, args, snapshot, rows(&base)));
    }

    let mut cells = 0;
    let mut injected = 0;
    let mut failures = Vec::new();
    for (name, args, snapshot, expected) in &before {
        for fault in FAULTS {
            cells += 1;
            let lake = dir.path().join(format!("cell-{cells}"));
            copy_dir(snapshot, &lake);
            let out = weir(&lake, args, Some(fault));
            let stderr = String::from_utf8_lossy(&out.stderr);
            let code = out.status.code();
            let hit = stderr.contains("injected storage fault");
            injected += usize::from(hit);
            // Refused access is the operator's to fix (2); anything else
            // storage did is retryable (75); a fault the job got past, 0.
            let allowed = match (hit, fault.contains(":denied:")) {
                (false, _) => [Some(0), Some(0)],
                (true, false) => [Some(0), Some(75)],
                (true, true) => [Some(0), Some(2)],
            };
            if !allowed.contains(&code) || stderr.contains("panicked") {
                failures.push(format!("{name} with {fault}: exit {code:?}\n{stderr}"));
                continue;
            }
            let again = weir(&lake, args, None);
            if again.status.code() != Some(0) {
                failures.push(format!(
                    "{name} after {fault}: rerun exit {:?}\n{}{}",
                    again.status.code(),
                    String::from_utf8_lossy(&again.stdout),
                    String::from_utf8_lossy(&again.stderr)
                ));
                continue;
            }
            let got = rows(&lake);
            for (table, want) in expected {
                if got.get(table) != Some(want) {
                    let n = got.get(table).map_or(0, Vec::len);
                    failures.push(format!("{name} after {fault}: {table} has {n} rows, want {}", want.len()));
                }
            }
            std::fs::remove_dir_all(&lake).unwrap();
        }
    }
    eprintln!("{cells} fault cells, {injected} with the fault hit");
    assert!(failures.is_empty(), "{} of {cells} cells failed:\n{}", failures.len(), failures.join("\n---\n"));
    assert!(injected * 2 > cells, "most cells must meet their fault ({injected} of {cells})");
}
