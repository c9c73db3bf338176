"""The same job as peer.py, written with DuckDB instead of polars, for the
side-by-side benchmark: DuckDB's avro extension reads the capture files,
DuckDB SQL does the rest, and deltalake writes the tables.

1. raw: every capture file read with read_avro into a DuckDB table and
   appended to a raw Delta table (lineage columns, body as binary);
2. process: bodies parsed as JSON by DuckDB's json functions, the example's
   checks (ids and time present, currency in EUR/USD/GBP, amount not
   negative, purchases priced, event time within a week before and an hour
   after the enqueue time), failures to a quarantine table, email hashed
   (HMAC-SHA256, in SQL from sha256) and IP masked, duplicates dropped on
   eventId (the first copy by enqueue time, then an insert-only merge into
   processed, partitioned by event date);
3. curate: the daily per-user aggregate, written as a table;
4. maintain: optimize (compact) and vacuum the three tables.

The avro extension comes from the duckdb-extension-avro package (DuckDB's
signed build, loaded from the package's folder: no download at run time),
which is why duckdb is pinned to the release it is built for. Two known
faults of that extension are checked on every run so that the counts are
exact or say how far off they are:

- it can return NULL for a union field (the capture's Body is
  ["null", "bytes"]) at some row positions (reported against DuckDB 1.4.4
  at every 2,048th row of a file);
- it can stop early in a file of several compressed blocks (reported for
  snappy).

Each file's record count is read from its Avro block headers (no decoding)
and compared with the rows read_avro returned; every file that comes back
short or with a NULL body is read again with fastavro and its rows replaced.
The output says how many bodies came back NULL (`avro_null_bodies`), how
many rows were missing (`avro_missing_rows`) and how many files were read
again (`avro_files_reread`); a body still NULL after that is NULL in the
file and is quarantined like any body that is not a JSON object. A capture
with a codec the extension does not read (zstd) is read with fastavro
whole (`reader: fastavro`). On the benchmark's capture files (deflate,
435 and 1,303 records a file) DuckDB 1.5.5 showed neither fault, and the
bodies it read equal fastavro's byte for byte.

DuckDB's JSON reader accepts a trailing comma (`{"a": 1,}`), which Python's
json and Weir refuse; such bodies are refused here too, by a check on the
body with its string literals blanked out.

usage: duckdb_peer.py CAPTURE_DIR LAKE_DIR     prints one JSON line of counts
"""
import glob
import hashlib
import json
import os
import sys

import duckdb
import duckdb_extension_avro
import fastavro
import pyarrow as pa
from deltalake import DeltaTable, write_deltalake

KEY = os.environ.get("WEIR_PII_KEY", "bench-key-not-a-secret-0123456789").encode()
FIELDS = ["eventId", "eventName", "eventTimestamp", "userId", "sessionId", "email", "ipAddress", "amount", "currency"]
DELTA_CONFIG = {"delta.enableChangeDataFeed": "true"}
# Rows per Arrow batch handed to deltalake: bounds the memory of a write.
BATCH = 100_000


def avro_extension() -> str:
    """The avro extension's file in the duckdb-extension-avro package."""
    root = os.path.dirname(duckdb_extension_avro.__file__)
    return glob.glob(os.path.join(root, "extensions", "*", "avro.duckdb_extension"))[0]


def read_long(f) -> int:
    """One zigzag varint (an Avro long)."""
    shift = n = 0
    while True:
        b = f.read(1)
        if not b:
            raise EOFError
        n |= (b[0] & 0x7F) << shift
        shift += 7
        if b[0] < 0x80:
            return (n >> 1) ^ -(n & 1)


def container_records(path: str) -> int:
    """Records in an Avro container file, from its block headers alone."""
    with open(path, "rb") as f:
        if f.read(4) != b"Obj\x01":
            raise ValueError(f"{path}: not an Avro container")
        while (n := read_long(f)) != 0:  # the metadata map, skipped
            if n < 0:
                f.seek(read_long(f), 1)
                continue
            for _ in range(n):
                f.seek(read_long(f), 1)
                f.seek(read_long(f), 1)
        f.seek(16, 1)
        total = 0
        while True:
            try:
                count = read_long(f)
            except EOFError:
                return total
            total += count
            f.seek(read_long(f) + 16, 1)


def fastavro_rows(root: str, paths: list) -> pa.Table:
    """The raw columns of these files, read with fastavro."""
    cols = {k: [] for k in ("partition_id", "sequence_number", "offset", "enqueued_utc", "body", "source_file")}
    for path in paths:
        rel = os.path.relpath(path, root)
        with open(path, "rb") as f:
            for r in fastavro.reader(f):
                cols["partition_id"].append(rel.split(os.sep)[0])
                cols["sequence_number"].append(r["SequenceNumber"])
                cols["offset"].append(r["Offset"])
                cols["enqueued_utc"].append(r["EnqueuedTimeUtc"])
                cols["body"].append(r["Body"])
                cols["source_file"].append(rel)
    return pa.table(cols, schema=pa.schema([("partition_id", pa.string()), ("sequence_number", pa.int64()),
                                            ("offset", pa.string()), ("enqueued_utc", pa.string()),
                                            ("body", pa.binary()), ("source_file", pa.string())]))


# Raw columns from the capture fields; `src` has partition_id,
# sequence_number, offset, enqueued_utc, body and source_file.
RAW_SELECT = """
    SELECT *, enqueued_time::DATE AS enqueued_date FROM (
        SELECT partition_id, sequence_number, "offset",
               try_strptime(enqueued_utc, '%m/%d/%Y %I:%M:%S %p')::TIMESTAMPTZ AS enqueued_time,
               body, source_file
        FROM {src})
"""


def read_capture(con, root: str, files: list) -> dict:
    """Fills the table `raw`; returns what the reading found."""
    stats = {"reader": "duckdb_avro", "avro_null_bodies": 0, "avro_missing_rows": 0, "avro_files_reread": 0}
    pattern = os.path.join(root, "*", "*", "*", "*", "*", "*", "*.avro").replace("'", "''")
    rel = f"filename[{len(os.path.join(root, '')) + 1}:]"
    avro = f"""(
        SELECT split_part({rel}, '/', 1) AS partition_id, SequenceNumber AS sequence_number,
               "Offset" AS "offset", EnqueuedTimeUtc AS enqueued_utc, Body AS body, {rel} AS source_file
        FROM read_avro('{pattern}', filename = true))"""
    try:
        con.execute(f"CREATE TABLE raw AS {RAW_SELECT.format(src=avro)}")
    except duckdb.InvalidInputException:  # e.g. a codec the extension does not read
        stats["reader"] = "fastavro"
        con.register("capture_rows", fastavro_rows(root, files))
        con.execute(f"CREATE TABLE raw AS {RAW_SELECT.format(src='capture_rows')}")
        return stats

    # The extension's known faults: rows missing, or NULL bodies.
    con.register("container", pa.table({"source_file": [os.path.relpath(p, root) for p in files],
                                        "records": [container_records(p) for p in files]}))
    suspect = con.execute("""
        SELECT c.source_file, c.records - coalesce(r.n, 0), coalesce(r.null_bodies, 0)
        FROM container c LEFT JOIN (
            SELECT source_file, count(*) AS n, count(*) FILTER (WHERE body IS NULL) AS null_bodies
            FROM raw GROUP BY source_file) r USING (source_file)
        WHERE coalesce(r.n, 0) <> c.records OR r.null_bodies > 0
    """).fetchall()
    if suspect:
        # Read again with fastavro: rows it finds that read_avro did not are
        # missing rows; bodies NULL before and not after were misread.
        again = [f for f, _, _ in suspect]
        con.register("capture_rows", fastavro_rows(root, [os.path.join(root, f) for f in again]))
        con.execute("DELETE FROM raw WHERE list_contains($files, source_file)", {"files": again})
        con.execute(f"INSERT INTO raw {RAW_SELECT.format(src='capture_rows')}")
        still_null = con.execute("SELECT count(*) FROM raw WHERE body IS NULL AND list_contains($files, source_file)",
                                 {"files": again}).fetchone()[0]
        stats["avro_missing_rows"] = sum(m for _, m, _ in suspect)
        stats["avro_null_bodies"] = sum(n for _, _, n in suspect) - still_null
        stats["avro_files_reread"] = len(again)
    return stats


def hmac_sql(column: str) -> str:
    """HMAC-SHA256 of a text column, hex, as DuckDB SQL over sha256."""
    block = KEY if len(KEY) <= 64 else hashlib.sha256(KEY).digest()
    block = block.ljust(64, b"\0")
    ipad, opad = bytes(b ^ 0x36 for b in block).hex(), bytes(b ^ 0x5C for b in block).hex()
    return f"sha256(unhex('{opad}') || unhex(sha256(unhex('{ipad}') || encode({column}))))"


def main() -> None:
    capture, lake = os.path.realpath(sys.argv[1]), sys.argv[2]
    files = sorted(glob.glob(os.path.join(capture, "*", "*", "*", "*", "*", "*", "*.avro")))
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"LOAD '{avro_extension()}'")
    stats = read_capture(con, capture, files)
    raw_rows = con.sql("SELECT count(*) FROM raw").fetchone()[0]
    write_deltalake(os.path.join(lake, "raw"), con.sql("SELECT * FROM raw").to_arrow_reader(BATCH), mode="append",
                    partition_by=["enqueued_date"], configuration=DELTA_CONFIG)

    # Parse: a body that is not UTF-8 JSON holding an object fails (`f` is
    # NULL). DuckDB takes `{"a": 1,}`: a comma before a closing bracket,
    # outside the string literals, fails too. Then the checks (`ok`).
    paths = ", ".join(f"'$.{k}'" for k in FIELDS)
    con.execute(f"""
        CREATE TABLE events AS
        WITH t AS (
            SELECT rowid AS rid, partition_id, sequence_number, enqueued_time, source_file,
                   try(decode(body)) AS txt
            FROM raw),
        f AS (
            SELECT * EXCLUDE (txt),
                   CASE WHEN json_valid(txt) AND regexp_matches(txt, '^[ \\t\\n\\r]*\\{{')
                             AND NOT CASE WHEN regexp_matches(txt, ',\\s*[\\]}}]')
                                          THEN regexp_matches(regexp_replace(txt, '"(?:[^"\\\\]|\\\\.)*"', '""', 'g'),
                                                              ',\\s*[\\]}}]')
                                          ELSE false END
                        THEN json_extract_string(txt, [{paths}]) END AS f
            FROM t),
        e AS (
            SELECT * EXCLUDE (f), f IS NOT NULL AS parsed,
                   f[1] AS "eventId", f[2] AS "eventName", try_cast(f[3] AS TIMESTAMPTZ) AS "eventTimestamp",
                   f[4] AS "userId", f[5] AS "sessionId", f[6] AS email, f[7] AS "ipAddress",
                   try_cast(f[8] AS DECIMAL(18, 2)) AS amount, f[9] AS currency
            FROM f)
        SELECT *,
               "eventId" IS NOT NULL AND "userId" IS NOT NULL AND "eventTimestamp" IS NOT NULL
               AND (currency IS NULL OR currency IN ('EUR', 'USD', 'GBP'))
               AND (amount IS NULL OR amount >= 0)
               AND ("eventName" <> 'purchase' OR (amount IS NOT NULL AND currency IS NOT NULL))
               AND "eventTimestamp" >= enqueued_time - INTERVAL 7 DAY
               AND "eventTimestamp" <= enqueued_time + INTERVAL 1 HOUR AS ok
        FROM e
    """)
    quarantine = """
        SELECT r.partition_id, r.sequence_number, r.enqueued_date, r.body, q.reason
        FROM (SELECT rid, CASE WHEN parsed THEN 'rule' ELSE 'schema' END AS reason
              FROM events WHERE NOT parsed OR ok IS NOT TRUE) q
        JOIN raw r ON r.rowid = q.rid
    """
    quarantined = con.sql(f"SELECT count(*) FROM ({quarantine})").fetchone()[0]
    write_deltalake(os.path.join(lake, "quarantine"), con.sql(quarantine).to_arrow_reader(BATCH), mode="append",
                    partition_by=["enqueued_date"], configuration=DELTA_CONFIG)
    con.execute("DROP TABLE raw")

    # PII (email HMAC-SHA256, IP's last octet zeroed), then dedup: the first
    # copy per eventId by enqueue time, then an insert-only merge.
    con.execute(f"""
        CREATE TABLE processed AS
        SELECT "eventId", "eventName", "eventTimestamp", "userId", "sessionId", {hmac_sql('email')} AS email,
               regexp_replace("ipAddress", '\\.\\d+$', '.0') AS "ipAddress", amount, currency,
               partition_id, sequence_number, enqueued_time, "eventTimestamp"::DATE AS event_date
        FROM events WHERE parsed AND ok
        QUALIFY row_number() OVER (PARTITION BY "eventId" ORDER BY enqueued_time, source_file, sequence_number) = 1
    """)
    con.execute("DROP TABLE events")
    processed = con.sql("SELECT count(*) FROM processed").fetchone()[0]
    path = os.path.join(lake, "processed")
    write_deltalake(path, con.sql("SELECT * FROM processed LIMIT 0").to_arrow_table(), mode="append",
                    partition_by=["event_date"], configuration=DELTA_CONFIG)
    source = con.sql("SELECT * FROM processed").to_arrow_reader(BATCH)
    (
        DeltaTable(path).merge(source, predicate="t.eventId = s.eventId", source_alias="s", target_alias="t")
        .when_not_matched_insert_all()
        .execute()
    )
    con.execute("DROP TABLE processed")

    # Curate: daily activity per user, from the processed table as written.
    con.register("processed_delta", DeltaTable(path).to_pyarrow_dataset())
    daily = con.sql("""
        SELECT "userId", event_date, count(*) AS events, count(DISTINCT "sessionId") AS sessions,
               count(*) FILTER (WHERE "eventName" = 'purchase') AS purchases,
               coalesce(sum(amount) FILTER (WHERE currency = 'EUR'), 0) AS amount_eur,
               coalesce(sum(amount) FILTER (WHERE currency = 'USD'), 0) AS amount_usd,
               coalesce(sum(amount) FILTER (WHERE currency = 'GBP'), 0) AS amount_gbp
        FROM processed_delta GROUP BY "userId", event_date
    """).to_arrow_table()
    write_deltalake(os.path.join(lake, "curated_daily"), daily, mode="overwrite")

    # Maintain.
    for t in ("raw", "processed", "quarantine"):
        dt = DeltaTable(os.path.join(lake, t))
        dt.optimize.compact()
        dt.vacuum(retention_hours=168, dry_run=False, enforce_retention_duration=True)
    print(json.dumps({"raw": raw_rows, "processed": processed, "quarantined": quarantined, "daily": daily.num_rows,
                      **stats}))


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    os._exit(0)
