//! A run as Prometheus text-format metrics, for the node_exporter textfile
//! collector (`--metrics-file`, typically with cron).
//!
//! The file is replaced atomically (written beside, then renamed), so the
//! collector never reads half a file. Every series carries `pipeline` and
//! `job` labels; one file per (pipeline, job) keeps the jobs' series apart.

use std::fmt::Write as _;
use std::path::Path;

use super::{runs::outcome_name, Outcome, RunReport};
use crate::{Error, Result};

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// A stage's labels: its name, and its route when it ran for one.
fn stage_label(s: &super::StageReport) -> String {
    match &s.route {
        None => format!("stage=\"{}\"", escape(s.stage.as_str())),
        Some(_) => format!("stage=\"{}\",{}", escape(s.stage.as_str()), route_label(s)),
    }
}

/// A process stage's route label (none without routes).
fn route_label(s: &super::StageReport) -> String {
    s.route.as_ref().map(|r| format!("route=\"{}\"", escape(r))).unwrap_or_default()
}

/// The metrics text for one run.
pub fn render(report: &RunReport, exit_code: u8) -> String {
    let labels = format!("pipeline=\"{}\",job=\"{}\"", escape(&report.pipeline), escape(&report.job));
    let mut out = String::new();
    let mut metric = |name: &str, help: &str, kind: &str, lines: Vec<(String, String)>| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (extra, value) in lines {
            let l = if extra.is_empty() { labels.clone() } else { format!("{labels},{extra}") };
            let _ = writeln!(out, "{name}{{{l}}} {value}");
        }
    };
    let one = |v: String| vec![(String::new(), v)];
    metric(
        "weir_last_run_finished_timestamp_seconds",
        "When the last run finished (Unix time).",
        "gauge",
        one(format!("{:.3}", report.finished_at.timestamp_millis() as f64 / 1000.0)),
    );
    metric(
        "weir_last_run_duration_seconds",
        "Wall time of the last run.",
        "gauge",
        one(format!("{:.3}", (report.finished_at - report.started_at).num_milliseconds() as f64 / 1000.0)),
    );
    metric(
        "weir_last_run_exit_code",
        "Exit code of the last run (0 ok, 2 config, 3 data, 75 retryable).",
        "gauge",
        one(exit_code.to_string()),
    );
    metric(
        "weir_last_run_outcome",
        "1 for the last run's outcome, 0 for the others.",
        "gauge",
        [Outcome::Success, Outcome::DataProblem, Outcome::Failed]
            .iter()
            .map(|o| (format!("outcome=\"{}\"", outcome_name(*o)), u8::from(*o == report.outcome).to_string()))
            .collect(),
    );
    if report.outcome == Outcome::Success {
        metric(
            "weir_last_success_timestamp_seconds",
            "When the last successful run finished (Unix time).",
            "gauge",
            one(format!("{:.3}", report.finished_at.timestamp_millis() as f64 / 1000.0)),
        );
    }
    let per_stage = |f: fn(&super::StageReport) -> u64| -> Vec<(String, String)> {
        report.stages.iter().map(|s| (stage_label(s), f(s).to_string())).collect()
    };
    metric(
        "weir_last_run_events_read",
        "Events (or rows) the stage read in the last run.",
        "gauge",
        per_stage(|s| s.events_read),
    );
    metric(
        "weir_last_run_events_written",
        "Events (or rows) the stage wrote in the last run.",
        "gauge",
        per_stage(|s| s.events_written),
    );
    metric(
        "weir_last_run_files_read",
        "Capture files the stage read in the last run.",
        "gauge",
        per_stage(|s| s.files_read),
    );
    metric(
        "weir_last_run_bytes_read",
        "Bytes of input the stage read in the last run.",
        "gauge",
        per_stage(|s| s.bytes_read),
    );
    metric(
        "weir_last_run_problems",
        "Data problems the last run reported (blocking ones exit 3).",
        "gauge",
        per_stage(|s| s.problems.len() as u64),
    );
    let quality: Vec<(String, String)> = report
        .stages
        .iter()
        .filter_map(|s| s.quality.as_ref().map(|q| (route_label(s), q.events_quarantined.to_string())))
        .collect();
    if !quality.is_empty() {
        metric("weir_last_run_events_quarantined", "Events the last run sent to quarantine.", "gauge", quality);
    }
    let watermarks: Vec<(String, String)> = report
        .stages
        .iter()
        .flat_map(|s| &s.partitions)
        .filter_map(|(p, r)| r.watermark_after.map(|w| (format!("partition=\"{}\"", escape(p)), w.to_string())))
        .collect();
    if !watermarks.is_empty() {
        metric("weir_ingest_watermark", "Last sequence number ingested, per Event Hub partition.", "gauge", watermarks);
    }
    out
}

/// Writes the metrics file atomically.
pub fn write(path: &Path, report: &RunReport, exit_code: u8) -> Result<()> {
    let text = render(report, exit_code);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "metrics".into());
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, text).map_err(|source| Error::Io { path: tmp.clone(), source })?;
    std::fs::rename(&tmp, path).map_err(|source| Error::Io { path: path.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone, Utc};

    use super::*;
    use crate::report::{PartitionReport, StageReport};

    #[test]
    fn renders_every_series_with_labels() {
        let started = Utc.with_ymd_and_hms(2026, 11, 22, 8, 0, 0).unwrap();
        let mut ingest = StageReport {
            stage: crate::report::Stage::Ingest,
            events_read: 10,
            events_written: 9,
            files_read: 2,
            ..Default::default()
        };
        ingest.partitions.insert("0".into(), PartitionReport { watermark_after: Some(41), ..Default::default() });
        let report = RunReport {
            run_id: "r".into(),
            pipeline: "user\"events".into(),
            pipeline_file: "p.yaml".into(),
            job: "run".into(),
            dry_run: false,
            started_at: started,
            finished_at: started + Duration::milliseconds(2500),
            outcome: Outcome::DataProblem,
            stages: vec![ingest],
            error: None,
        };
        let text = render(&report, 3);
        let l = r#"pipeline="user\"events",job="run""#;
        for line in [
            format!("weir_last_run_duration_seconds{{{l}}} 2.500"),
            format!("weir_last_run_exit_code{{{l}}} 3"),
            format!("weir_last_run_outcome{{{l},outcome=\"data_problem\"}} 1"),
            format!("weir_last_run_outcome{{{l},outcome=\"success\"}} 0"),
            format!("weir_last_run_events_written{{{l},stage=\"ingest\"}} 9"),
            format!("weir_ingest_watermark{{{l},partition=\"0\"}} 41"),
            format!("weir_last_run_finished_timestamp_seconds{{{l}}} 1795334402.500"),
        ] {
            assert!(text.lines().any(|x| x == line), "{line} in\n{text}");
        }
        assert!(!text.contains("weir_last_success_timestamp_seconds{"), "not a success");
        // Every sample line has HELP and TYPE before it.
        for name in text.lines().filter(|l| !l.starts_with('#')).map(|l| l.split('{').next().unwrap()) {
            assert!(text.contains(&format!("# TYPE {name} gauge")), "{name}");
        }
    }
}
