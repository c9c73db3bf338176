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

/// `weir` in the repository running `pipeline` on `lake`, with none of the
/// caller's WEIR_*, AZURE_* or RUST_LOG settings, and `env` on top.
fn command_for(pipeline: &Path, lake: impl AsRef<std::ffi::OsStr>, job: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_weir"));
    weir_testkit::env::clean(&mut c)
        .current_dir(repo())
        .env("RUST_LOG", "warn")
        .env("WEIR_LAKE", lake)
        .env("WEIR_PII_KEY", PII_KEY)
        .env("WEIR_CAPTURE", repo().join("testdata/capture/user_events"))
        .envs(env.iter().copied())
        .arg(job[0])
        .arg(pipeline)
        .args(&job[1..]);
    c
}

/// [`command_for`] the example pipeline.
fn command(lake: &Path, job: &[&str], env: &[(&str, &str)]) -> Command {
    command_for(&repo().join(PIPELINE), lake, job, env)
}

fn weir(lake: &Path, job: &[&str], fault: Option<&str>) -> Output {
    let env: Vec<(&str, &str)> = fault.map(|f| ("WEIR_STORE_FAULT", f)).into_iter().collect();
    command(lake, job, &env).output().unwrap()
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
    rows_at(lake.to_str().unwrap())
}

/// [`rows`] of the lake at `root`, a folder or an `az://` URL.
fn rows_at(root: &str) -> BTreeMap<&'static str, Vec<String>> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut out = BTreeMap::new();
        for name in TABLES {
            let location = weir::storage::Location::parse(&format!("{root}/{name}")).unwrap();
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

/// One job of the sequence: its arguments, the lake before it (a folder
/// to copy) and every table's rows after an uninterrupted run.
struct Step {
    name: &'static str,
    args: Vec<&'static str>,
    before: PathBuf,
    expected: BTreeMap<&'static str, Vec<String>>,
    /// How long the uninterrupted run took.
    took: std::time::Duration,
}

/// Runs the jobs once without faults, keeping the lake before each.
fn steps(dir: &Path) -> Vec<Step> {
    let mut out = Vec::new();
    let base = dir.join("base");
    for (name, args) in jobs() {
        let before = dir.join(format!("before-{}", out.len()));
        if base.exists() {
            weir_testkit::fs::copy_dir(&base, &before);
        } else {
            std::fs::create_dir_all(&before).unwrap();
        }
        let started = std::time::Instant::now();
        let run = weir(&base, &args, None);
        let took = started.elapsed();
        assert_eq!(run.status.code(), Some(0), "{name}: {}", String::from_utf8_lossy(&run.stderr));
        out.push(Step { name, args, before, expected: rows(&base), took });
    }
    out
}

/// Reruns `step` on `lake` with healthy storage and compares every table
/// with the uninterrupted run; the failure, if any.
fn rerun_converges(step: &Step, lake: &Path, what: &str) -> Option<String> {
    let again = weir(lake, &step.args, None);
    if again.status.code() != Some(0) {
        return Some(format!(
            "{} after {what}: rerun exit {:?}\n{}{}",
            step.name,
            again.status.code(),
            String::from_utf8_lossy(&again.stdout),
            String::from_utf8_lossy(&again.stderr)
        ));
    }
    let got = rows(lake);
    for (table, want) in &step.expected {
        if got.get(table) != Some(want) {
            let n = got.get(table).map_or(0, Vec::len);
            return Some(format!("{} after {what}: {table} has {n} rows, want {}", step.name, want.len()));
        }
    }
    None
}

#[test]
fn every_job_survives_every_storage_fault_and_its_rerun_converges() {
    let dir = tempfile::tempdir().unwrap();
    let steps = steps(dir.path());
    let mut cells = 0;
    let mut injected = 0;
    let mut failures = Vec::new();
    for step in &steps {
        for fault in FAULTS {
            cells += 1;
            let lake = dir.path().join(format!("cell-{cells}"));
            weir_testkit::fs::copy_dir(&step.before, &lake);
            let out = weir(&lake, &step.args, Some(fault));
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
                failures.push(format!("{} with {fault}: exit {code:?}\n{stderr}", step.name));
                continue;
            }
            failures.extend(rerun_converges(step, &lake, fault));
            std::fs::remove_dir_all(&lake).unwrap();
        }
    }
    eprintln!("{cells} fault cells, {injected} with the fault hit");
    assert!(failures.is_empty(), "{} of {cells} cells failed:\n{}", failures.len(), failures.join("\n---\n"));
    assert!(injected * 2 > cells, "most cells must meet their fault ({injected} of {cells})");
}

/// Each job's crash points (`WEIR_FAULT`: the process aborts there, as a
/// kill would), by name and hit; erase runs process and curate inside.
fn crash_points(job: &str) -> &'static [&'static str] {
    match job {
        "ingest" => &["before_commit:1", "after_commit:1", "after_commit:2"],
        "process" => &["process_before_commit:1", "process_after_commit:1", "process_after_commit:2"],
        "curate" => {
            &["curate_before_commit:1", "curate_after_commit:1", "curate_before_commit:2", "curate_after_commit:2"]
        }
        "maintain" => &[
            "maintain_holding_lease:1",
            "maintain_after_action:1",
            "maintain_after_action:3",
            "maintain_after_action:6",
            "maintain_after_action:12",
        ],
        "erase" => &[
            "erase_before_delete:1",
            "erase_after_delete:1",
            "erase_after_delete:2",
            "erase_after_delete:3",
            "process_after_commit:1",
            "curate_after_commit:1",
            "erase_before_log:1",
        ],
        _ => &["erase_after_delete:2", "erase_after_purge:1", "erase_after_purge:3", "erase_before_log:1"],
    }
}

/// A job aborted at each of its commit boundaries, then run again, leaves
/// the tables an uninterrupted run leaves; so does `weir run`, `weir
/// maintain` and `weir erase --purge` killed (SIGKILL) at spread instants.
#[test]
fn every_job_killed_at_every_commit_boundary_or_at_random_converges_on_rerun() {
    let dir = tempfile::tempdir().unwrap();
    let steps = steps(dir.path());
    let (mut cells, mut hit, mut failures) = (0, 0, Vec::new());
    for step in &steps {
        for point in crash_points(step.name) {
            cells += 1;
            let lake = dir.path().join(format!("cell-{cells}"));
            weir_testkit::fs::copy_dir(&step.before, &lake);
            let out = command(&lake, &step.args, &[("WEIR_FAULT", point)]).output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            let aborted = stderr.contains("WEIR_FAULT: aborting");
            hit += usize::from(aborted);
            if !aborted && out.status.code() != Some(0) {
                failures.push(format!("{} at {point}: exit {:?}\n{stderr}", step.name, out.status.code()));
                continue;
            }
            failures.extend(rerun_converges(step, &lake, point));
            std::fs::remove_dir_all(&lake).unwrap();
        }
    }
    // SIGKILL at instants spread over each job's run (fractions of its
    // uninterrupted time, so a failure reproduces on the same machine).
    let mut kills = 0;
    let first = &steps[0];
    let run_took = first.took + steps[1].took + steps[2].took;
    let killed_jobs = [
        ("run", vec!["run"], &first.before, &steps[2].expected, run_took),
        ("maintain", steps[3].args.clone(), &steps[3].before, &steps[3].expected, steps[3].took),
        ("erase --purge", steps[5].args.clone(), &steps[5].before, &steps[5].expected, steps[5].took),
    ];
    // `WEIR_KILL_INSTANTS=N` kills at N instants per job (5 by default).
    let instants: u32 = std::env::var("WEIR_KILL_INSTANTS").ok().and_then(|n| n.parse().ok()).unwrap_or(5);
    for (i, (name, args, before, want, took)) in killed_jobs.iter().enumerate() {
        for k in 1..=instants {
            let lake = dir.path().join(format!("kill-{i}-{k}"));
            weir_testkit::fs::copy_dir(before, &lake);
            let mut child = command(&lake, args, &[])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(*took * k / (instants + 1));
            let killed = child.try_wait().unwrap().is_none();
            let _ = child.kill();
            child.wait().unwrap();
            kills += usize::from(killed);
            let again = weir(&lake, args, None);
            if again.status.code() != Some(0) {
                failures.push(format!(
                    "{name} killed at {k}/{}: rerun exit {:?}\n{}",
                    instants + 1,
                    again.status.code(),
                    String::from_utf8_lossy(&again.stderr)
                ));
                continue;
            }
            let got = rows(&lake);
            for (table, rows) in want.iter() {
                if got.get(table) != Some(rows) {
                    failures.push(format!("{name} killed at {k}/{}: {table} differs", instants + 1));
                }
            }
            std::fs::remove_dir_all(&lake).unwrap();
        }
    }
    eprintln!("{cells} crash points ({hit} reached), {kills} kills mid-run");
    assert!(failures.is_empty(), "{} failed:\n{}", failures.len(), failures.join("\n---\n"));
    assert!(hit * 3 > cells * 2, "most crash points must be reached ({hit} of {cells})");
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
/// its first delete, naming the holder, until `weir maintain
/// --release-leases REASON` gives it back.
#[test]
fn a_killed_maintain_leaves_no_erase_halfway_and_a_live_lease_stops_erase_before_any_delete() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    // Raw rows older than a day: maintain has rows to delete, so it takes the lease.
    let pipeline = example_in(dir.path(), 1);
    let out = command_for(&pipeline, &lake, &["run"], &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));

    let mut maintain = command_for(&pipeline, &lake, &["maintain"], &[])
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
    let out = command_for(&pipeline, &lake, &["erase", "--subject", "userId=u-1071"], &[]).output().unwrap();
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
    rt.block_on(async {
        let table = weir::delta::open(&processed).await.unwrap().unwrap();
        let hour = std::time::Duration::from_secs(3600);
        weir::delta::claim_rewrite_lease(table, hour, Default::default()).await.unwrap();
    });
    let before = rows_holding(&raw, "u-753");
    assert!(before > 0);
    let out = command_for(&pipeline, &lake, &["erase", "--subject", "userId=u-753"], &[]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{stderr}");
    assert!(stderr.contains(&format!("process {} on host", std::process::id())), "{stderr}");
    assert_eq!(rows_holding(&raw, "u-753"), before, "nothing was deleted");
    // A holder that cannot be seen from here (another host): the operator
    // gives the lease back, with the reason, and nothing else is done.
    let reason = "maintain on host b was stopped";
    let out = command_for(&pipeline, &lake, &["maintain", "--release-leases", reason], &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let actions = report["stages"][0]["maintenance"].as_array().unwrap();
    let done: Vec<&str> =
        actions.iter().filter(|a| a["outcome"] == "done").map(|a| a["table"].as_str().unwrap()).collect();
    assert_eq!(done, ["processed"], "{actions:#?}");
    assert!(actions.iter().all(|a| a["action"] == "release_lease"), "{actions:#?}");
    let released = actions.iter().find(|a| a["outcome"] == "done").unwrap()["detail"].as_str().unwrap().to_string();
    assert!(released.contains(&format!("process {}", std::process::id())) && released.contains(reason), "{released}");
    let out = command_for(&pipeline, &lake, &["erase", "--subject", "userId=u-753"], &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(rows_holding(&raw, "u-753"), 0);
}

/// One capture file storage will not give: its partition stops before it,
/// every other partition is ingested and committed, the run exits 75, and
/// the rerun reads the file again and lands the rest.
#[test]
fn one_unreadable_capture_file_stops_its_partition_only() {
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("reference");
    assert_eq!(weir(&reference, &["ingest"], None).status.code(), Some(0));
    let all = rows(&reference).remove("raw/user_events").unwrap();
    let of = |rows: &[String], partition: &str| {
        rows.iter().filter(|r| r.contains(&format!("partition_id={partition}|"))).count()
    };

    let lake = dir.path().join("lake");
    let out = weir(&lake, &["ingest"], Some("get:error:1:1/2026/11/01/08/10/00.avro"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{stderr}");
    assert!(stderr.contains("capture file unreadable") && !stderr.contains("panicked"), "{stderr}");
    let got = rows(&lake).remove("raw/user_events").unwrap();
    for partition in ["0", "2", "3"] {
        assert_eq!(of(&got, partition), of(&all, partition), "partition {partition} is ingested");
    }
    assert!(of(&got, "1") > 0 && of(&got, "1") < of(&all, "1"), "partition 1 stops before the file");

    assert_eq!(weir(&lake, &["ingest"], None).status.code(), Some(0));
    assert_eq!(rows(&lake).remove("raw/user_events").unwrap(), all);
}

/// The Azurite endpoint `scripts/test.sh` started.
fn azurite() -> String {
    std::env::var("WEIR_AZURITE_BLOB_URL").unwrap_or_else(|_| {
        panic!("WEIR_AZURITE_BLOB_URL is not set: this test needs Azurite. Run scripts/test.sh, which starts it")
    })
}

/// Copies every object under `from` to the same name under `to` (two
/// `az://` prefixes of one container).
fn az_copy(from: &str, to: &str) {
    use futures::TryStreamExt as _;
    use object_store::ObjectStoreExt as _;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let (store, from_prefix) = weir::storage::Location::parse(from).unwrap().object_store().unwrap();
        let (_, to_prefix) = weir::storage::Location::parse(to).unwrap().object_store().unwrap();
        let objects: Vec<object_store::ObjectMeta> = store.list(Some(&from_prefix)).try_collect().await.unwrap();
        for meta in objects {
            let rest = meta.location.as_ref().strip_prefix(from_prefix.as_ref()).unwrap().trim_start_matches('/');
            let target = object_store::path::Path::from(format!("{}/{rest}", to_prefix.as_ref()));
            store.copy(&meta.location, &target).await.unwrap();
        }
    });
}

/// The crash points on Azure Blob storage (Azurite): each job of the
/// example aborted at each of its commit boundaries on a lake in a
/// container, then run again, leaves every table as an uninterrupted run.
#[test]
fn every_job_aborted_at_every_commit_boundary_on_azurite_converges() {
    let endpoint = azurite();
    weir_testkit::env::clean_process(&["AZURE_"], &[]);
    std::env::set_var("AZURE_STORAGE_USE_EMULATOR", "true");
    std::env::set_var("AZURITE_BLOB_STORAGE_URL", &endpoint);
    let container = format!("faults-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    weir::storage::emulator::create_container(&endpoint, &container).unwrap();
    let root = format!("az://{container}");
    let az = |lake: &str, job: &[&str], env: &[(&str, &str)]| -> Output {
        let emulator = [("AZURE_STORAGE_USE_EMULATOR", "true"), ("AZURITE_BLOB_STORAGE_URL", endpoint.as_str())];
        let env: Vec<(&str, &str)> = emulator.into_iter().chain(env.iter().copied()).collect();
        command_for(&repo().join(PIPELINE), lake, job, &env).output().unwrap()
    };
    let base = format!("{root}/base");
    let mut steps = Vec::new();
    for (i, (name, args)) in jobs().into_iter().enumerate() {
        let before = format!("{root}/before-{i}");
        az_copy(&base, &before);
        let run = az(&base, &args, &[]);
        assert_eq!(run.status.code(), Some(0), "{name}: {}", String::from_utf8_lossy(&run.stderr));
        steps.push((name, args, before, rows_at(&base)));
    }
    let (mut cells, mut hit, mut failures) = (0, 0, Vec::new());
    for (name, args, before, expected) in &steps {
        for point in crash_points(name) {
            cells += 1;
            let lake = format!("{root}/cell-{cells}");
            az_copy(before, &lake);
            let out = az(&lake, args, &[("WEIR_FAULT", point)]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            let aborted = stderr.contains("WEIR_FAULT: aborting");
            hit += usize::from(aborted);
            if !aborted && out.status.code() != Some(0) {
                failures.push(format!("{name} at {point}: exit {:?}\n{stderr}", out.status.code()));
                continue;
            }
            let again = az(&lake, args, &[]);
            if again.status.code() != Some(0) {
                failures.push(format!(
                    "{name} after {point}: rerun exit {:?}\n{}",
                    again.status.code(),
                    String::from_utf8_lossy(&again.stderr)
                ));
                continue;
            }
            let got = rows_at(&lake);
            for (table, want) in expected {
                if got.get(table) != Some(want) {
                    failures.push(format!("{name} after {point}: {table} differs on Azurite"));
                }
            }
        }
    }
    eprintln!("{cells} crash points on Azurite ({hit} reached)");
    assert!(failures.is_empty(), "{} failed:\n{}", failures.len(), failures.join("\n---\n"));
    assert!(hit * 3 > cells * 2, "most crash points must be reached ({hit} of {cells})");
}
