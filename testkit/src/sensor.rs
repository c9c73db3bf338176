//! Industrial sensor messages for the sensor example
//! (`pipelines/sensor_readings.yaml`): one JSON document of up to 100 keys
//! per device every 10 seconds, in capture files partitioned by device.
//!
//! Each body holds the eight fields `schemas/sensor_reading.avsc` declares
//! (`deviceId`, `siteId`, `ts`, `firmware`, `status`, `seq`, `TEMP_01`,
//! `PRESSURE_01`) and up to 92 more that it does not: numeric readings
//! named `FAMILY_NN` (`TEMP_02`, `VIB_07`, `FLOW_03`, ...), each present or
//! absent per message, plus `UPTIME_S` and, on devices in `FAULT`,
//! `FAULT_CODE`. The process stage keeps those in `_rescued`.
//!
//! Readings stay in a normal band and now and then make an excursion well
//! past it (in steps of 0.5, so some land exactly on round alarm limits).
//! The generator knows the bands, not any alarm limits: whatever checks the
//! output computes its alarms on its own. The input also carries what a
//! real feed does: re-sent messages (the same bytes, later), bodies cut in
//! half, a clock reset to 2000-01-01, a disconnected temperature probe
//! (`TEMP_01` = -9999.0), and readings sent as `null`, as `"ERR"` or as a
//! number in a string (`"97.5"`).
//!
//! Everything is a function of [`SensorSpec`]: the same spec gives the same
//! messages, byte for byte.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use chrono::{DateTime, Duration, DurationRound, TimeZone, Utc};

use crate::capture::{capture_path, write_capture_file, CaptureEvent, Codec, FileSpec, Rng, TestGenError, TimeFormat};

/// What to generate.
#[derive(Debug, Clone)]
pub struct SensorSpec {
    /// Seed of every random choice.
    pub seed: u64,
    /// Number of devices (`pump-101`, `pump-102`, ...).
    pub devices: u32,
    /// Event Hubs partitions; device `d` sends to partition `d % partitions`.
    pub partitions: u32,
    /// Time of every device's first message.
    pub start: DateTime<Utc>,
    /// Messages per device, one every 10 seconds.
    pub messages_per_device: u32,
}

impl SensorSpec {
    /// Six devices on two partitions for 20 minutes from 2026-11-01 08:00 UTC.
    pub fn small(seed: u64) -> Self {
        SensorSpec {
            seed,
            devices: 6,
            partitions: 2,
            start: Utc.with_ymd_and_hms(2026, 11, 1, 8, 0, 0).unwrap(),
            messages_per_device: 120,
        }
    }

    /// The committed sample folder `testdata/capture/sensor_readings`, which
    /// the sensor example reads by default: four devices on two partitions
    /// for 10 minutes from 2026-11-01 08:00 UTC.
    pub fn sample() -> Self {
        SensorSpec { devices: 4, messages_per_device: 60, ..SensorSpec::small(20_261_101) }
    }
}

/// One message as the hub received it.
#[derive(Debug, Clone, PartialEq)]
pub struct SensorMessage {
    /// Partition id.
    pub partition: String,
    /// Sequence number within the partition (0, 1, ... in enqueue order).
    pub sequence_number: i64,
    /// When the hub enqueued it.
    pub enqueued_time: DateTime<Utc>,
    /// The body (ASCII JSON, or a cut-off piece of it).
    pub body: Vec<u8>,
}

/// A family of readings: its key prefix, how many there are (numbered from
/// `_01`), the normal band and where excursions go.
struct Family {
    name: &'static str,
    count: u32,
    normal: (f64, f64),
    low_excursion: Option<(f64, f64)>,
    high_excursion: (f64, f64),
}

/// Readings by family: 8 + 92 = 100 keys with `UPTIME_S` and `FAULT_CODE`.
const FAMILIES: &[Family] = &[
    Family {
        name: "TEMP",
        count: 24,
        normal: (25.0, 55.0),
        low_excursion: Some((-20.0, 10.0)),
        high_excursion: (80.0, 105.0),
    },
    Family {
        name: "PRESSURE",
        count: 12,
        normal: (2.5, 5.5),
        low_excursion: Some((0.0, 1.5)),
        high_excursion: (7.0, 11.0),
    },
    Family { name: "VIB", count: 16, normal: (0.5, 3.5), low_excursion: None, high_excursion: (6.0, 14.0) },
    Family {
        name: "FLOW",
        count: 10,
        normal: (40.0, 80.0),
        low_excursion: Some((0.0, 15.0)),
        high_excursion: (110.0, 150.0),
    },
    Family {
        name: "LEVEL",
        count: 8,
        normal: (30.0, 70.0),
        low_excursion: Some((0.0, 15.0)),
        high_excursion: (85.0, 100.0),
    },
    Family { name: "CURRENT", count: 12, normal: (10.0, 30.0), low_excursion: None, high_excursion: (40.0, 60.0) },
    Family { name: "RPM", count: 6, normal: (1450.0, 1500.0), low_excursion: None, high_excursion: (1550.0, 1900.0) },
    Family { name: "HUMIDITY", count: 4, normal: (30.0, 60.0), low_excursion: None, high_excursion: (75.0, 95.0) },
];

const SITES: &[&str] = &["site-north", "site-south", "site-east"];
const STATUSES: &[(&str, u64)] = &[("RUNNING", 85), ("IDLE", 8), ("MAINTENANCE", 4), ("FAULT", 3)];

/// Every message of `spec`, with re-sends, ordered by partition and
/// sequence number.
pub fn sensor_messages(spec: &SensorSpec) -> Vec<SensorMessage> {
    let mut rng = Rng::new(spec.seed);
    let mut sent: Vec<(String, DateTime<Utc>, Vec<u8>)> = Vec::new();
    for d in 0..spec.devices {
        let partition = (d % spec.partitions.max(1)).to_string();
        let device = Device::new(d, &mut rng);
        // Devices do not report in step: each has its own offset in the
        // 10-second cycle.
        let offset = Duration::milliseconds((u64::from(d) * 1_373 % 10_000) as i64);
        for i in 0..spec.messages_per_device {
            let ts = spec.start + offset + Duration::seconds(10 * i64::from(i));
            let enqueued = ts + Duration::milliseconds(150 + rng.below(2_500) as i64);
            let body = device.body(&mut rng, i, ts);
            if rng.below(1_000) < 12 {
                // Sent again by the device's retry logic, the same bytes.
                let again = enqueued + Duration::seconds(20 + rng.below(90) as i64);
                sent.push((partition.clone(), again, body.clone()));
            }
            sent.push((partition.clone(), enqueued, body));
        }
    }
    sent.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    let mut next: BTreeMap<String, i64> = BTreeMap::new();
    sent.into_iter()
        .map(|(partition, enqueued_time, body)| {
            let seq = next.entry(partition.clone()).or_insert(0);
            *seq += 1;
            SensorMessage { partition, sequence_number: *seq - 1, enqueued_time, body }
        })
        .collect()
}

/// Writes `messages` as Capture does: one deflate file per partition and
/// 5-minute window of the enqueue time (ISO-8601 enqueue times, to the
/// millisecond), under `root`. Returns the files written.
pub fn write_sensor_capture(root: &Path, messages: &[SensorMessage]) -> Result<usize, TestGenError> {
    let mut files: BTreeMap<(String, DateTime<Utc>), Vec<CaptureEvent>> = BTreeMap::new();
    for m in messages {
        let window = m.enqueued_time.duration_trunc(Duration::minutes(5)).unwrap_or(m.enqueued_time);
        files.entry((m.partition.clone(), window)).or_default().push(CaptureEvent {
            sequence_number: m.sequence_number,
            offset: (m.sequence_number * 4096).to_string(),
            enqueued_time: m.enqueued_time,
            system_properties: vec![],
            properties: vec![],
            body: Some(m.body.clone()),
        });
    }
    for ((partition, window), events) in &files {
        let path = root.join(capture_path(partition, *window));
        let bytes = write_capture_file(
            events,
            &FileSpec { codec: Codec::Deflate, time_format: TimeFormat::Iso, ..FileSpec::default() },
        )?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| TestGenError::Io { path: dir.to_path_buf(), source })?;
        }
        std::fs::write(&path, bytes).map_err(|source| TestGenError::Io { path: path.clone(), source })?;
    }
    Ok(files.len())
}

/// What stays the same across a device's messages.
struct Device {
    id: String,
    site: &'static str,
    firmware: &'static str,
    /// Older firmware sends no humidity readings.
    humidity: bool,
    boot: u64,
}

impl Device {
    fn new(d: u32, rng: &mut Rng) -> Device {
        let old = rng.below(3) == 0;
        Device {
            id: format!("pump-{}", 101 + d),
            site: SITES[d as usize % SITES.len()],
            firmware: if old { "3.1.4" } else { "3.2.0" },
            humidity: !old,
            boot: 3_600 + rng.below(500_000),
        }
    }

    fn body(&self, rng: &mut Rng, i: u32, ts: DateTime<Utc>) -> Vec<u8> {
        // A clock that lost its time after a power cut.
        let reset = rng.below(1_000) < 4;
        let ts_text = if reset {
            let t = Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).unwrap() + Duration::seconds(10 * i64::from(i));
            t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
        } else {
            ts.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
        };
        let roll = rng.below(100);
        let mut acc = 0;
        let status = STATUSES
            .iter()
            .find(|(_, pct)| {
                acc += pct;
                roll < acc
            })
            .map_or("RUNNING", |(s, _)| *s);
        let mut s = String::with_capacity(2_600);
        let _ = write!(
            s,
            "{{\"deviceId\": \"{}\", \"siteId\": \"{}\", \"ts\": \"{ts_text}\", \"firmware\": \"{}\", \"status\": \"{status}\", \"seq\": {i}",
            self.id, self.site, self.firmware
        );
        for family in FAMILIES {
            if family.name == "HUMIDITY" && !self.humidity {
                continue;
            }
            for n in 1..=family.count {
                let guaranteed = n == 1 && matches!(family.name, "TEMP" | "PRESSURE");
                if !guaranteed && rng.below(100) < 12 {
                    continue;
                }
                let value = if guaranteed && family.name == "TEMP" && rng.below(1_000) < 4 {
                    // A disconnected probe reads the transmitter's sentinel.
                    json_number(-9999.0)
                } else {
                    reading(rng, family, guaranteed)
                };
                let _ = write!(s, ", \"{}_{n:02}\": {value}", family.name);
            }
        }
        let _ = write!(s, ", \"UPTIME_S\": {}", self.boot + 10 * u64::from(i));
        if status == "FAULT" && rng.below(10) < 8 {
            let _ = write!(s, ", \"FAULT_CODE\": {}", 100 + rng.below(60));
        }
        s.push('}');
        let mut body = s.into_bytes();
        if rng.below(1_000) < 4 {
            // Cut off in transmission: not JSON.
            body.truncate(body.len() / 2);
        }
        body
    }
}

/// One reading's JSON value text: mostly a number in the normal band,
/// sometimes an excursion, now and then `null`, `"ERR"` or a number in a
/// string. `guaranteed` readings (declared `double` in the schema) are
/// always numbers.
fn reading(rng: &mut Rng, family: &Family, guaranteed: bool) -> String {
    let excursion = rng.below(1_000) < 6;
    let value = if excursion {
        let band = match family.low_excursion {
            Some(low) if rng.below(2) == 0 => low,
            _ => family.high_excursion,
        };
        // Steps of 0.5: some excursions land exactly on a round limit.
        let steps = ((band.1 - band.0) * 2.0) as u64;
        band.0 + rng.below(steps + 1) as f64 / 2.0
    } else {
        let (lo, hi) = family.normal;
        let cents = ((hi - lo) * 100.0) as u64;
        ((lo * 100.0).round() + rng.below(cents + 1) as f64) / 100.0
    };
    if guaranteed {
        return json_number(value);
    }
    let oddity = rng.below(1_000);
    match oddity {
        0..=1 => "null".to_string(),
        2..=3 => "\"ERR\"".to_string(),
        _ if oddity < 6 || (excursion && oddity < 80) => format!("\"{}\"", json_number(value)),
        _ => json_number(value),
    }
}

/// A float as JSON writes it: `85.0`, `41.37`, `-9999.0`.
fn json_number(v: f64) -> String {
    serde_json::to_string(&v).unwrap_or_else(|_| "null".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_deterministic_and_carry_every_kind_of_input() {
        let spec = SensorSpec::small(7);
        let a = sensor_messages(&spec);
        assert_eq!(a, sensor_messages(&spec));
        assert!(a.len() > 720, "re-sends added: {}", a.len());
        let text: Vec<String> = a.iter().map(|m| String::from_utf8(m.body.clone()).unwrap()).collect();
        let parsed: Vec<serde_json::Value> = text.iter().filter_map(|t| serde_json::from_str(t).ok()).collect();
        assert!(parsed.len() < a.len(), "some bodies are cut off");
        let most = parsed.iter().map(|v| v.as_object().unwrap().len()).max().unwrap();
        assert!((95..=100).contains(&most), "up to 100 keys: {most}");
        for needle in ["\"ERR\"", "null", "-9999.0", "2000-01-01T", "FAULT_CODE"] {
            assert!(text.iter().any(|t| t.contains(needle)), "{needle}");
        }
        // Sequence numbers run 0.. per partition in enqueue order.
        for p in ["0", "1"] {
            let mine: Vec<&SensorMessage> = a.iter().filter(|m| m.partition == p).collect();
            assert!(mine.iter().enumerate().all(|(i, m)| m.sequence_number == i as i64));
            assert!(mine.windows(2).all(|w| w[0].enqueued_time <= w[1].enqueued_time));
        }
    }
}
