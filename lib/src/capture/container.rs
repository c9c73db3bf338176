//! Avro object container framing, read block by block and cut into chunks.
//!
//! A capture file is a header (magic, metadata with `avro.codec` and
//! `avro.schema`, a 16-byte sync marker) followed by blocks of
//! `record count, byte size, data, sync marker`. [`Splitter`] takes the file's
//! bytes in pieces of any size, checks every block's framing as it completes,
//! and hands out [`Chunk`]s: runs of whole blocks of about [`CHUNK_BYTES`]
//! (or [`CHUNK_RECORDS`]), which [`super::decode`] turns into one Arrow batch
//! each. Memory therefore follows the chunk size, never the file size: a
//! production capture file (hundreds of MB, ~700,000 events per 5-minute
//! window) streams through the same bounded buffers as a small one.
//!
//! Hazards:
//! - A chunk is decoded on its own, and never more than one batch per
//!   decoder (see [`super::decode`]): arrow-avro 59's union decoder keeps its
//!   per-branch offsets across batches (apache/arrow-rs#10876).
//! - Corruption is found where it is: the blocks before it are valid and
//!   already handed out. The caller decides what a good prefix means (ingest
//!   keeps it: its events have sequence numbers like any other).
//! - Block sizes come from the file: one is bounded ([`MAX_BLOCK_BYTES`])
//!   before a buffer grows to hold it. Record counts size nothing (the
//!   decoder grows its buffers as it decodes); a count that lies is caught
//!   by the decoded row count, or by ingest's decode deadline.

use std::sync::Arc;

/// Why a capture file could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{reason}", record.map(|r| format!("record {r}: ")).unwrap_or_default())]
pub struct DecodeError {
    /// 0-based index of the offending record, when known.
    pub record: Option<u64>,
    /// What is wrong.
    pub reason: String,
}

impl DecodeError {
    pub(crate) fn file(reason: impl Into<String>) -> Self {
        DecodeError { record: None, reason: reason.into() }
    }

    /// The same error at the 0-based record `record` of the file.
    pub(crate) fn at(self, record: u64) -> Self {
        DecodeError { record: Some(record), ..self }
    }
}

/// A chunk is closed once its blocks hold this many bytes as stored (deflate
/// capture blocks inflate 3-5x): large enough that a fresh decoder per chunk
/// costs nothing measurable, small enough that a 300 MB file is cut into
/// hundreds of bounded batches that decode on every core.
pub const CHUNK_BYTES: usize = 1 << 20;

/// A chunk is closed once it holds this many records, whatever their size.
pub const CHUNK_RECORDS: u64 = 16_384;

/// A block declaring more bytes than this, stored or inflated, is refused as
/// corrupt: Event Hubs caps an event at 1 MB (20 MB on Dedicated), and Avro
/// writers close a block once it passes a small sync interval, so a real
/// block is at most a few events. The bound keeps a damaged size field from
/// making a buffer of it.
pub const MAX_BLOCK_BYTES: usize = 64 << 20;

/// A header without its end in this many bytes is corrupt (Capture's is
/// under 1 KB: the codec and the schema).
pub const MAX_HEADER_BYTES: usize = 1 << 20;

/// The magic bytes that open an Avro object container file.
const MAGIC: &[u8; 4] = b"Obj\x01";

/// What a container's header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// `avro.codec` (`null` when absent).
    pub codec: String,
    /// The sync marker that ends every block.
    pub sync: [u8; 16],
    /// The header exactly as stored (magic to sync marker).
    pub bytes: Vec<u8>,
    /// The same header with `avro.codec` set to `null`: for blocks this
    /// module inflated itself.
    pub bytes_uncompressed: Vec<u8>,
}

/// A run of whole blocks of one file, with the framing already checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Position of the chunk in its file (0, 1, …).
    pub index: u64,
    /// Index of the chunk's first block in the file.
    pub first_block: u64,
    /// Index of the chunk's first record in the file.
    pub first_record: u64,
    /// Records the blocks declare.
    pub records: u64,
    /// The blocks as stored: `count, size, data, sync` each.
    pub blocks: Vec<u8>,
    /// Bytes of the file this chunk accounts for (the first chunk also
    /// carries the header): the chunks of a file add up to its size.
    pub file_bytes: u64,
}

impl Chunk {
    /// The blocks one by one: (record count, data as stored).
    pub fn iter_blocks(&self) -> impl Iterator<Item = (i64, &[u8])> {
        let mut cur = Cursor { bytes: &self.blocks, pos: 0 };
        std::iter::from_fn(move || {
            if cur.pos >= cur.bytes.len() {
                return None;
            }
            // The framing was checked when the chunk was cut.
            let count = cur.long()?;
            let data = cur.bytes()?;
            cur.take(16)?;
            Some((count, data))
        })
    }
}

/// Incremental container reader: [`Splitter::push`] bytes as they arrive,
/// take the chunks it completes, then [`Splitter::finish`].
#[derive(Debug)]
pub struct Splitter {
    /// Bytes received and not yet framed.
    buf: Vec<u8>,
    header: Option<Arc<Header>>,
    chunk_bytes: usize,
    chunk_records: u64,
    /// Next block and record index in the file.
    block: u64,
    record: u64,
    /// Blocks framed but not yet handed out.
    open: Vec<u8>,
    open_first_block: u64,
    open_first_record: u64,
    open_records: u64,
    /// File bytes framed and not yet accounted to a handed-out chunk.
    open_file_bytes: u64,
    chunks_out: u64,
    failed: bool,
}

impl Default for Splitter {
    fn default() -> Self {
        Self::new(CHUNK_BYTES, CHUNK_RECORDS)
    }
}

impl Splitter {
    /// A splitter closing chunks at `chunk_bytes` stored bytes or
    /// `chunk_records` records, whichever comes first (a single larger block
    /// is a chunk of its own).
    pub fn new(chunk_bytes: usize, chunk_records: u64) -> Self {
        Splitter {
            buf: Vec::new(),
            header: None,
            chunk_bytes: chunk_bytes.max(1),
            chunk_records: chunk_records.max(1),
            block: 0,
            record: 0,
            open: Vec::new(),
            open_first_block: 0,
            open_first_record: 0,
            open_records: 0,
            open_file_bytes: 0,
            chunks_out: 0,
            failed: false,
        }
    }

    /// The header, once it has been read.
    pub fn header(&self) -> Option<&Arc<Header>> {
        self.header.as_ref()
    }

    /// Takes the next bytes of the file; returns the chunks they complete,
    /// then, if the bytes are damaged, the error, which ends the file: the
    /// blocks before the damage are valid and come out first. After an
    /// error the splitter takes nothing more.
    pub fn push(&mut self, data: &[u8]) -> Vec<Result<Chunk, DecodeError>> {
        if self.failed {
            return Vec::new();
        }
        self.buf.extend_from_slice(data);
        let mut done = Vec::new();
        let result = self.frame(&mut done);
        let mut out: Vec<Result<Chunk, DecodeError>> = done.into_iter().map(Ok).collect();
        if let Err(e) = result {
            // A block error names the block's first record.
            let e = if self.header.is_some() { e.at(self.record) } else { e };
            out.extend(self.fail(e));
        }
        out
    }

    /// Ends the file: refuses a torn end, and returns the last chunk (with
    /// the error after it, as [`Splitter::push`] does). A header-only file
    /// gives one chunk without records, so that every file yields at least
    /// one chunk.
    pub fn finish(mut self) -> Vec<Result<Chunk, DecodeError>> {
        if self.failed {
            return Vec::new();
        }
        if self.header.is_none() {
            // Bytes that do not begin like a container were refused by `push`.
            let reason = match self.buf.len() {
                0 => "empty file (0 bytes; a capture file holds at least an Avro header)".to_string(),
                n if n < MAGIC.len() => format!("truncated file ({n} bytes, shorter than the Avro magic)"),
                _ => "truncated header".to_string(),
            };
            return vec![Err(DecodeError::file(reason))];
        }
        if !self.buf.is_empty() {
            let e = self.torn_block().at(self.record);
            return self.fail(e);
        }
        if self.open_file_bytes > 0 || self.chunks_out == 0 {
            return vec![Ok(self.close())];
        }
        Vec::new()
    }

    /// The valid blocks not yet handed out, then the error.
    fn fail(&mut self, e: DecodeError) -> Vec<Result<Chunk, DecodeError>> {
        self.failed = true;
        let mut out = Vec::new();
        if !self.open.is_empty() {
            out.push(Ok(self.close()));
        }
        out.push(Err(e));
        out
    }

    /// Why the bytes left at the end do not make a block.
    fn torn_block(&self) -> DecodeError {
        let block = self.block;
        let mut cur = Cursor { bytes: &self.buf, pos: 0 };
        if cur.long().filter(|c| *c >= 0).is_none() {
            return DecodeError::file(format!("truncated or corrupt block {block} (bad record count)"));
        }
        let Some(size) = cur.long().filter(|s| *s >= 0) else {
            return DecodeError::file(format!("truncated or corrupt block {block} (bad size)"));
        };
        let remain = self.buf.len() - cur.pos;
        if (size as u64) > remain as u64 {
            return DecodeError::file(format!("truncated: block {block} declares {size} bytes, {remain} remain"));
        }
        DecodeError::file(format!("truncated: block {block} has no sync marker"))
    }

    /// Frames what the buffer holds into `out`, leaving a partial block.
    fn frame(&mut self, out: &mut Vec<Chunk>) -> Result<(), DecodeError> {
        let mut pos = 0;
        if self.header.is_none() {
            match read_header(&self.buf)? {
                None if self.buf.len() > MAX_HEADER_BYTES => {
                    return Err(DecodeError::file(format!(
                        "corrupt header (no end within its first {} KB)",
                        MAX_HEADER_BYTES >> 10
                    )))
                }
                None => return Ok(()),
                Some((header, len)) => {
                    self.header = Some(Arc::new(header));
                    self.open_file_bytes += len as u64;
                    pos = len;
                }
            }
        }
        let header = self.header.as_ref().expect("read above");
        let (sync, plain) = (header.sync, header.codec == "null");
        loop {
            let block = self.block;
            let mut cur = Cursor { bytes: &self.buf, pos };
            let count = match cur.varint() {
                Need::Got(c) if c >= 0 => c,
                Need::More => break,
                _ => return Err(DecodeError::file(format!("truncated or corrupt block {block} (bad record count)"))),
            };
            let size = match cur.varint() {
                Need::Got(s) if s >= 0 => s as u64,
                Need::More => break,
                _ => return Err(DecodeError::file(format!("truncated or corrupt block {block} (bad size)"))),
            };
            if size > MAX_BLOCK_BYTES as u64 {
                return Err(DecodeError::file(format!(
                    "corrupt block {block}: declares {size} bytes (more than {} MB)",
                    MAX_BLOCK_BYTES >> 20
                )));
            }
            if (count == 0) != (size == 0) {
                return Err(DecodeError::file(format!("corrupt block {block}: {count} records in {size} bytes")));
            }
            // Every record is at least one byte: a larger count in an
            // uncompressed block is corrupt (compressed blocks are checked
            // once inflated: a run of alike records may compress below one
            // byte each).
            if count as u64 > size && plain {
                return Err(DecodeError::file(format!("corrupt block {block}: {count} records in {size} bytes")));
            }
            let Some(_) = cur.take(size as usize) else { break };
            match cur.take(16) {
                None => break,
                Some(s) if s == sync => {}
                Some(_) => {
                    return Err(DecodeError::file(format!(
                        "sync marker after block {block} does not match the header (file corrupt)"
                    )))
                }
            }
            let record = self
                .record
                .checked_add(count as u64)
                .ok_or_else(|| DecodeError::file(format!("corrupt block {block}: record count overflows")))?;
            if self.open.is_empty() {
                self.open_first_block = block;
                self.open_first_record = self.record;
            }
            self.open.extend_from_slice(&self.buf[pos..cur.pos]);
            self.open_file_bytes += (cur.pos - pos) as u64;
            self.open_records += count as u64;
            self.record = record;
            self.block += 1;
            pos = cur.pos;
            if self.open.len() >= self.chunk_bytes || self.open_records >= self.chunk_records {
                out.push(self.close());
            }
        }
        self.buf.drain(..pos);
        Ok(())
    }

    fn close(&mut self) -> Chunk {
        let chunk = Chunk {
            index: self.chunks_out,
            first_block: if self.open.is_empty() { self.block } else { self.open_first_block },
            first_record: if self.open.is_empty() { self.record } else { self.open_first_record },
            records: self.open_records,
            blocks: std::mem::take(&mut self.open),
            file_bytes: self.open_file_bytes,
        };
        self.chunks_out += 1;
        self.open_records = 0;
        self.open_file_bytes = 0;
        chunk
    }
}

/// Reads the header if `bytes` hold all of it: (header, its length).
fn read_header(bytes: &[u8]) -> Result<Option<(Header, usize)>, DecodeError> {
    // Fewer bytes than the magic cannot be judged yet; at the end of the
    // file they are a truncated file, not a foreign one.
    if bytes.len() < MAGIC.len() {
        return Ok(None);
    }
    if bytes[..MAGIC.len()] != MAGIC[..] {
        return Err(DecodeError::file("not an Avro object container file (bad magic)"));
    }
    let mut cur = Cursor { bytes, pos: MAGIC.len() };
    let mut codec = "null".to_string();
    let mut entries: Vec<(&[u8], &[u8])> = Vec::new();
    loop {
        let Some(mut count) = cur.long() else { return Ok(None) };
        if count == 0 {
            break;
        }
        if count < 0 {
            count = count.checked_neg().ok_or_else(|| DecodeError::file("corrupt header metadata"))?;
            let Some(_) = cur.long() else { return Ok(None) };
        }
        for _ in 0..count {
            let Some(key) = cur.bytes_checked()? else { return Ok(None) };
            let Some(value) = cur.bytes_checked()? else { return Ok(None) };
            if key == b"avro.codec" {
                codec = String::from_utf8_lossy(value).into_owned();
            }
            entries.push((key, value));
        }
    }
    let Some(sync) = cur.take(16) else { return Ok(None) };
    let sync: [u8; 16] = sync.try_into().expect("16 bytes");
    let mut plain = Vec::with_capacity(cur.pos);
    plain.extend_from_slice(MAGIC);
    put_long(&mut plain, entries.len() as i64);
    for (key, value) in &entries {
        let value: &[u8] = if *key == b"avro.codec" { b"null" } else { value };
        put_long(&mut plain, key.len() as i64);
        plain.extend_from_slice(key);
        put_long(&mut plain, value.len() as i64);
        plain.extend_from_slice(value);
    }
    put_long(&mut plain, 0);
    plain.extend_from_slice(&sync);
    let header = Header { codec, sync, bytes: bytes[..cur.pos].to_vec(), bytes_uncompressed: plain };
    Ok(Some((header, cur.pos)))
}

/// Block framing of a whole container file in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Framing {
    /// Data blocks.
    pub blocks: u64,
    /// Records declared by all blocks.
    pub records: u64,
    /// `avro.codec` from the header (`null` when absent).
    pub codec: String,
}

/// Walks the framing of a whole file without decompressing anything.
pub fn scan_container(bytes: &[u8]) -> Result<Framing, DecodeError> {
    let mut splitter = Splitter::new(usize::MAX, u64::MAX);
    let mut items = splitter.push(bytes);
    let codec = splitter.header().map(|h| h.codec.clone());
    let (blocks, records) = (splitter.block, splitter.record);
    items.extend(splitter.finish());
    items.into_iter().collect::<Result<Vec<_>, _>>()?;
    Ok(Framing { blocks, records, codec: codec.unwrap_or_else(|| "null".into()) })
}

/// Avro `long`: zig-zag varint.
pub(crate) fn put_long(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// A value read from bytes that may still be arriving.
enum Need<T> {
    Got(T),
    More,
    Corrupt,
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    /// Avro `long`: zig-zag varint; `None` when the bytes end first or the
    /// varint runs past 64 bits.
    fn long(&mut self) -> Option<i64> {
        let mut value: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = *self.bytes.get(self.pos)?;
            self.pos += 1;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some((value >> 1) as i64 ^ -((value & 1) as i64));
            }
        }
        None
    }

    /// Avro `long` as framing reads it from bytes still arriving: more
    /// bytes needed, or a varint longer than ten bytes (corrupt).
    fn varint(&mut self) -> Need<i64> {
        let mut value: u64 = 0;
        for shift in (0..64).step_by(7) {
            let Some(&b) = self.bytes.get(self.pos) else { return Need::More };
            self.pos += 1;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Need::Got((value >> 1) as i64 ^ -((value & 1) as i64));
            }
        }
        Need::Corrupt
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.long()?).ok()?;
        self.take(n)
    }

    /// Like [`Cursor::bytes`] for header metadata: `Ok(None)` when more
    /// bytes are needed, an error for a negative or absurd length.
    fn bytes_checked(&mut self) -> Result<Option<&'a [u8]>, DecodeError> {
        let Some(n) = self.long() else { return Ok(None) };
        let n = usize::try_from(n)
            .ok()
            .filter(|n| *n <= MAX_BLOCK_BYTES)
            .ok_or_else(|| DecodeError::file("corrupt header metadata"))?;
        Ok(self.take(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_testkit::capture::{corrupt, write_capture_file, CaptureEvent, Codec, Corruption, FileSpec};

    fn events(n: i64) -> Vec<CaptureEvent> {
        let at = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        (0..n)
            .map(|i| CaptureEvent {
                sequence_number: i,
                offset: (i * 100).to_string(),
                enqueued_time: at,
                system_properties: vec![],
                properties: vec![],
                body: Some(format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(200)).into_bytes()),
            })
            .collect()
    }

    /// Feeds `file` in pieces of `step` bytes; returns every chunk.
    fn split(file: &[u8], step: usize, chunk_bytes: usize) -> Result<Vec<Chunk>, DecodeError> {
        split_all(file, step, chunk_bytes).into_iter().collect()
    }

    /// Every item, chunks and the error after them.
    fn split_all(file: &[u8], step: usize, chunk_bytes: usize) -> Vec<Result<Chunk, DecodeError>> {
        let mut s = Splitter::new(chunk_bytes, u64::MAX);
        let mut out = Vec::new();
        for piece in file.chunks(step) {
            out.extend(s.push(piece));
        }
        out.extend(s.finish());
        let errors = out.iter().filter(|i| i.is_err()).count();
        assert!(errors <= 1 && (errors == 0 || out.last().unwrap().is_err()), "one error, last");
        out
    }

    #[test]
    fn chunks_cover_the_file_whatever_the_read_size() {
        let file =
            write_capture_file(&events(2000), &FileSpec { codec: Codec::Deflate, ..FileSpec::default() }).unwrap();
        let framing = scan_container(&file).unwrap();
        assert!(framing.blocks > 10, "{framing:?}");
        for step in [1, 7, 4096, file.len()] {
            let chunks = split(&file, step, 8_000).unwrap();
            assert!(chunks.len() > 1, "step {step}");
            assert_eq!(chunks.iter().map(|c| c.file_bytes).sum::<u64>(), file.len() as u64, "step {step}");
            assert_eq!(chunks.iter().map(|c| c.records).sum::<u64>(), 2000, "step {step}");
            let mut next = 0;
            for (i, c) in chunks.iter().enumerate() {
                assert_eq!((c.index, c.first_record), (i as u64, next), "step {step}");
                assert_eq!(c.iter_blocks().map(|(n, _)| n as u64).sum::<u64>(), c.records);
                next += c.records;
            }
        }
    }

    #[test]
    fn a_header_only_file_is_one_empty_chunk() {
        let file = write_capture_file(&[], &FileSpec::default()).unwrap();
        let chunks = split(&file, 3, CHUNK_BYTES).unwrap();
        assert_eq!(chunks.len(), 1);
        assert_eq!((chunks[0].records, chunks[0].file_bytes), (0, file.len() as u64));
    }

    /// A file shorter than the magic is empty or truncated, whatever its
    /// few bytes are, never "bad magic".
    #[test]
    fn files_shorter_than_the_magic_are_empty_or_truncated() {
        for (bytes, reason) in [
            (&b""[..], "empty file (0 bytes"),
            (b"Ob", "truncated file (2 bytes"),
            (b"\0\0", "truncated file (2 bytes"),
            (b"PAR", "truncated file (3 bytes"),
        ] {
            for step in [1, 4] {
                let e = split(bytes, step, 40_000).expect_err("no header");
                assert!(e.reason.starts_with(reason), "{bytes:?}: {e}");
            }
        }
    }

    #[test]
    fn damage_is_found_where_it_is() {
        let good = write_capture_file(&events(2000), &FileSpec { codec: Codec::Null, ..FileSpec::default() }).unwrap();
        for (how, reason) in [
            (Corruption::Truncate { keep: good.len() - 40 }, "truncated"),
            (Corruption::Truncate { keep: 10 }, "truncated header"),
            (Corruption::BadMagic, "bad magic"),
            (Corruption::BadSync, "sync marker"),
        ] {
            let bad = corrupt(&good, how);
            for step in [1, 5000, bad.len()] {
                let e = split(&bad, step, 40_000).expect_err(&format!("{how:?}"));
                assert!(e.reason.contains(reason), "{how:?} step {step}: {e}");
            }
        }
    }

    #[test]
    fn the_blocks_before_damage_come_out_before_the_error() {
        let good = write_capture_file(&events(2000), &FileSpec { codec: Codec::Null, ..FileSpec::default() }).unwrap();
        let framing = scan_container(&good).unwrap();
        let sync = &good[good.len() - 16..];
        // The markers after the header and after each block.
        let markers: Vec<usize> = (0..=good.len() - 16).filter(|i| &good[*i..*i + 16] == sync).collect();
        assert_eq!(markers.len() as u64, framing.blocks + 1);
        let mut torn_sync = good.clone();
        torn_sync[markers[framing.blocks as usize / 2] + 3] ^= 0xff;
        let torn_tail = good[..good.len() - 40].to_vec();
        for (bad, reason) in [(torn_sync, "sync marker"), (torn_tail, "truncated")] {
            // In one push (a file smaller than a read) or in small ones.
            for step in [bad.len(), 999] {
                let items = split_all(&bad, step, 40_000);
                let (chunks, error): (Vec<_>, Vec<_>) = items.into_iter().partition(|i| i.is_ok());
                let e = error.into_iter().next().expect("an error").unwrap_err();
                assert!(e.reason.contains(reason), "{e}");
                let good_records: u64 = chunks.iter().map(|c| c.as_ref().unwrap().records).sum();
                assert!(good_records > 0, "{reason}: valid blocks kept");
                assert_eq!(e.record, Some(good_records), "{reason}: the error names the first record not handed out");
            }
        }
    }

    #[test]
    fn a_block_count_above_its_size_is_corrupt_unless_compressed() {
        for codec in [Codec::Null, Codec::Deflate, Codec::Zstd] {
            let mut out = Vec::new();
            let file = write_capture_file(&[], &FileSpec { codec, ..FileSpec::default() }).unwrap();
            out.extend_from_slice(&file);
            put_long(&mut out, 1_000_000);
            put_long(&mut out, 10);
            out.extend_from_slice(&[0; 10]);
            out.extend_from_slice(&file[file.len() - 16..]);
            match split(&out, out.len(), CHUNK_BYTES) {
                Err(e) if codec == Codec::Null => assert!(e.reason.contains("1000000 records in 10 bytes"), "{e}"),
                Ok(chunks) if codec != Codec::Null => {
                    assert_eq!(chunks[0].records, 1_000_000, "{codec:?}: checked when inflated")
                }
                other => panic!("{codec:?}: {other:?}"),
            }
        }
    }
}
