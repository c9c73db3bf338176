//! The commit-metadata vocabulary: every commit Weir writes says which
//! pipeline, stage and run wrote it, under the same keys, so `weir status`
//! and a consumer reading the Delta history can tell them apart.
//!
//! Keys: `weir.pipeline`, `weir.stage` (`ingest`, `process`, `curate`,
//! `maintain`, `erase`, `runs`), `weir.run_id`, then what the stage adds
//! (`weir.action`, `weir.source`, `weir.source_versions`,
//! `weir.raw_versions`, `weir.process_config`, `weir.curate_model`).
//! Lakes written before the vocabulary was unified hold `weir.job` for
//! some stages: [`stage_of`] reads both.

use std::collections::HashMap;

use serde_json::Value;

/// Metadata key: the pipeline's name.
pub const PIPELINE: &str = "weir.pipeline";
/// Metadata key: the stage or job that wrote the commit.
pub const STAGE: &str = "weir.stage";
/// Metadata key: the run id.
pub const RUN_ID: &str = "weir.run_id";
/// Metadata key: what a maintain or erase commit did (`optimize`, `purge`, …).
pub const ACTION: &str = "weir.action";
/// The key older lakes used for [`STAGE`] in some stages.
const LEGACY_STAGE: &str = "weir.job";

/// The metadata of one commit.
#[derive(Debug, Clone)]
pub struct CommitInfo {
    map: HashMap<String, Value>,
}

impl CommitInfo {
    /// The keys every commit carries.
    pub fn new(pipeline: &str, stage: &str, run_id: &str) -> CommitInfo {
        let map = HashMap::from([
            (PIPELINE.to_string(), Value::from(pipeline)),
            (STAGE.to_string(), Value::from(stage)),
            (RUN_ID.to_string(), Value::from(run_id)),
        ]);
        CommitInfo { map }
    }

    /// Adds a stage-specific key (`weir.` is prefixed when missing).
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> CommitInfo {
        let key = if key.starts_with("weir.") { key.to_string() } else { format!("weir.{key}") };
        self.map.insert(key, value.into());
        self
    }

    /// The map delta-rs commits.
    pub fn into_map(self) -> HashMap<String, Value> {
        self.map
    }
}

/// The stage that wrote a commit, from its metadata (either vocabulary).
pub fn stage_of(info: &HashMap<String, Value>) -> Option<&str> {
    info.get(STAGE).or_else(|| info.get(LEGACY_STAGE)).and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_commit_names_pipeline_stage_and_run_and_old_keys_still_read() {
        let map = CommitInfo::new("p", "process", "r1").with("raw_versions", serde_json::json!([1, 2])).into_map();
        assert_eq!(map[PIPELINE], "p");
        assert_eq!(map[RUN_ID], "r1");
        assert_eq!(map["weir.raw_versions"], serde_json::json!([1, 2]));
        assert_eq!(stage_of(&map), Some("process"));
        let legacy = HashMap::from([("weir.job".to_string(), Value::from("ingest"))]);
        assert_eq!(stage_of(&legacy), Some("ingest"));
        assert_eq!(stage_of(&HashMap::new()), None);
    }
}
