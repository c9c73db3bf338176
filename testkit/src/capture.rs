//! Synthetic Event Hubs Capture files for tests, samples and benchmarks.
//!
//! Azure Event Hubs Capture writes one Avro object container file per
//! partition and time window, at
//! `{PartitionId}/{Year}/{Month}/{Day}/{Hour}/{Minute}/{Second}.avro` below a
//! root folder, with the record schema
//! `Microsoft.ServiceBus.Messaging.EventData` (`SequenceNumber`, `Offset`,
//! `EnqueuedTimeUtc`, `SystemProperties`, `Properties`, `Body`). This module
//! writes files of that shape so that readers can be tested without an Azure
//! subscription:
//!
//! - [`write_capture_file`] encodes a slice of [`CaptureEvent`]s into one
//!   complete container file, in either map-value union style
//!   ([`UnionStyle`]), either `EnqueuedTimeUtc` format ([`TimeFormat`]) and any
//!   of the codecs null, deflate, snappy and zstandard ([`Codec`]). An empty
//!   slice gives a header-only file, as Capture writes for a window without
//!   events.
//! - [`corrupt`] damages a file in the ways readers must survive (truncation,
//!   bad magic, bad sync marker, garbage in a block).
//! - [`generate_dataset`] writes a whole capture folder of JSON
//!   user-interaction events ([`user_event_body`]), file by file, with
//!   optional malformed bodies, re-sent duplicates and header-only windows.
//!
//! Everything is deterministic: the same inputs (and the same seed) give
//! byte-identical files.
//!
//! # How the files differ from real Azure ones
//!
//! - The container layout is Capture's (header metadata `avro.codec` then
//!   `avro.schema`, the schema text exactly as Azure spells it, each
//!   non-empty map as a single block): for the same event the output equals
//!   a file written by Azure (`testdata/real-capture/05.avro`, checked by a
//!   test) except for the 16-byte sync marker, which Azure draws at random and
//!   this module derives from the file's content, so output is reproducible.
//! - Records are grouped into blocks of about 16 kB of uncompressed data;
//!   Azure's may differ.
//! - Any codec can be chosen: null and deflate as Capture files use them, and
//!   also snappy and zstandard so that readers are tested against every codec
//!   they may meet. The zstandard header carries no
//!   `avro.codec.compression_level` entry.
//! - The bodies, publishers and application properties are made up; the
//!   offsets only increase plausibly and are not Event Hubs' real offsets.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Datelike, Duration, TimeZone, Timelike, Utc};

/// Target size of a block's uncompressed data before it is closed.
const BLOCK_TARGET_BYTES: usize = 16_000;

/// How many recent valid bodies a partition remembers for re-sending.
const RESEND_MEMORY: usize = 64;

/// The magic bytes that open an Avro object container file.
const AVRO_MAGIC: &[u8; 4] = b"Obj\x01";

/// Capture schema with the older map-value union (no `null`), as Azure spells it.
const SCHEMA_LEGACY: &str = r#"{"type":"record","name":"EventData","namespace":"Microsoft.ServiceBus.Messaging","fields":[{"name":"SequenceNumber","type":"long"},{"name":"Offset","type":"string"},{"name":"EnqueuedTimeUtc","type":"string"},{"name":"SystemProperties","type":{"type":"map","values":["long","double","string","bytes"]}},{"name":"Properties","type":{"type":"map","values":["long","double","string","bytes"]}},{"name":"Body","type":["null","bytes"]}]}"#;

/// Capture schema with the newer map-value union ending in `null`.
const SCHEMA_WITH_NULL: &str = r#"{"type":"record","name":"EventData","namespace":"Microsoft.ServiceBus.Messaging","fields":[{"name":"SequenceNumber","type":"long"},{"name":"Offset","type":"string"},{"name":"EnqueuedTimeUtc","type":"string"},{"name":"SystemProperties","type":{"type":"map","values":["long","double","string","bytes","null"]}},{"name":"Properties","type":{"type":"map","values":["long","double","string","bytes","null"]}},{"name":"Body","type":["null","bytes"]}]}"#;

/// Avro container codec of a generated file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Codec {
    /// No compression (`"null"`).
    #[default]
    Null,
    /// Raw deflate, RFC 1951 (`"deflate"`).
    Deflate,
    /// Snappy with a CRC32 of the uncompressed block (`"snappy"`).
    Snappy,
    /// Zstandard (`"zstandard"`).
    Zstd,
}

impl Codec {
    /// Every codec, in a fixed order.
    pub const ALL: [Codec; 4] = [Codec::Null, Codec::Deflate, Codec::Snappy, Codec::Zstd];

    /// The name written to the `avro.codec` header entry.
    pub fn avro_name(self) -> &'static str {
        match self {
            Codec::Null => "null",
            Codec::Deflate => "deflate",
            Codec::Snappy => "snappy",
            Codec::Zstd => "zstandard",
        }
    }

    /// Parses `null`, `deflate`, `snappy`, `zstd` or `zstandard`.
    pub fn from_name(name: &str) -> Option<Codec> {
        match name {
            "null" => Some(Codec::Null),
            "deflate" => Some(Codec::Deflate),
            "snappy" => Some(Codec::Snappy),
            "zstd" | "zstandard" => Some(Codec::Zstd),
            _ => None,
        }
    }

    fn to_avro(self) -> apache_avro::Codec {
        match self {
            Codec::Null => apache_avro::Codec::Null,
            Codec::Deflate => apache_avro::Codec::Deflate(apache_avro::DeflateSettings::default()),
            Codec::Snappy => apache_avro::Codec::Snappy,
            Codec::Zstd => apache_avro::Codec::Zstandard(apache_avro::ZstandardSettings::default()),
        }
    }
}

/// Which union the `SystemProperties` and `Properties` map values use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum UnionStyle {
    /// `["long","double","string","bytes"]`, as in older Capture files.
    #[default]
    Legacy,
    /// `["long","double","string","bytes","null"]`, as in newer Capture files.
    WithNull,
}

/// How `EnqueuedTimeUtc` is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TimeFormat {
    /// US format with seconds precision: `11/16/2016 4:44:11 PM` (see [`format_us_time`]).
    #[default]
    Us,
    /// ISO-8601 with milliseconds: `2016-11-16T16:44:11.123Z`.
    Iso,
}

/// A value of the `SystemProperties` or `Properties` map.
#[derive(Debug, Clone, PartialEq)]
pub enum PropValue {
    /// Union branch `long`.
    Long(i64),
    /// Union branch `double`.
    Double(f64),
    /// Union branch `string`.
    Str(String),
    /// Union branch `bytes`.
    Bytes(Vec<u8>),
    /// Union branch `null`: only valid with [`UnionStyle::WithNull`].
    Null,
}

/// One `EventData` record.
#[derive(Debug, Clone, PartialEq)]
pub struct CaptureEvent {
    /// `SequenceNumber`.
    pub sequence_number: i64,
    /// `Offset`, a decimal number as a string.
    pub offset: String,
    /// Enqueued time; written to `EnqueuedTimeUtc` in the file's [`TimeFormat`].
    pub enqueued_time: DateTime<Utc>,
    /// `SystemProperties` entries, written in this order.
    pub system_properties: Vec<(String, PropValue)>,
    /// `Properties` entries, written in this order.
    pub properties: Vec<(String, PropValue)>,
    /// `Body`; `None` is written as the union's `null` branch.
    pub body: Option<Vec<u8>>,
}

/// How one file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FileSpec {
    /// Container codec.
    pub codec: Codec,
    /// Map-value union of the schema.
    pub union_style: UnionStyle,
    /// Format of `EnqueuedTimeUtc`.
    pub time_format: TimeFormat,
}

/// Errors of the generator.
#[derive(Debug, thiserror::Error)]
pub enum TestGenError {
    /// A [`PropValue::Null`] was given for a file with [`UnionStyle::Legacy`].
    #[error("event {sequence_number}: property {key:?} is null, but the legacy map-value union has no null branch")]
    NullInLegacyUnion {
        /// Sequence number of the event.
        sequence_number: i64,
        /// The property's key.
        key: String,
    },

    /// Compressing a block failed.
    #[error("avro encoding failed{}: {source}", .path.as_ref().map(|p| format!(" for {}", p.display())).unwrap_or_default())]
    Avro {
        /// The file being written, when known.
        path: Option<PathBuf>,
        /// The cause.
        #[source]
        source: apache_avro::Error,
    },

    /// A file or folder could not be written.
    #[error("cannot write {}: {source}", .path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },

    /// The dataset spec cannot be generated.
    #[error("invalid dataset spec: {0}")]
    InvalidSpec(String),
}

/// Formats a time the way Capture writes `EnqueuedTimeUtc` in US format:
/// `M/d/yyyy h:mm:ss AM|PM` (no leading zeros on month, day and hour,
/// 12-hour clock, seconds precision), e.g. `11/16/2016 4:44:11 PM`.
pub fn format_us_time(t: DateTime<Utc>) -> String {
    t.format("%-m/%-d/%Y %-I:%M:%S %p").to_string()
}

/// Formats a time as ISO-8601 UTC with milliseconds: `2016-11-16T16:44:11.123Z`.
fn format_iso_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// The schema text for a union style.
fn schema_text(style: UnionStyle) -> &'static str {
    match style {
        UnionStyle::Legacy => SCHEMA_LEGACY,
        UnionStyle::WithNull => SCHEMA_WITH_NULL,
    }
}

/// Returns the writer schema JSON for a union style, spelled as Capture writes it.
pub fn capture_schema_json(style: UnionStyle) -> &'static str {
    schema_text(style)
}

// ---------------------------------------------------------------------------
// Avro binary encoding
// ---------------------------------------------------------------------------

fn put_long(out: &mut Vec<u8>, v: i64) {
    let mut n = ((v << 1) ^ (v >> 63)) as u64;
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_long(out, b.len() as i64);
    out.extend_from_slice(b);
}

fn put_map(
    out: &mut Vec<u8>,
    entries: &[(String, PropValue)],
    style: UnionStyle,
    sequence_number: i64,
) -> Result<(), TestGenError> {
    if !entries.is_empty() {
        put_long(out, entries.len() as i64);
        for (key, value) in entries {
            put_bytes(out, key.as_bytes());
            match value {
                PropValue::Long(v) => {
                    put_long(out, 0);
                    put_long(out, *v);
                }
                PropValue::Double(v) => {
                    put_long(out, 1);
                    out.extend_from_slice(&v.to_le_bytes());
                }
                PropValue::Str(v) => {
                    put_long(out, 2);
                    put_bytes(out, v.as_bytes());
                }
                PropValue::Bytes(v) => {
                    put_long(out, 3);
                    put_bytes(out, v);
                }
                PropValue::Null => match style {
                    UnionStyle::WithNull => put_long(out, 4),
                    UnionStyle::Legacy => {
                        return Err(TestGenError::NullInLegacyUnion { sequence_number, key: key.clone() })
                    }
                },
            }
        }
    }
    put_long(out, 0);
    Ok(())
}

fn encode_event(out: &mut Vec<u8>, e: &CaptureEvent, spec: &FileSpec) -> Result<(), TestGenError> {
    put_long(out, e.sequence_number);
    put_bytes(out, e.offset.as_bytes());
    let time = match spec.time_format {
        TimeFormat::Us => format_us_time(e.enqueued_time),
        TimeFormat::Iso => format_iso_time(e.enqueued_time),
    };
    put_bytes(out, time.as_bytes());
    put_map(out, &e.system_properties, spec.union_style, e.sequence_number)?;
    put_map(out, &e.properties, spec.union_style, e.sequence_number)?;
    match &e.body {
        None => put_long(out, 0),
        Some(b) => {
            put_long(out, 1);
            put_bytes(out, b);
        }
    }
    Ok(())
}

/// 64-bit FNV-1a.
fn fnv1a(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3))
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Writes `events` as one complete Avro object container file in Capture's
/// layout and returns its bytes.
///
/// An empty slice gives a header-only file (no data block), as Capture writes
/// for a window without events. Records are grouped into blocks of about
/// 16 kB of uncompressed data. The sync marker is derived from the content,
/// so the same input always gives the same bytes.
///
/// Fails with [`TestGenError::NullInLegacyUnion`] if a property is
/// [`PropValue::Null`] while `spec.union_style` is [`UnionStyle::Legacy`].
pub fn write_capture_file(events: &[CaptureEvent], spec: &FileSpec) -> Result<Vec<u8>, TestGenError> {
    write_capture_file_at(events, spec, None)
}

fn write_capture_file_at(
    events: &[CaptureEvent],
    spec: &FileSpec,
    path: Option<&Path>,
) -> Result<Vec<u8>, TestGenError> {
    // Encode the records into uncompressed blocks first: the sync marker is
    // a hash of the content and goes into the header.
    let mut blocks: Vec<(usize, Vec<u8>)> = Vec::new();
    let mut current = Vec::new();
    let mut count = 0usize;
    for e in events {
        encode_event(&mut current, e, spec)?;
        count += 1;
        if current.len() >= BLOCK_TARGET_BYTES {
            blocks.push((count, std::mem::take(&mut current)));
            count = 0;
        }
    }
    if count > 0 {
        blocks.push((count, current));
    }

    let schema = schema_text(spec.union_style);
    let mut hash = fnv1a(FNV_OFFSET, spec.codec.avro_name().as_bytes());
    hash = fnv1a(hash, schema.as_bytes());
    for (n, data) in &blocks {
        hash = fnv1a(hash, &(*n as u64).to_le_bytes());
        hash = fnv1a(hash, data);
    }
    let mut marker = [0u8; 16];
    marker[..8].copy_from_slice(&splitmix(hash).to_le_bytes());
    marker[8..].copy_from_slice(&splitmix(hash ^ 0x5EED_5EED_5EED_5EED).to_le_bytes());

    let mut out = Vec::with_capacity(1024 + blocks.iter().map(|(_, d)| d.len()).sum::<usize>());
    out.extend_from_slice(AVRO_MAGIC);
    put_long(&mut out, 2);
    put_bytes(&mut out, b"avro.codec");
    put_bytes(&mut out, spec.codec.avro_name().as_bytes());
    put_bytes(&mut out, b"avro.schema");
    put_bytes(&mut out, schema.as_bytes());
    put_long(&mut out, 0);
    out.extend_from_slice(&marker);

    let codec = spec.codec.to_avro();
    for (n, mut data) in blocks {
        codec.compress(&mut data).map_err(|source| TestGenError::Avro { path: path.map(Path::to_path_buf), source })?;
        put_long(&mut out, n as i64);
        put_long(&mut out, data.len() as i64);
        out.extend_from_slice(&data);
        out.extend_from_slice(&marker);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Corruption
// ---------------------------------------------------------------------------

/// A way to damage a container file (see [`corrupt`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corruption {
    /// Keep only the first `keep` bytes. A reader fails unless the cut falls
    /// exactly at the end of the header or of a block (then the file just
    /// looks shorter): cut inside the header or a block.
    Truncate {
        /// Bytes to keep.
        keep: usize,
    },
    /// Replace the four magic bytes `Obj\x01`.
    BadMagic,
    /// Flip the first byte of the sync marker that follows the first data block.
    BadSync,
    /// Overwrite every byte of the first data block's (compressed) payload
    /// with `0xFF`, so that the codec fails (deflate, snappy, zstandard) or
    /// the first record cannot be decoded (null).
    GarbageBlock,
}

fn read_long_at(buf: &[u8], pos: &mut usize) -> Option<i64> {
    let mut n: u64 = 0;
    let mut shift = 0;
    loop {
        let b = *buf.get(*pos)?;
        *pos += 1;
        n |= u64::from(b & 0x7F) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
    Some(((n >> 1) as i64) ^ -((n & 1) as i64))
}

/// Length of the header (magic, metadata, sync marker), if it parses.
fn header_len(file: &[u8]) -> Option<usize> {
    if file.len() < 4 {
        return None;
    }
    let mut pos = 4;
    loop {
        let mut count = read_long_at(file, &mut pos)?;
        if count == 0 {
            break;
        }
        if count < 0 {
            count = -count;
            read_long_at(file, &mut pos)?; // block size in bytes
        }
        for _ in 0..count {
            for _ in 0..2 {
                let len = usize::try_from(read_long_at(file, &mut pos)?).ok()?;
                pos = pos.checked_add(len)?;
            }
        }
    }
    let end = pos.checked_add(16)?;
    (end <= file.len()).then_some(end)
}

/// Location of the first data block: (payload start, payload length).
/// The block's sync marker starts at `start + len`.
fn first_block(file: &[u8]) -> Option<(usize, usize)> {
    let mut pos = header_len(file)?;
    let _count = read_long_at(file, &mut pos)?;
    let len = usize::try_from(read_long_at(file, &mut pos)?).ok()?;
    (pos + len + 16 <= file.len()).then_some((pos, len))
}

/// Returns a damaged copy of a container file written by [`write_capture_file`].
///
/// # Panics
///
/// [`Corruption::BadSync`] and [`Corruption::GarbageBlock`] panic if the file
/// has no complete data block (for example a header-only file).
pub fn corrupt(file: &[u8], how: Corruption) -> Vec<u8> {
    let mut out = file.to_vec();
    match how {
        Corruption::Truncate { keep } => out.truncate(keep),
        Corruption::BadMagic => {
            let n = out.len().min(4);
            out[..n].copy_from_slice(&b"NoAv"[..n]);
        }
        Corruption::BadSync => {
            let (start, len) = first_block(file).expect("corrupt(BadSync) needs a file with a data block");
            out[start + len] ^= 0xFF;
        }
        Corruption::GarbageBlock => {
            let (start, len) = first_block(file).expect("corrupt(GarbageBlock) needs a file with a data block");
            out[start..start + len].fill(0xFF);
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Paths, randomness, bodies
// ---------------------------------------------------------------------------

/// Capture's relative path of the file for a partition and window start:
/// `{partition}/{yyyy}/{MM}/{dd}/{HH}/{mm}/{ss}.avro`, e.g.
/// `3/2026/11/22/04/05/00.avro`.
pub fn capture_path(partition: &str, window: DateTime<Utc>) -> String {
    format!(
        "{partition}/{:04}/{:02}/{:02}/{:02}/{:02}/{:02}.avro",
        window.year(),
        window.month(),
        window.day(),
        window.hour(),
        window.minute(),
        window.second()
    )
}

/// A small deterministic pseudo-random generator (splitmix64). Not for
/// anything but test data.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator whose output depends only on `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// True with a probability of `ppm` per million.
    fn chance_ppm(&mut self, ppm: u32) -> bool {
        self.below(1_000_000) < u64::from(ppm)
    }

    /// True with a probability of `pct` percent.
    fn chance_pct(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    fn uuid(&mut self) -> uuid::Uuid {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.next_u64().to_le_bytes());
        bytes[8..].copy_from_slice(&self.next_u64().to_le_bytes());
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }
}

const USERS: u64 = 4_000;
const FIRST_NAMES: &[&str] = &[
    "alice", "bruno", "chiara", "dmitri", "elena", "farid", "greta", "hiroshi", "ingrid", "jonas", "kemal", "lucia",
    "mateo", "nadia", "oskar", "priya", "quentin", "rosa", "stefan", "tamara",
];
const LAST_NAMES: &[&str] = &[
    "andersson",
    "bianchi",
    "carvalho",
    "dubois",
    "eriksen",
    "fischer",
    "garcia",
    "hoffmann",
    "ivanova",
    "janssen",
    "kowalski",
    "lindqvist",
    "moreau",
    "novak",
    "okafor",
    "petrov",
];
const CATEGORIES: &[&str] = &[
    "outdoor/camping/tents",
    "outdoor/hiking/backpacks",
    "home/kitchen/cookware",
    "electronics/audio/headphones",
    "electronics/photo/cameras",
    "home/garden/hand-tools",
    "books/travel/guides",
    "fashion/outerwear/rain-jackets",
];
const SEARCH_TERMS: &[&str] = &[
    "hiking+boots",
    "ultralight+tent",
    "cast+iron+pan",
    "noise+cancelling",
    "mirrorless+camera",
    "pruning+shears",
    "iceland+guide",
    "waterproof+jacket",
];
const PRODUCT_SLUGS: &[&str] = &[
    "alpine-ultralight-2p",
    "trail-daypack-28l",
    "enamelled-dutch-oven",
    "studio-wireless-over-ear",
    "compact-mirrorless-kit",
    "bypass-pruner-pro",
    "nordic-road-trip-guide",
    "packable-rain-shell",
];
const REFERRERS: &[&str] = &[
    "homepage-personalised-recommendations",
    "search-results-organic",
    "category-listing-top-sellers",
    "newsletter-autumn-sale-2026",
    "recently-viewed-carousel",
];
const CURRENCIES: &[&str] = &["EUR", "USD", "GBP"];

/// A JSON user-interaction event (about 420 bytes), e.g.
/// `{"eventId": "…", "eventName": "click", "eventTimestamp": "2026-11-01T08:00:01.234Z",
/// "userId": "u-17", "sessionId": "s-…", "email": "…@example.com",
/// "ipAddress": "10.0.17.4", "properties": {"page": "/…", "durationMs": 1234}}`,
/// with `"amount": "12.34"` and `"currency"` added on `purchase`.
///
/// `eventTimestamp` is `at` in ISO-8601 with milliseconds; `eventId` is a
/// UUID built from `rng`; `sequence` is mixed into the randomness, so equal
/// generator states with different sequence numbers give different events.
/// Users (a few thousand) keep their email and address prefix, and one
/// session id per half hour.
pub fn user_event_body(rng: &mut Rng, sequence: i64, at: DateTime<Utc>) -> Vec<u8> {
    let mut r = Rng::new(rng.next_u64() ^ splitmix(sequence as u64));
    let event_id = r.uuid();
    let roll = r.below(100);
    let name = match roll {
        0..=39 => "page_view",
        40..=64 => "click",
        65..=74 => "search",
        75..=84 => "add_to_cart",
        85..=89 => "purchase",
        90..=94 => "login",
        _ => "logout",
    };
    let user = r.below(USERS) + 1;
    let first = FIRST_NAMES[(user % FIRST_NAMES.len() as u64) as usize];
    let last = LAST_NAMES[((user / FIRST_NAMES.len() as u64) % LAST_NAMES.len() as u64) as usize];
    let session = splitmix(user ^ (at.timestamp().div_euclid(1800) as u64).wrapping_mul(0x1_0000_0001));
    let session2 = splitmix(session);
    let session3 = splitmix(session2);
    let product = 10_000 + r.below(90_000);
    let category = r.pick(CATEGORIES);
    let slug = r.pick(PRODUCT_SLUGS);
    let referrer = r.pick(REFERRERS);
    let page = match name {
        "page_view" | "click" => {
            format!("/products/{category}/{slug}-{product}?ref={referrer}&position={}", r.below(24) + 1)
        }
        "search" => format!(
            "/search?q={}&sort=relevance&filters=in-stock%2Cfree-delivery&page={}",
            r.pick(SEARCH_TERMS),
            r.below(5) + 1
        ),
        "add_to_cart" => format!("/cart/add/{slug}-{product}?category={category}&quantity={}", r.below(3) + 1),
        "purchase" => format!("/checkout/confirmation/order-{:08}?ref={referrer}", r.below(100_000_000)),
        "login" => format!("/account/login?return=%2Fhome&method=password&ref={referrer}"),
        _ => "/account/logout?reason=user&return=%2Fhome".to_string(),
    };
    let mut s = String::with_capacity(512);
    let _ = write!(
        s,
        "{{\"eventId\": \"{}\", \"eventName\": \"{name}\", \"eventTimestamp\": \"{}\", \
         \"userId\": \"u-{user}\", \"sessionId\": \"s-{session:016x}{session2:016x}{session3:016x}\", \
         \"email\": \"{first}.{last}.{user}@example.com\", \
         \"ipAddress\": \"10.{}.{}.{}\", \
         \"properties\": {{\"page\": \"{page}\", \"durationMs\": {}}}",
        event_id.hyphenated(),
        format_iso_time(at),
        (user >> 8) & 0xFF,
        user & 0xFF,
        r.below(254) + 1,
        r.below(30_000),
    );
    if name == "purchase" {
        let cents = 199 + r.below(49_800);
        let _ =
            write!(s, ", \"amount\": \"{}.{:02}\", \"currency\": \"{}\"", cents / 100, cents % 100, r.pick(CURRENCIES));
    }
    s.push('}');
    s.into_bytes()
}

/// Turns a valid JSON body into one no JSON parser accepts.
fn malform(rng: &mut Rng, body: &[u8]) -> Vec<u8> {
    match rng.below(3) {
        // Cut in the middle: an unterminated string or object.
        0 => body[..body.len() / 2].to_vec(),
        // A trailing comma before the closing brace.
        1 => {
            let mut b = body[..body.len() - 1].to_vec();
            b.extend_from_slice(b",}");
            b
        }
        // Binary garbage that is not even UTF-8.
        _ => {
            let mut b = vec![0xFF, 0xFE];
            b.extend((0..40).map(|_| rng.next_u64() as u8));
            b
        }
    }
}

// ---------------------------------------------------------------------------
// Datasets
// ---------------------------------------------------------------------------

/// What [`generate_dataset`] writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetSpec {
    /// Number of partitions, named `0`, `1`, ….
    pub partitions: u32,
    /// Number of capture windows (files) per partition.
    pub windows: u32,
    /// Length of a window in seconds.
    pub window_secs: i64,
    /// Events in each non-empty file.
    pub events_per_file: u32,
    /// Start of the first window.
    pub start: DateTime<Utc>,
    /// Seed of all randomness.
    pub seed: u64,
    /// Codecs, cycled per file: window `w` of partition `p` uses
    /// `codecs[(p + w) % codecs.len()]`; empty means null.
    pub codecs: Vec<Codec>,
    /// Every Nth window of a partition is header-only: window `w` of
    /// partition `p` is empty when `(w + p + 1) % empty_every == 0`, so the
    /// partitions' empty windows are staggered. 0 = never.
    pub empty_every: u32,
    /// Share of bodies that are malformed JSON, per million.
    pub defect_rate_ppm: u32,
    /// Share of events that re-send an earlier event of the same partition:
    /// the same body bytes (same `eventId`) again, with a new sequence
    /// number, offset and enqueued time, and a `retry` property. Per million.
    pub duplicate_rate_ppm: u32,
}

impl DatasetSpec {
    /// A small clean dataset: 4 partitions, 6 windows of 300 s from
    /// 2026-11-01T08:00:00Z, 25 events per file (600 events), all four codecs,
    /// no empty windows, no malformed bodies, no duplicates.
    pub fn small(seed: u64) -> Self {
        DatasetSpec {
            partitions: 4,
            windows: 6,
            window_secs: 300,
            events_per_file: 25,
            start: Utc.with_ymd_and_hms(2026, 11, 1, 8, 0, 0).single().expect("valid time"),
            seed,
            codecs: Codec::ALL.to_vec(),
            empty_every: 0,
            defect_rate_ppm: 0,
            duplicate_rate_ppm: 0,
        }
    }
}

/// What [`generate_dataset`] wrote.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DatasetSummary {
    /// Files written, header-only ones included.
    pub files: u64,
    /// Total size of the files in bytes.
    pub bytes: u64,
    /// Events (records) written.
    pub events: u64,
    /// Last sequence number of each partition that has events (partitions
    /// without any event are absent). Sequence numbers start at 0.
    pub per_partition_last_sequence: BTreeMap<String, i64>,
    /// Header-only files among `files`.
    pub header_only_files: u64,
    /// Events whose body is malformed JSON.
    pub malformed: u64,
    /// Events that re-send an earlier event's body.
    pub duplicates: u64,
}

/// Whether window `w` of partition `p` is written header-only.
fn is_header_only_window(spec: &DatasetSpec, p: u32, w: u32) -> bool {
    // `checked_rem` is `None` for `empty_every == 0`: never.
    (w + p + 1).checked_rem(spec.empty_every) == Some(0)
}

/// State of one partition while its files are generated.
struct PartitionState {
    rng: Rng,
    next_sequence: i64,
    next_offset: u64,
    recent: Vec<Vec<u8>>,
}

/// Writes a capture folder below `root`: for every partition and window the
/// file at [`capture_path`], with Capture's legacy map-value union and US
/// `EnqueuedTimeUtc` (the format of the files Azure wrote first).
///
/// Files are generated and written one at a time, so memory does not grow
/// with the dataset. Per partition, sequence numbers start at 0 and rise by
/// one per event across windows; offsets rise by the body size plus some
/// overhead; enqueued times rise within each window. System properties are
/// `x-opt-sequence-number`, `x-opt-offset`, `x-opt-enqueued-time` (epoch ms)
/// and sometimes `x-opt-publisher`; application properties sometimes hold
/// `source`, `retry`, `score` and `trace`. The same spec gives byte-identical
/// files; existing files at the same paths are overwritten, others are left
/// alone.
pub fn generate_dataset(root: &Path, spec: &DatasetSpec) -> Result<DatasetSummary, TestGenError> {
    if spec.window_secs <= 0 {
        return Err(TestGenError::InvalidSpec(format!("window_secs must be positive, got {}", spec.window_secs)));
    }
    let codecs: &[Codec] = if spec.codecs.is_empty() { &[Codec::Null] } else { &spec.codecs };
    let file_spec = FileSpec { codec: Codec::Null, union_style: UnionStyle::Legacy, time_format: TimeFormat::Us };
    let window_ms = spec.window_secs * 1000;
    let mut summary = DatasetSummary::default();
    let mut events = Vec::with_capacity(spec.events_per_file as usize);

    for p in 0..spec.partitions {
        let partition = p.to_string();
        let mut state = PartitionState {
            rng: Rng::new(spec.seed ^ splitmix(u64::from(p).wrapping_add(0xC0FF_EE00))),
            next_sequence: 0,
            next_offset: 0,
            recent: Vec::with_capacity(RESEND_MEMORY),
        };
        for w in 0..spec.windows {
            let window_start = spec.start + Duration::seconds(spec.window_secs * i64::from(w));
            let empty = is_header_only_window(spec, p, w);
            events.clear();
            if !empty {
                let n = i64::from(spec.events_per_file);
                for i in 0..n {
                    let jitter = state.rng.below(window_ms as u64) as i64;
                    let at_ms = (i * window_ms + jitter) / n;
                    let enqueued = window_start + Duration::milliseconds(at_ms);
                    let e = make_event(&mut state, spec, &mut summary, enqueued, &partition);
                    events.push(e);
                }
            }
            let spec_here = FileSpec { codec: codecs[(p + w) as usize % codecs.len()], ..file_spec };
            let path = root.join(capture_path(&partition, window_start));
            let bytes = write_capture_file_at(&events, &spec_here, Some(&path))?;
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|source| TestGenError::Io { path: dir.to_path_buf(), source })?;
            }
            std::fs::write(&path, &bytes).map_err(|source| TestGenError::Io { path: path.clone(), source })?;
            summary.files += 1;
            summary.bytes += bytes.len() as u64;
            summary.events += events.len() as u64;
            if events.is_empty() {
                summary.header_only_files += 1;
            }
        }
        if state.next_sequence > 0 {
            summary.per_partition_last_sequence.insert(partition, state.next_sequence - 1);
        }
    }
    Ok(summary)
}

fn make_event(
    state: &mut PartitionState,
    spec: &DatasetSpec,
    summary: &mut DatasetSummary,
    enqueued: DateTime<Utc>,
    partition: &str,
) -> CaptureEvent {
    let rng = &mut state.rng;
    let sequence = state.next_sequence;
    let resend = !state.recent.is_empty() && rng.chance_ppm(spec.duplicate_rate_ppm);
    let body = if resend {
        summary.duplicates += 1;
        let i = rng.below(state.recent.len() as u64) as usize;
        state.recent[i].clone()
    } else {
        // The client stamped the event a little before the hub enqueued it.
        let latency = Duration::milliseconds(5 + rng.below(1_500) as i64);
        let body = user_event_body(rng, sequence, enqueued - latency);
        if rng.chance_ppm(spec.defect_rate_ppm) {
            summary.malformed += 1;
            malform(rng, &body)
        } else {
            if state.recent.len() < RESEND_MEMORY {
                state.recent.push(body.clone());
            } else {
                let i = rng.below(RESEND_MEMORY as u64) as usize;
                state.recent[i] = body.clone();
            }
            body
        }
    };

    let offset = state.next_offset.to_string();
    let mut system_properties = vec![
        ("x-opt-sequence-number".to_string(), PropValue::Long(sequence)),
        ("x-opt-offset".to_string(), PropValue::Str(offset.clone())),
        ("x-opt-enqueued-time".to_string(), PropValue::Long(enqueued.timestamp_millis())),
    ];
    if rng.chance_pct(20) {
        system_properties
            .push(("x-opt-publisher".to_string(), PropValue::Str(format!("device-{partition}-{}", rng.below(50)))));
    }
    let mut properties = Vec::new();
    if rng.chance_pct(60) {
        let source = *rng.pick(&["web", "ios", "android", "backend"]);
        properties.push(("source".to_string(), PropValue::Str(source.to_string())));
    }
    if resend {
        properties.push(("retry".to_string(), PropValue::Long(1 + rng.below(3) as i64)));
    } else if rng.chance_pct(5) {
        properties.push(("retry".to_string(), PropValue::Long(0)));
    }
    if rng.chance_pct(30) {
        properties.push(("score".to_string(), PropValue::Double(rng.below(10_000) as f64 / 100.0)));
    }
    if rng.chance_pct(10) {
        let trace: Vec<u8> = (0..16).map(|_| rng.next_u64() as u8).collect();
        properties.push(("trace".to_string(), PropValue::Bytes(trace)));
    }

    state.next_sequence += 1;
    // Event Hubs offsets are byte positions in the partition's log: the body
    // plus per-event overhead, 8-byte aligned.
    state.next_offset += (body.len() as u64 + 120).div_ceil(8) * 8;
    CaptureEvent {
        sequence_number: sequence,
        offset,
        enqueued_time: enqueued,
        system_properties,
        properties,
        body: Some(body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sensor::{sensor_messages, write_sensor_capture, SensorSpec};
    use apache_avro::types::Value;
    use std::collections::{HashMap, HashSet};

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).single().unwrap()
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<Value>, apache_avro::Error> {
        let reader = apache_avro::Reader::new(bytes)?;
        reader.collect()
    }

    /// Header metadata decoded by hand: (key, value) in file order.
    fn header_entries(file: &[u8]) -> Vec<(String, Vec<u8>)> {
        assert_eq!(&file[..4], AVRO_MAGIC);
        let mut pos = 4;
        let mut out = Vec::new();
        loop {
            let count = read_long_at(file, &mut pos).unwrap();
            if count == 0 {
                break;
            }
            for _ in 0..count {
                let mut kv = Vec::new();
                for _ in 0..2 {
                    let len = read_long_at(file, &mut pos).unwrap() as usize;
                    kv.push(file[pos..pos + len].to_vec());
                    pos += len;
                }
                out.push((String::from_utf8(kv[0].clone()).unwrap(), kv[1].clone()));
            }
        }
        out
    }

    fn sample_events(style: UnionStyle) -> Vec<CaptureEvent> {
        let t0 = utc(2026, 11, 22, 4, 5, 0) + Duration::milliseconds(123);
        let mut props = vec![
            ("source".to_string(), PropValue::Str("web".into())),
            ("retry".to_string(), PropValue::Long(-3)),
            ("score".to_string(), PropValue::Double(0.25)),
            ("trace".to_string(), PropValue::Bytes(vec![0, 1, 2, 255])),
        ];
        if style == UnionStyle::WithNull {
            props.push(("gone".to_string(), PropValue::Null));
        }
        (0..40)
            .map(|i| CaptureEvent {
                sequence_number: 1_000 + i,
                offset: (4096 * i).to_string(),
                enqueued_time: t0 + Duration::milliseconds(1_700 * i),
                system_properties: vec![
                    ("x-opt-sequence-number".into(), PropValue::Long(1_000 + i)),
                    ("x-opt-offset".into(), PropValue::Str((4096 * i).to_string())),
                ],
                properties: if i % 3 == 0 { Vec::new() } else { props.clone() },
                body: if i == 7 {
                    None
                } else {
                    Some(format!("{{\"n\": {i}, \"pad\": \"{}\"}}", "x".repeat(i as usize * 50)).into_bytes())
                },
            })
            .collect()
    }

    fn expected_map(entries: &[(String, PropValue)]) -> Value {
        let map: HashMap<String, Value> = entries
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    PropValue::Long(x) => Value::Union(0, Box::new(Value::Long(*x))),
                    PropValue::Double(x) => Value::Union(1, Box::new(Value::Double(*x))),
                    PropValue::Str(x) => Value::Union(2, Box::new(Value::String(x.clone()))),
                    PropValue::Bytes(x) => Value::Union(3, Box::new(Value::Bytes(x.clone()))),
                    PropValue::Null => Value::Union(4, Box::new(Value::Null)),
                };
                (k.clone(), v)
            })
            .collect();
        Value::Map(map)
    }

    fn expected_record(e: &CaptureEvent, format: TimeFormat) -> Value {
        let time = match format {
            TimeFormat::Us => format_us_time(e.enqueued_time),
            TimeFormat::Iso => format_iso_time(e.enqueued_time),
        };
        Value::Record(vec![
            ("SequenceNumber".into(), Value::Long(e.sequence_number)),
            ("Offset".into(), Value::String(e.offset.clone())),
            ("EnqueuedTimeUtc".into(), Value::String(time)),
            ("SystemProperties".into(), expected_map(&e.system_properties)),
            ("Properties".into(), expected_map(&e.properties)),
            (
                "Body".into(),
                match &e.body {
                    None => Value::Union(0, Box::new(Value::Null)),
                    Some(b) => Value::Union(1, Box::new(Value::Bytes(b.clone()))),
                },
            ),
        ])
    }

    #[test]
    fn round_trips_every_codec_union_style_and_time_format() {
        for codec in Codec::ALL {
            for union_style in [UnionStyle::Legacy, UnionStyle::WithNull] {
                for time_format in [TimeFormat::Us, TimeFormat::Iso] {
                    let spec = FileSpec { codec, union_style, time_format };
                    let events = sample_events(union_style);
                    let file = write_capture_file(&events, &spec).unwrap();
                    let ctx = format!("{spec:?}");

                    let meta = header_entries(&file);
                    assert_eq!(meta[0], ("avro.codec".to_string(), codec.avro_name().as_bytes().to_vec()), "{ctx}");
                    assert_eq!(meta[1].0, "avro.schema", "{ctx}");
                    assert_eq!(meta[1].1, capture_schema_json(union_style).as_bytes(), "{ctx}");

                    let records = read_all(&file).unwrap_or_else(|e| panic!("{ctx}: {e}"));
                    assert_eq!(records.len(), events.len(), "{ctx}");
                    for (got, e) in records.iter().zip(&events) {
                        assert_eq!(got, &expected_record(e, time_format), "{ctx}");
                    }
                    // 40 events of up to 2 kB: more than one block.
                    let (start, len) = first_block(&file).unwrap();
                    assert!(start + len + 16 < file.len(), "{ctx}: expected several blocks");
                    // Deterministic.
                    assert_eq!(file, write_capture_file(&events, &spec).unwrap(), "{ctx}");
                }
            }
        }
    }

    #[test]
    fn time_formats() {
        assert_eq!(format_us_time(utc(2016, 11, 16, 16, 44, 11)), "11/16/2016 4:44:11 PM");
        assert_eq!(format_us_time(utc(2026, 1, 2, 0, 5, 9)), "1/2/2026 12:05:09 AM");
        assert_eq!(format_us_time(utc(2026, 7, 4, 12, 0, 0)), "7/4/2026 12:00:00 PM");
        assert_eq!(format_us_time(utc(2026, 7, 4, 23, 59, 59) + Duration::milliseconds(999)), "7/4/2026 11:59:59 PM");
        assert_eq!(
            format_iso_time(utc(2016, 11, 16, 16, 44, 11) + Duration::milliseconds(123)),
            "2016-11-16T16:44:11.123Z"
        );
        assert_eq!(format_iso_time(utc(2016, 11, 16, 16, 44, 11)), "2016-11-16T16:44:11.000Z");
    }

    #[test]
    fn capture_paths() {
        assert_eq!(capture_path("3", utc(2026, 11, 22, 4, 5, 0)), "3/2026/11/22/04/05/00.avro");
        assert_eq!(capture_path("12", utc(2027, 1, 2, 23, 59, 7)), "12/2027/01/02/23/59/07.avro");
    }

    #[test]
    fn header_only_file_has_no_records_and_is_small() {
        for codec in Codec::ALL {
            for union_style in [UnionStyle::Legacy, UnionStyle::WithNull] {
                let spec = FileSpec { codec, union_style, ..FileSpec::default() };
                let file = write_capture_file(&[], &spec).unwrap();
                assert!(file.len() < 1024, "{} bytes", file.len());
                assert_eq!(header_len(&file), Some(file.len()));
                assert!(read_all(&file).unwrap().is_empty());
            }
        }
    }

    #[test]
    fn null_property_needs_the_union_with_null() {
        let mut events = sample_events(UnionStyle::WithNull);
        events.truncate(2);
        let err = write_capture_file(&events, &FileSpec::default()).unwrap_err();
        assert!(
            matches!(err, TestGenError::NullInLegacyUnion { sequence_number: 1001, ref key } if key == "gone"),
            "{err}"
        );
    }

    /// Our encoding of the event in Azure's `05.avro` equals Azure's file
    /// byte for byte, apart from the sync marker.
    #[test]
    fn matches_a_file_written_by_azure() {
        let real_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/real-capture/05.avro");
        let real = std::fs::read(&real_path).unwrap_or_else(|e| panic!("{}: {e}", real_path.display()));
        let event = CaptureEvent {
            sequence_number: 0,
            offset: "0".into(),
            enqueued_time: utc(2016, 11, 16, 16, 44, 11),
            system_properties: vec![("x-opt-publisher".into(), PropValue::Str("buddy1234".into()))],
            properties: vec![],
            body: Some(br#"{"field1": "value1", "field2": "value2"}"#.to_vec()),
        };
        let mut ours = write_capture_file(&[event], &FileSpec::default()).unwrap();
        assert_eq!(ours.len(), real.len());
        let h = header_len(&real).unwrap();
        let real_marker = &real[h - 16..h];
        let our_marker = ours[h - 16..h].to_vec();
        let n = ours.len();
        ours[h - 16..h].copy_from_slice(real_marker);
        assert_eq!(&ours[n - 16..], &our_marker[..]);
        ours[n - 16..].copy_from_slice(real_marker);
        assert_eq!(ours, real);
    }

    fn small_deflate_file() -> Vec<u8> {
        let mut events = sample_events(UnionStyle::Legacy);
        events.truncate(5);
        write_capture_file(&events, &FileSpec { codec: Codec::Deflate, ..FileSpec::default() }).unwrap()
    }

    #[test]
    fn every_corruption_makes_the_reader_fail() {
        for codec in Codec::ALL {
            let mut events = sample_events(UnionStyle::Legacy);
            events.truncate(5);
            let file = write_capture_file(&events, &FileSpec { codec, ..FileSpec::default() }).unwrap();
            assert_eq!(read_all(&file).unwrap().len(), 5);
            let h = header_len(&file).unwrap();
            let (start, len) = first_block(&file).unwrap();
            let cases = [
                Corruption::Truncate { keep: 0 },
                Corruption::Truncate { keep: 3 },
                Corruption::Truncate { keep: h / 2 },
                Corruption::Truncate { keep: h + 1 },
                Corruption::Truncate { keep: start + len / 2 },
                Corruption::Truncate { keep: file.len() - 1 },
                Corruption::BadMagic,
                Corruption::BadSync,
                Corruption::GarbageBlock,
            ];
            for how in cases {
                let bad = corrupt(&file, how);
                assert_ne!(bad, file);
                assert!(read_all(&bad).is_err(), "{codec:?} {how:?} was read without error");
            }
        }
        // Cutting exactly at a block boundary is not detectable: it reads as a shorter file.
        let file = small_deflate_file();
        let h = header_len(&file).unwrap();
        assert!(read_all(&corrupt(&file, Corruption::Truncate { keep: h })).unwrap().is_empty());
    }

    #[test]
    #[should_panic(expected = "needs a file with a data block")]
    fn bad_sync_needs_a_block() {
        corrupt(&write_capture_file(&[], &FileSpec::default()).unwrap(), Corruption::BadSync);
    }

    #[test]
    fn rng_is_deterministic_and_bounded() {
        let a: Vec<u64> = {
            let mut r = Rng::new(7);
            (0..10).map(|_| r.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut r = Rng::new(7);
            (0..10).map(|_| r.next_u64()).collect()
        };
        let c: Vec<u64> = {
            let mut r = Rng::new(8);
            (0..10).map(|_| r.next_u64()).collect()
        };
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mut r = Rng::new(1);
        let mut seen = [false; 10];
        for _ in 0..1000 {
            let x = r.below(10);
            assert!(x < 10);
            seen[x as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
        assert_eq!(r.below(0), 0);
    }

    #[test]
    fn user_event_bodies_are_json_of_the_documented_shape() {
        let mut rng = Rng::new(42);
        let at = utc(2026, 11, 1, 8, 0, 0) + Duration::milliseconds(42);
        let mut total = 0usize;
        let mut names = HashSet::new();
        let n = 2_000;
        for seq in 0..n {
            let body = user_event_body(&mut rng, seq, at);
            total += body.len();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let id = v["eventId"].as_str().unwrap();
            assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 4);
            let name = v["eventName"].as_str().unwrap();
            names.insert(name.to_string());
            assert_eq!(v["eventTimestamp"], "2026-11-01T08:00:00.042Z");
            assert!(v["userId"].as_str().unwrap().starts_with("u-"));
            assert!(v["sessionId"].as_str().unwrap().starts_with("s-"));
            assert!(v["email"].as_str().unwrap().ends_with("@example.com"));
            assert!(v["ipAddress"].as_str().unwrap().starts_with("10."));
            assert!(v["properties"]["page"].as_str().unwrap().starts_with('/'));
            assert!(v["properties"]["durationMs"].is_u64());
            if name == "purchase" {
                let amount = v["amount"].as_str().unwrap();
                let (units, cents) = amount.split_once('.').unwrap();
                assert!(units.parse::<u32>().is_ok() && cents.len() == 2, "{amount}");
                assert!(["EUR", "USD", "GBP"].contains(&v["currency"].as_str().unwrap()));
            } else {
                assert!(v.get("amount").is_none());
            }
        }
        assert_eq!(names.len(), 7, "{names:?}");
        let mean = total / n as usize;
        assert!((400..=450).contains(&mean), "mean body size {mean}");
    }

    #[test]
    fn malformed_bodies_are_not_json() {
        let mut rng = Rng::new(3);
        for seq in 0..300 {
            let body = user_event_body(&mut rng, seq, utc(2026, 1, 1, 0, 0, 0));
            let bad = malform(&mut rng, &body);
            assert!(serde_json::from_slice::<serde_json::Value>(&bad).is_err());
        }
    }

    /// Every file below `root`, relative path → bytes.
    fn files_below(root: &Path) -> BTreeMap<String, Vec<u8>> {
        fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(root, &path, out);
                } else {
                    let rel = path.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
                    out.insert(rel, std::fs::read(&path).unwrap());
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(root, root, &mut out);
        out
    }

    fn long_of(v: &Value) -> i64 {
        match v {
            Value::Long(x) => *x,
            Value::Union(_, b) => long_of(b),
            other => panic!("not a long: {other:?}"),
        }
    }

    fn field<'a>(record: &'a Value, name: &str) -> &'a Value {
        match record {
            Value::Record(fields) => &fields.iter().find(|(n, _)| n == name).unwrap().1,
            other => panic!("not a record: {other:?}"),
        }
    }

    #[test]
    fn generated_dataset_is_deterministic_and_matches_its_summary() {
        let spec = DatasetSpec {
            partitions: 3,
            windows: 5,
            events_per_file: 30,
            empty_every: 4,
            defect_rate_ppm: 50_000,
            duplicate_rate_ppm: 50_000,
            ..DatasetSpec::small(99)
        };
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let sa = generate_dataset(a.path(), &spec).unwrap();
        let sb = generate_dataset(b.path(), &spec).unwrap();
        assert_eq!(sa, sb);
        let fa = files_below(a.path());
        assert_eq!(fa, files_below(b.path()));

        // A different seed gives different files.
        let c = tempfile::tempdir().unwrap();
        generate_dataset(c.path(), &DatasetSpec { seed: 100, ..spec.clone() }).unwrap();
        assert_ne!(fa, files_below(c.path()));

        assert_eq!(sa.files, fa.len() as u64);
        assert_eq!(sa.files, 15);
        assert_eq!(sa.bytes, fa.values().map(|f| f.len() as u64).sum::<u64>());
        let mut events = 0u64;
        let mut header_only = 0u64;
        let mut malformed = 0u64;
        let mut duplicates = 0u64;
        let mut last: BTreeMap<String, i64> = BTreeMap::new();
        let mut ids: HashMap<String, HashSet<String>> = HashMap::new();
        // BTreeMap order is window order within a partition (zero-padded paths).
        for (rel, bytes) in &fa {
            let partition = rel.split('/').next().unwrap().to_string();
            let w = (0..spec.windows)
                .find(|w| {
                    capture_path(&partition, spec.start + Duration::seconds(spec.window_secs * i64::from(*w))) == *rel
                })
                .unwrap_or_else(|| panic!("unexpected file {rel}"));
            let p: u32 = partition.parse().unwrap();
            let records = read_all(bytes).unwrap();
            let window_start = spec.start + Duration::seconds(spec.window_secs * i64::from(w));
            if is_header_only_window(&spec, p, w) {
                assert!(records.is_empty(), "{rel} should be header-only");
                header_only += 1;
            } else {
                assert_eq!(records.len(), spec.events_per_file as usize);
            }
            let mut prev_ms = i64::MIN;
            for r in &records {
                events += 1;
                let seq = long_of(field(r, "SequenceNumber"));
                let expected = last.get(&partition).map_or(0, |s| s + 1);
                assert_eq!(seq, expected, "{rel}");
                last.insert(partition.clone(), seq);
                let Value::Map(sys) = field(r, "SystemProperties") else { panic!() };
                assert_eq!(long_of(&sys["x-opt-sequence-number"]), seq);
                let ms = long_of(&sys["x-opt-enqueued-time"]);
                assert!(ms >= prev_ms && ms >= window_start.timestamp_millis());
                assert!(ms < window_start.timestamp_millis() + spec.window_secs * 1000);
                prev_ms = ms;
                let Value::String(t) = field(r, "EnqueuedTimeUtc") else { panic!() };
                assert_eq!(t, &format_us_time(DateTime::from_timestamp_millis(ms).unwrap()));
                let Value::Union(1, body) = field(r, "Body") else { panic!() };
                let Value::Bytes(body) = body.as_ref() else { panic!() };
                match serde_json::from_slice::<serde_json::Value>(body) {
                    Err(_) => malformed += 1,
                    Ok(v) => {
                        let id = v["eventId"].as_str().unwrap().to_string();
                        if !ids.entry(partition.clone()).or_default().insert(id) {
                            duplicates += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(sa.events, events);
        assert_eq!(sa.header_only_files, header_only);
        assert!(header_only > 0);
        assert_eq!(sa.per_partition_last_sequence, last);
        assert_eq!(sa.malformed, malformed);
        assert_eq!(sa.duplicates, duplicates);
        assert!(malformed > 0 && duplicates > 0, "{sa:?}");
    }

    #[test]
    fn small_spec_uses_every_codec() {
        let dir = tempfile::tempdir().unwrap();
        let s = generate_dataset(dir.path(), &DatasetSpec::small(1)).unwrap();
        assert_eq!((s.files, s.events, s.header_only_files), (24, 600, 0));
        let codecs: HashSet<Vec<u8>> =
            files_below(dir.path()).values().map(|f| header_entries(f)[0].1.clone()).collect();
        assert_eq!(codecs.len(), 4);
    }

    fn testdata_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata")
    }

    fn write(path: &Path, bytes: &[u8]) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    /// The sample capture folder `testdata/capture/user_events`.
    fn sample_dataset_spec() -> DatasetSpec {
        DatasetSpec {
            partitions: 4,
            windows: 6,
            window_secs: 300,
            events_per_file: 20,
            start: utc(2026, 11, 1, 8, 0, 0),
            seed: 20_261_101,
            codecs: Codec::ALL.to_vec(),
            empty_every: 6,
            defect_rate_ppm: 20_000,
            duplicate_rate_ppm: 20_000,
        }
    }

    /// Three hand-made events for the small valid files in `testdata/bad`.
    fn fixed_events(style: UnionStyle) -> Vec<CaptureEvent> {
        let t = utc(2026, 11, 1, 14, 30, 5) + Duration::milliseconds(250);
        let body = |i: i64| {
            format!(
                "{{\"eventId\": \"00000000-0000-4000-8000-00000000000{i}\", \"eventName\": \"click\", \
                 \"eventTimestamp\": \"2026-11-01T14:30:0{i}.000Z\", \"userId\": \"u-{i}\"}}"
            )
            .into_bytes()
        };
        let mut third_props = vec![("source".to_string(), PropValue::Str("web".into()))];
        if style == UnionStyle::WithNull {
            third_props.push(("note".to_string(), PropValue::Null));
        }
        vec![
            CaptureEvent {
                sequence_number: 0,
                offset: "0".into(),
                enqueued_time: t,
                system_properties: vec![
                    ("x-opt-sequence-number".into(), PropValue::Long(0)),
                    ("x-opt-offset".into(), PropValue::Str("0".into())),
                    ("x-opt-enqueued-time".into(), PropValue::Long(t.timestamp_millis())),
                ],
                properties: vec![],
                body: Some(body(1)),
            },
            CaptureEvent {
                sequence_number: 1,
                offset: "312".into(),
                enqueued_time: t + Duration::seconds(1),
                system_properties: vec![("x-opt-publisher".into(), PropValue::Str("device-7".into()))],
                properties: vec![
                    ("retry".into(), PropValue::Long(2)),
                    ("score".into(), PropValue::Double(0.5)),
                    ("trace".into(), PropValue::Bytes(vec![0xCA, 0xFE])),
                ],
                body: Some(body(2)),
            },
            CaptureEvent {
                sequence_number: 2,
                offset: "624".into(),
                enqueued_time: t + Duration::hours(10),
                system_properties: vec![],
                properties: third_props,
                body: None,
            },
        ]
    }

    /// Rebuilds the generated files under `testdata/` (not `real-capture/`):
    /// `cargo test -p weir-testkit regenerate_testdata -- --ignored`.
    #[test]
    #[ignore = "writes testdata/; run explicitly to regenerate it"]
    fn regenerate_testdata() {
        let root = testdata_dir();

        let capture = root.join("capture/user_events");
        if capture.exists() {
            std::fs::remove_dir_all(&capture).unwrap();
        }
        let summary = generate_dataset(&capture, &sample_dataset_spec()).unwrap();
        println!("capture/user_events: {summary:?}");

        let sensors = root.join("capture/sensor_readings");
        if sensors.exists() {
            std::fs::remove_dir_all(&sensors).unwrap();
        }
        let files = write_sensor_capture(&sensors, &sensor_messages(&SensorSpec::sample())).unwrap();
        println!("capture/sensor_readings: {files} files");

        let bad = root.join("bad");
        let deflate = small_deflate_file();
        let (start, len) = first_block(&deflate).unwrap();
        write(&bad.join("truncated.avro"), &corrupt(&deflate, Corruption::Truncate { keep: start + len / 2 }));
        write(&bad.join("bad-magic.avro"), &corrupt(&deflate, Corruption::BadMagic));
        write(&bad.join("bad-sync.avro"), &corrupt(&deflate, Corruption::BadSync));
        write(&bad.join("garbage-block.avro"), &corrupt(&deflate, Corruption::GarbageBlock));
        write(
            &bad.join("empty-header-only.avro"),
            &write_capture_file(&[], &FileSpec { codec: Codec::Deflate, ..FileSpec::default() }).unwrap(),
        );
        write(
            &bad.join("us-time-legacy-union.avro"),
            &write_capture_file(&fixed_events(UnionStyle::Legacy), &FileSpec::default()).unwrap(),
        );
        write(
            &bad.join("iso-time-with-null-union.avro"),
            &write_capture_file(
                &fixed_events(UnionStyle::WithNull),
                &FileSpec { codec: Codec::Deflate, union_style: UnionStyle::WithNull, time_format: TimeFormat::Iso },
            )
            .unwrap(),
        );
    }

    /// The committed testdata is what `regenerate_testdata` writes.
    #[test]
    fn committed_testdata_is_up_to_date() {
        let root = testdata_dir();
        let committed = root.join("capture/user_events");
        assert!(committed.is_dir(), "{} is missing: run regenerate_testdata", committed.display());
        let fresh = tempfile::tempdir().unwrap();
        generate_dataset(fresh.path(), &sample_dataset_spec()).unwrap();
        // Compare (name, size, FNV-1a digest): a mismatch prints a short list.
        let digest = |files: BTreeMap<String, Vec<u8>>| -> Vec<(String, usize, u64)> {
            files
                .into_iter()
                .map(|(name, bytes)| {
                    let h = bytes
                        .iter()
                        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3));
                    (name, bytes.len(), h)
                })
                .collect()
        };
        assert_eq!(digest(files_below(&committed)), digest(files_below(fresh.path())), "run regenerate_testdata");
        let sensors = root.join("capture/sensor_readings");
        assert!(sensors.is_dir(), "{} is missing: run regenerate_testdata", sensors.display());
        let fresh = tempfile::tempdir().unwrap();
        write_sensor_capture(fresh.path(), &sensor_messages(&SensorSpec::sample())).unwrap();
        assert_eq!(digest(files_below(&sensors)), digest(files_below(fresh.path())), "run regenerate_testdata");
        let valid = std::fs::read(root.join("bad/us-time-legacy-union.avro")).unwrap();
        assert_eq!(valid, write_capture_file(&fixed_events(UnionStyle::Legacy), &FileSpec::default()).unwrap());
    }
}
