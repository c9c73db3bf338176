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

use crate::body::framing::{envelope_columns, Envelopes, Framing};
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
    /// Storage failed to give the file (from here on): the file is not
    /// damaged, and a rerun reads it again.
    pub(crate) unreadable: Option<Error>,
}

/// A chunk as framed, before decoding.
struct Framed {
    file: Arc<CaptureFile>,
    header: Option<Arc<Header>>,
    chunk: std::result::Result<Chunk, DecodeError>,
    index: u64,
    last: bool,
    file_bytes: u64,
    unreadable: Option<Error>,
}

impl Framed {
    /// The end of a file storage failed to give, from chunk `index` on.
    fn unreadable(file: Arc<CaptureFile>, index: u64, e: Error) -> Framed {
        let chunk = Err(DecodeError::file(e.to_string()));
        Framed { file, header: None, chunk, index, last: true, file_bytes: 0, unreadable: Some(e) }
    }
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
    framing: Arc<Framing>,
) -> BoxStream<'static, Result<Piece>> {
    stream::iter(files)
        .map(move |file| {
            let kept = Arc::new(file.clone());
            let mut reader = FileReader::new(store.clone(), source.clone(), file);
            async move {
                match reader.fill().await {
                    Ok(()) => Ok(reader),
                    Err(e) => Err((kept, e)),
                }
            }
        })
        .buffered(fetches.max(1))
        .flat_map(|opened| match opened {
            Ok(reader) => reader.into_stream(),
            // One file storage cannot give stops its partition, not the run.
            Err((file, e)) => stream::once(async move { Ok(Framed::unreadable(file, 0, e)) }).boxed(),
        })
        .map(move |framed| {
            let (subjects, framing) = (subjects.clone(), framing.clone());
            async move { decode_with_deadline(framed?, subjects, framing).await }
        })
        .buffered(decoders.max(1))
        .boxed()
}

/// Where files are read from, to read parked ones again.
pub(crate) struct Files {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) source: String,
    pub(crate) subjects: Vec<String>,
    /// How bodies become JSON, for the subject columns.
    pub(crate) framing: Arc<Framing>,
}

impl Files {
    /// The decoded chunks of `files`, in order.
    pub(crate) fn read(
        &self,
        files: Vec<CaptureFile>,
        fetches: usize,
        decoders: usize,
    ) -> BoxStream<'static, Result<Piece>> {
        pieces(
            self.store.clone(),
            self.source.clone(),
            files,
            fetches,
            decoders,
            self.subjects.clone(),
            self.framing.clone(),
        )
    }
}

/// Reads one file range by range and frames it.
struct FileReader {
    store: Arc<dyn ObjectStore>,
    source: String,
    file: Arc<CaptureFile>,
    /// Bytes to read: the listed size, unless the object turned out shorter.
    size: u64,
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
            size: file.size,
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
        if self.offset < self.size {
            let end = self.size.min(self.offset + READ_BYTES);
            let bytes = match self.store.get_range(&self.file.path, self.offset..end).await {
                Ok(b) => b,
                Err(e) => {
                    // A range past the end of an object shorter than it was
                    // listed (replaced meanwhile) is refused by the store:
                    // read what is there, and the framing says what is
                    // missing. Any other failure is the storage's.
                    let name = format!("{}/{}", self.source.trim_end_matches('/'), self.file.name);
                    match self.store.head(&self.file.path).await {
                        Ok(meta) if meta.size < self.size => {
                            self.size = meta.size;
                            return Ok(());
                        }
                        _ => return Err(Error::storage(&name, e)),
                    }
                }
            };
            if bytes.is_empty() {
                self.size = self.offset;
            }
            self.offset += bytes.len() as u64;
            let items = splitter.push(&bytes);
            if self.header.is_none() {
                self.header = splitter.header().cloned();
            }
            let failed = items.last().is_some_and(|i| i.is_err());
            self.ready.extend(items);
            if failed {
                // Damage ends the file: nothing after it is read.
                self.splitter = None;
                self.done = true;
            }
            return Ok(());
        }
        let splitter = self.splitter.take().expect("checked above");
        self.ready.extend(splitter.finish());
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
                return Ok(Some(Framed {
                    file: self.file.clone(),
                    header: self.header.clone(),
                    chunk,
                    index,
                    last,
                    file_bytes,
                    unreadable: None,
                }));
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
                Err(e) => Some((Ok(Framed::unreadable(reader.file.clone(), reader.handed, e)), None)),
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
async fn decode_with_deadline(framed: Framed, subjects: Vec<String>, framing: Arc<Framing>) -> Result<Piece> {
    let Framed { file, header, chunk, index, last, file_bytes, unreadable } = framed;
    if let Some(e) = unreadable {
        let result = Err(DecodeError::file(e.to_string()));
        return Ok(Piece { file, index, last, file_bytes, result, unreadable: Some(e) });
    }
    let piece = |result| Piece { file: file.clone(), index, last, file_bytes, result, unreadable: None };
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
            with_subject_columns(&batch, &subjects, &framing)
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

/// Capture rows with one `subject_<field>` column per subject field after
/// them, read from each body's JSON (`framing`; null where it has none).
fn with_subject_columns(
    batch: &RecordBatch,
    subjects: &[String],
    framing: &Framing,
) -> std::result::Result<RecordBatch, DecodeError> {
    let mut fields: Vec<Field> = batch.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.extend(subjects.iter().map(|s| Field::new(subject::column_name(s), DataType::Utf8, true)));
    let mut columns = batch.columns().to_vec();
    let bodies = batch
        .column_by_name("body")
        .ok_or_else(|| DecodeError { record: None, reason: "internal: no body column".into() })?;
    if framing.is_plain() {
        columns.extend(subject::extract(bodies.as_ref(), subjects));
    } else {
        let column = |name: &str| batch.column_by_name(name).map(|c| c.as_ref());
        let [content_type, content_encoding] =
            envelope_columns(batch.num_rows(), column("system_properties"), column("properties"));
        let envelopes = Envelopes::new(Some(content_type.as_ref()), Some(content_encoding.as_ref()));
        let (json, _) = framing.json_array(bodies.as_ref(), &envelopes);
        columns.extend(subject::extract(&json, subjects));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|e| DecodeError { record: None, reason: format!("internal: subject columns: {e}") })
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_testkit::capture::{corrupt, write_capture_file, CaptureEvent, Codec, Corruption, FileSpec};

    fn file_of(n: i64) -> Vec<u8> {
        let at = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let events: Vec<CaptureEvent> = (0..n)
            .map(|i| CaptureEvent {
                sequence_number: i,
                offset: i.to_string(),
                enqueued_time: at,
                system_properties: vec![],
                properties: vec![],
                body: Some(format!("{{\"n\":{i},\"pad\":\"{}\"}}", "y".repeat(300)).into_bytes()),
            })
            .collect();
        write_capture_file(&events, &FileSpec { codec: Codec::Null, ..FileSpec::default() }).unwrap()
    }

    async fn read(dir: &std::path::Path, bytes: &[u8], listed: u64) -> Vec<Piece> {
        std::fs::write(dir.join("f.avro"), bytes).unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir).unwrap());
        let file = CaptureFile {
            window: chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            name: "f.avro".into(),
            path: object_store::path::Path::from("f.avro"),
            size: listed,
            e_tag: None,
            partition_id: "0".into(),
        };
        let mut out = Vec::new();
        let plain = Arc::new(Framing::Json(crate::body::framing::Compression::None));
        let mut s = pieces(store, "local".into(), vec![file], 2, 2, Vec::new(), plain);
        while let Some(p) = s.next().await {
            out.push(p.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn a_file_streams_in_chunks_that_account_for_every_byte() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = file_of(40_000);
        let pieces = read(dir.path(), &bytes, bytes.len() as u64).await;
        assert!(pieces.len() > 3, "{} pieces", pieces.len());
        assert_eq!(pieces.iter().map(|p| p.file_bytes).sum::<u64>(), bytes.len() as u64);
        assert_eq!(pieces.iter().map(|p| p.result.as_ref().unwrap().num_rows()).sum::<usize>(), 40_000);
        assert!(pieces.iter().enumerate().all(|(i, p)| p.index == i as u64 && p.last == (i + 1 == pieces.len())));
    }

    #[tokio::test]
    async fn an_object_shorter_than_listed_is_a_torn_file_after_its_valid_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let whole = file_of(40_000);
        let torn = corrupt(&whole, Corruption::Truncate { keep: whole.len() - 100 });
        let pieces = read(dir.path(), &torn, whole.len() as u64).await;
        let (last, good) = pieces.split_last().unwrap();
        assert!(last.last);
        let e = last.result.as_ref().unwrap_err();
        assert!(e.reason.contains("truncated"), "{e}");
        let rows: usize = good.iter().map(|p| p.result.as_ref().unwrap().num_rows()).sum();
        assert!(rows > 30_000, "the valid chunks come first: {rows}");
        assert_eq!(e.record, Some(rows as u64));
        assert_eq!(
            pieces.iter().map(|p| p.file_bytes).sum::<u64>(),
            whole.len() as u64,
            "the listed size is accounted"
        );
    }
}
