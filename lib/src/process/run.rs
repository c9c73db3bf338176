//! One run of the stage: the raw versions no output table holds yet, cut
//! into ranges, each read, evaluated, deduplicated and committed to the
//! tables that lack it.

use chrono::{DateTime, Utc};
use deltalake::arrow::array::RecordBatch;
use deltalake::DeltaTable;

use super::background::Background;
use super::duplicates::{drop_duplicates, Deduplicated, KeptRows, StoredKeys};
use super::evaluate::{evaluate, Evaluated};
use super::metrics::{merge_rules, metrics_batch, RuleFigures};
use super::output::{record_unpublished, start_commits, Output, Outputs, RangeCommits};
use super::read::{read_handed_over, read_raw};
use super::route::split;
use super::select::rows_after;
use super::{Compiled, ProcessOptions};
use crate::expectations::Action;
use crate::lake::contract::{quarantine_schema, ROUTE_RULE};
use crate::lake::feed::AppendFeed;
use crate::pipeline::RouteBy;
use crate::report::{QualityReport, RuleVerdict, StageReport};
use crate::Result;
use deltalake::arrow::compute::concat_batches;

/// A range of raw versions `from..=to` processed and committed as one, and
/// the time stamped on what it writes.
#[derive(Debug, Clone, Copy)]
pub(super) struct RawRange {
    pub(super) from: u64,
    pub(super) to: u64,
    pub(super) now: DateTime<Utc>,
}

/// The first raw version some output table lacks, from their markers (-1:
/// none yet).
pub(super) fn first_missing(markers: &[i64]) -> u64 {
    (markers.iter().copied().min().unwrap_or(-1) + 1) as u64
}

/// How the raw versions a run processes are cut into ranges.
pub(super) struct Ranges {
    /// Each output table's progress marker (-1: none yet).
    markers: Vec<i64>,
    /// The last raw version to process (the raw table's version when
    /// planned; later ones as a followed ingest commits them).
    latest: u64,
    /// Raw versions per commit, at most.
    step: u64,
    /// The first raw version not processed yet.
    next: u64,
}

impl Ranges {
    pub(super) fn new(outputs: &Outputs, latest: u64, step: u64) -> Ranges {
        let markers: Vec<i64> = outputs.all().iter().map(|o| o.progress.unwrap_or(-1)).collect();
        let next = first_missing(&markers);
        Ranges { markers, latest, step, next }
    }

    /// The last version of the range that starts at `from`.
    ///
    /// A range never crosses a table's marker: the range an interrupted run
    /// committed to one table is recomputed exactly for the others, even
    /// when the raw table has grown since.
    fn end(&self, from: u64) -> u64 {
        self.markers
            .iter()
            .filter(|&&m| m >= from as i64)
            .map(|&m| m as u64)
            .fold((from + self.step - 1).min(self.latest), u64::min)
    }
}

/// A run under way: its report so far, the stored dedup keys, and the
/// output tables behind their writer.
pub(super) struct Run<'a> {
    plan: &'a Compiled,
    options: &'a ProcessOptions,
    app_id: String,
    report: StageReport,
    quality: QualityReport,
    stored: Option<StoredKeys>,
    /// The previous range's writes land while this range is read and
    /// checked. The next range is not read ahead: with both cores busy it
    /// gained nothing, and held a range of raw rows (~0.1 GB at 1M events
    /// and 10M).
    outs: Background<Outputs>,
}

impl<'a> Run<'a> {
    pub(super) fn new(
        plan: &'a Compiled,
        options: &'a ProcessOptions,
        app_id: String,
        report: StageReport,
        outputs: Outputs,
    ) -> Run<'a> {
        let quality = QualityReport::default();
        Run { plan, options, app_id, report, quality, stored: None, outs: Background::new(outputs) }
    }

    /// Processes the ranges in order up to `ranges.latest`; `false` when a
    /// `fail` rule stopped a range.
    async fn all(&mut self, raw: &mut DeltaTable, ranges: &mut Ranges, feed: Option<&AppendFeed>) -> Result<bool> {
        while ranges.next <= ranges.latest {
            let range = RawRange { from: ranges.next, to: ranges.end(ranges.next), now: Utc::now() };
            if !self.range(raw, range, feed).await? {
                return Ok(false);
            }
            ranges.next = range.to + 1;
        }
        Ok(true)
    }

    /// Processes the planned ranges, then, following `feed`, every raw
    /// version it announces until it closes. Stops at the first range a
    /// `fail` rule stops.
    pub(super) async fn follow(
        &mut self,
        mut raw: DeltaTable,
        ranges: &mut Ranges,
        feed: Option<&AppendFeed>,
    ) -> Result<()> {
        if !self.all(&mut raw, ranges, feed).await? {
            return Ok(());
        }
        let Some(feed) = feed else { return Ok(()) };
        while let Some(latest) = feed.newer_than(ranges.latest).await {
            ranges.latest = latest;
            if !self.all(&mut raw, ranges, Some(feed)).await? {
                break;
            }
        }
        Ok(())
    }

    /// Waits for the writes in flight, whatever their outcome.
    pub(super) async fn settle(&mut self) {
        self.outs.settle().await;
    }

    /// The run's report, once every write has landed.
    pub(super) async fn finish(mut self) -> Result<StageReport> {
        let o = self.outs.get().await?;
        self.report.tables = o.all().into_iter().map(Output::report).collect();
        self.report.quality = Some(self.quality);
        Ok(self.report)
    }

    /// Processes one range; `false` when a `fail` rule stopped the run.
    async fn range(&mut self, raw: &mut DeltaTable, range: RawRange, feed: Option<&AppendFeed>) -> Result<bool> {
        let property = match self.plan.routing.as_ref().map(|r| &r.by) {
            Some(RouteBy::Property(key)) => Some(key.as_str()),
            _ => None,
        };
        let envelopes = self.plan.framing.reads_properties();
        let rows = match feed.and_then(|f| f.take(range.from, range.to)) {
            Some(handed) => {
                let rows = read_handed_over(handed, envelopes, property)?;
                self.report.events_from_ingest += rows.iter().map(RecordBatch::num_rows).sum::<usize>() as u64;
                rows
            }
            None => {
                // Versions committed after the plan (a followed ingest, or
                // another writer between its commits) are past the snapshot.
                if raw.version().is_none_or(|v| v < range.to) {
                    raw.load_version(range.to as _).await.map_err(|e| crate::Error::delta(raw.table_url(), e))?;
                }
                read_raw(raw, range.from, range.to, envelopes, property).await?
            }
        };
        let (rows, unrouted) = self.route(rows, &range)?;
        // A route counts the events it takes (and the first one those no
        // route takes): over the routes, every event once.
        let read = rows.iter().map(RecordBatch::num_rows).sum::<usize>()
            + unrouted.as_ref().map_or(0, |(u, _, _)| u.num_rows());
        self.report.events_read += read as u64;
        let mut ev = evaluate(self.plan, rows, &self.options.run_id, range.now)?;
        if let Some((rows, versions, figures)) = unrouted {
            ev.rules.insert(0, figures);
            ev.quarantine = concat_batches(&quarantine_schema(), [&rows, &ev.quarantine])
                .map_err(|e| crate::Error::Internal(format!("quarantine rows: {e}")))?;
            ev.quarantine_versions.splice(0..0, versions);
        }
        self.report.problems.extend(ev.warnings.iter().cloned());
        if !ev.failures.is_empty() {
            self.stop(&ev, &range).await?;
            return Ok(false);
        }
        let Evaluated { kept, kept_versions, quarantine, quarantine_versions, dropped, mut rules, .. } = ev;
        let mut unique =
            self.deduplicate(KeptRows { batches: kept, versions: kept_versions, hashes: Vec::new() }).await?;
        rules.extend(unique.figures.take());
        merge_rules(&mut self.quality, &rules);
        self.quality.events_quarantined += quarantine.num_rows() as u64;
        self.quality.events_dropped += dropped;
        // A range without rows records progress but no figures.
        let figures = if read == 0 { &[][..] } else { &rules };
        let commits = self.lacking(range, &quarantine, &quarantine_versions, unique, figures).await?;
        if !self.options.dry_run {
            start_commits(&mut self.outs, self.plan, &self.options.run_id, &self.app_id, commits);
        }
        Ok(true)
    }

    /// With routes: the rows this route takes, and (for the first route)
    /// the quarantine rows of the events no route takes, their raw
    /// versions and the `route` rule's figures.
    #[allow(clippy::type_complexity)]
    fn route(
        &self,
        rows: Vec<RecordBatch>,
        range: &RawRange,
    ) -> Result<(Vec<RecordBatch>, Option<(RecordBatch, Vec<i64>, RuleFigures)>)> {
        let Some(routing) = &self.plan.routing else { return Ok((rows, None)) };
        let all: usize = rows.iter().map(RecordBatch::num_rows).sum();
        let split = split(self.plan, routing, rows, &self.options.run_id, range.now)?;
        if !routing.takes_unrouted {
            return Ok((split.taken, None));
        }
        let failed = split.unrouted.num_rows();
        let figures = RuleFigures {
            rule: ROUTE_RULE.to_string(),
            expression: None,
            action: Action::Quarantine,
            checked: all as u64,
            failed: failed as u64,
            max_failure_rate: None,
            outcome: if failed == 0 { RuleVerdict::Passed } else { RuleVerdict::Quarantined },
        };
        Ok((split.taken, Some((split.unrouted, split.unrouted_versions, figures))))
    }

    /// Records a range a `fail` rule stopped: its figures and problems,
    /// and its metrics rows without a progress marker (not in a dry run).
    async fn stop(&mut self, ev: &Evaluated, range: &RawRange) -> Result<()> {
        merge_rules(&mut self.quality, &ev.rules);
        self.report.problems.extend(ev.failures.iter().cloned());
        if let (Some(m), false) = (self.outs.get().await?.metrics.as_mut(), self.options.dry_run) {
            record_unpublished(m, self.plan, &self.options.run_id, range, &ev.rules).await?;
        }
        tracing::warn!(from = range.from, to = range.to, "a fail rule fired: nothing of this range is published");
        Ok(())
    }

    /// Drops the duplicates of a range's kept rows (over the whole range,
    /// so a repair run counts what the original run counted).
    async fn deduplicate(&mut self, kept: KeptRows) -> Result<Deduplicated> {
        let plan = self.plan;
        let Some(d) = &plan.dedup else { return Ok(Deduplicated::without_dedup(kept)) };
        let unique = drop_duplicates(d, kept, &mut self.stored, &mut self.outs).await?;
        self.quality.duplicates_dropped += unique.duplicates;
        self.quality.already_written += unique.already_written;
        Ok(unique)
    }

    /// What each table lacks of `range`, once the previous range's writes
    /// are in (a failed write stops the run here): all of it, or after an
    /// interrupted run only the rows from raw versions past its marker.
    /// The processed rows are counted as written and their keys join the
    /// stored ones.
    async fn lacking(
        &mut self,
        range: RawRange,
        quarantine: &RecordBatch,
        quarantine_versions: &[i64],
        unique: Deduplicated,
        figures: &[RuleFigures],
    ) -> Result<RangeCommits> {
        let to = range.to;
        let o = self.outs.get().await?;
        let quarantine = match o.quarantine.needs(to) {
            true => Some(rows_after(quarantine, quarantine_versions, o.quarantine.progress)?),
            false => None,
        };
        let processed = match o.processed.needs(to) {
            true => Some(unique.kept.after(o.processed.progress)?),
            false => None,
        };
        let metrics = match o.metrics.as_ref().is_some_and(|m| m.needs(to)) {
            true => Some(metrics_batch(self.plan, &self.options.run_id, &range, figures, true)?),
            false => None,
        };
        if let Some(rows) = &processed {
            self.report.events_written += rows.num_rows() as u64;
            if let (Some(d), Some(keys)) = (&self.plan.dedup, self.stored.as_mut()) {
                keys.remember(d, rows)?;
            }
        }
        let (replacing, merge_from) = (unique.replacing, unique.merge_from);
        Ok(RangeCommits { range, quarantine, processed: processed.map(|k| k.batches), metrics, replacing, merge_from })
    }
}
