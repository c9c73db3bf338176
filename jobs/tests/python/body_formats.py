"""Generates a Capture set of payment transactions in one body format with
independent encoders, and checks what Weir made of it with independent
readers.

usage:
  body_formats.py generate DIR FORMAT   # FORMAT: json | avro | avro-schema-registry | confluent
  body_formats.py check DIR
  body_formats.py check-erased DIR ACCOUNT
  body_formats.py generate-routed DIR    # two Confluent event types routed by a property
  body_formats.py check-routed DIR
  body_formats.py bench DIR FORMAT EVENTS   # a defect-free set for bench/formats.sh (FORMAT may also be json-plain: JSON, uncompressed)

`generate` writes DIR/capture (Capture Avro container files written by
fastavro), DIR/pipeline.yaml, DIR/schemas and DIR/expected.json. Bodies are
encoded by fastavro (avro, confluent), by Azure's own
azure-schemaregistry-avroencoder with an offline registry client
(avro-schema-registry), or as JSON compressed by Python's gzip and zlib.
Each set holds known defects (one per way a body of that format can be
broken), an expectation failure and re-sent events.

`check` reads DIR/lake with deltalake and polars and compares the
processed, quarantine and curated tables with expected.json exactly: row
sets, decimal values, UTC timestamps, map, list and struct types.
Prints "ok" or raises.
"""
import datetime as dt
import gzip
import hashlib
import hmac
import io
import json
import os
import struct
import sys
import types
import zlib
from decimal import Decimal

import fastavro

CAPTURE_SCHEMA = {
    "type": "record",
    "name": "EventData",
    "namespace": "Microsoft.ServiceBus.Messaging",
    "fields": [
        {"name": "SequenceNumber", "type": "long"},
        {"name": "Offset", "type": "string"},
        {"name": "EnqueuedTimeUtc", "type": "string"},
        {"name": "SystemProperties", "type": {"type": "map", "values": ["long", "double", "string", "bytes"]}},
        {"name": "Properties", "type": {"type": "map", "values": ["long", "double", "string", "bytes", "null"]}},
        {"name": "Body", "type": ["null", "bytes"]},
    ],
}

DECIMAL = {"type": "bytes", "logicalType": "decimal", "precision": 18, "scale": 2}
MERCHANT = {
    "type": "record",
    "name": "Merchant",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "country", "type": ["null", "string"], "default": None},
    ],
}
CURRENCY = {"type": "enum", "name": "Currency", "symbols": ["EUR", "USD", "GBP"]}


def schema(version):
    """The pipeline's schema (reader, version 0) or a producer's (1, 2)."""
    fields = [
        {"name": "transactionId", "type": "string"},
        {"name": "accountId", "type": "string", **({"weir.pii": "subject"} if version == 0 else {})},
        {"name": "amount", "type": DECIMAL},
        {"name": "currency", "type": CURRENCY},
        {"name": "occurredAt", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "merchant", "type": MERCHANT},
        {"name": "tags", "type": {"type": "array", "items": "string"}, "default": []},
        {"name": "metadata", "type": {"type": "map", "values": "string"}, "default": {}},
        # Producer 1 still writes an int: promoted to long by resolution.
        {"name": "attempt", "type": "int" if version == 1 else "long"},
        {"name": "cardNumber", "type": ["null", "string"], "default": None},
    ]
    if version != 1:
        # Producer 1 predates the channel: the reader's default fills it.
        fields.append({"name": "channel", "type": "string", "default": "web"})
    if version == 2:
        # Only producer 2 sends a risk score: not in the pipeline's schema.
        fields.append({"name": "riskScore", "type": "double"})
    return {"type": "record", "name": "FinancialTransaction", "namespace": "com.example.payments", "fields": fields}


# The HMAC key formats.rs gives `weir` in WEIR_PII_KEY.
PII_KEY = b"body-formats-test-key-0123456789abcdef"


def hashed(value):
    return hmac.new(PII_KEY, value.encode(), hashlib.sha256).hexdigest()


BASE = dt.datetime(2026, 12, 7, 10, 0, 0, tzinfo=dt.timezone.utc)
FILES_PER_PARTITION = 3
EVENTS_PER_FILE = 12


def transaction(i):
    """The i-th transaction, as values (the producer's view)."""
    cents = (i * 7919) % 100000 - (5000 if i % 17 == 5 else 0)
    return {
        "transactionId": f"t{i:04d}",
        "accountId": f"a{i % 7:02d}",
        "amount": Decimal(cents).scaleb(-2),
        "currency": ["EUR", "USD", "GBP"][i % 3],
        "occurredAt": BASE + dt.timedelta(seconds=37 * i, milliseconds=i % 1000),
        "merchant": {"id": f"m{i % 5}", "country": None if i % 4 == 0 else ["DE", "FR", "GB"][i % 3]},
        "tags": [f"tag{j}" for j in range(i % 3)],
        "metadata": {f"k{j}": f"v{i}-{j}" for j in range(i % 4)},
        "attempt": 1 + i % 3,
        "cardNumber": f"4111-0000-0000-{i:04d}",
        "channel": ["web", "app", "pos"][i % 3],
        "riskScore": (i % 10) / 8,
    }


def producer_version(i):
    return 1 if i % 2 == 0 else 2


def as_written(t, version):
    """`t` as producer `version` writes it (fields its schema has)."""
    names = {f["name"] for f in schema(version)["fields"]}
    return {k: v for k, v in t.items() if k in names}


def as_json(t):
    """`t` as a JSON producer sends it."""
    d = dict(t)
    d.pop("riskScore")
    d["amount"] = str(d["amount"])
    d["occurredAt"] = int(d["occurredAt"].timestamp() * 1000)
    if t["riskScore"] > 0.5:
        d["riskScore"] = t["riskScore"]
    return d


def datum(writer, value):
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(writer), value)
    return buf.getvalue()


class OfflineRegistry:
    """A Schema Registry client that never goes to the network: ids are
    derived from the schema text, as a registry assigns one per schema."""

    def __init__(self):
        self.schemas = {}

    def get_schema_properties(self, group_name, name, definition, format, **kwargs):
        schema_id = hashlib.sha256(definition.encode()).hexdigest()[:32]
        self.schemas[schema_id] = definition
        return types.SimpleNamespace(id=schema_id, format=format, group_name=group_name, name=name)

    register_schema = get_schema_properties

    def get_schema(self, schema_id, **kwargs):
        return types.SimpleNamespace(definition=self.schemas[schema_id])

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def close(self):
        pass


class Encoder:
    """Bodies of one format: (body bytes, system properties, properties, expected outcome)."""

    def __init__(self, fmt, out):
        self.fmt = fmt
        self.out = out
        self.registry = OfflineRegistry()
        self.writer_files = {}
        if fmt == "avro-schema-registry":
            from azure.schemaregistry.encoder.avroencoder import AvroEncoder

            self.azure = AvroEncoder(client=self.registry, group_name="payments", auto_register=True)

    def encode(self, i, t):
        """The body and properties of transaction `t`, and the values Weir should land."""
        if self.fmt == "json":
            body = json.dumps(as_json(t)).encode()
            system, props = {}, {}
            if i % 3 == 0:
                body = gzip.compress(body)
                system["content-encoding"] = "gzip"
            elif i % 3 == 1:
                body = zlib.compress(body)  # no property: recognised by its header
            expected = dict(t, riskScore=t["riskScore"] if t["riskScore"] > 0.5 else None)
            return body, system, props, expected
        if self.fmt == "avro":
            value = as_written(t, 0)
            return datum(schema(0), value), {}, {}, dict(t, riskScore=None)
        version = producer_version(i)
        value = as_written(t, version)
        expected = dict(t)
        if version == 1:
            expected["channel"] = "web"
            expected["riskScore"] = None
        if self.fmt == "avro-schema-registry":
            encoded = self.azure.encode(value, schema=json.dumps(schema(version)))
            schema_id = encoded["content_type"].split("+", 1)[1]
            self.writer_files[schema_id] = schema(version)
            # The content type travels as the event's content-type property.
            return encoded["content"], {"content-type": encoded["content_type"]}, {}, expected
        schema_id = 100 + version
        self.writer_files[str(schema_id)] = schema(version)
        return b"\x00" + struct.pack(">I", schema_id) + datum(schema(version), value), {}, {}, expected

    def defects(self, t):
        """Broken bodies of this format: (body, system, props, reason substring)."""
        if self.fmt == "json":
            return [
                (b"\x1f\x8b\x08\x00garbage", {}, {}, "not valid gzip data"),
                (gzip.compress(b'{"transactionId": "x"'), {"content-encoding": "gzip"}, {}, "schema: "),
                (json.dumps(as_json(t)).encode(), {"content-encoding": "br"}, {}, 'content encoding "br"'),
            ]
        if self.fmt == "avro":
            whole = datum(schema(0), as_written(t, 0))
            return [
                (whole[:-3], {}, {}, "the datum ends inside"),
                (whole + b"\x00\x00", {}, {}, "the body does not match its writer schema"),
            ]
        if self.fmt == "avro-schema-registry":
            encoded = self.azure.encode(as_written(t, 2), schema=json.dumps(schema(2)))
            unknown = "0" * 32
            return [
                (encoded["content"], {"content-type": f"avro/binary+{unknown}"}, {}, f"schema id {unknown} is not in body.writer_schemas"),
                (encoded["content"], {}, {}, "no content-type property"),
            ]
        body = datum(schema(2), as_written(t, 2))
        return [
            (b"\x00" + struct.pack(">I", 99) + body, {}, {}, "schema id 99 is not in body.writer_schemas"),
            (b"\x01" + struct.pack(">I", 102) + body, {}, {}, "magic byte 0x01"),
        ]


def zlib_or_plain(body):
    """The bytes a body's account could be read from: inflated gzip, else as is."""
    try:
        return gzip.decompress(body)
    except Exception:
        return body


def capture_time(t):
    return f"{t.month}/{t.day}/{t.year} {(t.hour % 12) or 12}:{t.minute:02d}:{t.second:02d} {'AM' if t.hour < 12 else 'PM'}"


def generate(out, fmt):
    enc = Encoder(fmt, out)
    # accounts: the account of every event by "partition/sequence", defects
    # and re-sends included, for the erasure check.
    expected = {"processed": {}, "quarantine": {}, "accounts": {}, "format": fmt}
    n = 0
    for partition in ("0", "1"):
        seq = 0
        for f in range(FILES_PER_PARTITION):
            window = BASE + dt.timedelta(minutes=5 * f)
            records = []

            def add(body, system, props, at, account):
                nonlocal seq
                expected["accounts"][f"{partition}/{seq}"] = account
                records.append({
                    "SequenceNumber": seq,
                    "Offset": str(seq * 1000),
                    "EnqueuedTimeUtc": capture_time(at),
                    "SystemProperties": system,
                    "Properties": props,
                    "Body": body,
                })
                seq += 1
                return seq - 1

            for _ in range(EVENTS_PER_FILE):
                i = n
                n += 1
                t = transaction(i)
                body, system, props, value = enc.encode(i, t)
                s = add(body, system, props, window, t["accountId"])
                if t["amount"] < 0:
                    expected["quarantine"][f"{partition}/{s}"] = "amount_not_negative"
                else:
                    expected["processed"][t["transactionId"]] = value
            # Known defects, then re-sends of the file's first three events.
            if f == 1:
                broken = transaction(10_000 + n)
                for body, system, props, reason in enc.defects(broken):
                    # A body too broken to hold its account holds none.
                    account = broken["accountId"] if broken["accountId"].encode() in zlib_or_plain(body) else None
                    s = add(body, system, props, window, account)
                    expected["quarantine"][f"{partition}/{s}"] = reason
            if f == 2:
                for i in range(n - EVENTS_PER_FILE - 3, n - EVENTS_PER_FILE):
                    body, system, props, _ = enc.encode(i, transaction(i))
                    add(body, system, props, window, transaction(i)["accountId"])
            folder = os.path.join(out, "capture", partition, *(f"{x:02d}" for x in (window.year, window.month, window.day, window.hour, window.minute)))
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, f"{window.second:02d}.avro"), "wb") as fh:
                fastavro.writer(fh, fastavro.parse_schema(CAPTURE_SCHEMA), records, codec="deflate")

    os.makedirs(os.path.join(out, "schemas", "writers"), exist_ok=True)
    with open(os.path.join(out, "schemas", "transaction.avsc"), "w") as fh:
        json.dump(schema(0), fh, indent=1)
    for schema_id, s in enc.writer_files.items():
        with open(os.path.join(out, "schemas", "writers", f"{schema_id}.avsc"), "w") as fh:
            json.dump(s, fh, indent=1)
    body = {"json": "  compression: auto\n", "avro": ""}.get(fmt, "  writer_schemas: schemas/writers\n")
    with open(os.path.join(out, "pipeline.yaml"), "w") as fh:
        fh.write(PIPELINE.format(format=fmt, body=body))
    with open(os.path.join(out, "expected.json"), "w") as fh:
        json.dump(expected, fh, default=str, indent=1)


PIPELINE = """name: transactions
source:
  capture:
    url: capture
body:
  format: {format}
  schema: schemas/transaction.avsc
{body}tables:
  raw: {{path: lake/raw}}
  processed: {{path: lake/processed}}
  quarantine: {{path: lake/quarantine}}
  quality_metrics: {{path: lake/quality}}
  erasure_log: {{path: lake/audit/erasure_log}}
ingest:
  lookback_hours: 0
process:
  event_time: occurredAt
  expectations:
    - name: amount_not_negative
      sql: amount >= 0
      action: quarantine
  pii:
    rules:
      - column: cardNumber
        action: drop
      - column: accountId
        action: hash
  dedup:
    key: [transactionId]
    keep: first
    order_by: [_enqueued_time]
curate:
  tables:
    - name: totals
      path: lake/curated/totals
      key: [currency]
      sql: |
        SELECT CAST(currency AS VARCHAR) AS currency, SUM(amount) AS total, COUNT(*) AS n
        FROM processed GROUP BY currency
"""


def check(out):
    import polars as pl
    import pyarrow as pa
    from deltalake import DeltaTable

    with open(os.path.join(out, "expected.json")) as fh:
        expected = json.load(fh)
    lake = os.path.join(out, "lake")

    processed = DeltaTable(os.path.join(lake, "processed")).to_pyarrow_table()
    s = processed.schema
    want_types = {
        "amount": pa.decimal128(18, 2),
        "occurredAt": pa.timestamp("us", tz="UTC"),
        "tags": None,
        "metadata": None,
        "attempt": pa.int64(),
        "channel": pa.string(),
        "currency": pa.string(),
    }
    for name, t in want_types.items():
        if t is not None:
            assert s.field(name).type == t, (name, s.field(name).type)
    assert pa.types.is_map(s.field("metadata").type), s.field("metadata").type
    assert s.field("metadata").type.key_type == pa.string() and s.field("metadata").type.item_type == pa.string()
    assert pa.types.is_list(s.field("tags").type), s.field("tags").type
    assert pa.types.is_struct(s.field("merchant").type), s.field("merchant").type
    assert "cardNumber" not in s.names, "the PII rule drops the card number"

    got = {}
    for r in processed.to_pylist():
        rescued = json.loads(r["_rescued"]) if r["_rescued"] else {}
        got[r["transactionId"]] = {
            "accountId": r["accountId"],
            "amount": str(r["amount"]),
            "currency": r["currency"],
            "occurredAt": r["occurredAt"].astimezone(dt.timezone.utc).isoformat(),
            "merchant": r["merchant"],
            "tags": r["tags"],
            "metadata": dict(r["metadata"]),
            "attempt": r["attempt"],
            "channel": r["channel"],
            "riskScore": float(rescued["riskScore"]) if "riskScore" in rescued else None,
            "rescued_other": sorted(k for k in rescued if k != "riskScore"),
        }
    want = {}
    for tid, t in expected["processed"].items():
        want[tid] = {
            "accountId": hashed(t["accountId"]),
            "amount": str(Decimal(t["amount"]).quantize(Decimal("0.01"))),
            "currency": t["currency"],
            "occurredAt": dt.datetime.fromisoformat(t["occurredAt"]).astimezone(dt.timezone.utc).isoformat(),
            "merchant": t["merchant"],
            "tags": t["tags"],
            "metadata": t["metadata"],
            "attempt": t["attempt"],
            "channel": t["channel"],
            "riskScore": t["riskScore"],
            "rescued_other": [],
        }
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    assert not missing and not extra, f"missing {missing[:5]} extra {extra[:5]}"
    for tid in want:
        assert got[tid] == want[tid], f"{tid}: got {got[tid]} want {want[tid]}"
    assert processed.num_rows == len(want), "each transaction once (re-sends deduplicated)"

    # The map column reads as a map in polars too.
    frame = pl.read_delta(os.path.join(lake, "processed"))
    assert frame.height == len(want)
    assert frame.schema["metadata"] == pl.Map(pl.String, pl.String), frame.schema["metadata"]
    by_id = {r["transactionId"]: r["metadata"] for r in frame.select("transactionId", "metadata").to_dicts()}
    assert {k: dict(v) if isinstance(v, dict) else {e["key"]: e["value"] for e in v} for k, v in by_id.items()} == {
        k: v["metadata"] for k, v in want.items()
    }

    quarantine = DeltaTable(os.path.join(lake, "quarantine")).to_pyarrow_table().to_pylist()
    got_q = {f"{r['_partition_id']}/{r['_sequence_number']}": r for r in quarantine}
    assert sorted(got_q) == sorted(expected["quarantine"]), (sorted(got_q), sorted(expected["quarantine"]))
    for key, reason in expected["quarantine"].items():
        assert reason in got_q[key]["reason"], f"{key}: {got_q[key]['reason']!r} lacks {reason!r}"
        assert got_q[key]["body"] is not None, "the body is kept as received"

    # Ingest read each decodable body's subject key into its raw column
    # (erasure finds rows by it); only the broken bodies lack it.
    raw = DeltaTable(os.path.join(lake, "raw")).to_pyarrow_table(
        columns=["partition_id", "sequence_number", "subject_accountId"]
    ).to_pylist()
    no_subject = {f"{r['partition_id']}/{r['sequence_number']}" for r in raw if r["subject_accountId"] is None}
    broken = {k for k, reason in expected["quarantine"].items() if reason != "amount_not_negative"}
    assert no_subject == broken, (sorted(no_subject), sorted(broken))
    for r in raw:
        key = f"{r['partition_id']}/{r['sequence_number']}"
        assert key in broken or r["subject_accountId"] == expected["accounts"][key], (key, r)

    totals = DeltaTable(os.path.join(lake, "curated", "totals")).to_pyarrow_table().to_pylist()
    got_t = {r["currency"]: (str(r["total"]), r["n"]) for r in totals}
    want_t = {}
    for t in expected["processed"].values():
        total, n = want_t.get(t["currency"], (Decimal(0), 0))
        want_t[t["currency"]] = (total + Decimal(t["amount"]), n + 1)
    want_t = {c: (str(v.quantize(Decimal("0.01"))), n) for c, (v, n) in want_t.items()}
    assert got_t == want_t, (got_t, want_t)
    print("ok")


def bench(out, fmt, events, partitions=32, files=12):
    """A defect-free set of `events` transactions for the throughput bench
    (bench/formats.sh): every body in `fmt` (JSON gzipped), Avro datums by
    fastavro, Schema Registry content types as the Azure encoder sets them."""
    writers = {v: fastavro.parse_schema(schema(v)) for v in (0, 1, 2)}
    ids = {1: hashlib.sha256(json.dumps(schema(1)).encode()).hexdigest()[:32],
           2: hashlib.sha256(json.dumps(schema(2)).encode()).hexdigest()[:32]}
    if fmt == "confluent":
        ids = {1: "101", 2: "102"}
    capture = fastavro.parse_schema(CAPTURE_SCHEMA)
    per_file = -(-events // (partitions * files))
    i = 0
    for f in range(files):
        window = BASE + dt.timedelta(minutes=5 * f)
        for partition in range(partitions):
            records = []
            for k in range(per_file):
                if i >= events:
                    break
                t = transaction(i)
                system = {}
                if fmt == "json-plain":
                    body = json.dumps(as_json(t)).encode()
                elif fmt == "json":
                    body = gzip.compress(json.dumps(as_json(t)).encode(), compresslevel=6)
                else:
                    version = 0 if fmt == "avro" else producer_version(i)
                    buf = io.BytesIO()
                    fastavro.schemaless_writer(buf, writers[version], as_written(t, version))
                    body = buf.getvalue()
                    if fmt == "avro-schema-registry":
                        system["content-type"] = f"avro/binary+{ids[version]}"
                    elif fmt == "confluent":
                        body = b"\x00" + struct.pack(">I", int(ids[version])) + body
                seq = f * per_file + k
                records.append({"SequenceNumber": seq, "Offset": str(seq), "EnqueuedTimeUtc": capture_time(window),
                                "SystemProperties": system, "Properties": {}, "Body": body})
                i += 1
            folder = os.path.join(out, "capture", str(partition), *(f"{x:02d}" for x in (window.year, window.month, window.day, window.hour, window.minute)))
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, "00.avro"), "wb") as fh:
                fastavro.writer(fh, capture, records, codec="deflate")
    os.makedirs(os.path.join(out, "schemas", "writers"), exist_ok=True)
    with open(os.path.join(out, "schemas", "transaction.avsc"), "w") as fh:
        json.dump(schema(0), fh, indent=1)
    if fmt in ("avro-schema-registry", "confluent"):
        for v, schema_id in ids.items():
            with open(os.path.join(out, "schemas", "writers", f"{schema_id}.avsc"), "w") as fh:
                json.dump(schema(v), fh, indent=1)
    body = {"json": "  compression: gzip\n", "json-plain": "", "avro": ""}.get(fmt, "  writer_schemas: schemas/writers\n")
    text = PIPELINE.format(format="json" if fmt == "json-plain" else fmt, body=body)
    text = text[: text.index("curate:")]
    with open(os.path.join(out, "pipeline.yaml"), "w") as fh:
        fh.write(text)


REFUND = {
    "type": "record",
    "name": "Refund",
    "namespace": "com.example.payments",
    "fields": [
        {"name": "refundId", "type": "string"},
        {"name": "transactionId", "type": "string"},
        {"name": "amount", "type": DECIMAL},
        {"name": "occurredAt", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    ],
}

ROUTED = """name: payments
source:
  capture:
    url: capture
body:
  format: confluent
  writer_schemas: writers
tables:
  raw: {path: lake/raw}
  quarantine: {path: lake/quarantine}
process:
  routes:
    by: {property: eventType}
    types:
      - name: payment
        when: [Payment]
        schema: schemas/transaction.avsc
        table: {path: lake/payments}
        event_time: occurredAt
        pii:
          rules:
            - {column: cardNumber, action: drop}
            - {column: accountId, action: hash}
        dedup: {key: [transactionId]}
      - name: refund
        when: [Refund]
        schema: schemas/refund.avsc
        table: {path: lake/refunds}
        event_time: occurredAt
        dedup: {key: [refundId]}
"""


def generate_routed(out):
    """Two event types in Confluent bodies on one hub, routed by the
    application property eventType: payments (two producer versions) and
    refunds, plus a type no route takes and a refund tagged as a payment."""
    expected = {"payments": [], "refunds": [], "quarantine": {}}
    records, seq = [], 0

    def add(body, event_type):
        nonlocal seq
        props = {"eventType": event_type} if event_type else {}
        records.append({"SequenceNumber": seq, "Offset": str(seq), "EnqueuedTimeUtc": capture_time(BASE),
                        "SystemProperties": {}, "Properties": props, "Body": body})
        seq += 1
        return f"0/{seq - 1}"

    def confluent(schema_id, writer, value):
        return b"\x00" + struct.pack(">I", schema_id) + datum(writer, value)

    for i in range(20):
        t = transaction(i)
        if t["amount"] < 0:
            continue
        v = producer_version(i)
        add(confluent(100 + v, schema(v), as_written(t, v)), "Payment")
        expected["payments"].append(t["transactionId"])
        if i % 4 == 0:
            refund = {"refundId": f"r{i:04d}", "transactionId": t["transactionId"], "amount": t["amount"],
                      "occurredAt": t["occurredAt"]}
            add(confluent(201, REFUND, refund), "Refund")
            expected["refunds"].append(refund["refundId"])
    # Re-sent: the first payment and refund again.
    add(records[0]["Body"], "Payment")
    add(records[1]["Body"], "Refund")
    key = add(confluent(101, schema(1), as_written(transaction(100), 1)), "Chargeback")
    expected["quarantine"][key] = 'eventType "Chargeback" matches no route'
    key = add(confluent(101, schema(1), as_written(transaction(101), 1)), "Refund")
    expected["quarantine"][key] = "schema id 101 is a writer schema this route's schema does not read"
    key = add(confluent(201, REFUND, {"refundId": "rx", "transactionId": "t", "amount": Decimal("1.00"), "occurredAt": BASE}), None)
    expected["quarantine"][key] = "the event has no property eventType"

    folder = os.path.join(out, "capture", "0", *(f"{x:02d}" for x in (BASE.year, BASE.month, BASE.day, BASE.hour, BASE.minute)))
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "00.avro"), "wb") as fh:
        fastavro.writer(fh, fastavro.parse_schema(CAPTURE_SCHEMA), records, codec="deflate")
    os.makedirs(os.path.join(out, "schemas"), exist_ok=True)
    os.makedirs(os.path.join(out, "writers"), exist_ok=True)
    for name, sch in (("schemas/transaction.avsc", schema(0)), ("schemas/refund.avsc", REFUND),
                      ("writers/101.avsc", schema(1)), ("writers/102.avsc", schema(2)), ("writers/201.avsc", REFUND)):
        with open(os.path.join(out, name), "w") as fh:
            json.dump(sch, fh, indent=1)
    with open(os.path.join(out, "pipeline.yaml"), "w") as fh:
        fh.write(ROUTED)
    with open(os.path.join(out, "expected.json"), "w") as fh:
        json.dump(expected, fh, indent=1)


def check_routed(out):
    """Each type exactly once in its route's table; the rest in quarantine with the reason."""
    from deltalake import DeltaTable

    with open(os.path.join(out, "expected.json")) as fh:
        expected = json.load(fh)
    lake = os.path.join(out, "lake")
    payments = DeltaTable(os.path.join(lake, "payments")).to_pyarrow_table().to_pylist()
    assert sorted(r["transactionId"] for r in payments) == sorted(expected["payments"]), payments
    by_id = {r["transactionId"]: r for r in payments}
    for tid in expected["payments"]:
        i = int(tid[1:])
        t = transaction(i)
        assert str(by_id[tid]["amount"]) == str(t["amount"]), (tid, by_id[tid]["amount"])
        assert by_id[tid]["channel"] == ("web" if producer_version(i) == 1 else t["channel"])
    refunds = DeltaTable(os.path.join(lake, "refunds")).to_pyarrow_table().to_pylist()
    assert sorted(r["refundId"] for r in refunds) == sorted(expected["refunds"]), refunds
    quarantine = DeltaTable(os.path.join(lake, "quarantine")).to_pyarrow_table().to_pylist()
    got = {f"{r['_partition_id']}/{r['_sequence_number']}": r["reason"] for r in quarantine}
    assert sorted(got) == sorted(expected["quarantine"]), got
    for key, reason in expected["quarantine"].items():
        assert reason in got[key], (key, got[key], reason)
    print("ok")


def check_erased(out, account):
    """After `weir erase --subject accountId=ACCOUNT`: every row of the
    account is gone from raw, processed and quarantine, bodies that could
    not be decoded included, and no other row is."""
    from deltalake import DeltaTable

    with open(os.path.join(out, "expected.json")) as fh:
        expected = json.load(fh)
    lake = os.path.join(out, "lake")
    kept = {k for k, a in expected["accounts"].items() if a != account}
    assert len(kept) < len(expected["accounts"]), "the account has events"

    raw = DeltaTable(os.path.join(lake, "raw")).to_pyarrow_table(columns=["partition_id", "sequence_number"])
    got = {f"{p}/{s}" for p, s in zip(raw.column("partition_id").to_pylist(), raw.column("sequence_number").to_pylist())}
    assert got == kept, (sorted(got - kept), sorted(kept - got))

    processed = DeltaTable(os.path.join(lake, "processed")).to_pyarrow_table().to_pylist()
    want = {tid for tid, t in expected["processed"].items() if t["accountId"] != account}
    assert {r["transactionId"] for r in processed} == want
    assert hashed(account) not in {r["accountId"] for r in processed}

    quarantine = DeltaTable(os.path.join(lake, "quarantine")).to_pyarrow_table().to_pylist()
    got_q = {f"{r['_partition_id']}/{r['_sequence_number']}" for r in quarantine}
    want_q = {k for k in expected["quarantine"] if expected["accounts"][k] != account}
    assert got_q == want_q, (sorted(got_q - want_q), sorted(want_q - got_q))
    print("ok")


if __name__ == "__main__":
    if sys.argv[1] == "generate":
        generate(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "generate-routed":
        generate_routed(sys.argv[2])
    elif sys.argv[1] == "check-routed":
        check_routed(sys.argv[2])
    elif sys.argv[1] == "bench":
        bench(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif sys.argv[1] == "check-erased":
        check_erased(sys.argv[2], sys.argv[3])
    else:
        check(sys.argv[2])
    # The readers' native thread pools can abort the interpreter's teardown
    # ("terminate called without an active exception"): leave without it.
    sys.stdout.flush()
    os._exit(0)
