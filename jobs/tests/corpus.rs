//! The bad-input corpus (`testdata/corpus/manifest.yaml`): pipeline files,
//! capture files, bodies and lake damage, each run through the `weir`
//! binary and held to its outcome in the manifest (exit code, words of
//! the message, events landed, the rule a body is quarantined under).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use chrono::{TimeZone, Utc};
use deltalake::arrow::array::{Array, AsArray};
use deltalake::arrow::datatypes::Int64Type;
use serde::Deserialize;
use weir_testkit::capture::{capture_path, write_capture_file, CaptureEvent, Codec, FileSpec, PropValue};

const PII_KEY: &str = "a-test-key-of-32-bytes-length!!!";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap()
}

#[derive(Deserialize)]
struct Manifest {
    pipelines: Vec<PipelineCase>,
    captures: Vec<CaptureCase>,
    bodies: Vec<BodyCase>,
    lake: Vec<LakeCase>,
}

#[derive(Deserialize)]
struct PipelineCase {
    name: String,
    yaml: String,
    words: Vec<String>,
}

#[derive(Deserialize)]
struct CaptureCase {
    name: String,
    file: Option<String>,
    make: Option<String>,
    exit: i32,
    events: serde_yaml_ng::Value,
    #[serde(default)]
    words: Vec<String>,
}

#[derive(Deserialize)]
struct BodyCase {
    name: String,
    body: String,
    outcome: String,
}

#[derive(Deserialize)]
struct LakeCase {
    name: String,
    damage: String,
    table: String,
    job: String,
    exit: i32,
    #[serde(default)]
    words: Vec<String>,
}

fn weir(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_weir"));
    weir_testkit::env::clean(&mut c).current_dir(dir).env("RUST_LOG", "warn").env("WEIR_PII_KEY", PII_KEY);
    c
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn event(seq: i64, body: Vec<u8>) -> CaptureEvent {
    let at = Utc.with_ymd_and_hms(2026, 11, 1, 8, 0, 0).unwrap();
    CaptureEvent {
        sequence_number: seq,
        offset: (seq * 100).to_string(),
        enqueued_time: at + chrono::Duration::seconds(seq),
        system_properties: vec![],
        properties: vec![("k".into(), PropValue::Str("v".into()))],
        body: Some(body),
    }
}

/// The file a `make:` recipe builds, and the events raw must then hold.
fn make(recipe: &str) -> (Vec<u8>, Option<u64>) {
    let many = |n: i64| (0..n).map(|s| event(s, format!("{{\"n\":{s}}}").into_bytes())).collect::<Vec<_>>();
    let spec = FileSpec { codec: Codec::Deflate, ..Default::default() };
    match recipe {
        "zero-bytes" => (vec![], None),
        "two-bytes" => (b"Ob".to_vec(), None),
        "text" => (b"sequence,body\n1,hello\n".to_vec(), None),
        "second-block-truncated" => {
            // Two blocks: the first one's events land, the damage stops the rest.
            let file = write_capture_file(&many(900), &FileSpec { codec: Codec::Null, ..Default::default() }).unwrap();
            let first = weir::capture::container::scan_container(&file[..]).unwrap();
            assert!(first.blocks >= 2);
            let batch = weir::capture::decode_capture_file(&file[..file.len() - 10]);
            assert!(batch.is_err());
            // Events before the damage: whole blocks before the cut.
            let mut splitter = weir::capture::Splitter::new(1, 1);
            let mut landed = 0;
            for chunk in splitter.push(&file[..file.len() - 10]).into_iter().flatten() {
                landed += chunk.records;
            }
            (file[..file.len() - 10].to_vec(), Some(landed))
        }
        "backwards" => {
            let events: Vec<CaptureEvent> =
                (48..58).rev().map(|s| event(s, format!("{{\"n\":{s}}}").into_bytes())).collect();
            (write_capture_file(&events, &spec).unwrap(), None)
        }
        "misplaced" => (write_capture_file(&many(3), &spec).unwrap(), None),
        other => panic!("unknown recipe {other}"),
    }
}

fn raw_events(lake: &Path) -> u64 {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let location = weir::storage::Location::parse(lake.join("raw").to_str().unwrap()).unwrap();
        let Some(table) = weir::delta::open(&location).await.unwrap() else { return 0 };
        weir::delta::read_all(&table).await.unwrap().iter().map(|b| b.num_rows() as u64).sum()
    })
}

#[test]
fn every_case_of_the_bad_input_corpus_gets_its_outcome() {
    let corpus = repo().join("testdata/corpus");
    let manifest: Manifest =
        serde_yaml_ng::from_str(&std::fs::read_to_string(corpus.join("manifest.yaml")).unwrap()).unwrap();
    let mut failures = Vec::new();
    let mut cases = 0;
    cases += pipelines(&manifest.pipelines, &mut failures);
    cases += captures(&manifest.captures, &mut failures);
    cases += bodies(&manifest.bodies, &mut failures);
    cases += lake(&manifest.lake, &mut failures);
    eprintln!("{cases} corpus cases");
    assert!(cases >= 60, "{cases} cases");
    assert!(failures.is_empty(), "{} of {cases} cases failed:\n{}", failures.len(), failures.join("\n---\n"));
}

fn pipelines(cases: &[PipelineCase], failures: &mut Vec<String>) -> usize {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(repo().join("schemas/user_event.avsc"), dir.path().join("user_event.avsc")).unwrap();
    for case in cases {
        let file = dir.path().join("p.yaml");
        std::fs::write(&file, &case.yaml).unwrap();
        let out = weir(dir.path()).arg("validate").arg(&file).output().unwrap();
        let said = text(&out);
        let missing: Vec<&String> = case.words.iter().filter(|w| !said.contains(w.as_str())).collect();
        if out.status.code() != Some(2) || !missing.is_empty() || said.contains("panicked") {
            failures.push(format!(
                "pipeline {:?}: exit {:?}, missing {missing:?}:\n{said}",
                case.name,
                out.status.code()
            ));
        }
    }
    cases.len()
}

fn captures(cases: &[CaptureCase], failures: &mut Vec<String>) -> usize {
    for case in cases {
        let dir = tempfile::tempdir().unwrap();
        let capture = dir.path().join("capture");
        let (bytes, from_make) = match (&case.file, &case.make) {
            (Some(f), _) => (std::fs::read(repo().join("testdata").join(f)).unwrap(), None),
            (_, Some(recipe)) => make(recipe),
            _ => panic!("{}: a case needs file or make", case.name),
        };
        let at = Utc.with_ymd_and_hms(2026, 11, 1, 8, 0, 0).unwrap();
        let path = match case.make.as_deref() {
            Some("misplaced") => capture.join("0/not-a-window.avro"),
            _ => capture.join(capture_path("0", at)),
        };
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        let lake = dir.path().join("lake");
        let yaml = format!(
            "name: c\nsource:\n  capture:\n    url: {}\ntables:\n  raw: {{path: {}}}\n",
            capture.display(),
            lake.join("raw").display()
        );
        std::fs::write(dir.path().join("p.yaml"), yaml).unwrap();
        let out = weir(dir.path()).arg("ingest").arg("p.yaml").output().unwrap();
        let said = text(&out);
        let want = from_make.or(case.events.as_u64()).unwrap_or(0);
        let got = raw_events(&lake);
        let missing: Vec<&String> = case.words.iter().filter(|w| !said.contains(w.as_str())).collect();
        if out.status.code() != Some(case.exit) || got != want || !missing.is_empty() || said.contains("panicked") {
            failures.push(format!(
                "capture {:?}: exit {:?} (want {}), {got} events (want {want}), missing {missing:?}:\n{said}",
                case.name,
                out.status.code(),
                case.exit
            ));
        }
    }
    cases.len()
}

/// The example pipeline's process section on `dir`'s capture and lake.
fn example_pipeline(dir: &Path) -> PathBuf {
    let example = std::fs::read_to_string(repo().join("pipelines/user_events.yaml")).unwrap();
    let process = &example[example.find("\nprocess:").unwrap()..example.find("\ncurate:").unwrap()];
    let lake = dir.join("lake");
    let yaml = format!(
        "name: c\nsource:\n  capture:\n    url: {}\nbody:\n  schema: {}\ntables:\n  raw: {{path: {lake}/raw}}\n  processed: {{path: {lake}/processed}}\n  quarantine: {{path: {lake}/quarantine}}\n{process}\n",
        dir.join("capture").display(),
        repo().join("schemas/user_event.avsc").display(),
        lake = lake.display(),
    );
    let file = dir.join("p.yaml");
    std::fs::write(&file, yaml).unwrap();
    file
}

fn bodies(cases: &[BodyCase], failures: &mut Vec<String>) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let events: Vec<CaptureEvent> =
        cases.iter().enumerate().map(|(i, c)| event(i as i64, c.body.clone().into_bytes())).collect();
    let at = Utc.with_ymd_and_hms(2026, 11, 1, 8, 0, 0).unwrap();
    let path = dir.path().join("capture").join(capture_path("0", at));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, write_capture_file(&events, &FileSpec::default()).unwrap()).unwrap();
    let pipeline = example_pipeline(dir.path());
    for job in ["ingest", "process"] {
        let out = weir(dir.path()).arg(job).arg(&pipeline).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{job}: {}", text(&out));
    }
    // Sequence number → where the body ended.
    let mut ended: BTreeMap<i64, String> = BTreeMap::new();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        for table in ["processed", "quarantine"] {
            let location =
                weir::storage::Location::parse(dir.path().join("lake").join(table).to_str().unwrap()).unwrap();
            let Some(t) = weir::delta::open(&location).await.unwrap() else { continue };
            for b in weir::delta::read_all(&t).await.unwrap() {
                let seqs = b.column_by_name("_sequence_number").unwrap().as_primitive::<Int64Type>();
                for i in 0..b.num_rows() {
                    let outcome = if table == "processed" {
                        "processed".to_string()
                    } else {
                        let rules = b.column_by_name("rules").unwrap().as_list::<i32>().value(i);
                        let rules =
                            deltalake::arrow::compute::cast(&rules, &deltalake::arrow::datatypes::DataType::Utf8)
                                .unwrap();
                        let rules = rules.as_string::<i32>();
                        let first = (0..rules.len()).map(|j| rules.value(j).to_string()).next().unwrap_or_default();
                        format!("quarantine: {first}")
                    };
                    ended.insert(seqs.value(i), outcome);
                }
            }
        }
    });
    for (i, case) in cases.iter().enumerate() {
        let got = ended.get(&(i as i64)).cloned().unwrap_or_else(|| "dropped".into());
        if got != case.outcome {
            failures.push(format!("body {:?}: {got}, want {}", case.name, case.outcome));
        }
    }
    cases.len()
}

fn lake(cases: &[LakeCase], failures: &mut Vec<String>) -> usize {
    let base = tempfile::tempdir().unwrap();
    let example = repo().join("pipelines/user_events.yaml");
    let run = weir(&repo()).args(["run", example.to_str().unwrap()]).env("WEIR_LAKE", base.path()).output().unwrap();
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    for case in cases {
        let dir = tempfile::tempdir().unwrap();
        let lake = dir.path().join("lake");
        weir_testkit::fs::copy_dir(base.path(), &lake);
        let table = lake.join(&case.table);
        let log = table.join("_delta_log");
        let mut commits: Vec<PathBuf> = std::fs::read_dir(&log)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        commits.sort();
        match case.damage.as_str() {
            "truncate-latest-commit" => {
                let last = commits.last().unwrap();
                let bytes = std::fs::read(last).unwrap();
                std::fs::write(last, &bytes[..bytes.len() / 2]).unwrap();
            }
            "garbage-last-checkpoint" => std::fs::write(log.join("_last_checkpoint"), b"{\"version\": ").unwrap(),
            "delete-a-data-file" => {
                let add = commits
                    .iter()
                    .flat_map(|c| std::fs::read_to_string(c).unwrap().lines().map(str::to_string).collect::<Vec<_>>())
                    .find_map(|l| {
                        let v: serde_json::Value = serde_json::from_str(&l).ok()?;
                        v.get("add")?.get("path")?.as_str().map(str::to_string)
                    });
                std::fs::remove_file(table.join(add.expect("a data file"))).unwrap();
            }
            "stray-log-file" => std::fs::write(log.join("notes.txt"), b"hello").unwrap(),
            "drop-first-commits" => {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                rt.block_on(async {
                    let location = weir::storage::Location::parse(table.to_str().unwrap()).unwrap();
                    let t = weir::delta::open(&location).await.unwrap().unwrap();
                    deltalake::checkpoints::create_checkpoint(&t, None).await.unwrap();
                });
                std::fs::remove_file(&commits[0]).unwrap();
            }
            other => panic!("unknown damage {other}"),
        }
        let mut c = weir(&repo());
        c.env("WEIR_LAKE", &lake);
        let job: Vec<&str> = case.job.split(' ').collect();
        if job[0] == "changes" {
            c.args(["changes", table.to_str().unwrap(), "--from-version", "0"]);
        } else {
            c.arg(job[0]).arg(&example).args(&job[1..]);
        }
        let out = c.output().unwrap();
        let said = text(&out);
        let missing: Vec<&String> = case.words.iter().filter(|w| !said.contains(w.as_str())).collect();
        if out.status.code() != Some(case.exit) || !missing.is_empty() || said.contains("panicked") {
            failures.push(format!(
                "lake {:?}: exit {:?} (want {}), missing {missing:?}:\n{said}",
                case.name,
                out.status.code(),
                case.exit
            ));
        }
    }
    cases.len()
}
