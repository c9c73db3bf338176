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
    let tables: &[(&str, &Option<super::TableConfig>)] = match &process.routes {
        None => &[("processed", &p.tables.processed), ("quarantine", &p.tables.quarantine)],
        Some(_) => &[("quarantine", &p.tables.quarantine)],
    };
    for (name, table) in tables {
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
    let Some(body) = &p.body else {
        bad("process".into(), "the process stage needs body: (format and schema)".into());
        return problems;
    };
    match &process.routes {
        None => {
            if process.event_time.is_none() {
                bad(
                    "process.event_time".into(),
                    "missing: name the body field (a timestamp) whose UTC date partitions the processed table".into(),
                );
            }
            if body.schema.is_none() {
                bad("body.schema".into(), "missing: the .avsc the process stage parses bodies by".into());
            }
        }
        Some(routes) => super::routes::check(loaded, routes, &mut bad),
    }
    for unit in loaded.process_units() {
        check_unit(loaded, &unit, &mut bad);
    }
    problems
}

/// The checks of one process unit (the pipeline's, or a route's): its
/// schema, event time, expectations, PII rules and dedup.
fn check_unit(loaded: &LoadedPipeline, unit: &super::ProcessUnit, bad: &mut impl FnMut(String, String)) {
    let (at, process) = (&unit.at, &unit.process);
    if unit.route.is_some() {
        match &unit.table {
            None => bad(
                at.clone(),
                format!("route {:?} needs table: {{path: ...}}, the processed table of its events", unit.name),
            ),
            Some(_) => {
                if let Some(e) = loaded.location_problem(&unit.table_key) {
                    bad(unit.table_key.clone(), e);
                }
            }
        }
    }
    let body = match loaded.unit_body_schema(unit) {
        Ok(Some(b)) => b,
        // Reported under the schema's key by the pipeline validation.
        _ => return,
    };
    let body_schema = body.arrow_schema();
    for f in body_schema.fields() {
        if f.name().starts_with('_') || f.name() == PROCESSED_PARTITION_COLUMN {
            bad(
                unit.schema_key.clone(),
                format!("body field {:?} clashes with a column Weir adds (names starting with '_' and {PROCESSED_PARTITION_COLUMN:?} are reserved)", f.name()),
            );
        }
    }
    if let Some(event_time) = &process.event_time {
        match body_schema.field_with_name(event_time) {
            Err(_) => bad(
                format!("{at}.event_time"),
                format!("no body field {event_time:?}; name a timestamp field of the schema"),
            ),
            Ok(f) if !matches!(f.data_type(), DataType::Timestamp(_, _)) => bad(
                format!("{at}.event_time"),
                format!(
                    "{event_time:?} is {}, not a timestamp (mark an ISO-8601 string field with \"weir.timestamp\": \"iso8601\" or use a timestamp logical type)",
                    f.data_type()
                ),
            ),
            Ok(_) => {}
        }
    }
    let checked = contract::checked_schema(&body);
    let mut names = std::collections::HashSet::new();
    for (i, e) in process.expectations.iter().enumerate() {
        // `route` names the routing rule only where there are routes.
        let reserved = [contract::SCHEMA_RULE, contract::DEDUP_RULE];
        let route_rule = unit.route.is_some() && e.name == contract::ROUTE_RULE;
        if !names.insert(e.name.as_str()) || reserved.contains(&e.name.as_str()) || route_rule {
            bad(format!("{at}.expectations[{i}].name"), format!("rule name {:?} is used twice or reserved", e.name));
        }
        if let Err(m) = expectations::compile(e, &checked) {
            bad(format!("{at}.expectations[{i}]"), format!("rule {:?}: {m}", e.name));
        }
    }
    for m in process.pii.check(&body_schema) {
        let (path, msg) = split_rule_path(&m);
        bad(format!("{at}.pii.{path}"), msg);
    }
    // Privacy by default: a field the schema marks as personal data must
    // have a rule. `subject` (the erasure key) and `none` are exempt.
    for (field, kind) in body.annotations("weir.pii") {
        if kind != "subject" && kind != "none" && !process.pii.rules.iter().any(|r| r.column == field) {
            bad(
                format!("{at}.pii"),
                format!(
                    "body field {field:?} is marked \"weir.pii\": {kind:?} in the schema but has no PII rule; add one (hash, mask, generalize or drop), or mark the field \"weir.pii\": \"none\" in the schema to publish it as is"
                ),
            );
        }
    }
    if let Some(d) = &process.dedup {
        let out = contract::processed_schema_for_check(&body, &process.pii);
        for (path, m) in d.check(&out) {
            bad(format!("{at}.dedup.{path}"), m);
        }
    }
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
    let routed = loaded.routes().is_some();
    if !curate.tables.is_empty() && (p.process.is_none() || (p.tables.processed.is_none() && !routed)) {
        bad(
            "curate".into(),
            "curated tables read the processed table: the pipeline needs a process: section and tables.processed"
                .into(),
        );
    }
    // The tables a model reads by name: `processed`, or each route's.
    let mut sources: Vec<String> = match routed {
        false => vec![PROCESSED.to_string()],
        true => loaded.process_units().into_iter().map(|u| u.name).collect(),
    };
    // A route declared twice is reported with the routes.
    let mut seen = std::collections::HashSet::new();
    sources.retain(|s| seen.insert(s.clone()));
    let mut names: Vec<&str> = sources.iter().map(String::as_str).collect();
    let sources_text = match routed {
        false => format!("{PROCESSED:?}"),
        true => format!("a route ({})", sources.join(", ")),
    };
    for (i, r) in curate.references.iter().enumerate() {
        let at = format!("curate.references[{i}]");
        if !is_identifier(&r.name) || names.contains(&r.name.as_str()) {
            bad(
                format!("{at}.name"),
                format!(
                    "{:?} must be a SQL identifier (letters, digits, '_') used once, and not {sources_text}",
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
            bad(format!("{at}.name"), format!("{:?} must be a SQL identifier (letters, digits, '_') used once, and not {sources_text} or a reference name", t.name));
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
        if routed && t.incremental.is_none() {
            bad(
                at.clone(),
                format!("with process.routes a curated table is kept up to date from one source: declare incremental: {{source: ROUTE, by: [...]}} with a route ({})", sources.join(", ")),
            );
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
                    format!("{:?} is neither {sources_text} nor a curated table declared before this one", inc.source),
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
