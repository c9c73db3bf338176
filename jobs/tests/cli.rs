//! The `weir` binary as a scheduler runs it: exit codes, reports, crashes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use deltalake::arrow::array::AsArray;
use deltalake::arrow::datatypes::Int64Type;
use weir_testkit::capture::{corrupt, generate_dataset, Codec, Corruption, DatasetSpec};

/// `weir` with none of the caller's WEIR_*, AZURE_* or RUST_LOG settings.
fn weir() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_weir"));
    weir_testkit::env::clean(&mut c).env("RUST_LOG", "warn");
    c
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

struct Fixture {
    dir: tempfile::TempDir,
    last: BTreeMap<String, i64>,
}

impl Fixture {
    fn new(spec: DatasetSpec, extra: &str) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let summary = generate_dataset(&dir.path().join("capture"), &spec).unwrap();
        Fixture::with(dir, summary.per_partition_last_sequence, extra)
    }

    /// The fixture's pipeline over capture files already in `dir`, whose
    /// partitions hold 0..=`last`.
    fn with(dir: tempfile::TempDir, last: BTreeMap<String, i64>, extra: &str) -> Fixture {
        let text = format!(
            "name: crash\nsource:\n  capture:\n    url: ${{WEIR_CAPTURE}}\n{extra}tables:\n  raw:\n    path: ${{WEIR_LAKE}}/raw\ningest:\n  commit_bytes: 6000\n  decode_parallelism: 2\n"
        );
        std::fs::write(dir.path().join("p.yaml"), text).unwrap();
        Fixture { dir, last }
    }

    fn cmd(&self, job: &str) -> Command {
        let mut c = weir();
        c.arg(job)
            .arg(self.dir.path().join("p.yaml"))
            .env("WEIR_CAPTURE", self.dir.path().join("capture"))
            .env("WEIR_LAKE", self.dir.path().join("lake"));
        c
    }

    fn run(&self, job: &str) -> (i32, serde_json::Value) {
        let out = self.cmd(job).output().unwrap();
        let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "report is JSON ({e}): {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.code().unwrap_or(-1), report)
    }

    fn expected(&self) -> Vec<(String, i64)> {
        let mut v: Vec<(String, i64)> =
            self.last.iter().flat_map(|(p, l)| (0..=*l).map(move |s| (p.clone(), s))).collect();
        v.sort();
        v
    }

    fn keys(&self) -> Vec<(String, i64)> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let loc = weir::storage::Location::parse(self.dir.path().join("lake/raw").to_str().unwrap()).unwrap();
            let Some(table) = weir::delta::open(&loc).await.unwrap() else { return Vec::new() };
            let mut out = Vec::new();
            for b in weir::delta::read_all(&table).await.unwrap() {
                let p = deltalake::arrow::compute::cast(
                    b.column_by_name("partition_id").unwrap(),
                    &deltalake::arrow::datatypes::DataType::Utf8,
                )
                .unwrap();
                let p = p.as_string::<i32>();
                let s = b.column_by_name("sequence_number").unwrap().as_primitive::<Int64Type>();
                out.extend((0..b.num_rows()).map(|i| (p.value(i).to_string(), s.value(i))));
            }
            out.sort();
            out
        })
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn spec() -> DatasetSpec {
    DatasetSpec {
        partitions: 4,
        windows: 8,
        events_per_file: 30,
        codecs: vec![Codec::Deflate, Codec::Null],
        ..DatasetSpec::small(3)
    }
}

#[test]
fn validate_accepts_the_example_and_locates_problems() {
    let out = weir().arg("validate").arg(repo().join("pipelines/user_events.yaml")).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("x.yaml");
    std::fs::write(&bad, "name: x\nsource:\n  capture:\n    url: /c\ntables:\n  raw:\n    pathh: /l\n").unwrap();
    let out = weir().arg("validate").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let text = stdout(&out);
    assert!(text.contains(&format!("{}:7: tables.raw.pathh: unknown field 'pathh'", bad.display())), "{text}");
}

/// A table at the lake root would have its vacuum delete every other
/// table's files: `weir validate` and `weir run` refuse it, and nothing is
/// written.
#[test]
fn a_table_at_the_lake_root_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let text = "name: x\nsource:\n  capture:\n    url: ${WEIR_CAPTURE}\ntables:\n  raw:\n    path: ${WEIR_LAKE}/raw\n  runs:\n    path: ${WEIR_LAKE}\n";
    let file = dir.path().join("x.yaml");
    std::fs::write(&file, text).unwrap();
    std::fs::create_dir_all(dir.path().join("capture")).unwrap();
    for job in ["validate", "run"] {
        let out = weir()
            .arg(job)
            .arg(&file)
            .env("WEIR_CAPTURE", dir.path().join("capture"))
            .env("WEIR_LAKE", dir.path().join("lake"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{job}: {}", stdout(&out));
        let text = format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
        assert!(text.contains("tables.raw.path is inside the folder of tables.runs.path"), "{job}: {text}");
    }
    assert!(!dir.path().join("lake").exists(), "nothing written");
}

/// A local table folder with `%` or `\` in its path was written at one
/// path and read at another (every run after the first failed with 1): it
/// is refused before anything is written, naming the key.
#[test]
fn a_table_folder_with_percent_or_backslash_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for lake in ["pct%20enc", "back\\slash"] {
        let lake = dir.path().join(lake);
        let out = weir()
            .args(["run", repo().join("pipelines/user_events.yaml").to_str().unwrap()])
            .env("WEIR_LAKE", &lake)
            .env("WEIR_PII_KEY", "a-test-key-of-32-bytes-length!!!")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("tables.raw.path") && stderr.contains("cannot contain '%' or '\\'"), "{stderr}");
        assert!(!lake.exists(), "nothing written");
    }
}

#[test]
fn usage_errors_exit_2_and_missing_pipeline_is_a_config_error() {
    assert_eq!(weir().arg("ingest").output().unwrap().status.code(), Some(2));
    assert_eq!(weir().args(["ingest", "p.yaml", "--partitions", "3-1"]).output().unwrap().status.code(), Some(2));
    let out = weir().args(["ingest", "/nonexistent/p.yaml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["outcome"], "failed");
    assert_eq!(report["error"]["class"], "config");
}

/// What a user controls is bounded: a device given as the pipeline, a
/// nesting deep enough to make YAML parsers quadratic and a queue width of
/// a hundred million are configuration errors (exit 2) naming the file,
/// the key and the bound, found before anything grows.
#[test]
fn unbounded_inputs_are_config_errors_naming_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let good = "name: x\nsource:\n  capture:\n    url: /c\ntables:\n  raw:\n    path: /l\n";
    let deep = dir.path().join("deep.yaml");
    std::fs::write(&deep, format!("{good}description: {}\n", "[".repeat(100_000))).unwrap();
    let wide = dir.path().join("wide.yaml");
    std::fs::write(&wide, format!("{good}ingest:\n  decode_parallelism: 100000000\n")).unwrap();
    for (file, expected) in [
        (PathBuf::from("/dev/zero"), "/dev/zero: cannot read file: not a regular file".to_string()),
        (deep.clone(), format!("{}:8: mappings and sequences nest more than 32 levels deep", deep.display())),
        (wide.clone(), format!("{}:9: ingest.decode_parallelism: must be at most 256, not 100000000", wide.display())),
    ] {
        let out = weir().arg("validate").arg(&file).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", file.display());
        assert!(stdout(&out).contains(&expected), "{expected}\n{}", stdout(&out));
        // A job refuses it the same way, before reading anything.
        let out = weir().arg("ingest").arg(&file).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", file.display());
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(report["error"]["message"].as_str().unwrap().contains(&expected), "{report}");
    }
}

/// A partition range is kept as a range: the widest one selects every
/// partition at once instead of listing four billion ids first.
#[test]
fn a_partition_range_of_billions_selects_without_expanding() {
    let f = Fixture::new(spec(), "");
    let out = f.cmd("ingest").args(["--partitions", "0-4000000000"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(f.keys(), f.expected());
}

/// An environment value is taken literally: a lake folder named `hash #`
/// is where the tables go (pasted into the YAML, ` #` started a comment and
/// cut every path there), and a value with a line break is refused naming
/// the variable.
#[test]
fn environment_values_are_taken_literally() {
    let f = Fixture::new(spec(), "");
    let lake = f.dir.path().join("hash #");
    let out = f.cmd("ingest").env("WEIR_LAKE", &lake).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let rows = rt.block_on(async {
        let raw = weir::storage::Location::parse(lake.join("raw").to_str().unwrap()).unwrap();
        let table = weir::delta::open(&raw).await.unwrap().expect("the raw table is in the folder named by WEIR_LAKE");
        weir::delta::read_all(&table).await.unwrap().iter().map(|b| b.num_rows()).sum::<usize>()
    });
    assert_eq!(rows, f.expected().len());
    assert!(!f.dir.path().join("hash").exists());

    let out = f.cmd("validate").env("WEIR_LAKE", "/data/lake\nname: other").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let expected = format!(
        "{}:7: environment variable WEIR_LAKE holds a line break, which a pipeline value cannot take",
        f.dir.path().join("p.yaml").display()
    );
    assert!(stdout(&out).contains(&expected), "{}", stdout(&out));
}

/// A model file outside the pipeline's project is refused (exit 2) naming
/// the key, before it is read: nothing of it reaches the message.
#[test]
fn a_sql_file_outside_the_project_is_a_config_error_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let pipelines = dir.path().join("pipelines");
    std::fs::create_dir_all(&pipelines).unwrap();
    let file = pipelines.join("p.yaml");
    std::fs::write(
        &file,
        "name: x\nsource:\n  capture:\n    url: /c\ntables:\n  raw:\n    path: /l/raw\ncurate:\n  tables:\n    - name: m\n      path: /l/m\n      sql_file: ../../../../../etc/passwd\n      key: [a]\n",
    )
    .unwrap();
    let out = weir().arg("validate").arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let expected = format!(
        "{}:12: curate.tables[0].sql_file: ../../../../../etc/passwd leaves the pipeline's project folder",
        file.display()
    );
    assert!(stdout(&out).contains(&expected), "{}", stdout(&out));
    assert!(!stdout(&out).contains("root"), "{}", stdout(&out));
}

#[test]
fn ingest_reports_and_reruns_are_no_ops() {
    let f = Fixture::new(spec(), "");
    let (code, report) = f.run("ingest");
    assert_eq!(code, 0, "{report}");
    let stage = &report["stages"][0];
    let total: i64 = f.expected().len() as i64;
    assert_eq!(stage["events_written"], total);
    assert!(report["run_id"].as_str().unwrap().len() > 10);
    assert_eq!(stage["partitions"]["2"]["watermark_after"], f.last["2"]);
    assert_eq!(f.keys(), f.expected());

    let (code, report) = f.run("run");
    assert_eq!(code, 0);
    assert_eq!(report["stages"][0]["events_written"], 0);
    assert_eq!(report["stages"][0]["tables"][0]["versions_written"].as_array().unwrap().len(), 0);
    assert_eq!(f.keys(), f.expected());
}

/// A data file that cannot be written (here: a file where the raw table's
/// date folder should be; on a real lake, a full disk or a read-only
/// mount) ends the run with the retryable code and no panic, commits
/// nothing, and the rerun after the fault is gone lands every event once.
#[test]
fn a_failed_data_file_write_exits_75_without_a_panic_and_the_rerun_is_exact() {
    let f = Fixture::new(spec(), "");
    // The capture path's dates are the raw table's `enqueued_date` folders.
    let raw = f.dir.path().join("lake/raw");
    std::fs::create_dir_all(&raw).unwrap();
    let mut blockers = std::collections::BTreeSet::new();
    for partition in std::fs::read_dir(f.dir.path().join("capture")).unwrap() {
        let partition = partition.unwrap().path();
        for year in std::fs::read_dir(&partition).unwrap() {
            let year = year.unwrap().path();
            for month in std::fs::read_dir(&year).unwrap() {
                let month = month.unwrap().path();
                for day in std::fs::read_dir(&month).unwrap() {
                    let name = |p: &Path| p.file_name().unwrap().to_string_lossy().into_owned();
                    let day = day.unwrap().path();
                    let blocker = raw.join(format!("enqueued_date={}-{}-{}", name(&year), name(&month), name(&day)));
                    std::fs::write(&blocker, b"not a folder").unwrap();
                    blockers.insert(blocker);
                }
            }
        }
    }
    let out = f.cmd("ingest").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{}\n{stderr}", stdout(&out));
    assert!(!stderr.contains("panicked"), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["error"]["class"], "retryable", "{report}");
    assert!(report["error"]["message"].as_str().unwrap().contains("Not a directory"), "{report}");
    assert_eq!(f.keys(), Vec::new(), "nothing committed");

    for blocker in blockers {
        std::fs::remove_file(blocker).unwrap();
    }
    let (code, report) = f.run("ingest");
    assert_eq!(code, 0, "{report}");
    assert_eq!(f.keys(), f.expected());
}

#[test]
fn corrupt_file_gives_the_data_problem_exit_code() {
    let f = Fixture::new(spec(), "");
    let victim = f.dir.path().join("capture/1/2026/11/01/08/10/00.avro");
    let good = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, corrupt(&good, Corruption::BadSync)).unwrap();
    let (code, report) = f.run("ingest");
    assert_eq!(code, 3, "{report}");
    assert_eq!(report["outcome"], "data_problem");
    let problem = &report["stages"][0]["problems"][0];
    assert_eq!(problem["kind"], "corrupt_file");
    assert_eq!(problem["file"], "1/2026/11/01/08/10/00.avro");
    assert_eq!(report["stages"][0]["partitions"]["1"]["halted_at"], "1/2026/11/01/08/10/00.avro");
}

/// Abort (like kill -9) at chosen points, rerun, and compare the exact
/// multiset of (partition, sequence).
#[test]
fn crash_at_any_commit_point_then_rerun_is_exactly_once() {
    for fault in ["before_commit:1", "before_commit:4", "after_commit:1", "after_commit:3"] {
        let f = Fixture::new(spec(), "");
        let out = f.cmd("ingest").env("WEIR_FAULT", fault).output().unwrap();
        assert!(!out.status.success(), "{fault}: the process must have died");
        let partial = f.keys();
        assert!(partial.len() < f.expected().len(), "{fault}: the crash left work");
        let mut dedup = partial.clone();
        dedup.dedup();
        assert_eq!(dedup, partial, "{fault}: no duplicates after the crash");
        let (code, _) = f.run("ingest");
        assert_eq!(code, 0, "{fault}");
        assert_eq!(f.keys(), f.expected(), "{fault}: exactly once after rerun");
    }
}

/// A file of 50,000 events is committed in several parts (the fixture's
/// commits are tiny): abort between those parts, rerun, and every event
/// lands once. The abort must land inside the first file.
#[test]
fn crash_in_the_middle_of_a_large_file_then_rerun_is_exactly_once() {
    let spec = DatasetSpec {
        partitions: 1,
        windows: 2,
        events_per_file: 50_000,
        codecs: vec![Codec::Deflate],
        ..DatasetSpec::small(5)
    };
    for fault in ["after_commit:2", "before_commit:3"] {
        let f = Fixture::new(spec.clone(), "");
        let out = f.cmd("ingest").env("WEIR_FAULT", fault).output().unwrap();
        assert!(!out.status.success(), "{fault}: the process must have died");
        let partial = f.keys();
        assert!(
            !partial.is_empty() && partial.len() < 50_000,
            "{fault}: stopped inside the first file ({} events)",
            partial.len()
        );
        assert_eq!(partial, f.expected()[..partial.len()].to_vec(), "{fault}: a prefix of the file, each event once");
        let (code, report) = f.run("ingest");
        assert_eq!(code, 0, "{fault}: {report}");
        assert_eq!(report["stages"][0]["events_written"], 100_000 - partial.len() as i64, "{fault}");
        assert_eq!(f.keys(), f.expected(), "{fault}: exactly once after rerun");
    }
}

/// Capture files whose sequence numbers are out of order, each of several
/// chunks (one in swapped pairs, one running backwards), under the
/// fixture's tiny commits: abort at commit points inside and between them,
/// rerun, and every event lands once.
#[test]
fn crash_inside_files_out_of_order_then_rerun_is_exactly_once() {
    use weir_testkit::capture::{capture_path, user_event_body, write_capture_file, CaptureEvent, FileSpec, Rng};
    let t0 = chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2026, 11, 1, 8, 0, 0).unwrap();
    let files: [(i64, Vec<i64>); 3] = [
        (0, (0..1_000).collect()),
        (5, (1_000..7_000).map(|s| s ^ 1).collect()),
        (10, (7_000..13_000).rev().collect()),
    ];
    for fault in ["after_commit:2", "before_commit:3", "after_commit:3", "before_commit:4"] {
        let dir = tempfile::tempdir().unwrap();
        for (minute, seqs) in &files {
            let events: Vec<CaptureEvent> = seqs
                .iter()
                .map(|&s| CaptureEvent {
                    sequence_number: s,
                    offset: (s * 512).to_string(),
                    enqueued_time: t0,
                    system_properties: vec![],
                    properties: vec![],
                    body: Some(user_event_body(&mut Rng::new(s as u64), s, t0)),
                })
                .collect();
            let path = dir.path().join("capture").join(capture_path("0", t0 + chrono::Duration::minutes(*minute)));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, write_capture_file(&events, &FileSpec::default()).unwrap()).unwrap();
        }
        let f = Fixture::with(dir, BTreeMap::from([("0".to_string(), 12_999)]), "");
        let out = f.cmd("ingest").env("WEIR_FAULT", fault).output().unwrap();
        assert!(!out.status.success(), "{fault}: the process must have died");
        let partial = f.keys();
        assert!(!partial.is_empty() && partial.len() < 13_000, "{fault}: the crash left work ({})", partial.len());
        assert_eq!(partial, f.expected()[..partial.len()].to_vec(), "{fault}: numbers up to the watermark, each once");
        let (code, report) = f.run("ingest");
        assert_eq!(code, 0, "{fault}: {report}");
        assert_eq!(report["stages"][0]["events_written"], 13_000 - partial.len() as i64, "{fault}");
        assert_eq!(f.keys(), f.expected(), "{fault}: exactly once after rerun");
    }
}

/// Real SIGKILLs at arbitrary instants, several in a row on the same lake.
#[test]
fn sigkill_at_random_instants_then_rerun_is_exactly_once() {
    let f = Fixture::new(DatasetSpec { windows: 24, ..spec() }, "");
    let delays = [40u64, 150, 250, 350, 500, 700, 900, 1500, 2500];
    let mut mid_run = 0;
    for ms in delays {
        let mut child = f.cmd("ingest").stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(ms));
        let _ = child.kill(); // SIGKILL on Unix
        let _ = child.wait();
        let partial = f.keys();
        let mut dedup = partial.clone();
        dedup.dedup();
        assert_eq!(dedup, partial, "no duplicates after a kill at {ms} ms");
        if !partial.is_empty() && partial.len() < f.expected().len() {
            mid_run += 1;
        }
        eprintln!("kill at {ms} ms: {} of {} events committed", partial.len(), f.expected().len());
    }
    assert!(mid_run > 0, "at least one kill must land while the ingest was committing");
    let (code, report) = f.run("ingest");
    assert_eq!(code, 0, "{report}");
    assert_eq!(f.keys(), f.expected());
}

/// Two workers on the same partitions at once: Delta's txn conflict decides,
/// the loser re-reads the watermark, and every event lands exactly once.
#[test]
fn overlapping_workers_still_give_exactly_once() {
    let f = Fixture::new(DatasetSpec { windows: 12, ..spec() }, "");
    // Create the table first so both workers race on commits, not on creation.
    let (code, _) = {
        let out = f.cmd("ingest").args(["--partitions", "0"]).output().unwrap();
        (out.status.code(), ())
    };
    assert_eq!(code, Some(0));
    let a = f.cmd("ingest").stdout(Stdio::piped()).spawn().unwrap();
    let b = f.cmd("ingest").stdout(Stdio::piped()).spawn().unwrap();
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert_eq!(a.status.code(), Some(0), "{}", stdout(&a));
    assert_eq!(b.status.code(), Some(0), "{}", stdout(&b));
    let written = |o: &Output| {
        let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        r["stages"][0]["events_written"].as_i64().unwrap()
    };
    let first: i64 = f.last["0"] + 1;
    assert_eq!(written(&a) + written(&b) + first, f.expected().len() as i64, "reports add up");
    assert_eq!(f.keys(), f.expected());
}

/// A worker whose rows are already in Parquet files when it finds that
/// another worker committed the same events deletes those files and
/// commits nothing twice.
#[test]
fn an_ingest_that_lost_the_race_after_writing_deletes_its_files() {
    let f = Fixture::new(DatasetSpec { windows: 6, ..spec() }, "");
    let out = f.cmd("ingest").args(["--partitions", "0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    // A writes its files, then waits before committing; B ingests
    // everything meanwhile.
    let a = f.cmd("ingest").env("WEIR_PAUSE", "ingest_before_commit:4000").stdout(Stdio::piped()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let b = f.cmd("ingest").output().unwrap();
    assert_eq!(b.status.code(), Some(0), "{}", stdout(&b));
    let a = a.wait_with_output().unwrap();
    assert_eq!(a.status.code(), Some(0), "{}", stdout(&a));
    let written = |o: &Output| {
        let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        r["stages"][0]["events_written"].as_i64().unwrap()
    };
    let first: i64 = f.last["0"] + 1;
    assert!(written(&b) > 0, "B ingested the rest");
    assert_eq!(written(&a), 0, "A's events were B's: {}", stdout(&a));
    assert_eq!(written(&a) + written(&b) + first, f.expected().len() as i64);
    assert_eq!(f.keys(), f.expected());
    // Every Parquet file under the table is one the table references.
    let mut on_disk = Vec::new();
    let mut dirs = vec![f.dir.path().join("lake/raw")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() && !p.ends_with("_delta_log") {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                on_disk.push(p.file_name().unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let listed = Command::new(weir_testkit::env::python())
        .args(["-c", "import sys, deltalake; [print(u.rsplit('/', 1)[1]) for u in deltalake.DeltaTable(sys.argv[1]).file_uris()]"])
        .arg(f.dir.path().join("lake/raw"))
        .output()
        .unwrap();
    assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
    let mut referenced: Vec<String> = String::from_utf8(listed.stdout).unwrap().lines().map(str::to_string).collect();
    on_disk.sort();
    referenced.sort();
    assert_eq!(on_disk, referenced, "uncommitted files left behind");
}

/// An independent reader (Python `deltalake`, as the ML team uses) sees the
/// same rows, types, watermarks and change feed.
#[test]
fn python_deltalake_reads_the_raw_table() {
    let f = Fixture::new(spec(), "");
    let (code, _) = f.run("ingest");
    assert_eq!(code, 0);
    let expected = serde_json::json!({ "pipeline": "crash", "last_sequence": f.last });
    let out = Command::new(weir_testkit::env::python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/read_raw.py"))
        .arg(f.dir.path().join("lake/raw"))
        .arg(expected.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success() && stdout(&out).trim() == "ok",
        "python reader failed:\n{}\n{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A pipeline with the example's process section over generated capture
/// files with malformed bodies and re-sends.
fn process_fixture() -> Fixture {
    let spec = DatasetSpec { defect_rate_ppm: 40_000, duplicate_rate_ppm: 40_000, ..spec() };
    let f = Fixture::new(spec, "");
    let example = std::fs::read_to_string(repo().join("pipelines/user_events.yaml")).unwrap();
    let process = &example[example.find("\nprocess:").unwrap()..example.find("\ncurate:").unwrap()];
    let text = format!(
        "name: crash\nsource:\n  capture:\n    url: ${{WEIR_CAPTURE}}\nbody:\n  schema: {schema}\ntables:\n  raw: {{path: ${{WEIR_LAKE}}/raw}}\n  processed: {{path: ${{WEIR_LAKE}}/processed}}\n  quarantine: {{path: ${{WEIR_LAKE}}/quarantine}}\n  quality_metrics: {{path: ${{WEIR_LAKE}}/quality}}\ningest:\n  commit_bytes: 6000\n{process}",
        schema = repo().join("schemas/user_event.avsc").display(),
    )
    .replace("raw_versions_per_commit: 1", "raw_versions_per_commit: 2");
    std::fs::write(f.dir.path().join("p.yaml"), text).unwrap();
    f
}

impl Fixture {
    fn with_key(&self, job: &str) -> Command {
        let mut c = self.cmd(job);
        c.env("WEIR_PII_KEY", "a-test-key-of-32-bytes-length!!!");
        c
    }

    /// Sorted rows of a table, each rendered by `row` from its batch.
    fn rows(&self, table: &str, row: impl Fn(&deltalake::arrow::array::RecordBatch, usize) -> String) -> Vec<String> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let loc =
                weir::storage::Location::parse(self.dir.path().join("lake").join(table).to_str().unwrap()).unwrap();
            let Some(t) = weir::delta::open(&loc).await.unwrap() else { return Vec::new() };
            let mut out = Vec::new();
            for b in weir::delta::read_all(&t).await.unwrap() {
                out.extend((0..b.num_rows()).map(|i| row(&b, i)));
            }
            out.sort();
            out
        })
    }

    /// (eventId, partition, sequence) of every processed row, and
    /// (partition, sequence, rules) of every quarantined one.
    fn outputs(&self) -> (Vec<String>, Vec<String>) {
        use deltalake::arrow::util::display::array_value_to_string as show;
        let processed = self.rows("processed", |b, i| {
            ["eventId", "_partition_id", "_sequence_number"]
                .map(|c| show(b.column_by_name(c).unwrap(), i).unwrap())
                .join(" ")
        });
        let quarantine = self.rows("quarantine", |b, i| {
            ["_partition_id", "_sequence_number", "rules"]
                .map(|c| show(b.column_by_name(c).unwrap(), i).unwrap())
                .join(" ")
        });
        (processed, quarantine)
    }
}

/// Abort between the three process commits (quarantine, processed,
/// metrics) and in the middle of a multi-commit run: the rerun repairs the
/// tables to exactly what an uninterrupted run writes.
#[test]
fn process_crash_at_any_commit_point_then_rerun_is_exact() {
    let reference = process_fixture();
    assert_eq!(reference.with_key("ingest").output().unwrap().status.code(), Some(0));
    let out = reference.with_key("process").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let expected = reference.outputs();
    assert!(!expected.0.is_empty() && !expected.1.is_empty(), "fixture has processed and quarantined rows");
    let mut ids: Vec<&str> = expected.0.iter().map(|r| r.split(' ').next().unwrap()).collect();
    ids.dedup();
    assert_eq!(ids.len(), expected.0.len(), "each eventId once");

    for fault in
        ["process_after_commit:1", "process_after_commit:2", "process_before_commit:3", "process_after_commit:4"]
    {
        let f = process_fixture();
        assert_eq!(f.with_key("ingest").output().unwrap().status.code(), Some(0));
        let out = f.with_key("process").env("WEIR_FAULT", fault).output().unwrap();
        assert!(!out.status.success(), "{fault}: the process must have died");
        let partial = f.outputs();
        assert_ne!(partial, expected, "{fault}: the crash left work");
        let out = f.with_key("process").output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{fault}: {}", stdout(&out));
        assert_eq!(f.outputs(), expected, "{fault}: exact after the rerun");
        let out = f.with_key("run").output().unwrap();
        assert_eq!(out.status.code(), Some(0));
        assert_eq!(f.outputs(), expected, "{fault}: a further run changes nothing");
    }
}

/// `weir run` on the example pipeline and its committed test data, read back
/// by Python `deltalake`: the 400 events minus 4 malformed bodies and 9
/// re-sends are processed, typed as the schema says; the 4 are quarantined.
#[test]
fn example_pipeline_runs_end_to_end_and_python_reads_the_processed_table() {
    let lake = tempfile::tempdir().unwrap();
    let out = weir()
        .args(["run", "pipelines/user_events.yaml"])
        .current_dir(repo())
        .env("WEIR_LAKE", lake.path())
        .env("WEIR_PII_KEY", "a-test-key-of-32-bytes-length!!!")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    // The key is in no output and no file the run wrote.
    let key = "a-test-key-of-32-bytes-length!!!";
    assert!(!stdout(&out).contains(key) && !String::from_utf8_lossy(&out.stderr).contains(key));
    let mut files = vec![lake.path().to_path_buf()];
    while let Some(p) = files.pop() {
        if p.is_dir() {
            files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else {
            let bytes = std::fs::read(&p).unwrap();
            assert!(!bytes.windows(key.len()).any(|w| w == key.as_bytes()), "key found in {}", p.display());
        }
    }
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["stages"][1]["stage"], "process");
    assert_eq!(report["stages"][1]["events_written"], 387, "{report}");
    assert_eq!(report["stages"][1]["quality"]["duplicates_dropped"], 9);
    assert_eq!(report["stages"][1]["quality"]["events_quarantined"], 4);
    let out = Command::new(weir_testkit::env::python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/read_processed.py"))
        .arg(lake.path())
        .arg(serde_json::json!({"processed": 387, "quarantined": 4, "duplicates": 9}).to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success() && stdout(&out).trim() == "ok",
        "python reader failed:\n{}\n{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A `fail` rule: nothing published, exit code 3, the report names the rule.
#[test]
fn a_fail_rule_exits_with_the_data_problem_code() {
    let f = process_fixture();
    let p = f.dir.path().join("p.yaml");
    let text = std::fs::read_to_string(&p).unwrap().replace(
        "  expectations:\n",
        "  expectations:\n    - {name: no_clicks, sql: \"\\\"eventName\\\" <> 'click'\", action: fail}\n",
    );
    std::fs::write(&p, text).unwrap();
    let out = f.with_key("run").output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["outcome"], "data_problem");
    let problem = &report["stages"][1]["problems"][0];
    assert_eq!(problem["kind"], "expectation_failed");
    assert!(problem["message"].as_str().unwrap().contains("no_clicks"), "{problem}");
    assert!(f.outputs().0.is_empty(), "nothing processed was published");
}

/// Real SIGKILLs at arbitrary instants of `weir process`, several in a row on
/// the same lake, then a rerun: the same tables as an uninterrupted run.
#[test]
fn process_sigkill_at_random_instants_then_rerun_is_exact() {
    let reference = process_fixture();
    assert_eq!(reference.with_key("run").output().unwrap().status.code(), Some(0));
    let expected = reference.outputs();

    let f = process_fixture();
    assert_eq!(f.with_key("ingest").output().unwrap().status.code(), Some(0));
    let mut mid_run = 0;
    for ms in [30u64, 120, 250, 400, 600, 900] {
        let mut child = f.with_key("process").stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(ms));
        let _ = child.kill();
        let _ = child.wait();
        let (processed, _) = f.outputs();
        let mut unique = processed.clone();
        unique.dedup();
        assert_eq!(unique, processed, "no duplicates after a kill at {ms} ms");
        if !processed.is_empty() && (processed.clone(), f.outputs().1) != expected {
            mid_run += 1;
        }
    }
    assert!(mid_run > 0, "at least one kill must land while process was committing");
    let out = f.with_key("process").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(f.outputs(), expected);
}

/// A crash between the process commits, then more capture files arrive and
/// are ingested before the rerun: the repair recomputes exactly the range the
/// interrupted run committed to some tables, and the end state equals an
/// uninterrupted run over everything.
#[test]
fn process_repair_after_new_raw_versions_is_exact() {
    let reference = process_fixture();
    assert_eq!(reference.with_key("run").output().unwrap().status.code(), Some(0));
    let expected = reference.outputs();

    let f = process_fixture();
    // Hold the last two windows back.
    let capture = f.dir.path().join("capture");
    let mut files = Vec::new();
    let mut dirs = vec![capture.clone()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p)
            } else {
                files.push(p)
            }
        }
    }
    let window = |p: &Path| p.strip_prefix(&capture).unwrap().iter().skip(1).collect::<PathBuf>();
    let mut windows: Vec<PathBuf> = files.iter().map(|p| window(p)).collect();
    windows.sort();
    windows.dedup();
    let late: Vec<PathBuf> = windows[windows.len() - 2..].to_vec();
    let held = f.dir.path().join("held");
    let mut moved = Vec::new();
    for p in files.iter().filter(|p| late.contains(&window(p))) {
        let to = held.join(p.strip_prefix(&capture).unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::rename(p, &to).unwrap();
        moved.push((to, p.clone()));
    }
    assert_eq!(f.with_key("ingest").output().unwrap().status.code(), Some(0));
    // One range for everything ingested so far (cut short at the raw table's
    // latest version); die right after its quarantine commit.
    let p = f.dir.path().join("p.yaml");
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, text.replace("raw_versions_per_commit: 2", "raw_versions_per_commit: 1000")).unwrap();
    let out = f.with_key("process").env("WEIR_FAULT", "process_after_commit:1").output().unwrap();
    assert!(!out.status.success());
    for (from, to) in moved {
        std::fs::rename(from, to).unwrap();
    }
    let out = f.with_key("run").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(f.outputs(), expected);
}

/// A repair must use the configuration that wrote the furthest table: a
/// pipeline edited between the crash and the rerun is refused (exit 2) until
/// the interrupted range is completed with the old one.
#[test]
fn process_repair_with_a_changed_pipeline_is_refused() {
    let reference = process_fixture();
    assert_eq!(reference.with_key("run").output().unwrap().status.code(), Some(0));
    let expected = reference.outputs();

    let f = process_fixture();
    assert_eq!(f.with_key("ingest").output().unwrap().status.code(), Some(0));
    let out = f.with_key("process").env("WEIR_FAULT", "process_after_commit:1").output().unwrap();
    assert!(!out.status.success());
    let p = f.dir.path().join("p.yaml");
    let original = std::fs::read_to_string(&p).unwrap();
    std::fs::write(
        &p,
        original.replace(
            "  expectations:\n",
            "  expectations:\n    - {name: no_search, sql: \"\\\"eventName\\\" <> 'search'\", action: quarantine}\n",
        ),
    )
    .unwrap();
    let out = f.with_key("process").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["error"]["message"].as_str().unwrap().contains("stopped between its commits"), "{report}");

    std::fs::write(&p, original).unwrap();
    assert_eq!(f.with_key("process").output().unwrap().status.code(), Some(0));
    assert_eq!(f.outputs(), expected);
}

/// The example's process and curate sections over generated capture files,
/// in two runs: the second updates aggregates the first wrote. Python
/// (polars, deltalake) recomputes every curated value from the processed
/// table and reads the change feed, directly and as `weir changes` wrote it.
#[expect(clippy::too_many_lines, reason = "one end-to-end scenario, read top to bottom")]
#[test]
fn curated_tables_and_their_change_feed_read_back_in_polars() {
    let spec = DatasetSpec { duplicate_rate_ppm: 20_000, ..spec() };
    let f = Fixture::new(spec, "");
    let example = std::fs::read_to_string(repo().join("pipelines/user_events.yaml")).unwrap();
    let rest = &example[example.find("\nprocess:").unwrap()..];
    let text = format!(
        "name: crash\nsource:\n  capture:\n    url: ${{WEIR_CAPTURE}}\nbody:\n  schema: {schema}\ntables:\n  raw: {{path: ${{WEIR_LAKE}}/raw}}\n  processed: {{path: ${{WEIR_LAKE}}/processed}}\n  quarantine: {{path: ${{WEIR_LAKE}}/quarantine}}\n{rest}",
        schema = repo().join("schemas/user_event.avsc").display(),
    );
    std::fs::write(f.dir.path().join("p.yaml"), text).unwrap();
    std::fs::create_dir_all(f.dir.path().join("user_events")).unwrap();
    std::fs::copy(
        repo().join("pipelines/user_events/user_features.sql"),
        f.dir.path().join("user_events/user_features.sql"),
    )
    .unwrap();

    // Hold back the later windows (minute >= 20) for the second run.
    let capture = f.dir.path().join("capture");
    let later = f.dir.path().join("later");
    let mut files = vec![capture.clone()];
    while let Some(p) = files.pop() {
        if p.is_dir() {
            files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else {
            let rel = p.strip_prefix(&capture).unwrap().to_path_buf();
            let minute: u32 = rel.iter().nth(5).unwrap().to_str().unwrap().parse().unwrap();
            if minute >= 20 {
                std::fs::create_dir_all(later.join(&rel).parent().unwrap()).unwrap();
                std::fs::rename(&p, later.join(&rel)).unwrap();
            }
        }
    }
    let run = |f: &Fixture| {
        let out = f.with_key("run").output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}\n{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["stages"][2]["stage"], "curate");
        report["stages"][2].clone()
    };
    let first = run(&f);
    let daily_version = |curate: &serde_json::Value| {
        curate["tables"].as_array().unwrap().iter().find(|t| t["table"] == "user_daily_activity").unwrap()
            ["versions_written"][0]
            .as_u64()
            .unwrap()
    };
    let v1 = daily_version(&first);
    assert_eq!(first["models"][0]["mode"], "full");
    let mut moved = vec![later.clone()];
    while let Some(p) = moved.pop() {
        if p.is_dir() {
            moved.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else {
            let to = capture.join(p.strip_prefix(&later).unwrap());
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::rename(&p, to).unwrap();
        }
    }
    let second = run(&f);
    let daily = &second["models"][0];
    assert_eq!(
        (daily["table"].as_str(), daily["mode"].as_str()),
        (Some("user_daily_activity"), Some("incremental")),
        "{second}"
    );
    assert_eq!(daily_version(&second), v1 + 1);

    let table = f.dir.path().join("lake/curated/user_daily_activity");
    let jsonl = f.dir.path().join("changes.jsonl");
    let parquet = f.dir.path().join("changes.parquet");
    for out in [&jsonl, &parquet] {
        let o = weir()
            .args([
                "changes",
                table.to_str().unwrap(),
                "--from-version",
                &(v1 + 1).to_string(),
                "--output",
                out.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    }
    // CSV to stdout: a header and one line per change.
    let o = weir()
        .args(["changes", table.to_str().unwrap(), "--from-version", &(v1 + 1).to_string(), "--format", "csv"])
        .output()
        .unwrap();
    let csv = stdout(&o);
    let changed = daily["rows_inserted"].as_u64().unwrap()
        + 2 * daily["rows_updated"].as_u64().unwrap()
        + daily["rows_deleted"].as_u64().unwrap();
    assert_eq!(csv.lines().count() as u64, 1 + changed, "{csv}");
    assert!(
        csv.lines().next().unwrap().starts_with("userId,date,events,")
            && csv.lines().next().unwrap().ends_with("_change_type,_commit_version,_commit_timestamp"),
        "{csv}"
    );
    // Past the end: no rows, success (a poller's next version).
    let o = weir().args(["changes", table.to_str().unwrap(), "--from-version", "999"]).output().unwrap();
    assert_eq!((o.status.code(), stdout(&o).as_str()), (Some(0), ""));
    // Not a table: a configuration error naming it.
    let o =
        weir().args(["changes", f.dir.path().join("nope").to_str().unwrap(), "--from-version", "0"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("nope"));

    // Compaction and a checkpoint in between: consumers read the same
    // values and the same change feed (compaction changes no data).
    let m = f.with_key("maintain").output().unwrap();
    assert_eq!(m.status.code(), Some(0), "{}", String::from_utf8_lossy(&m.stderr));
    let expected = serde_json::json!({
        "from_version": v1 + 1,
        "inserted": daily["rows_inserted"], "updated": daily["rows_updated"], "deleted": daily["rows_deleted"],
        "changes_jsonl": jsonl, "changes_parquet": parquet,
    });
    let out = Command::new(weir_testkit::env::python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/read_curated.py"))
        .arg(f.dir.path().join("lake"))
        .arg(expected.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success() && stdout(&out).trim() == "ok",
        "python reader failed:\n{}\n{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );

    // Point-in-time lookups from a CSV, written as CSV.
    let entities = f.dir.path().join("entities.csv");
    std::fs::write(
        &entities,
        "userId,ts\nu-1,2026-10-01T00:00:00Z\nu-1,2026-12-01T00:00:00Z\nnobody,2026-12-01T00:00:00Z\n",
    )
    .unwrap();
    let out_csv = f.dir.path().join("features.csv");
    let o = f
        .cmd("features")
        .args([
            "--table",
            "user_features",
            "--entities",
            entities.to_str().unwrap(),
            "--as-of-column",
            "ts",
            "--output",
            out_csv.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["rows"], 3);
    let text = std::fs::read_to_string(&out_csv).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines[0].starts_with("userId,ts,feature_as_of,events_7d"), "{text}");
    // Before any event and for an unknown user: no feature values.
    assert!(lines[1].starts_with("u-1,2026-10-01T00:00:00Z,,"), "{text}");
    assert!(lines[3].starts_with("nobody,2026-12-01T00:00:00Z,,"), "{text}");
    // A missing column is a usage error naming the file and column.
    let o = f
        .cmd("features")
        .args(["--table", "user_features", "--entities", entities.to_str().unwrap(), "--as-of-column", "when"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("entities.csv") && err.contains("\"when\""), "{err}");
}

/// `weir maintain` compacting the raw table again and again while an ingest
/// appends to it: every event lands exactly once, and compaction happened.
#[test]
fn maintain_racing_ingest_loses_nothing_and_duplicates_nothing() {
    let f = Fixture::new(DatasetSpec { windows: 16, ..spec() }, "");
    // Half the partitions first, so maintain has files to compact.
    let out = f.cmd("ingest").args(["--partitions", "0,1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let mut ingest = f.cmd("ingest").stdout(Stdio::piped()).spawn().unwrap();
    let mut maintained = 0;
    let mut compacted = 0;
    loop {
        let m = f.cmd("maintain").output().unwrap();
        // A compaction that lost a commit race exits 75; the next one retries.
        assert!(
            matches!(m.status.code(), Some(0) | Some(75)),
            "{}\n{}",
            stdout(&m),
            String::from_utf8_lossy(&m.stderr)
        );
        if m.status.code() == Some(0) {
            maintained += 1;
            let r: serde_json::Value = serde_json::from_slice(&m.stdout).unwrap();
            compacted += r["stages"][0]["maintenance"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|a| a["action"] == "optimize" && a["outcome"] == "done")
                .count();
        }
        if ingest.try_wait().unwrap().is_some() {
            break;
        }
    }
    let out = ingest.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(
        maintained > 0 && compacted > 0,
        "maintain ran ({maintained}) and compacted ({compacted}) during the ingest"
    );
    assert_eq!(f.keys(), f.expected(), "every event exactly once");
    let m = f.cmd("maintain").output().unwrap();
    assert_eq!(m.status.code(), Some(0));
    assert_eq!(f.keys(), f.expected());
}

/// `weir erase` from a subjects file: a dry run changes nothing, the real
/// run empties every table of the users, and Python reads the erasure log
/// (the keyed hash recomputed with `hmac`) and the deletes in the change
/// feed. Requests that cannot be carried out exit 2 and change nothing.
#[test]
fn erase_from_a_subjects_file_reads_back_in_python_and_bad_requests_exit_2() {
    let f = Fixture::new(spec(), "");
    let example = std::fs::read_to_string(repo().join("pipelines/user_events.yaml")).unwrap();
    let rest = &example[example.find("\nprocess:").unwrap()..];
    let text = format!(
        "name: crash\nsource:\n  capture:\n    url: ${{WEIR_CAPTURE}}\nbody:\n  schema: {schema}\ntables:\n  raw: {{path: ${{WEIR_LAKE}}/raw}}\n  processed: {{path: ${{WEIR_LAKE}}/processed}}\n  quarantine: {{path: ${{WEIR_LAKE}}/quarantine}}\n  erasure_log: {{path: ${{WEIR_LAKE}}/audit/erasure_log}}\n{rest}",
        schema = repo().join("schemas/user_event.avsc").display(),
    );
    std::fs::write(f.dir.path().join("p.yaml"), text).unwrap();
    std::fs::create_dir_all(f.dir.path().join("user_events")).unwrap();
    std::fs::copy(
        repo().join("pipelines/user_events/user_features.sql"),
        f.dir.path().join("user_events/user_features.sql"),
    )
    .unwrap();
    let out = f.with_key("run").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));

    // The two users with the most processed rows.
    let mut counts = BTreeMap::<String, usize>::new();
    for u in f.rows("processed", |b, i| {
        deltalake::arrow::util::display::array_value_to_string(b.column_by_name("userId").unwrap(), i).unwrap()
    }) {
        *counts.entry(u).or_default() += 1;
    }
    let mut ranked: Vec<(usize, String)> = counts.into_iter().map(|(u, n)| (n, u)).collect();
    ranked.sort();
    let users: Vec<String> = ranked.iter().rev().take(2).map(|(_, u)| u.clone()).collect();
    let file = f.dir.path().join("requests.txt");
    std::fs::write(&file, format!("# tickets 1 and 2\n{}\nuserId={}\n", users[0], users[1])).unwrap();
    let raw_rows = || f.rows("raw", |_, _| String::new()).len();

    let dry = f.with_key("erase").args(["--subjects-file", file.to_str().unwrap(), "--dry-run"]).output().unwrap();
    assert_eq!(dry.status.code(), Some(0), "{}", String::from_utf8_lossy(&dry.stderr));
    let before = raw_rows();
    assert!(!f.dir.path().join("lake/audit").exists());

    let out = f.with_key("erase").args(["--subjects-file", file.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    for u in &users {
        assert!(!String::from_utf8_lossy(&out.stderr).contains(u.as_str()), "the subject in the log output");
    }
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["job"], "erase");
    let erasure = &report["stages"].as_array().unwrap().last().unwrap()["erasure"];
    let tables: Vec<String> =
        erasure["tables"].as_array().unwrap().iter().map(|t| t["table"].as_str().unwrap().to_string()).collect();
    let processed = erasure["tables"].as_array().unwrap().iter().find(|t| t["table"] == "processed").unwrap();
    let deleted = processed["rows_deleted"].as_u64().unwrap();
    assert_eq!(deleted as usize, ranked.iter().rev().take(2).map(|(n, _)| n).sum::<usize>());
    let raw_deleted = erasure["tables"][0]["rows_deleted"].as_u64().unwrap() as usize;
    assert!(raw_deleted >= deleted as usize);
    assert_eq!(raw_rows(), before - raw_deleted);

    let expected = serde_json::json!({
        "users": users, "key": "a-test-key-of-32-bytes-length!!!", "tables": tables,
        "processed_version": processed["version"],
    });
    let py = Command::new(weir_testkit::env::python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/read_erasure.py"))
        .arg(f.dir.path().join("lake"))
        .arg(expected.to_string())
        .output()
        .unwrap();
    assert!(
        py.status.success() && stdout(&py).trim() == "ok",
        "python reader failed:\n{}\n{}",
        stdout(&py),
        String::from_utf8_lossy(&py.stderr)
    );

    // Bad requests: configuration errors, nothing changes.
    let log_rows = f.rows("audit/erasure_log", |_, _| String::new()).len();
    for (args, key, message) in [
        (vec!["--subject", "email=a@example.com"], true, "not a subject-key field"),
        (vec!["--subject", "u-1"], true, "FIELD=VALUE"),
        (vec![], true, "no subject"),
        (vec!["--subject", "userId=u-1"], false, "WEIR_PII_KEY"),
        (vec!["--subjects-file", "/nonexistent/subjects.txt"], true, "/nonexistent/subjects.txt"),
        (vec!["--subject", "userId=u-1", "--report", "/nonexistent/report.json"], true, "/nonexistent/report.json"),
    ] {
        let mut c = if key { f.with_key("erase") } else { f.cmd("erase") };
        let o = c.args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(message), "{args:?}: {err}");
    }
    assert_eq!(f.rows("audit/erasure_log", |_, _| String::new()).len(), log_rows);
}

/// Moves capture files of windows at or after `minute` out of the source
/// (into `later/`), or back when `back`.
fn hold_back(f: &Fixture, minute: u32, back: bool) -> Vec<(String, u64)> {
    let (from, to) = if back {
        (f.dir.path().join("later"), f.dir.path().join("capture"))
    } else {
        (f.dir.path().join("capture"), f.dir.path().join("later"))
    };
    let mut moved = Vec::new();
    let mut files = vec![from.clone()];
    while let Some(p) = files.pop() {
        if p.is_dir() {
            files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else {
            let rel = p.strip_prefix(&from).unwrap().to_path_buf();
            let m: u32 = rel.iter().nth(5).unwrap().to_str().unwrap().parse().unwrap();
            if back || m >= minute {
                std::fs::create_dir_all(to.join(&rel).parent().unwrap()).unwrap();
                moved.push((rel.iter().next().unwrap().to_str().unwrap().to_string(), p.metadata().unwrap().len()));
                std::fs::rename(&p, to.join(&rel)).unwrap();
            }
        }
    }
    moved
}

/// `weir plan` and `weir status` against a lake built by real runs, the
/// runs table as the audit trail (successes and a failure), and the
/// Prometheus metrics file.
#[test]
fn plan_status_runs_table_and_metrics_file_tell_where_the_pipeline_stands() {
    let f = Fixture::new(spec(), "");
    let example = std::fs::read_to_string(repo().join("pipelines/user_events.yaml")).unwrap();
    let rest = &example[example.find("\nprocess:").unwrap()..];
    let text = format!(
        "name: crash\nsource:\n  capture:\n    url: ${{WEIR_CAPTURE}}\nbody:\n  schema: {schema}\ntables:\n  raw: {{path: ${{WEIR_LAKE}}/raw}}\n  processed: {{path: ${{WEIR_LAKE}}/processed}}\n  quarantine: {{path: ${{WEIR_LAKE}}/quarantine}}\n  runs: {{path: ${{WEIR_LAKE}}/runs}}\n{rest}",
        schema = repo().join("schemas/user_event.avsc").display(),
    );
    std::fs::write(f.dir.path().join("p.yaml"), text).unwrap();
    std::fs::create_dir_all(f.dir.path().join("user_events")).unwrap();
    std::fs::copy(
        repo().join("pipelines/user_events/user_features.sql"),
        f.dir.path().join("user_events/user_features.sql"),
    )
    .unwrap();
    let held = hold_back(&f, 20, false);
    assert_eq!(held.len(), 16, "4 partitions x 4 later windows");
    let json = |o: &Output| -> serde_json::Value {
        serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}{}", stdout(o), String::from_utf8_lossy(&o.stderr)))
    };

    // Before anything: everything is to read, no table exists, nothing changes.
    let plan = json(&f.with_key("plan").arg("--json").output().unwrap());
    assert_eq!((plan["ingest"]["files"].as_u64(), plan["ingest"]["new_files"].as_u64()), (Some(16), Some(16)));
    assert!(plan["tables"].as_array().unwrap().iter().all(|t| t["version"].is_null()));
    assert!(!f.dir.path().join("lake").exists(), "plan changes nothing");

    let metrics = f.dir.path().join("weir.prom");
    let out = f.with_key("run").args(["--metrics-file", metrics.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let first = json(&out);
    let ingested = first["stages"][0]["events_written"].as_u64().unwrap();
    let prom = std::fs::read_to_string(&metrics).unwrap();
    let labels = r#"pipeline="crash",job="run""#;
    for line in [
        format!("weir_last_run_exit_code{{{labels}}} 0"),
        format!("weir_last_run_outcome{{{labels},outcome=\"success\"}} 1"),
        format!("weir_last_run_events_written{{{labels},stage=\"ingest\"}} {ingested}"),
        format!(
            "weir_ingest_watermark{{{labels},partition=\"0\"}} {}",
            first["stages"][0]["partitions"]["0"]["watermark_after"]
        ),
    ] {
        assert!(prom.lines().any(|l| l == line), "{line} in\n{prom}");
    }

    // Later windows arrive: the status shows the lag per partition.
    hold_back(&f, 0, true);
    let status = json(&f.with_key("status").arg("--json").output().unwrap());
    let table = |s: &serde_json::Value, name: &str| {
        s["tables"].as_array().unwrap().iter().find(|t| t["table"] == name).unwrap().clone()
    };
    assert_eq!(table(&status, "raw")["rows"].as_u64(), Some(ingested));
    assert_eq!(table(&status, "processed")["rows"], first["stages"][1]["events_written"]);
    assert_eq!(table(&status, "raw")["last_job"], "ingest");
    for p in ["0", "1", "2", "3"] {
        let s = &status["partitions"][p];
        let bytes: u64 = held.iter().filter(|(q, _)| q == p).map(|(_, b)| b).sum();
        assert_eq!(
            (s["files_behind"].as_u64(), s["bytes_behind"].as_u64(), s["minutes_behind"].as_f64()),
            (Some(4), Some(bytes), Some(20.0)),
            "{p}: {s}"
        );
        assert_eq!(s["watermark"], first["stages"][0]["partitions"][p]["watermark_after"]);
    }
    for stage in status["stages"].as_array().unwrap() {
        assert_eq!(stage["versions_behind"], 0, "{stage}");
    }
    let runs = status["last_runs"].as_array().unwrap();
    assert_eq!(
        (runs.len(), &runs[0]["job"], &runs[0]["run_id"], &runs[0]["exit_code"]),
        (1, &serde_json::json!("run"), &first["run_id"], &serde_json::json!(0))
    );
    let text = stdout(&f.with_key("status").output().unwrap());
    assert!(text.contains("partitions (ingest lag)") && text.contains("4 files"), "{text}");

    // A plan for two partitions: of the 8 files inside the lookback, the 4
    // read before are known to be held; the 4 new ones are read.
    let plan = json(&f.with_key("plan").args(["--json", "--partitions", "0,1"]).output().unwrap());
    let parts = plan["ingest"]["partitions"].as_object().unwrap();
    assert_eq!(parts.keys().cloned().collect::<Vec<_>>(), vec!["0".to_string(), "1".to_string()]);
    for p in parts.values() {
        assert_eq!((p["files"].as_u64(), p["new_files"].as_u64()), (Some(4), Some(4)), "{p}");
    }
    let process = plan["stages"].as_array().unwrap().iter().find(|s| s["stage"] == "process").unwrap();
    assert_eq!(process["mode"], "up_to_date", "{process}");

    // A failing run is recorded too (with its exit code), and the metrics say so.
    let failed = f.cmd("process").args(["--metrics-file", metrics.to_str().unwrap()]).output().unwrap();
    assert_eq!(failed.status.code(), Some(2));
    let prom = std::fs::read_to_string(&metrics).unwrap();
    assert!(prom.contains(r#"weir_last_run_exit_code{pipeline="crash",job="process"} 2"#), "{prom}");
    let out = f.with_key("run").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let second = json(&out);
    let status = json(&f.with_key("status").arg("--json").output().unwrap());
    assert!(status["partitions"].as_object().unwrap().values().all(|p| p["files_behind"] == 0));
    let runs = status["last_runs"].as_array().unwrap();
    let by_job = |j: &str| runs.iter().find(|r| r["job"] == j).unwrap().clone();
    assert_eq!(by_job("run")["run_id"], second["run_id"]);
    assert_eq!(
        (by_job("process")["exit_code"].as_i64(), by_job("process")["outcome"].as_str()),
        (Some(2), Some("failed"))
    );
    assert!(by_job("process")["error"].as_str().unwrap().contains("WEIR_PII_KEY"));
    assert_eq!(f.rows("runs", |_, _| String::new()).len(), 3);
}

/// Two copies of each rewriting job at once on the same tables (real
/// processes): every exit is 0 or 75 with a message saying to rerun, and
/// after the reruns every table holds exactly what one job at a time gives
/// on a copy of the lake — no row lost, none written twice. Two compactions
/// planned on the same version would otherwise both commit.
#[test]
fn rewriting_jobs_racing_on_one_table_exit_75_and_never_write_twice() {
    let f = Fixture::new(DatasetSpec { duplicate_rate_ppm: 40_000, defect_rate_ppm: 20_000, ..spec() }, "");
    let example = std::fs::read_to_string(repo().join("pipelines/user_events.yaml")).unwrap();
    let rest = example[example.find("\nprocess:").unwrap()..].replace("keep: first ", "keep: latest");
    for (file, lake) in [("p.yaml", "${WEIR_LAKE}"), ("solo.yaml", "${WEIR_LAKE}/../solo")] {
        let text = format!(
            "name: crash\nsource:\n  capture:\n    url: ${{WEIR_CAPTURE}}\nbody:\n  schema: {schema}\ntables:\n  raw: {{path: {lake}/raw}}\n  processed: {{path: {lake}/processed}}\n  quarantine: {{path: {lake}/quarantine}}\ningest:\n  commit_bytes: 6000\n{rest}",
            schema = repo().join("schemas/user_event.avsc").display(),
        )
        .replace("${WEIR_LAKE:-lake}", lake);
        std::fs::write(f.dir.path().join(file), text).unwrap();
    }
    std::fs::create_dir_all(f.dir.path().join("user_events")).unwrap();
    std::fs::copy(
        repo().join("pipelines/user_events/user_features.sql"),
        f.dir.path().join("user_events/user_features.sql"),
    )
    .unwrap();
    let solo = |job: &str| {
        let o = weir()
            .arg(job)
            .arg(f.dir.path().join("solo.yaml"))
            .env("WEIR_CAPTURE", f.dir.path().join("capture"))
            .env("WEIR_LAKE", f.dir.path().join("lake"))
            .env("WEIR_PII_KEY", "a-test-key-of-32-bytes-length!!!")
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "solo {job}: {}", String::from_utf8_lossy(&o.stderr));
    };
    let pair = |job: &str| -> Vec<i32> {
        let a = f.with_key(job).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let b = f.with_key(job).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let mut codes = Vec::new();
        for child in [a, b] {
            let o = child.wait_with_output().unwrap();
            let code = o.status.code().unwrap();
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(code == 0 || (code == 75 && err.contains("rerun")), "{job} exited {code}: {err}");
            codes.push(code);
        }
        // The losers' rerun, as a scheduler retrying on 75 does.
        if codes.contains(&75) {
            let o = f.with_key(job).output().unwrap();
            assert_eq!(o.status.code(), Some(0), "{job} rerun: {}", String::from_utf8_lossy(&o.stderr));
        }
        codes
    };
    let show = |b: &deltalake::arrow::array::RecordBatch, i: usize, cols: &[&str]| {
        cols.iter()
            .map(|c| deltalake::arrow::util::display::array_value_to_string(b.column_by_name(c).unwrap(), i).unwrap())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let tables = |lake: &str| -> Vec<Vec<String>> {
        [
            ("raw", vec!["partition_id", "sequence_number"]),
            ("processed", vec!["eventId", "_partition_id", "_sequence_number"]),
            ("quarantine", vec!["_partition_id", "_sequence_number"]),
            ("curated/user_daily_activity", vec!["userId", "date", "events", "amount_eur"]),
            ("curated/user_features", vec!["userId", "as_of", "events_30d"]),
        ]
        .iter()
        .map(|(t, cols)| f.rows(&format!("{lake}{t}"), |b, i| show(b, i, cols)))
        .collect()
    };

    let o = f.with_key("ingest").output().unwrap();
    assert_eq!(o.status.code(), Some(0));
    weir_testkit::fs::copy_dir(&f.dir.path().join("lake"), &f.dir.path().join("solo"));
    let mut codes = pair("process");
    solo("process");
    // The first curate creates the tables: one run held between planning
    // and writing while the other creates them and commits.
    let held = f
        .with_key("curate")
        .env("WEIR_PAUSE", "curate_before_write:2500")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let o = f.with_key("curate").output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let o = held.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.code() == Some(75) && err.contains("rerun"), "the held run: {err}");
    codes.extend(pair("curate"));
    solo("curate");
    let expected = tables("../solo/");
    assert!(expected.iter().all(|t| !t.is_empty()));
    let same = |what: &str| {
        let got = tables("");
        for ((g, e), name) in
            got.iter().zip(&expected).zip(["raw", "processed", "quarantine", "user_daily_activity", "user_features"])
        {
            assert!(g == e, "{what}: {name} has {} rows where one job at a time gives {}", g.len(), e.len());
        }
    };
    same("racing process and curate runs");
    for _ in 0..2 {
        codes.extend(pair("maintain"));
        same("racing maintain runs");
    }
    assert!(codes.contains(&75), "some runs lost a race: {codes:?}");
}

/// The (path, body) of every request an endpoint received.
type Received = std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>;

/// A minimal HTTP endpoint collecting the (path, body) of every POST.
fn lineage_endpoint() -> (String, Received) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/api/v1/lineage", listener.local_addr().unwrap());
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let sink = sink.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut out = stream;
                loop {
                    let mut request = String::new();
                    if reader.read_line(&mut request).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut length = 0;
                    loop {
                        let mut h = String::new();
                        reader.read_line(&mut h).unwrap();
                        if h.trim().is_empty() {
                            break;
                        }
                        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).unwrap();
                    let path = request.split(' ').nth(1).unwrap_or_default().to_string();
                    sink.lock().unwrap().push((path, String::from_utf8(body).unwrap()));
                    out.write_all(b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n").unwrap();
                }
            });
        }
    });
    (url, got)
}

/// OpenLineage run events: START then COMPLETE (or FAIL with the error),
/// one run id, the job's input and output datasets named by the OpenLineage
/// conventions, the versions and rows written; to a file and over HTTP.
#[test]
fn lineage_events_name_what_each_job_read_and_wrote() {
    let f = process_fixture();
    let events_file = f.dir.path().join("lineage.jsonl");
    let out = f.with_key("run").args(["--lineage", events_file.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let events: Vec<serde_json::Value> =
        std::fs::read_to_string(&events_file).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(events.iter().map(|e| e["eventType"].as_str().unwrap()).collect::<Vec<_>>(), ["START", "COMPLETE"]);
    let run_id = events[0]["run"]["runId"].as_str().unwrap();
    assert!(uuid::Uuid::parse_str(run_id).is_ok(), "{run_id}");
    for e in &events {
        assert_eq!(e["run"]["runId"], run_id);
        assert_eq!(e["run"]["facets"]["weir"]["runId"], report["run_id"]);
        assert_eq!((e["job"]["namespace"].as_str(), e["job"]["name"].as_str()), (Some("weir"), Some("crash.run")));
        assert!(e["schemaURL"].as_str().unwrap().starts_with("https://openlineage.io/spec/2-0-2/OpenLineage.json"));
        assert!(chrono::DateTime::parse_from_rfc3339(e["eventTime"].as_str().unwrap()).is_ok());
        assert!(e["producer"].as_str().unwrap().starts_with("https://"));
    }
    let lake = f.dir.path().join("lake").canonicalize().unwrap();
    let names = |e: &serde_json::Value, side: &str| -> Vec<(String, String)> {
        e[side]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| (d["namespace"].as_str().unwrap().to_string(), d["name"].as_str().unwrap().to_string()))
            .collect()
    };
    let capture = f.dir.path().join("capture").canonicalize().unwrap().display().to_string();
    assert_eq!(names(&events[1], "inputs"), [("file".to_string(), capture)]);
    let outputs = names(&events[1], "outputs");
    for t in ["raw", "processed", "quarantine", "quality"] {
        assert!(outputs.contains(&("file".to_string(), lake.join(t).display().to_string())), "{t} in {outputs:?}");
    }
    let raw = events[1]["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"].as_str().unwrap().ends_with("/raw"))
        .unwrap();
    let raw_write = &report["stages"][0]["tables"][0];
    assert_eq!(
        raw["facets"]["version"]["datasetVersion"],
        raw_write["versions_written"].as_array().unwrap().last().unwrap().to_string()
    );
    assert_eq!(raw["outputFacets"]["outputStatistics"]["rowCount"], report["stages"][0]["events_written"]);

    // Over HTTP, and a failed run as FAIL with its error.
    let (url, got) = lineage_endpoint();
    let out = f.cmd("process").args(["--lineage", &url]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got.iter().all(|(path, _)| path == "/api/v1/lineage"));
    let fail: serde_json::Value = serde_json::from_str(&got[1].1).unwrap();
    assert_eq!((fail["eventType"].as_str(), fail["job"]["name"].as_str()), (Some("FAIL"), Some("crash.process")));
    assert!(fail["run"]["facets"]["errorMessage"]["message"].as_str().unwrap().contains("WEIR_PII_KEY"), "{fail}");
    assert_eq!(names(&fail, "inputs"), [("file".to_string(), lake.join("raw").display().to_string())]);
}

/// Each subcommand takes only the options it uses: one it would ignore is
/// a usage error (exit 2) naming the option, before anything runs.
#[test]
fn an_option_a_command_does_not_use_is_a_usage_error() {
    let lake = tempfile::tempdir().unwrap();
    for (args, option) in [
        (vec!["process", "pipelines/user_events.yaml", "--force"], "--force"),
        (vec!["process", "pipelines/user_events.yaml", "--partitions", "0"], "--partitions"),
        (vec!["maintain", "pipelines/user_events.yaml", "--full-refresh"], "--full-refresh"),
        (vec!["ingest", "pipelines/user_events.yaml", "--table", "raw"], "--table"),
        (vec!["curate", "pipelines/user_events.yaml", "--shard", "1/2"], "--shard"),
        (vec!["run", "pipelines/user_events.yaml", "--force"], "--force"),
        (vec!["status", "pipelines/user_events.yaml", "--partitions", "0"], "--partitions"),
    ] {
        let out = weir().args(&args).current_dir(repo()).env("WEIR_LAKE", lake.path()).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(option), "{args:?} names {option}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}: no run report");
    }
    assert!(std::fs::read_dir(lake.path()).unwrap().next().is_none(), "nothing was written");
    // The options each command does use still parse.
    for args in [
        vec!["maintain", "pipelines/user_events.yaml", "--force", "--table", "raw", "--dry-run"],
        vec!["run", "pipelines/user_events.yaml", "--full-refresh", "--partitions", "0", "--dry-run"],
        vec!["plan", "pipelines/user_events.yaml", "--partitions", "0-1", "--json"],
    ] {
        let out = weir()
            .args(&args)
            .current_dir(repo())
            .env("WEIR_LAKE", lake.path())
            .env("WEIR_PII_KEY", "a-test-key-of-32-bytes-length!!!")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// After a crash between process's commits, `weir plan` (run without the
/// PII key) starts process where the run will: at the first raw version
/// the output table furthest behind lacks.
#[test]
fn plan_after_a_crash_between_commits_starts_where_the_repair_run_will() {
    let f = process_fixture();
    assert_eq!(f.with_key("ingest").output().unwrap().status.code(), Some(0));
    // Every table commits the first range; quarantine and processed the
    // second, metrics not (three commits a range).
    let out = f.with_key("process").env("WEIR_FAULT", "process_after_commit:5").output().unwrap();
    assert!(!out.status.success());
    let marker = |table: &str| -> Option<i64> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let loc = weir::storage::Location::parse(f.dir.path().join("lake").join(table).to_str().unwrap()).unwrap();
            let t = weir::delta::open(&loc).await.unwrap()?;
            weir::delta::progress(&t, "weir/crash/process").await.unwrap()
        })
    };
    let (processed, metrics) = (marker("processed"), marker("quality"));
    assert!(metrics.is_some() && metrics < processed, "the crash left metrics behind: {processed:?} {metrics:?}");

    let out = f.cmd("plan").arg("--json").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let process = plan["stages"].as_array().unwrap().iter().find(|s| s["stage"] == "process").unwrap();
    assert_eq!(process["from_version"], metrics.unwrap() + 1, "{process}");
    // The repair run indeed starts there: it writes to metrics and only the
    // rows the other tables lack.
    let out = f.with_key("process").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["stages"][0]["quality"]["already_written"].as_u64().unwrap() > 0, "{report}");
}
