//! The maintain job: row retention, compaction or z-order, vacuum and
//! checkpoints, per table, with a dry run that changes nothing.
//!
//! Per table, in this order:
//! 1. **retention** — a Delta delete of rows older than the declared age.
//! 2. **optimize** — bin-packing of files smaller than the target size, or
//!    z-order by the configured columns. Only partitions that need it are
//!    rewritten: compaction skips partitions without two small files,
//!    z-order partitions holding a single file, and partitions it clustered
//!    before until the files written since warrant it ([`clustered`]).
//! 3. **vacuum** — full mode: every file under the table that the current
//!    version does not reference and that is older than the retention is
//!    deleted, orphans and change-feed files included (lite mode leaves
//!    them). A retention below the table's `delta.deletedFileRetentionDuration`
//!    is refused unless forced: readers and writers on older versions would
//!    lose files under them.
//! 4. **checkpoint** — a checkpoint of the current version (when it has none)
//!    and removal of log files past the table's log retention.
//!
//! Beside other jobs: compaction, z-order and vacuum never change rows.
//! Delta's conflict check lets an append (ingest, process) commit beside a
//! compaction; a merge or delete that read a file a compaction removed
//! loses its commit and exits with the retryable code, and its rerun
//! re-plans on the new files. Nothing is lost or written twice either way,
//! because every stage commits its rows and its progress marker together.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use deltalake::datafusion::common::ScalarValue;
use deltalake::datafusion::prelude::{col, lit, Expr};
use deltalake::kernel::transaction::CommitProperties;
use deltalake::operations::optimize::OptimizeType;
use deltalake::operations::vacuum::VacuumMode;
use deltalake::table::config::TablePropertiesExt as _;
use deltalake::DeltaTable;
use futures::TryStreamExt as _;
use object_store::ObjectStoreExt as _;

use crate::lake::commit::{self, CommitInfo};
use crate::pipeline::{RowRetention, TablePolicy};

use crate::pipeline::LoadedPipeline;
use crate::report::plan::MaintainPlan;
use crate::report::{ActionKind, ActionOutcome, MaintenanceAction, Stage, StageReport};
use crate::stage::StageWork;
use crate::storage::Location;
use crate::{delta, Error, Result};

mod clustered;
use clustered::{partition_key, Clustered};

/// Options of one maintain run.
#[derive(Debug, Clone, Default)]
pub struct MaintainOptions {
    /// Report what would change, change nothing.
    pub dry_run: bool,
    /// Allow a vacuum retention below the table's safety window.
    pub force: bool,
    /// Stored in the commit metadata.
    pub run_id: String,
    /// Only these tables (empty: all).
    pub only: Vec<String>,
    /// Only give back the rewrite leases held on the tables, for this
    /// reason (recorded with the commit).
    pub release_leases: Option<String>,
}

/// A table to maintain and its resolved policy.
struct Target {
    /// The pipeline, for problems that name a key of its file.
    loaded: LoadedPipeline,
    pipeline: String,
    name: String,
    location: Location,
    policy: TablePolicy,
    target_size: u64,
    vacuum_hours: u64,
    /// `maintain.zorder_new_percent`.
    zorder_new_percent: u64,
    /// `maintain.memory_mb`, in bytes.
    memory: usize,
}

/// Every table written, as (name, key path of its location, z-order columns).
fn table_names(loaded: &LoadedPipeline) -> Vec<(String, String, Option<Vec<String>>)> {
    let curated = loaded.pipeline.curate.iter().flat_map(|c| &c.tables);
    let zorder = |name: &str| {
        curated.clone().find(|c| c.name == name).filter(|c| !c.zorder_by.is_empty()).map(|c| c.zorder_by.clone())
    };
    loaded
        .tables_written()
        .into_iter()
        // Only curated tables z-order.
        .map(|t| {
            let z = if t.key.starts_with("curate.") { zorder(&t.name) } else { None };
            (t.name, t.key, z)
        })
        .collect()
}

/// Checks the policies against the tables that exist: retention and z-order
/// columns must be columns of the table, as (key path, message).
pub async fn check_tables(loaded: &LoadedPipeline) -> Result<Vec<(String, String)>> {
    if loaded.pipeline.maintain.is_none() {
        return Ok(vec![]);
    }
    let mut problems = Vec::new();
    for t in targets(loaded, &MaintainOptions::default())? {
        let Some(table) = delta::open(&t.location).await? else { continue };
        let schema = delta::arrow_schema(&table)?;
        let columns = || schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ");
        if let Some(r) = &t.policy.retention {
            if schema.field_with_name(&r.column).is_err() {
                problems.push((
                    format!("maintain.tables.{}.retention.column", t.name),
                    format!("{:?} is not a column of the table ({})", r.column, columns()),
                ));
            }
        }
        for c in t.policy.zorder_by.iter().flatten() {
            if schema.field_with_name(c).is_err() {
                problems.push((
                    format!("maintain.tables.{}.zorder_by", t.name),
                    format!("{c:?} is not a column of the table ({})", columns()),
                ));
            }
        }
    }
    Ok(problems)
}

fn targets(loaded: &LoadedPipeline, options: &MaintainOptions) -> Result<Vec<Target>> {
    let config = loaded.pipeline.maintain.clone().unwrap_or_default();
    let all = table_names(loaded);
    for name in &options.only {
        if !all.iter().any(|(n, _, _)| n == name) {
            return Err(loaded.invalid("tables", format!("no table named {name:?}")));
        }
    }
    all.into_iter()
        .filter(|(n, _, _)| options.only.is_empty() || options.only.contains(n))
        .map(|(name, key, curated_zorder)| {
            let mut policy = config.tables.get(&name).cloned().unwrap_or_default();
            if policy.zorder_by.is_none() {
                policy.zorder_by = curated_zorder;
            }
            let location = loaded.location(&key)?;
            Ok(Target {
                loaded: loaded.clone(),
                pipeline: loaded.pipeline.name.clone(),
                target_size: policy.target_file_size_mb.unwrap_or(config.target_file_size_mb) * 1024 * 1024,
                vacuum_hours: policy.vacuum_retention_hours.unwrap_or(config.vacuum_retention_hours),
                zorder_new_percent: config.zorder_new_percent,
                memory: usize::try_from(config.memory_mb.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX),
                name,
                location,
                policy,
            })
        })
        .collect()
}

/// Runs the maintain job: plans it, then executes the plan.
pub async fn maintain(loaded: &LoadedPipeline, options: &MaintainOptions) -> Result<StageReport> {
    crate::stage::run(loaded, options).await
}

/// What planning a maintain run found: each selected table with its
/// policy, opened (`None`: it does not exist yet, nothing to do).
pub struct Planned {
    tables: Vec<(Target, Option<DeltaTable>)>,
    /// Only leases are released (`--release-leases`).
    release: bool,
}

impl StageWork for MaintainOptions {
    type Plan = Planned;
    type Summary = Vec<MaintainPlan>;

    fn dry_run(&self) -> bool {
        self.dry_run
    }

    /// Resolves each table's policy and opens it; refuses an unsafe vacuum
    /// setting before anything is touched.
    async fn plan(&self, loaded: &LoadedPipeline) -> Result<Planned> {
        let mut tables = Vec::new();
        for t in targets(loaded, self)? {
            let table = delta::open(&t.location).await?;
            if let (Some(table), true, false, None) = (&table, t.policy.vacuum, self.force, &self.release_leases) {
                check_vacuum_window(&t, table)?;
            }
            tables.push((t, table));
        }
        Ok(Planned { tables, release: self.release_leases.is_some() })
    }

    fn describe(plan: &Planned) -> Vec<MaintainPlan> {
        plan.tables
            .iter()
            .map(|(t, table)| MaintainPlan {
                table: t.name.clone(),
                location: t.location.to_string(),
                version: table.as_ref().and_then(|t| t.version()),
                actions: if plan.release { vec![ActionKind::ReleaseLease] } else { t.actions() },
                vacuum_retention_hours: t.policy.vacuum.then_some(t.vacuum_hours),
            })
            .collect()
    }

    async fn execute(&self, _loaded: &LoadedPipeline, plan: Planned) -> Result<StageReport> {
        let mut report = StageReport { stage: Stage::Maintain, ..Default::default() };
        for (t, table) in plan.tables {
            let Some(table) = table else {
                tracing::info!(table = %t.name, "the table does not exist yet: nothing to maintain");
                continue;
            };
            let actions = match &self.release_leases {
                Some(reason) => vec![release_lease(&t, table, self, reason).await?],
                None => maintain_table(&t, table, self).await?,
            };
            report.tables.push(crate::report::TableWrite {
                table: t.name.clone(),
                location: t.location.to_string(),
                version_before: None,
                versions_written: actions.iter().filter_map(|a| a.version).collect(),
            });
            report.maintenance.extend(actions);
        }
        Ok(report)
    }
}

impl Target {
    /// The actions the policy enables, in the order they run.
    fn actions(&self) -> Vec<ActionKind> {
        let zorder = self.policy.zorder_by.as_ref().is_some_and(|z| !z.is_empty());
        [
            (self.policy.retention.is_some(), ActionKind::Retention),
            (self.policy.optimize && !zorder, ActionKind::Optimize),
            (self.policy.optimize && zorder, ActionKind::Zorder),
            (self.policy.vacuum, ActionKind::Vacuum),
            (self.policy.checkpoint, ActionKind::Checkpoint),
        ]
        .into_iter()
        .filter_map(|(on, kind)| on.then_some(kind))
        .collect()
    }
}

/// A vacuum retention below the table's `delta.deletedFileRetentionDuration`
/// is refused: a reader or writer on a version from that window would find
/// its files gone.
fn check_vacuum_window(t: &Target, table: &DeltaTable) -> Result<()> {
    let window =
        table.snapshot().map_err(|e| Error::delta(&t.location, e))?.table_config().deleted_file_retention_duration();
    if t.vacuum_hours * 3600 >= window.as_secs() {
        return Ok(());
    }
    Err(Error::UnsafeVacuum {
        table: t.name.clone(),
        message: format!(
            "vacuum retention {} h is below the table's safety window of {} h (delta.deletedFileRetentionDuration): a reader or writer still on a version from that window would find its files gone. Raise the retention, or pass --force to vacuum anyway",
            t.vacuum_hours,
            window.as_secs() / 3600
        ),
    })
}

fn commit(t: &Target, options: &MaintainOptions, action: &str) -> CommitProperties {
    let properties = CommitProperties::default().with_metadata(
        CommitInfo::new(&t.pipeline, "maintain", &options.run_id).with(commit::ACTION, action).into_map(),
    );
    // Retention deletes exclude merges and each other; optimize drops
    // application transactions, so the lease covers it.
    if action == "retention" {
        properties.with_application_transactions(vec![delta::rewrite_marker()])
    } else {
        properties
    }
}

/// How long a maintain run holds a table's rewrite lease before it must
/// have given it back; a crashed run frees the table after this.
const LEASE: std::time::Duration = std::time::Duration::from_secs(3600);

fn lease_metadata(t: &Target, options: &MaintainOptions, what: &str) -> HashMap<String, serde_json::Value> {
    CommitInfo::new(&t.pipeline, "maintain", &options.run_id).with(commit::ACTION, what).into_map()
}

/// A lost commit race as the retryable error, anything else as it is.
fn commit_error(location: &Location, e: deltalake::DeltaTableError) -> Error {
    if delta::is_commit_conflict(&e) {
        Error::ConcurrentProgress { table: location.to_string(), app_id: delta::REWRITE_APP_ID.to_string() }
    } else {
        Error::delta(location, e)
    }
}

async fn maintain_table(
    t: &Target,
    mut table: DeltaTable,
    options: &MaintainOptions,
) -> Result<Vec<MaintenanceAction>> {
    let mut out = Vec::new();
    // The lease costs two commits: take it only when a dry pass finds rows
    // to delete or files to rewrite.
    let mut rewrites = false;
    if !options.dry_run {
        let probe = MaintainOptions { dry_run: true, ..options.clone() };
        if let Some(r) = &t.policy.retention {
            rewrites |= retention(t, table.clone(), r, &probe).await?.1.outcome == ActionOutcome::Planned;
        }
        if t.policy.optimize && !rewrites {
            rewrites |= optimize(t, table.clone(), &probe).await?.1.outcome == ActionOutcome::Planned;
        }
    }
    if rewrites {
        table = delta::claim_rewrite_lease(table, LEASE, lease_metadata(t, options, "lease")).await?;
        crate::lake::fault::pause_point("maintain_holding_lease");
        crate::lake::fault::fault_point("maintain_holding_lease");
    }
    let result = async {
        if let Some(r) = &t.policy.retention {
            let (next, action) = timed(retention(t, table, r, options)).await?;
            table = next;
            out.push(action);
        }
        if t.policy.optimize {
            let (next, action) = timed(optimize(t, table, options)).await?;
            table = next;
            out.push(action);
        }
        Ok::<_, Error>(table)
    }
    .await;
    let mut table = match result {
        Ok(table) => table,
        Err(e) => {
            // Give the lease back on the way out, so the failure (not the
            // lease) is what the next runs see.
            if rewrites {
                if let Ok(Some(t2)) = delta::open(&t.location).await {
                    let _ = delta::release_rewrite_lease(t2, lease_metadata(t, options, "release")).await;
                }
            }
            return Err(e);
        }
    };
    if rewrites {
        table = delta::release_rewrite_lease(table, lease_metadata(t, options, "release")).await?;
    }
    if t.policy.vacuum {
        let (next, action) = timed(vacuum(t, table, options)).await?;
        table = next;
        out.push(action);
    }
    if t.policy.checkpoint {
        out.push(timed(checkpoint(t, table, options)).await?.1);
    }
    Ok(out)
}

/// Gives back a rewrite lease left on the table, recording `reason` and
/// the holder with the commit; skipped when the table is free.
async fn release_lease(
    t: &Target,
    table: DeltaTable,
    options: &MaintainOptions,
    reason: &str,
) -> Result<MaintenanceAction> {
    let mut a = action(t, ActionKind::ReleaseLease, (0, 0));
    let Some(held) = delta::held_lease(&table).await? else {
        a.detail = "no lease held".into();
        return Ok(a.ended(ActionOutcome::Skipped));
    };
    a.detail = format!("lease of {held} released: {reason}");
    if options.dry_run {
        return Ok(a.ended(ActionOutcome::Planned));
    }
    tracing::warn!(table = %t.name, holder = %held, reason, "releasing a rewrite lease");
    let metadata = CommitInfo::new(&t.pipeline, "maintain", &options.run_id)
        .with(commit::ACTION, "release_lease")
        .with("weir.reason", reason.to_string())
        .with("weir.released_holder", held.to_string())
        .into_map();
    let table = delta::release_rewrite_lease(table, metadata).await?;
    a.version = table.version();
    Ok(a.ended(ActionOutcome::Done))
}

/// Runs one action and stamps its wall time on it.
async fn timed(
    action: impl Future<Output = Result<(DeltaTable, MaintenanceAction)>>,
) -> Result<(DeltaTable, MaintenanceAction)> {
    let started = Instant::now();
    let (table, mut a) = action.await?;
    crate::lake::fault::fault_point("maintain_after_action");
    a.duration_ms = started.elapsed().as_millis() as u64;
    Ok((table, a))
}

/// (files, bytes) the current version references.
fn active(table: &DeltaTable) -> Result<(u64, u64)> {
    let snapshot = table.snapshot().map_err(|e| Error::delta(table.table_url(), e))?;
    Ok(snapshot.log_data().iter().fold((0, 0), |(n, b), f| (n + 1, b + f.size() as u64)))
}

/// (files, bytes) stored under the table, outside `_delta_log/`, or inside
/// it with `log = true`.
pub(crate) async fn stored(table: &DeltaTable, log: bool) -> Result<(u64, u64)> {
    let store = table.log_store().object_store(None);
    let prefix = log.then(|| object_store::path::Path::from("_delta_log"));
    let metas: Vec<object_store::ObjectMeta> =
        store.list(prefix.as_ref()).try_collect().await.map_err(|e| Error::storage(table.table_url(), e))?;
    Ok(stored_in(&metas, log))
}

/// [`stored`] over objects already listed.
fn stored_in(metas: &[object_store::ObjectMeta], log: bool) -> (u64, u64) {
    metas
        .iter()
        .filter(|m| m.location.as_ref().starts_with("_delta_log") == log)
        // Weir's own state beside the data.
        .filter(|m| m.location.as_ref().split('/').next() != Some(crate::lake::state::FOLDER))
        .fold((0, 0), |(n, b), m| (n + 1, b + m.size))
}

/// An action that ends before committing: skipped when there is nothing
/// to do, planned on a dry run.
fn nothing_to_commit(nothing: bool, dry_run: bool) -> Option<ActionOutcome> {
    if nothing {
        Some(ActionOutcome::Skipped)
    } else if dry_run {
        Some(ActionOutcome::Planned)
    } else {
        None
    }
}

fn action(t: &Target, kind: ActionKind, before: (u64, u64)) -> MaintenanceAction {
    MaintenanceAction {
        table: t.name.clone(),
        action: kind,
        files_before: before.0,
        bytes_before: before.1,
        files_after: before.0,
        bytes_after: before.1,
        ..Default::default()
    }
}

async fn retention(
    t: &Target,
    table: DeltaTable,
    r: &RowRetention,
    options: &MaintainOptions,
) -> Result<(DeltaTable, MaintenanceAction)> {
    let mut a = action(t, ActionKind::Retention, active(&table)?);
    let cutoff = Utc::now() - chrono::Duration::days(r.days as i64);
    let schema = delta::arrow_schema(&table)?;
    let at = format!("maintain.tables.{}.retention.column", t.name);
    let field = schema
        .field_with_name(&r.column)
        .map_err(|_| t.loaded.invalid(&at, format!("table {} has no column {:?}", t.name, r.column)))?;
    let bound = match field.data_type() {
        deltalake::arrow::datatypes::DataType::Date32 => {
            ScalarValue::Date32(Some((cutoff.timestamp().div_euclid(86_400)) as i32))
        }
        deltalake::arrow::datatypes::DataType::Timestamp(_, tz) => {
            ScalarValue::TimestampMicrosecond(Some(cutoff.timestamp_micros()), tz.clone())
        }
        other => return Err(t.loaded.invalid(&at, format!("{:?} is {other}, not a date or timestamp", r.column))),
    };
    let predicate: Expr = col(format!("\"{}\"", r.column.replace('"', "\"\""))).lt(lit(bound));
    let matching = count_rows(&table, predicate.clone()).await?;
    a.detail = format!("{matching} rows with {} before {}", r.column, cutoff.format("%Y-%m-%d %H:%M UTC"));
    if let Some(outcome) = nothing_to_commit(matching == 0, options.dry_run) {
        return Ok((table, a.ended(outcome)));
    }
    let (table, metrics) = table
        .delete()
        .with_predicate(predicate)
        .with_commit_properties(commit(t, options, "retention"))
        .await
        .map_err(|e| commit_error(&t.location, e))?;
    a.detail =
        format!("{} ({} files rewritten, {} removed)", a.detail, metrics.num_added_files, metrics.num_removed_files);
    (a.files_after, a.bytes_after) = active(&table)?;
    a.version = table.version();
    a.outcome = ActionOutcome::Done;
    Ok((table, a))
}

async fn count_rows(table: &DeltaTable, predicate: Expr) -> Result<u64> {
    let ctx = crate::expectations::session();
    let err = |e: deltalake::datafusion::error::DataFusionError| {
        Error::query(table.table_url(), &e, || Error::Internal(format!("counting rows of {}: {e}", table.table_url())))
    };
    table.update_datafusion_session(&ctx.state()).map_err(|e| Error::delta(table.table_url(), e))?;
    let provider = table.table_provider().await.map_err(err)?;
    let n = ctx.read_table(provider).map_err(err)?.filter(predicate).map_err(err)?.count().await.map_err(err)?;
    Ok(n as u64)
}

/// One partition an optimize would rewrite.
struct PartitionPlan {
    /// (column, value) of the partition.
    values: Vec<(String, Option<String>)>,
    files: u64,
    bytes: u64,
    /// Files the partition's last z-order wrote (z-order only).
    clustered_files: u64,
    /// Bytes of the other files.
    new_bytes: u64,
}

/// Partitions (by their values, rendered) whose files the action rewrites:
/// compaction needs two files under the target size. Z-order needs two
/// files, and once a partition has been z-ordered (`clustered` names the
/// files that wrote), files written since holding at least `new_percent`
/// of its bytes: a few small appends to a large clustered partition wait
/// until they add up. Also returns how many partitions wait so.
fn plan(
    table: &DeltaTable,
    target_size: u64,
    zorder: Option<(&Clustered, u64)>,
) -> Result<(BTreeMap<String, PartitionPlan>, usize)> {
    let snapshot = table.snapshot().map_err(|e| Error::delta(table.table_url(), e))?;
    let mut parts: BTreeMap<String, PartitionPlan> = BTreeMap::new();
    for f in snapshot.log_data().iter() {
        if zorder.is_none() && f.size() as u64 >= target_size {
            continue;
        }
        let mut values: Vec<(String, Option<String>)> = f.partition_values_map().into_iter().collect();
        values.sort();
        let key = partition_key(&values);
        let clustered = zorder.is_some_and(|(c, _)| c.holds(&key, &f.path()));
        let entry = parts.entry(key).or_insert_with(|| PartitionPlan {
            values,
            files: 0,
            bytes: 0,
            clustered_files: 0,
            new_bytes: 0,
        });
        entry.files += 1;
        entry.bytes += f.size() as u64;
        if clustered {
            entry.clustered_files += 1;
        } else {
            entry.new_bytes += f.size() as u64;
        }
    }
    parts.retain(|_, p| p.files >= 2);
    let mut waiting = 0;
    if let Some((_, percent)) = zorder {
        parts.retain(|_, p| {
            let warranted = p.clustered_files == 0 || p.new_bytes * 100 >= percent * p.bytes;
            // Clustered with nothing new: nothing to do, not waiting.
            let current = p.clustered_files > 0 && p.new_bytes == 0;
            waiting += usize::from(!warranted && !current);
            warranted && !current
        });
    }
    Ok((parts, waiting))
}

async fn optimize(t: &Target, table: DeltaTable, options: &MaintainOptions) -> Result<(DeltaTable, MaintenanceAction)> {
    let zorder = t.policy.zorder_by.clone().filter(|z| !z.is_empty());
    let kind = if zorder.is_some() { ActionKind::Zorder } else { ActionKind::Optimize };
    let mut a = action(t, kind, active(&table)?);
    let target = t.target_size.max(1);
    let mut clustered = match &zorder {
        Some(z) => Some(Clustered::load(&table, z).await),
        None => None,
    };
    let (parts, waiting) = plan(&table, target, clustered.as_ref().map(|c| (c, t.zorder_new_percent)))?;
    let files: u64 = parts.values().map(|p| p.files).sum();
    let bytes: u64 = parts.values().map(|p| p.bytes).sum();
    a.detail = format!(
        "{files} files ({bytes} bytes) in {} partitions{}{}{}",
        parts.len(),
        zorder.as_ref().map(|z| format!(", clustered by {}", z.join(", "))).unwrap_or_default(),
        if parts.is_empty() {
            String::new()
        } else {
            format!(": {}", parts.keys().take(10).cloned().collect::<Vec<_>>().join(", "))
        },
        if waiting == 0 {
            String::new()
        } else {
            format!(
                "; {waiting} clustered partitions wait (files added since their last z-order hold less than {}% of them)",
                t.zorder_new_percent
            )
        }
    );
    if let Some(outcome) = nothing_to_commit(parts.is_empty(), options.dry_run) {
        return Ok((table, a.ended(outcome)));
    }
    let partition_columns =
        table.snapshot().map_err(|e| Error::delta(table.table_url(), e))?.metadata().partition_columns().to_vec();
    // Restrict the rewrite to the planned partitions when one column
    // partitions the table (z-order would otherwise rewrite every file).
    let values: Vec<String> = match &partition_columns[..] {
        [_] => parts.values().filter_map(|p| p.values.first().and_then(|(_, v)| v.clone())).collect(),
        _ => vec![],
    };
    let value_refs: Vec<&str> = values.iter().map(String::as_str).collect();
    let filters = match &partition_columns[..] {
        [column] if !value_refs.is_empty() => vec![(
            column.as_str(),
            deltalake::kernel::schema::partitions::FilterOp::In,
            deltalake::kernel::schema::partitions::FilterValue::Set(value_refs.clone()),
        )],
        _ => vec![],
    };
    let mut builder = table
        .optimize()
        .with_target_size(NonZeroU64::new(target).unwrap_or(NonZeroU64::MIN))
        .with_commit_properties(commit(t, options, kind.as_str()))
        .with_filters(&filters);
    if let Some(z) = zorder {
        // The z-order sorts each partition: bounded, it spills. One sort at
        // a time, on one input partition: the merge of several sorted
        // partitions cannot spill, and beside the other sorts' fair shares
        // it found no memory left (processed at 10M events, 512 MiB).
        let mut session = crate::expectations::session_within(t.memory).state();
        session.config_mut().options_mut().execution.target_partitions = 1;
        builder = builder
            .with_type(OptimizeType::ZOrder(z))
            .with_session_state(Arc::new(session))
            .with_max_concurrent_tasks(1);
    }
    let (table, metrics) = builder.await.map_err(|e| commit_error(&t.location, e))?;
    if let (Some(c), Some(v)) = (clustered.as_mut(), table.version()) {
        c.record(&table, v).await;
    }
    a.detail = format!("{}; {} files removed, {} added", a.detail, metrics.num_files_removed, metrics.num_files_added);
    (a.files_after, a.bytes_after) = active(&table)?;
    a.version = table.version();
    a.outcome = ActionOutcome::Done;
    Ok((table, a))
}

async fn vacuum(t: &Target, table: DeltaTable, options: &MaintainOptions) -> Result<(DeltaTable, MaintenanceAction)> {
    // One listing gives both the files before and the nested tables.
    let listed = delta::list_all(&table).await?;
    let mut a = action(t, ActionKind::Vacuum, stored_in(&listed, false));
    // Full mode deletes every file no version of this table names, which
    // includes a nested table's files; lite mode only the files this
    // table's own log removed.
    let nested = delta::nested_in(&listed);
    let mode = if nested.is_empty() { VacuumMode::Full } else { VacuumMode::Lite };
    let (table, metrics) = table
        .vacuum()
        .with_mode(mode)
        .with_retention_period(chrono::Duration::hours(t.vacuum_hours as i64))
        .with_enforce_retention_duration(!options.force)
        .with_dry_run(options.dry_run)
        .with_commit_properties(commit(t, options, "vacuum"))
        .await
        .map_err(|e| Error::delta(&t.location, e))?;
    let n = metrics.files_deleted.len();
    a.detail = format!(
        "{n} files unreferenced for more than {} h{}",
        t.vacuum_hours,
        if n == 0 {
            String::new()
        } else {
            format!(", e.g. {}", metrics.files_deleted.iter().take(3).cloned().collect::<Vec<_>>().join(", "))
        }
    );
    if !nested.is_empty() {
        a.detail += &format!(
            "; lite mode (only files this table's log removed): another Delta table is inside its folder at {}",
            nested.join(", ")
        );
        tracing::warn!(
            table = %t.name,
            nested = %nested.join(", "),
            "another Delta table is inside this table's folder: vacuum spares it (lite mode)"
        );
    }
    a.outcome = match (n, options.dry_run) {
        (0, _) => ActionOutcome::Skipped,
        (_, true) => ActionOutcome::Planned,
        _ => ActionOutcome::Done,
    };
    if !options.dry_run {
        (a.files_after, a.bytes_after) = stored(&table, false).await?;
        a.version = (n > 0).then(|| table.version()).flatten();
    }
    Ok((table, a))
}

async fn checkpoint(
    t: &Target,
    table: DeltaTable,
    options: &MaintainOptions,
) -> Result<(DeltaTable, MaintenanceAction)> {
    let mut a = action(t, ActionKind::Checkpoint, stored(&table, true).await?);
    let version = table.version().unwrap_or(0);
    let store = table.log_store().object_store(None);
    let marker = object_store::path::Path::from(format!("_delta_log/{version:020}.checkpoint.parquet"));
    let has = store.head(&marker).await.is_ok();
    let retention =
        table.snapshot().map_err(|e| Error::delta(table.table_url(), e))?.table_config().log_retention_duration();
    a.detail = format!(
        "{} at version {version}; log files older than {} days removed",
        if has { "checkpoint exists" } else { "checkpoint" },
        retention.as_secs() / 86_400
    );
    if options.dry_run {
        a.outcome = if has { ActionOutcome::Skipped } else { ActionOutcome::Planned };
        return Ok((table, a));
    }
    if !has {
        deltalake::checkpoints::create_checkpoint(&table, None).await.map_err(|e| Error::delta(&t.location, e))?;
    }
    let removed =
        deltalake::checkpoints::cleanup_metadata(&table, None).await.map_err(|e| Error::delta(&t.location, e))?;
    a.detail = format!("{}; {removed} expired log files removed", a.detail);
    (a.files_after, a.bytes_after) = stored(&table, true).await?;
    a.outcome = if has && removed == 0 { ActionOutcome::Skipped } else { ActionOutcome::Done };
    Ok((table, a))
}
