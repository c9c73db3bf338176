//! Dedup on a business key: Event Hubs delivers at least once, and producers
//! re-send, so one event can arrive many times with different sequence
//! numbers.
//!
//! Two passes over one hash per row ([`RowConverter`] turns any key columns
//! into bytes, which [`key_hashes`] hashes once per run step):
//! 1. within the batch: the first row of each key by `order_by` (then
//!    lineage) is kept; copies are compared only when a key repeats, and
//!    kept rows stay in batch order;
//! 2. against the processed table: with `keep: first` (default) keys
//!    already published within the lookback window (by event date) win,
//!    since events are immutable and readers have already seen them; with
//!    `keep: latest` an incoming row whose `order_by` values are greater
//!    replaces the stored one (the stage then merges instead of appending,
//!    so consumers see an update in the change feed). A stored row with the
//!    *same lineage*
//!    (partition, sequence number) is the same event written by an earlier,
//!    interrupted run: it is counted as already written, not as a duplicate,
//!    so a repair run reports the same figures as the original.
//!
//! Rows with a null key have no identity: they are all kept (declare a
//! `not_null` expectation on the key to quarantine them instead).
//!
//! Hazard: duplicates older than the lookback are not found. The lookback is
//! the knob between cost (the stored keys read per run) and reach.
//!
//! Keys are held as 128-bit hashes of their row bytes (two XXH64 under
//! independent seeds chosen per process): 16 bytes a key whatever its width, no allocation per row. Two
//! different keys of a 10-million-key index share a hash with probability
//! about 10^-25; the per-process seed keeps a producer from crafting a
//! collision that would make Weir drop another event as its duplicate.

use std::collections::hash_map::Entry as Slot;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, OnceLock};

use deltalake::arrow::array::{make_comparator, Array, AsArray, BooleanArray, RecordBatch};
use deltalake::arrow::compute::{filter_record_batch, SortOptions};
use deltalake::arrow::datatypes::{Int64Type, Schema};
use deltalake::arrow::row::{RowConverter, SortField};
use serde::{Deserialize, Serialize};

mod settled;
use settled::SettledKeys;

/// `process.dedup` in the pipeline file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DedupConfig {
    /// Business key columns, e.g. `[eventId]`.
    pub key: Vec<String>,
    /// Which copy wins: the first or the latest by `order_by`.
    #[serde(default)]
    pub keep: Keep,
    /// The order copies are compared in: these columns, then partition and
    /// sequence number.
    #[serde(default = "default_order_by")]
    pub order_by: Vec<String>,
    /// How many days of already-processed events (by event date, before the
    /// oldest event in the run) are searched for the same key.
    #[serde(default = "default_lookback_days")]
    pub lookback_days: u32,
}

/// Which copy of a key survives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Keep {
    /// The smallest by `order_by`; stored rows always win (append only).
    #[default]
    First,
    /// The greatest by `order_by`; a later copy replaces a stored one.
    Latest,
}

fn default_order_by() -> Vec<String> {
    vec![ENQUEUED_TIME.to_string()]
}

fn default_lookback_days() -> u32 {
    7
}

const ENQUEUED_TIME: &str = "_enqueued_time";
/// Lineage column: Event Hub partition.
pub const PARTITION: &str = "_partition_id";
/// Lineage column: sequence number within the partition.
pub const SEQUENCE: &str = "_sequence_number";

impl DedupConfig {
    /// Problems with the declaration against the rows' schema.
    pub fn check(&self, schema: &Schema) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if self.key.is_empty() {
            problems.push(("key".to_string(), "name at least one key column".to_string()));
        }
        for (what, cols) in [("key", &self.key), ("order_by", &self.order_by)] {
            for (i, c) in cols.iter().enumerate() {
                if schema.field_with_name(c).is_err() {
                    problems.push((format!("{what}[{i}]"), format!("no column {c:?} in the processed rows")));
                }
            }
        }
        problems
    }
}

/// What dedup did to a batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DedupCounts {
    /// Rows dropped because an earlier row in the same run had the key.
    pub within_run: u64,
    /// Rows dropped because the processed table already had the key.
    pub against_table: u64,
    /// Rows the table already holds with the same lineage (an earlier run
    /// wrote them before being interrupted); not written again.
    pub already_written: u64,
    /// Kept rows that replace a stored row with the same key (`keep: latest`).
    pub replacing: u64,
}

impl DedupConfig {
    /// The columns dedup needs from stored rows: key, order and lineage.
    pub fn stored_columns(&self) -> Vec<String> {
        let mut cols: Vec<String> = self.key.clone();
        if self.keep == Keep::Latest {
            cols.extend(self.order_by.iter().cloned());
        }
        cols.extend([PARTITION.to_string(), SEQUENCE.to_string()]);
        let mut seen = HashSet::new();
        cols.retain(|c| seen.insert(c.clone()));
        cols
    }
}

fn key_converter(schema: &Schema, key: &[String]) -> Result<RowConverter, String> {
    let fields = key
        .iter()
        .map(|k| {
            schema
                .field_with_name(k)
                .map(|f| SortField::new(f.data_type().clone()))
                .map_err(|_| format!("dedup key column {k:?} missing"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    RowConverter::new(fields).map_err(|e| e.to_string())
}

fn columns(batch: &RecordBatch, names: &[String]) -> Result<Vec<Arc<dyn Array>>, String> {
    names.iter().map(|n| batch.column_by_name(n).cloned().ok_or_else(|| format!("column {n:?} missing"))).collect()
}

/// Keeps the first (or, with `keep: latest`, the last) row of each key,
/// ordering by `order_by` then lineage. Kept rows stay in batch order.
pub fn within_batch(batch: &RecordBatch, config: &DedupConfig) -> Result<(RecordBatch, u64), String> {
    let hashes = key_hashes(batch, config)?;
    let (keep, dropped) = within_batch_mask(batch, &hashes, config)?;
    Ok((select(batch, &hashes, &keep)?.0, dropped))
}

/// The key hash of every row of `batch` (`None` for a null key), computed
/// once per run step and passed to [`within_batch_mask`],
/// [`StoredIndex::filter_mask`] and [`StoredIndex::add_hashed`].
pub fn key_hashes(batch: &RecordBatch, config: &DedupConfig) -> Result<Vec<Option<u128>>, String> {
    if batch.num_rows() == 0 {
        return Ok(Vec::new());
    }
    let converter = key_converter(&batch.schema(), &config.key)?;
    let key_columns = columns(batch, &config.key)?;
    let rows = converter.convert_columns(&key_columns).map_err(|e| e.to_string())?;
    let null_key = null_keys(&key_columns, batch.num_rows());
    Ok(null_key.iter().enumerate().map(|(i, &null)| (!null).then(|| key_hash(rows.row(i).as_ref()))).collect())
}

/// [`within_batch`] over precomputed [`key_hashes`]: which rows survive
/// (`true`) and how many were dropped. One hash-table pass: copies are
/// compared by `order_by` and lineage only when a key repeats.
pub fn within_batch_mask(
    batch: &RecordBatch,
    hashes: &[Option<u128>],
    config: &DedupConfig,
) -> Result<(Vec<bool>, u64), String> {
    let n = batch.num_rows();
    if hashes.len() != n {
        return Err(format!("{} key hashes for {n} rows", hashes.len()));
    }
    let mut order: Vec<String> = config.order_by.clone();
    for c in [PARTITION, SEQUENCE] {
        if !order.iter().any(|o| o == c) && batch.column_by_name(c).is_some() {
            order.push(c.to_string());
        }
    }
    let options = SortOptions { descending: config.keep == Keep::Latest, nulls_first: false };
    let comparators = columns(batch, &order)?
        .iter()
        .map(|c| make_comparator(c.as_ref(), c.as_ref(), options))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    // `a` goes before `b`: it is the copy that wins.
    let before =
        |a: usize, b: usize| comparators.iter().map(|c| c(a, b)).find(|o| o.is_ne()) == Some(std::cmp::Ordering::Less);
    let mut winner: KeyMap<u32> = KeyMap::with_capacity_and_hasher(n, Default::default());
    let mut keep = vec![true; n];
    let mut dropped = 0u64;
    for (i, h) in hashes.iter().enumerate() {
        let Some(h) = h else { continue };
        match winner.entry(*h) {
            Slot::Vacant(v) => {
                v.insert(i as u32);
            }
            Slot::Occupied(mut o) => {
                dropped += 1;
                let j = *o.get() as usize;
                if before(i, j) {
                    keep[j] = false;
                    o.insert(i as u32);
                } else {
                    keep[i] = false;
                }
            }
        }
    }
    Ok((keep, dropped))
}

/// The rows of `batch` (and their hashes) that `keep` selects; the batch
/// itself, uncopied, when it selects every row.
pub fn select(
    batch: &RecordBatch,
    hashes: &[Option<u128>],
    keep: &[bool],
) -> Result<(RecordBatch, Vec<Option<u128>>), String> {
    if keep.iter().all(|k| *k) {
        return Ok((batch.clone(), hashes.to_vec()));
    }
    let kept = filter_record_batch(batch, &BooleanArray::from(keep.to_vec())).map_err(|e| e.to_string())?;
    let kept_hashes = hashes.iter().zip(keep).filter(|(_, k)| **k).map(|(h, _)| *h).collect();
    Ok((kept, kept_hashes))
}

/// A 128-bit hash of a key's row bytes, under a seed chosen once per process.
fn key_hash(row: &[u8]) -> u128 {
    static SEEDS: OnceLock<(u64, u64)> = OnceLock::new();
    let (a, b) = *SEEDS.get_or_init(|| {
        let id = uuid::Uuid::new_v4().as_u128();
        (id as u64, (id >> 64) as u64)
    });
    let hi = twox_hash::XxHash64::oneshot(a, row);
    let lo = twox_hash::XxHash64::oneshot(b, row);
    (u128::from(hi) << 64) | u128::from(lo)
}

/// Keys are already uniform hashes: the table hashes them no further.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u128 keys are hashed here (write_u128 is forwarded as bytes).
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(b);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64 ^ (v >> 64) as u64;
    }
}

type KeyMap<V> = HashMap<u128, V, BuildHasherDefault<KeyHasher>>;

/// Drops rows whose key the table already holds (with `keep: latest`, only
/// when the stored copy is not older). `existing` are batches of stored rows
/// with [`DedupConfig::stored_columns`].
pub fn against_existing(
    batch: &RecordBatch,
    existing: &[RecordBatch],
    config: &DedupConfig,
) -> Result<(RecordBatch, DedupCounts), String> {
    let mut index = StoredIndex::new(config);
    index.load(existing)?;
    index.filter(batch)
}

/// One stored copy of a key: its lineage and, with `keep: latest`, its
/// `order_by` values as comparable bytes.
struct Copy {
    partition: u32,
    sequence: i64,
    order: Box<[u8]>,
}

/// The stored copies of one key, 16 bytes inline: almost always one copy
/// without `order_by` bytes (`keep: first`), held here; otherwise `spill`
/// is the index of every copy in [`StoredIndex::spilled`]. Together with
/// the 16-byte key an entry is 32 bytes in the recent keys' hash table;
/// settled, a key with one copy costs 28 bytes and no doubling (see
/// `settled`).
struct Entry {
    partition: u32,
    spill: u32,
    sequence: i64,
}

const INLINE: u32 = u32::MAX;

/// The keys the processed table holds within the lookback, indexed once per
/// run and extended with what the run writes, so each step of a run probes
/// it instead of rebuilding it (rebuilding made a run's work grow with the
/// square of its input).
pub struct StoredIndex {
    config: DedupConfig,
    key: Option<RowConverter>,
    order: Option<RowConverter>,
    partitions: Vec<String>,
    partition_ids: HashMap<String, u32>,
    /// Keys added since the last [`settle`](Self::settle), and every key
    /// with more than one copy or with `order_by` bytes.
    copies: KeyMap<Entry>,
    spilled: Vec<Vec<Copy>>,
    /// Keys with one copy and no `order_by` bytes (`keep: first`), moved
    /// out of `copies` when it reaches `settle_at` keys.
    settled: SettledKeys,
    settle_at: usize,
}

/// Recent keys held in the hash table before they settle: 1.5M entries
/// stay within 2^21 buckets (~66 MB), and a 10M-key run merges ~7 times.
const SETTLE_AT: usize = 1_500_000;

impl StoredIndex {
    /// An empty index for `config`.
    pub fn new(config: &DedupConfig) -> StoredIndex {
        StoredIndex {
            config: config.clone(),
            key: None,
            order: None,
            partitions: Vec::new(),
            partition_ids: HashMap::new(),
            copies: KeyMap::default(),
            spilled: Vec::new(),
            settled: SettledKeys::default(),
            settle_at: SETTLE_AT,
        }
    }

    /// Keys indexed.
    pub fn len(&self) -> usize {
        self.copies.len() + self.settled.len()
    }

    /// Whether no key is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Moves the recent keys with one plain copy into the settled keys.
    fn settle(&mut self) {
        let mut single = Vec::new();
        self.copies.retain(|key, entry| {
            let plain = entry.spill == INLINE;
            if plain {
                single.push((*key, entry.partition, entry.sequence));
            }
            !plain
        });
        self.settled.merge(single);
    }

    fn converters(&mut self, schema: &Schema) -> Result<(), String> {
        if self.key.is_none() {
            self.key = Some(key_converter(schema, &self.config.key)?);
            if self.config.keep == Keep::Latest {
                self.order = Some(key_converter(schema, &self.config.order_by)?);
            }
        }
        Ok(())
    }

    /// Builds the index of the stored rows read at the start of a run (with
    /// [`DedupConfig::stored_columns`]): [`StoredIndex::load_batch`] for
    /// each, then [`StoredIndex::finish_load`].
    pub fn load(&mut self, batches: &[RecordBatch]) -> Result<(), String> {
        let mut pending = Vec::new();
        for b in batches {
            self.load_batch(b, &mut pending)?;
        }
        self.finish_load(pending);
        Ok(())
    }

    /// Takes one batch of stored rows while the index is built: with
    /// `keep: first`, each key's hash and lineage go to `pending` (32 bytes
    /// a key; the batch can be dropped), to be sorted once by
    /// [`StoredIndex::finish_load`]. Inserting millions of keys one by one
    /// into the recent keys' hash table cost most of the time a run spent
    /// reading the lookback's keys. With `keep: latest` the rows are added.
    pub fn load_batch(&mut self, batch: &RecordBatch, pending: &mut Vec<(u128, u32, i64)>) -> Result<(), String> {
        if self.config.keep == Keep::Latest || batch.num_rows() == 0 {
            return self.add(batch);
        }
        self.converters(&batch.schema())?;
        let hashes = key_hashes(batch, &self.config)?;
        let (parts, seqs) = lineage(batch)?;
        let mut last: Option<(usize, u32)> = None;
        pending.reserve(batch.num_rows());
        for (i, hash) in hashes.iter().enumerate() {
            let Some(hash) = *hash else { continue };
            let p = parts.value(i);
            // Rows come in runs of one partition: look up only changes.
            let partition = match last {
                Some((j, id)) if parts.value(j) == p => id,
                _ => self.partition_id(p),
            };
            last = Some((i, partition));
            pending.push((hash, partition, seqs.value(i)));
        }
        Ok(())
    }

    /// Sorts what [`StoredIndex::load_batch`] gathered and splits it, in
    /// place, into the settled keys (one copy) and the keys with several
    /// copies.
    pub fn finish_load(&mut self, mut pending: Vec<(u128, u32, i64)>) {
        if pending.is_empty() {
            return;
        }
        let was_empty = self.is_empty();
        pending.sort_unstable_by_key(|e| e.0);
        let (mut read, mut write) = (0, 0);
        while read < pending.len() {
            let key = pending[read].0;
            let run = pending[read..].iter().take_while(|e| e.0 == key).count();
            if run == 1 || !was_empty {
                pending.copy_within(read..read + run, write);
                write += run;
            } else {
                let copies = pending[read..read + run].iter().map(|&(_, partition, sequence)| Copy {
                    partition,
                    sequence,
                    order: Box::default(),
                });
                self.copies.insert(key, Entry { partition: 0, spill: self.spilled.len() as u32, sequence: 0 });
                self.spilled.push(copies.collect());
            }
            read += run;
        }
        pending.truncate(write);
        if !was_empty {
            // Loaded into an index that holds keys: one by one.
            for (key, partition, sequence) in pending {
                self.add_copy(key, Copy { partition, sequence, order: Box::default() });
            }
            return;
        }
        self.settled.merge(pending);
    }

    fn partition_id(&mut self, p: &str) -> u32 {
        match self.partition_ids.get(p) {
            Some(id) => *id,
            None => {
                let id = self.partitions.len() as u32;
                self.partitions.push(p.to_string());
                self.partition_ids.insert(p.to_string(), id);
                id
            }
        }
    }

    /// Adds stored rows (with [`DedupConfig::stored_columns`]).
    pub fn add(&mut self, batch: &RecordBatch) -> Result<(), String> {
        let hashes = key_hashes(batch, &self.config)?;
        self.add_hashed(batch, &hashes)
    }

    /// [`StoredIndex::add`] over precomputed [`key_hashes`]; rows with a
    /// null key are not indexed.
    pub fn add_hashed(&mut self, batch: &RecordBatch, hashes: &[Option<u128>]) -> Result<(), String> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if hashes.len() != batch.num_rows() {
            return Err(format!("{} key hashes for {} rows", hashes.len(), batch.num_rows()));
        }
        self.converters(&batch.schema())?;
        let orders = match &self.order {
            Some(o) => Some(o.convert_columns(&columns(batch, &self.config.order_by)?).map_err(|e| e.to_string())?),
            None => None,
        };
        if self.copies.len() + batch.num_rows() > self.settle_at {
            self.settle();
        }
        self.copies.reserve(batch.num_rows());
        let (parts, seqs) = lineage(batch)?;
        for (i, hash) in hashes.iter().enumerate() {
            let Some(hash) = *hash else { continue };
            let partition = self.partition_id(parts.value(i));
            let copy = Copy {
                partition,
                sequence: seqs.value(i),
                order: orders.as_ref().map(|o| Box::from(o.row(i).as_ref())).unwrap_or_default(),
            };
            self.add_copy(hash, copy);
        }
        Ok(())
    }

    /// Adds one stored copy of the key `hash`.
    fn add_copy(&mut self, hash: u128, copy: Copy) {
        // A second copy of a settled key: both are held as recent.
        if !self.copies.contains_key(&hash) {
            if let Some((partition, sequence)) = self.settled.take(hash) {
                self.copies.insert(hash, Entry { partition, spill: INLINE, sequence });
            }
        }
        match self.copies.get_mut(&hash) {
            None if copy.order.is_empty() => {
                self.copies.insert(hash, Entry { partition: copy.partition, spill: INLINE, sequence: copy.sequence });
            }
            None => {
                self.copies.insert(hash, Entry { partition: 0, spill: self.spilled.len() as u32, sequence: 0 });
                self.spilled.push(vec![copy]);
            }
            Some(entry) if entry.spill == INLINE => {
                let first = Copy { partition: entry.partition, sequence: entry.sequence, order: Box::default() };
                entry.spill = self.spilled.len() as u32;
                self.spilled.push(vec![first, copy]);
            }
            Some(entry) => self.spilled[entry.spill as usize].push(copy),
        }
    }

    /// Drops rows whose key is stored (with `keep: latest`, only when the
    /// stored copy is not older); a stored row with the same lineage counts
    /// as already written.
    pub fn filter(&mut self, batch: &RecordBatch) -> Result<(RecordBatch, DedupCounts), String> {
        let hashes = key_hashes(batch, &self.config)?;
        let mut keep = vec![true; batch.num_rows()];
        let counts = self.filter_mask(batch, &hashes, &mut keep)?;
        Ok((select(batch, &hashes, &keep)?.0, counts))
    }

    /// [`StoredIndex::filter`] over precomputed [`key_hashes`]: clears
    /// `keep` for the rows it drops; rows already cleared are not looked at.
    pub fn filter_mask(
        &mut self,
        batch: &RecordBatch,
        hashes: &[Option<u128>],
        keep: &mut [bool],
    ) -> Result<DedupCounts, String> {
        let mut counts = DedupCounts::default();
        if batch.num_rows() == 0 || self.is_empty() {
            return Ok(counts);
        }
        if hashes.len() != batch.num_rows() || keep.len() != batch.num_rows() {
            return Err(format!("{} key hashes and {} flags for {} rows", hashes.len(), keep.len(), batch.num_rows()));
        }
        self.converters(&batch.schema())?;
        let orders = match &self.order {
            Some(o) => Some(o.convert_columns(&columns(batch, &self.config.order_by)?).map_err(|e| e.to_string())?),
            None => None,
        };
        let (parts, seqs) = lineage(batch)?;

        for (i, hash) in hashes.iter().enumerate() {
            let (Some(hash), true) = (hash, keep[i]) else { continue };
            let stored = match self.copies.get(hash) {
                Some(entry) => Some((entry.spill, entry.partition, entry.sequence)),
                None => self.settled.get(*hash).map(|(partition, sequence)| (INLINE, partition, sequence)),
            };
            match stored {
                None => {}
                Some((spill, partition, sequence)) => {
                    let inline;
                    let copies: &[Copy] = if spill == INLINE {
                        inline = [Copy { partition, sequence, order: Box::default() }];
                        &inline
                    } else {
                        &self.spilled[spill as usize]
                    };
                    let same_lineage = copies.iter().any(|c| {
                        c.sequence == seqs.value(i) && self.partitions[c.partition as usize] == parts.value(i)
                    });
                    if same_lineage {
                        counts.already_written += 1;
                        keep[i] = false;
                    } else if orders.as_ref().is_some_and(|o| copies.iter().all(|c| o.row(i).as_ref() > &*c.order)) {
                        counts.replacing += 1;
                    } else {
                        counts.against_table += 1;
                        keep[i] = false;
                    }
                }
            }
        }
        Ok(counts)
    }
}

/// Rows with a null in any key column: they have no identity to compare, so
/// dedup keeps them all (an expectation should catch them first).
fn null_keys(key_columns: &[Arc<dyn Array>], n: usize) -> Vec<bool> {
    (0..n).map(|i| key_columns.iter().any(|c| c.is_null(i))).collect()
}

fn lineage(batch: &RecordBatch) -> Result<(StrCol, &deltalake::arrow::array::PrimitiveArray<Int64Type>), String> {
    let p = batch.column_by_name(PARTITION).ok_or("lineage column _partition_id missing")?;
    let p =
        deltalake::arrow::compute::cast(p, &deltalake::arrow::datatypes::DataType::Utf8).map_err(|e| e.to_string())?;
    let s = batch.column_by_name(SEQUENCE).ok_or("lineage column _sequence_number missing")?;
    let s = s.as_primitive_opt::<Int64Type>().ok_or("lineage column _sequence_number is not a long")?;
    Ok((StrCol(p), s))
}

/// A Utf8 column of any string layout, cast once.
struct StrCol(Arc<dyn Array>);

impl StrCol {
    fn value(&self, i: usize) -> &str {
        self.0.as_string::<i32>().value(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::array::{Int64Array, StringArray};
    use deltalake::arrow::datatypes::{DataType, Field};

    fn rows(ids: &[&str], parts: &[&str], seqs: &[i64], order: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("eventId", DataType::Utf8, false),
            Field::new(PARTITION, DataType::Utf8, false),
            Field::new(SEQUENCE, DataType::Int64, false),
            Field::new("t", DataType::Int64, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(ids.to_vec())),
                Arc::new(StringArray::from(parts.to_vec())),
                Arc::new(Int64Array::from(seqs.to_vec())),
                Arc::new(Int64Array::from(order.to_vec())),
            ],
        )
        .unwrap()
    }

    fn config() -> DedupConfig {
        serde_yaml_ng::from_str("{key: [eventId], order_by: [t]}").unwrap()
    }

    fn ids_and_seqs(b: &RecordBatch) -> Vec<(String, i64)> {
        let ids = b.column(0).as_string::<i32>();
        let seqs = b.column(2).as_primitive::<Int64Type>();
        (0..b.num_rows()).map(|i| (ids.value(i).to_string(), seqs.value(i))).collect()
    }

    #[test]
    fn keeps_the_first_by_order_then_lineage() {
        let b = rows(&["a", "b", "a", "a", "c"], &["0", "0", "1", "0", "0"], &[5, 6, 2, 7, 8], &[20, 10, 20, 10, 30]);
        let (kept, dropped) = within_batch(&b, &config()).unwrap();
        assert_eq!(dropped, 2);
        // "a" at t=10 (seq 7) wins over its t=20 copies; ties on t order by
        // partition then sequence, so "b" (seq 6) comes first.
        assert_eq!(ids_and_seqs(&kept), [("b".into(), 6), ("a".into(), 7), ("c".into(), 8)]);
    }

    #[test]
    fn stored_keys_win_and_same_lineage_counts_as_written() {
        let stored = rows(&["a", "b"], &["0", "0"], &[1, 2], &[0, 0]);
        let b = rows(&["a", "b", "c"], &["1", "0", "0"], &[9, 2, 3], &[0, 0, 0]);
        let (kept, counts) = against_existing(&b, &[stored], &config()).unwrap();
        assert_eq!(ids_and_seqs(&kept), [("c".into(), 3)]);
        assert_eq!(counts, DedupCounts { within_run: 0, against_table: 1, already_written: 1, replacing: 0 });
    }

    #[test]
    fn a_key_stored_several_times_keeps_every_lineage() {
        // The same key stored twice (a re-send written before dedup saw it,
        // or a lookback that grew), over two additions to the index.
        let mut index = StoredIndex::new(&config());
        index.add(&rows(&["a", "b"], &["0", "0"], &[1, 2], &[0, 0])).unwrap();
        index.add(&rows(&["a"], &["3"], &[40], &[0])).unwrap();
        assert_eq!(index.len(), 2);
        let b = rows(&["a", "a", "b", "c"], &["3", "0", "0", "0"], &[40, 1, 7, 8], &[0, 0, 0, 0]);
        let (kept, counts) = index.filter(&b).unwrap();
        assert_eq!(ids_and_seqs(&kept), [("c".into(), 8)]);
        assert_eq!(counts, DedupCounts { within_run: 0, against_table: 1, already_written: 2, replacing: 0 });
    }

    #[test]
    fn settled_keys_filter_as_recent_ones_do() {
        // The same additions, settling after every batch and never: a key
        // settled then stored again, and one stored twice within a batch.
        let adds = [
            rows(&["a", "b", "c"], &["0", "0", "0"], &[1, 2, 3], &[0, 0, 0]),
            rows(&["d", "a"], &["1", "2"], &[4, 50], &[0, 0]),
            rows(&["e", "e", "b"], &["1", "1", "0"], &[6, 7, 2], &[0, 0, 0]),
        ];
        let probe = rows(
            &["a", "a", "b", "c", "d", "e", "f"],
            &["2", "0", "0", "9", "1", "1", "0"],
            &[50, 1, 2, 3, 9, 7, 8],
            &[0; 7],
        );
        let mut outcomes = Vec::new();
        for settle_at in [1, SETTLE_AT] {
            let mut index = StoredIndex::new(&config());
            index.settle_at = settle_at;
            for b in &adds {
                index.add(b).unwrap();
            }
            assert_eq!(index.len(), 5, "one per key, however many copies");
            let (kept, counts) = index.filter(&probe).unwrap();
            outcomes.push((ids_and_seqs(&kept), counts));
        }
        // Loaded at once (sorted, split into settled keys and keys with
        // several copies), then extended one by one: the same answers.
        let mut loaded = StoredIndex::new(&config());
        loaded.load(&adds[..2]).unwrap();
        loaded.add(&adds[2]).unwrap();
        assert_eq!(loaded.len(), 5);
        let (kept, counts) = loaded.filter(&probe).unwrap();
        outcomes.push((ids_and_seqs(&kept), counts));
        // Loaded in two parts: the second into an index holding keys.
        let mut twice = StoredIndex::new(&config());
        twice.load(&adds[..1]).unwrap();
        twice.load(&adds[1..]).unwrap();
        assert_eq!(twice.len(), 5);
        let (kept, counts) = twice.filter(&probe).unwrap();
        outcomes.push((ids_and_seqs(&kept), counts));
        assert_eq!(outcomes[0], outcomes[1]);
        assert_eq!(outcomes[0], outcomes[2]);
        assert_eq!(outcomes[0], outcomes[3]);
        assert_eq!(outcomes[0].0, [("f".into(), 8)]);
        assert_eq!(outcomes[0].1, DedupCounts { within_run: 0, against_table: 2, already_written: 4, replacing: 0 });
    }

    #[test]
    fn keep_latest_takes_the_greatest_and_replaces_older_stored_rows() {
        let latest: DedupConfig = serde_yaml_ng::from_str("{key: [eventId], keep: latest, order_by: [t]}").unwrap();
        let b = rows(&["a", "a", "b", "b"], &["0", "0", "0", "1"], &[1, 2, 3, 4], &[10, 20, 5, 5]);
        let (kept, dropped) = within_batch(&b, &latest).unwrap();
        assert_eq!(dropped, 2);
        // "a" at t=20 wins; "b" ties on t, so the greater lineage (partition 1) wins.
        assert_eq!(ids_and_seqs(&kept), [("a".into(), 2), ("b".into(), 4)]);

        let stored = rows(&["a", "b", "c"], &["0", "0", "0"], &[0, 0, 9], &[15, 30, 1]);
        let incoming = rows(&["a", "b", "c", "d"], &["1", "1", "0", "1"], &[7, 8, 9, 10], &[20, 20, 1, 1]);
        let (kept, counts) = against_existing(&incoming, &[stored], &latest).unwrap();
        assert_eq!(ids_and_seqs(&kept), [("a".into(), 7), ("d".into(), 10)]);
        assert_eq!(counts, DedupCounts { within_run: 0, against_table: 1, already_written: 1, replacing: 1 });
        assert_eq!(latest.stored_columns(), ["eventId", "t", PARTITION, SEQUENCE]);
    }

    #[test]
    fn null_keys_are_never_duplicates() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("eventId", DataType::Utf8, true),
            Field::new(PARTITION, DataType::Utf8, false),
            Field::new(SEQUENCE, DataType::Int64, false),
            Field::new("t", DataType::Int64, false),
        ]));
        let b = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![None, None, Some("a")])),
                Arc::new(StringArray::from(vec!["0", "0", "0"])),
                Arc::new(Int64Array::from(vec![1, 2, 3])),
                Arc::new(Int64Array::from(vec![1, 2, 3])),
            ],
        )
        .unwrap();
        let (kept, dropped) = within_batch(&b, &config()).unwrap();
        assert_eq!((kept.num_rows(), dropped), (3, 0));
        let (kept, counts) = against_existing(&b, std::slice::from_ref(&b), &config()).unwrap();
        assert_eq!(kept.num_rows(), 2, "the two null-key rows stay");
        assert_eq!(counts.already_written, 1);
    }

    #[test]
    fn check_names_unknown_columns() {
        let schema = rows(&[], &[], &[], &[]).schema();
        let c: DedupConfig = serde_yaml_ng::from_str("{key: [eventID], order_by: [t, x]}").unwrap();
        let p = c.check(&schema);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].0, "key[0]");
        assert_eq!(p[1].0, "order_by[1]");
    }
}
