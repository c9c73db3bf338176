//! The curate stage: SQL models over the processed table → curated tables.
//!
//! A curated table is declared by a DataFusion SQL model, a key and,
//! optionally, an incremental scope (`incremental.by`). Per run and table:
//!
//! 1. Read the driving source's change feed (all change types: inserts,
//!    update images and deletes, so erasure and `keep: latest` replacements
//!    are seen) from the version last consumed, and collect the distinct
//!    values of the scope columns it touches.
//! 2. Run the model with the source restricted to rows holding those values
//!    (a semi-join, plus a min/max range so Delta skips files), and read the
//!    table's stored rows for the same values.
//! 3. Diff the two on the key ([`diff`]): new rows are inserted, rows whose
//!    values moved are updated, stored rows the scope no longer produces are
//!    deleted, unchanged rows are left alone. One Delta merge commits the
//!    changes with the progress marker `weir/<pipeline>/curate/<table>` (the
//!    source version consumed), so the table's change feed holds exactly the
//!    changed aggregates as `insert`, `update_preimage`/`update_postimage`
//!    and `delete` rows.
//!
//! The result equals a full recompute when the model computes each output
//! row only from source rows with the same scope values (a GROUP BY on the
//! scope columns does; a window over other rows does not). A run checks the
//! part it can: every recomputed row must carry scope values it was asked
//! for.
//!
//! A full recompute (same diff, whole table) runs on the first run, when the
//! model's fingerprint (SQL, key, scope) differs from the one stored with the
//! table's last curate commit, when the source's change feed cannot be read
//! (e.g. vacuumed), without `incremental:`, and on `--full-refresh`
//! ([`crate::lake::refresh`] decides, before the change feed is read).
//!
//! Hazard: changes to reference tables do not trigger a recompute.

pub mod diff;
pub mod features;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use deltalake::datafusion::common::{JoinType, ScalarValue};
use deltalake::datafusion::datasource::MemTable;
use deltalake::datafusion::error::DataFusionError;
use deltalake::datafusion::functions_aggregate::expr_fn::{max, min};
use deltalake::datafusion::prelude::{col, lit, DataFrame, SessionContext};
use deltalake::delta_datafusion::DeltaCdfTableProvider;
use deltalake::kernel::Transaction;
use deltalake::DeltaTable;

use crate::lake::commit::{self, CommitInfo};
use crate::lake::refresh::{Catchup, Definition, FullReason, Refresh};
use crate::lake::{conform, contract, fault, Marker};
use crate::pipeline::{CuratedTableConfig, ScopeColumn, PROCESSED};

use crate::delta::{self, TableSpec, WriteOptions};
use crate::pipeline::LoadedPipeline;
use crate::report::plan::SourcePlan;
use crate::report::{ModelMode, ModelReport, Stage, StageReport, TableWrite};
use crate::stage::StageWork;
use crate::storage::Location;
use crate::{Error, Result};

/// Commit metadata key holding the model fingerprint.
const MODEL_KEY: &str = "weir.curate_model";

/// Options of one curate run.
#[derive(Debug, Clone, Default)]
pub struct CurateOptions {
    /// Compute and report, write nothing.
    pub dry_run: bool,
    /// Stored in the commit metadata.
    pub run_id: String,
    /// Recompute every table from scratch (changes are still merged, so the
    /// change feed shows only what moved).
    pub full_refresh: bool,
    /// Only these curated tables (empty: all, in declaration order).
    pub only: Vec<String>,
}

/// A curated table ready to run: its SQL read, its location parsed.
#[derive(Debug, Clone)]
pub struct Model {
    /// The declaration.
    pub config: CuratedTableConfig,
    /// The SQL text.
    pub sql: String,
    /// Where the table lives.
    pub location: Location,
    /// Fingerprint of what decides the rows: SQL, key, scope.
    pub fingerprint: String,
}

/// Reads the models' SQL, with their locations.
pub fn models(loaded: &LoadedPipeline) -> Result<Vec<Model>> {
    let Some(curate) = &loaded.pipeline.curate else { return Ok(vec![]) };
    curate
        .tables
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let sql = match (&t.sql, &t.sql_file) {
                (Some(s), _) => s.clone(),
                (None, Some(f)) => loaded
                    .read_file(f)
                    .map_err(|problem| loaded.invalid(&format!("curate.tables[{i}].sql_file"), problem))?,
                (None, None) => return Err(model_error(&t.name, "no sql".into())),
            };
            let location = loaded.location(&format!("curate.tables[{i}].path"))?;
            let fingerprint = fingerprint(&sql, t);
            Ok(Model { config: t.clone(), sql, location, fingerprint })
        })
        .collect()
}

fn fingerprint(sql: &str, t: &CuratedTableConfig) -> String {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    h.update(sql.trim().as_bytes());
    h.update(serde_json::to_vec(&(&t.key, &t.incremental, &t.as_of)).unwrap_or_default());
    h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
}

fn model_error(table: &str, message: String) -> Error {
    Error::Model { table: table.to_string(), message }
}

/// A model's query failed: storage's failure when storage failed under
/// it, else the model's (its SQL or data).
fn df_error(table: &str) -> impl Fn(DataFusionError) -> Error + '_ {
    move |e| {
        let message = || {
            let m = clean(&e.to_string());
            match e.find_root() {
                DataFusionError::ResourcesExhausted(_) => format!(
                    "{m}; the model needs more memory than curate.memory_mb allows for what cannot spill (a hash join's build side): raise it, or narrow what the join holds"
                ),
                _ => m,
            }
        };
        Error::query(&format!("curated table {table}"), &e, || model_error(table, message()))
    }
}

fn clean(message: &str) -> String {
    crate::storage::scrub(&crate::expectations::clean(message))
}

/// The Delta-friendly type of a model output column: timestamps become
/// microseconds in UTC (Spark reads nothing else; a timestamp without zone
/// is taken as UTC), view and large strings plain ones, unsigned integers
/// the next signed type.
fn table_type(t: &DataType) -> DataType {
    use DataType as D;
    match t {
        D::Timestamp(_, _) | D::Date64 => D::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        D::Utf8View | D::LargeUtf8 => D::Utf8,
        D::BinaryView | D::LargeBinary | D::FixedSizeBinary(_) => D::Binary,
        D::UInt8 => D::Int16,
        D::UInt16 => D::Int32,
        D::UInt32 | D::UInt64 => D::Int64,
        D::Float16 => D::Float32,
        D::Dictionary(_, v) => table_type(v),
        other => other.clone(),
    }
}

/// The table schema for a model's output: Delta types, key columns NOT NULL.
fn table_schema(output: &Schema, key: &[String]) -> SchemaRef {
    Arc::new(Schema::new(
        output
            .fields()
            .iter()
            .map(|f| Field::new(f.name(), table_type(f.data_type()), !key.contains(f.name())))
            .collect::<Vec<_>>(),
    ))
}

/// Casts model output batches to `schema` (all nullable: the diff reports
/// null keys by name before the table's NOT NULL would).
fn to_schema(table: &str, batches: Vec<RecordBatch>, schema: &SchemaRef) -> Result<Vec<RecordBatch>> {
    let nullable: SchemaRef = Arc::new(Schema::new(
        schema.fields().iter().map(|f| f.as_ref().clone().with_nullable(true)).collect::<Vec<_>>(),
    ));
    batches
        .into_iter()
        .map(|b| {
            let columns = nullable
                .fields()
                .iter()
                .map(|f| {
                    let c = b.column_by_name(f.name()).ok_or_else(|| {
                        model_error(table, format!("column {:?} missing from the model output", f.name()))
                    })?;
                    cast(c, f.data_type()).map_err(|e| model_error(table, format!("column {:?}: {e}", f.name())))
                })
                .collect::<Result<Vec<_>>>()?;
            RecordBatch::try_new(nullable.clone(), columns).map_err(|e| model_error(table, e.to_string()))
        })
        .collect()
}

/// Registers a Delta table under `name` for SQL.
async fn register(ctx: &SessionContext, name: &str, table: &DeltaTable) -> Result<()> {
    let err = |e: DataFusionError| {
        Error::query(table.table_url(), &e, || Error::Internal(format!("registering {name}: {e}")))
    };
    table.update_datafusion_session(&ctx.state()).map_err(|e| Error::delta(table.table_url(), e))?;
    let provider = table.table_provider().await.map_err(err)?;
    ctx.deregister_table(name).map_err(err)?;
    ctx.register_table(name, provider).map_err(err)?;
    Ok(())
}

/// The tables models read, by name, as of the start of the run (curated
/// tables are refreshed as the run writes them).
struct Catalog {
    tables: HashMap<String, DeltaTable>,
    /// `curate.memory_mb`, in bytes.
    memory: usize,
}

impl Catalog {
    async fn open(loaded: &LoadedPipeline, models: &[Model]) -> Result<Catalog> {
        let mut tables = HashMap::new();
        // `processed`, or each route's table by the route's name.
        for unit in loaded.process_units().iter().filter(|u| u.table.is_some()) {
            if let Some(table) = delta::open(&loaded.location(&unit.table_key)?).await? {
                tables.insert(unit.name.clone(), table);
            }
        }
        for (i, r) in loaded.pipeline.curate.iter().flat_map(|c| &c.references).enumerate() {
            let location = loaded.location(&format!("curate.references[{i}].path"))?;
            let table = delta::open(&location).await?.ok_or_else(|| Error::InvalidLocation {
                location: location.to_string(),
                reason: format!("reference table {:?} does not exist", r.name),
            })?;
            tables.insert(r.name.clone(), table);
        }
        for m in models {
            if let Some(table) = delta::open(&m.location).await? {
                tables.insert(m.config.name.clone(), table);
            }
        }
        let memory_mb = loaded.pipeline.curate.as_ref().map_or(512, |c| c.memory_mb);
        Ok(Catalog { tables, memory: usize::try_from(memory_mb.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX) })
    }

    /// A session with every known table registered.
    async fn session(&self) -> Result<SessionContext> {
        let ctx = crate::expectations::session_within(self.memory);
        for (name, table) in &self.tables {
            register(&ctx, name, table).await?;
        }
        Ok(ctx)
    }
}

/// Plans every model against the schemas it would read (the processed
/// table as the pipeline now produces it, references as stored, earlier
/// models' outputs) and checks the declared columns, as (key path,
/// message). `weir validate` and every curate run call it.
pub async fn check_models(loaded: &LoadedPipeline) -> Result<Vec<(String, String)>> {
    let Some(curate) = &loaded.pipeline.curate else { return Ok(vec![]) };
    let mut problems = Vec::new();
    let models = models(loaded)?;
    let ctx = crate::expectations::session();
    let empty = |schema: SchemaRef| -> Result<Arc<MemTable>> {
        MemTable::try_new(schema, vec![vec![]]).map(Arc::new).map_err(|e| Error::Internal(e.to_string()))
    };
    for unit in loaded.process_units() {
        if let Ok(Some(body)) = loaded.unit_body_schema(&unit) {
            let schema = contract::processed_schema_for_check(&body, &unit.process.pii);
            ctx.register_table(unit.name.as_str(), empty(schema)?).map_err(|e| Error::Internal(e.to_string()))?;
        }
    }
    for (i, r) in curate.references.iter().enumerate() {
        let Ok(location) = loaded.location(&format!("curate.references[{i}].path")) else { continue };
        match delta::open(&location).await? {
            Some(t) => register(&ctx, &r.name, &t).await?,
            None => problems.push((format!("curate.references[{i}].path"), format!("no Delta table at {location}"))),
        }
    }
    let mut schemas: HashMap<String, SchemaRef> = HashMap::new();
    for (i, m) in models.iter().enumerate() {
        let at = format!("curate.tables[{i}]");
        let t = &m.config;
        // Planned through the analyzer too: type errors (an argument a
        // function does not take) show here, not only when the model runs.
        let planned = match ctx.sql(&m.sql).await {
            Ok(df) => df.clone().into_optimized_plan().map(|_| df),
            Err(e) => Err(e),
        };
        let output = match planned {
            Ok(df) => Arc::new(df.schema().as_arrow().clone()),
            Err(e) => {
                // The key that holds the SQL, so the problem gets its line.
                let key = if t.sql.is_some() { "sql" } else { "sql_file" };
                problems.push((
                    format!("{at}.{key}"),
                    format!("model {:?} does not plan: {}", t.name, clean(&e.to_string())),
                ));
                continue;
            }
        };
        let has = |c: &String| output.field_with_name(c).is_ok();
        let columns = || output.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ");
        for (what, list) in [("key", &t.key), ("partition_by", &t.partition_by), ("zorder_by", &t.zorder_by)] {
            for c in list.iter().filter(|c| !has(c)) {
                problems.push((
                    format!("{at}.{what}"),
                    format!("{c:?} is not a column of the model's output ({})", columns()),
                ));
            }
        }
        if let Some(a) = &t.as_of {
            match output.field_with_name(a) {
                Ok(f) if matches!(f.data_type(), DataType::Timestamp(_, _)) => {}
                Ok(f) => problems.push((format!("{at}.as_of"), format!("{a:?} is {}, not a timestamp", f.data_type()))),
                Err(_) => problems.push((
                    format!("{at}.as_of"),
                    format!("{a:?} is not a column of the model's output ({})", columns()),
                )),
            }
        }
        if let Some(inc) = &t.incremental {
            let source_schema = match ctx.table_provider(inc.source.as_str()).await {
                Ok(p) => Some(p.schema()),
                Err(_) => schemas.get(&inc.source).cloned(),
            };
            for (j, s) in inc.by.iter().enumerate() {
                if !has(&s.column) {
                    problems.push((
                        format!("{at}.incremental.by[{j}]"),
                        format!("{:?} is not a column of the model's output ({})", s.column, columns()),
                    ));
                }
                if let Some(src) = &source_schema {
                    if src.field_with_name(&s.source).is_err() {
                        problems.push((
                            format!("{at}.incremental.by[{j}]"),
                            format!("{:?} is not a column of {}", s.source, inc.source),
                        ));
                    }
                }
            }
        }
        let schema = table_schema(&output, &t.key);
        schemas.insert(t.name.clone(), schema.clone());
        ctx.register_table(t.name.as_str(), empty(schema)?).map_err(|e| Error::Internal(e.to_string()))?;
    }
    Ok(problems)
}

/// Runs the curate stage: plans it, then executes the plan.
pub async fn curate(loaded: &LoadedPipeline, options: &CurateOptions) -> Result<StageReport> {
    crate::stage::run(loaded, options).await
}

/// What planning a curate run found: the tables models read and, per
/// selected model in declaration order, how it catches up.
pub struct Planned {
    catalog: Catalog,
    models: Vec<ModelPlan>,
}

/// One model's plan.
struct ModelPlan {
    model: Model,
    /// `None` when its source does not exist yet.
    catchup: Option<Catchup>,
    plan: SourcePlan,
}

impl StageWork for CurateOptions {
    type Plan = Planned;
    type Summary = Vec<SourcePlan>;

    fn dry_run(&self) -> bool {
        self.dry_run
    }

    /// Checks the models against what they read, then decides per model
    /// ([`crate::lake::refresh`]): up to date, incremental from its marker,
    /// or full (with the reason).
    async fn plan(&self, loaded: &LoadedPipeline) -> Result<Planned> {
        let models = models(loaded)?;
        for name in &self.only {
            if !models.iter().any(|m| &m.config.name == name) {
                return Err(loaded.invalid("curate.tables", format!("no curated table named {name:?}")));
            }
        }
        let problems = check_models(loaded).await?;
        if !problems.is_empty() {
            return Err(loaded.invalid_all(problems));
        }
        let catalog = Catalog::open(loaded, &models).await?;
        let mut planned = Vec::new();
        for model in models.into_iter().filter(|m| self.only.is_empty() || self.only.contains(&m.config.name)) {
            planned.push(plan_model(loaded, model, &catalog, self).await?);
        }
        Ok(Planned { catalog, models: planned })
    }

    fn describe(plan: &Planned) -> Vec<SourcePlan> {
        plan.models.iter().map(|m| m.plan.clone()).collect()
    }

    async fn execute(&self, loaded: &LoadedPipeline, plan: Planned) -> Result<StageReport> {
        let Planned { mut catalog, models } = plan;
        let mut report = StageReport { stage: Stage::Curate, ..Default::default() };
        let mut written: Vec<String> = Vec::new();
        for mut planned in models {
            // A model reading a table this run has just written is planned
            // again, so it sees that write.
            if written.contains(&planned.plan.source) {
                planned = plan_model(loaded, planned.model, &catalog, self).await?;
            }
            let started = Instant::now();
            let (mut model_report, write) = run_model(loaded, &planned, &mut catalog, self).await?;
            model_report.duration_ms = started.elapsed().as_millis() as u64;
            report.events_read += model_report.rows_computed;
            report.events_written += model_report.rows_inserted + model_report.rows_updated + model_report.rows_deleted;
            report.models.push(model_report);
            if let Some(w) = write {
                written.push(w.table.clone());
                report.tables.push(w);
            }
        }
        Ok(report)
    }
}

/// The table a model's changes are read from.
fn source_of(t: &CuratedTableConfig) -> &str {
    t.incremental.as_ref().map_or(PROCESSED, |i| i.source.as_str())
}

/// How `model` catches up with its source as the catalog stands.
async fn plan_model(
    loaded: &LoadedPipeline,
    model: Model,
    catalog: &Catalog,
    options: &CurateOptions,
) -> Result<ModelPlan> {
    let name = model.config.name.as_str();
    let source_name = source_of(&model.config);
    let stage = format!("curate {name}");
    let Some(source) = catalog.tables.get(source_name) else {
        let plan =
            SourcePlan { stage, source: source_name.to_string(), mode: ModelMode::NoSource, ..Default::default() };
        return Ok(ModelPlan { model, catchup: None, plan });
    };
    let app_id = Marker::Curate { pipeline: &loaded.pipeline.name, table: name }.app_id();
    let catchup = catchup(&model, catalog.tables.get(name), source, &app_id, options.full_refresh).await?;
    let mut plan = SourcePlan::decided(&stage, source_name, &catchup);
    if let (true, Some(from), Some(to)) = (options.dry_run, plan.from_version, plan.to_version) {
        (plan.files, plan.bytes) = delta::added(source, from, to).await?;
    }
    Ok(ModelPlan { model, catchup: Some(catchup), plan })
}

/// How a run recomputes a table.
enum Mode {
    /// Only the scope values the change feed touched.
    Incremental { scope: Vec<RecordBatch> },
    /// Everything.
    Full { reason: String },
}

fn scope_name(i: usize) -> String {
    format!("__weir_scope_{i}")
}

/// The progress a model's commit records: the source versions consumed,
/// under the table's marker.
struct Progress {
    app_id: String,
    source: String,
    from: u64,
    to: u64,
}

/// The model's rows for the recomputed scope and the stored rows of that
/// scope, both in the table's schema; no schema when an incremental run's
/// scope is empty (nothing was computed).
struct Computed {
    new: Vec<RecordBatch>,
    old: Vec<RecordBatch>,
    schema: Option<SchemaRef>,
}

async fn run_model(
    loaded: &LoadedPipeline,
    planned: &ModelPlan,
    catalog: &mut Catalog,
    options: &CurateOptions,
) -> Result<(ModelReport, Option<TableWrite>)> {
    let model = &planned.model;
    let t = &model.config;
    let name = t.name.as_str();
    let source_name = planned.plan.source.clone();
    let mut report = ModelReport { table: t.name.clone(), source: source_name.clone(), ..Default::default() };
    let (Some(catchup), Some(source)) = (planned.catchup, catalog.tables.get(&source_name).cloned()) else {
        tracing::info!(table = name, source = %source_name, "the source table does not exist yet: nothing to curate");
        report.mode = ModelMode::NoSource;
        return Ok((report, None));
    };
    let app_id = Marker::Curate { pipeline: &loaded.pipeline.name, table: name }.app_id();
    let progress = Progress { app_id, source: source_name, from: catchup.from(), to: catchup.source_version };
    let mode = match catchup.decide() {
        Refresh::UpToDate => {
            report.mode = ModelMode::UpToDate;
            return Ok((report, None));
        }
        Refresh::Full(reason) => Mode::Full { reason: reason.to_string() },
        Refresh::Incremental { from, to } => incremental_scope(&source, &progress.source, from, to, t).await,
    };
    note_mode(&mut report, name, &mode, &progress);

    let ctx = catalog.session().await?;
    let computed = match (&mode, &t.incremental) {
        (Mode::Incremental { scope }, Some(inc)) => {
            compute_scope(&ctx, model, catalog, scope, &inc.by, &progress.source).await?
        }
        _ => compute_all(&ctx, model, catalog).await?,
    };
    report.rows_computed = computed.new.iter().map(|b| b.num_rows() as u64).sum();
    let changes = diff_rows(name, &t.key, &computed, &mut report)?;
    let written = if options.dry_run {
        None
    } else {
        write_model(loaded, model, catalog, &options.run_id, progress, computed.schema.as_ref(), changes).await?
    };
    Ok((report, written))
}

/// What decides how the table catches up: its marker, the source's
/// version, and the model against the one stored with the last commit.
async fn catchup(
    model: &Model,
    target: Option<&DeltaTable>,
    source: &DeltaTable,
    app_id: &str,
    full_refresh: bool,
) -> Result<Catchup> {
    let (marker, stored_fingerprint) = match target {
        Some(table) => (delta::progress(table, app_id).await?, last_fingerprint(table).await),
        None => (None, None),
    };
    let definition = match stored_fingerprint {
        None => Definition::NotStored,
        Some(f) if f != model.fingerprint => Definition::Changed,
        Some(_) => Definition::Same,
    };
    Ok(Catchup {
        target_exists: target.is_some(),
        marker,
        source_version: source.version().unwrap_or(0),
        incremental: model.config.incremental.is_some(),
        full_refresh,
        definition,
    })
}

/// The scope values that source versions `from..=to` touched; a change
/// feed that cannot be read (e.g. vacuumed) makes the run a full one.
async fn incremental_scope(source: &DeltaTable, source_name: &str, from: u64, to: u64, t: &CuratedTableConfig) -> Mode {
    let Some(inc) = &t.incremental else { return Mode::Full { reason: FullReason::NotIncremental.to_string() } };
    match changed_scope(source, from, to, &inc.by).await {
        Ok(scope) => Mode::Incremental { scope },
        Err(e) => Mode::Full { reason: format!("the change feed of {source_name} could not be read ({e})") },
    }
}

/// Reports and logs the mode chosen: a full run reads every source version.
fn note_mode(report: &mut ModelReport, table: &str, mode: &Mode, progress: &Progress) {
    report.source_versions = Some((progress.from, progress.to));
    let scope_rows: usize = match mode {
        Mode::Incremental { scope } => scope.iter().map(|b| b.num_rows()).sum(),
        Mode::Full { .. } => 0,
    };
    report.scope_values = scope_rows as u64;
    match mode {
        Mode::Full { reason } => {
            tracing::info!(table, reason = %reason, "full recompute");
            report.source_versions = Some((0, progress.to));
            report.mode = ModelMode::Full;
            report.reason = Some(reason.clone());
        }
        Mode::Incremental { .. } => {
            tracing::info!(
                table,
                from = progress.from,
                to = progress.to,
                scope_values = scope_rows,
                "incremental recompute"
            );
            report.mode = ModelMode::Incremental;
        }
    }
}

/// Runs the model's SQL in `ctx`, cast to the table's schema.
async fn model_rows(ctx: &SessionContext, model: &Model) -> Result<(Vec<RecordBatch>, SchemaRef)> {
    let name = model.config.name.as_str();
    let output = ctx.sql(&model.sql).await.map_err(df_error(name))?;
    let schema = table_schema(output.schema().as_arrow(), &model.config.key);
    let new = to_schema(name, output.collect().await.map_err(df_error(name))?, &schema)?;
    Ok((new, schema))
}

/// The model over the source restricted to `scope`, and the stored rows of
/// the same scope.
async fn compute_scope(
    ctx: &SessionContext,
    model: &Model,
    catalog: &Catalog,
    scope: &[RecordBatch],
    by: &[ScopeColumn],
    source_name: &str,
) -> Result<Computed> {
    let name = model.config.name.as_str();
    if scope.iter().map(|b| b.num_rows()).sum::<usize>() == 0 {
        return Ok(Computed { new: vec![], old: vec![], schema: None });
    }
    let scope_df = ctx.read_batches(scope.to_vec()).map_err(df_error(name))?;
    let source_df = ctx.table(source_name).await.map_err(df_error(name))?;
    let restricted =
        restrict(source_df, scope_df.clone(), by.iter().map(|s| s.source.as_str()).collect(), name).await?;
    ctx.deregister_table(source_name).map_err(df_error(name))?;
    ctx.register_table(source_name, restricted.into_view()).map_err(df_error(name))?;
    let (new, schema) = model_rows(ctx, model).await?;
    check_in_scope(name, &new, scope, by)?;
    let old = match catalog.tables.get(name) {
        Some(table) => {
            let stored =
                ctx.read_table(table.table_provider().await.map_err(df_error(name))?).map_err(df_error(name))?;
            let stored = restrict(stored, scope_df, by.iter().map(|s| s.column.as_str()).collect(), name).await?;
            stored_rows(name, stored, &schema).await?
        }
        None => vec![],
    };
    Ok(Computed { new, old, schema: Some(schema) })
}

/// The model over the whole source, and every stored row.
async fn compute_all(ctx: &SessionContext, model: &Model, catalog: &Catalog) -> Result<Computed> {
    let name = model.config.name.as_str();
    let (new, schema) = model_rows(ctx, model).await?;
    let old = match catalog.tables.get(name) {
        Some(table) => {
            let stored =
                ctx.read_table(table.table_provider().await.map_err(df_error(name))?).map_err(df_error(name))?;
            stored_rows(name, stored, &schema).await?
        }
        None => vec![],
    };
    Ok(Computed { new, old, schema: Some(schema) })
}

/// Diffs the computed rows against the stored ones on the key and reports
/// the counts (nothing when nothing was computed).
fn diff_rows(
    name: &str,
    key: &[String],
    computed: &Computed,
    report: &mut ModelReport,
) -> Result<Option<diff::Changes>> {
    let Some(schema) = &computed.schema else { return Ok(None) };
    let nullable: SchemaRef = Arc::new(Schema::new(
        schema.fields().iter().map(|f| f.as_ref().clone().with_nullable(true)).collect::<Vec<_>>(),
    ));
    let c = diff::diff(&nullable, key, &computed.new, &computed.old).map_err(|e| match e {
        diff::DiffError::DuplicateKey(k) => {
            model_error(name, format!("the model produced two rows for key {k}; the key must identify one row"))
        }
        diff::DiffError::NullKey(k) => {
            model_error(name, format!("the model produced a row with a null key ({k}); key columns must never be null"))
        }
        diff::DiffError::Arrow(m) => Error::Internal(format!("diff of {name}: {m}")),
    })?;
    report.rows_inserted = c.inserted;
    report.rows_updated = c.updated;
    report.rows_deleted = c.deleted;
    report.rows_unchanged = c.unchanged;
    Ok(Some(c))
}

/// Commits the changes with the progress marker, creating the table on its
/// first write (nothing without a schema: an empty scope and no table) and
/// refusing breaking schema changes; the catalog then holds the new version.
async fn write_model(
    loaded: &LoadedPipeline,
    model: &Model,
    catalog: &mut Catalog,
    run_id: &str,
    progress: Progress,
    schema: Option<&SchemaRef>,
    changes: Option<diff::Changes>,
) -> Result<Option<TableWrite>> {
    let t = &model.config;
    let name = t.name.as_str();
    fault::pause_point("curate_before_write");
    fault::fault_point("curate_before_commit");
    let existed = catalog.tables.contains_key(name);
    let table = match catalog.tables.get(name).cloned() {
        Some(table) => table,
        None => {
            let Some(schema) = schema else { return Ok(None) };
            create_table(loaded, model, schema, &progress.app_id).await?
        }
    };
    let version_before = table.version();
    let mut merge_schema = false;
    if let Some(schema) = schema {
        let (added, breaking) = conform::schema_changes(delta::arrow_schema(&table)?.as_ref(), schema);
        if !breaking.is_empty() {
            return Err(Error::SchemaChange { table: model.location.to_string(), changes: breaking });
        }
        merge_schema = !added.is_empty();
    }

    let now = Utc::now();
    let metadata = CommitInfo::new(&loaded.pipeline.name, "curate", run_id)
        .with("source", progress.source)
        .with("source_versions", serde_json::json!([progress.from, progress.to]))
        .with(MODEL_KEY, model.fingerprint.clone())
        .into_map();
    let write = WriteOptions {
        partition_columns: t.partition_by.clone(),
        progress: vec![Transaction::new_with_last_update(
            &progress.app_id,
            progress.to as i64,
            Some(now.timestamp_millis()),
        )],
        metadata,
        merge_schema,
        ..Default::default()
    };
    let table_schema = delta::arrow_schema(&table)?;
    let table = match changes {
        Some(c) if c.updated + c.deleted > 0 => {
            let batch = conform::conform(&c.batch, &table_schema)?;
            delta::apply_changes(table, batch, &t.key, diff::OP_COLUMN, write).await?
        }
        Some(c) if c.inserted > 0 => {
            let mut batch = c.batch;
            batch.remove_column(batch.schema().index_of(diff::OP_COLUMN).map_err(|e| Error::Internal(e.to_string()))?);
            let batch = conform::conform(&batch, &table_schema)?;
            delta::write_with_progress(table, vec![batch], write).await?
        }
        // Nothing moved: record the source version consumed.
        _ => delta::write_with_progress(table, vec![], write).await?,
    };
    let written = TableWrite {
        table: name.to_string(),
        location: model.location.to_string(),
        version_before: if existed { version_before } else { None },
        versions_written: table.version().into_iter().collect(),
    };
    catalog.tables.insert(name.to_string(), table);
    fault::fault_point("curate_after_commit");
    Ok(Some(written))
}

/// Creates the model's table on its first write.
async fn create_table(loaded: &LoadedPipeline, model: &Model, schema: &SchemaRef, app_id: &str) -> Result<DeltaTable> {
    let t = &model.config;
    let spec = TableSpec {
        name: format!("{}_{}", loaded.pipeline.name, t.name),
        description: t.description.clone(),
        schema: schema.clone(),
        partition_columns: t.partition_by.clone(),
    };
    let table = delta::open_or_create(&model.location, &spec).await?;
    delta::check_owner(&table, &model.location, &spec)?;
    // Another run may have created the table and committed to it since this
    // one planned against no table: writing on top of its commit would not
    // conflict, and would add its rows twice.
    if delta::progress(&table, app_id).await?.is_some() {
        return Err(Error::ConcurrentProgress { table: model.location.to_string(), app_id: app_id.to_string() });
    }
    Ok(table)
}

/// The distinct scope values of every change in `from..=to`, with columns
/// named [`scope_name`]`(i)`.
async fn changed_scope(source: &DeltaTable, from: u64, to: u64, by: &[ScopeColumn]) -> Result<Vec<RecordBatch>> {
    let ctx = crate::expectations::session();
    let url = crate::storage::redact(source.table_url().as_str());
    let err = |e: DataFusionError| {
        Error::query(&url, &e, || Error::Internal(format!("change feed of {url}: {}", clean(&e.to_string()))))
    };
    let builder = source.clone().scan_cdf().with_starting_version(from).with_ending_version(to);
    let provider = DeltaCdfTableProvider::try_new(builder).map_err(|e| Error::delta(&url, e))?;
    ctx.register_table("changes", Arc::new(provider)).map_err(err)?;
    let columns: Vec<String> =
        by.iter().enumerate().map(|(i, s)| format!("{} AS {}", quote(&s.source), scope_name(i))).collect();
    let batches = ctx
        .sql(&format!("SELECT DISTINCT {} FROM changes", columns.join(", ")))
        .await
        .map_err(err)?
        .collect()
        .await
        .map_err(err)?;
    batches.into_iter().map(|b| plain_types(&b)).collect()
}

/// [`plain_types`] for every batch.
pub(crate) fn plain_types_all(batches: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
    batches.iter().map(plain_types).collect()
}

/// Scans return view types; diffing and joining want the plain ones.
fn plain_types(b: &RecordBatch) -> Result<RecordBatch> {
    let fields: Vec<Field> =
        b.schema().fields().iter().map(|f| Field::new(f.name(), table_type(f.data_type()), true)).collect();
    let columns = b
        .columns()
        .iter()
        .zip(&fields)
        .map(|(c, f)| cast(c, f.data_type()))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Internal(e.to_string()))?;
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| Error::Internal(e.to_string()))
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `df` restricted to rows whose `columns` hold a scope row's values
/// (NULL matches NULL), with each column's min/max as a plain filter too so
/// that Delta skips files and partitions outside the range.
async fn restrict(df: DataFrame, scope: DataFrame, columns: Vec<&str>, table: &str) -> Result<DataFrame> {
    let bounds = scope
        .clone()
        .aggregate(
            vec![],
            (0..columns.len()).flat_map(|i| [min(col(scope_name(i))), max(col(scope_name(i)))]).collect(),
        )
        .map_err(df_error(table))?
        .collect()
        .await
        .map_err(df_error(table))?;
    let mut df = df;
    if let Some(b) = bounds.first().filter(|b| b.num_rows() == 1) {
        for (i, c) in columns.iter().enumerate() {
            let lo = ScalarValue::try_from_array(b.column(2 * i), 0).map_err(df_error(table))?;
            let hi = ScalarValue::try_from_array(b.column(2 * i + 1), 0).map_err(df_error(table))?;
            // NULL scope values match rows the range would exclude.
            let has_null = scope
                .clone()
                .filter(col(scope_name(i)).is_null())
                .map_err(df_error(table))?
                .count()
                .await
                .map_err(df_error(table))?
                > 0;
            if !lo.is_null() && !hi.is_null() && !has_null {
                df = df.filter(col(quote(c)).between(lit(lo), lit(hi))).map_err(df_error(table))?;
            }
        }
    }
    let on: Vec<_> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            deltalake::datafusion::logical_expr::binary_expr(
                col(quote(c)),
                deltalake::datafusion::logical_expr::Operator::IsNotDistinctFrom,
                col(scope_name(i)),
            )
        })
        .collect();
    df.join_on(scope, JoinType::LeftSemi, on).map_err(df_error(table))
}

/// Every recomputed row must carry scope values that were asked for:
/// otherwise the output column is not the source column it claims to be,
/// and incremental runs would drift from a full recompute.
fn check_in_scope(table: &str, rows: &[RecordBatch], scope: &[RecordBatch], by: &[ScopeColumn]) -> Result<()> {
    use deltalake::arrow::row::{RowConverter, SortField};
    let Some(first) = scope.first() else { return Ok(()) };
    let fields: Vec<SortField> =
        first.schema().fields().iter().map(|f| SortField::new(f.data_type().clone())).collect();
    let converter = RowConverter::new(fields).map_err(|e| Error::Internal(e.to_string()))?;
    let mut allowed = std::collections::HashSet::new();
    for b in scope {
        let rows = converter.convert_columns(b.columns()).map_err(|e| Error::Internal(e.to_string()))?;
        allowed.extend(rows.iter().map(|r| r.as_ref().to_vec()));
    }
    for b in rows {
        let columns = by
            .iter()
            .zip(first.schema().fields())
            .map(|(s, f)| {
                let c = b
                    .column_by_name(&s.column)
                    .ok_or_else(|| model_error(table, format!("scope column {:?} missing", s.column)))?;
                cast(c, f.data_type()).map_err(|e| {
                    model_error(
                        table,
                        format!(
                            "scope column {:?} cannot be compared with source column {:?}: {e}",
                            s.column, s.source
                        ),
                    )
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let converted = converter.convert_columns(&columns).map_err(|e| Error::Internal(e.to_string()))?;
        if let Some(r) = (0..b.num_rows()).find(|&r| !allowed.contains(converted.row(r).as_ref())) {
            let what: Vec<String> = by
                .iter()
                .zip(&columns)
                .map(|(s, c)| {
                    let v = deltalake::arrow::util::display::array_value_to_string(c, r).unwrap_or_default();
                    format!("{}={v}", s.column)
                })
                .collect();
            return Err(model_error(
                table,
                format!(
                    "the model produced a row ({}) outside the scope it recomputed: each incremental.by output column must equal its source column in every row",
                    what.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// The stored rows `df` selects, cast to `schema` by column name (a column
/// the table lacks yet reads as null).
async fn stored_rows(table: &str, df: DataFrame, schema: &SchemaRef) -> Result<Vec<RecordBatch>> {
    let batches = df.collect().await.map_err(df_error(table))?;
    batches
        .into_iter()
        .map(|b| {
            let columns = schema
                .fields()
                .iter()
                .map(|f| match b.column_by_name(f.name()) {
                    Some(c) => cast(c, f.data_type()).map_err(|e| Error::Internal(e.to_string())),
                    None => Ok(deltalake::arrow::array::new_null_array(f.data_type(), b.num_rows())),
                })
                .collect::<Result<Vec<_>>>()?;
            let nullable: SchemaRef = Arc::new(Schema::new(
                schema.fields().iter().map(|f| f.as_ref().clone().with_nullable(true)).collect::<Vec<_>>(),
            ));
            RecordBatch::try_new(nullable, columns).map_err(|e| Error::Internal(e.to_string()))
        })
        .collect()
}

/// The model fingerprint stored with the table's last curate commit.
async fn last_fingerprint(table: &DeltaTable) -> Option<String> {
    use futures::StreamExt as _;
    // Maintenance commits (optimize, vacuum) can come in between.
    let mut history = table.history(Some(100));
    while let Some(Ok(commit)) = history.next().await {
        if commit::stage_of(&commit.info) == Some("curate") {
            return commit.info.get(MODEL_KEY).and_then(|v| v.as_str()).map(str::to_string);
        }
    }
    None
}
