"""Reads a Weir lake's curated tables and their change feed with `polars` and
`deltalake`, the way the ML team does, and checks every value against an
independent recomputation from the processed table.

usage: read_curated.py LAKE_DIR EXPECTED_JSON
EXPECTED_JSON: {"from_version": int, "inserted": int, "updated": int,
                "deleted": int, "changes_jsonl": path, "changes_parquet": path}
Prints "ok" and exits 0, or raises.
"""
import json
import os
import sys
from datetime import datetime, timezone

import polars as pl
from deltalake import DeltaTable
from polars.testing import assert_frame_equal

UTC_US = pl.Datetime("us", "UTC")
MONEY = pl.Decimal(28, 2)


def spend(currency: str, when=None) -> pl.Expr:
    cond = pl.col("currency") == currency
    if when is not None:
        cond = cond & when
    return pl.col("amount").filter(cond).sum().cast(MONEY)


def check_daily(lake: str, processed: pl.DataFrame) -> None:
    daily = pl.read_delta(os.path.join(lake, "curated/user_daily_activity"))
    for column in ("first_event_at", "last_event_at"):
        assert daily.schema[column] == UTC_US, daily.schema
    for column in ("amount_eur", "amount_usd", "amount_gbp"):
        assert daily.schema[column] == MONEY, daily.schema
    assert daily.schema["date"] == pl.Date, daily.schema
    expected = (
        processed.group_by("userId", "event_date")
        .agg(
            pl.len().cast(pl.Int64).alias("events"),
            pl.col("sessionId").drop_nulls().n_unique().cast(pl.Int64).alias("sessions"),
            (pl.col("eventName") == "purchase").sum().cast(pl.Int64).alias("purchases"),
            spend("EUR").alias("amount_eur"),
            spend("USD").alias("amount_usd"),
            spend("GBP").alias("amount_gbp"),
            pl.col("eventTimestamp").min().alias("first_event_at"),
            pl.col("eventTimestamp").max().alias("last_event_at"),
        )
        .rename({"event_date": "date"})
    )
    keys = ["userId", "date"]
    assert_frame_equal(daily.sort(keys), expected.select(daily.columns).sort(keys))
    assert daily.height > 100, daily.height


def check_features(lake: str, processed: pl.DataFrame) -> None:
    features = pl.read_delta(os.path.join(lake, "curated/user_features"))
    assert features.schema["as_of"] == UTC_US and features.schema["last_active_at"] == UTC_US, features.schema
    assert features.schema["total_spend_eur"] == MONEY, features.schema
    # A row at each midnight where a day enters the history or leaves a window.
    active = processed.select("userId", "event_date").unique()
    boundaries = pl.concat(
        [active.select("userId", (pl.col("event_date") + pl.duration(days=n)).alias("d")) for n in (1, 8, 31)]
    ).unique()
    got_keys = features.select("userId", pl.col("as_of").dt.date().alias("d"))
    assert_frame_equal(got_keys.sort("userId", "d"), boundaries.sort("userId", "d"))
    assert (features["as_of"].dt.time() == datetime.min.time()).all()

    # Each row from the events strictly before its as_of.
    j = (
        features.select("userId", "as_of")
        .with_columns(pl.col("as_of").dt.date().alias("d"))
        .join(processed, on="userId")
        .filter(pl.col("event_date") < pl.col("d"))
    )
    in_7 = pl.col("event_date") >= pl.col("d") - pl.duration(days=7)
    in_30 = pl.col("event_date") >= pl.col("d") - pl.duration(days=30)
    expected = j.group_by("userId", "as_of").agg(
        in_7.sum().cast(pl.Int64).alias("events_7d"),
        in_30.sum().cast(pl.Int64).alias("events_30d"),
        pl.col("sessionId").filter(in_7).drop_nulls().n_unique().cast(pl.Int64).alias("sessions_7d"),
        pl.col("sessionId").filter(in_30).drop_nulls().n_unique().cast(pl.Int64).alias("sessions_30d"),
        ((pl.col("eventName") == "purchase") & in_30).sum().cast(pl.Int64).alias("purchases_30d"),
        pl.col("eventTimestamp").max().alias("last_active_at"),
        spend("EUR").alias("total_spend_eur"),
        spend("USD").alias("total_spend_usd"),
        spend("GBP").alias("total_spend_gbp"),
    )
    keys = ["userId", "as_of"]
    assert_frame_equal(features.sort(keys), expected.select(features.columns).sort(keys))
    assert (features["last_active_at"] < features["as_of"]).all(), "no value from the future"

    # The README's three lines: current features per user.
    now = datetime(2027, 1, 1, tzinfo=timezone.utc)
    latest = features.filter(pl.col("as_of") <= now).sort("as_of").group_by("userId").last()
    assert latest.height == processed["userId"].n_unique(), latest.height
    assert (latest["events_30d"] == 0).all(), "a month later every window is empty"


def check_change_feed(lake: str, expected: dict) -> None:
    path = os.path.join(lake, "curated/user_daily_activity")
    cdf = pl.DataFrame(DeltaTable(path).load_cdf(starting_version=expected["from_version"]).read_all())
    counts = dict(cdf.group_by("_change_type").len().iter_rows())
    assert counts.get("update_preimage", 0) == expected["updated"], counts
    assert counts.get("update_postimage", 0) == expected["updated"], counts
    assert counts.get("insert", 0) == expected["inserted"], counts
    assert counts.get("delete", 0) == expected["deleted"], counts
    assert expected["updated"] > 0 and expected["inserted"] > 0, expected
    # deltalake reads the commit time as naive milliseconds; Weir writes UTC.
    assert cdf.schema["_commit_timestamp"] in (UTC_US, pl.Datetime("ms")), cdf.schema

    # Pre-images hold the stored values, post-images the new ones.
    pre = cdf.filter(pl.col("_change_type") == "update_preimage").sort("userId", "date")
    post = cdf.filter(pl.col("_change_type") == "update_postimage").sort("userId", "date")
    assert pre.select("userId", "date").equals(post.select("userId", "date"))
    assert (post["events"] >= pre["events"]).all() and (post["events"] > pre["events"]).any()

    # `weir changes` exports the same feed.
    cols = ["userId", "date", "events", "amount_eur", "_change_type", "_commit_version"]

    def norm(df: pl.DataFrame) -> pl.DataFrame:
        return df.select([pl.col(c).cast(pl.String) for c in cols]).sort(cols)

    from_parquet = pl.read_parquet(expected["changes_parquet"])
    assert from_parquet.schema["amount_eur"] == MONEY, from_parquet.schema
    assert from_parquet.schema["_commit_timestamp"] == UTC_US, from_parquet.schema
    assert_frame_equal(norm(from_parquet), norm(cdf))
    from_jsonl = pl.read_ndjson(expected["changes_jsonl"], infer_schema_length=None)
    assert_frame_equal(norm(from_jsonl), norm(cdf))
    stamp = from_jsonl["_commit_timestamp"][0]
    assert stamp.endswith("Z") or stamp.endswith("+00:00"), stamp


def main() -> None:
    lake, expected = sys.argv[1], json.loads(sys.argv[2])
    processed = pl.read_delta(os.path.join(lake, "processed"))
    check_daily(lake, processed)
    check_features(lake, processed)
    check_change_feed(lake, expected)
    print("ok")
    sys.stdout.flush()
    # deltalake's native runtime can abort at interpreter exit after load_cdf.
    os._exit(0)


if __name__ == "__main__":
    main()
