//! The ingest stage: capture files → raw Delta table, exactly once per
//! (partition, sequence number).
//!
//! How exactly-once holds: the raw table carries one application transaction
//! per Event Hub partition, `weir/<pipeline>/ingest/<partition>`, whose
//! version is the last sequence number committed for it. Rows and those
//! versions go in the same Delta commit, so a crash either commits both or
//! neither; a rerun reads the versions back and skips every event at or below
//! them. Path times are never trusted for this: a back-filled file with an
//! older path time but newer sequence numbers is still ingested. Files read
//! to their end are listed in a per-partition ledger ([`ledger`]), so later
//! runs skip them without decoding them again while the watermark covers
//! their numbers.
//!
//! Files are read in (window, partition) order, streamed in chunks of whole
//! Avro blocks that decode in parallel on all cores ([`read`]), encoded into
//! Parquet as they are accepted ([`sink`]), and cut into commits by size
//! ([`crate::pipeline::IngestConfig`]), inside a large file as well as
//! between files: memory follows the commit size, never the file size. A
//! commit in the middle of a file is safe for the same reason a rerun is:
//! the watermark is a sequence number, and a file read again skips every
//! event at or below it.
//!
//! Within a file, order does not matter: every event above the partition's
//! mark when the file begins is taken, each sequence number once (a number
//! given twice is the same event), and gaps are found over the file's
//! numbers, sorted, when it ends. Since a commit's watermark is the highest
//! number taken, a commit is cut inside a file only where no lower number
//! can still come from it: while the file is in order, or while its numbers
//! so far run without a hole from the mark up (`FileProgress::may_cut`).
//! Any other file (one running backwards, say) is committed whole at its
//! end, and its rows are held until then. Numbers at or below the mark in a
//! later file of the run are behind what earlier files took and were never
//! ingested: reported as `out_of_order`, not taken.
//! A file that cannot be decoded stops its partition where the damage is
//! (or the rest of the file is skipped, by policy); events before the
//! damage are valid and ingested; other partitions carry on.
//!
//! Hazard: the watermark is one number per partition. Events below it that
//! arrive later (a file back-filled after newer ones were ingested) cannot be
//! told apart from events already ingested; sequence gaps are therefore
//! reported loudly when they are first seen. Likewise, a file in order for
//! more than a commit whose later events fall back into a gap the commit
//! passed (reported before the commit) or, on a partition's first file,
//! below its first number: a run that goes on takes them, a rerun after a
//! crash between the two commits cannot.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Utc;
use deltalake::arrow::array::{ArrayRef, AsArray, Date32Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use deltalake::arrow::compute::filter_record_batch;
use deltalake::arrow::datatypes::Int64Type;
use deltalake::kernel::Transaction;
use futures::stream::BoxStream;
use futures::StreamExt;

use crate::capture::decode::capture_schema;
use crate::capture::{discover, list_partitions, CaptureFile, PartitionSet, PathFormat};
use crate::delta::{self, TableSpec};
use crate::lake::commit::CommitInfo;
use crate::lake::contract::{raw_schema_with, RAW_PARTITION_COLUMN};
use crate::lake::fault::{fault_point, pause_point};
use crate::lake::feed::AppendFeed;
use crate::lake::Marker;
use crate::pipeline::{IngestConfig, LoadedPipeline, OnCorruptFile, Pipeline};
use crate::report::plan::{IngestPlan, PartitionPlan};
use crate::report::{
    DataProblem, PartitionReport, ProblemKind, SequenceGap, Stage, StageReport, TableWrite, UnmatchedFiles,
};
use crate::stage::StageWork;
use crate::storage::Location;
use crate::{Error, Result};

mod ledger;
mod read;
mod seqs;
mod sink;
use ledger::Ledgers;
use seqs::SeqRanges;
use sink::RawSink;

/// The subject-key fields of the pipeline's body schema (none without
/// one); with routes, of every route's schema.
pub fn subject_fields(loaded: &LoadedPipeline) -> Result<Vec<String>> {
    loaded.subject_fields()
}

/// Options of one ingest run.
#[derive(Clone)]
pub struct IngestOptions {
    /// Partitions to work on.
    pub partitions: PartitionSet,
    /// Plan only: read and decode, write nothing.
    pub dry_run: bool,
    /// Id stored in every row and in the report.
    pub run_id: String,
    /// Called after each file with (files done, files total).
    pub on_progress: Option<Arc<dyn Fn(u64, u64) + Send + Sync>>,
    /// Each raw version committed is handed over here with the rows it
    /// appended (`weir run`: process takes them from memory). The run
    /// does not close it; whoever gave it does, once ingest returned.
    pub feed: Option<AppendFeed>,
}

impl IngestOptions {
    /// A run over every partition that writes, without progress calls or
    /// a hand-over.
    pub fn new(run_id: impl Into<String>) -> IngestOptions {
        IngestOptions {
            partitions: PartitionSet::all(),
            dry_run: false,
            run_id: run_id.into(),
            on_progress: None,
            feed: None,
        }
    }
}

/// Per-partition state while a run goes.
#[derive(Default)]
struct PartitionState {
    /// Highest sequence number committed or pending in this run.
    high: Option<i64>,
    /// Newest capture window (epoch seconds) committed for the partition.
    window_marker: Option<i64>,
    /// Highest sequence number known to be in the table (by this run or
    /// another worker): events at or below it are already ingested.
    committed: Option<i64>,
    halted: bool,
    /// A corrupt file was skipped by policy: the gap it leaves is expected.
    skipped_file: bool,
    /// Files whose first event is beyond a gap, held back in case a file
    /// read later in this run (a back-fill under an older path) fills it.
    parked: Vec<Parked>,
    report: PartitionReport,
}

/// Rows waiting for the next commit.
#[derive(Default)]
struct Pending {
    /// Kept until the commit lands: if another ingest committed some of
    /// these events meanwhile, the rest are written again without them.
    batches: Vec<(String, RecordBatch)>,
    /// How many of `batches` were queued to the writer.
    sent: usize,
    /// Capture bytes each of `batches` was read from.
    sizes: Vec<u64>,
    /// Newest window (epoch seconds) of the files in the batch, per partition.
    windows: BTreeMap<String, i64>,
    bytes: u64,
    events: u64,
    /// Arrow memory of the decoded events.
    decoded: u64,
}

/// Runs the ingest stage: plans it, then executes the plan.
pub async fn ingest(loaded: &LoadedPipeline, options: &IngestOptions) -> Result<StageReport> {
    crate::stage::run(loaded, options).await
}

/// What planning an ingest found: the raw table, the files to read in
/// order and each partition's state from its markers.
pub struct Planned {
    table: Option<deltalake::DeltaTable>,
    spec: TableSpec,
    source: Location,
    raw_location: Location,
    subjects: Vec<String>,
    files: FilePlan,
    /// Unmatched objects and files skipped as done, found by the listing.
    report: StageReport,
}

impl StageWork for IngestOptions {
    type Plan = Planned;
    type Summary = IngestPlan;

    fn dry_run(&self) -> bool {
        self.dry_run
    }

    /// Lists the capture files and reads the markers: the files a run reads
    /// now. The raw table is not created here (execution does that).
    async fn plan(&self, loaded: &LoadedPipeline) -> Result<Planned> {
        let pipeline = &loaded.pipeline;
        let source = loaded.location("source.capture.url")?;
        let raw_location = loaded.location("tables.raw.path")?;
        let format = PathFormat::parse(&pipeline.source.capture.path_format).map_err(|reason| {
            Error::InvalidLocation { location: pipeline.source.capture.path_format.clone(), reason }
        })?;
        let subjects = subject_fields(loaded)?;
        let RawTable { table, spec } = open_raw(loaded, &raw_location, &subjects).await?;
        let mut report = StageReport { stage: Stage::Ingest, ..Default::default() };
        let files = plan_files(pipeline, &source, &format, table.as_ref(), &self.partitions, &mut report).await?;
        Ok(Planned { table, spec, source, raw_location, subjects, files, report })
    }

    fn describe(plan: &Planned) -> IngestPlan {
        summary(&plan.files)
    }

    async fn execute(&self, loaded: &LoadedPipeline, plan: Planned) -> Result<StageReport> {
        let pipeline = &loaded.pipeline;
        let Planned { table, spec, source, raw_location, subjects, mut files, report } = plan;
        let table = match table {
            None if !self.dry_run => Some(delta::open_or_create(&raw_location, &spec).await?),
            table => table,
        };
        if let Some(t) = &table {
            files.ledgers.attach(t);
        }
        let write = TableWrite {
            table: "raw".into(),
            location: raw_location.to_string(),
            version_before: table.as_ref().and_then(|t| t.version()),
            versions_written: Vec::new(),
        };

        let width = Width::of(&pipeline.ingest, &source);
        let (store, _) = source.object_store()?;
        let reader = Reader {
            files: read::Files {
                store,
                source: source.to_string(),
                subjects: subjects.clone(),
                framing: loaded.body_framing()?,
            },
            width,
        };
        let run = RunContext {
            pipeline: &pipeline.name,
            run_id: &self.run_id,
            ingested_at: Utc::now().timestamp_micros(),
            subjects: &subjects,
        };
        let mut intake = Intake {
            states: files.states,
            ledgers: files.ledgers,
            report,
            pending: Pending::default(),
            current: FileProgress::default(),
            halt: pipeline.source.capture.on_corrupt_file == OnCorruptFile::Halt,
            park_budget: pipeline.ingest.commit_bytes,
            parked_bytes: 0,
            unreadable: None,
        };
        let mut out = Output {
            table,
            sink: None,
            write,
            spec: &spec,
            location: &raw_location,
            writers: width.decoders,
            dry_run: self.dry_run,
            commit_bytes: pipeline.ingest.commit_bytes,
            commit_events: pipeline.ingest.commit_events,
            commit_memory: pipeline.ingest.commit_memory_mb.saturating_mul(1024 * 1024),
            feed: self.feed.as_ref().filter(|_| !self.dry_run),
        };
        take_all(files.work, &reader, self, &mut intake, &mut out, &run).await?;
        finish(&reader, &mut intake, &mut out, &run).await?;
        if !self.dry_run {
            let lookback = pipeline.ingest.lookback_hours as i64 * 3600;
            let states = &intake.states;
            intake
                .ledgers
                .save(|partition| match states.get(partition) {
                    Some(s) => {
                        (s.report.watermark_after, s.window_marker.filter(|_| lookback > 0).map(|m| m - lookback))
                    }
                    None => (None, None),
                })
                .await;
        }
        // The other partitions' events are committed; a rerun reads the
        // file again.
        if let Some(e) = intake.unreadable.take() {
            return Err(e);
        }

        let Intake { states, mut report, .. } = intake;
        let Output { table, write, .. } = out;
        drop(table);
        for (partition, state) in states {
            report.events_written += state.report.events_written;
            report.partitions.insert(partition, state.report);
        }
        report.tables.push(write);
        Ok(report)
    }
}

/// The plan's figures per partition: files and bytes to read, and of
/// those the ones newer than the newest window ingested.
fn summary(files: &FilePlan) -> IngestPlan {
    let mut out = IngestPlan::default();
    for (partition, state) in &files.states {
        let ingested = state.window_marker;
        let mine: Vec<&CaptureFile> = files.work.iter().filter(|f| &f.partition_id == partition).collect();
        let mut part = PartitionPlan {
            watermark: state.committed,
            first_file: mine.first().map(|f| f.name.clone()),
            last_file: mine.last().map(|f| f.name.clone()),
            ..Default::default()
        };
        for f in mine {
            part.files += 1;
            part.bytes += f.size;
            if ingested.is_none_or(|w| f.window.timestamp() > w) {
                part.new_files += 1;
                part.new_bytes += f.size;
            }
        }
        out.files += part.files;
        out.bytes += part.bytes;
        out.new_files += part.new_files;
        out.new_bytes += part.new_bytes;
        out.partitions.insert(partition.clone(), part);
    }
    out
}

/// The raw table (none before the first run) and the contract it is
/// created with and checked against.
struct RawTable {
    table: Option<deltalake::DeltaTable>,
    spec: TableSpec,
}

/// Opens the raw table if it exists and checks that it belongs to this
/// pipeline.
async fn open_raw(loaded: &LoadedPipeline, raw_location: &Location, subjects: &[String]) -> Result<RawTable> {
    let pipeline = &loaded.pipeline;
    let spec = TableSpec {
        name: format!("{}_raw", pipeline.name),
        description: pipeline.tables.raw.description.clone(),
        schema: raw_schema_with(subjects),
        partition_columns: vec![RAW_PARTITION_COLUMN.to_string()],
    };
    let table = delta::open(raw_location).await?;
    if let Some(t) = &table {
        delta::check_owner(t, raw_location, &spec)?;
    }
    Ok(RawTable { table, spec })
}

/// What a run reads: each partition's state from its progress markers, and
/// the files to read in (window, partition) order.
struct FilePlan {
    states: BTreeMap<String, PartitionState>,
    work: Vec<CaptureFile>,
    /// The files each partition's commits are known to hold.
    ledgers: Ledgers,
}

/// Lists the capture files and plans the run. Adds the unmatched objects
/// and the files skipped as done (older than the lookback) to `report`.
async fn plan_files(
    pipeline: &Pipeline,
    source: &Location,
    format: &PathFormat,
    table: Option<&deltalake::DeltaTable>,
    selected: &PartitionSet,
    report: &mut StageReport,
) -> Result<FilePlan> {
    let lookback = pipeline.ingest.lookback_hours as i64 * 3600;
    let since = match table {
        Some(t) if lookback > 0 => listing_cutoffs(t, &pipeline.name, source, format, selected, lookback).await?,
        _ => BTreeMap::new(),
    };
    let found = discover(source, format, selected, &since).await?;
    report.unmatched_files = UnmatchedFiles {
        count: found.unmatched.len() as u64,
        sample: found.unmatched.iter().take(20).cloned().collect(),
    };
    if !found.unmatched.is_empty() {
        tracing::warn!(count = found.unmatched.len(), first = %found.unmatched[0], "objects below the capture source do not match the path format");
    }

    let ledgers = Ledgers::load(table, found.partitions.keys()).await;
    let mut states: BTreeMap<String, PartitionState> = BTreeMap::new();
    let mut work: Vec<CaptureFile> = Vec::new();
    for (partition, files) in &found.partitions {
        let (watermark, window_marker) = match table {
            Some(t) => (
                delta::progress(t, &Marker::IngestWatermark { pipeline: &pipeline.name, partition }.app_id()).await?,
                delta::progress(t, &Marker::IngestWindow { pipeline: &pipeline.name, partition }.app_id()).await?,
            ),
            None => (None, None),
        };
        let state = states.entry(partition.clone()).or_default();
        state.window_marker = window_marker;
        state.high = watermark;
        state.committed = watermark;
        state.report.watermark_before = watermark;
        state.report.watermark_after = watermark;
        state.report.files_listed = files.len() as u64;
        state.report.newest_file_window = files.last().map(|f| f.window);
        for file in files {
            let old = lookback > 0 && window_marker.is_some_and(|m| file.window.timestamp() < m - lookback);
            if old || ledgers.holds(file, watermark) {
                report.files_skipped_as_done += 1;
            } else {
                work.push(file.clone());
            }
        }
    }
    work.sort_by(|a, b| (a.window, &a.partition_id, &a.name).cmp(&(b.window, &b.partition_id, &b.name)));
    Ok(FilePlan { states, work, ledgers })
}

/// Partitions whose newest ingested window is known are listed only from
/// the lookback before it (when the path format has date folders).
async fn listing_cutoffs(
    table: &deltalake::DeltaTable,
    pipeline: &str,
    source: &Location,
    format: &PathFormat,
    selected: &PartitionSet,
    lookback: i64,
) -> Result<BTreeMap<String, chrono::DateTime<Utc>>> {
    let mut since = BTreeMap::new();
    let Some(partitions) = list_partitions(source, format).await? else { return Ok(since) };
    for p in partitions.iter().filter(|p| selected.contains(p)) {
        let marker = delta::progress(table, &Marker::IngestWindow { pipeline, partition: p }.app_id()).await?;
        if let Some(cutoff) = marker.and_then(|m| chrono::DateTime::from_timestamp(m - lookback, 0)) {
            since.insert(p.clone(), cutoff);
        }
    }
    Ok(since)
}

/// How many chunks decode at once, and how many files are opened ahead.
#[derive(Clone, Copy)]
struct Width {
    decoders: usize,
    fetches: usize,
}

impl Width {
    fn of(config: &IngestConfig, source: &Location) -> Width {
        let decoders = match config.decode_parallelism {
            0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
            n => n,
        };
        // Remote storage is latency-bound: open more files ahead than there
        // are decoders (each holds its first range in memory until it is
        // decoded).
        let fetches = match config.fetch_parallelism {
            0 if source.is_local() => decoders,
            0 => decoders.max(16),
            n => n,
        };
        Width { decoders, fetches }
    }
}

/// Reads capture files into decoded chunks, as wide as configured.
struct Reader {
    files: read::Files,
    width: Width,
}

/// Reads the planned files and takes their chunks, committing as commits
/// fill; a file that closes a gap brings back the files parked behind it.
async fn take_all(
    work: Vec<CaptureFile>,
    reader: &Reader,
    options: &IngestOptions,
    intake: &mut Intake,
    out: &mut Output<'_>,
    run: &RunContext<'_>,
) -> Result<()> {
    let total = work.len() as u64;
    let mut pieces = reader.files.read(work, reader.width.fetches, reader.width.decoders);
    let mut done = 0u64;
    while let Some(next) = pieces.next().await {
        let piece = next?;
        if piece.last {
            done += 1;
            if let Some(cb) = &options.on_progress {
                cb(done, total);
            }
        }
        let finished = intake.take(piece, run, true)?;
        out.settle(intake, run).await?;
        // The file may have closed a gap that held others back.
        if let Some(partition) = finished {
            while let Some(parked) = intake.unpark(&partition) {
                let mut reread = reader.files.read(vec![parked.file.clone()], 1, 1);
                out.replay(parked, &mut reread, true, intake, run).await?;
            }
        }
    }
    Ok(())
}

/// Ingests what is still parked and commits the rest.
async fn finish(reader: &Reader, intake: &mut Intake, out: &mut Output<'_>, run: &RunContext<'_>) -> Result<()> {
    // What is still parked follows a real gap: ingest it in sequence order,
    // reporting the gap. Files not held are read again on every core.
    let mut parked: Vec<(String, Parked)> = Vec::new();
    for (partition, state) in &mut intake.states {
        let mut these = std::mem::take(&mut state.parked);
        these.sort_by_key(|p| p.first);
        parked.extend(these.into_iter().map(|p| (partition.clone(), p)));
    }
    let again: Vec<CaptureFile> =
        parked.iter().filter(|(_, p)| p.held.is_none()).map(|(_, p)| p.file.clone()).collect();
    let mut reread = reader.files.read(again, reader.width.fetches, reader.width.decoders);
    for (_, p) in parked {
        out.replay(p, &mut reread, false, intake, run).await?;
    }
    out.settle(intake, run).await?;
    if intake.pending.events > 0 {
        out.commit(intake, run).await?;
    }
    Ok(())
}

fn first_sequence(batch: &RecordBatch) -> i64 {
    deltalake::arrow::compute::min(batch.column(0).as_primitive::<Int64Type>()).unwrap_or(i64::MAX)
}

/// The parked file that now continues the partition's sequence, if any.
fn next_unparked(state: &PartitionState) -> Option<usize> {
    let high = state.high?;
    state.parked.iter().enumerate().filter(|(_, p)| p.first <= high + 1).min_by_key(|(_, p)| p.first).map(|(i, _)| i)
}

/// A file held back because its first event is beyond a gap. Its decoded
/// chunks are held while all held files fit in a commit's size
/// (`ingest.commit_bytes` of capture files, as pending rows do); beyond
/// that only its name is kept and it is read again when the gap closes (or
/// at the end of the run): a capture file can be hundreds of MB.
struct Parked {
    file: CaptureFile,
    first: i64,
    held: Option<Vec<read::Piece>>,
}

/// The file whose chunks are being taken: chunks of one file arrive
/// together, in order.
#[derive(Default)]
struct FileProgress {
    /// Events read from the file so far.
    events: u64,
    /// Some of its events went into the pending commit.
    accepted: bool,
    /// The rest of the file is ignored (corrupt from here, or parked by
    /// name).
    skip_rest: bool,
    /// The rest of the file goes to the last parked file of its partition.
    holding: bool,
    /// The file, once its first chunk came.
    file: Option<Arc<CaptureFile>>,
    /// Its last chunk has been taken.
    done: bool,
    /// The partition's high mark when the file began: its events at or
    /// below it are earlier files' (taken, or already in the table).
    floor: Option<i64>,
    /// Sequence numbers taken from the file, in whatever order they came.
    taken: SeqRanges,
    /// Highest sequence number taken from the file.
    high: Option<i64>,
    /// Highest sequence number read from the file, taken or not.
    last: Option<i64>,
    /// Held back behind a gap: taken again later, from its first chunk.
    parked: bool,
    /// An event of the file came after a higher one.
    turned: bool,
    /// Gaps up to here were reported (at a commit cut inside the file).
    gaps_reported_to: Option<i64>,
    /// Sequence numbers at or below `floor` but above the committed mark:
    /// never ingested, and behind what earlier files of the run took.
    /// Reported once per file.
    out_of_order: Option<(i64, i64)>,
}

impl FileProgress {
    /// Whether a commit may be cut before the rest of the file is read.
    /// Its watermark is the file's highest number so far, and a rerun
    /// skips every number at or below it: safe when no number in between
    /// can still come. It cannot when the file has been in order (whatever
    /// comes later below is behind a gap that was reported), or when its
    /// numbers so far run without a hole from just above what the table or
    /// earlier files hold (a number that came twice is the same event).
    /// Otherwise the file is committed whole, at its end.
    fn may_cut(&self, committed: Option<i64>) -> bool {
        if self.done || !self.accepted || !self.turned {
            return true;
        }
        let lower = self.floor.max(committed);
        matches!((self.taken.single(), lower), (Some((first, _)), Some(l)) if first <= l.saturating_add(1))
    }
}

/// Decoded chunks → pending rows, with the per-partition bookkeeping.
struct Intake {
    states: BTreeMap<String, PartitionState>,
    /// Files read to their end, for the next run's plan.
    ledgers: Ledgers,
    report: StageReport,
    pending: Pending,
    current: FileProgress,
    /// `on_corrupt_file: halt`.
    halt: bool,
    /// Capture bytes of parked files whose chunks may be held.
    park_budget: u64,
    /// Capture bytes of parked files whose chunks are held.
    parked_bytes: u64,
    /// The first storage failure on a capture file: the run commits what
    /// it could and then ends with it.
    unreadable: Option<Error>,
}

impl Intake {
    /// Takes one chunk. `may_park`: a file beginning beyond a gap is held
    /// back rather than taken. Returns the file's partition when this was
    /// the last chunk of a file whose events were taken.
    fn take(&mut self, piece: read::Piece, run: &RunContext<'_>, may_park: bool) -> Result<Option<String>> {
        let (file, last) = (piece.file.clone(), piece.last);
        let taken = self.take_piece(piece, run, may_park);
        if last {
            let cur = &self.current;
            let halted = self.states.get(&file.partition_id).is_some_and(|s| s.halted);
            if taken.is_ok() && !cur.skip_rest && !cur.holding && !cur.parked && !halted {
                self.ledgers.finished(&file, cur.last);
            }
            self.current.done = true;
            if self.current.accepted {
                let state = self.states.get_mut(&file.partition_id).expect("partition state");
                report_gaps(&file, state, &mut self.report, &mut self.current);
            }
            if let Some((lo, hi)) = self.current.out_of_order.take() {
                self.report.problems.push(DataProblem {
                    kind: ProblemKind::OutOfOrder,
                    partition: Some(file.partition_id.clone()),
                    file: Some(file.name.clone()),
                    record: None,
                    message: format!(
                        "{}: sequence numbers {lo}..={hi} are below ones an earlier file of the same partition held, and were not ingested",
                        file.name
                    ),
                    blocking: true,
                });
            }
        }
        taken
    }

    /// Storage failed to give `file`: its partition stops before it (what
    /// was taken of it stays), the run goes on with the others and ends
    /// with the error.
    fn unreadable_file(&mut self, file: &CaptureFile, e: Error) {
        let state = self.states.get_mut(&file.partition_id).expect("partition state");
        self.current.skip_rest = true;
        state.halted = true;
        state.parked.clear();
        state.report.halted_at = Some(file.name.clone());
        tracing::error!(file = %file.name, partition = %file.partition_id, error = %e, "capture file unreadable");
        self.report.problems.push(DataProblem {
            kind: ProblemKind::UnreadableFile,
            partition: Some(file.partition_id.clone()),
            file: Some(file.name.clone()),
            record: None,
            message: format!(
                "{}: storage did not give the file ({e}); the partition stops before it, a rerun reads it again",
                file.name
            ),
            blocking: true,
        });
        self.unreadable.get_or_insert(e);
    }

    /// Whether a commit may be cut now (see [`FileProgress::may_cut`]); if
    /// it is cut inside a file, the gaps found in the file so far are
    /// reported first: the commit's watermark passes them.
    fn cut(&mut self) -> bool {
        let Some(file) = self.current.file.clone() else { return true };
        let Some(state) = self.states.get_mut(&file.partition_id) else { return true };
        if !self.current.may_cut(state.committed) {
            return false;
        }
        if !self.current.done && self.current.accepted {
            report_gaps(&file, state, &mut self.report, &mut self.current);
        }
        true
    }

    fn take_piece(&mut self, mut piece: read::Piece, run: &RunContext<'_>, may_park: bool) -> Result<Option<String>> {
        let file = piece.file.clone();
        let state = self.states.get_mut(&file.partition_id).expect("partition state");
        if piece.index == 0 {
            self.current = FileProgress { file: Some(file.clone()), floor: state.high, ..FileProgress::default() };
        }
        if let Some(e) = piece.unreadable.take() {
            self.unreadable_file(&file, e);
            return Ok(None);
        }
        let state = self.states.get_mut(&file.partition_id).expect("partition state");
        let cur = &mut self.current;
        if cur.holding {
            if let Some(held) = state.parked.last_mut().and_then(|p| p.held.as_mut()) {
                held.push(piece);
            }
            return Ok(None);
        }
        if state.halted || cur.skip_rest {
            return Ok(None);
        }
        if piece.index == 0 {
            self.report.files_read += 1;
            self.report.bytes_read += file.size;
            state.report.files_read += 1;
        }
        let batch = match piece.result {
            Ok(b) => b,
            Err(e) => {
                cur.skip_rest = true;
                let (halted, action) = match (self.halt, cur.accepted) {
                    (true, false) => (true, "partition halted before this file; fix or remove it, or set on_corrupt_file: skip".to_string()),
                    (true, true) => (true, format!(
                        "partition halted in this file after its first {} events, which are ingested; fix or remove it, or set on_corrupt_file: skip",
                        cur.events
                    )),
                    (false, false) => (false, "file skipped (on_corrupt_file: skip); its events are not ingested".to_string()),
                    (false, true) => (false, format!(
                        "rest of the file skipped (on_corrupt_file: skip); its first {} events are ingested, the rest are not",
                        cur.events
                    )),
                };
                if halted {
                    state.halted = true;
                    state.parked.clear();
                    state.report.halted_at = Some(file.name.clone());
                } else {
                    state.skipped_file = true;
                }
                tracing::error!(file = %file.name, partition = %file.partition_id, error = %e, "corrupt capture file");
                self.report.problems.push(DataProblem {
                    kind: ProblemKind::CorruptFile,
                    partition: Some(file.partition_id.clone()),
                    file: Some(file.name.clone()),
                    record: e.record,
                    message: format!("{}: {e}; {action}", file.name),
                    blocking: halted,
                });
                return Ok(None);
            }
        };
        let rows = batch.num_rows() as u64;
        self.report.events_read += rows;
        cur.events += rows;
        if rows > 0 {
            let last = deltalake::arrow::compute::max(batch.column(0).as_primitive::<Int64Type>());
            cur.last = cur.last.max(last);
        }
        if rows == 0 {
            if piece.last && cur.events == 0 {
                self.report.empty_files += 1;
            }
            return Ok((piece.last && cur.accepted).then(|| file.partition_id.clone()));
        }
        if may_park && !cur.accepted {
            let first = first_sequence(&batch);
            if state.high.is_some_and(|h| first > h + 1) {
                // Counted again when it is taken.
                self.report.files_read -= 1;
                self.report.bytes_read -= file.size;
                self.report.events_read -= cur.events;
                state.report.files_read -= 1;
                let held = if self.parked_bytes + file.size <= self.park_budget {
                    self.parked_bytes += file.size;
                    cur.holding = !piece.last;
                    // Taken again as the file's first chunk.
                    piece.index = 0;
                    piece.result = Ok(batch);
                    Some(vec![piece])
                } else {
                    cur.skip_rest = true;
                    None
                };
                cur.parked = true;
                state.parked.push(Parked { file: (*file).clone(), first, held });
                return Ok(None);
            }
        }
        accept(&file, &batch, piece.file_bytes, state, &mut self.report, &mut self.pending, cur, run)?;
        cur.accepted = true;
        Ok(piece.last.then(|| file.partition_id.clone()))
    }

    /// The next parked file of `partition` that continues its sequence.
    fn unpark(&mut self, partition: &str) -> Option<Parked> {
        let state = self.states.get_mut(partition)?;
        let i = next_unparked(state)?;
        let parked = state.parked.swap_remove(i);
        if parked.held.is_some() {
            self.parked_bytes -= parked.file.size;
        }
        Some(parked)
    }
}

/// The raw table and what is written to it.
struct Output<'a> {
    table: Option<deltalake::DeltaTable>,
    sink: Option<RawSink>,
    write: TableWrite,
    spec: &'a TableSpec,
    location: &'a Location,
    writers: usize,
    dry_run: bool,
    commit_bytes: u64,
    commit_events: u64,
    /// `ingest.commit_memory_mb`, in bytes.
    commit_memory: u64,
    /// Where each committed version and its rows are handed over.
    feed: Option<&'a AppendFeed>,
}

impl Output<'_> {
    /// Queues what was taken to the writer, and commits once the pending
    /// rows reach a commit's size: commits are cut by size, inside a file
    /// as well as between files, so memory does not follow the file size.
    async fn settle(&mut self, intake: &mut Intake, run: &RunContext<'_>) -> Result<()> {
        if !self.dry_run {
            self.table =
                send_pending(self.table.take(), self.spec, &mut self.sink, self.writers, &mut intake.pending).await?;
        }
        let p = &intake.pending;
        let full = p.bytes >= self.commit_bytes || p.events >= self.commit_events || p.decoded >= self.commit_memory;
        if full && intake.cut() {
            self.commit(intake, run).await?;
        }
        Ok(())
    }

    async fn commit(&mut self, intake: &mut Intake, run: &RunContext<'_>) -> Result<()> {
        self.table = commit(
            self.table.take(),
            self.spec,
            self.location,
            &mut intake.pending,
            &mut intake.states,
            run,
            self.sink.as_mut(),
            &mut self.write,
            self.feed,
        )
        .await?;
        Ok(())
    }

    /// Takes a parked file's chunks: the held ones, or the file read again
    /// from `reread` (whose next file it must be).
    async fn replay(
        &mut self,
        parked: Parked,
        reread: &mut BoxStream<'static, Result<read::Piece>>,
        may_park: bool,
        intake: &mut Intake,
        run: &RunContext<'_>,
    ) -> Result<()> {
        if let Some(held) = parked.held {
            for piece in held {
                intake.take(piece, run, may_park)?;
                self.settle(intake, run).await?;
            }
            return Ok(());
        }
        while let Some(piece) = reread.next().await {
            let piece = piece?;
            let last = piece.last;
            intake.take(piece, run, may_park)?;
            self.settle(intake, run).await?;
            if last {
                break;
            }
        }
        Ok(())
    }
}

/// Takes a decoded chunk's new events into the pending commit;
/// `file_bytes` is the chunk's share of the file.
#[allow(clippy::too_many_arguments)]
fn accept(
    file: &CaptureFile,
    batch: &RecordBatch,
    file_bytes: u64,
    state: &mut PartitionState,
    report: &mut StageReport,
    pending: &mut Pending,
    cur: &mut FileProgress,
    run: &RunContext<'_>,
) -> Result<()> {
    let fresh = take_new_events(batch, state, report, cur)?;
    if fresh.num_rows() == 0 {
        return Ok(());
    }
    let n = fresh.num_rows() as u64;
    state.report.events_written += n;
    pending.events += n;
    pending.bytes += file_bytes;
    pending.decoded += fresh.get_array_memory_size() as u64;
    pending.batches.push((file.partition_id.clone(), raw_rows(&fresh, file, run)?));
    pending.sizes.push(file_bytes);
    let w = pending.windows.entry(file.partition_id.clone()).or_insert(i64::MIN);
    *w = (*w).max(file.window.timestamp());
    Ok(())
}

struct RunContext<'a> {
    pipeline: &'a str,
    run_id: &'a str,
    ingested_at: i64,
    /// Body fields copied into `subject_<field>` columns.
    subjects: &'a [String],
}

/// Keeps the file's events above its floor (in any order, each number
/// once); widens the file's `out_of_order` range with numbers at or below
/// the floor that the table does not hold (reported once the file ends);
/// advances the high marks. Gaps are found over the file's numbers once it
/// ends, or when a commit is cut inside it ([`report_gaps`]).
fn take_new_events(
    batch: &RecordBatch,
    state: &mut PartitionState,
    report: &mut StageReport,
    cur: &mut FileProgress,
) -> Result<RecordBatch> {
    let seqs = batch.column(0).as_primitive::<Int64Type>();
    let mut keep = Vec::with_capacity(seqs.len());
    let mut below = 0u64;
    for seq in seqs.values().iter().copied() {
        let fresh = if state.committed.is_some_and(|c| seq <= c) {
            below += 1;
            false
        } else if cur.floor.is_some_and(|f| seq <= f) {
            let r = cur.out_of_order.get_or_insert((seq, seq));
            r.0 = r.0.min(seq);
            r.1 = r.1.max(seq);
            false
        } else if cur.taken.insert(seq) {
            cur.turned |= cur.high.is_some_and(|h| seq < h);
            cur.high = cur.high.max(Some(seq));
            state.high = state.high.max(Some(seq));
            true
        } else {
            // The file holds this event twice: the first copy is taken.
            below += 1;
            false
        };
        keep.push(fresh);
    }
    report.events_already_ingested += below;
    filter_record_batch(batch, &keep.into()).map_err(|e| Error::Internal(e.to_string()))
}

/// Reports the sequence numbers missing between the partition's mark before
/// the file and the file's highest number so far, that no report of the
/// file named yet.
fn report_gaps(file: &CaptureFile, state: &mut PartitionState, report: &mut StageReport, cur: &mut FileProgress) {
    let after = cur.floor.max(state.committed).max(cur.gaps_reported_to);
    for (from, to) in cur.taken.holes(after) {
        let gap = SequenceGap { partition: file.partition_id.clone(), from, to, before_file: file.name.clone() };
        tracing::warn!(partition = %gap.partition, from, to, file = %file.name, "sequence gap: a capture file may be missing");
        report.problems.push(DataProblem {
            kind: ProblemKind::SequenceGap,
            partition: Some(gap.partition.clone()),
            file: Some(file.name.clone()),
            record: None,
            message: format!(
                "partition {}: sequence numbers {from}..={to} are missing before {} (a capture file may be missing or late)",
                gap.partition, file.name
            ),
            // Unexplained missing events need a human; a gap left by a file
            // skipped by policy is already reported as such.
            blocking: !state.skipped_file,
        });
        state.report.gaps.push(gap);
    }
    cur.gaps_reported_to = cur.gaps_reported_to.max(cur.taken.max());
}

/// Adds lineage and partition columns to capture rows.
fn raw_rows(batch: &RecordBatch, file: &CaptureFile, run: &RunContext<'_>) -> Result<RecordBatch> {
    let n = batch.num_rows();
    let constant = |s: &str| -> ArrayRef { Arc::new(StringArray::from(vec![s; n])) };
    let times = batch.column(2).as_primitive::<deltalake::arrow::datatypes::TimestampMicrosecondType>();
    let dates: Date32Array = times.values().iter().map(|us| Some(us.div_euclid(86_400_000_000) as i32)).collect();
    let ingested: ArrayRef = Arc::new(TimestampMicrosecondArray::from(vec![run.ingested_at; n]).with_timezone("UTC"));
    let mut columns = vec![
        constant(&file.partition_id),
        batch.column(0).clone(),
        batch.column(1).clone(),
        batch.column(2).clone(),
        Arc::new(dates),
        batch.column(3).clone(),
        batch.column(4).clone(),
        batch.column(5).clone(),
        constant(&file.name),
        ingested,
        constant(run.run_id),
    ];
    // Extracted by the decoder (see `decode_with_deadline`).
    columns.extend(batch.columns()[capture_schema().fields().len()..].iter().cloned());
    RecordBatch::try_new(raw_schema_with(run.subjects), columns).map_err(|e| Error::Internal(format!("raw rows: {e}")))
}

/// Queues the rows accepted since the last call to the writer, starting it
/// on first use (after giving a raw table made before its subject columns
/// were declared those columns).
async fn send_pending(
    table: Option<deltalake::DeltaTable>,
    spec: &TableSpec,
    sink: &mut Option<RawSink>,
    writers: usize,
    pending: &mut Pending,
) -> Result<Option<deltalake::DeltaTable>> {
    if pending.sent == pending.batches.len() {
        return Ok(table);
    }
    let mut table = table.expect("a table outside dry runs");
    if sink.is_none() {
        table = delta::add_missing_columns(table, &spec.schema).await?;
        *sink = Some(RawSink::start(&table, writers)?);
    }
    let sink = sink.as_mut().expect("started above");
    for ((_, batch), size) in pending.batches[pending.sent..].iter().zip(&pending.sizes[pending.sent..]) {
        sink.write(batch.clone(), *size).await?;
    }
    pending.sent = pending.batches.len();
    Ok(Some(table))
}

/// Commits pending rows with the watermarks of their partitions.
///
/// Another ingest may work on the same partitions. Whatever it committed
/// before the snapshot we write against is dropped here; whatever it commits
/// after that snapshot makes our commit fail with a txn conflict, and we
/// reload and go round again. Either way no event is written twice: when
/// rows must be dropped, the files already written are deleted and the rest
/// written again.
#[allow(clippy::too_many_arguments)]
async fn commit(
    table: Option<deltalake::DeltaTable>,
    spec: &TableSpec,
    location: &Location,
    pending: &mut Pending,
    states: &mut BTreeMap<String, PartitionState>,
    run: &RunContext<'_>,
    sink: Option<&mut RawSink>,
    write: &mut TableWrite,
    feed: Option<&AppendFeed>,
) -> Result<Option<deltalake::DeltaTable>> {
    let mut batches = std::mem::take(&mut pending.batches);
    let sizes = std::mem::take(&mut pending.sizes);
    let windows = std::mem::take(&mut pending.windows);
    pending.bytes = 0;
    pending.events = 0;
    pending.decoded = 0;
    pending.sent = 0;
    fault_point("before_commit");
    let Some(sink) = sink else {
        // A dry run: nothing was written.
        advance_watermarks(&batches, states);
        return Ok(table);
    };
    let mut table = table.expect("a table outside dry runs");
    let mut adds = sink.flush().await?;
    pause_point("ingest_before_commit");
    // For a rewrite, which writer takes which rows only needs to be even.
    let share = sizes.iter().sum::<u64>() / batches.len().max(1) as u64;
    for attempt in 0.. {
        let dropped;
        (batches, dropped) = drop_committed_elsewhere(&table, batches, states, run).await?;
        if dropped {
            sink.discard(&adds).await;
            for (_, batch) in &batches {
                sink.write(batch.clone(), share).await?;
            }
            adds = sink.flush().await?;
        }
        if batches.is_empty() {
            return Ok(Some(table));
        }
        let now = Utc::now().timestamp_millis();
        let mut txns = Vec::new();
        for (p, w) in watermarks(&batches) {
            let state = &states[&p];
            // Never back: a file out of order may give, after a commit cut
            // inside it, numbers below that commit's watermark.
            let w = w.max(state.report.watermark_after.unwrap_or(w));
            txns.push(Transaction::new_with_last_update(
                Marker::IngestWatermark { pipeline: run.pipeline, partition: &p }.app_id(),
                w,
                Some(now),
            ));
            let window = windows.get(&p).copied().into_iter().chain(state.window_marker).max();
            if let Some(window) = window {
                txns.push(Transaction::new_with_last_update(
                    Marker::IngestWindow { pipeline: run.pipeline, partition: &p }.app_id(),
                    window,
                    Some(now),
                ));
            }
        }
        let metadata = CommitInfo::new(run.pipeline, "ingest", run.run_id).into_map();
        match delta::commit_adds(table.clone(), adds.clone(), &spec.partition_columns, txns, metadata).await {
            Ok(t) => {
                if let Some(v) = t.version() {
                    write.versions_written.push(v);
                }
                advance_watermarks(&batches, states);
                for (p, w) in &windows {
                    if let Some(state) = states.get_mut(p) {
                        state.window_marker = state.window_marker.max(Some(*w));
                    }
                }
                fault_point("after_commit");
                // The version holds exactly these rows: the ones another
                // ingest had committed were dropped before writing.
                if let (Some(feed), Some(v)) = (feed, t.version()) {
                    feed.publish(v, batches.into_iter().map(|(_, b)| b).collect()).await;
                }
                return Ok(Some(t));
            }
            Err(Error::ConcurrentProgress { .. }) if attempt < 10 => {
                tracing::warn!(attempt, "another ingest committed the same partitions; re-reading watermarks");
                table = delta::open_or_create(location, spec).await?;
            }
            // The commit may have landed all the same (a timeout, a 500
            // after the store applied it): its files stay, and what no
            // version names is left to vacuum.
            Err(e) => return Err(e),
        }
    }
    unreachable!("the retry loop returns")
}

/// The highest sequence number per partition in `batches`.
fn watermarks(batches: &[(String, RecordBatch)]) -> BTreeMap<String, i64> {
    let mut out: BTreeMap<String, i64> = BTreeMap::new();
    for (partition, batch) in batches {
        let seqs = batch.column(1).as_primitive::<Int64Type>();
        if let Some(max) = deltalake::arrow::compute::max(seqs) {
            let w = out.entry(partition.clone()).or_insert(max);
            *w = (*w).max(max);
        }
    }
    out
}

fn advance_watermarks(batches: &[(String, RecordBatch)], states: &mut BTreeMap<String, PartitionState>) {
    for (p, w) in watermarks(batches) {
        let report = &mut states.get_mut(&p).expect("partition state").report;
        report.watermark_after = Some(report.watermark_after.map_or(w, |a| a.max(w)));
    }
}

/// Drops rows at or below the watermark the table already holds (written by
/// another worker since this run read it), and moves our marks past it.
/// Says whether any row was dropped.
async fn drop_committed_elsewhere(
    table: &deltalake::DeltaTable,
    batches: Vec<(String, RecordBatch)>,
    states: &mut BTreeMap<String, PartitionState>,
    run: &RunContext<'_>,
) -> Result<(Vec<(String, RecordBatch)>, bool)> {
    let mut dropped_any = false;
    let mut theirs: BTreeMap<String, Option<i64>> = BTreeMap::new();
    for (partition, _) in &batches {
        if !theirs.contains_key(partition) {
            let w =
                delta::progress(table, &Marker::IngestWatermark { pipeline: run.pipeline, partition }.app_id()).await?;
            theirs.insert(partition.clone(), w);
        }
    }
    let mut kept = Vec::with_capacity(batches.len());
    for (partition, batch) in batches {
        let Some(w) = theirs[&partition] else {
            kept.push((partition, batch));
            continue;
        };
        let state = states.get_mut(&partition).expect("partition state");
        if state.report.watermark_after.is_none_or(|a| a < w) {
            state.report.watermark_after = Some(w);
        }
        if state.high.is_none_or(|h| h < w) {
            state.high = Some(w);
        }
        if state.committed.is_none_or(|c| c < w) {
            state.committed = Some(w);
        }
        let seqs = batch.column(1).as_primitive::<Int64Type>();
        if seqs.values().iter().all(|s| *s > w) {
            kept.push((partition, batch));
            continue;
        }
        let mask: Vec<bool> = seqs.values().iter().map(|s| *s > w).collect();
        let fresh = filter_record_batch(&batch, &mask.into()).map_err(|e| Error::Internal(e.to_string()))?;
        let dropped = (batch.num_rows() - fresh.num_rows()) as u64;
        tracing::info!(partition = %partition, dropped, "events already committed by another ingest");
        dropped_any = true;
        state.report.events_written -= dropped;
        if fresh.num_rows() > 0 {
            kept.push((partition, fresh));
        }
    }
    Ok((kept, dropped_any))
}
