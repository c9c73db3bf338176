//! `${VAR}` and `${VAR:-default}` in a pipeline file, taken literally.
//!
//! A value is never pasted into the YAML text: `WEIR_LAKE='/data/hash #'`
//! would turn the rest of every path into a comment, and a value with a
//! `: ` or a quote would change the file's structure. Instead each `${...}`
//! becomes a placeholder (on the same line, so line numbers stay true), the
//! text is parsed, and the values replace the placeholders inside the
//! parsed scalars. A plain (unquoted) scalar that is then a number, a
//! boolean or null is typed as YAML would type it (`commit_bytes:
//! ${BYTES}`); anything else is a string, exactly the value.
//!
//! Hazard: a value is part of one scalar. A variable cannot add keys or
//! items; write them in the file.

use std::collections::HashSet;
use std::path::Path;

use serde_yaml_ng::Value;

use super::Problem;

/// Opens a placeholder: a Unicode noncharacter, never in a real file and
/// valid inside every kind of YAML scalar.
pub(crate) const OPEN: char = '\u{FDD0}';
/// Closes a placeholder; the digits between are the value's index.
const CLOSE: char = '\u{FDD1}';

/// The file's text with placeholders, and the value of each.
#[derive(Debug)]
pub(crate) struct Placeholders {
    /// The text to parse.
    pub text: String,
    /// Value of placeholder `i`.
    values: Vec<String>,
}

/// Finds every `${VAR}` and `${VAR:-default}` (outside comments) and looks
/// it up in `env`; `$${` is a literal `${`. Every unset variable without a
/// default, and every value a scalar cannot hold (a line break or another
/// control character), is a problem on its line naming the variable.
pub(crate) fn placeholders(
    file: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Placeholders, Vec<Problem>> {
    let mut out = Placeholders { text: String::with_capacity(text.len()), values: Vec::new() };
    let mut problems = Vec::new();
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let mut problem = |message: String| problems.push(line_problem(file, n, message));
        if line.contains([OPEN, CLOSE]) {
            problem(format!("the file holds the character U+{:04X}, which Weir reserves", OPEN as u32));
        }
        // Comments are documentation: `${...}` in them is left alone.
        let (line, comment) = line.split_at(comment_start(line));
        let mut rest = line;
        while let Some(at) = rest.find('$') {
            out.text.push_str(&rest[..at]);
            let tail = &rest[at..];
            if let Some(after) = tail.strip_prefix("$${") {
                out.push("${".to_string());
                rest = after;
            } else if let Some(body) = tail.strip_prefix("${") {
                let Some(end) = body.find('}') else {
                    problem("unterminated `${` (escape a literal as `$${`)".to_string());
                    out.text.push_str(tail);
                    rest = "";
                    continue;
                };
                let expr = &body[..end];
                let (name, default) = match expr.split_once(":-") {
                    Some((name, default)) => (name, Some(default)),
                    None => (expr, None),
                };
                if !is_var_name(name) {
                    problem(format!("`${{{expr}}}`: {name:?} is not a variable name"));
                } else {
                    // An empty value counts as unset, as in the shell's `:-`.
                    match (env(name).filter(|v| !v.is_empty()), default) {
                        (Some(v), _) => match unfit(&v) {
                            Some(what) => problem(format!(
                                "environment variable {name} holds {what}, which a pipeline value cannot take"
                            )),
                            None => out.push(v),
                        },
                        (None, Some(d)) => out.push(d.to_string()),
                        (None, None) => problem(format!(
                            "environment variable {name} is not set (set it, or write `${{{name}:-default}}`)"
                        )),
                    }
                }
                rest = &body[end + 1..];
            } else {
                out.text.push('$');
                rest = &tail[1..];
            }
        }
        out.text.push_str(rest);
        out.text.push_str(comment);
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// What in a variable's value no pipeline value may hold, if anything. A
/// line break is almost always a file read with its trailing newline or a
/// pasted fragment, never part of a path or a name.
fn unfit(value: &str) -> Option<&'static str> {
    if value.contains(['\n', '\r']) {
        Some("a line break")
    } else if value.chars().any(|c| (c.is_control() && c != '\t') || c == OPEN || c == CLOSE) {
        Some("a control character")
    } else {
        None
    }
}

impl Placeholders {
    fn push(&mut self, value: String) {
        self.text.push(OPEN);
        self.text.push_str(&self.values.len().to_string());
        self.text.push(CLOSE);
        self.values.push(value);
    }

    /// Replaces the placeholders in every scalar (keys too) of `value`.
    /// `plain` holds the plain scalars (as parsed) that have one: those are
    /// typed again after the values are in.
    pub(crate) fn substitute(&self, value: &mut Value, plain: &HashSet<String>) {
        if self.values.is_empty() {
            return;
        }
        match value {
            Value::String(s) if s.contains(OPEN) => {
                let typed = plain.contains(s.as_str());
                let text = self.fill(s);
                *value = if typed { plain_scalar(text) } else { Value::String(text) };
            }
            Value::Sequence(items) => items.iter_mut().for_each(|v| self.substitute(v, plain)),
            Value::Mapping(map) => {
                let entries = std::mem::take(map);
                for (mut k, mut v) in entries {
                    self.substitute(&mut k, plain);
                    self.substitute(&mut v, plain);
                    map.insert(k, v);
                }
            }
            Value::Tagged(tagged) => self.substitute(&mut tagged.value, plain),
            _ => {}
        }
    }

    /// `s` with each placeholder replaced by its value.
    fn fill(&self, s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(at) = rest.find(OPEN) {
            out.push_str(&rest[..at]);
            let after = &rest[at + OPEN.len_utf8()..];
            let index = after.find(CLOSE).and_then(|end| Some((after[..end].parse::<usize>().ok()?, end)));
            match index.and_then(|(i, end)| Some((self.values.get(i)?, end))) {
                Some((v, end)) => {
                    out.push_str(v);
                    rest = &after[end + CLOSE.len_utf8()..];
                }
                None => {
                    out.push(OPEN);
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        out
    }
}

/// A plain scalar typed as YAML types it: a number, a boolean or null when
/// its text is one, else the string. Only text made of the characters such
/// tokens use is parsed, so no value can bring in structure.
fn plain_scalar(text: String) -> Value {
    if text.chars().all(|c| c.is_ascii_alphanumeric() || "+-._~".contains(c)) {
        if let Ok(v @ (Value::Null | Value::Bool(_) | Value::Number(_))) = serde_yaml_ng::from_str::<Value>(&text) {
            return v;
        }
    }
    Value::String(text)
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

fn line_problem(file: &Path, line0: usize, message: String) -> Problem {
    Problem { file: file.to_path_buf(), line: Some(line0 + 1), path: String::new(), message }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }

    /// The text with placeholders parsed, then filled: what the pipeline sees.
    fn filled(text: &str, vars: &[(&str, &str)]) -> Value {
        let p = placeholders(&PathBuf::from("p.yaml"), text, &env(vars)).unwrap();
        let plain = super::super::load::LineIndex::build(&p.text).unwrap().1;
        let mut value: Value = serde_yaml_ng::from_str(&p.text).unwrap();
        p.substitute(&mut value, &plain);
        value
    }

    #[test]
    fn interpolation_forms() {
        let text = "a: ${A}\nb: ${B:-lake}/raw\nc: $${A}\nd: cost $5\ne: ${E:-}x\n# ${NOT_SET} in a comment\nf: '#${A}' # ${NOT_SET}\n";
        let expected = "a: one\nb: lake/raw\nc: ${A}\nd: cost $5\ne: x\nf: '#one'\n";
        assert_eq!(filled(text, &[("A", "one")]), serde_yaml_ng::from_str::<Value>(expected).unwrap());
    }

    /// A value is a literal part of its scalar, whatever YAML would make of
    /// it in the text; unquoted numbers and booleans keep their type.
    #[test]
    fn values_are_taken_literally() {
        let tricky = "/data/hash # x: [y], 'z\" &a *b {c} | > - ? %";
        let text = "a: ${T}/raw\nb: \"${T}\"\nc: '${T}'\nd: [${T}, ${N}]\ne: ${N}\nf: ${B}\ng: '${N}'\nh: |\n  ${T}\n${K}: k\n";
        let v = filled(text, &[("T", tricky), ("N", "6000"), ("B", "true"), ("K", "key: x")]);
        assert_eq!(v["a"], Value::String(format!("{tricky}/raw")));
        assert_eq!(v["b"], Value::String(tricky.into()));
        assert_eq!(v["c"], Value::String(tricky.into()));
        assert_eq!(v["d"][0], Value::String(tricky.into()));
        assert_eq!(v["d"][1], Value::Number(6000.into()));
        assert_eq!(v["e"], Value::Number(6000.into()));
        assert_eq!(v["f"], Value::Bool(true));
        assert_eq!(v["g"], Value::String("6000".into()), "quoted stays a string");
        assert_eq!(v["h"], Value::String(format!("{tricky}\n")));
        assert_eq!(v["key: x"], Value::String("k".into()));
    }

    #[test]
    fn unset_variables_are_all_reported_with_lines() {
        let f = PathBuf::from("p.yaml");
        let text = "a: ${MISSING_ONE}\nb: ok\nc: ${MISSING_TWO} ${1BAD}\n";
        let problems = placeholders(&f, text, &env(&[])).unwrap_err();
        let shown: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(shown.len(), 3, "{shown:?}");
        assert!(shown[0].starts_with("p.yaml:1: environment variable MISSING_ONE is not set"));
        assert!(shown[1].starts_with("p.yaml:3: environment variable MISSING_TWO"));
        assert!(shown[2].contains("\"1BAD\" is not a variable name"));
    }

    #[test]
    fn a_value_with_a_line_break_is_a_problem_naming_the_variable() {
        let f = PathBuf::from("p.yaml");
        let text = "a: 1\nb: ${LAKE}/raw\nc: ${BELL}\n";
        let problems = placeholders(&f, text, &env(&[("LAKE", "/data\nx: 1"), ("BELL", "\u{7}")])).unwrap_err();
        let shown: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            shown,
            [
                "p.yaml:2: environment variable LAKE holds a line break, which a pipeline value cannot take",
                "p.yaml:3: environment variable BELL holds a control character, which a pipeline value cannot take",
            ]
        );
    }
}
