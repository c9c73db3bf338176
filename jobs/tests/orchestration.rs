//! The scheduler definitions in `orchestration/`, run where the scheduler
//! can run here: the cron wrapper and the Data Factory retry wrapper are run
//! for real, the Kubernetes Indexed Job's container command is run once per
//! index, and the Airflow DAGs run under real Apache Airflow (`airflow dags
//! test`). Definitions no scheduler here can run (Data Factory JSON, the
//! CronJob manifests) are checked for the wiring the README documents.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use weir_testkit::capture::{generate_dataset, Codec, DatasetSpec};

const PII_KEY: &str = "orchestration-test-key-0123456789";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Capture files and the example pipeline (process and curate) over them.
struct Lake {
    dir: tempfile::TempDir,
    last: BTreeMap<String, i64>,
}

impl Lake {
    fn new() -> Lake {
        // The schedulers' commands inherit this environment: a shell's crash
        // hooks must not reach the jobs they launch.
        weir_testkit::env::clean_process(&["WEIR_FAULT", "WEIR_PAUSE", "WEIR_STORE_FAULT"], &[]);
        let dir = tempfile::tempdir().unwrap();
        let spec = DatasetSpec {
            partitions: 6,
            windows: 4,
            events_per_file: 20,
            codecs: vec![Codec::Deflate],
            ..DatasetSpec::small(9)
        };
        let summary = generate_dataset(&dir.path().join("capture"), &spec).unwrap();
        let example = std::fs::read_to_string(repo().join("pipelines/user_events.yaml")).unwrap();
        let rest = &example[example.find("\nprocess:").unwrap()..];
        let text = format!(
            "name: orch\nsource:\n  capture:\n    url: {capture}\nbody:\n  schema: {schema}\ntables:\n  raw: {{path: {lake}/raw}}\n  processed: {{path: {lake}/processed}}\n  quarantine: {{path: {lake}/quarantine}}\n  runs: {{path: {lake}/runs}}\n{rest}",
            capture = dir.path().join("capture").display(),
            lake = dir.path().join("lake").display(),
            schema = repo().join("schemas/user_event.avsc").display(),
        )
        .replace("${WEIR_LAKE:-lake}", &dir.path().join("lake").display().to_string());
        std::fs::write(dir.path().join("user_events.yaml"), text).unwrap();
        std::fs::create_dir_all(dir.path().join("user_events")).unwrap();
        std::fs::copy(
            repo().join("pipelines/user_events/user_features.sql"),
            dir.path().join("user_events/user_features.sql"),
        )
        .unwrap();
        Lake { dir, last: summary.per_partition_last_sequence }
    }

    fn pipeline(&self) -> PathBuf {
        self.dir.path().join("user_events.yaml")
    }

    /// (partition, sequence) of every raw row, sorted.
    fn raw_keys(&self) -> Vec<(String, i64)> {
        let mut keys: Vec<(String, i64)> = self
            .rows("raw", &["partition_id", "sequence_number"])
            .into_iter()
            .map(|r| (r[0].clone(), r[1].parse().unwrap()))
            .collect();
        keys.sort();
        keys
    }

    fn rows(&self, table: &str, columns: &[&str]) -> Vec<Vec<String>> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let loc =
                weir::storage::Location::parse(self.dir.path().join("lake").join(table).to_str().unwrap()).unwrap();
            let Some(t) = weir::delta::open(&loc).await.unwrap() else { return Vec::new() };
            let mut out = Vec::new();
            for b in weir::delta::read_all(&t).await.unwrap() {
                for i in 0..b.num_rows() {
                    out.push(
                        columns
                            .iter()
                            .map(|c| {
                                deltalake::arrow::util::display::array_value_to_string(b.column_by_name(c).unwrap(), i)
                                    .unwrap()
                            })
                            .collect(),
                    );
                }
            }
            out.sort();
            out
        })
    }

    fn expected_keys(&self) -> Vec<(String, i64)> {
        let mut v: Vec<(String, i64)> =
            self.last.iter().flat_map(|(p, l)| (0..=*l).map(move |s| (p.clone(), s))).collect();
        v.sort();
        v
    }
}

/// A folder holding `weir` (the binary under test) for PATH.
fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_weir")).parent().unwrap().to_path_buf()
}

fn path_with_weir() -> String {
    format!("{}:{}", bin_dir().display(), std::env::var("PATH").unwrap_or_default())
}

#[test]
fn cron_wrapper_runs_one_at_a_time_keeps_reports_and_metrics_and_passes_exit_codes_on() {
    let lake = Lake::new();
    let state = lake.dir.path().join("state");
    let wrapper = repo().join("orchestration/cron/weir-cron.sh");
    let env_file = lake.dir.path().join("weir.env");
    std::fs::write(&env_file, format!("WEIR_PII_KEY={PII_KEY}\n")).unwrap();
    let cron = |job: &str| {
        let mut c = Command::new(&wrapper);
        c.arg(job)
            .arg(lake.pipeline())
            .env("PATH", path_with_weir())
            .env("WEIR_STATE_DIR", &state)
            .env("WEIR_ENV_FILE", &env_file)
            .env_remove("WEIR_PII_KEY")
            .env("RUST_LOG", "info");
        c
    };
    // A previous run still holds the lock: this tick is skipped, exit 0.
    std::fs::create_dir_all(state.join("locks")).unwrap();
    let mut holder =
        Command::new("flock").arg(state.join("locks/user_events-run.lock")).args(["sleep", "2"]).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let o = cron("run").output().unwrap();
    holder.wait().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let log = std::fs::read_to_string(state.join("logs/user_events-run.log")).unwrap();
    assert!(log.contains("still going; this run skipped"), "{log}");
    assert!(!lake.dir.path().join("lake/raw").exists(), "a skipped tick runs nothing");

    // A real run: secrets from the env file, JSON logs, the report, metrics.
    let o = cron("run").output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(o.stderr.is_empty(), "nothing for cron to mail: {}", text(&o));
    assert_eq!(lake.raw_keys(), lake.expected_keys());
    let reports: Vec<_> =
        std::fs::read_dir(state.join("reports/user_events")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(reports.len(), 1);
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&reports[0]).unwrap()).unwrap();
    assert_eq!(report["outcome"], "success");
    let prom = std::fs::read_to_string(state.join("metrics/weir_user_events_run.prom")).unwrap();
    assert!(prom.contains(r#"weir_last_run_exit_code{pipeline="orch",job="run"} 0"#), "{prom}");
    let log = std::fs::read_to_string(state.join("logs/user_events-run.log")).unwrap();
    let last = log.lines().last().unwrap();
    let line: serde_json::Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("JSON log line ({e}): {last}"));
    assert_eq!(line["fields"]["message"], "run finished");
    assert!(!log.contains(PII_KEY));

    // A configuration error: exit 2 and one line for cron to mail.
    std::fs::write(&env_file, "").unwrap();
    let o = cron("process").output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let mail = String::from_utf8_lossy(&o.stderr);
    assert_eq!(mail.lines().count(), 1, "{mail}");
    assert!(mail.contains("configuration error (exit 2)"), "{mail}");
    let prom = std::fs::read_to_string(state.join("metrics/weir_user_events_process.prom")).unwrap();
    assert!(prom.contains(r#"weir_last_run_exit_code{pipeline="orch",job="process"} 2"#), "{prom}");
}

/// A stand-in for weir that exits with the codes listed in a file, one per
/// call, and counts its calls.
fn fake_weir(dir: &Path, codes: &[i32]) -> PathBuf {
    std::fs::write(dir.join("codes"), codes.iter().map(|c| c.to_string()).collect::<Vec<_>>().join("\n") + "\n")
        .unwrap();
    let script = dir.join("fake-weir");
    std::fs::write(
        &script,
        format!(
            "#!/usr/bin/env bash\necho \"$@\" >> {calls}\ncode=$(head -n 1 {codes})\nsed -i 1d {codes}\nexit \"$code\"\n",
            calls = dir.join("calls").display(),
            codes = dir.join("codes").display()
        ),
    )
    .unwrap();
    Command::new("chmod").arg("+x").arg(&script).status().unwrap();
    script
}

#[test]
fn data_factory_wrapper_retries_75_only_and_the_pipeline_json_is_wired_as_documented() {
    let wrapper = repo().join("orchestration/adf/run-with-retry.sh");
    for (codes, exit, calls) in
        [(vec![75, 75, 0], 0, 3), (vec![2], 2, 1), (vec![3], 3, 1), (vec![75, 75, 75], 75, 3), (vec![75, 1], 1, 2)]
    {
        let dir = tempfile::tempdir().unwrap();
        let fake = fake_weir(dir.path(), &codes);
        let o = Command::new(&wrapper)
            .args(["ingest", "p.yaml", "--shard", "1/4"])
            .env("WEIR_BIN", &fake)
            .env("WEIR_RETRIES", "2")
            .env("WEIR_RETRY_DELAY", "0")
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(exit), "{codes:?}: {}", text(&o));
        let made = std::fs::read_to_string(dir.path().join("calls")).unwrap();
        assert_eq!(made.lines().count(), calls, "{codes:?}: {made}");
        assert!(made.lines().all(|l| l == "--log-format json ingest p.yaml --shard 1/4"), "{made}");
    }

    let load = |f: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(repo().join("orchestration/adf").join(f)).unwrap())
            .unwrap_or_else(|e| panic!("{f}: {e}"))
    };
    let run = load("pipeline.json");
    let maintain = load("maintain-pipeline.json");
    let pipelines: Vec<&str> = [&run, &maintain].iter().map(|p| p["name"].as_str().unwrap()).collect();
    let activities = run["properties"]["activities"].as_array().unwrap();
    let names: Vec<&str> = activities.iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["IngestShards", "Process", "Curate"]);
    for (a, after) in [("Process", "IngestShards"), ("Curate", "Process")] {
        let act = activities.iter().find(|x| x["name"] == a).unwrap();
        assert_eq!(
            act["dependsOn"],
            serde_json::json!([{"activity": after, "dependencyConditions": ["Succeeded"]}]),
            "{a}"
        );
    }
    let each = &activities[0];
    assert_eq!(
        (each["type"].as_str(), each["typeProperties"]["isSequential"].as_bool()),
        (Some("ForEach"), Some(false))
    );
    assert_eq!(each["typeProperties"]["items"]["value"], "@range(0, pipeline().parameters.shards)");
    let shard_cmd = each["typeProperties"]["activities"][0]["typeProperties"]["command"]["value"].as_str().unwrap();
    assert!(shard_cmd.contains("--shard ") && shard_cmd.contains("string(item())"), "{shard_cmd}");
    assert_eq!(run["properties"]["concurrency"], 1, "one pipeline run at a time");
    // Every weir activity: a Custom activity through the wrapper, no Data
    // Factory retry (the wrapper retries 75 only).
    let mut customs: Vec<&serde_json::Value> = activities.iter().filter(|a| a["type"] == "Custom").collect();
    customs.extend(each["typeProperties"]["activities"].as_array().unwrap());
    customs.extend(maintain["properties"]["activities"].as_array().unwrap());
    assert_eq!(customs.len(), 4);
    for a in customs {
        assert_eq!(a["type"], "Custom");
        assert_eq!(a["policy"]["retry"], 0, "{}", a["name"]);
        let cmd = a["typeProperties"]["command"].as_str().or(a["typeProperties"]["command"]["value"].as_str()).unwrap();
        assert!(cmd.contains("./run-with-retry.sh "), "{cmd}");
    }
    for (f, pipeline) in [
        ("trigger-every-5-minutes.json", "weir_user_events"),
        ("trigger-daily-maintain.json", "weir_user_events_maintain"),
    ] {
        let t = load(f);
        assert_eq!(t["properties"]["type"], "ScheduleTrigger");
        let target = t["properties"]["pipelines"][0]["pipelineReference"]["referenceName"].as_str().unwrap();
        assert_eq!(target, pipeline);
        assert!(pipelines.contains(&target));
    }
}

fn yaml(path: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(repo().join(path)).unwrap();
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The Indexed Job's container command, run once per completion index as
/// Kubernetes would (`JOB_COMPLETION_INDEX` set, all indexes at once), lands
/// every event exactly once; a retried index is a no-op. The CronJobs fail
/// the Job on exit 2 and 3 and retry the rest.
#[test]
fn kubernetes_indexed_ingest_command_lands_every_event_once_and_the_cronjobs_use_the_exit_codes() {
    let job = yaml("orchestration/k8s/ingest-indexed-job.yaml");
    let spec = &job["spec"];
    assert_eq!(spec["completionMode"], "Indexed");
    let n = spec["completions"].as_u64().unwrap();
    assert_eq!(spec["parallelism"].as_u64(), Some(n));
    let container = &spec["template"]["spec"]["containers"][0];
    let command: Vec<String> =
        container["command"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    let args = container["args"][0].as_str().unwrap();
    assert!(args.contains(&format!("$JOB_COMPLETION_INDEX/{n}")), "the shard count is the completion count: {args}");
    let rule = &spec["podFailurePolicy"]["rules"][0];
    assert_eq!(
        (rule["action"].as_str(), &rule["onExitCodes"]["values"]),
        (Some("FailIndex"), &serde_json::json!([2, 3]))
    );

    let lake = Lake::new();
    let pipeline_dir = lake.dir.path();
    std::fs::create_dir_all(pipeline_dir.join("pipelines/user_events")).unwrap();
    std::fs::copy(lake.pipeline(), pipeline_dir.join("pipelines/user_events.yaml")).unwrap();
    std::fs::copy(
        repo().join("pipelines/user_events/user_features.sql"),
        pipeline_dir.join("pipelines/user_events/user_features.sql"),
    )
    .unwrap();
    let start = |index: u64| {
        Command::new(&command[0])
            .args(&command[1..])
            .arg(args)
            .current_dir(pipeline_dir)
            .env("PATH", path_with_weir())
            .env("JOB_COMPLETION_INDEX", index.to_string())
            .env("WEIR_PII_KEY", PII_KEY)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let workers: Vec<_> = (0..n).map(start).collect();
    let mut written = 0;
    for w in workers {
        let o = w.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let parts: Vec<&String> = report["stages"][0]["partitions"].as_object().unwrap().keys().collect();
        assert!(!parts.is_empty());
        written += report["stages"][0]["events_written"].as_u64().unwrap();
    }
    assert_eq!(lake.raw_keys(), lake.expected_keys());
    assert_eq!(written as usize, lake.expected_keys().len());
    // A retried index (same shard again) writes nothing.
    let o = start(1).wait_with_output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["stages"][0]["events_written"], 0);

    for path in ["orchestration/k8s/cronjob.yaml", "orchestration/k8s/maintain-cronjob.yaml"] {
        let cj = yaml(path);
        assert_eq!(cj["kind"], "CronJob", "{path}");
        assert_eq!(cj["spec"]["concurrencyPolicy"], "Forbid", "{path}");
        let job = &cj["spec"]["jobTemplate"]["spec"];
        let rule = &job["podFailurePolicy"]["rules"][0];
        assert_eq!(
            (rule["action"].as_str(), &rule["onExitCodes"]["values"]),
            (Some("FailJob"), &serde_json::json!([2, 3])),
            "{path}"
        );
        assert!(job["backoffLimit"].as_u64().unwrap() > 0, "75 is retried: {path}");
        assert_eq!(job["template"]["spec"]["containers"][0]["name"], "weir");
    }
    let docker = std::fs::read_to_string(repo().join("orchestration/k8s/Dockerfile")).unwrap();
    for needed in [
        "cargo build --release --locked -p weir-jobs --bin weir",
        "COPY pipelines",
        "COPY schemas",
        "ENTRYPOINT [\"weir\"",
    ] {
        assert!(docker.contains(needed), "Dockerfile: {needed}");
    }
}

fn airflow() -> PathBuf {
    if let Some(p) = std::env::var_os("WEIR_AIRFLOW") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME").expect("HOME");
    let bin = Path::new(&home).join(".cache/weir-airflow/bin/airflow");
    assert!(
        bin.exists(),
        "no Apache Airflow: run scripts/test.sh once (it creates {} from orchestration/airflow/requirements.txt)",
        bin.display()
    );
    bin
}

/// The DAGs under real Apache Airflow (`airflow dags test`, in-process with a
/// SQLite metadata database): they import cleanly; a run ingests by mapped
/// shard, then processes and curates; a configuration error (exit 2) fails
/// its task at once, without retries, and stops the tasks after it.
#[test]
fn airflow_dags_import_and_run_end_to_end_with_the_exit_code_contract() {
    let lake = Lake::new();
    let home = lake.dir.path().join("airflow");
    std::fs::create_dir_all(&home).unwrap();
    let af = |args: &[&str], key: bool| {
        let mut c = Command::new(airflow());
        c.args(args)
            .env("AIRFLOW_HOME", &home)
            .env("AIRFLOW__CORE__DAGS_FOLDER", repo().join("orchestration/airflow"))
            .env("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
            .env("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", format!("sqlite:///{}", home.join("airflow.db").display()))
            .env("WEIR_BIN", env!("CARGO_BIN_EXE_weir"))
            .env("WEIR_PIPELINE", lake.pipeline())
            .env("WEIR_SHARDS", "3")
            .env_remove("WEIR_PII_KEY");
        if key {
            c.env("WEIR_PII_KEY", PII_KEY);
        }
        c.output().unwrap()
    };
    let o = af(&["db", "migrate"], true);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = af(&["dags", "list-import-errors"], true);
    assert!(String::from_utf8_lossy(&o.stdout).contains("No data found"), "import errors: {}", text(&o));
    let o = af(&["dags", "list", "-o", "json"], true);
    let dags: serde_json::Value =
        serde_json::from_slice(o.stdout.rsplit(|b| *b == b'\n').find(|l| l.starts_with(b"[")).unwrap_or(b"[]"))
            .unwrap();
    let ids: Vec<&str> = dags.as_array().unwrap().iter().map(|d| d["dag_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["weir_user_events", "weir_user_events_maintain"]);

    let o = af(&["dags", "test", "weir_user_events", "2026-11-22T00:00:00+00:00"], true);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(lake.raw_keys(), lake.expected_keys());
    assert!(!lake.rows("processed", &["eventId"]).is_empty());
    assert!(!lake.rows("curated/user_daily_activity", &["userId"]).is_empty());
    // The runs table: three ingest shards, then process and curate.
    let runs = lake.rows("runs", &["job", "partitions", "exit_code"]);
    let mut shards: Vec<String> = runs.iter().filter(|r| r[0] == "ingest").map(|r| r[1].clone()).collect();
    shards.sort();
    assert_eq!(shards, ["shard 0/3", "shard 1/3", "shard 2/3"]);
    for job in ["process", "curate"] {
        assert_eq!(runs.iter().filter(|r| r[0] == job && r[2] == "0").count(), 1, "{runs:?}");
    }
    let o = af(&["dags", "test", "weir_user_events_maintain", "2026-11-22T00:00:00+00:00"], true);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(lake.rows("runs", &["job"]).iter().filter(|r| r[0] == "maintain").count(), 1);

    // No PII key: process exits 2, its task fails at once (one try), curate
    // does not run.
    let o = af(&["dags", "test", "weir_user_events", "2026-11-22T01:00:00+00:00"], false);
    assert_ne!(o.status.code(), Some(0));
    let log = text(&o);
    assert!(log.contains("configuration error (exit 2); not retried"), "{log}");
    let o = af(
        &["tasks", "states-for-dag-run", "weir_user_events", "manual__2026-11-22T01:00:00+00:00", "-o", "json"],
        true,
    );
    let states: serde_json::Value =
        serde_json::from_slice(o.stdout.rsplit(|b| *b == b'\n').find(|l| l.starts_with(b"[")).unwrap()).unwrap();
    let state = |task: &str| {
        states.as_array().unwrap().iter().find(|t| t["task_id"] == task).unwrap()["state"].as_str().unwrap().to_string()
    };
    assert_eq!((state("process").as_str(), state("curate").as_str()), ("failed", "upstream_failed"));
    assert_eq!(
        lake.rows("runs", &["job", "exit_code"]).iter().filter(|r| r[0] == "process" && r[1] == "2").count(),
        1,
        "one try only"
    );
}
