//! The commands README.md and docs/ show work as shown: every `weir`
//! command names a real subcommand and only options it takes, and the
//! shell examples that run against local folders run, on the example
//! pipeline, with the outcome the text claims.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const PII_KEY: &str = "a-test-key-of-32-bytes-length!!!";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap()
}

/// `weir` with none of the caller's WEIR_*, AZURE_* or RUST_LOG settings.
fn weir(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_weir"));
    weir_testkit::env::clean(&mut c).current_dir(dir).env("RUST_LOG", "error");
    c
}

/// README.md and every page under docs/.
fn pages() -> Vec<(String, String)> {
    let mut out = vec![("README.md".to_string(), std::fs::read_to_string(repo().join("README.md")).unwrap())];
    let mut dirs = vec![repo().join("docs")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "md") {
                let name = p.strip_prefix(repo()).unwrap().display().to_string();
                out.push((name, std::fs::read_to_string(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// Fenced blocks of one page: (language, body).
fn fenced(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if let Some(lang) = line.trim_start().strip_prefix("```") {
            let body: Vec<&str> = lines.by_ref().take_while(|l| !l.trim_start().starts_with("```")).collect();
            out.push((lang.trim().to_string(), body.join("\n")));
        }
    }
    out
}

/// Shell lines of a block, with `\` continuations joined and comments cut.
fn shell_lines(body: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in body.lines() {
        let line = line.split(" #").next().unwrap_or("").trim_end();
        if line.trim_start().starts_with('#') {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => current += part,
            None => {
                current += line;
                if !current.trim().is_empty() {
                    out.push(current.trim().to_string());
                }
                current.clear();
            }
        }
    }
    out
}

/// Every `weir …` command a page shows, fenced or inline.
fn weir_commands(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (lang, body) in fenced(text) {
        if lang == "sh" {
            for line in shell_lines(&body) {
                for part in line.split("&&").map(|p| p.split('|').next().unwrap_or("").trim()) {
                    let part = part.strip_prefix("cargo run -- ").map_or(part.to_string(), |r| format!("weir {r}"));
                    if part.starts_with("weir ") {
                        out.push(part);
                    }
                }
            }
        }
    }
    let mut in_fence = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            continue;
        }
        for (i, span) in line.split('`').enumerate() {
            if i % 2 == 1 && span.starts_with("weir ") {
                out.push(span.to_string());
            }
        }
    }
    out
}

#[test]
fn every_weir_command_the_docs_show_names_a_subcommand_and_options_it_takes() {
    let mut help: BTreeMap<String, String> = BTreeMap::new();
    let mut checked = 0;
    let mut problems = Vec::new();
    for (page, text) in pages() {
        for command in weir_commands(&text) {
            let mut words = command.split_whitespace().skip(1);
            let Some(sub) = words.next() else { continue };
            let text = help.entry(sub.to_string()).or_insert_with(|| {
                let out = weir(&repo()).args([sub, "--help"]).output().unwrap();
                if out.status.success() {
                    String::from_utf8_lossy(&out.stdout).to_string()
                } else {
                    String::new()
                }
            });
            if text.is_empty() {
                problems.push(format!("{page}: `{command}`: weir has no subcommand {sub:?}"));
                continue;
            }
            for w in words {
                let option = w.trim_start_matches('[').split(['=', ']']).next().unwrap_or("");
                if option.starts_with("--")
                    && !text.contains(&format!("{option} "))
                    && !text.contains(&format!("{option}\n"))
                {
                    problems.push(format!("{page}: `{command}`: weir {sub} takes no option {option}"));
                }
            }
            checked += 1;
        }
    }
    assert!(checked > 20, "found only {checked} commands: is the extraction broken?");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// A working folder as a user's clone: the example pipeline, its schema and
/// the sample capture files, and a `lake` of its own.
fn workdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for d in ["pipelines", "schemas", "testdata"] {
        std::os::unix::fs::symlink(repo().join(d), dir.path().join(d)).unwrap();
    }
    dir
}

fn run(dir: &Path, command: &str) -> Output {
    let args: Vec<&str> = command.split_whitespace().skip(1).collect();
    let out = weir(dir).args(&args).env("WEIR_PII_KEY", PII_KEY).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "`{command}`: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// The shell examples that work on local folders, page by page on a fresh
/// lake (after the quick start's run, for pages that do not run one), in
/// the order the page shows them.
#[test]
fn the_shell_examples_run_as_the_pages_say() {
    let mut ran = Vec::new();
    for (page, text) in pages() {
        let blocks: Vec<String> = fenced(&text)
            .into_iter()
            .filter(|(lang, _)| lang == "sh")
            .map(|(_, body)| body)
            // Examples against Azure storage accounts run in the Azurite tests.
            .filter(|body| !body.contains("AZURE_") && !body.contains("abfss://"))
            .collect();
        let commands: Vec<String> = blocks.iter().flat_map(|b| weir_commands(&format!("```sh\n{b}\n```"))).collect();
        if commands.is_empty() {
            continue;
        }
        let dir = workdir();
        // Pages that only read tables start where the README's quick start
        // leaves a reader.
        if !commands.iter().any(|c| c.starts_with("weir run ")) {
            run(dir.path(), "weir run pipelines/user_events.yaml");
        }
        for command in &commands {
            if command.contains("--entities labels.parquet") {
                write_labels(&dir.path().join("labels.parquet"));
            }
            let out = run(dir.path(), command);
            if page == "docs/guide/process.md" && command == "weir run pipelines/user_events.yaml" {
                // "events_quarantined 4 (malformed JSON), duplicates_dropped 9"
                let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                assert_eq!(report["stages"][1]["quality"]["events_quarantined"], 4, "{report}");
                assert_eq!(report["stages"][1]["quality"]["duplicates_dropped"], 9, "{report}");
            }
            if command.contains("--output training.parquet") {
                assert!(dir.path().join("training.parquet").is_file(), "`{command}` wrote its output");
            }
            ran.push(format!("{page}: {command}"));
        }
    }
    // The quick start, the process and curate examples at least.
    assert!(ran.iter().any(|r| r.starts_with("README.md: weir run")), "{ran:#?}");
    assert!(ran.iter().any(|r| r.contains("weir features")), "{ran:#?}");
    assert!(ran.iter().any(|r| r.contains("weir changes")), "{ran:#?}");
}

/// `labels.parquet` as the curate guide describes it: entity rows of
/// `userId` and a timestamp `ts`.
fn write_labels(path: &Path) {
    use deltalake::arrow::array::{StringArray, TimestampMicrosecondArray};
    use deltalake::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use deltalake::arrow::record_batch::RecordBatch;
    use std::sync::Arc;
    let schema = Arc::new(Schema::new(vec![
        Field::new("userId", DataType::Utf8, false),
        Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), false),
    ]));
    let ts = 1_793_577_600_000_000; // 2026-11-02T00:00:00Z, after the sample events
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(vec!["u-1071", "u-753"])),
            Arc::new(TimestampMicrosecondArray::from(vec![ts, ts]).with_timezone("UTC")),
        ],
    )
    .unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = deltalake::parquet::arrow::ArrowWriter::try_new(file, schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}
