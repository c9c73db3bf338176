//! The raw table's streaming writer: accepted rows are encoded into Parquet
//! as they arrive, on a task of their own, while the next capture files are
//! still being fetched and decoded.
//!
//! Why a task: Parquet encoding (snappy, levels, statistics) is about half of
//! ingest's CPU. Done at commit time it ran while decoding had stopped, and
//! delta-rs's batch `write` copied every row twice on the way (a `take` per
//! partition value, then a concatenation). Here each capture file's rows go
//! straight into the open file of their `enqueued_date` partition
//! (`write_partition`, no copy), and the decoder threads keep the other
//! cores busy meanwhile.
//!
//! Hazard: the files are written before the commit knows whether another
//! ingest committed some of the same events. The caller then
//! [`RawSink::discard`]s them (deletes the files it wrote and never
//! committed) and writes what is left again; see `commit` in the parent.
//! Files are never deleted after a commit attempt failed: the commit may
//! have landed (a timeout, an error after the store applied it), and its
//! files are then the table's. Uncommitted files left by a crash or a failed
//! commit are orphans that `weir maintain`'s vacuum removes.

use std::collections::BTreeMap;

use delta_kernel::expressions::Scalar;
use deltalake::arrow::array::{AsArray, RecordBatch};
use deltalake::arrow::compute::filter_record_batch;
use deltalake::arrow::datatypes::Date32Type;
use deltalake::kernel::Add;
use deltalake::writer::{DeltaWriter as _, RecordBatchWriter, WriteMode};
use deltalake::DeltaTable;
use indexmap::IndexMap;
use object_store::path::Path;
use object_store::ObjectStoreExt as _;
use tokio::sync::{mpsc, oneshot};

use crate::lake::contract::RAW_PARTITION_COLUMN;
use crate::{Error, Result};

enum Command {
    Write(RecordBatch),
    Flush(oneshot::Sender<Result<Vec<Add>>>),
}

/// Input a writer task takes before the next one gets the following rows.
/// A commit smaller than this (an incremental run) makes one file per
/// date; a large one spreads its encoding over every writer.
const SHARE_BYTES: u64 = 8 << 20;

/// Handle to the writer tasks. Dropping it aborts whatever was written and
/// not flushed.
pub(crate) struct RawSink {
    workers: Vec<mpsc::Sender<Command>>,
    /// The worker taking rows now, and the capture bytes it has taken.
    current: usize,
    taken: u64,
    table: String,
    store: deltalake::logstore::ObjectStoreRef,
}

impl RawSink {
    /// Starts `writers` writer tasks for `table`'s current schema and
    /// partitioning. Each writes its own files: Parquet encoding of one file
    /// is single-threaded, and it is about half of ingest's work.
    pub(crate) fn start(table: &DeltaTable, writers: usize) -> Result<Self> {
        let name = crate::storage::redact(table.table_url().as_str());
        let mut workers = Vec::new();
        for _ in 0..writers.max(1) {
            let writer = RecordBatchWriter::for_table(table)
                .map_err(|e| Error::delta(&name, e))?
                .with_writer_properties(crate::delta::raw_writer_properties());
            // Two batches in flight: enough to keep the encoder busy, and the
            // decoders wait (bounding memory) when it falls behind.
            let (tx, rx) = mpsc::channel(2);
            tokio::spawn(run(writer, rx, name.clone()));
            workers.push(tx);
        }
        Ok(Self { workers, current: 0, taken: 0, table: name, store: table.object_store() })
    }

    /// Queues raw rows (of any dates) read from `input_bytes` of capture
    /// files for encoding.
    pub(crate) async fn write(&mut self, batch: RecordBatch, input_bytes: u64) -> Result<()> {
        if self.taken >= SHARE_BYTES {
            self.current = (self.current + 1) % self.workers.len();
            self.taken = 0;
        }
        self.taken += input_bytes;
        self.workers[self.current].send(Command::Write(batch)).await.map_err(|_| self.gone())
    }

    /// Closes the open files and returns their `Add` actions (none when
    /// nothing was written). The first error of any write since the last
    /// flush is returned here, and the files of that window are aborted.
    pub(crate) async fn flush(&mut self) -> Result<Vec<Add>> {
        let mut replies = Vec::new();
        for worker in &self.workers {
            let (reply, rx) = oneshot::channel();
            worker.send(Command::Flush(reply)).await.map_err(|_| self.gone())?;
            replies.push(rx);
        }
        let mut adds = Vec::new();
        let mut first_error = None;
        for rx in replies {
            match rx.await.map_err(|_| self.gone())? {
                Ok(a) => adds.extend(a),
                Err(e) => first_error = first_error.or(Some(e)),
            }
        }
        // The next commit starts on the first writer again: small commits
        // stay one file per date.
        self.current = 0;
        self.taken = 0;
        match first_error {
            None => Ok(adds),
            Some(e) => {
                self.discard(&adds).await;
                Err(e)
            }
        }
    }

    /// Deletes flushed files that will not be committed.
    pub(crate) async fn discard(&self, adds: &[Add]) {
        for add in adds {
            // Add paths are relative to the table root, percent-encoded.
            let path = Path::from_url_path(&add.path).unwrap_or_else(|_| Path::from(add.path.as_str()));
            if let Err(e) = self.store.delete(&path).await {
                tracing::warn!(table = %self.table, file = %add.path, error = %e, "could not delete an uncommitted raw file; vacuum will");
            }
        }
    }

    fn gone(&self) -> Error {
        Error::Internal(format!("the writer task of {} stopped", self.table))
    }
}

async fn run(mut writer: RecordBatchWriter, mut rx: mpsc::Receiver<Command>, table: String) {
    let mut failed: Option<Error> = None;
    while let Some(command) = rx.recv().await {
        match command {
            Command::Write(batch) => {
                if failed.is_none() {
                    if let Err(e) = write_by_date(&mut writer, batch).await {
                        failed = Some(Error::delta(&table, e));
                    }
                }
            }
            Command::Flush(reply) => {
                let result = match failed.take() {
                    Some(e) => {
                        writer.reset();
                        Err(e)
                    }
                    None => writer.flush().await.map_err(|e| Error::delta(&table, e)),
                };
                let _ = reply.send(result);
            }
        }
    }
    // The handle was dropped (the run failed or ended): nothing of this
    // window will be committed.
    writer.reset();
}

/// Writes a batch into its date partitions; a capture file nearly always
/// holds one date, so the usual case is a single write without a copy.
async fn write_by_date(writer: &mut RecordBatchWriter, batch: RecordBatch) -> deltalake::DeltaResult<()> {
    let column = batch
        .column_by_name(RAW_PARTITION_COLUMN)
        .ok_or_else(|| deltalake::DeltaTableError::generic(format!("raw rows lack {RAW_PARTITION_COLUMN}")))?;
    let dates = column.as_primitive::<Date32Type>().values();
    let Some(first) = dates.first().copied() else { return Ok(()) };
    let partition = |d: i32| IndexMap::from([(RAW_PARTITION_COLUMN.to_string(), Scalar::Date(d))]);
    if dates.iter().all(|d| *d == first) {
        writer.write_partition(batch, &partition(first), WriteMode::Default).await?;
        return Ok(());
    }
    let mut distinct: BTreeMap<i32, ()> = BTreeMap::new();
    for d in dates.iter() {
        distinct.insert(*d, ());
    }
    for d in distinct.into_keys() {
        let mask = dates.iter().map(|x| *x == d).collect::<Vec<bool>>().into();
        let part = filter_record_batch(&batch, &mask)?;
        writer.write_partition(part, &partition(d), WriteMode::Default).await?;
    }
    Ok(())
}
