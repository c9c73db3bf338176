//! The compiled stage: everything a run needs, built from the pipeline
//! before any data is read (expectations, PII rules with their key, dedup,
//! the output schemas and table locations).

use std::sync::Arc;

use crate::body::framing::Framing;
use crate::body::BodySchema;
use crate::dedup::DedupConfig;
use crate::delta::TableSpec;
use crate::expectations::{self, Expectation};
use crate::lake::contract::{
    self, metrics_schema, metrics_schema_with_route, quarantine_schema, PROCESSED_PARTITION_COLUMN,
    QUARANTINE_PARTITION_COLUMN,
};
use crate::pii::PiiRules;
use crate::pipeline::{LoadedPipeline, ProcessConfig, ProcessUnit, RouteBy};
use crate::storage::Location;
use crate::{Error, Result};
use deltalake::arrow::datatypes::SchemaRef;

/// Everything the stage needs, compiled from the pipeline before any data is
/// read: a broken rule or a missing key stops the run before it starts.
pub struct Compiled {
    /// Pipeline name.
    pub pipeline: String,
    /// The unit compiled: the pipeline's processed table, or one route.
    pub unit: ProcessUnit,
    /// How events find their route; `None` without routes.
    pub(super) routing: Option<Routing>,
    /// The body schema.
    pub body: Arc<BodySchema>,
    /// How bodies become the JSON the body schema decodes.
    pub framing: Arc<Framing>,
    /// The rows the expectations see: body fields (all nullable), `_rescued`
    /// and the lineage columns.
    pub checked_schema: SchemaRef,
    /// Compiled expectations, in declaration order.
    pub expectations: Vec<Expectation>,
    /// PII rules.
    pub pii: PiiRules,
    /// Dedup declaration.
    pub dedup: Option<DedupConfig>,
    /// Schema of the processed table.
    pub processed_schema: SchemaRef,
    /// The schema kept rows are cast to before PII rules: required fields
    /// non-nullable.
    pub(super) pre_pii_schema: SchemaRef,
    pub(super) config: ProcessConfig,
    /// The body field that partitions the processed table.
    pub(super) event_time: String,
    /// Fingerprint of everything that decides the output: the `process:`
    /// section (for a route: its own, and every route's values) and the
    /// body schema. Stored in every commit.
    pub(super) config_hash: String,
    pub(super) tables: OutputLocations,
}

/// What a route's run needs to pick its events from the raw rows.
#[derive(Debug, Clone)]
pub(super) struct Routing {
    /// The discriminator.
    pub(super) by: RouteBy,
    /// The values this route takes.
    pub(super) values: std::collections::HashSet<String>,
    /// Every route's values, in declaration order: a value in none of them
    /// goes to quarantine.
    pub(super) all: Vec<String>,
    /// Whether this route quarantines the events no route takes (the first
    /// route does, so each is quarantined once).
    pub(super) takes_unrouted: bool,
}

/// Where the stage reads and writes.
#[derive(Debug, Clone)]
pub(super) struct OutputLocations {
    pub(super) raw: Location,
    pub(super) processed: Location,
    pub(super) quarantine: Location,
    pub(super) metrics: Option<Location>,
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiled").field("pipeline", &self.pipeline).finish_non_exhaustive()
    }
}

impl Compiled {
    /// Compiles `unit` (the pipeline's process section, or one route);
    /// reads the PII key from the environment.
    pub fn build(loaded: &LoadedPipeline, unit: &ProcessUnit) -> Result<Compiled> {
        let p = &loaded.pipeline;
        let config_error = |path: &str, message: String| loaded.invalid(path, message);
        let problems = crate::pipeline::check::process(loaded);
        if !problems.is_empty() {
            return Err(loaded.invalid_all(problems));
        }
        let process = unit.process.clone();
        let body = loaded.unit_body_schema(unit)?.ok_or_else(|| config_error("body", "missing".into()))?;
        let checked = contract::checked_schema(&body);
        let expectations = process
            .expectations
            .iter()
            .map(|e| expectations::compile(e, &checked))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|m| config_error(&format!("{}.expectations", unit.at), m))?;
        let pii = process.pii.build(&body.arrow_schema()).map_err(|e| Error::Secret { message: e.to_string() })?;
        let pre = contract::pre_pii_schema(&body);
        let processed_schema = pii.output_schema(&pre);
        let loc = |t: &Option<crate::pipeline::TableConfig>, name: &str| -> Result<Location> {
            t.as_ref().ok_or_else(|| config_error("tables", format!("tables.{name} is missing")))?;
            loaded.location(&format!("tables.{name}.path"))
        };
        let tables = OutputLocations {
            raw: loaded.location("tables.raw.path")?,
            processed: loaded.location(&unit.table_key)?,
            quarantine: loc(&p.tables.quarantine, "quarantine")?,
            metrics: match &p.tables.quality_metrics {
                None => None,
                Some(_) => Some(loc(&p.tables.quality_metrics, "quality_metrics")?),
            },
        };
        let routing = loaded.routes().zip(unit.route).map(|(routes, i)| Routing {
            by: routes.by.clone(),
            values: routes.types[i].values().into_iter().collect(),
            all: routes.types.iter().flat_map(|r| r.values()).collect(),
            takes_unrouted: i == 0,
        });
        let schema_file = unit.schema_file.clone().unwrap_or_default();
        let mut hashed = serde_json::to_vec(&process).unwrap_or_default();
        if let Some(routes) = loaded.routes() {
            // What a route's run takes (and the first one quarantines)
            // depends on every route's values.
            hashed.extend(serde_json::to_vec(&routes.by).unwrap_or_default());
            hashed.extend(
                serde_json::to_vec(&routes.types.iter().map(|r| r.values()).collect::<Vec<_>>()).unwrap_or_default(),
            );
        }
        Ok(Compiled {
            pipeline: p.name.clone(),
            unit: unit.clone(),
            routing,
            body,
            framing: loaded.unit_framing(unit)?,
            checked_schema: checked,
            expectations,
            pii,
            dedup: process.dedup.clone(),
            processed_schema,
            pre_pii_schema: pre,
            config_hash: config_hash(&hashed, &schema_file, p.body.as_ref(), loaded),
            event_time: process.event_time.clone().unwrap_or_default(),
            config: process,
            tables,
        })
    }

    pub(super) fn processed_spec(&self) -> TableSpec {
        TableSpec {
            name: format!("{}_{}", self.pipeline, self.unit.name),
            description: self.unit.table.as_ref().and_then(|t| t.description.clone()),
            schema: self.processed_schema.clone(),
            partition_columns: vec![PROCESSED_PARTITION_COLUMN.to_string()],
        }
    }

    pub(super) fn quarantine_spec(&self, loaded: &LoadedPipeline) -> TableSpec {
        TableSpec {
            name: format!("{}_quarantine", self.pipeline),
            description: loaded.pipeline.tables.quarantine.as_ref().and_then(|t| t.description.clone()),
            schema: quarantine_schema(),
            partition_columns: vec![QUARANTINE_PARTITION_COLUMN.to_string()],
        }
    }

    pub(super) fn metrics_spec(&self, loaded: &LoadedPipeline) -> TableSpec {
        TableSpec {
            name: format!("{}_quality_metrics", self.pipeline),
            description: loaded.pipeline.tables.quality_metrics.as_ref().and_then(|t| t.description.clone()),
            schema: if self.routing.is_some() { metrics_schema_with_route() } else { metrics_schema() },
            partition_columns: vec![],
        }
    }
}

/// The fingerprint of the `process:` settings (as JSON), the body schema
/// file and, for bodies other than plain JSON, the `body:` section.
fn config_hash(
    process: &[u8],
    schema: &std::path::Path,
    body: Option<&crate::pipeline::BodyConfig>,
    loaded: &LoadedPipeline,
) -> String {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    h.update(process);
    h.update(std::fs::read(loaded.base_dir().join(schema)).unwrap_or_default());
    // Plain JSON leaves the fingerprint of lakes written before formats existed as it was.
    if let Some(body) = body {
        let plain = body.format == crate::pipeline::BodyFormat::Json
            && body.compression.is_none_or(|c| c == crate::pipeline::BodyCompression::None)
            && body.writer_schemas.is_none();
        if !plain {
            h.update(serde_json::to_vec(body).unwrap_or_default());
        }
    }
    h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
}
