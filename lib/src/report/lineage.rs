//! OpenLineage run events: what each job read and wrote, for Marquez,
//! Microsoft Purview and other OpenLineage consumers (`--lineage`).
//!
//! A run emits `START` when it begins and `COMPLETE` or `FAIL` when it ends
//! (spec 2-0-2 `RunEvent`). The job is `<pipeline>.<job>` in the namespace
//! `weir`; datasets follow the OpenLineage naming conventions: local tables
//! and folders are namespace `file` with the absolute path as name, Azure
//! locations `abfss://<container>@<account>.dfs.core.windows.net` with the
//! path as name. Outputs carry the table version written and the rows the
//! run wrote (`outputStatistics`).
//!
//! Transport: a path appends one JSON line per event; an `http(s)://` URL
//! gets each event POSTed as JSON (e.g. `http://marquez:5000/api/v1/lineage`).
//! A lineage endpoint that fails is logged, never fails the job.

use std::io::Write as _;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::{Outcome, RunReport};
use crate::pipeline::LoadedPipeline;
use crate::storage::Location;

const PRODUCER: &str = concat!("https://github.com/weir-data/weir/tree/v", env!("CARGO_PKG_VERSION"));
const RUN_EVENT_SCHEMA: &str = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/definitions/RunEvent";

/// A dataset: (namespace, name).
pub fn dataset(location: &Location) -> (String, String) {
    let url = location.url();
    match url.scheme() {
        "file" => ("file".to_string(), url.path().trim_end_matches('/').to_string()),
        "abfss" | "abfs" => {
            let host = url.host_str().unwrap_or_default();
            let container = url.username();
            (format!("abfss://{container}@{host}"), url.path().trim_end_matches('/').to_string())
        }
        "az" | "azure" | "adl" => {
            let container = url.host_str().unwrap_or_default();
            let namespace =
                match std::env::var("AZURE_STORAGE_ACCOUNT_NAME").or_else(|_| std::env::var("AZURE_STORAGE_ACCOUNT")) {
                    Ok(account) if !account.is_empty() => format!("abfss://{container}@{account}.dfs.core.windows.net"),
                    _ => format!("{}://{container}", url.scheme()),
                };
            (namespace, url.path().trim_end_matches('/').to_string())
        }
        other => (format!("{other}://{}", url.host_str().unwrap_or_default()), url.path().to_string()),
    }
}

/// (name in the pipeline, path) of a dataset.
type Named = Vec<(String, String)>;

/// What `job` reads and writes.
fn datasets(loaded: &LoadedPipeline, job: &str) -> (Named, Named) {
    let p = &loaded.pipeline;
    let t = &p.tables;
    let source = ("capture".to_string(), p.source.capture.url.clone());
    let raw = ("raw".to_string(), t.raw.path.clone());
    let named = |name: &str, table: &Option<crate::pipeline::TableConfig>| {
        table.as_ref().map(|c| (name.to_string(), c.path.clone()))
    };
    // `processed`, or each route's table.
    let processed: Vec<(String, String)> =
        loaded.process_units().into_iter().filter_map(|u| u.table.map(|table| (u.name, table.path))).collect();
    let process_out: Vec<(String, String)> = processed
        .iter()
        .cloned()
        .chain([named("quarantine", &t.quarantine), named("quality_metrics", &t.quality_metrics)].into_iter().flatten())
        .collect();
    let curated: Vec<(String, String)> =
        p.curate.iter().flat_map(|c| &c.tables).map(|c| (c.name.clone(), c.path.clone())).collect();
    let references: Vec<(String, String)> =
        p.curate.iter().flat_map(|c| &c.references).map(|r| (r.name.clone(), r.path.clone())).collect();
    let all: Vec<(String, String)> = loaded
        .tables_written()
        .into_iter()
        .filter(|t| t.name != "runs")
        .map(|t| (t.name, t.path.to_string()))
        .collect();
    match job {
        "ingest" => (vec![source], vec![raw]),
        "process" => (vec![raw], process_out),
        "curate" => ([processed, references].concat(), curated),
        "run" => {
            let has_process = p.process.is_some();
            let outputs = [vec![raw], if has_process { process_out } else { vec![] }, curated].concat();
            ([vec![source], references].concat(), outputs)
        }
        "maintain" | "erase" => (all.clone(), all),
        _ => (vec![], vec![]),
    }
}

fn dataset_json(path: &str, facets: Value) -> Option<Value> {
    let location = Location::parse(path).ok()?;
    let (namespace, name) = dataset(&location);
    Some(json!({"namespace": namespace, "name": name, "facets": facets}))
}

fn facet(name: &str) -> Value {
    json!({
        "_producer": PRODUCER,
        "_schemaURL": format!("https://openlineage.io/spec/facets/1-0-0/{name}.json#/$defs/{name}"),
    })
}

/// The event for `report` at `event_type` (`START`, `COMPLETE`, `FAIL`).
/// `run_uuid` is the OpenLineage run id (a UUID; Weir's own run id goes in
/// the `weir` run facet).
pub fn event(
    loaded: &LoadedPipeline,
    report: &RunReport,
    run_uuid: &str,
    event_type: &str,
    at: DateTime<Utc>,
) -> Value {
    let (inputs, outputs) = datasets(loaded, &report.job);
    let inputs: Vec<Value> = inputs.iter().filter_map(|(_, path)| dataset_json(path, json!({}))).collect();
    let outputs: Vec<Value> = outputs
        .iter()
        .filter_map(|(name, path)| {
            let mut facets = serde_json::Map::new();
            if event_type != "START" {
                let writes: Vec<&crate::report::TableWrite> =
                    report.stages.iter().flat_map(|s| &s.tables).filter(|w| &w.table == name).collect();
                if let Some(v) = writes.iter().flat_map(|w| w.versions_written.iter()).max() {
                    let mut f = facet("DatasetVersionDatasetFacet");
                    f["datasetVersion"] = json!(v.to_string());
                    facets.insert("version".into(), f);
                }
                let rows: u64 = report
                    .stages
                    .iter()
                    .filter(|s| s.tables.iter().any(|w| &w.table == name && !w.versions_written.is_empty()))
                    .filter(|s| {
                        (name == "raw" && s.stage == super::Stage::Ingest)
                            || (s.stage == super::Stage::Process && s.route.as_deref().unwrap_or("processed") == name)
                    })
                    .map(|s| s.events_written)
                    .sum();
                if rows > 0 {
                    let mut f = facet("OutputStatisticsOutputDatasetFacet");
                    f["rowCount"] = json!(rows);
                    return dataset_json(path, json!({})).map(|mut d| {
                        d["facets"] = Value::Object(facets);
                        d["outputFacets"] = json!({"outputStatistics": f});
                        d
                    });
                }
            }
            dataset_json(path, Value::Object(facets))
        })
        .collect();
    let mut run_facets = json!({
        "weir": {
            "_producer": PRODUCER,
            "_schemaURL": concat!("https://github.com/weir-data/weir/tree/v", env!("CARGO_PKG_VERSION"), "/README.md#lineage"),
            "runId": report.run_id,
            "pipelineFile": report.pipeline_file,
            "dryRun": report.dry_run,
        }
    });
    if event_type != "START" {
        run_facets["weir"]["outcome"] = json!(super::runs::outcome_name(report.outcome));
    }
    if let (Outcome::Failed, Some(e)) = (report.outcome, &report.error) {
        let mut f = facet("ErrorMessageRunFacet");
        f["message"] = json!(e.message);
        f["programmingLanguage"] = json!("Rust");
        run_facets["errorMessage"] = f;
    }
    let mut job_type = facet("JobTypeJobFacet");
    job_type["processingType"] = json!("BATCH");
    job_type["integration"] = json!("WEIR");
    job_type["jobType"] = json!(report.job.to_uppercase());
    json!({
        "eventType": event_type,
        "eventTime": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "run": {"runId": run_uuid, "facets": run_facets},
        "job": {"namespace": "weir", "name": format!("{}.{}", report.pipeline, report.job), "facets": {"jobType": job_type}},
        "inputs": inputs,
        "outputs": outputs,
        "producer": PRODUCER,
        "schemaURL": RUN_EVENT_SCHEMA,
    })
}

/// Sends one event to a file (appended as a JSON line) or an HTTP endpoint.
/// Failures are logged: lineage never fails a job.
pub async fn emit(target: &str, event: &Value) {
    let line = event.to_string();
    if target.starts_with("http://") || target.starts_with("https://") {
        let client = reqwest::Client::new();
        let sent = client
            .post(target)
            .header("content-type", "application/json")
            .body(line)
            .timeout(std::time::Duration::from_secs(10))
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => {
                tracing::warn!(status = %r.status(), endpoint = %crate::storage::redact(target), "the lineage endpoint refused an event")
            }
            Err(e) => {
                tracing::warn!(error = %e, endpoint = %crate::storage::redact(target), "cannot send a lineage event")
            }
        }
        return;
    }
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(target)
        .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
    if let Err(e) = written {
        tracing::warn!(error = %e, file = target, "cannot write a lineage event");
    }
}
