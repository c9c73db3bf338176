//! A clean environment for tests: a user's shell may export `WEIR_*`,
//! `AZURE_*` or `RUST_LOG`, and none of it may change what a test sees.

use std::process::Command;

/// Names of this process's variables that start with one of `prefixes`,
/// except those in `keep`.
fn matching(prefixes: &[&str], keep: &[&str]) -> Vec<String> {
    std::env::vars_os()
        .map(|(k, _)| k.to_string_lossy().to_string())
        .filter(|k| prefixes.iter().any(|p| k.starts_with(p)) && !keep.contains(&k.as_str()))
        .collect()
}

/// `cmd` without the shell's `WEIR_*`, `AZURE_*` and `RUST_LOG`; the test
/// sets what the job needs after this.
pub fn clean(cmd: &mut Command) -> &mut Command {
    for k in matching(&["WEIR_", "AZURE_"], &[]) {
        cmd.env_remove(k);
    }
    cmd.env_remove("RUST_LOG")
}

/// Removes the variables starting with `prefixes` (but not those in `keep`)
/// from this process, for work a test runs in-process. Call it before
/// starting threads: the environment is shared by the whole process.
pub fn clean_process(prefixes: &[&str], keep: &[&str]) {
    for k in matching(prefixes, keep) {
        std::env::remove_var(k);
    }
}

/// The Python interpreter with the independent readers and encoders
/// (deltalake, polars, fastavro, the Azure encoder) that `scripts/test.sh`
/// prepares: `WEIR_PYTHON`, else the venv it creates.
pub fn python() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("WEIR_PYTHON") {
        return p.into();
    }
    let home = std::env::var_os("HOME").expect("HOME");
    let venv = std::path::Path::new(&home).join(".cache/weir-venv/bin/python");
    assert!(venv.exists(), "no Python reader: run scripts/test.sh once (it creates {})", venv.display());
    venv
}
