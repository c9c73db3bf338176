//! The checks of each section of a pipeline that serde cannot express
//! (no storage, no secrets), as (key path, message): the loader adds file
//! and line. `weir validate` and every job run them before anything else.
//! Checks that need the tables (schemas already written, models planned
//! against their inputs) belong to the stages and run in `weir validate`.

use deltalake::arrow::datatypes::DataType;

use super::{LoadedPipeline, PROCESSED};
use crate::expectations;
use crate::lake::contract::{self, PROCESSED_PARTITION_COLUMN};

/// Static checks of the `process:` section (no storage, no secrets), as
/// (key path, message). `weir validate` and every job run them.
pub fn process(loaded: &LoadedPipeline) -> Vec<(String, String)> {
    let p = &loaded.pipeline;
    let mut problems = Vec::new();
    let Some(process) = &p.process else {
        if p.tables.processed.is_some() {
            problems.push((
                "process".to_string(),
                "tables.processed is declared but there is no process: section".to_string(),
            ));
        }
        return problems;
    };
    let mut bad = |path: String, msg: String| problems.push((path, msg));
    for (name, table) in [("processed", &p.tables.processed), ("quarantine", &p.tables.quarantine)] {
        match table {
            None => bad("tables".into(), format!("the process stage needs tables.{name}.path")),
            Some(_) => {
                if let Some(e) = loaded.location_problem(&format!("tables.{name}.path")) {
                    bad(format!("tables.{name}.path"), e);
                }
            }
        }
    }
    if let Some(e) = loaded.location_problem("tables.quality_metrics.path") {
        bad("tables.quality_metrics.path".into(), e);
    }
    if process.raw_versions_per_commit == 0 {
        bad("process.raw_versions_per_commit".into(), "must be greater than 0".into());
    }
    if p.body.is_none() {
        bad("process".into(), "the process stage needs body: (format and schema)".into());
        return problems;
    }
    let body = match loaded.body_schema() {
        Ok(Some(b)) => b,
        // Reported under body.schema by the pipeline validation.
        _ => return problems,
    };
    let body_schema = body.arrow_schema();
    for f in body_schema.fields() {
        if f.name().starts_with('_') || f.name() == PROCESSED_PARTITION_COLUMN {
            bad(
                "body.schema".into(),
                format!("body field {:?} clashes with a column Weir adds (names starting with '_' and {PROCESSED_PARTITION_COLUMN:?} are reserved)", f.name()),
            );
        }
    }
    match body_schema.field_with_name(&process.event_time) {
        Err(_) => bad(
            "process.event_time".into(),
            format!("no body field {:?}; name a timestamp field of the schema", process.event_time),
        ),
        Ok(f) if !matches!(f.data_type(), DataType::Timestamp(_, _)) => bad(
            "process.event_time".into(),
            format!(
                "{:?} is {}, not a timestamp (mark an ISO-8601 string field with \"weir.timestamp\": \"iso8601\" or use a timestamp logical type)",
                process.event_time,
                f.data_type()
            ),
        ),
        Ok(_) => {}
    }
    let checked = contract::checked_schema(&body);
    let mut names = std::collections::HashSet::new();
    for (i, e) in process.expectations.iter().enumerate() {
        if !names.insert(e.name.as_str()) || e.name == contract::SCHEMA_RULE || e.name == contract::DEDUP_RULE {
            bad(format!("process.expectations[{i}].name"), format!("rule name {:?} is used twice or reserved", e.name));
        }
        if let Err(m) = expectations::compile(e, &checked) {
            bad(format!("process.expectations[{i}]"), format!("rule {:?}: {m}", e.name));
        }
    }
    for m in process.pii.check(&body_schema) {
        let (path, msg) = split_rule_path(&m);
        bad(format!("process.pii.{path}"), msg);
    }
    // Privacy by default: a field the schema marks as personal data must
    // have a rule. `subject` (the erasure key) and `none` are exempt.
    for (field, kind) in body.annotations("weir.pii") {
        if kind != "subject" && kind != "none" && !process.pii.rules.iter().any(|r| r.column == field) {
            bad(
                "process.pii".into(),
                format!(
                    "body field {field:?} is marked \"weir.pii\": {kind:?} in the schema but has no PII rule; add one (hash, mask, generalize or drop), or mark the field \"weir.pii\": \"none\" in the schema to publish it as is"
                ),
            );
        }
    }
    if let Some(d) = &process.dedup {
        let out = contract::processed_schema_for_check(&body, &process.pii);
        for (path, m) in d.check(&out) {
            bad(format!("process.dedup.{path}"), m);
        }
    }
    problems
}

/// `rules[3]: message` → (`rules[3]`, `message`).
fn split_rule_path(m: &str) -> (String, String) {
    match m.split_once(": ") {
        Some((p, rest)) if p.starts_with("rules[") => (p.to_string(), rest.to_string()),
        _ => ("rules".to_string(), m.to_string()),
    }
}

/// Static checks of the `curate:` section (no storage), as (key path,
/// message). Models are planned by [`check_models`].
pub fn curate(loaded: &LoadedPipeline) -> Vec<(String, String)> {
    let p = &loaded.pipeline;
    let mut problems = Vec::new();
    let Some(curate) = &p.curate else { return problems };
    let mut bad = |path: String, msg: String| problems.push((path, msg));
    if !curate.tables.is_empty() && (p.process.is_none() || p.tables.processed.is_none()) {
        bad(
            "curate".into(),
            "curated tables read the processed table: the pipeline needs a process: section and tables.processed"
                .into(),
        );
    }
    let mut names: Vec<&str> = vec![PROCESSED];
    for (i, r) in curate.references.iter().enumerate() {
        let at = format!("curate.references[{i}]");
        if !is_identifier(&r.name) || names.contains(&r.name.as_str()) {
            bad(
                format!("{at}.name"),
                format!(
                    "{:?} must be a SQL identifier (letters, digits, '_') used once, and not {PROCESSED:?}",
                    r.name
                ),
            );
        }
        names.push(&r.name);
        if let Some(e) = loaded.location_problem(&format!("{at}.path")) {
            bad(format!("{at}.path"), e);
        }
    }
    for (i, t) in curate.tables.iter().enumerate() {
        let at = format!("curate.tables[{i}]");
        if !is_identifier(&t.name) || names.contains(&t.name.as_str()) {
            bad(format!("{at}.name"), format!("{:?} must be a SQL identifier (letters, digits, '_') used once, and not {PROCESSED:?} or a reference name", t.name));
        }
        if let Some(e) = loaded.location_problem(&format!("{at}.path")) {
            bad(format!("{at}.path"), e);
        }
        match (&t.sql, &t.sql_file) {
            (Some(_), Some(_)) => bad(at.clone(), "give sql or sql_file, not both".into()),
            (None, None) => {
                bad(at.clone(), "the model needs sql (inline) or sql_file (a .sql file next to the pipeline)".into())
            }
            (None, Some(f)) => {
                if let Err(problem) = loaded.read_file(f) {
                    bad(format!("{at}.sql_file"), problem);
                }
            }
            (Some(_), None) => {}
        }
        if t.key.is_empty() {
            bad(format!("{at}.key"), "name the output columns that identify a row".into());
        }
        if let Some(a) = &t.as_of {
            if !t.key.contains(a) {
                bad(
                    format!("{at}.as_of"),
                    format!("{a:?} must be one of the key columns (entity columns plus the as-of timestamp)"),
                );
            }
        }
        if let Some(inc) = &t.incremental {
            if inc.by.is_empty() {
                bad(
                    format!("{at}.incremental.by"),
                    "name at least one scope column, or remove incremental: to recompute fully".into(),
                );
            }
            if !names[..].contains(&inc.source.as_str()) || curate.references.iter().any(|r| r.name == inc.source) {
                bad(
                    format!("{at}.incremental.source"),
                    format!("{:?} is neither {PROCESSED:?} nor a curated table declared before this one", inc.source),
                );
            }
        }
        names.push(&t.name);
    }
    problems
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Static checks of the `maintain:` section, as (key path, message).
pub fn maintain(loaded: &LoadedPipeline) -> Vec<(String, String)> {
    let Some(m) = &loaded.pipeline.maintain else { return vec![] };
    let mut problems = Vec::new();
    let names: Vec<String> = loaded.tables_written().into_iter().map(|t| t.name).collect();
    if m.target_file_size_mb == 0 {
        problems.push(("maintain.target_file_size_mb".into(), "must be greater than 0".into()));
    }
    for (name, policy) in &m.tables {
        let at = format!("maintain.tables.{name}");
        if !names.contains(name) {
            problems.push((at.clone(), format!("no table {name:?} in this pipeline (tables: {})", names.join(", "))));
        }
        if policy.target_file_size_mb == Some(0) {
            problems.push((format!("{at}.target_file_size_mb"), "must be greater than 0".into()));
        }
        if let Some(r) = &policy.retention {
            if r.days == 0 {
                problems.push((format!("{at}.retention.days"), "must be at least 1".into()));
            }
        }
        if policy.zorder_by.as_ref().is_some_and(|z| z.is_empty()) {
            problems.push((format!("{at}.zorder_by"), "name at least one column, or remove the key".into()));
        }
    }
    problems
}

/// Static checks: the erasure log location, as (key path, message).
pub fn erase(loaded: &LoadedPipeline) -> Vec<(String, String)> {
    let key = "tables.erasure_log.path";
    loaded.location_problem(key).map(|e| (key.to_string(), e)).into_iter().collect()
}
