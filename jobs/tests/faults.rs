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

/// The example pipeline in `dir` (with its schema and model beside it, as
/// in the repository), raw rows kept for `raw_days` days.
fn example_in(dir: &Path, raw_days: u32) -> PathBuf {
    std::fs::create_dir_all(dir.join("pipelines/user_events")).unwrap();
    std::fs::create_dir_all(dir.join("schemas")).unwrap();
    std::fs::copy(repo().join("schemas/user_event.avsc"), dir.join("schemas/user_event.avsc")).unwrap();
    std::fs::copy(
        repo().join("pipelines/user_events/user_features.sql"),
        dir.join("pipelines/user_events/user_features.sql"),
    )
    .unwrap();
    let text = std::fs::read_to_string(repo().join(PIPELINE)).unwrap();
    let text = text.replace(
        "retention: {column: enqueued_time, days: 60}",
        &format!("retention: {{column: enqueued_time, days: {raw_days}}}"),
    );
    let file = dir.join(PIPELINE);
    std::fs::write(&file, text).unwrap();
    file
}

fn job(pipeline: &Path, lake: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_weir"));
    weir_testkit::env::clean(&mut c)
        .current_dir(repo())
        .env("RUST_LOG", "warn")
        .env("WEIR_LAKE", lake)
        .env("WEIR_PII_KEY", PII_KEY)
        .env("WEIR_CAPTURE", repo().join("testdata/capture/user_events"))
        .arg(args[0])
        .arg(pipeline)
        .args(&args[1..]);
    c
}

/// Rows of the table at `path` whose text holds `needle`, in any column.
fn rows_holding(path: &Path, needle: &str) -> usize {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let location = weir::storage::Location::parse(path.to_str().unwrap()).unwrap();
        let Some(table) = weir::delta::open(&location).await.unwrap() else { return 0 };
        let mut n = 0;
        for b in weir::delta::read_all(&table).await.unwrap() {
            for row in 0..b.num_rows() {
                let text = (0..b.num_columns())
                    .map(|i| array_value_to_string(b.column(i), row).unwrap())
                    .collect::<Vec<_>>()
                    .join("|");
                n += usize::from(text.contains(needle));
            }
        }
        n
    })
}

/// `weir maintain` killed while it holds a table's rewrite lease: an erase
/// then neither stops halfway nor waits for the lease to run out, because
/// the holder is known dead; a live holder's lease stops an erase before
/// its first delete, naming the holder.
#[test]
fn a_killed_maintain_leaves_no_erase_halfway_and_a_live_lease_stops_erase_before_any_delete() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    // Raw rows older than a day: maintain has rows to delete, so it takes the lease.
    let pipeline = example_in(dir.path(), 1);
    let out = job(&pipeline, &lake, &["run"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));

    let mut maintain = job(&pipeline, &lake, &["maintain"])
        .env("WEIR_PAUSE", "maintain_holding_lease:120000")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let log = lake.join("raw/user_events/_delta_log");
    let claimed = || {
        std::fs::read_dir(&log)
            .unwrap()
            .filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
            .any(|text| text.contains("weir.lease_host"))
    };
    let started = std::time::Instant::now();
    while !claimed() {
        assert!(started.elapsed().as_secs() < 120, "maintain never took the lease");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    maintain.kill().unwrap();
    maintain.wait().unwrap();

    let raw = lake.join("raw/user_events");
    assert!(rows_holding(&raw, "u-1071") > 0);
    let out = job(&pipeline, &lake, &["erase", "--subject", "userId=u-1071"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("no longer running"), "{stderr}");
    for table in ["raw/user_events", "processed/user_events", "quarantine/user_events"] {
        assert_eq!(rows_holding(&lake.join(table), "u-1071"), 0, "{table}");
    }
    assert_eq!(rows_holding(&lake.join("audit/erasure_log"), "u-1071"), 0, "the log holds no subject value");
    let logged = rows_holding(&lake.join("audit/erasure_log"), "");
    assert!(logged >= 1, "the erasure is logged");

    // A live holder (this test process) on processed: the erase stops
    // before it deletes anything, and says who holds the table.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let processed = weir::storage::Location::parse(lake.join("processed/user_events").to_str().unwrap()).unwrap();
    let hold = |release: bool| {
        rt.block_on(async {
            let table = weir::delta::open(&processed).await.unwrap().unwrap();
            if release {
                weir::delta::release_rewrite_lease(table, Default::default()).await.unwrap();
            } else {
                let hour = std::time::Duration::from_secs(3600);
                weir::delta::claim_rewrite_lease(table, hour, Default::default()).await.unwrap();
            }
        })
    };
    hold(false);
    let before = rows_holding(&raw, "u-753");
    assert!(before > 0);
    let out = job(&pipeline, &lake, &["erase", "--subject", "userId=u-753"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{stderr}");
    assert!(stderr.contains(&format!("process {} on host", std::process::id())), "{stderr}");
    assert_eq!(rows_holding(&raw, "u-753"), before, "nothing was deleted");
    hold(true);
    let out = job(&pipeline, &lake, &["erase", "--subject", "userId=u-753"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(rows_holding(&raw, "u-753"), 0);
}
