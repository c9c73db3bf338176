//! Compiling `body:` into a [`Framing`]: the format, its compression, and
//! for Schema Registry and Confluent bodies every writer schema by id,
//! checked against the pipeline's schema by Avro's resolution rules when
//! the pipeline is loaded (never at run time, never over the network).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use super::{read_pipeline_file, BodyCompression, BodyConfig, BodyFormat, WriterSchemas};
use crate::body::avro::{check_compatible, parse_schema, AvroTranscoder};
use crate::body::framing::{Compression, Framing};

/// Compiled writer schemas by id.
type ById<K> = HashMap<K, Option<Arc<AvroTranscoder>>>;

/// Problems as (key path, message).
type Problems = Vec<(String, String)>;

/// Which writer schemas a framing keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Writers {
    /// Every one, each checked against the reader: an incompatible one is a problem.
    Checked,
    /// Those the reader can read (a route's framing): the others are listed.
    Readable,
    /// Every one, decoded by its own names alone (no reader: a pipeline with
    /// routes, for subject columns, field discriminators and erasure).
    Unread,
}

/// Compiles `body` of the pipeline in `file`; `reader` is the text of the
/// schema bodies are read as (`body.schema`, or a route's). Also gives the
/// writer schema ids left out (with [`Writers::Readable`]).
pub(super) fn compile(
    file: &Path,
    body: &BodyConfig,
    reader: &str,
    keep: Writers,
) -> Result<(Framing, Vec<String>), Problems> {
    let mut problems = Problems::new();
    if body.format != BodyFormat::Json && body.compression.is_some_and(|c| c != BodyCompression::None) {
        problems.push((
            "body.compression".into(),
            "compression applies to json bodies; Avro bodies are read as the producer encoded them".into(),
        ));
    }
    let registry = matches!(body.format, BodyFormat::AvroSchemaRegistry | BodyFormat::Confluent);
    if registry && body.writer_schemas.is_none() {
        problems.push((
            "body.writer_schemas".into(),
            "this format names each body's writer schema by id: give a folder of <id>.avsc files or a map of id to file".into(),
        ));
    }
    if !registry && body.writer_schemas.is_some() {
        problems.push((
            "body.writer_schemas".into(),
            "writer schemas by id apply to the avro-schema-registry and confluent formats only".into(),
        ));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let compression = match body.compression.unwrap_or_default() {
        BodyCompression::None => Compression::None,
        BodyCompression::Gzip => Compression::Gzip,
        BodyCompression::Deflate => Compression::Deflate,
        BodyCompression::Auto => Compression::Auto,
    };
    if body.format == BodyFormat::Json {
        return Ok((Framing::Json(compression), Vec::new()));
    }
    let reader_text = reader;
    let reader = match keep {
        Writers::Unread => None,
        _ => Some(parse_schema(reader, &schema_name(body)).map_err(|e| vec![("body.schema".into(), e)])?),
    };
    let transcoder = |writer: &apache_avro::Schema| AvroTranscoder::new(writer, reader.as_ref()).map(Arc::new);
    match body.format {
        BodyFormat::Json => unreachable!("handled above"),
        BodyFormat::Avro => match &reader {
            Some(r) => {
                transcoder(r).map(|t| (Framing::Avro(t), Vec::new())).map_err(|e| vec![("body.schema".into(), e)])
            }
            // Only with routes, which refuse plain avro and say why.
            None => Err(Vec::new()),
        },
        BodyFormat::AvroSchemaRegistry => {
            let (ids, left) = writers(file, body, reader_text, keep, &transcoder, |id| Some(id.to_string()))?;
            Ok((Framing::SchemaRegistry(Arc::new(ids)), left))
        }
        BodyFormat::Confluent => {
            let (ids, left) = writers(file, body, reader_text, keep, &transcoder, |id| id.parse::<u32>().ok())?;
            Ok((Framing::Confluent(Arc::new(ids)), left))
        }
    }
}

/// The body schema's file as declared, for messages.
fn schema_name(body: &BodyConfig) -> String {
    body.schema.as_ref().map(|s| s.display().to_string()).unwrap_or_default()
}

/// Every writer schema by id, each parsed, checked against `reader` (as
/// `keep` says) and compiled; and the ids left out.
fn writers<K: std::hash::Hash + Eq>(
    file: &Path,
    body: &BodyConfig,
    reader_text: &str,
    keep: Writers,
    transcoder: &dyn Fn(&apache_avro::Schema) -> Result<Arc<AvroTranscoder>, String>,
    key: impl Fn(&str) -> Option<K>,
) -> Result<(ById<K>, Vec<String>), Problems> {
    let listed = list(file, body.writer_schemas.as_ref().expect("checked by the caller"))?;
    let mut problems = Problems::new();
    let mut out = HashMap::new();
    let mut left = Vec::new();
    for (id, path, at) in listed {
        let Some(k) = key(&id) else {
            problems.push((at, format!("{id:?} is not a Confluent schema id (a number from 0 to 4294967295)")));
            continue;
        };
        let mut unreadable = false;
        let compiled = read_pipeline_file(file, &path).and_then(|(shown, text)| {
            let writer = parse_schema(&text, &shown.display().to_string())?;
            if keep != Writers::Unread {
                if let Err(e) = check_compatible(&text, reader_text) {
                    unreadable = true;
                    return Err(format!(
                        "schema id {id} ({}) cannot be read as {} by Avro's resolution rules: {e}",
                        shown.display(),
                        schema_name(body)
                    ));
                }
            }
            transcoder(&writer).map_err(|e| format!("schema id {id} ({}): {e}", shown.display()))
        });
        match compiled {
            Ok(t) => {
                out.insert(k, Some(t));
            }
            Err(_) if unreadable && keep == Writers::Readable => {
                out.insert(k, None);
                left.push(id);
            }
            Err(e) => problems.push((at, e)),
        }
    }
    if problems.is_empty() {
        Ok((out, left))
    } else {
        Err(problems)
    }
}

/// (id, file, key path for problems) of every writer schema declared.
fn list(file: &Path, declared: &WriterSchemas) -> Result<Vec<(String, std::path::PathBuf, String)>, Problems> {
    match declared {
        WriterSchemas::Files(map) => {
            if map.is_empty() {
                return Err(vec![("body.writer_schemas".into(), "no writer schemas are declared".into())]);
            }
            Ok(map.iter().map(|(id, p)| (id.clone(), p.clone(), format!("body.writer_schemas.{id}"))).collect())
        }
        WriterSchemas::Folder(folder) => {
            let base = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            let at = || "body.writer_schemas".to_string();
            let entries = std::fs::read_dir(base.join(folder))
                .map_err(|e| vec![(at(), format!("cannot read the folder {}: {e}", base.join(folder).display()))])?;
            let mut out = Vec::new();
            for entry in entries {
                let entry = entry.map_err(|e| vec![(at(), e.to_string())])?;
                let name = entry.file_name().to_string_lossy().to_string();
                if let Some(id) = name.strip_suffix(".avsc") {
                    out.push((id.to_string(), folder.join(&name), at()));
                }
            }
            if out.is_empty() {
                return Err(vec![(at(), format!("no <schema id>.avsc files in {}", base.join(folder).display()))]);
            }
            out.sort();
            Ok(out)
        }
    }
}
