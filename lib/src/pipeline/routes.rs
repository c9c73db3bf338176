//! `process.routes`: one Event Hub carrying several event types. Each event
//! goes by a discriminator (an application property, or a top-level body
//! field) to the route that takes its value: the route's own schema,
//! expectations, PII rules, dedup and processed table.
//!
//! The process stage runs once per route ([`ProcessUnit`]), each from its
//! own progress marker; a pipeline without routes is one unit, the
//! `process:` section itself, with the marker and table it always had.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{LoadedPipeline, ProcessConfig, TableConfig};
use crate::lake::Marker;

/// `process.routes`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RoutesConfig {
    /// What decides an event's route.
    pub by: RouteBy,
    /// The routes, in the order they run. The first one also quarantines
    /// the events no route takes.
    pub types: Vec<RouteConfig>,
}

/// The discriminator of `process.routes.by`: `{property: NAME}` or
/// `{field: NAME}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "RouteByRepr", into = "RouteByRepr")]
pub enum RouteBy {
    /// An application property of the event (then its system properties),
    /// by its exact (case-sensitive) name.
    Property(String),
    /// A top-level field of the body's JSON (after `body.format` framing):
    /// strings as they are, numbers and booleans in their JSON spelling.
    Field(String),
}

/// `by:` as written: one of two keys.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RouteByRepr {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    property: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    field: Option<String>,
}

impl TryFrom<RouteByRepr> for RouteBy {
    type Error = String;
    fn try_from(r: RouteByRepr) -> Result<RouteBy, String> {
        match (r.property, r.field) {
            (Some(p), None) => Ok(RouteBy::Property(p)),
            (None, Some(f)) => Ok(RouteBy::Field(f)),
            _ => {
                Err("give one of property: NAME (an application property) or field: NAME (a top-level body field)"
                    .into())
            }
        }
    }
}

impl From<RouteBy> for RouteByRepr {
    fn from(b: RouteBy) -> RouteByRepr {
        match b {
            RouteBy::Property(p) => RouteByRepr { property: Some(p), field: None },
            RouteBy::Field(f) => RouteByRepr { property: None, field: Some(f) },
        }
    }
}

impl RouteBy {
    /// The property or field name.
    pub fn key(&self) -> &str {
        match self {
            RouteBy::Property(k) | RouteBy::Field(k) => k,
        }
    }
}

/// One route: an event type and everything the process stage does with it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// `[a-z0-9_]+`, unique: names the route's marker
    /// (`weir/<pipeline>/process/<name>`) and its table in curated SQL.
    pub name: String,
    /// The discriminator values this route takes (default: its name).
    #[serde(default, deserialize_with = "scalars", skip_serializing_if = "Option::is_none")]
    pub when: Option<Vec<String>>,
    /// The `.avsc` of this event type's body, relative to the pipeline file.
    pub schema: PathBuf,
    /// The route's processed table.
    #[serde(default)]
    pub table: Option<TableConfig>,
    /// The body field (a timestamp) whose UTC date partitions the table.
    pub event_time: String,
    /// Data-quality rules of this event type.
    #[serde(default)]
    pub expectations: Vec<crate::expectations::ExpectationConfig>,
    /// Personal-data rules of this event type.
    #[serde(default)]
    pub pii: crate::pii::PiiConfig,
    /// Dedup of this event type.
    #[serde(default)]
    pub dedup: Option<crate::dedup::DedupConfig>,
}

impl RouteConfig {
    /// The discriminator values the route takes.
    pub fn values(&self) -> Vec<String> {
        self.when.clone().unwrap_or_else(|| vec![self.name.clone()])
    }
}

/// `when:` values: strings, or numbers and booleans taken in their YAML
/// (and JSON) spelling.
fn scalars<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Text(String),
        Int(i64),
        Bool(bool),
    }
    let values = Vec::<Scalar>::deserialize(d).map_err(|_| {
        serde::de::Error::custom("expected a list of values (strings, whole numbers or booleans), e.g. [UserEvent]")
    })?;
    Ok(Some(
        values
            .into_iter()
            .map(|v| match v {
                Scalar::Text(s) => s,
                Scalar::Int(i) => i.to_string(),
                Scalar::Bool(b) => b.to_string(),
            })
            .collect(),
    ))
}

/// What the process stage runs once: the pipeline's one processed table,
/// or one route.
#[derive(Debug, Clone)]
pub struct ProcessUnit {
    /// The route's index in `process.routes.types`; `None` without routes.
    pub route: Option<usize>,
    /// The table's name in reports, SQL, `maintain.tables` and status:
    /// `processed`, or the route's name.
    pub name: String,
    /// This unit's settings: for a route, its event time, expectations, PII
    /// rules and dedup with the shared `raw_versions_per_commit`.
    pub process: ProcessConfig,
    /// Key path of these settings (`process`, `process.routes.types[0]`).
    pub at: String,
    /// Key path of its body schema (`body.schema`, `…types[0].schema`).
    pub schema_key: String,
    /// The schema file as declared.
    pub schema_file: Option<PathBuf>,
    /// Key path of its table's location (`tables.processed.path`, …).
    pub table_key: String,
    /// Its table as declared.
    pub table: Option<TableConfig>,
}

impl ProcessUnit {
    /// The progress marker of this unit on its output tables.
    pub fn app_id(&self, pipeline: &str) -> String {
        match self.route {
            None => Marker::Process { pipeline }.app_id(),
            Some(_) => Marker::ProcessRoute { pipeline, route: &self.name }.app_id(),
        }
    }

    /// The route's name; `None` without routes.
    pub fn route_name(&self) -> Option<&str> {
        self.route.map(|_| self.name.as_str())
    }

    /// The stage's name in plans and status: `process`, or
    /// `process <route>`.
    pub fn stage(&self) -> String {
        match self.route {
            None => "process".to_string(),
            Some(_) => format!("process {}", self.name),
        }
    }
}

impl LoadedPipeline {
    /// `process.routes`, when declared.
    pub fn routes(&self) -> Option<&RoutesConfig> {
        self.pipeline.process.as_ref().and_then(|p| p.routes.as_ref())
    }

    /// What the process stage runs, in order: one unit per route, or the
    /// `process:` section itself; none without `process:`.
    pub fn process_units(&self) -> Vec<ProcessUnit> {
        let p = &self.pipeline;
        let Some(process) = &p.process else { return vec![] };
        let Some(routes) = &process.routes else {
            return vec![ProcessUnit {
                route: None,
                name: super::PROCESSED.to_string(),
                process: process.clone(),
                at: "process".into(),
                schema_key: "body.schema".into(),
                schema_file: p.body.as_ref().and_then(|b| b.schema.clone()),
                table_key: "tables.processed.path".into(),
                table: p.tables.processed.clone(),
            }];
        };
        routes
            .types
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let at = format!("process.routes.types[{i}]");
                ProcessUnit {
                    route: Some(i),
                    name: r.name.clone(),
                    process: ProcessConfig {
                        event_time: Some(r.event_time.clone()),
                        expectations: r.expectations.clone(),
                        pii: r.pii.clone(),
                        dedup: r.dedup.clone(),
                        raw_versions_per_commit: process.raw_versions_per_commit,
                        routes: None,
                    },
                    schema_key: format!("{at}.schema"),
                    schema_file: Some(r.schema.clone()),
                    table_key: format!("{at}.table.path"),
                    table: r.table.clone(),
                    at,
                }
            })
            .collect()
    }

    /// The unit of route `route` (`None`: the pipeline without routes).
    pub fn process_unit(&self, route: Option<&str>) -> crate::Result<ProcessUnit> {
        let units = self.process_units();
        if units.is_empty() {
            return Err(
                self.invalid("process", "the pipeline has no process: section; add one to run the process stage")
            );
        }
        match route {
            None if self.routes().is_none() => Ok(units.into_iter().next().expect("one unit")),
            None => Err(self.invalid("process.routes", "the pipeline has routes: name the route to process")),
            Some(name) => units
                .into_iter()
                .find(|u| u.route.is_some() && u.name == name)
                .ok_or_else(|| self.invalid("process.routes", format!("no route named {name:?}"))),
        }
    }

    /// The body schema of `unit`, parsed once at load; `None` when it has
    /// none (a pipeline without `body:`).
    pub fn unit_body_schema(
        &self,
        unit: &ProcessUnit,
    ) -> crate::Result<Option<std::sync::Arc<crate::body::BodySchema>>> {
        match unit.route {
            None => self.body_schema(),
            Some(i) => match self.route_schemas.get(i) {
                Some(Ok(b)) => Ok(Some(b.clone())),
                Some(Err(e)) => Err(self.invalid(&unit.schema_key, e.clone())),
                None => Ok(None),
            },
        }
    }

    /// The `weir.pii: subject` fields over every unit's schema, each once,
    /// in order of the units: ingest's subject columns.
    pub fn subject_fields(&self) -> crate::Result<Vec<String>> {
        let mut out: Vec<String> = Vec::new();
        let schemas = match self.routes() {
            None => vec![self.body_schema()?],
            Some(_) => self.process_units().iter().map(|u| self.unit_body_schema(u)).collect::<crate::Result<_>>()?,
        };
        for schema in schemas.into_iter().flatten() {
            for f in crate::body::subject::subject_fields(&schema) {
                if !out.contains(&f) {
                    out.push(f);
                }
            }
        }
        Ok(out)
    }
}

/// Table names a route cannot take: the pipeline's own tables.
const RESERVED: &[&str] = &["raw", "processed", "quarantine", "quality_metrics", "erasure_log", "runs"];

/// Static checks of `process.routes` (the units' own checks run after).
pub(super) fn check(loaded: &LoadedPipeline, routes: &RoutesConfig, bad: &mut impl FnMut(String, String)) {
    let p = &loaded.pipeline;
    let process = p.process.as_ref().expect("routes are in process:");
    let unused = "not used with process.routes: each route declares its own";
    if process.event_time.is_some() {
        bad("process.event_time".into(), format!("{unused} event_time"));
    }
    if !process.expectations.is_empty() {
        bad("process.expectations".into(), format!("{unused} expectations"));
    }
    if process.pii != crate::pii::PiiConfig::default() {
        bad("process.pii".into(), format!("{unused} pii"));
    }
    if process.dedup.is_some() {
        bad("process.dedup".into(), format!("{unused} dedup"));
    }
    if p.body.as_ref().is_some_and(|b| b.schema.is_some()) {
        bad("body.schema".into(), format!("{unused} schema"));
    }
    if p.tables.processed.is_some() {
        bad("tables.processed".into(), format!("{unused} table"));
    }
    if p.body.as_ref().is_some_and(|b| b.format == super::BodyFormat::Avro) {
        bad(
            "body.format".into(),
            "process.routes reads json, avro-schema-registry and confluent bodies, not plain avro: a datum without a schema id cannot be read without knowing its event type's schema".into(),
        );
    }
    if routes.by.key().is_empty() {
        bad("process.routes.by".into(), "name the property or body field that tells the event types apart".into());
    }
    if routes.types.is_empty() {
        bad("process.routes.types".into(), "declare at least one route".into());
    }
    let mut names: Vec<&str> = Vec::new();
    let mut taken: Vec<(String, &str)> = Vec::new();
    for (i, r) in routes.types.iter().enumerate() {
        let at = format!("process.routes.types[{i}]");
        let valid =
            !r.name.is_empty() && r.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            bad(
                format!("{at}.name"),
                format!("{:?} is not a route name: use lowercase letters, digits and '_'", r.name),
            );
        } else if names.contains(&r.name.as_str()) {
            bad(format!("{at}.name"), format!("route {:?} is declared twice", r.name));
        } else if RESERVED.contains(&r.name.as_str()) {
            bad(
                format!("{at}.name"),
                format!("{:?} names a table of every pipeline; give the route another name", r.name),
            );
        }
        names.push(&r.name);
        if r.when.as_ref().is_some_and(Vec::is_empty) {
            bad(format!("{at}.when"), "name at least one value, or remove when: to take the route's name".into());
        }
        for v in r.values() {
            if let Some((_, other)) = taken.iter().find(|(t, _)| *t == v) {
                bad(
                    format!("{at}.when"),
                    format!("value {v:?} is taken by route {other:?} already: a value goes to one route"),
                );
            } else {
                taken.push((v, &r.name));
            }
        }
        if let (Some(Ok(schema)), RouteBy::Field(field)) = (loaded.route_schemas.get(i), &routes.by) {
            if schema.arrow_schema().field_with_name(field).is_err() {
                bad(
                    "process.routes.by.field".into(),
                    format!(
                        "route {:?}: its schema {} has no top-level field {field:?}; every route's schema declares the field that routes it",
                        r.name,
                        r.schema.display()
                    ),
                );
            }
        }
    }
    for (i, s) in loaded.route_schemas.iter().enumerate() {
        if let Err(e) = s {
            bad(format!("process.routes.types[{i}].schema"), e.clone());
        }
    }
}
