//! Capture files as one ordered stream of decoded chunks.
//!
//! Each file is read in ranges of [`READ_BYTES`], framed as the bytes arrive
//! ([`Splitter`]) and decoded chunk by chunk on the blocking pool, so a
//! 300 MB capture file needs a few chunks' worth of memory, not the file
//! twice over. Several files are opened ahead (the first range of each is
//! fetched early: object storage is latency-bound) while the chunks are
//! decoded on every core; the stream yields the chunks in file order, and
//! each file's in block order.
//!
//! Hazard: a chunk that fails to decode ends its file ([`Piece::last`]);
//! the chunks before it were valid and have already been yielded.

use std::collections::VecDeque;
use std::sync::Arc;

use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::datatypes::{DataType, Field, Schema};
use futures::stream::{self, BoxStream, StreamExt};
use object_store::{ObjectStore, ObjectStoreExt as _};

use crate::body::subject;
use crate::capture::{decode_chunk, CaptureFile, Chunk, DecodeError, Header, Splitter};
use crate::{Error, Result};

/// Bytes asked of the store per request.
pub(crate) const READ_BYTES: u64 = 8 << 20;

/// One decoded chunk of a capture file.
pub(crate) struct Piece {
    pub(crate) file: Arc<CaptureFile>,
    /// Position of the chunk in its file.
    pub(crate) index: u64,
    /// No chunk of this file follows.
    pub(crate) last: bool,
    /// Bytes of the file the chunk accounts for.
    pub(crate) file_bytes: u64,
    /// Rows in [`crate::capture::decode::capture_schema`] followed by the
    /// `subject_<field>` columns, or why the chunk could not be decoded.
    pub(crate) result: std::result::Result<RecordBatch, DecodeError>,
}

/// A chunk as framed, before decoding.
struct Framed {
    file: Arc<CaptureFile>,
    header: Option<Arc<Header>>,
    chunk: std::result::Result<Chunk, DecodeError>,
    index: u64,
    last: bool,
    file_bytes: u64,
}

/// The decoded chunks of `files`, in order: `fetches` files open ahead,
/// `decoders` chunks decoding at once.
pub(crate) fn pieces(
    store: Arc<dyn ObjectStore>,
    source: String,
    files: Vec<CaptureFile>,
    fetches: usize,
    decoders: usize,
    subjects: Vec<String>,
) -> BoxStream<'static, Result<Piece>> {
    stream::iter(files)
        .map(move |file| {
            let mut reader = FileReader::new(store.clone(), source.clone(), file);
            async move {
                reader.fill().await?;
                Ok::<_, Error>(reader)
            }
        })
        .buffered(fetches.max(1))
        .flat_map(|opened| match opened {
            Ok(reader) => reader.into_stream(),
            Err(e) => stream::once(async { Err(e) }).boxed(),
        })
        .map(move |framed| {
            let subjects = subjects.clone();
            async move { decode_with_deadline(framed?, subjects).await }
        })
        .buffered(decoders.max(1))
        .boxed()
}

/// Where files are read from, to read one again (a parked file).
pub(crate) struct Files {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) source: String,
    pub(crate) subjects: Vec<String>,
}

impl Files {
    /// The decoded chunks of one file, one at a time.
    pub(crate) fn read(&self, file: CaptureFile) -> BoxStream<'static, Result<Piece>> {
        pieces(self.store.clone(), self.source.clone(), vec![file], 1, 1, self.subjects.clone())
    }
}

/// Reads one file range by range and frames it.
struct FileReader {
    store: Arc<dyn ObjectStore>,
    source: String,
    file: Arc<CaptureFile>,
    offset: u64,
    splitter: Option<Splitter>,
    header: Option<Arc<Header>>,
    ready: VecDeque<std::result::Result<Chunk, DecodeError>>,
    /// File bytes handed out with chunks so far.
    accounted: u64,
    /// Chunks handed out so far.
    handed: u64,
    done: bool,
}

impl FileReader {
    fn new(store: Arc<dyn ObjectStore>, source: String, file: CaptureFile) -> Self {
        FileReader {
            store,
            source,
            file: Arc::new(file),
            offset: 0,
            splitter: Some(Splitter::default()),
            header: None,
            ready: VecDeque::new(),
            accounted: 0,
            handed: 0,
            done: false,
        }
    }

    /// Reads the next range, or ends the file.
    async fn fill(&mut self) -> Result<()> {
        let Some(splitter) = self.splitter.as_mut() else {
            self.done = true;
            return Ok(());
        };
        if self.offset < self.file.size {
            let end = self.file.size.min(self.offset + READ_BYTES);
            let bytes = self.store.get_range(&self.file.path, self.offset..end).await.map_err(|e| {
                Error::storage(&format!("{}/{}", self.source.trim_end_matches('/'), self.file.name), e)
            })?;
            if bytes.is_empty() {
                // The object is shorter than listed: end it here, and the
                // framing says what is missing.
                self.offset = self.file.size;
            }
            self.offset += bytes.len() as u64;
            match splitter.push(&bytes) {
                Ok(chunks) => self.ready.extend(chunks.into_iter().map(Ok)),
                Err(e) => {
                    self.ready.push_back(Err(e));
                    self.splitter = None;
                    self.done = true;
                }
            }
            if self.header.is_none() {
                self.header = self.splitter.as_ref().and_then(|s| s.header().cloned());
            }
            return Ok(());
        }
        let splitter = self.splitter.take().expect("checked above");
        match splitter.finish() {
            Ok(last) => self.ready.extend(last.map(Ok)),
            Err(e) => self.ready.push_back(Err(e)),
        }
        self.done = true;
        Ok(())
    }

    /// The next framed chunk; a chunk is handed out once the one after it
    /// (or the file's end) is known, so that it can say whether it is last.
    async fn next(&mut self) -> Result<Option<Framed>> {
        loop {
            if self.ready.len() >= 2 || (self.done && !self.ready.is_empty()) {
                let chunk = self.ready.pop_front().expect("not empty");
                let last = chunk.is_err() || (self.done && self.ready.is_empty());
                let file_bytes = match (&chunk, last) {
                    (Ok(c), false) => c.file_bytes,
                    // The last piece accounts for the rest of the file.
                    _ => self.file.size.saturating_sub(self.accounted),
                };
                self.accounted += file_bytes;
                let index = self.handed;
                self.handed += 1;
                if chunk.is_err() {
                    self.ready.clear();
                    self.splitter = None;
                    self.done = true;
                }
                return Ok(Some(Framed { file: self.file.clone(), header: self.header.clone(), chunk, index, last, file_bytes }));
            }
            if self.done {
                return Ok(None);
            }
            self.fill().await?;
        }
    }

    fn into_stream(self) -> BoxStream<'static, Result<Framed>> {
        stream::unfold(Some(self), |reader| async move {
            let mut reader = reader?;
            match reader.next().await {
                Ok(Some(framed)) => Some((Ok(framed), Some(reader))),
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        })
        .boxed()
    }
}

/// Decodes on the blocking pool with a deadline: a block whose declared
/// record count is smaller than its content makes arrow-avro spin forever,
/// and a job must end with a reason, not hang its scheduler slot.
///
/// The subject-key columns are extracted there too (one parse of every
/// body, ~10% of ingest's CPU): they are appended after the capture columns.
async fn decode_with_deadline(framed: Framed, subjects: Vec<String>) -> Result<Piece> {
    let Framed { file, header, chunk, index, last, file_bytes } = framed;
    let piece = |result| Piece { file: file.clone(), index, last, file_bytes, result };
    let (chunk, header) = match (chunk, header) {
        (Err(e), _) => return Ok(piece(Err(e))),
        (Ok(c), Some(h)) => (c, h),
        (Ok(_), None) => return Ok(piece(Err(DecodeError::file("internal: a chunk without its header")))),
    };
    let deadline = std::time::Duration::from_secs(60 + chunk.blocks.len() as u64 / 1_000_000);
    // tokio's blocking pool reuses its threads (a thread per file cost
    // ~0.3 s of system time per million events); a decode stuck past the
    // deadline keeps its thread and the pool starts another.
    let first_record = chunk.first_record;
    let work = tokio::task::spawn_blocking(move || {
        let batch = decode_chunk(&header, &chunk)?;
        if subjects.is_empty() {
            Ok(batch)
        } else {
            with_subject_columns(&batch, &subjects)
        }
    });
    match tokio::time::timeout(deadline, work).await {
        Ok(Ok(decoded)) => Ok(piece(decoded)),
        Ok(Err(_)) => Err(Error::Internal("decoder thread panicked".into())),
        Err(_) => Ok(piece(Err(DecodeError {
            record: Some(first_record),
            reason: format!("decoding did not finish within {} s (corrupt block record count?)", deadline.as_secs()),
        }))),
    }
}

/// Capture rows with one `subject_<field>` column per subject field after them.
fn with_subject_columns(batch: &RecordBatch, subjects: &[String]) -> std::result::Result<RecordBatch, DecodeError> {
    let mut fields: Vec<Field> = batch.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.extend(subjects.iter().map(|s| Field::new(subject::column_name(s), DataType::Utf8, true)));
    let mut columns = batch.columns().to_vec();
    columns.extend(subject::extract(batch.column(5).as_ref(), subjects));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|e| DecodeError { record: None, reason: format!("internal: subject columns: {e}") })
}
