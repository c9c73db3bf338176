//! Selecting rows: by flag (dedup's verdicts) or by raw version (what a
//! table that is ahead in a repair run lacks).

use deltalake::arrow::array::{BooleanArray, RecordBatch};
use deltalake::arrow::compute::filter_record_batch;

use super::arrow_err;
use crate::Result;

/// The rows of `batch` from raw versions after `after` (all of them for
/// `None`): what a table whose marker is `after` lacks.
pub(super) fn rows_after(batch: &RecordBatch, versions: &[i64], after: Option<i64>) -> Result<RecordBatch> {
    match after {
        None => Ok(batch.clone()),
        Some(p) => {
            let mask: BooleanArray = versions.iter().map(|v| Some(*v > p)).collect();
            filter_record_batch(batch, &mask).map_err(arrow_err("rows to write"))
        }
    }
}

/// The rows of `parts` (taken in order, as one sequence) that `keep`
/// selects; a batch all of whose rows stay is passed on uncopied.
pub(super) fn filter_parts(parts: Vec<RecordBatch>, keep: &[bool]) -> Result<Vec<RecordBatch>> {
    let mut offset = 0;
    parts
        .into_iter()
        .map(|p| {
            let mask = &keep[offset..offset + p.num_rows()];
            offset += p.num_rows();
            if mask.iter().all(|k| *k) {
                Ok(p)
            } else {
                filter_record_batch(&p, &BooleanArray::from(mask.to_vec())).map_err(arrow_err("kept rows"))
            }
        })
        .collect()
}

/// The values `keep` selects.
pub(super) fn flagged<T: Copy>(values: &[T], keep: &[bool]) -> Vec<T> {
    values.iter().zip(keep).filter(|(_, k)| **k).map(|(v, _)| *v).collect()
}
