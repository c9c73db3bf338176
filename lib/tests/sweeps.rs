//! Damage sweeps and mutation fuzzing of everything that parses input a
//! user or a producer controls: no input panics or hangs Weir.
//!
//! - Capture files, per codec, a file of several blocks: truncated at every
//!   offset, and with every byte flipped, through both readers (the whole-
//!   file decoder and the streaming splitter ingest uses, chunk by chunk).
//! - Seeded mutation fuzzing (bit flips, byte inserts and deletes, splices
//!   of interesting tokens) of the framing walker, bodies against the
//!   example schema, pipeline files and path formats. `WEIR_FUZZ_RUNS`
//!   sets the runs per target (default 3,000); `WEIR_FUZZ_SEED` another
//!   seed. A failing input is printed in hex for a corpus case.
//!
//! What no reader can catch: a flipped byte inside a body of a `null`-codec
//! block changes the body and nothing else (Avro has no checksum; snappy's
//! CRC covers only its own blocks). Such a body is decoded as sent, or
//! quarantined if it no longer parses.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use deltalake::arrow::array::BinaryArray;
use weir::body::BodySchema;
use weir::capture::container::{scan_container, Splitter};
use weir::capture::decode::{decode_capture_file, decode_chunk};
use weir::capture::PathFormat;
use weir_testkit::capture::{user_event_body, write_capture_file, CaptureEvent, Codec, FileSpec, PropValue, Rng};

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// A capture file of two blocks or more: small bodies, so the sweep is
/// over a small file.
fn small_file(codec: Codec) -> Vec<u8> {
    let at = Utc.with_ymd_and_hms(2026, 11, 1, 8, 0, 0).unwrap();
    let events: Vec<CaptureEvent> = (0..420)
        .map(|seq| CaptureEvent {
            sequence_number: seq,
            offset: (seq * 64).to_string(),
            enqueued_time: at + chrono::Duration::seconds(seq),
            system_properties: vec![("x-opt-sequence-number".into(), PropValue::Long(seq))],
            properties: vec![("k".into(), PropValue::Str("v".into()))],
            body: Some(format!("{{\"n\":{seq}}}").into_bytes()),
        })
        .collect();
    let bytes = write_capture_file(&events, &FileSpec { codec, ..Default::default() }).unwrap();
    let blocks = scan_container(&bytes).unwrap().blocks;
    assert!(blocks >= 2, "{codec:?}: {blocks} blocks");
    bytes
}

/// Both readers over `bytes`; a decode error is an answer, a panic is not.
fn read_both(bytes: &[u8]) {
    let _ = decode_capture_file(bytes);
    let mut splitter = Splitter::new(4096, 64);
    let mut chunks = Vec::new();
    for piece in bytes.chunks(1000) {
        chunks.extend(splitter.push(piece));
    }
    let header = splitter.header().cloned();
    chunks.extend(splitter.finish());
    if let Some(header) = header {
        for chunk in chunks.into_iter().flatten() {
            let _ = decode_chunk(&header, &chunk);
        }
    }
}

/// Runs `cases` inputs through `check` on a thread, failing on a panic (with
/// the case) or when one case takes over a minute (a hang).
fn sweep(name: &str, cases: usize, check: impl Fn(usize) + Send + Sync + 'static) {
    let done = Arc::new(AtomicUsize::new(0));
    let progress = done.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut panics = Vec::new();
        for case in 0..cases {
            if catch_unwind(AssertUnwindSafe(|| check(case))).is_err() {
                panics.push(case);
            }
            progress.store(case + 1, Ordering::SeqCst);
        }
        let _ = tx.send(panics);
    });
    let mut last = 0;
    loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(panics) => {
                assert!(panics.is_empty(), "{name}: panics at cases {panics:?}");
                eprintln!("{name}: {cases} cases, no panic, no hang");
                return;
            }
            Err(_) => {
                let now = done.load(Ordering::SeqCst);
                assert!(now > last, "{name}: case {now} hangs");
                last = now;
            }
        }
    }
}

#[test]
fn capture_files_truncated_at_every_offset_or_with_any_byte_flipped_never_panic_or_hang() {
    for codec in [Codec::Null, Codec::Deflate, Codec::Snappy, Codec::Zstd] {
        let file = Arc::new(small_file(codec));
        let f = file.clone();
        sweep(&format!("{codec:?} truncated"), file.len(), move |cut| read_both(&f[..cut]));
        let f = file.clone();
        sweep(&format!("{codec:?} flipped"), file.len(), move |at| {
            let mut bad = f.to_vec();
            bad[at] ^= 0xFF;
            read_both(&bad);
        });
    }
}

/// Seeded mutations of `seed_input`: flips, inserts, deletes, repeats and
/// splices of `tokens`.
fn mutate(rng: &mut Rng, input: &[u8], tokens: &[&[u8]]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(4) {
        let at = if out.is_empty() { 0 } else { rng.below(out.len() as u64) as usize };
        match rng.below(6) {
            0 if !out.is_empty() => out[at] ^= 1 << rng.below(8),
            1 => out.insert(at, rng.below(256) as u8),
            2 if !out.is_empty() => {
                let end = (at + 1 + rng.below(16) as usize).min(out.len());
                out.drain(at..end);
            }
            3 if !out.is_empty() => {
                let end = (at + 1 + rng.below(32) as usize).min(out.len());
                let piece = out[at..end].to_vec();
                for _ in 0..=rng.below(64) {
                    out.splice(at..at, piece.iter().copied());
                }
            }
            _ => {
                let token = tokens[rng.below(tokens.len() as u64) as usize];
                out.splice(at..at, token.iter().copied());
            }
        }
    }
    out
}

fn runs() -> usize {
    std::env::var("WEIR_FUZZ_RUNS").ok().and_then(|n| n.parse().ok()).unwrap_or(3_000)
}

fn seed() -> u64 {
    std::env::var("WEIR_FUZZ_SEED").ok().and_then(|n| n.parse().ok()).unwrap_or(20261207)
}

/// Runs `runs()` mutations of `input` through `target`; a panic prints the
/// input that caused it.
fn fuzz(name: &str, input: Vec<u8>, tokens: &'static [&'static [u8]], target: impl Fn(&[u8]) + Send + Sync + 'static) {
    let input = Arc::new(input);
    let base = seed() ^ name.len() as u64;
    let inputs = input.clone();
    let target = Arc::new(target);
    let t = target.clone();
    let label = name.to_string();
    sweep(&format!("fuzz {name}"), runs(), move |case| {
        let mut rng = Rng::new(base.wrapping_add(case as u64));
        let mutated = mutate(&mut rng, &inputs, tokens);
        let outcome = catch_unwind(AssertUnwindSafe(|| t(&mutated)));
        if let Err(e) = outcome {
            let hex: String = mutated.iter().map(|b| format!("{b:02x}")).collect();
            eprintln!("{label}: case {case} panics on input {hex}");
            std::panic::resume_unwind(e);
        }
    });
}

#[test]
fn mutated_inputs_to_every_parser_never_panic() {
    fuzz("framing", small_file(Codec::Deflate), &[b"Obj\x01", b"\x00\x00\x00", b"\xff\xff\xff\xff\x0f"], |b| {
        read_both(b)
    });

    let schema = Arc::new(BodySchema::from_file(&repo().join("schemas/user_event.avsc")).unwrap());
    let at = Utc.with_ymd_and_hms(2026, 11, 1, 8, 0, 0).unwrap();
    let body = user_event_body(&mut Rng::new(1), 1, at);
    fuzz(
        "bodies",
        body,
        &[b"{", b"}", b"[", b"]", b"\"", b"\\u0000", b"\\ud800", b"1e999", b"-0", b"null", b",\"userId\":\"x\""],
        move |b| {
            let bodies = BinaryArray::from(vec![Some(b)]);
            let _ = schema.decode(&bodies);
        },
    );

    let example = std::fs::read(repo().join("pipelines/user_events.yaml")).unwrap();
    let file = repo().join("pipelines/user_events.yaml");
    fuzz(
        "pipelines",
        example,
        &[b"${WEIR_LAKE}", b"${X:-", b"\n  ", b": ", b"- ", b"[", b"{", b"&a ", b"*a", b"!!binary ", b"#"],
        move |b| {
            let text = String::from_utf8_lossy(b);
            let _ = weir::pipeline::parse_pipeline(&file, &text, &|_| None);
        },
    );

    fuzz(
        "path formats",
        b"{Namespace}/{EventHub}/{PartitionId}/{Year}/{Month}/{Day}/{Hour}/{Minute}/{Second}".to_vec(),
        &[b"{", b"}", b"{Year}", b"/", b"{PartitionId}", b"..", b"{}"],
        |b| {
            if let Ok(format) = PathFormat::parse(&String::from_utf8_lossy(b)) {
                let _ = format.parse_path("hub/ns/0/2026/11/01/08/00/00.avro");
            }
        },
    );
}
