//! Reading a pipeline file: interpolation, YAML parsing, and the line index
//! that lets every problem point at a line.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;
use yaml_rust2::scanner::TScalarStyle;

use super::{interpolate, limits, LoadedPipeline, Pipeline, Problem};
use crate::body::BodySchema;
use crate::storage::Location;
use crate::{Error, Result};

/// Reads, interpolates, parses and validates a pipeline file using the
/// process environment.
pub fn load_pipeline(file: &Path) -> Result<LoadedPipeline> {
    let text = read_text(file).map_err(|reason| Error::InvalidPipeline {
        problems: vec![Problem {
            file: file.to_path_buf(),
            line: None,
            path: String::new(),
            message: format!("cannot read file: {reason}"),
        }],
    })?;
    parse_pipeline(file, &text, &|name| std::env::var(name).ok())
}

/// Reads a file that belongs to the pipeline in `pipeline_file` (its body
/// schema, a SQL model): `path` as given, or relative to the pipeline
/// file's folder. A relative path must stay within the pipeline's project
/// folder, the folder that holds the pipeline's folder (for
/// `pipelines/user_events.yaml`: the folder with `pipelines/` and
/// `schemas/`), so that a pipeline cannot name `../../../etc/passwd`; an
/// absolute path says where it reads on its own. Gives the path shown in
/// messages (as joined) and the text, or the problem.
pub fn read_pipeline_file(pipeline_file: &Path, path: &Path) -> std::result::Result<(PathBuf, String), String> {
    let base = match pipeline_file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let joined = base.join(path);
    if path.is_relative() {
        let base = std::path::absolute(base).map(|b| lexical(&b)).map_err(|e| e.to_string())?;
        let project = base.parent().unwrap_or(&base);
        if !lexical(&base.join(path)).starts_with(project) {
            return Err(format!(
                "{} leaves the pipeline's project folder {} (relative paths may reach the folder that holds the pipeline's folder, no further); give an absolute path to read a file elsewhere",
                path.display(),
                project.display()
            ));
        }
    }
    if !joined.exists() {
        return Err(format!("cannot read {}; paths are relative to the pipeline file", joined.display()));
    }
    let text = read_text(&joined).map_err(|reason| format!("cannot read {}: {reason}", joined.display()))?;
    Ok((joined, text))
}

/// `path` with `.` and `..` taken out as written (symbolic links are not
/// followed: a link inside the project is the project's choice).
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Reads a file of a pipeline (the pipeline file, its body schema, its SQL
/// models) as text. Only a regular file of at most
/// [`limits::MAX_FILE_BYTES`] is read: a device or a pipe (`/dev/zero`)
/// would be read without end. The error says why, without the path.
pub(crate) fn read_text(path: &Path) -> std::result::Result<String, String> {
    use std::io::Read as _;
    let max = limits::MAX_FILE_BYTES;
    let too_large = || format!("larger than the {max} bytes (4 MiB) a file of a pipeline may have");
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file (a folder, device or pipe cannot be read as one)".to_string());
    }
    if meta.len() > max {
        return Err(too_large());
    }
    let mut text = String::new();
    // The file may grow between the look and the read.
    std::fs::File::open(path).and_then(|f| f.take(max + 1).read_to_string(&mut text)).map_err(|e| e.to_string())?;
    if text.len() as u64 > max {
        return Err(too_large());
    }
    Ok(text)
}

/// Parses and validates pipeline text; `env` looks up variables.
pub fn parse_pipeline(file: &Path, text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<LoadedPipeline> {
    let invalid = |problems| Error::InvalidPipeline { problems };
    let interpolated = interpolate::placeholders(file, text, env).map_err(invalid)?;
    let (index, plain) = LineIndex::build(&interpolated.text).map_err(|line| {
        invalid(vec![Problem {
            file: file.to_path_buf(),
            line: Some(line),
            path: String::new(),
            message: format!("mappings and sequences nest more than {} levels deep here", limits::MAX_NESTING),
        }])
    })?;
    let syntax = |e: serde_yaml_ng::Error| {
        invalid(vec![Problem {
            file: file.to_path_buf(),
            line: e.location().map(|l| l.line()),
            message: serde_message(&e, ""),
            path: String::new(),
        }])
    };
    let mut value: serde_yaml_ng::Value = serde_yaml_ng::from_str(&interpolated.text).map_err(syntax)?;
    interpolated.substitute(&mut value, &plain);

    let pipeline: Pipeline = match serde_path_to_error::deserialize(value) {
        Ok(p) => p,
        Err(e) => {
            let path = clean_path(&e.path().to_string());
            let inner = e.into_inner();
            let line = index.line_of(&path).or_else(|| inner.location().map(|l| l.line()));
            return Err(invalid(vec![Problem {
                file: file.to_path_buf(),
                line,
                message: serde_message(&inner, &path),
                path,
            }]));
        }
    };

    let parse = |path: &Path| -> std::result::Result<Arc<BodySchema>, String> {
        let (schema, text) = read_pipeline_file(file, path)?;
        BodySchema::parse(&text, &schema.display().to_string()).map(Arc::new).map_err(|e| e.to_string())
    };
    let read = pipeline.body.as_ref().and_then(|b| b.schema.as_ref()).map(|s| read_pipeline_file(file, s));
    let body = pipeline.body.as_ref().and_then(|b| b.schema.as_deref()).map(parse);
    // A schema that cannot be read is reported under body.schema alone.
    // Without one (a pipeline with routes), JSON framing needs none;
    // validation says what an Avro format lacks.
    use super::framing::{compile, Writers};
    let framing = pipeline.body.as_ref().map(|b| match read.as_ref() {
        Some(Ok((_, text))) => compile(file, b, text, Writers::Checked).map(|(f, _)| Arc::new(f)),
        None => compile(file, b, "", Writers::Unread).map(|(f, _)| Arc::new(f)),
        Some(Err(_)) => Err(Vec::new()),
    });
    // Per route, the writer schemas its own schema reads; a writer schema
    // no route reads is a problem.
    let mut route_framings = Vec::new();
    if let (Some(b), Some(routes)) = (pipeline.body.as_ref(), pipeline.process.as_ref().and_then(|p| p.routes.as_ref()))
    {
        let mut unread: Option<Vec<String>> = None;
        for r in &routes.types {
            let compiled = read_pipeline_file(file, &r.schema)
                .map_err(|_| Vec::new())
                .and_then(|(_, text)| compile(file, b, &text, Writers::Readable));
            if let Ok((_, left)) = &compiled {
                unread = Some(match unread {
                    None => left.clone(),
                    Some(u) => u.into_iter().filter(|id| left.contains(id)).collect(),
                });
            }
            route_framings.push(compiled.map(|(f, _)| Arc::new(f)));
        }
        for id in unread.unwrap_or_default() {
            route_framings.push(Err(vec![(
                format!("body.writer_schemas.{id}"),
                format!("schema id {id} can be read as no route's schema by Avro's resolution rules"),
            )]));
        }
    }
    let route_schemas = pipeline
        .process
        .iter()
        .flat_map(|p| p.routes.iter())
        .flat_map(|r| &r.types)
        .map(|r| parse(&r.schema))
        .collect();
    let locations = Arc::new(resolve_locations(&pipeline));
    let loaded = LoadedPipeline {
        file: file.to_path_buf(),
        pipeline,
        lines: Arc::new(index),
        body,
        framing,
        route_schemas: Arc::new(route_schemas),
        route_framings: Arc::new(route_framings),
        locations,
    };
    let problems = loaded.validate();
    if problems.is_empty() {
        Ok(loaded)
    } else {
        Err(loaded.invalid_all(problems))
    }
}

/// Every location the pipeline declares, by key path, resolved now.
fn resolve_locations(p: &Pipeline) -> BTreeMap<String, std::result::Result<Location, String>> {
    let mut declared: Vec<(String, &str)> = vec![("source.capture.url".into(), p.source.capture.url.as_str())];
    declared.extend(p.tables_written().into_iter().map(|t| (t.key, t.path)));
    if let Some(curate) = &p.curate {
        for (i, r) in curate.references.iter().enumerate() {
            declared.push((format!("curate.references[{i}].path"), r.path.as_str()));
        }
    }
    declared
        .into_iter()
        .map(|(key, at)| {
            let location = Location::parse(at).and_then(|l| table_folder(&key, at, l));
            (key, location)
        })
        .collect()
}

/// A local table folder whose path holds `%` or `\` is refused: delta-rs
/// writes such a table at the literal path and its log reader decodes the
/// URL to another one, so every run after the first would fail.
fn table_folder(key: &str, declared: &str, location: Location) -> std::result::Result<Location, String> {
    let local = location.local_path().is_some();
    if key != "source.capture.url" && local && declared.contains(['%', '\\']) {
        return Err(format!(
            "{declared:?}: a local table folder cannot contain '%' or '\\' (Delta readers would look for it at another path); rename the folder"
        ));
    }
    Ok(location)
}

/// serde_path_to_error writes `.` for the root; the user wants nothing there.
fn clean_path(p: &str) -> String {
    if p == "." {
        String::new()
    } else {
        p.to_string()
    }
}

/// serde's message without serde_yaml_ng's trailing location (we print our
/// own), and with the quoting our users read in docs.
fn serde_message(e: &serde_yaml_ng::Error, path: &str) -> String {
    let msg = e.to_string();
    // serde_yaml_ng prefixes the path it knows (the map's, not the key's).
    let msg = match msg.split_once(": ") {
        Some((head, tail)) if !head.is_empty() && path.starts_with(head) => tail.to_string(),
        _ => msg,
    };
    // The problem's own location is printed before the message; a syntax
    // error's context ("while parsing a flow sequence at line 28 column 10")
    // keeps its location, which is where the cause usually is.
    let msg = match e.location() {
        Some(l) => msg.replacen(&format!(" at line {} column {}", l.line(), l.column()), "", 1),
        None => match msg.rfind(" at line ") {
            Some(i) => msg[..i].to_string(),
            None => msg,
        },
    };
    msg.replace('`', "'")
}

/// Maps dotted key paths (`tables.raw.path`, `items[2].name`) to the line
/// where the key (or sequence item) starts.
#[derive(Debug, Default)]
pub struct LineIndex {
    lines: HashMap<String, usize>,
}

impl LineIndex {
    /// Indexes the first document of `text`, and gives the plain
    /// (unquoted) scalars that hold an interpolation placeholder (see
    /// [`interpolate`]); `Err(line)` where mappings and sequences nest
    /// deeper than [`limits::MAX_NESTING`] (each level's path is as long as
    /// its depth, so an unbounded depth would cost time and memory
    /// quadratic in it). A YAML syntax error ends the index quietly: the
    /// parser reports it with its own location.
    pub(crate) fn build(text: &str) -> std::result::Result<(Self, HashSet<String>), usize> {
        if let Some(line) = too_deep_flow(text) {
            return Err(line);
        }
        let mut builder = IndexBuilder::default();
        let mut parser = Parser::new_from_str(text);
        while let Ok((event, mark)) = parser.next_token() {
            if matches!(event, Event::StreamEnd | Event::DocumentEnd) {
                break;
            }
            if let Event::Scalar(value, TScalarStyle::Plain, ..) = &event {
                if value.contains(interpolate::OPEN) {
                    builder.plain.insert(value.clone());
                }
            }
            builder.on_event(event, mark);
            if builder.stack.len() > limits::MAX_NESTING {
                return Err(mark.line());
            }
        }
        Ok((LineIndex { lines: builder.lines }, builder.plain))
    }

    /// The line for `path`, or for its nearest ancestor that has one.
    pub(crate) fn line_of(&self, path: &str) -> Option<usize> {
        let mut p = path;
        loop {
            if let Some(l) = self.lines.get(p) {
                return Some(*l);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }
}

/// The line where flow collections (`[`, `{`) nest deeper than
/// [`limits::MAX_NESTING`], if they do.
///
/// YAML scanners (libyaml's and yaml-rust2's) keep a possible simple key
/// per open flow collection and look at all of them for every token, so a
/// deep flow nesting costs time quadratic in its depth before any parser
/// says a word (100,000 `[` took minutes). This pass measures it first, in
/// linear time. It follows YAML as far as real files need: comments,
/// quoted scalars (one line at a time), block scalars, and `[`/`{` in block
/// context only where a node starts (`key: [`, `- {`, not `text [1]`).
/// Block nesting is bounded as the index is built.
fn too_deep_flow(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    // Indentation of the line that opened a block scalar (`key: |`).
    let mut block_scalar: Option<usize> = None;
    // The last character that is not a space, in flow context across lines.
    let mut last: Option<char> = None;
    for (n, line) in text.lines().enumerate() {
        let indent = line.len() - line.trim_start_matches(' ').len();
        if let Some(parent) = block_scalar {
            if line.trim().is_empty() || indent > parent {
                continue;
            }
            block_scalar = None;
        }
        if depth == 0 {
            last = None;
        }
        // The token before the current one on this line: (first, last
        // character, length).
        let mut prev: Option<(char, char, usize)> = None;
        let mut current: Option<(char, char, usize)> = None;
        let mut quote: Option<char> = None;
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            match quote {
                Some('\'') => {
                    if c == '\'' && chars.next_if_eq(&'\'').is_none() {
                        (quote, last) = (None, Some(c));
                    }
                    continue;
                }
                Some(_) => {
                    if c == '\\' {
                        chars.next();
                    } else if c == '"' {
                        (quote, last) = (None, Some(c));
                    }
                    continue;
                }
                None => {}
            }
            if c == ' ' || c == '\t' {
                if current.is_some() {
                    prev = current.take();
                }
                continue;
            }
            let token_start = current.is_none();
            let tagged = |t: Option<(char, char, usize)>| matches!(t, Some(('&' | '!', _, _)));
            let node_start = if depth == 0 {
                token_start
                    && match prev {
                        None => true,
                        Some((_, ':', _)) | Some(('-' | '?', _, 1)) | Some(('-', '-', 3)) => true,
                        t => tagged(t),
                    }
            } else {
                matches!(last, None | Some('[' | '{' | ',' | ':' | '?')) || (token_start && tagged(prev))
            };
            match c {
                '#' if token_start => break,
                '[' | '{' if depth > 0 || node_start => {
                    depth += 1;
                    if depth > limits::MAX_NESTING {
                        return Some(n + 1);
                    }
                }
                ']' | '}' if depth > 0 => depth -= 1,
                '\'' | '"' if node_start => quote = Some(c),
                '|' | '>' if depth == 0 && node_start => {
                    block_scalar = Some(indent);
                    break;
                }
                _ => {}
            }
            last = Some(c);
            current = Some(match current {
                None => (c, c, 1),
                Some((first, _, len)) => (first, c, len + 1),
            });
            // In flow context an indicator ends the token (`{a:[b]}`).
            if depth > 0 && matches!(c, '[' | '{' | ',' | ']' | '}') {
                prev = current.take();
            }
        }
    }
    None
}

enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, next: usize },
}

#[derive(Default)]
struct IndexBuilder {
    stack: Vec<Frame>,
    lines: HashMap<String, usize>,
    /// Plain scalars holding an interpolation placeholder.
    plain: HashSet<String>,
}

impl IndexBuilder {
    /// The path of a value that starts now, and records the line of keys.
    fn enter_value(&mut self, mark: Marker, is_scalar: Option<&str>) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Map { path, key }) => match key.take() {
                None => {
                    // This node is a key.
                    if let Some(k) = is_scalar {
                        let child = join(path, k);
                        self.lines.entry(child).or_insert(mark.line());
                        *key = Some(k.to_string());
                    } else {
                        *key = Some(String::from("?"));
                    }
                    None
                }
                Some(k) => Some(join(path, &k)),
            },
            Some(Frame::Seq { path, next }) => {
                let child = format!("{path}[{next}]");
                *next += 1;
                self.lines.entry(child.clone()).or_insert(mark.line());
                Some(child)
            }
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

impl MarkedEventReceiver for IndexBuilder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(value, ..) => {
                let _ = self.enter_value(mark, Some(&value));
            }
            Event::Alias(_) => {
                let _ = self.enter_value(mark, Some("*"));
            }
            Event::MappingStart(..) => {
                let path = self.enter_value(mark, None).unwrap_or_default();
                self.lines.entry(path.clone()).or_insert(mark.line());
                self.stack.push(Frame::Map { path, key: None });
            }
            Event::SequenceStart(..) => {
                let path = self.enter_value(mark, None).unwrap_or_default();
                self.lines.entry(path.clone()).or_insert(mark.line());
                self.stack.push(Frame::Seq { path, next: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_deeper_than_the_limit_is_found_in_one_pass() {
        let deep = |open: &str, n: usize| open.repeat(n);
        let max = limits::MAX_NESTING;
        assert_eq!(too_deep_flow(&format!("a: 1\nb: {}", deep("[", max + 1))), Some(2));
        assert_eq!(too_deep_flow(&format!("b: {}{}", deep("[", max), deep("]", max))), None);
        assert_eq!(too_deep_flow(&format!("b: {{\"k\":{}", deep("{\"k\": ", max))), Some(1));
        assert_eq!(too_deep_flow(&format!("- [it's, {}", deep("[", max))), Some(1));
        assert_eq!(too_deep_flow(&format!("b: [\n  a,\n  {}", deep("[", max))), Some(3), "across lines");
        // Not collections: quoted and plain scalars, comments, block scalars.
        for text in [
            format!("a: '{}'", deep("[", 100)),
            format!("a: \"x\\\" {}\"", deep("{", 100)),
            format!("a: 'it''s {}'", deep("[", 100)),
            format!("a: text {}", deep("[", 100)),
            format!("a: 1 # {}", deep("[", 100)),
            format!("sql: |\n  {}\n\n  x\nb: [1]", deep("[", 100)),
        ] {
            assert_eq!(too_deep_flow(&text), None, "{text}");
        }
        // Block nesting is bounded while the index is built.
        assert_eq!(LineIndex::build(&format!("a: 1\nb:\n{}x\n", deep("- ", max + 1))).err(), Some(3));
        assert!(LineIndex::build(&format!("b:\n{}x\n", deep("- ", max - 2))).is_ok());
        let blocks: String = (0..=max).map(|i| format!("{}k{i}:\n", " ".repeat(i))).collect();
        assert!(LineIndex::build(&blocks).is_err());
    }

    #[test]
    fn line_index_points_at_keys_and_items() {
        let text = "name: x\ntables:\n  raw:\n    path: lake/raw\nlist:\n  - a: 1\n  - a: 2\n";
        let idx = LineIndex::build(text).unwrap().0;
        assert_eq!(idx.line_of("name"), Some(1));
        assert_eq!(idx.line_of("tables.raw.path"), Some(4));
        assert_eq!(idx.line_of("tables.raw.pathh"), Some(3), "falls back to the parent");
        assert_eq!(idx.line_of("list[1].a"), Some(7));
    }
}
