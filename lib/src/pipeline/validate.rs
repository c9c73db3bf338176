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

        if let Err(e) = Location::parse(&p.source.capture.url) {
            bad("source.capture.url", e);
        }
        if let Err(e) = PathFormat::parse(&p.source.capture.path_format) {
            bad("source.capture.path_format", e);
        }
        if let Err(e) = Location::parse(&p.tables.raw.path) {
            bad("tables.raw.path", e);
        }
        if let Some(Err(e)) = p.tables.runs.as_ref().map(|t| Location::parse(&t.path)) {
            bad("tables.runs.path", e);
        }

        if let Some(body) = &p.body {
            let file = self.base_dir().join(&body.schema);
            if !file.is_file() {
                bad(
                    "body.schema",
                    format!("cannot read {}; schema paths are relative to the pipeline file", file.display()),
                );
            } else if let Err(e) = crate::body::BodySchema::from_file(&file) {
                bad("body.schema", e.to_string());
            }
        }
        for (path, msg) in crate::process::check(self) {
            bad(&path, msg);
        }
        for (path, msg) in crate::curate::check(self) {
            bad(&path, msg);
        }
        for (path, msg) in crate::maintain::check(self) {
            bad(&path, msg);
        }
        for (path, msg) in crate::erase::check(self) {
            bad(&path, msg);
        }

        if p.ingest.commit_bytes == 0 {
            bad("ingest.commit_bytes", "must be greater than 0".to_string());
        }
        if p.ingest.commit_events == 0 {
            bad("ingest.commit_events", "must be greater than 0".to_string());
        }
        for (path, msg) in self.table_overlaps() {
            bad(&path, msg);
        }
        problems
    }

    /// Tables whose folders coincide or nest: vacuuming the outer one would
    /// delete the inner one's data files and log, as files no commit of the
    /// outer table names. Checked on the resolved locations (after
    /// `${VAR}` interpolation, relative paths against the working
    /// directory), so two spellings of one folder are one folder. A
    /// reference (read, never written) may be one of the pipeline's own
    /// tables, but not inside one or around one.
    fn table_overlaps(&self) -> Vec<(String, String)> {
        let written: Vec<(String, &str)> = self.tables_written().into_iter().map(|t| (t.key, t.path)).collect();
        let mut read = Vec::new();
        if let Some(curate) = &self.pipeline.curate {
            for (i, r) in curate.references.iter().enumerate() {
                read.push((format!("curate.references[{i}].path"), r.path.as_str()));
            }
        }
        // Unparseable locations are reported where they are checked.
        let folder =
            |path: &str| Location::parse(path).ok().map(|l| l.url().as_str().trim_end_matches('/').to_string());
        let written: Vec<(String, String)> = written.into_iter().filter_map(|(k, v)| Some((k, folder(v)?))).collect();
        let read: Vec<(String, String)> = read.into_iter().filter_map(|(k, v)| Some((k, folder(v)?))).collect();
        let inside = |inner: &str, outer: &str| inner.strip_prefix(outer).is_some_and(|rest| rest.starts_with('/'));
        let mut problems = Vec::new();
        for (i, (key, at)) in written.iter().enumerate() {
            for (other, other_at) in &written[..i] {
                if at == other_at {
                    problems.push((
                        key.clone(),
                        format!("{other} is at the same location: two tables cannot share a folder"),
                    ));
                } else if inside(at, other_at) || inside(other_at, at) {
                    let (inner, outer) = if inside(at, other_at) { (key, other) } else { (other, key) };
                    problems.push((key.clone(), format!(
                        "{inner} is inside the folder of {outer}: vacuuming {outer} would delete {inner}'s files; give each table a folder of its own"
                    )));
                }
            }
            for (r, r_at) in &read {
                if inside(r_at, at) || inside(at, r_at) {
                    problems.push((r.clone(), format!(
                        "{r} and {key} nest in one another: vacuuming the outer table would delete the inner one's files"
                    )));
                }
            }
        }
        problems
    }
}
