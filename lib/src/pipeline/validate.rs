//! Semantic checks serde cannot express. Each check returns every problem it
//! finds as (key path, message); the loader adds file and line.

use super::LoadedPipeline;
use crate::capture::PathFormat;
use crate::storage::Location;

impl LoadedPipeline {
    /// Every semantic problem in the pipeline, as (key path, message).
    pub fn validate(&self) -> Vec<(String, String)> {
        let p = &self.pipeline;
        let mut problems = Vec::new();
        let mut bad = |path: &str, msg: String| problems.push((path.to_string(), msg));

        if p.name.is_empty()
            || !p
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        {
            bad(
                "name",
                format!("{:?} is not a valid pipeline name: use lowercase letters, digits, '_' and '-'", p.name),
            );
        }

        if let Err(e) = Location::parse(&p.source.capture.url) {
            bad("source.capture.url", e);
        }
        if let Err(e) = PathFormat::parse(&p.source.capture.path_format) {
            bad("source.capture.path_format", e);
        }
        if let Err(e) = Location::parse(&p.tables.raw.path) {
            bad("tables.raw.path", e);
        }

        if let Some(body) = &p.body {
            let file = self.base_dir().join(&body.schema);
            match std::fs::read_to_string(&file) {
                Err(e) => bad(
                    "body.schema",
                    format!("cannot read {} ({e}); schema paths are relative to the pipeline file", file.display()),
                ),
                Ok(text) => match apache_avro::Schema::parse_str(&text) {
                    Ok(apache_avro::Schema::Record(_)) => {}
                    Ok(other) => bad(
                        "body.schema",
                        format!("{}: the body schema must be an Avro record, found {:?}", file.display(), schema_kind(&other)),
                    ),
                    Err(e) => bad("body.schema", format!("{}: not a valid Avro schema: {e}", file.display())),
                },
            }
        }

        if p.ingest.commit_bytes == 0 {
            bad("ingest.commit_bytes", "must be greater than 0".to_string());
        }
        if p.ingest.commit_events == 0 {
            bad("ingest.commit_events", "must be greater than 0".to_string());
        }
        problems
    }
}

fn schema_kind(s: &apache_avro::Schema) -> String {
    let json = serde_json::to_value(s).unwrap_or_default();
    match json.get("type") {
        Some(serde_json::Value::String(t)) => t.clone(),
        _ => json.to_string(),
    }
}
