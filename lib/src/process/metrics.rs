//! Quality figures: per-rule figures of each range, the quality-metrics
//! rows they become, and the run report's totals.

use std::sync::Arc;

use deltalake::arrow::array::{
    BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};

use super::run::RawRange;
use super::{arrow_err, Compiled};
use crate::expectations::Action;
use crate::lake::contract::{metrics_schema, metrics_schema_with_route};
use crate::report::{QualityReport, RuleOutcome, RuleVerdict};
use crate::Result;

/// Per-rule figures of one chunk.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct RuleFigures {
    pub(super) rule: String,
    /// The rule's SQL (none for the schema rule).
    pub(super) expression: Option<String>,
    pub(super) action: Action,
    pub(super) checked: u64,
    pub(super) failed: u64,
    pub(super) max_failure_rate: Option<f64>,
    pub(super) outcome: RuleVerdict,
}

/// One quality-metrics row per rule of `range`; `published`
/// says whether the range's rows were written.
pub(super) fn metrics_batch(
    plan: &Compiled,
    run_id: &str,
    range: &RawRange,
    rules: &[RuleFigures],
    published: bool,
) -> Result<RecordBatch> {
    let RawRange { from, to, now } = *range;
    let k = rules.len();
    let mut columns: Vec<deltalake::arrow::array::ArrayRef> = vec![
        Arc::new(StringArray::from(vec![run_id; k])),
        Arc::new(StringArray::from(vec![plan.pipeline.as_str(); k])),
        Arc::new(StringArray::from(vec!["process"; k])),
        Arc::new(Int64Array::from(vec![from as i64; k])),
        Arc::new(Int64Array::from(vec![to as i64; k])),
        Arc::new(StringArray::from(rules.iter().map(|r| r.rule.as_str()).collect::<Vec<_>>())),
        Arc::new(StringArray::from(rules.iter().map(|r| r.expression.as_deref()).collect::<Vec<_>>())),
        Arc::new(StringArray::from(rules.iter().map(|r| r.action.as_str()).collect::<Vec<_>>())),
        Arc::new(Int64Array::from(rules.iter().map(|r| r.checked as i64).collect::<Vec<_>>())),
        Arc::new(Int64Array::from(rules.iter().map(|r| r.failed as i64).collect::<Vec<_>>())),
        Arc::new(Float64Array::from(
            rules.iter().map(|r| (r.checked > 0).then(|| r.failed as f64 / r.checked as f64)).collect::<Vec<_>>(),
        )),
        Arc::new(Float64Array::from(rules.iter().map(|r| r.max_failure_rate).collect::<Vec<_>>())),
        Arc::new(StringArray::from(rules.iter().map(|r| r.outcome.as_str()).collect::<Vec<_>>())),
        Arc::new(BooleanArray::from(vec![published; k])),
        Arc::new(TimestampMicrosecondArray::from(vec![now.timestamp_micros(); k]).with_timezone("UTC")),
    ];
    // Only a pipeline with routes has the route column.
    let schema = match plan.unit.route_name() {
        None => metrics_schema(),
        Some(route) => {
            columns.push(Arc::new(StringArray::from(vec![route; k])));
            metrics_schema_with_route()
        }
    };
    RecordBatch::try_new(schema, columns).map_err(arrow_err("metrics rows"))
}

/// Adds one chunk's figures to the run's, rule by rule.
pub(super) fn merge_rules(quality: &mut QualityReport, rules: &[RuleFigures]) {
    for r in rules {
        let entry = match quality.rules.iter_mut().position(|q| q.rule == r.rule) {
            Some(i) => &mut quality.rules[i],
            None => {
                quality.rules.push(RuleOutcome {
                    rule: r.rule.clone(),
                    action: r.action,
                    outcome: r.outcome,
                    ..Default::default()
                });
                quality.rules.last_mut().expect("just pushed")
            }
        };
        entry.rows_checked += r.checked;
        entry.rows_failed += r.failed;
        // The most serious outcome of any chunk is the run's outcome.
        if !matches!(r.outcome, RuleVerdict::Passed | RuleVerdict::Kept) {
            entry.outcome = r.outcome;
        }
    }
}
