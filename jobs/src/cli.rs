//! Command-line parsing and the job runners.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand, ValueEnum};
use weir::capture::PartitionSet;
use weir::curate::features::FeatureRequest;
use weir::export::Format;
use weir::pipeline::{load_pipeline, LoadedPipeline};
use weir::report::RunReport;
use weir::run::{self, exit, Finished, Job, JobRequest, Outputs};
use weir::Error;

#[derive(Parser, Debug)]
#[command(name = "weir", version, about = "Land Event Hubs Capture files in Delta Lake, exactly once", long_about = None)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    /// Log filter (RUST_LOG wins when set), e.g. `debug`, `weir=debug,warn`.
    /// The default keeps Weir at info and its libraries at warn.
    #[arg(long, default_value = DEFAULT_LOG, global = true)]
    log: String,
    #[command(subcommand)]
    command: Command,
}

/// delta-kernel logs a benign error while probing a table that does not exist
/// yet, and delta-rs warns on every commit that binary columns get no
/// statistics; real failures reach Weir as errors and are reported by it.
const DEFAULT_LOG: &str = "warn,weir=info,buoyant_kernel=off,deltalake_core::writer::stats=error";

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check pipeline files; print every problem with file, line and key.
    Validate {
        /// Pipeline files.
        #[arg(required = true)]
        pipelines: Vec<PathBuf>,
    },
    /// Ingest new capture files into the raw table.
    Ingest(IngestArgs),
    /// Parse, check, protect and dedup new raw events into the processed
    /// and quarantine tables.
    Process(ProcessArgs),
    /// Recompute the curated tables from what changed in their sources.
    Curate(CurateArgs),
    /// Keep tables healthy: row retention, compaction or z-order, vacuum,
    /// checkpoints (per the pipeline's maintain: policies).
    Maintain(MaintainArgs),
    /// Run every stage in order: ingest, process, curate (those declared).
    Run(RunArgs),
    /// Right to be forgotten: delete data subjects' rows from every table,
    /// recompute curated tables, and log the request.
    Erase(EraseArgs),
    /// What the next `weir run` would read and write; changes nothing.
    Plan(PlanArgs),
    /// Tables, ingest lag per partition, stages behind, last runs.
    Status(InspectArgs),
    /// Print or save a Delta table's change feed.
    Changes(ChangesArgs),
    /// Point-in-time feature values for (entity, timestamp) rows of a file.
    Features(FeaturesArgs),
}

#[derive(Args, Debug)]
struct ChangesArgs {
    /// The table: a local path or an object-store URL.
    table: String,
    /// First version to include.
    #[arg(long)]
    from_version: u64,
    /// Last version to include (default: the latest).
    #[arg(long)]
    to_version: Option<u64>,
    /// Output format (default: from the --output extension, else jsonl).
    #[arg(long, value_enum)]
    format: Option<FileFormat>,
    /// Output file (default: stdout; Parquet needs a file).
    #[arg(long)]
    output: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct InspectArgs {
    /// Pipeline file.
    pipeline: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct PlanArgs {
    #[command(flatten)]
    inspect: InspectArgs,
    /// Only these Event Hub partitions, e.g. `0,3,8-15`.
    #[arg(long, value_parser = parse_partitions)]
    partitions: Option<PartitionSet>,
}

#[derive(Args, Debug)]
struct EraseArgs {
    /// Pipeline file.
    pipeline: PathBuf,
    /// A data subject as FIELD=VALUE, FIELD a subject-key field of the body
    /// schema (repeatable), e.g. `userId=u-42`.
    #[arg(long = "subject")]
    subjects: Vec<String>,
    /// A file of subjects, one per line: FIELD=VALUE, or a bare value when
    /// the schema has one subject-key field. `#` starts a comment line.
    #[arg(long)]
    subjects_file: Option<PathBuf>,
    /// Delete the erased rows' old files, change-data files and log history
    /// now. Time travel to versions before the erase is lost.
    #[arg(long)]
    purge: bool,
    /// Find and count the rows, change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Write the JSON run report here instead of stdout.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Also write the run as Prometheus text-format metrics to this file.
    #[arg(long)]
    metrics_file: Option<PathBuf>,
    /// Emit OpenLineage run events to a file or an http(s):// endpoint.
    #[arg(long)]
    lineage: Option<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum FileFormat {
    Jsonl,
    Csv,
    Parquet,
}

#[derive(Args, Debug)]
struct FeaturesArgs {
    /// Pipeline file.
    pipeline: PathBuf,
    /// The curated feature table (its name in the pipeline).
    #[arg(long)]
    table: String,
    /// Parquet or CSV file of entity rows: the entity key columns and a
    /// timestamp column.
    #[arg(long)]
    entities: PathBuf,
    /// The timestamp column of the entity file.
    #[arg(long)]
    as_of_column: String,
    /// Output file: .parquet, .csv or .jsonl (default: JSON lines on stdout).
    #[arg(long)]
    output: Option<PathBuf>,
}

/// What every job takes: the pipeline, a dry run, and where the outcome
/// goes besides the exit code.
#[derive(Args, Debug)]
struct CommonArgs {
    /// Pipeline file.
    pipeline: PathBuf,
    /// Write the JSON run report here instead of stdout.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Read and plan, but write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Also write the run as Prometheus text-format metrics to this file
    /// (for the node_exporter textfile collector).
    #[arg(long)]
    metrics_file: Option<PathBuf>,
    /// Emit OpenLineage run events: a file (JSON lines appended) or an
    /// http(s):// endpoint (e.g. Marquez's /api/v1/lineage).
    #[arg(long)]
    lineage: Option<String>,
}

/// Which Event Hub partitions ingest reads.
#[derive(Args, Debug)]
struct PartitionArgs {
    /// Only these Event Hub partitions, e.g. `0,3,8-15`.
    #[arg(long, value_parser = parse_partitions, conflicts_with = "shard")]
    partitions: Option<PartitionSet>,
    /// Only shard INDEX of COUNT, e.g. `2/8`: the partitions whose number
    /// modulo COUNT is INDEX (for Indexed Jobs and mapped tasks).
    #[arg(long, value_parser = PartitionSet::parse_shard)]
    shard: Option<PartitionSet>,
}

/// How curate recomputes.
#[derive(Args, Debug)]
struct CurateFlags {
    /// Recompute every curated table from scratch (the change feed still
    /// shows only rows whose values moved).
    #[arg(long)]
    full_refresh: bool,
    /// Only this curated table (repeatable).
    #[arg(long = "table")]
    tables: Vec<String>,
}

#[derive(Args, Debug)]
struct IngestArgs {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    partitions: PartitionArgs,
}

#[derive(Args, Debug)]
struct ProcessArgs {
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Args, Debug)]
struct CurateArgs {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    curate: CurateFlags,
}

#[derive(Args, Debug)]
struct MaintainArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Only this table (repeatable).
    #[arg(long = "table")]
    tables: Vec<String>,
    /// Vacuum even below the table's safety window.
    #[arg(long)]
    force: bool,
    /// Only give back the rewrite leases a maintain run that no longer runs
    /// left on the tables (its holder on another host, or killed), giving
    /// the reason; does nothing else.
    #[arg(long, value_name = "REASON")]
    release_leases: Option<String>,
}

#[derive(Args, Debug)]
struct RunArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Ingest: only these partitions or this shard.
    #[command(flatten)]
    partitions: PartitionArgs,
    /// Curate: how it recomputes.
    #[command(flatten)]
    curate: CurateFlags,
}

fn partitions(p: PartitionArgs) -> Option<PartitionSet> {
    p.partitions.or(p.shard)
}

fn parse_partitions(s: &str) -> Result<PartitionSet, String> {
    PartitionSet::parse(s)
}

/// When an upload fails while it is being completed (disk full, a
/// read-only lake), delta-rs tries to abort it, object_store's `BufWriter`
/// panics because completion has begun, and delta-rs catches that panic
/// and logs a warning; the write's error then ends the run with its exit
/// code. The default hook would still print the caught panic as if Weir
/// had crashed, so that one is logged at debug; every other panic goes to
/// the default hook.
fn quiet_caught_upload_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message =
            payload.downcast_ref::<&str>().copied().or_else(|| payload.downcast_ref::<String>().map(String::as_str));
        let in_buffered_upload =
            info.location().is_some_and(|l| l.file().contains("object_store") && l.file().ends_with("buffered.rs"));
        if in_buffered_upload && message == Some("Already shut down") {
            tracing::debug!("a failed upload could not be aborted; its parts are left to the store's cleanup");
            return;
        }
        default(info);
    }));
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { exit::CONFIG } else { exit::OK });
        }
    };
    init_logging(&cli);
    quiet_caught_upload_panic();
    // The crash tests' hooks (WEIR_FAULT, WEIR_PAUSE) act in the binary only.
    weir::lake::fault::arm();
    if let Err(e) = weir::storage::fault::arm() {
        eprintln!("weir: {e}");
        return ExitCode::from(exit::CONFIG);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weir: cannot start the async runtime: {e}");
            return ExitCode::from(exit::INTERNAL);
        }
    };
    let code = match cli.command {
        Command::Validate { pipelines } => runtime.block_on(validate(&pipelines)),
        Command::Ingest(a) => {
            let request = JobRequest { partitions: partitions(a.partitions), ..Default::default() };
            runtime.block_on(run_job(Job::Ingest, a.common, request))
        }
        Command::Process(a) => runtime.block_on(run_job(Job::Process, a.common, JobRequest::default())),
        Command::Curate(a) => {
            let request =
                JobRequest { full_refresh: a.curate.full_refresh, tables: a.curate.tables, ..Default::default() };
            runtime.block_on(run_job(Job::Curate, a.common, request))
        }
        Command::Maintain(a) => {
            let request =
                JobRequest { tables: a.tables, force: a.force, release_leases: a.release_leases, ..Default::default() };
            runtime.block_on(run_job(Job::Maintain, a.common, request))
        }
        Command::Run(a) => {
            let request = JobRequest {
                partitions: partitions(a.partitions),
                full_refresh: a.curate.full_refresh,
                tables: a.curate.tables,
                ..Default::default()
            };
            runtime.block_on(run_job(Job::Run, a.common, request))
        }
        Command::Erase(args) => runtime.block_on(erase(args)),
        Command::Plan(args) => {
            runtime.block_on(inspect(args.inspect, Some(args.partitions.unwrap_or_else(PartitionSet::all))))
        }
        Command::Status(args) => runtime.block_on(inspect(args, None)),
        Command::Changes(args) => runtime.block_on(changes(args)),
        Command::Features(args) => runtime.block_on(features(args)),
    };
    // The job is over: a decoder stuck on a corrupt file (abandoned at its
    // deadline) must not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    match code {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("weir: {e:#}");
            ExitCode::from(exit::INTERNAL)
        }
    }
}

fn init_logging(cli: &Cli) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cli.log));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn validate(files: &[PathBuf]) -> anyhow::Result<u8> {
    let mut invalid = 0;
    let mut out = std::io::stdout();
    for file in files {
        match load_pipeline(file) {
            // The tables the pipeline already wrote must be able to take
            // what it now produces.
            Ok(loaded) => match check_against_tables(&loaded).await {
                Ok(problems) if problems.is_empty() => writeln!(out, "{}: ok", file.display())?,
                Ok(problems) => {
                    invalid += 1;
                    // With the line of the key, as load problems have.
                    for (path, message) in problems {
                        writeln!(out, "{}", loaded.problem(&path, message))?;
                    }
                }
                Err(e) => {
                    invalid += 1;
                    writeln!(out, "{}: {e}", file.display())?;
                }
            },
            Err(Error::InvalidPipeline { problems }) => {
                invalid += 1;
                for p in problems {
                    writeln!(out, "{p}")?;
                }
            }
            Err(e) => {
                invalid += 1;
                writeln!(out, "{}: {e}", file.display())?;
            }
        }
    }
    Ok(if invalid == 0 { exit::OK } else { exit::CONFIG })
}

/// Checks that need storage: the processed table can take what the pipeline
/// now produces, and the curated models plan against their inputs.
async fn check_against_tables(loaded: &LoadedPipeline) -> weir::Result<Vec<(String, String)>> {
    let mut problems = weir::process::check_table_schema(loaded).await?;
    problems.extend(weir::curate::check_models(loaded).await?);
    problems.extend(weir::maintain::check_tables(loaded).await?);
    Ok(problems)
}

/// Prints an error the way job runs do and returns its exit code.
fn fail(e: &Error) -> u8 {
    match e {
        Error::InvalidPipeline { problems } => {
            for p in problems {
                eprintln!("{p}");
            }
        }
        e => eprintln!("weir: {e}"),
    }
    exit::of(e.class())
}

async fn changes(args: ChangesArgs) -> anyhow::Result<u8> {
    let location = match weir::storage::Location::parse(&args.table) {
        Ok(l) => l,
        Err(reason) => return Ok(fail(&Error::InvalidLocation { location: args.table.clone(), reason })),
    };
    let format = match (args.format, &args.output) {
        (Some(FileFormat::Jsonl), _) => Format::Jsonl,
        (Some(FileFormat::Csv), _) => Format::Csv,
        (Some(FileFormat::Parquet), _) => Format::Parquet,
        (None, Some(p)) => Format::from_path(p).unwrap_or(Format::Jsonl),
        (None, None) => Format::Jsonl,
    };
    let result = async {
        let (schema, batches) = weir::export::changes(&location, args.from_version, args.to_version).await?;
        weir::export::write(&batches, &schema, format, args.output.as_deref())
    }
    .await;
    match result {
        Ok(rows) => {
            tracing::info!(rows, table = %location, "change feed written");
            Ok(exit::OK)
        }
        Err(e) => Ok(fail(&e)),
    }
}

async fn features(args: FeaturesArgs) -> anyhow::Result<u8> {
    let result = async {
        let loaded = load_pipeline(&args.pipeline)?;
        let request = FeatureRequest {
            table: args.table.clone(),
            entities: args.entities.clone(),
            as_of_column: args.as_of_column.clone(),
            output: args.output.clone(),
        };
        weir::curate::features::lookup(&loaded, &request).await
    }
    .await;
    match result {
        Ok(report) => {
            // The rows go to stdout when there is no output file.
            if args.output.is_some() {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                tracing::info!(rows = report.rows, matched = report.matched, "features written");
            }
            Ok(exit::OK)
        }
        Err(e) => Ok(fail(&e)),
    }
}

async fn erase(args: EraseArgs) -> anyhow::Result<u8> {
    if let Err(code) = report_path_writable(args.report.as_deref()) {
        return Ok(code);
    }
    let args = &args;
    let outputs =
        Outputs { metrics_file: args.metrics_file.as_deref(), lineage: args.lineage.as_deref(), partitions: None };
    let finished = run::drive("erase", &args.pipeline, args.dry_run, &outputs, |loaded, run_id| async move {
        let result = async {
            let fields = weir::ingest::subject_fields(&loaded)?;
            let default_field = (fields.len() == 1).then(|| fields[0].as_str());
            let mut subjects = Vec::new();
            for s in &args.subjects {
                subjects.push(
                    weir::erase::Subject::parse(s, None)
                        .map_err(|message| Error::Request { message: format!("--subject {message}") })?,
                );
            }
            if let Some(file) = &args.subjects_file {
                subjects.extend(weir::erase::read_subjects_file(file, default_field)?);
            }
            // The values are personal data: the log names the count only.
            tracing::info!(subjects = subjects.len(), purge = args.purge, "erase started");
            let options = weir::erase::EraseOptions { subjects, purge: args.purge, dry_run: args.dry_run, run_id };
            let stages = weir::erase::erase(&loaded, &options).await?;
            for w in stages.iter().filter_map(|s| s.erasure.as_ref()).flat_map(|e| &e.warnings) {
                tracing::warn!("{w}");
            }
            Ok::<_, Error>(stages)
        }
        .await;
        match result {
            Ok(stages) => (stages, Ok(())),
            Err(e) => (Vec::new(), Err(e)),
        }
    })
    .await;
    finish(finished, args.report.as_deref())
}

/// `weir status`, or `weir plan` for the partitions given.
async fn inspect(args: InspectArgs, plan: Option<PartitionSet>) -> anyhow::Result<u8> {
    let result = async {
        let loaded = load_pipeline(&args.pipeline)?;
        if let Some(partitions) = plan {
            let p = weir::plan::plan(&loaded, &partitions).await?;
            Ok(if args.json { serde_json::to_string_pretty(&p).unwrap_or_default() } else { plan_text(&p) })
        } else {
            let s = weir::status::status(&loaded).await?;
            Ok::<_, Error>(if args.json {
                serde_json::to_string_pretty(&s).unwrap_or_default()
            } else {
                status_text(&s)
            })
        }
    }
    .await;
    match result {
        Ok(text) => {
            println!("{text}");
            Ok(exit::OK)
        }
        Err(e) => Ok(fail(&e)),
    }
}

fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "-".to_string(), |v| v.to_string())
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

fn status_text(s: &weir::status::Status) -> String {
    let mut out = format!("pipeline {} at {}\n\ntables\n", s.pipeline, s.checked_at.format("%Y-%m-%d %H:%M:%SZ"));
    for t in &s.tables {
        if !t.exists {
            out += &format!("  {:<22} not created yet  {}\n", t.table, t.location);
            continue;
        }
        out += &format!(
            "  {:<22} v{:<6} {:>10} rows {:>6} files {:>10}  last {} {} ({})\n",
            t.table,
            opt(&t.version),
            opt(&t.rows),
            t.files,
            mb(t.bytes),
            opt(&t.last_operation),
            t.last_commit_at.map_or("-".into(), |d| d.format("%Y-%m-%d %H:%M:%SZ").to_string()),
            opt(&t.last_job),
        );
    }
    out += "\npartitions (ingest lag)\n";
    for (id, p) in &s.partitions {
        out += &format!(
            "  {:<4} watermark {:<10} newest file {} ({} files, {} behind, {:.0} min)\n",
            id,
            opt(&p.watermark),
            opt(&p.newest_file),
            p.files_behind,
            mb(p.bytes_behind),
            p.minutes_behind,
        );
    }
    out += "\nstages\n";
    for l in &s.stages {
        out += &format!(
            "  {:<30} reads {:<12} consumed v{} of v{} ({} behind)\n",
            l.stage,
            l.source,
            opt(&l.consumed_version),
            opt(&l.source_version),
            l.versions_behind
        );
    }
    out += "\nlast runs\n";
    if s.last_runs.is_empty() {
        out += "  none recorded (declare tables.runs to keep them)\n";
    }
    for r in &s.last_runs {
        out += &format!("  {:<10} {} {} exit {} ({})\n", r.job, r.finished_at, r.outcome, r.exit_code, r.run_id);
    }
    out
}

fn plan_text(p: &weir::plan::Plan) -> String {
    let i = &p.ingest;
    let mut out = format!(
        "pipeline {}: a run now would\n\ningest {} capture files ({}), of which {} new ({})\n",
        p.pipeline,
        i.files,
        mb(i.bytes),
        i.new_files,
        mb(i.new_bytes)
    );
    for (id, part) in &i.partitions {
        out += &format!(
            "  {:<4} watermark {:<10} {} files ({}), {} new  {} .. {}\n",
            id,
            opt(&part.watermark),
            part.files,
            mb(part.bytes),
            part.new_files,
            opt(&part.first_file),
            opt(&part.last_file)
        );
    }
    for s in &p.stages {
        out += &format!("{} from {}: {}", s.stage, s.source, s.mode);
        if let (Some(f), Some(t)) = (s.from_version, s.to_version) {
            out += &format!(", versions {f}..={t} ({} files, {})", s.files, mb(s.bytes));
        }
        out += "\n";
    }
    out += "\ntables\n";
    for t in &p.tables {
        out += &format!(
            "  {:<22} {}  {}\n",
            t.table,
            t.version.map_or("(created by the run)".to_string(), |v| format!("v{v}")),
            t.location
        );
    }
    out
}

/// A stage job through the driver, with a progress bar on a terminal.
async fn run_job(job: Job, common: CommonArgs, mut request: JobRequest) -> anyhow::Result<u8> {
    if let Err(code) = report_path_writable(common.report.as_deref()) {
        return Ok(code);
    }
    request.dry_run = common.dry_run;
    let bar = (matches!(job, Job::Ingest | Job::Run) && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("ingest {bar:30} {pos}/{len} files {elapsed}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    request.on_progress = bar.clone().map(|bar| {
        Arc::new(move |done: u64, total: u64| {
            bar.set_length(total);
            bar.set_position(done);
        }) as Arc<dyn Fn(u64, u64) + Send + Sync>
    });
    let outputs = Outputs {
        metrics_file: common.metrics_file.as_deref(),
        lineage: common.lineage.as_deref(),
        partitions: request.partitions.as_ref().map(ToString::to_string),
    };
    let request = &request;
    let finished = run::drive(job.name(), &common.pipeline, common.dry_run, &outputs, |loaded, run_id| async move {
        let mut stages = Vec::new();
        let result = run::run_stages(job, request, &loaded, &run_id, &mut stages).await;
        (stages, result)
    })
    .await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    finish(finished, common.report.as_deref())
}

/// Tells what ended a run, prints its report and returns its exit code.
fn finish(finished: Finished, report: Option<&Path>) -> anyhow::Result<u8> {
    match &finished.error {
        Some(Error::InvalidPipeline { problems }) => {
            for p in problems {
                eprintln!("{p}");
            }
        }
        Some(e) => tracing::error!(error = %e, "run failed"),
        None => {}
    }
    write_report(&finished.report, report)?;
    Ok(finished.exit_code)
}

fn write_report(report: &RunReport, path: Option<&Path>) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(report)?;
    if let Some(p) = path {
        // Checked before the run (`report_path_writable`); if it still
        // fails, the run's outcome stands and the report goes to stdout.
        match std::fs::write(p, json.clone() + "\n") {
            Ok(()) => return Ok(()),
            Err(e) => tracing::error!(file = %p.display(), error = %e, "cannot write the run report; printing it"),
        }
    }
    // A closed stdout (the scheduler went away) is not worth a panic: the
    // commits are done and the exit code still tells the outcome.
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{json}").and_then(|()| out.flush()) {
        tracing::warn!(error = %e, "cannot write the run report to stdout");
    }
    Ok(())
}

/// A `--report` file that cannot be written is a usage error found before
/// the run changes anything, not after it committed.
fn report_path_writable(path: Option<&Path>) -> Result<(), u8> {
    let Some(p) = path else { return Ok(()) };
    match std::fs::OpenOptions::new().append(true).create(true).open(p) {
        Ok(_) => Ok(()),
        Err(e) => {
            eprintln!("weir: --report {}: cannot write it: {e}", p.display());
            Err(exit::CONFIG)
        }
    }
}
