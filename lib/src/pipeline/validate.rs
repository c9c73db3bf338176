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
            || !p.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        {
            bad(
                "name",
                format!("{:?} is not a valid pipeline name: use lowercase letters, digits, '_' and '-'", p.name),
            );
        }

        if let Some(e) = self.location_problem("source.capture.url") {
            bad("source.capture.url", e);
        }
        if let Err(e) = PathFormat::parse(&p.source.capture.path_format) {
            bad("source.capture.path_format", e);
        }
        for key in ["tables.raw.path", "tables.runs.path"] {
            if let Some(e) = self.location_problem(key) {
                bad(key, e);
            }
        }

        if let Some(Err(e)) = &self.body {
            bad("body.schema", e.clone());
        }
        // With a process: section, its checks say what the body lacks.
        if p.process.is_none() && p.body.as_ref().is_some_and(|b| b.schema.is_none()) {
            bad("body.schema", "missing: the .avsc of the event body".to_string());
        }
        if let Some(Err(framing)) = &self.framing {
            for (path, msg) in framing {
                bad(path, msg.clone());
            }
        }
        for problems in self.route_framings.iter().filter_map(|f| f.as_ref().err()) {
            for (path, msg) in problems {
                bad(path, msg.clone());
            }
        }
        for (path, msg) in super::check::process(self) {
            bad(&path, msg);
        }
        for (path, msg) in super::check::curate(self) {
            bad(&path, msg);
        }
        for (path, msg) in super::check::maintain(self) {
            bad(&path, msg);
        }
        for (path, msg) in super::check::erase(self) {
            bad(&path, msg);
        }

        if p.ingest.commit_bytes == 0 {
            bad("ingest.commit_bytes", "must be greater than 0".to_string());
        }
        if p.ingest.commit_events == 0 {
            bad("ingest.commit_events", "must be greater than 0".to_string());
        }
        if p.ingest.commit_memory_mb == 0 {
            bad("ingest.commit_memory_mb", "must be greater than 0".to_string());
        }
        if let Some(c) = p.curate.as_ref().filter(|c| c.memory_mb < 64) {
            bad("curate.memory_mb", format!("must be at least 64, not {}", c.memory_mb));
        }
        if let Some(m) = p.maintain.as_ref().filter(|m| m.memory_mb < 64) {
            bad("maintain.memory_mb", format!("must be at least 64, not {}", m.memory_mb));
        }
        for (path, msg) in super::limits::check(self) {
            bad(&path, msg);
        }
        for (path, msg) in self.table_overlaps() {
            bad(&path, msg);
        }
        problems
    }

    /// Tables whose folders coincide or nest (see [`crate::lake::location`]).
    fn table_overlaps(&self) -> Vec<(String, String)> {
        // Locations that do not resolve are reported where they are checked.
        let resolved = |key: String| self.location(&key).ok().map(|l| (key, l));
        let written: Vec<(String, Location)> =
            self.tables_written().into_iter().filter_map(|t| resolved(t.key)).collect();
        let references = self.pipeline.curate.iter().flat_map(|c| c.references.iter()).enumerate();
        let read: Vec<(String, Location)> =
            references.filter_map(|(i, _)| resolved(format!("curate.references[{i}].path"))).collect();
        crate::lake::location::overlaps(&written, &read)
    }
}
