//! The shape every stage has: plan, then execute.
//!
//! A stage's options ([`crate::ingest::IngestOptions`] and the others) are
//! the stage: [`StageWork::plan`] reads progress markers, listings and
//! table versions and decides what the run will read and write and why,
//! writing nothing; [`StageWork::execute`] does exactly that plan and
//! returns the stage's figures. [`run`] is the one place that times a
//! stage and puts its plan into a dry run's report, and `weir plan` prints
//! the same [`StagePlan`]s, so a plan and its run cannot disagree.
//!
//! Hazard: a plan is a snapshot. Execution reads no version newer than the
//! plan's (a commit landing between the two waits for the next run), with
//! one exception a stage documents: curated models that read a table the
//! same run wrote earlier are planned again after that write.

use std::future::Future;
use std::time::Instant;

use crate::pipeline::LoadedPipeline;
use crate::report::plan::StagePlan;
use crate::report::StageReport;
use crate::Result;

/// A stage: its options, able to plan and then execute a run.
pub trait StageWork {
    /// What planning found, with what execution needs to carry it out
    /// (open tables, file lists).
    type Plan;

    /// The plan as reports and `weir plan` print it.
    type Summary: Into<StagePlan>;

    /// Whether this is a dry run (everything computed, nothing written).
    fn dry_run(&self) -> bool;

    /// Decides what the run reads and writes. Writes nothing.
    fn plan(&self, loaded: &LoadedPipeline) -> impl Future<Output = Result<Self::Plan>>;

    /// The plan's summary.
    fn describe(plan: &Self::Plan) -> Self::Summary;

    /// Carries the plan out (on a dry run, computes and writes nothing).
    fn execute(&self, loaded: &LoadedPipeline, plan: Self::Plan) -> impl Future<Output = Result<StageReport>>;
}

/// Plans and executes one stage, timed; a dry run's report carries the plan.
pub async fn run<S: StageWork + Sync>(loaded: &LoadedPipeline, stage: &S) -> Result<StageReport> {
    let started = Instant::now();
    let plan = stage.plan(loaded).await?;
    let described = stage.dry_run().then(|| S::describe(&plan).into());
    let mut report = stage.execute(loaded, plan).await?;
    report.plan = described;
    report.duration_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// A stage's plan alone, as `weir plan` prints it.
pub async fn plan<S: StageWork + Sync>(loaded: &LoadedPipeline, stage: &S) -> Result<S::Summary> {
    Ok(S::describe(&stage.plan(loaded).await?))
}
