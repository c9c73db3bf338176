//! Table folders. Two tables must never share a folder or nest in one
//! another: vacuuming the outer table would delete the inner one's data
//! files and log, as files no commit of the outer table names.
//!
//! Checked on resolved locations (after `${VAR}` interpolation, relative
//! paths against the working directory), so two spellings of one folder
//! are one folder. Every job loads the pipeline through this check, so it
//! holds at run time, with the run's environment, not only in `weir
//! validate`.

use crate::storage::Location;

/// A table's folder as a URL without the trailing slash.
fn folder(location: &Location) -> String {
    location.url().as_str().trim_end_matches('/').to_string()
}

fn inside(inner: &str, outer: &str) -> bool {
    inner.strip_prefix(outer).is_some_and(|rest| rest.starts_with('/'))
}

/// Problems, as (key path, message), among tables given as (key path,
/// resolved location): `written` tables may neither coincide nor nest;
/// a `read` table (a reference) may be one of the written ones, but not
/// inside one or around one.
pub fn overlaps(written: &[(String, Location)], read: &[(String, Location)]) -> Vec<(String, String)> {
    let resolve = |tables: &[(String, Location)]| -> Vec<(String, String)> {
        tables.iter().map(|(k, v)| (k.clone(), folder(v))).collect()
    };
    let (written, read) = (resolve(written), resolve(read));
    let mut problems = Vec::new();
    for (i, (key, at)) in written.iter().enumerate() {
        for (other, other_at) in &written[..i] {
            if at == other_at {
                problems
                    .push((key.clone(), format!("{other} is at the same location: two tables cannot share a folder")));
            } else if inside(at, other_at) || inside(other_at, at) {
                let (inner, outer) = if inside(at, other_at) { (key, other) } else { (other, key) };
                problems.push((key.clone(), format!(
                    "{inner} is inside the folder of {outer}: vacuuming {outer} would delete {inner}'s files; give each table a folder of its own"
                )));
            }
        }
        for (r, r_at) in &read {
            if inside(r_at, at) || inside(at, r_at) {
                problems.push((
                    r.clone(),
                    format!(
                        "{r} and {key} nest in one another: vacuuming the outer table would delete the inner one's files"
                    ),
                ));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::overlaps;
    use crate::storage::Location;

    fn at(key: &str, path: &str) -> (String, Location) {
        (key.to_string(), Location::parse(path).unwrap())
    }

    fn keys(problems: Vec<(String, String)>) -> Vec<String> {
        problems.into_iter().map(|(k, _)| k).collect()
    }

    #[test]
    fn coinciding_and_nested_folders_are_found_by_resolved_location() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().display().to_string();
        let a = format!("{root}/lake/a");
        let a_again = format!("{root}/lake/../lake/a/");
        let inner = format!("{root}/lake/a/inner");
        let b = format!("{root}/lake/b");
        let written = [at("a", &a), at("b", &b)];
        assert!(overlaps(&written, &[]).is_empty());
        let same = [at("a", &a), at("a2", &a_again)];
        assert_eq!(keys(overlaps(&same, &[])), ["a2"]);
        let nested = [at("inner", &inner), at("a", &a)];
        let found = overlaps(&nested, &[]);
        assert_eq!(keys(found.clone()), ["a"]);
        assert!(found[0].1.starts_with("inner is inside the folder of a"), "{found:?}");
        // A reference may be a written table, not inside or around one.
        assert!(overlaps(&written, &[at("r", &a)]).is_empty());
        assert_eq!(keys(overlaps(&written, &[at("r", &inner)])), ["r"]);
    }
}
