//! The process stage: raw table → processed, quarantine and quality-metrics
//! tables.
//!
//! Per run: read the raw rows added since the version last consumed (the
//! versions' added files, or the change feed for a version that did more
//! than append), parse each body by the pipeline's `.avsc` ([`crate::body`]), check the
//! expectations ([`crate::expectations`]), apply the PII rules
//! ([`crate::pii`]), drop duplicates ([`crate::dedup`]) and append.
//!
//! Exactly once without multi-table transactions: each of the three output
//! tables carries its own application transaction `weir/<pipeline>/process`
//! whose version is the last raw version it holds the output of, committed
//! with its rows. A run starts at the oldest of the three, recomputes that
//! range (the stage is deterministic) and writes to each table only what it
//! lacks; a crash between two commits is repaired by the next run. A range
//! whose output for a table is empty still commits the marker alone.
//!
//! Work is cut into commits of at most `raw_versions_per_commit` raw
//! versions. A `fail` rule stops the run at the first commit holding a
//! failing row; nothing of that range is published (the metrics table still
//! records the failure, without a progress marker).
//!
//! Within `weir run` the stage follows ingest ([`ProcessOptions::follow`]):
//! it starts on ingest's first raw commit and takes each raw version's rows
//! from memory as ingest commits them; ranges and markers are the same.
//!
//! Hazard: dedup against the table only looks back `dedup.lookback_days` of
//! event dates; a re-send older than that is written again.

mod background;
mod compiled;
mod duplicates;
mod evaluate;
mod metrics;
mod output;
mod read;
mod route;
mod run;
mod schema;
mod select;
#[cfg(test)]
mod tests;

pub use compiled::Compiled;
pub use schema::check_table_schema;

use crate::delta;
use crate::lake::feed::AppendFeed;
use crate::lake::refresh::{Catchup, Definition};
use crate::pipeline::LoadedPipeline;
use crate::report::plan::SourcePlan;
use crate::report::{Stage, StageReport};
use crate::stage::StageWork;
use crate::{Error, Result};
use output::Outputs;
use run::{Ranges, Run};

/// Options of one process run.
#[derive(Debug, Clone, Default)]
pub struct ProcessOptions {
    /// Compute and report, write nothing.
    pub dry_run: bool,
    /// Stored in every row written.
    pub run_id: String,
    /// With `process.routes`: the route this run processes (a pipeline
    /// with routes runs the stage once per route, see [`each_unit`]).
    pub route: Option<String>,
    /// Follow an ingest running beside this run (`weir run`): once the
    /// planned versions are done, process each raw version the feed
    /// announces, taking its rows from the feed when it holds them, until
    /// the feed closes. The caller detaches it when this run returns.
    pub follow: Option<AppendFeed>,
}

/// Runs the process stage: plans it, then executes the plan.
pub async fn process(loaded: &LoadedPipeline, options: &ProcessOptions) -> Result<StageReport> {
    crate::stage::run(loaded, options).await
}

/// The runs the process stage makes of `options`: one per route, in
/// declaration order, or `options` itself for a pipeline without routes
/// (and for one without `process:`, whose run says what is missing).
pub fn each_unit(loaded: &LoadedPipeline, options: &ProcessOptions) -> Vec<ProcessOptions> {
    match loaded.routes() {
        None => vec![options.clone()],
        Some(routes) => {
            routes.types.iter().map(|r| ProcessOptions { route: Some(r.name.clone()), ..options.clone() }).collect()
        }
    }
}

/// Runs the process stage for every unit ([`each_unit`]) in order; the
/// first failing one stops the rest.
pub async fn process_all(loaded: &LoadedPipeline, options: &ProcessOptions) -> Result<Vec<StageReport>> {
    let mut reports = Vec::new();
    for unit in each_unit(loaded, options) {
        reports.push(process(loaded, &unit).await?);
    }
    Ok(reports)
}

/// What planning a process run found: the raw table and the versions to
/// read.
pub struct Pending {
    raw: Option<deltalake::DeltaTable>,
    plan: SourcePlan,
}

impl StageWork for ProcessOptions {
    type Plan = Pending;
    type Summary = SourcePlan;

    fn dry_run(&self) -> bool {
        self.dry_run
    }

    /// The raw versions the run reads, as it takes them: from the first one
    /// some output table lacks (after a crash between commits, the table
    /// furthest behind decides) to the raw table's version now. Reads the
    /// progress markers only: no PII key is needed to plan.
    async fn plan(&self, loaded: &LoadedPipeline) -> Result<Pending> {
        let p = &loaded.pipeline;
        let unit = loaded.process_unit(self.route.as_deref())?;
        let stage = unit.stage();
        let Some(raw) = delta::open(&loaded.location("tables.raw.path")?).await? else {
            let plan = SourcePlan { stage, source: "raw".into(), ..Default::default() };
            return Ok(Pending { raw: None, plan });
        };
        let latest = raw.version().unwrap_or(0);
        let app_id = unit.app_id(&p.name);
        let processed = marker_of(loaded, unit.table.is_some(), &unit.table_key, &app_id).await?.flatten();
        let table_key = |name: &str| format!("tables.{name}.path");
        let quarantine =
            marker_of(loaded, p.tables.quarantine.is_some(), &table_key("quarantine"), &app_id).await?.flatten();
        let metrics = marker_of(loaded, p.tables.quality_metrics.is_some(), &table_key("quality_metrics"), &app_id)
            .await?
            .map(|m| output::metrics_start(m, processed, quarantine));
        let markers: Vec<i64> =
            [Some(processed), Some(quarantine), metrics].into_iter().flatten().map(|m| m.unwrap_or(-1)).collect();
        let from = run::first_missing(&markers);
        let catchup = Catchup {
            target_exists: from > 0,
            marker: (from > 0).then(|| from as i64 - 1),
            source_version: latest,
            incremental: true,
            full_refresh: false,
            definition: Definition::Same,
        };
        let mut plan = SourcePlan::decided(&stage, "raw", &catchup);
        if let (true, Some(from), Some(to)) = (self.dry_run, plan.from_version, plan.to_version) {
            (plan.files, plan.bytes) = delta::added(&raw, from, to).await?;
        }
        Ok(Pending { raw: Some(raw), plan })
    }

    fn describe(plan: &Pending) -> SourcePlan {
        plan.plan.clone()
    }

    /// Compiles the stage (a broken rule or a missing key stops it here),
    /// then processes the planned raw versions.
    async fn execute(&self, loaded: &LoadedPipeline, pending: Pending) -> Result<StageReport> {
        let unit = loaded.process_unit(self.route.as_deref())?;
        let compiled = Compiled::build(loaded, &unit)?;
        let route = unit.route_name().map(str::to_string);
        let report = StageReport { stage: Stage::Process, route, ..Default::default() };
        let Some(raw) = pending.raw else {
            tracing::info!(table = %compiled.tables.raw, "the raw table does not exist yet: nothing to process");
            return Ok(report);
        };
        // Up to the version planned, not a newer one committed since.
        let latest = raw.version().unwrap_or(0);
        let app_id = unit.app_id(&compiled.pipeline);
        let outputs = Outputs::open(&compiled, loaded, &app_id, !self.dry_run).await?;
        let mut ranges = Ranges::new(&outputs, latest, compiled.config.raw_versions_per_commit);
        let mut run = Run::new(&compiled, self, app_id, report, outputs);
        // A failing range must not leave a write in flight: it would land
        // after the run has reported its error.
        if let Err(e) = run.follow(raw, &mut ranges, self.follow.as_ref()).await {
            // The earlier error is the one to report; this only waits.
            run.settle().await;
            return Err(e);
        }
        run.finish().await
    }
}

/// A declared table's marker (its location at `key`): `None` when not
/// declared, `Some(None)` when it has none yet.
async fn marker_of(loaded: &LoadedPipeline, declared: bool, key: &str, app_id: &str) -> Result<Option<Option<i64>>> {
    if !declared {
        return Ok(None);
    }
    Ok(Some(match delta::open(&loaded.location(key)?).await? {
        Some(t) => delta::progress(&t, app_id).await?,
        None => None,
    }))
}

/// An Arrow error as an internal error, with what was being built.
fn arrow_err(context: &str) -> impl Fn(deltalake::arrow::error::ArrowError) -> Error + '_ {
    move |e| Error::Internal(format!("{context}: {e}"))
}
