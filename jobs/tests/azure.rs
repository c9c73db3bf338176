//! The `weir` binary against Azure Blob storage on Azurite (started by
//! `scripts/test.sh`): concurrent writers, credentials that never leak,
//! outages that exit with the retryable code. These tests fail, never skip,
//! when Azurite is not there.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use futures::TryStreamExt as _;
use object_store::{ObjectStore as _, ObjectStoreExt as _};
use weir::storage::Location;
use weir_testkit::capture::{generate_dataset, Codec, DatasetSpec};

const PII_KEY: &str = "pii-key-for-the-azure-cli-tests!";

fn azurite() -> String {
    std::env::var("WEIR_AZURITE_BLOB_URL").unwrap_or_else(|_| {
        panic!("WEIR_AZURITE_BLOB_URL is not set: these tests need Azurite. Run scripts/test.sh, which installs azurite@3.35.0 from npm and starts it")
    })
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Capture files in a fresh container on Azurite, a lake container, and a
/// pipeline file over them.
struct AzureFixture {
    dir: tempfile::TempDir,
    endpoint: String,
    lake: String,
    last: std::collections::BTreeMap<String, i64>,
}

impl AzureFixture {
    async fn new(spec: DatasetSpec) -> AzureFixture {
        let endpoint = azurite();
        // The uploads below run in this process: a shell's own Azure settings
        // must not reach them.
        weir_testkit::env::clean_process(&["AZURE_"], &[]);
        std::env::set_var("AZURE_STORAGE_USE_EMULATOR", "true");
        std::env::set_var("AZURITE_BLOB_STORAGE_URL", &endpoint);
        let dir = tempfile::tempdir().unwrap();
        let summary = generate_dataset(&dir.path().join("capture"), &spec).unwrap();
        let suffix = &uuid::Uuid::new_v4().simple().to_string()[..12];
        let (capture, lake) = (format!("capture-{suffix}"), format!("lake-{suffix}"));
        for c in [&capture, &lake] {
            weir::storage::emulator::create_container(&endpoint, c).unwrap();
        }
        let target = Location::parse(&format!("az://{capture}/hub")).unwrap();
        let (store, prefix) = target.object_store().unwrap();
        let mut files = vec![dir.path().join("capture")];
        while let Some(p) = files.pop() {
            if p.is_dir() {
                files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
            } else {
                let rel = p.strip_prefix(dir.path().join("capture")).unwrap().to_str().unwrap().to_string();
                store
                    .put(
                        &object_store::path::Path::from(format!("{}/{rel}", prefix.as_ref())),
                        std::fs::read(&p).unwrap().into(),
                    )
                    .await
                    .unwrap();
            }
        }
        let example = std::fs::read_to_string(repo().join("pipelines/user_events.yaml")).unwrap();
        let process = &example[example.find("\nprocess:").unwrap()..example.find("\ncurate:").unwrap()];
        let text = format!(
            "name: azure\nsource:\n  capture:\n    url: az://{capture}/hub\nbody:\n  schema: {schema}\ntables:\n  raw: {{path: az://{lake}/raw}}\n  processed: {{path: az://{lake}/processed}}\n  quarantine: {{path: az://{lake}/quarantine}}\n  erasure_log: {{path: az://{lake}/audit/erasure_log}}\ningest:\n  commit_bytes: 6000\n{process}",
            schema = repo().join("schemas/user_event.avsc").display(),
        );
        std::fs::write(dir.path().join("p.yaml"), text).unwrap();
        AzureFixture { dir, endpoint, lake, last: summary.per_partition_last_sequence }
    }

    /// `weir JOB p.yaml` with emulator mode and the PII key set.
    fn cmd(&self, job: &str) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_weir"));
        // A shell's own Azure or Weir settings must not reach the job.
        weir_testkit::env::clean(&mut c);
        c.arg(job)
            .arg(self.dir.path().join("p.yaml"))
            .env("RUST_LOG", "warn")
            .env("AZURE_STORAGE_USE_EMULATOR", "true")
            .env("AZURITE_BLOB_STORAGE_URL", &self.endpoint)
            .env("WEIR_PII_KEY", PII_KEY);
        c
    }

    /// (partition, sequence) of every raw row, sorted.
    async fn raw_keys(&self) -> Vec<(String, i64)> {
        use deltalake::arrow::array::AsArray;
        let loc = Location::parse(&format!("az://{}/raw", self.lake)).unwrap();
        let table = weir::delta::open(&loc).await.unwrap().unwrap();
        let mut out = Vec::new();
        for b in weir::delta::read_all(&table).await.unwrap() {
            let p = deltalake::arrow::compute::cast(
                b.column_by_name("partition_id").unwrap(),
                &deltalake::arrow::datatypes::DataType::Utf8,
            )
            .unwrap();
            let s = b
                .column_by_name("sequence_number")
                .unwrap()
                .as_primitive::<deltalake::arrow::datatypes::Int64Type>()
                .clone();
            out.extend((0..b.num_rows()).map(|i| (p.as_string::<i32>().value(i).to_string(), s.value(i))));
        }
        out.sort();
        out
    }

    fn expected(&self) -> Vec<(String, i64)> {
        let mut v: Vec<(String, i64)> =
            self.last.iter().flat_map(|(p, l)| (0..=*l).map(move |s| (p.clone(), s))).collect();
        v.sort();
        v
    }
}

fn spec() -> DatasetSpec {
    DatasetSpec {
        partitions: 4,
        windows: 8,
        events_per_file: 20,
        codecs: vec![Codec::Deflate, Codec::Null],
        ..DatasetSpec::small(5)
    }
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn written(o: &Output) -> i64 {
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(o)));
    r["stages"][0]["events_written"].as_i64().unwrap()
}

/// Two ingest processes on disjoint partitions, then two on the same ones,
/// all committing to one raw table on Azurite: every event exactly once.
/// Delta's commit is a create-if-absent on Azure Blob; this is the proof
/// that the Azure path has it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_ingest_workers_on_azurite_write_every_event_exactly_once() {
    let f = AzureFixture::new(DatasetSpec { windows: 12, ..spec() }).await;
    // The table exists before the workers start: they race on commits.
    let out = f.cmd("ingest").args(["--partitions", "0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let first = written(&out);

    let spawn = |parts: &str| {
        f.cmd("ingest").args(["--partitions", parts]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
    };
    let (a, b) = (spawn("1"), spawn("2"));
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert_eq!((a.status.code(), b.status.code()), (Some(0), Some(0)), "{}\n{}", text(&a), text(&b));
    let disjoint = written(&a) + written(&b);

    let (c, d) = (spawn("0-3"), spawn("0-3"));
    let (c, d) = (c.wait_with_output().unwrap(), d.wait_with_output().unwrap());
    for o in [&c, &d] {
        // The loser of a commit race either re-plans inside the run (0) or
        // exits with the retryable code after a conflict it cannot resolve.
        assert!(matches!(o.status.code(), Some(0) | Some(75)), "{}", text(o));
    }
    let mut rest = 0;
    for o in [&c, &d] {
        if o.status.code() == Some(0) {
            rest += written(o);
        }
    }
    // A rerun finishes whatever a loser left.
    let e = f.cmd("ingest").output().unwrap();
    assert_eq!(e.status.code(), Some(0), "{}", text(&e));
    rest += written(&e);
    assert_eq!(first + disjoint + rest, f.expected().len() as i64, "reports add up");
    assert_eq!(f.raw_keys().await, f.expected(), "every event exactly once");
}

/// Lists every object in a container and returns its bytes.
async fn all_blobs(container: &str) -> Vec<(String, Vec<u8>)> {
    let loc = Location::parse(&format!("az://{container}/")).unwrap();
    let (store, _) = loc.object_store().unwrap();
    let metas: Vec<object_store::ObjectMeta> = store.list(None).try_collect().await.unwrap();
    let mut out = Vec::new();
    for m in metas {
        let bytes = store.get(&m.location).await.unwrap().bytes().await.unwrap();
        out.push((m.location.to_string(), bytes.to_vec()));
    }
    out
}

/// The account key and the PII key appear in no output, log (at debug),
/// report or blob; a wrong key is a configuration error (exit 2) that names
/// the URL and not the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_never_appear_in_output_reports_or_tables() {
    let f = AzureFixture::new(spec()).await;
    let key = weir::storage::emulator::KEY;
    let report = f.dir.path().join("report.json");
    let out = f
        .cmd("run")
        .args(["--log", "debug", "--report", report.to_str().unwrap()])
        .env("AZURE_STORAGE_ACCOUNT_NAME", weir::storage::emulator::ACCOUNT)
        .env("AZURE_STORAGE_ACCOUNT_KEY", key)
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let everything = format!("{}{}", text(&out), std::fs::read_to_string(&report).unwrap());
    assert!(everything.len() > 10_000, "debug logs were produced");
    for secret in [key, PII_KEY, &key[..20]] {
        assert!(!everything.contains(secret), "a secret in the output");
    }
    let blobs = all_blobs(&f.lake).await;
    assert!(blobs.len() > 10);
    for (name, bytes) in &blobs {
        for secret in [key.as_bytes(), PII_KEY.as_bytes()] {
            assert!(!bytes.windows(secret.len()).any(|w| w == secret), "a secret in {name}");
        }
    }

    // A wrong key: refused by storage, reported without the key.
    let wrong = "d3JvbmctYnV0LXdlbGwtZm9ybWVkLWtleS13cm9uZy1idXQtd2VsbC1mb3JtZWQ=";
    let out = f
        .cmd("ingest")
        .env("AZURE_STORAGE_ACCOUNT_NAME", weir::storage::emulator::ACCOUNT)
        .env("AZURE_STORAGE_ACCOUNT_KEY", wrong)
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(
        all.contains(&format!("az://{}/raw", f.lake)) && all.contains("privileges"),
        "names the table and the cause: {all}"
    );
    assert!(!all.contains(wrong) && !all.contains(&wrong[..16]), "the wrong key in the output");
}

/// Whether a stored file mentions `value`: Parquet files are decoded and
/// every value searched (bodies as text); log JSON is searched as text.
fn mentions(name: &str, bytes: &[u8], value: &str) -> bool {
    use deltalake::arrow::array::{Array, AsArray};
    use deltalake::arrow::datatypes::DataType;
    let (quoted, single) = (format!("\"{value}\""), format!("'{value}'"));
    if name.ends_with(".json") {
        let text = String::from_utf8_lossy(bytes);
        return text.contains(&quoted) || text.contains(&single);
    }
    if !name.ends_with(".parquet") {
        return false;
    }
    let reader = deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        bytes::Bytes::copy_from_slice(bytes),
    )
    .unwrap()
    .build()
    .unwrap();
    for b in reader {
        for col in b.unwrap().columns() {
            for r in (0..col.len()).filter(|r| !col.is_null(*r)) {
                let v = match col.data_type() {
                    DataType::Binary | DataType::BinaryView | DataType::LargeBinary => {
                        let c = deltalake::arrow::compute::cast(&col.slice(r, 1), &DataType::Binary).unwrap();
                        String::from_utf8_lossy(c.as_binary::<i32>().value(0)).into_owned()
                    }
                    _ => deltalake::arrow::util::display::array_value_to_string(col, r).unwrap(),
                };
                if v == value || v.contains(&quoted) {
                    return true;
                }
            }
        }
    }
    false
}

/// `weir erase --purge` on Azurite: the subject's rows leave every table,
/// the erasure log records the request, and no blob of the lake holds the
/// subject afterwards (data, change data, checkpoints, log).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erase_with_purge_leaves_no_blob_holding_the_subject() {
    use deltalake::arrow::array::AsArray;
    let f = AzureFixture::new(spec()).await;
    let out = f.cmd("run").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // The user with the most raw rows.
    let raw = weir::delta::open(&Location::parse(&format!("az://{}/raw", f.lake)).unwrap()).await.unwrap().unwrap();
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for b in weir::delta::read_all(&raw).await.unwrap() {
        let c = deltalake::arrow::compute::cast(
            b.column_by_name("subject_userId").unwrap(),
            &deltalake::arrow::datatypes::DataType::Utf8,
        )
        .unwrap();
        for v in c.as_string::<i32>().iter().flatten() {
            *counts.entry(v.to_string()).or_default() += 1;
        }
    }
    let (user, n) = counts.iter().max_by_key(|(_, n)| **n).map(|(u, n)| (u.clone(), *n)).unwrap();
    assert!(n >= 2, "{user} has {n} rows");
    let before = all_blobs(&f.lake).await;
    assert!(before.iter().any(|(name, b)| name.starts_with("raw/") && mentions(name, b, &user)));

    let out = f.cmd("erase").args(["--subject", &format!("userId={user}"), "--purge"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!text(&out).contains(&user), "the subject in the output");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let erasure = &report["stages"].as_array().unwrap().last().unwrap()["erasure"];
    let raw_entry = erasure["tables"].as_array().unwrap().iter().find(|t| t["table"] == "raw").unwrap();
    assert_eq!(raw_entry["rows_deleted"].as_u64(), Some(n as u64), "{erasure}");
    assert!(raw_entry["files_purged"].as_u64().unwrap() > 0, "{erasure}");

    let after = all_blobs(&f.lake).await;
    let holding: Vec<&String> =
        after.iter().filter(|(name, b)| mentions(name, b, &user)).map(|(name, _)| name).collect();
    assert!(holding.is_empty(), "blobs still holding the subject: {holding:?}");
    assert!(after.iter().any(|(name, _)| name.starts_with("audit/erasure_log/")));
    // The tables still read, without the subject and with everyone else.
    let raw = weir::delta::open(&Location::parse(&format!("az://{}/raw", f.lake)).unwrap()).await.unwrap().unwrap();
    let rows: usize = weir::delta::read_all(&raw).await.unwrap().iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, f.expected().len() - n);
}

/// Storage that stays down past the retries: the retryable exit code, and a
/// message naming the URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_outage_exits_with_the_retryable_code_naming_the_url() {
    let f = AzureFixture::new(spec()).await;
    // Nothing listens on port 9 of localhost.
    let started = std::time::Instant::now();
    let out = f
        .cmd("ingest")
        .env("AZURITE_BLOB_STORAGE_URL", "http://127.0.0.1:9")
        .env("WEIR_STORAGE_MAX_RETRIES", "2")
        .env("WEIR_STORAGE_RETRY_TIMEOUT", "5")
        .output()
        .unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(75), "{all}");
    assert!(all.contains(&format!("az://{}/raw", f.lake)), "names the URL: {all}");
    assert!(started.elapsed() < std::time::Duration::from_secs(60), "retries are bounded");
}
