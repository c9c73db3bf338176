//! The pipeline file: what a data engineer declares.
//!
//! A pipeline is a YAML file (see `pipelines/user_events.yaml`). Loading it
//! goes through three steps, each reporting problems with file, line and key
//! path rather than stopping at the first:
//!
//! 1. Interpolation: `${VAR}` and `${VAR:-default}` are replaced from the
//!    environment inside the parsed scalars, each value taken literally
//!    (see `interpolate.rs`); line numbers stay true. `$${` escapes.
//! 2. Deserialisation into the structs below, all `deny_unknown_fields`, so a
//!    typo is an error, not a silently ignored key.
//! 3. [`validate`](Pipeline::validate): cross-field and semantic checks that
//!    serde cannot express (names, path formats, referenced files).
//!
//! Path rule: files that belong to the pipeline (schemas) resolve relative to
//! the pipeline file's folder; data locations (capture source, tables) are
//! local paths relative to the working directory, or URLs.

pub mod check;
mod curate;
mod framing;
mod interpolate;
pub mod limits;
mod load;
mod maintain;
mod routes;
mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::body::framing::Framing;
use crate::body::BodySchema;
use crate::storage::Location;

pub use crate::error::Problem;

/// Problems found at load, as (key path, message).
type Problems = Vec<(String, String)>;
pub use curate::{CurateConfig, CuratedTableConfig, IncrementalConfig, ReferenceConfig, ScopeColumn, PROCESSED};
pub use load::{load_pipeline, parse_pipeline, read_pipeline_file};
pub use maintain::{MaintainConfig, RowRetention, TablePolicy};
pub use routes::{ProcessUnit, RouteBy, RouteConfig, RoutesConfig};

/// A loaded, validated pipeline, compiled once: the body schema parsed,
/// every declared location resolved, and the file's line index kept so a
/// problem found at run time still names its line.
#[derive(Debug, Clone)]
pub struct LoadedPipeline {
    /// Where the file was read from.
    pub file: PathBuf,
    /// The declaration.
    pub pipeline: Pipeline,
    /// Line of each key path in the file.
    lines: Arc<load::LineIndex>,
    /// The body schema, parsed at load (`None` without `body:`); the error
    /// is reported under `body.schema` by validation.
    body: Option<Result<Arc<BodySchema>, String>>,
    /// How bodies become JSON, compiled at load with every writer schema
    /// (`None` without `body:`); problems by key path.
    framing: Option<Result<Arc<Framing>, Problems>>,
    /// Each route's body schema (`process.routes.types[i].schema`), parsed
    /// at load, or why it does not parse (reported by validation).
    route_schemas: Arc<Vec<Result<Arc<BodySchema>, String>>>,
    /// Per route, how its bodies become JSON (its writer schemas read as its
    /// schema); after them, problems no route accounts for.
    route_framings: Arc<Vec<Result<Arc<Framing>, Problems>>>,
    /// Every declared location by key path, resolved at load (relative
    /// paths against the working directory then), or why it does not
    /// resolve (reported by validation).
    locations: Arc<BTreeMap<String, Result<Location, String>>>,
}

impl LoadedPipeline {
    /// A problem at `path` (a dotted key path), with its line when the file
    /// has the key.
    pub fn problem(&self, path: &str, message: impl Into<String>) -> Problem {
        Problem {
            file: self.file.clone(),
            line: self.lines.line_of(path),
            path: path.to_string(),
            message: message.into(),
        }
    }

    /// The configuration error of one problem at `path`.
    pub fn invalid(&self, path: &str, message: impl Into<String>) -> crate::Error {
        crate::Error::InvalidPipeline { problems: vec![self.problem(path, message)] }
    }

    /// The configuration error of problems given as (key path, message).
    pub fn invalid_all(&self, problems: Vec<(String, String)>) -> crate::Error {
        crate::Error::InvalidPipeline { problems: problems.into_iter().map(|(p, m)| self.problem(&p, m)).collect() }
    }

    /// The body schema, parsed once at load; `None` when the pipeline
    /// declares no `body:`.
    pub fn body_schema(&self) -> crate::Result<Option<Arc<BodySchema>>> {
        match &self.body {
            None => Ok(None),
            Some(Ok(b)) => Ok(Some(b.clone())),
            Some(Err(e)) => Err(self.invalid("body.schema", e.clone())),
        }
    }

    /// How the pipeline's bodies become JSON (plain JSON without `body:`).
    pub fn body_framing(&self) -> crate::Result<Arc<Framing>> {
        match &self.framing {
            None => Ok(Arc::new(Framing::Json(crate::body::framing::Compression::None))),
            Some(Ok(f)) => Ok(f.clone()),
            Some(Err(problems)) if problems.is_empty() => Err(self.invalid("body.schema", "cannot be read")),
            Some(Err(problems)) => Err(self.invalid_all(problems.clone())),
        }
    }

    /// How `unit`'s bodies become JSON: a route reads each writer schema
    /// as its own schema.
    pub fn unit_framing(&self, unit: &ProcessUnit) -> crate::Result<Arc<Framing>> {
        match unit.route.map(|i| self.route_framings.get(i)) {
            None | Some(None) => self.body_framing(),
            Some(Some(Ok(f))) => Ok(f.clone()),
            Some(Some(Err(problems))) if problems.is_empty() => self.body_framing(),
            Some(Some(Err(problems))) => Err(self.invalid_all(problems.clone())),
        }
    }

    /// The location declared at `key` (a key path: `source.capture.url`,
    /// `tables.raw.path`, `curate.tables[0].path`,
    /// `curate.references[0].path`), resolved once at load. A key the
    /// pipeline does not declare is a problem at that key.
    pub fn location(&self, key: &str) -> crate::Result<Location> {
        match self.locations.get(key) {
            Some(Ok(location)) => Ok(location.clone()),
            Some(Err(reason)) => Err(self.invalid(key, reason.clone())),
            None => Err(self.invalid(key, "not declared")),
        }
    }

    /// The location of a table of the `tables:` section (`raw`,
    /// `processed`, …), resolved at load; `None` when not declared.
    pub fn table_location(&self, name: &str) -> crate::Result<Option<Location>> {
        let key = format!("tables.{name}.path");
        if self.locations.contains_key(&key) {
            self.location(&key).map(Some)
        } else {
            Ok(None)
        }
    }

    /// The location of the `i`-th curated table, resolved at load.
    pub fn curated_location(&self, i: usize) -> crate::Result<Location> {
        self.location(&format!("curate.tables[{i}].path"))
    }

    /// Why the location at `key` does not resolve, if it does not.
    pub(crate) fn location_problem(&self, key: &str) -> Option<String> {
        self.locations.get(key).and_then(|l| l.as_ref().err().cloned())
    }

    /// Reads a file that belongs to the pipeline (`body.schema`, a
    /// `sql_file`), given relative to the pipeline file or absolute; see
    /// [`read_pipeline_file`]. The problem names no key: the caller's.
    pub fn read_file(&self, path: &Path) -> Result<String, String> {
        read_pipeline_file(&self.file, path).map(|(_, text)| text)
    }

    /// The folder that pipeline-relative files resolve against.
    pub fn base_dir(&self) -> &Path {
        self.file.parent().unwrap_or_else(|| Path::new("."))
    }

    /// Every table the pipeline writes, in declaration order: the
    /// `tables:` section, then the curated tables.
    pub fn tables_written(&self) -> Vec<DeclaredTable<'_>> {
        self.pipeline.tables_written()
    }
}

impl Pipeline {
    /// Every table the pipeline writes, in declaration order: the
    /// `tables:` section (each route's table after `processed`), then the
    /// curated tables.
    pub fn tables_written(&self) -> Vec<DeclaredTable<'_>> {
        let t = &self.tables;
        let mut out = vec![DeclaredTable { name: "raw".into(), key: "tables.raw.path".into(), path: &t.raw.path }];
        if let Some(table) = &t.processed {
            out.push(DeclaredTable {
                name: "processed".into(),
                key: "tables.processed.path".into(),
                path: &table.path,
            });
        }
        // Each route's processed table, named after the route.
        let routes = self.process.iter().flat_map(|p| p.routes.iter()).flat_map(|r| &r.types).enumerate();
        for (i, r) in routes {
            if let Some(table) = &r.table {
                let key = format!("process.routes.types[{i}].table.path");
                out.push(DeclaredTable { name: r.name.clone(), key, path: &table.path });
            }
        }
        for (name, table) in [
            ("quarantine", &t.quarantine),
            ("quality_metrics", &t.quality_metrics),
            ("erasure_log", &t.erasure_log),
            ("runs", &t.runs),
        ] {
            if let Some(table) = table {
                out.push(DeclaredTable { name: name.into(), key: format!("tables.{name}.path"), path: &table.path });
            }
        }
        for (i, c) in self.curate.iter().flat_map(|c| &c.tables).enumerate() {
            out.push(DeclaredTable { name: c.name.clone(), key: format!("curate.tables[{i}].path"), path: &c.path });
        }
        out
    }
}

/// A table of the pipeline, as declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredTable<'a> {
    /// `raw`, `processed`, …, or a curated table's name.
    pub name: String,
    /// Key path of its location in the pipeline file (`tables.raw.path`).
    pub key: String,
    /// Its location as declared (after `${VAR}` interpolation).
    pub path: &'a str,
}

/// A pipeline: where events come from and which tables they land in.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    /// Pipeline name: lowercase letters, digits, `_` and `-`. It is part of
    /// every progress marker Weir writes, so renaming a pipeline restarts it.
    pub name: String,

    /// Free text for humans.
    #[serde(default)]
    pub description: Option<String>,

    /// Where the events come from.
    pub source: Source,

    /// The event body: its format and schema (parsed by the process stage).
    #[serde(default)]
    pub body: Option<BodyConfig>,

    /// The Delta tables the pipeline writes.
    pub tables: Tables,

    /// Ingest tuning.
    #[serde(default)]
    pub ingest: IngestConfig,

    /// The process stage: parse bodies, expectations, PII rules, dedup.
    #[serde(default)]
    pub process: Option<ProcessConfig>,

    /// The curate stage: SQL models into curated and feature tables.
    #[serde(default)]
    pub curate: Option<CurateConfig>,

    /// Table upkeep: retention, compaction, vacuum, checkpoints.
    #[serde(default)]
    pub maintain: Option<MaintainConfig>,
}

/// Event source.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// Event Hubs Capture files.
    pub capture: CaptureSource,
}

/// Event Hubs Capture output below one folder or container prefix.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureSource {
    /// The folder that holds the partition folders: a local path or an
    /// object-store URL (`abfss://`, `az://`, `s3://`, `gs://`, `file://`).
    pub url: String,

    /// Capture's file name format below `url`, without the `.avro`
    /// extension. Tokens: `{Namespace}`, `{EventHub}`, `{PartitionId}`,
    /// `{Year}`, `{Month}`, `{Day}`, `{Hour}`, `{Minute}`, `{Second}`;
    /// `{PartitionId}` and all time tokens are required.
    #[serde(default = "default_path_format")]
    pub path_format: String,

    /// What to do with a file that cannot be decoded.
    #[serde(default)]
    pub on_corrupt_file: OnCorruptFile,
}

/// The default Capture path format below the source folder.
pub fn default_path_format() -> String {
    crate::capture::PathFormat::CAPTURE_DEFAULT.to_string()
}

/// Policy for capture files that cannot be decoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnCorruptFile {
    /// Stop the partition before the file; later files of that partition wait
    /// until the file is repaired or the policy changes. Exit code says so.
    #[default]
    Halt,
    /// Record the file in the report and continue after it. Its events are
    /// not ingested, and the sequence gap it leaves is reported.
    Skip,
}

/// Event body declaration.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct BodyConfig {
    /// Body encoding.
    #[serde(default)]
    pub format: BodyFormat,
    /// Avro schema (`.avsc`) of the body, relative to the pipeline file: the
    /// columns of the processed table (the reader's schema for Avro bodies).
    /// Required without `process.routes`; with routes each route has its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<PathBuf>,
    /// Compression of `json` bodies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<BodyCompression>,
    /// Writer schemas by schema id, for `avro-schema-registry` and
    /// `confluent`: a folder of `<id>.avsc` files, or a map of id to file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer_schemas: Option<WriterSchemas>,
}

/// Body encodings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BodyFormat {
    /// UTF-8 JSON, one object per event (maybe compressed, see `compression`).
    #[default]
    Json,
    /// A binary Avro datum written with `schema` (no container, no header).
    Avro,
    /// Azure Schema Registry's Avro: the content type property is
    /// `avro/binary+<schema id>`, the body a datum of that writer schema.
    AvroSchemaRegistry,
    /// Confluent's wire format: byte 0, a 4-byte big-endian schema id, the datum.
    Confluent,
}

/// Compression of JSON bodies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyCompression {
    /// Plain JSON.
    #[default]
    None,
    /// gzip.
    Gzip,
    /// zlib (HTTP's `deflate`) or raw deflate.
    Deflate,
    /// By the event's content-encoding property, else by the bytes.
    Auto,
}

/// Where writer schemas are found by id.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(untagged)]
pub enum WriterSchemas {
    /// A folder of `<schema id>.avsc` files, relative to the pipeline file.
    Folder(PathBuf),
    /// Schema id to `.avsc` file, relative to the pipeline file.
    Files(BTreeMap<String, PathBuf>),
}

impl<'de> Deserialize<'de> for WriterSchemas {
    /// A folder (a string), or a map whose keys may be written as numbers
    /// (`42: file.avsc`, as Confluent ids are).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{Error, MapAccess, Visitor};
        struct Id(String);
        impl<'de> Deserialize<'de> for Id {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl Visitor<'_> for V {
                    type Value = Id;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str("a schema id (text or a number)")
                    }
                    fn visit_str<E: Error>(self, v: &str) -> Result<Id, E> {
                        Ok(Id(v.to_string()))
                    }
                    fn visit_u64<E: Error>(self, v: u64) -> Result<Id, E> {
                        Ok(Id(v.to_string()))
                    }
                    fn visit_i64<E: Error>(self, v: i64) -> Result<Id, E> {
                        Ok(Id(v.to_string()))
                    }
                }
                d.deserialize_any(V)
            }
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = WriterSchemas;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a folder of <schema id>.avsc files, or a map of schema id to .avsc file")
            }
            fn visit_str<E: Error>(self, v: &str) -> Result<WriterSchemas, E> {
                Ok(WriterSchemas::Folder(PathBuf::from(v)))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<WriterSchemas, A::Error> {
                let mut out = BTreeMap::new();
                while let Some((Id(id), file)) = map.next_entry::<Id, PathBuf>()? {
                    if out.insert(id.clone(), file).is_some() {
                        return Err(A::Error::custom(format!("schema id {id} is given twice")));
                    }
                }
                Ok(WriterSchemas::Files(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// The pipeline's tables.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Tables {
    /// One row per captured event, as captured.
    pub raw: TableConfig,
    /// Parsed, checked, deduplicated events (written by `weir process`).
    #[serde(default)]
    pub processed: Option<TableConfig>,
    /// Events that failed parsing or a `quarantine` rule, with the reasons.
    #[serde(default)]
    pub quarantine: Option<TableConfig>,
    /// Per run and rule: rows checked, failed, and the action taken.
    #[serde(default)]
    pub quality_metrics: Option<TableConfig>,
    /// One row per erased data subject and table (written by `weir erase`).
    #[serde(default)]
    pub erasure_log: Option<TableConfig>,
    /// One row per job run that changed something (the audit trail `weir
    /// status` reads the last outcomes from).
    #[serde(default)]
    pub runs: Option<TableConfig>,
}

/// One Delta table.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    /// Table location: a local path or an object-store URL.
    pub path: String,
    /// Free text stored as the table description when it is created.
    #[serde(default)]
    pub description: Option<String>,
}

/// Ingest tuning. Defaults suit 32 partitions at 5-minute windows.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// A commit is cut once this many bytes of capture files are in it.
    #[serde(default = "default_commit_bytes")]
    pub commit_bytes: u64,
    /// A commit is cut once this many events are in it.
    #[serde(default = "default_commit_events")]
    pub commit_events: u64,
    /// A commit is cut once its events take this many MiB decoded (their
    /// Arrow memory, bodies and properties included): the memory budget of
    /// the rows ingest holds before a commit and of each range process
    /// reads (it holds one while it reads the next). Capture files shrink
    /// bodies by their codec, so `commit_bytes` alone does not bound it.
    #[serde(default = "default_commit_memory_mb")]
    pub commit_memory_mb: u64,
    /// Chunks (about 1 MB of blocks each) decoded at once (0 = one per CPU
    /// core).
    #[serde(default)]
    pub decode_parallelism: usize,
    /// Files opened ahead of decoding (0 = as many as decoders for a local
    /// source, at least 16 for object storage, where each request waits on
    /// the network). Each holds its first 8 MB in memory; larger files
    /// are read on in 8 MB ranges as their chunks decode.
    #[serde(default)]
    pub fetch_parallelism: usize,
    /// Files whose window is this many hours older than the newest window
    /// already ingested for their partition are not read again (a back-fill
    /// older than that is not looked for). 0 reads every file every run.
    #[serde(default = "default_lookback_hours")]
    pub lookback_hours: u64,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            commit_bytes: default_commit_bytes(),
            commit_events: default_commit_events(),
            commit_memory_mb: default_commit_memory_mb(),
            decode_parallelism: 0,
            fetch_parallelism: 0,
            lookback_hours: default_lookback_hours(),
        }
    }
}

fn default_commit_bytes() -> u64 {
    64 * 1024 * 1024
}

fn default_commit_memory_mb() -> u64 {
    128
}

fn default_lookback_hours() -> u64 {
    24
}

fn default_commit_events() -> u64 {
    2_000_000
}

/// `process:` — how raw events become processed rows.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessConfig {
    /// The body field (a timestamp) whose UTC date partitions the processed
    /// table (`event_date`). Rows where it is null use their enqueue date.
    /// Required without `routes`; with routes each route has its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time: Option<String>,
    /// Data-quality rules, checked in order on every row.
    #[serde(default)]
    pub expectations: Vec<crate::expectations::ExpectationConfig>,
    /// Personal-data rules per column, applied after the expectations.
    #[serde(default)]
    pub pii: crate::pii::PiiConfig,
    /// Dedup on a business key.
    #[serde(default)]
    pub dedup: Option<crate::dedup::DedupConfig>,
    /// At most this many raw table versions are processed per commit. Each
    /// raw version holds at most `ingest.commit_bytes` of capture files and
    /// `ingest.commit_memory_mb` of decoded events, so this bounds memory (1M events in one commit peaked at 2.4 GB, one raw
    /// version of ~350k at 1.3 GB); raise it when ingest commits are small.
    /// A `fail` rule stops at the first commit holding a failing row; commits
    /// before it passed every rule and stay published.
    #[serde(default = "default_raw_versions_per_commit")]
    pub raw_versions_per_commit: u64,
    /// Several event types in one hub: each event goes by a discriminator
    /// to its route's schema, rules and processed table. The keys above
    /// except `raw_versions_per_commit` are then declared per route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<RoutesConfig>,
}

fn default_raw_versions_per_commit() -> u64 {
    1
}
