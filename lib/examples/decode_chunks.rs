//! Decode cost of a capture file by chunk size: a fresh arrow-avro decoder
//! per chunk (what ingest does) against one decoder for the whole file.
//!
//! ```text
//! cargo run --release -p weir --example decode_chunks [EVENTS]
//! ```
//!
//! Generates one deflate capture file of EVENTS events (default 300,000) in
//! memory and prints, per chunking, the chunks and the best of 7 decodes.

use std::time::Instant;

use weir::capture::{decode_chunk, Splitter};
use weir_testkit::capture::{generate_dataset, Codec, DatasetSpec};

fn decode(file: &[u8], bytes: usize, records: u64) -> (usize, u64) {
    let mut s = Splitter::new(bytes, records);
    let mut chunks: Vec<_> = s.push(file).into_iter().map(Result::unwrap).collect();
    let header = s.header().cloned().expect("a header");
    chunks.extend(s.finish().into_iter().map(Result::unwrap));
    let rows = chunks.iter().map(|c| decode_chunk(&header, c).unwrap().num_rows() as u64).sum();
    (chunks.len(), rows)
}

fn main() {
    let events: u32 = std::env::args().nth(1).map_or(300_000, |a| a.parse().expect("EVENTS is a number"));
    let dir = tempfile::tempdir().unwrap();
    let spec = DatasetSpec {
        partitions: 1,
        windows: 1,
        events_per_file: events,
        codecs: vec![Codec::Deflate],
        ..DatasetSpec::small(3)
    };
    generate_dataset(dir.path(), &spec).unwrap();
    let file = std::fs::read(first_avro(dir.path())).unwrap();
    println!("file: {events} events, {} bytes", file.len());
    let shapes = [
        (
            "chunks of 1 MB / 16,384 records (ingest)",
            weir::capture::container::CHUNK_BYTES,
            weir::capture::container::CHUNK_RECORDS,
        ),
        ("chunks of 256 KB / 4,096 records", 1 << 18, 4096),
        ("one decoder, one batch", usize::MAX, u64::MAX),
    ];
    for (name, bytes, records) in shapes {
        let mut best = f64::MAX;
        let mut chunks = 0;
        for _ in 0..7 {
            let t = Instant::now();
            let (n, rows) = decode(&file, bytes, records);
            assert_eq!(rows, u64::from(events));
            chunks = n;
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!("{name}: {chunks} chunks, best of 7 {best:.3} s, {:.0} events/s", f64::from(events) / best);
    }
}

fn first_avro(dir: &std::path::Path) -> std::path::PathBuf {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            return first_avro(&path);
        }
        if path.extension().is_some_and(|x| x == "avro") {
            return path;
        }
    }
    panic!("no capture file under {}", dir.display())
}
