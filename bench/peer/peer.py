"""The job a data engineer writes instead of Weir, for the side-by-side
benchmark: fastavro -> polars -> deltalake, the same steps as `weir run`
plus maintain on the same capture files.

1. raw: every capture file decoded with fastavro into a polars frame and
   appended to a raw Delta table (lineage columns, body as binary);
2. process: bodies parsed as JSON (polars), the example's checks (ids and
   time present, currency in EUR/USD/GBP, amount not negative, purchases
   priced), failures to a quarantine table, email hashed (HMAC-SHA256) and
   IP masked, duplicates dropped on eventId (an insert-only merge into
   processed, partitioned by event date);
3. curate: the daily per-user aggregate, written as a table;
4. maintain: optimize (compact) and vacuum the three tables.

usage: peer.py CAPTURE_DIR LAKE_DIR     prints one JSON line of counts
"""
import glob
import hashlib
import hmac
import json
import os
import sys

import fastavro
import polars as pl
from deltalake import DeltaTable, write_deltalake

KEY = os.environ.get("WEIR_PII_KEY", "bench-key-not-a-secret-0123456789").encode()


def read_capture(root: str) -> pl.DataFrame:
    rows = []
    files = sorted(glob.glob(os.path.join(root, "*", "*", "*", "*", "*", "*", "*.avro")))
    for path in files:
        partition = os.path.relpath(path, root).split(os.sep)[0]
        with open(path, "rb") as f:
            for r in fastavro.reader(f):
                rows.append(
                    {
                        "partition_id": partition,
                        "sequence_number": r["SequenceNumber"],
                        "offset": r["Offset"],
                        "enqueued_time": r["EnqueuedTimeUtc"],
                        "body": r["Body"],
                        "source_file": os.path.relpath(path, root),
                    }
                )
    df = pl.DataFrame(rows, schema={"partition_id": pl.Utf8, "sequence_number": pl.Int64, "offset": pl.Utf8,
                                    "enqueued_time": pl.Utf8, "body": pl.Binary, "source_file": pl.Utf8})
    return df.with_columns(
        pl.col("enqueued_time").str.to_datetime("%m/%d/%Y %I:%M:%S %p", time_unit="us", time_zone="UTC", strict=False)
    ).with_columns(pl.col("enqueued_time").dt.date().alias("enqueued_date"))


BODY = pl.Struct({
    "eventId": pl.Utf8, "eventName": pl.Utf8, "eventTimestamp": pl.Utf8, "userId": pl.Utf8,
    "sessionId": pl.Utf8, "email": pl.Utf8, "ipAddress": pl.Utf8, "amount": pl.Utf8, "currency": pl.Utf8,
})


def hmac_hex(v):
    return None if v is None else hmac.new(KEY, v.encode(), hashlib.sha256).hexdigest()


def main() -> None:
    capture, lake = sys.argv[1], sys.argv[2]
    raw = read_capture(capture)
    write_deltalake(os.path.join(lake, "raw"), raw, mode="append", partition_by=["enqueued_date"],
                    configuration={"delta.enableChangeDataFeed": "true"})

    # Parse: a body that is not a JSON object is quarantined.
    fields = list(BODY.to_schema().keys())
    decoded = []
    for body in raw["body"].to_list():
        try:
            e = json.loads(body)
            decoded.append({k: (None if e.get(k) is None else str(e.get(k))) for k in fields} if isinstance(e, dict) else None)
        except (ValueError, TypeError):
            decoded.append(None)
    parsed = raw.with_columns(pl.Series("e", decoded, dtype=BODY))
    bad_json = parsed.filter(pl.col("e").is_null())
    events = parsed.filter(pl.col("e").is_not_null()).unnest("e")
    events = events.with_columns(
        pl.col("eventTimestamp").str.to_datetime(time_unit="us", time_zone="UTC", strict=False),
        pl.col("amount").cast(pl.Decimal(18, 2), strict=False),
    )
    ok = (
        pl.col("eventId").is_not_null() & pl.col("userId").is_not_null() & pl.col("eventTimestamp").is_not_null()
        & (pl.col("currency").is_null() | pl.col("currency").is_in(["EUR", "USD", "GBP"]))
        & (pl.col("amount").is_null() | (pl.col("amount") >= 0))
        & ((pl.col("eventName") != "purchase") | (pl.col("amount").is_not_null() & pl.col("currency").is_not_null()))
        & (pl.col("eventTimestamp") >= pl.col("enqueued_time") - pl.duration(days=7))
        & (pl.col("eventTimestamp") <= pl.col("enqueued_time") + pl.duration(hours=1))
    )
    good = events.filter(ok)
    failed = events.filter(~ok | ok.is_null())
    quarantine = pl.concat([
        bad_json.select("partition_id", "sequence_number", "enqueued_date", "body").with_columns(pl.lit("schema").alias("reason")),
        failed.select("partition_id", "sequence_number", "enqueued_date", "body").with_columns(pl.lit("rule").alias("reason")),
    ])
    write_deltalake(os.path.join(lake, "quarantine"), quarantine, mode="append", partition_by=["enqueued_date"],
                    configuration={"delta.enableChangeDataFeed": "true"})

    # PII, then dedup: first copy per eventId, then an insert-only merge.
    good = good.with_columns(
        pl.col("email").map_elements(hmac_hex, return_dtype=pl.Utf8),
        pl.col("ipAddress").str.replace(r"\.\d+$", ".0"),
        pl.col("eventTimestamp").dt.date().alias("event_date"),
    ).sort("enqueued_time").unique(subset=["eventId"], keep="first", maintain_order=True)
    processed = good.select("eventId", "eventName", "eventTimestamp", "userId", "sessionId", "email", "ipAddress",
                            "amount", "currency", "partition_id", "sequence_number", "enqueued_time", "event_date")
    path = os.path.join(lake, "processed")
    write_deltalake(path, processed.head(0), mode="append", partition_by=["event_date"],
                    configuration={"delta.enableChangeDataFeed": "true"})
    (
        DeltaTable(path).merge(processed.to_arrow(), predicate="t.eventId = s.eventId", source_alias="s", target_alias="t")
        .when_not_matched_insert_all()
        .execute()
    )

    # Curate: daily activity per user.
    daily = (
        pl.read_delta(path).group_by("userId", "event_date").agg(
            pl.len().alias("events"), pl.col("sessionId").n_unique().alias("sessions"),
            (pl.col("eventName") == "purchase").sum().alias("purchases"),
            pl.col("amount").filter(pl.col("currency") == "EUR").sum().alias("amount_eur"),
            pl.col("amount").filter(pl.col("currency") == "USD").sum().alias("amount_usd"),
            pl.col("amount").filter(pl.col("currency") == "GBP").sum().alias("amount_gbp"),
        )
    )
    write_deltalake(os.path.join(lake, "curated_daily"), daily, mode="overwrite")

    # Maintain.
    for t in ("raw", "processed", "quarantine"):
        dt = DeltaTable(os.path.join(lake, t))
        dt.optimize.compact()
        dt.vacuum(retention_hours=168, dry_run=False, enforce_retention_duration=True)
    print(json.dumps({"raw": raw.height, "processed": processed.height, "quarantined": quarantine.height,
                      "daily": daily.height}))


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    os._exit(0)
