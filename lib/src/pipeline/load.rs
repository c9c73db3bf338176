//! Reading a pipeline file: interpolation, YAML parsing, and the line index
//! that lets every problem point at a line.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

use super::{LoadedPipeline, Pipeline, Problem};
use crate::body::BodySchema;
use crate::storage::Location;
use crate::{Error, Result};

/// Reads, interpolates, parses and validates a pipeline file using the
/// process environment.
pub fn load_pipeline(file: &Path) -> Result<LoadedPipeline> {
    let text = std::fs::read_to_string(file).map_err(|source| Error::InvalidPipeline {
        problems: vec![Problem {
            file: file.to_path_buf(),
            line: None,
            path: String::new(),
            message: format!("cannot read file: {source}"),
        }],
    })?;
    parse_pipeline(file, &text, &|name| std::env::var(name).ok())
}

/// Parses and validates pipeline text; `env` looks up variables.
pub fn parse_pipeline(file: &Path, text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<LoadedPipeline> {
    let invalid = |problems| Error::InvalidPipeline { problems };
    let text = interpolate(file, text, env).map_err(invalid)?;
    let index = LineIndex::build(&text);

    let de = serde_yaml_ng::Deserializer::from_str(&text);
    let pipeline: Pipeline = match serde_path_to_error::deserialize(de) {
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

    let base = file.parent().unwrap_or_else(|| Path::new("."));
    let body = pipeline.body.as_ref().map(|b| {
        let schema = base.join(&b.schema);
        if schema.is_file() {
            BodySchema::from_file(&schema).map(Arc::new).map_err(|e| e.to_string())
        } else {
            Err(format!("cannot read {}; schema paths are relative to the pipeline file", schema.display()))
        }
    });
    let locations = Arc::new(resolve_locations(&pipeline));
    let loaded = LoadedPipeline { file: file.to_path_buf(), pipeline, lines: Arc::new(index), body, locations };
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

/// Replaces `${VAR}` and `${VAR:-default}` from `env`; `$${` is a literal
/// `${`. Every unset variable without a default is a problem on its line.
pub fn interpolate(
    file: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> std::result::Result<String, Vec<Problem>> {
    let mut out = String::with_capacity(text.len());
    let mut problems = Vec::new();
    for (n, line) in text.split_inclusive('\n').enumerate() {
        // Comments are documentation: `${...}` in them is left alone.
        let (line, comment) = line.split_at(comment_start(line));
        let mut rest = line;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            let tail = &rest[at..];
            if let Some(after) = tail.strip_prefix("$${") {
                out.push_str("${");
                rest = after;
            } else if let Some(body) = tail.strip_prefix("${") {
                let Some(end) = body.find('}') else {
                    problems.push(line_problem(file, n, "unterminated `${` (escape a literal as `$${`)"));
                    out.push_str(tail);
                    rest = "";
                    continue;
                };
                let expr = &body[..end];
                let (name, default) = match expr.split_once(":-") {
                    Some((name, default)) => (name, Some(default)),
                    None => (expr, None),
                };
                if !is_var_name(name) {
                    problems.push(line_problem(file, n, &format!("`${{{expr}}}`: {name:?} is not a variable name")));
                } else {
                    // An empty value counts as unset, as in the shell's `:-`.
                    match (env(name).filter(|v| !v.is_empty()), default) {
                        (Some(v), _) => out.push_str(&v),
                        (None, Some(d)) => out.push_str(d),
                        (None, None) => problems.push(line_problem(
                            file,
                            n,
                            &format!(
                                "environment variable {name} is not set (set it, or write `${{{name}:-default}}`)"
                            ),
                        )),
                    }
                }
                rest = &body[end + 1..];
            } else {
                out.push('$');
                rest = &tail[1..];
            }
        }
        out.push_str(rest);
        out.push_str(comment);
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// Byte index where a YAML comment starts on this line (`#` at the start or
/// after whitespace, outside quotes), or the line length.
fn comment_start(line: &str) -> usize {
    let (mut single, mut double, mut prev_space) = (false, false, true);
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && prev_space => return i,
            _ => {}
        }
        prev_space = c.is_whitespace();
    }
    line.len()
}

fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn line_problem(file: &Path, line0: usize, message: &str) -> Problem {
    Problem { file: file.to_path_buf(), line: Some(line0 + 1), path: String::new(), message: message.to_string() }
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
    let msg = match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg,
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
    pub(crate) fn build(text: &str) -> Self {
        let mut builder = IndexBuilder::default();
        let mut parser = Parser::new_from_str(text);
        // A YAML syntax error is reported by serde with its own location.
        let _ = parser.load(&mut builder, false);
        LineIndex { lines: builder.lines }
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

enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, next: usize },
}

#[derive(Default)]
struct IndexBuilder {
    stack: Vec<Frame>,
    lines: HashMap<String, usize>,
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
    use std::path::PathBuf;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }

    #[test]
    fn interpolation_forms() {
        let f = PathBuf::from("p.yaml");
        let text = "a: ${A}\nb: ${B:-lake}/raw\nc: $${A}\nd: cost $5\ne: ${E:-}x\n# ${NOT_SET} in a comment\nf: '#${A}' # ${NOT_SET}\n";
        let out = interpolate(&f, text, &env(&[("A", "one")])).unwrap();
        assert_eq!(
            out,
            "a: one\nb: lake/raw\nc: ${A}\nd: cost $5\ne: x\n# ${NOT_SET} in a comment\nf: '#one' # ${NOT_SET}\n"
        );
    }

    #[test]
    fn unset_variables_are_all_reported_with_lines() {
        let f = PathBuf::from("p.yaml");
        let text = "a: ${MISSING_ONE}\nb: ok\nc: ${MISSING_TWO} ${1BAD}\n";
        let problems = interpolate(&f, text, &env(&[])).unwrap_err();
        let shown: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(shown.len(), 3, "{shown:?}");
        assert!(shown[0].starts_with("p.yaml:1: environment variable MISSING_ONE is not set"));
        assert!(shown[1].starts_with("p.yaml:3: environment variable MISSING_TWO"));
        assert!(shown[2].contains("\"1BAD\" is not a variable name"));
    }

    #[test]
    fn line_index_points_at_keys_and_items() {
        let text = "name: x\ntables:\n  raw:\n    path: lake/raw\nlist:\n  - a: 1\n  - a: 2\n";
        let idx = LineIndex::build(text);
        assert_eq!(idx.line_of("name"), Some(1));
        assert_eq!(idx.line_of("tables.raw.path"), Some(4));
        assert_eq!(idx.line_of("tables.raw.pathh"), Some(3), "falls back to the parent");
        assert_eq!(idx.line_of("list[1].a"), Some(7));
    }
}
