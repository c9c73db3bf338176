//! Routing, for a pipeline with `process.routes`: which raw rows of a range
//! a route's run takes (those whose discriminator is one of its values),
//! and the quarantine rows of the events no route takes. Only the first
//! route writes those, under its own marker, so each is quarantined once.
//!
//! Pure, like the evaluate step: the same rows and routes give the same
//! split, which is what makes a route's repair run exact.

use chrono::{DateTime, Utc};
use deltalake::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch};
use deltalake::arrow::compute::{concat_batches, filter_record_batch};

use super::compiled::Routing;
use super::evaluate::quarantine_batch;
use super::read::DISCRIMINATOR_COLUMN;
use super::{arrow_err, Compiled};
use crate::body::framing::Envelopes;
use crate::body::subject;
use crate::lake::contract::{quarantine_schema, ROUTE_RULE};
use crate::pipeline::RouteBy;
use crate::{Error, Result};

/// A range's raw rows as one route's run sees them.
pub(super) struct Split {
    /// The raw rows the route takes, batch by batch.
    pub(super) taken: Vec<RecordBatch>,
    /// Quarantine rows of the events no route takes (empty but for the
    /// first route), and their raw versions.
    pub(super) unrouted: RecordBatch,
    pub(super) unrouted_versions: Vec<i64>,
}

/// Splits the raw rows of a range for `plan`'s route.
pub(super) fn split(
    plan: &Compiled,
    routing: &Routing,
    raw: Vec<RecordBatch>,
    run_id: &str,
    now: DateTime<Utc>,
) -> Result<Split> {
    let mut taken = Vec::with_capacity(raw.len());
    let mut unrouted = Vec::new();
    let mut unrouted_versions = Vec::new();
    for batch in raw {
        let (values, unreadable) = discriminators(plan, &routing.by, &batch)?;
        let unreadable: std::collections::HashMap<usize, String> = unreadable.into_iter().collect();
        let values = values.as_string::<i32>();
        let mut keep = Vec::with_capacity(batch.num_rows());
        let mut lost: Vec<(usize, String)> = Vec::new();
        for row in 0..batch.num_rows() {
            let value = values.is_valid(row).then(|| values.value(row));
            keep.push(value.is_some_and(|v| routing.values.contains(v)));
            if routing.takes_unrouted && value.is_none_or(|v| !routing.all.iter().any(|a| a == v)) {
                let why = unreadable.get(&row).map(String::as_str);
                lost.push((row, reason(routing, value, why)));
            }
        }
        if !lost.is_empty() {
            let (rows, versions) = quarantine_rows(&batch, &lost, run_id, now)?;
            unrouted.push(rows);
            unrouted_versions.extend(versions);
        }
        taken.push(match keep.iter().all(|k| *k) {
            true => batch,
            false => filter_record_batch(&batch, &BooleanArray::from(keep)).map_err(arrow_err("routed rows"))?,
        });
    }
    taken.retain(|b| b.num_rows() > 0);
    let unrouted = match unrouted.len() {
        0 => RecordBatch::new_empty(quarantine_schema()),
        1 => unrouted.pop().expect("one"),
        _ => concat_batches(&quarantine_schema(), &unrouted).map_err(arrow_err("unrouted rows"))?,
    };
    Ok(Split { taken, unrouted, unrouted_versions })
}

/// Each row's discriminator (Utf8, null where it has none), and why a
/// body could not be read to find it.
fn discriminators(plan: &Compiled, by: &RouteBy, batch: &RecordBatch) -> Result<(ArrayRef, Vec<(usize, String)>)> {
    let column = |name: &str| {
        batch.column_by_name(name).cloned().ok_or_else(|| Error::Internal(format!("raw column {name} missing")))
    };
    match by {
        RouteBy::Property(_) => Ok((column(DISCRIMINATOR_COLUMN)?, Vec::new())),
        RouteBy::Field(field) => {
            let bodies = column("body")?;
            let fields = std::slice::from_ref(field);
            if plan.framing.is_plain() {
                return Ok((subject::extract(bodies.as_ref(), fields).remove(0), Vec::new()));
            }
            let (ct, ce) = (column("content_type")?, column("content_encoding")?);
            let envelopes = Envelopes::new(Some(ct.as_ref()), Some(ce.as_ref()));
            let (json, unreadable) = plan.framing.json_array(bodies.as_ref(), &envelopes);
            Ok((subject::extract(&json, fields).remove(0), unreadable))
        }
    }
}

/// Why an event with discriminator `value` matches no route.
fn reason(routing: &Routing, value: Option<&str>, unreadable: Option<&str>) -> String {
    let key = routing.by.key();
    match (value, &routing.by, unreadable) {
        (Some(v), _, _) => {
            format!("{ROUTE_RULE}: {key} {v:?} matches no route (routes take: {})", routing.all.join(", "))
        }
        (None, RouteBy::Property(_), _) => format!("{ROUTE_RULE}: the event has no property {key}"),
        (None, RouteBy::Field(_), Some(why)) => {
            format!("{ROUTE_RULE}: the body cannot be read to find its field {key}: {why}")
        }
        (None, RouteBy::Field(_), None) => format!(
            "{ROUTE_RULE}: the body has no top-level field {key} holding a string, number or boolean (or holds it twice)"
        ),
    }
}

/// The quarantine rows of rows `lost` of `raw` (with their reasons), and
/// their raw versions.
fn quarantine_rows(
    raw: &RecordBatch,
    lost: &[(usize, String)],
    run_id: &str,
    now: DateTime<Utc>,
) -> Result<(RecordBatch, Vec<i64>)> {
    let rows: Vec<usize> = lost.iter().map(|(i, _)| *i).collect();
    let reasons: Vec<String> = lost.iter().map(|(_, r)| r.clone()).collect();
    let batch = quarantine_batch(raw, &rows, &vec![vec![ROUTE_RULE]; rows.len()], &reasons, run_id, now)?;
    let versions = batch.column(4).as_primitive::<deltalake::arrow::datatypes::Int64Type>().values().to_vec();
    Ok((batch, versions))
}
