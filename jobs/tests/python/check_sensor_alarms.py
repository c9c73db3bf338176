"""Recomputes the sensor example's tables from the messages sent, without
Weir's SQL, and compares them with what `weir run` wrote: the quarantine
table, the processed table and the range alarms, as exact row multisets.

The rules below are the example's, written down again from its
documentation (docs/guide/sensor-alarms.md), not read from its SQL.

usage: check_sensor_alarms.py LAKE_DIR MESSAGES_JSONL
MESSAGES_JSONL: one message per line, as sent to the hub:
  {"partition": "0", "sequence_number": 3, "enqueued_time": RFC 3339, "body": text}
Prints "ok <alarms>" and exits 0, or raises.
"""
import json
import os
import re
import sys
from collections import Counter
from datetime import datetime, timedelta, timezone

import polars as pl

# Family: (Low-Low, Low, High, High-High); None: no such limit.
LIMITS = {
    "TEMP": (-10.0, 5.0, 85.0, 95.0),
    "PRESSURE": (0.5, 1.0, 8.0, 9.5),
    "VIB": (None, None, 7.1, 11.0),
    "FLOW": (5.0, 10.0, 120.0, 140.0),
    "LEVEL": (5.0, 10.0, 90.0, 95.0),
    "CURRENT": (None, None, 45.0, 55.0),
    "RPM": (None, None, 1600.0, 1800.0),
    "HUMIDITY": (None, None, 80.0, 90.0),
}
DECLARED = {"deviceId", "siteId", "ts", "firmware", "status", "seq", "TEMP_01", "PRESSURE_01"}
STATUSES = {"RUNNING", "IDLE", "MAINTENANCE", "FAULT"}
NUMBER_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)


def number(value):
    """A reading's value: a JSON number, or a string holding one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and NUMBER_TEXT.fullmatch(value):
        return float(value)
    return None


def parse(body: str):
    """The message's fields, or None when it does not fit the schema."""
    try:
        doc = json.loads(body)
    except json.JSONDecodeError:
        return None
    if not isinstance(doc, dict) or not DECLARED <= doc.keys():
        return None
    if doc["status"] not in STATUSES or not isinstance(doc["seq"], int):
        return None
    if not all(isinstance(doc[k], (int, float)) and not isinstance(doc[k], bool) for k in ("TEMP_01", "PRESSURE_01")):
        return None
    doc["ts"] = utc(doc["ts"])
    return doc


def quarantine_rules(doc, enqueued: datetime):
    rules = []
    if not (enqueued - timedelta(days=1) <= doc["ts"] <= enqueued + timedelta(minutes=5)):
        rules.append("clock_plausible")
    if not (-50 <= doc["TEMP_01"] <= 250):
        rules.append("temp_01_probe_connected")
    if not (0 <= doc["PRESSURE_01"] <= 25):
        rules.append("pressure_01_in_span")
    return rules


def level(value: float, limits):
    low_low, low, high, high_high = limits
    if high_high is not None and value >= high_high:
        return "HH", high_high
    if high is not None and value >= high:
        return "H", high
    if low_low is not None and value <= low_low:
        return "LL", low_low
    if low is not None and value <= low:
        return "L", low
    return None


def expected(messages):
    quarantine, kept = {}, {}
    for m in sorted(messages, key=lambda m: (utc(m["enqueued_time"]), m["partition"], m["sequence_number"])):
        where = (m["partition"], m["sequence_number"])
        doc = parse(m["body"])
        if doc is None:
            quarantine[where] = ["schema"]
            continue
        rules = quarantine_rules(doc, utc(m["enqueued_time"]))
        if rules:
            quarantine[where] = sorted(rules)
            continue
        # Re-sends: the first copy per device and measurement time.
        kept.setdefault((doc["deviceId"], doc["ts"]), doc)
    alarms, from_text = [], 0
    for (device, ts), doc in kept.items():
        for reading, raw in doc.items():
            family = reading.split("_")[0]
            if reading in DECLARED - {"TEMP_01", "PRESSURE_01"} or family not in LIMITS:
                continue
            value = number(raw)
            if value is None:
                continue
            hit = level(value, LIMITS[family])
            if hit:
                alarms.append((device, doc["siteId"], ts.date(), ts, reading, hit[0], value, hit[1]))
                from_text += isinstance(raw, str)
    return quarantine, sorted(kept), alarms, from_text


def main() -> None:
    lake, messages_file = sys.argv[1], sys.argv[2]
    with open(messages_file) as f:
        messages = [json.loads(line) for line in f]
    want_quarantine, want_processed, want_alarms, from_text = expected(messages)

    q = pl.read_delta(os.path.join(lake, "quarantine/sensor_readings"))
    got_quarantine = {
        (p, s): sorted(r) for p, s, r in q.select("_partition_id", "_sequence_number", "rules").iter_rows()
    }
    differ = {k for k in got_quarantine.keys() | want_quarantine.keys() if got_quarantine.get(k) != want_quarantine.get(k)}
    assert not differ, [(k, got_quarantine.get(k), want_quarantine.get(k)) for k in sorted(differ)[:10]]

    processed = pl.read_delta(os.path.join(lake, "processed/sensor_readings"))
    got_processed = sorted(processed.select("deviceId", "ts").iter_rows())
    assert got_processed == want_processed, (len(got_processed), len(want_processed))

    alarms = pl.read_delta(os.path.join(lake, "curated/sensor_range_alarms"))
    schema = alarms.schema
    assert schema["ts"] == pl.Datetime("us", "UTC") and schema["date"] == pl.Date, schema
    assert schema["value"] == pl.Float64 and schema["limit_value"] == pl.Float64, schema
    columns = ["deviceId", "siteId", "date", "ts", "reading", "level", "value", "limit_value"]
    got = Counter(alarms.select(columns).iter_rows())
    want = Counter(want_alarms)
    assert got == want, {"missing": list((want - got).items())[:10], "extra": list((got - want).items())[:10]}

    # The input exercised what the rules are about.
    levels = Counter(a[5] for a in want_alarms)
    assert set(levels) == {"LL", "L", "H", "HH"}, levels
    assert any(a[6] == a[7] for a in want_alarms), "a value exactly at a limit"
    assert any(a[4] in ("TEMP_01", "PRESSURE_01") for a in want_alarms), "an alarm on a declared reading"
    assert from_text > 0, "an alarm from a number sent as a string"
    assert {"schema", "clock_plausible", "temp_01_probe_connected"} <= {r for v in want_quarantine.values() for r in v}
    assert len(messages) > len(want_quarantine) + len(want_processed), "re-sends were dropped"
    print(f"ok {len(want_alarms)}")


if __name__ == "__main__":
    main()
