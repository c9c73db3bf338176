//! The job driver: one place that owns a run's lifecycle, whatever the job.
//! It loads the pipeline, gives the run its id, times it, builds the run
//! report, appends the runs-table row, writes the metrics file, emits the
//! lineage events and decides the exit code. Jobs only say which stages run
//! ([`run_stages`]) or bring their own body (erase).
//!
//! The exit code is a contract with schedulers ([`exit`]): the runs table
//! and the metrics file record the same code the process exits with.
//!
//! Hazard: the audit trail (runs table, metrics, lineage) never changes the
//! run's outcome. A run whose commits succeeded and whose runs-table append
//! failed still exits 0; the failure is logged.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use chrono::Utc;

use crate::capture::PartitionSet;
use crate::curate::CurateOptions;
use crate::ingest::IngestOptions;
use crate::lake::feed::AppendFeed;
use crate::maintain::MaintainOptions;
use crate::pipeline::{load_pipeline, LoadedPipeline};
use crate::process::ProcessOptions;
use crate::report::{ErrorReport, Outcome, RunReport, StageReport};
use crate::stage;
use crate::{Error, Result};

/// Exit codes, the contract with schedulers.
pub mod exit {
    use crate::ErrorClass;

    /// Success, including "nothing new".
    pub const OK: u8 = 0;
    /// A defect in Weir.
    pub const INTERNAL: u8 = 1;
    /// Invalid usage or configuration; do not retry.
    pub const CONFIG: u8 = 2;
    /// Input data needs a human; everything else was done.
    pub const DATA: u8 = 3;
    /// Retryable failure (EX_TEMPFAIL).
    pub const RETRYABLE: u8 = 75;

    /// The code a failure of this class exits with.
    pub fn of(class: ErrorClass) -> u8 {
        match class {
            ErrorClass::Config => CONFIG,
            ErrorClass::Data => DATA,
            ErrorClass::Retryable => RETRYABLE,
            ErrorClass::Internal => INTERNAL,
        }
    }
}

/// A job that runs stages of a pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    /// Capture files → raw.
    Ingest,
    /// Raw → processed, quarantine, quality metrics.
    Process,
    /// Processed → curated tables.
    Curate,
    /// Table upkeep.
    Maintain,
    /// Ingest, then process and curate where the pipeline declares them.
    Run,
}

impl Job {
    /// The job's name in reports and the runs table.
    pub fn name(self) -> &'static str {
        match self {
            Job::Ingest => "ingest",
            Job::Process => "process",
            Job::Curate => "curate",
            Job::Maintain => "maintain",
            Job::Run => "run",
        }
    }
}

/// What a stage job was asked to do: each command line compiles into one.
#[derive(Clone, Default)]
pub struct JobRequest {
    /// Compute and report, write nothing.
    pub dry_run: bool,
    /// Ingest: only these partitions (all when `None`).
    pub partitions: Option<PartitionSet>,
    /// Curate: recompute from scratch.
    pub full_refresh: bool,
    /// Curate, maintain: only these tables.
    pub tables: Vec<String>,
    /// Maintain: vacuum below the safety window.
    pub force: bool,
    /// Maintain: only release the rewrite leases left on the tables, for
    /// this reason.
    pub release_leases: Option<String>,
    /// Ingest: called with (files done, files in total) as files complete.
    pub on_progress: Option<Arc<dyn Fn(u64, u64) + Send + Sync>>,
}

/// Where a run's outcome goes besides the report and the exit code.
#[derive(Debug, Clone, Default)]
pub struct Outputs<'a> {
    /// Prometheus text-format metrics file.
    pub metrics_file: Option<&'a Path>,
    /// OpenLineage target: a file or an http(s) endpoint.
    pub lineage: Option<&'a str>,
    /// The partition selection, recorded in the runs table.
    pub partitions: Option<String>,
}

/// A finished run: its report and the code to exit with.
#[derive(Debug)]
pub struct Finished {
    /// The run report.
    pub report: RunReport,
    /// The exit code (see [`exit`]).
    pub exit_code: u8,
    /// The error that ended the run, if one did (also in the report).
    pub error: Option<Error>,
}

/// A new run id: UTC start time and 8 random hex digits.
pub fn new_run_id() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{}-{}", Utc::now().format("%Y%m%dT%H%M%SZ"), &id[..8])
}

/// Runs `body` as one run of `job` on the pipeline file: loads it, then
/// records the outcome everywhere it goes. `body` gets the loaded pipeline
/// and the run id and returns the stages' reports and how the run ended.
pub async fn drive<F, Fut>(job: &str, pipeline: &Path, dry_run: bool, outputs: &Outputs<'_>, body: F) -> Finished
where
    F: FnOnce(LoadedPipeline, String) -> Fut,
    Fut: Future<Output = (Vec<StageReport>, Result<()>)>,
{
    let started_at = Utc::now();
    let run_id = new_run_id();
    let mut report = RunReport {
        run_id: run_id.clone(),
        pipeline: String::new(),
        pipeline_file: pipeline.display().to_string(),
        job: job.to_string(),
        dry_run,
        started_at,
        finished_at: started_at,
        outcome: Outcome::Success,
        stages: Vec::new(),
        error: None,
    };
    let lineage_run = uuid::Uuid::new_v4().to_string();
    let (loaded, result) = match load_pipeline(pipeline) {
        Ok(loaded) => {
            report.pipeline = loaded.pipeline.name.clone();
            tracing::info!(pipeline = %loaded.pipeline.name, run_id = %run_id, job, "run started");
            if let Some(target) = outputs.lineage {
                let event = crate::report::lineage::event(&loaded, &report, &lineage_run, "START", started_at);
                crate::report::lineage::emit(target, &event).await;
            }
            let (stages, result) = body(loaded.clone(), run_id).await;
            report.stages = stages;
            (Some(loaded), result)
        }
        Err(e) => (None, Err(e)),
    };
    report.finished_at = Utc::now();
    let (exit_code, error) = conclude(&mut report, result);
    if let (Some(loaded), false) = (&loaded, dry_run) {
        if let Err(e) = crate::report::runs::append(loaded, &report, exit_code, outputs.partitions.as_deref()).await {
            tracing::error!(error = %e, "cannot append the run to the runs table");
        }
    }
    if let Some(path) = outputs.metrics_file {
        if let Err(e) = crate::report::metrics::write(path, &report, exit_code) {
            tracing::error!(error = %e, "cannot write the metrics file");
        }
    }
    if let (Some(target), Some(loaded)) = (outputs.lineage, &loaded) {
        let kind = if report.outcome == Outcome::Failed { "FAIL" } else { "COMPLETE" };
        let event = crate::report::lineage::event(loaded, &report, &lineage_run, kind, report.finished_at);
        crate::report::lineage::emit(target, &event).await;
    }
    tracing::info!(outcome = ?report.outcome, exit_code, "run finished");
    Finished { report, exit_code, error }
}

/// The outcome and exit code of a run from its stages and result.
fn conclude(report: &mut RunReport, result: Result<()>) -> (u8, Option<Error>) {
    match result {
        Ok(()) => {
            report.outcome = RunReport::outcome_from_stages(&report.stages);
            (if report.outcome == Outcome::DataProblem { exit::DATA } else { exit::OK }, None)
        }
        Err(e) => {
            report.outcome = Outcome::Failed;
            report.error = Some(ErrorReport { class: e.class(), message: e.to_string() });
            (exit::of(e.class()), Some(e))
        }
    }
}

/// The stages `job` runs, in order, each planned then executed
/// ([`stage::run`]) and its report pushed as it completes (so a failing
/// stage leaves the earlier ones in the run report).
pub async fn run_stages(
    job: Job,
    request: &JobRequest,
    loaded: &LoadedPipeline,
    run_id: &str,
    stages: &mut Vec<StageReport>,
) -> Result<()> {
    let p = &loaded.pipeline;
    let ingest = matches!(job, Job::Ingest | Job::Run).then(|| IngestOptions {
        partitions: request.partitions.clone().unwrap_or_else(PartitionSet::all),
        dry_run: request.dry_run,
        run_id: run_id.to_string(),
        on_progress: request.on_progress.clone(),
        feed: None,
    });
    let process = (job == Job::Process || (job == Job::Run && p.process.is_some())).then(|| ProcessOptions {
        dry_run: request.dry_run,
        run_id: run_id.to_string(),
        route: None,
        follow: None,
    });
    match (ingest, process) {
        // One process unit follows ingest as it commits.
        (Some(ingest), Some(process)) if !request.dry_run && loaded.routes().is_none() => {
            ingest_and_process(loaded, ingest, process, stages).await?;
        }
        (ingest, process) => {
            if let Some(options) = ingest {
                // A halted partition or a gap still lets process publish what
                // did land; the data problem is reported (and exits 3) either way.
                stages.push(stage::run(loaded, &options).await?);
            }
            if let Some(options) = process {
                // Once per route, with routes: each report is pushed as it completes.
                for options in crate::process::each_unit(loaded, &options) {
                    stages.push(stage::run(loaded, &options).await?);
                }
            }
        }
    }
    if job == Job::Curate || (job == Job::Run && p.curate.as_ref().is_some_and(|c| !c.tables.is_empty())) {
        let options = CurateOptions {
            dry_run: request.dry_run,
            run_id: run_id.to_string(),
            full_refresh: request.full_refresh,
            only: request.tables.clone(),
        };
        stages.push(stage::run(loaded, &options).await?);
    }
    if job == Job::Maintain {
        let options = MaintainOptions {
            dry_run: request.dry_run,
            force: request.force,
            run_id: run_id.to_string(),
            only: request.tables.clone(),
            release_leases: request.release_leases.clone(),
        };
        stages.push(stage::run(loaded, &options).await?);
    }
    Ok(())
}

/// Ingest and process at once (`weir run`): process starts on ingest's
/// first commit and takes each raw version's rows from memory as ingest
/// commits it ([`AppendFeed`]), so both cores stay busy and raw's files
/// are not read back. Raw is written and every progress marker committed
/// exactly as when the stages run one after the other.
///
/// Ingest finding nothing new: process then runs alone on what raw holds.
/// Ingest failing: process still finishes the versions ingest committed
/// (they are raw's), and the run reports ingest's error; before any commit,
/// process does not run, as after a failed stage.
async fn ingest_and_process(
    loaded: &LoadedPipeline,
    ingest: IngestOptions,
    process: ProcessOptions,
    stages: &mut Vec<StageReport>,
) -> Result<()> {
    // About one commit waits for process while it works on another.
    let feed = AppendFeed::new(loaded.pipeline.ingest.commit_memory_mb.saturating_mul(1024 * 1024));
    let ingest = IngestOptions { feed: Some(feed.clone()), ..ingest };
    let follower = {
        let (loaded, feed) = (loaded.clone(), feed.clone());
        let process = ProcessOptions { follow: Some(feed.clone()), ..process.clone() };
        tokio::spawn(async move {
            let _end = feed.detach_on_drop();
            // The raw table may not exist before ingest's first commit.
            feed.started().await?;
            Some(stage::run(&loaded, &process).await)
        })
    };
    let ingested = {
        let _end = feed.close_on_drop();
        stage::run(loaded, &ingest).await
    };
    let followed = follower.await.map_err(|e| Error::Internal(format!("the process stage of the run stopped: {e}")))?;
    let ingest_error = match ingested {
        Ok(report) => {
            stages.push(report);
            None
        }
        Err(e) => Some(e),
    };
    match followed {
        Some(processed) => stages.push(processed?),
        None if ingest_error.is_none() => stages.push(stage::run(loaded, &process).await?),
        None => {}
    }
    ingest_error.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::exit;
    use crate::ErrorClass;

    #[test]
    fn every_error_class_has_its_exit_code() {
        assert_eq!(exit::of(ErrorClass::Config), 2);
        assert_eq!(exit::of(ErrorClass::Data), 3);
        assert_eq!(exit::of(ErrorClass::Retryable), 75);
        assert_eq!(exit::of(ErrorClass::Internal), 1);
    }
}
