"""Reads a Weir lake after `weir erase` with `polars` and `deltalake`, the way
an auditor or the ML team does.

usage: read_erasure.py LAKE_DIR EXPECTED_JSON
EXPECTED_JSON: {"users": [str], "key": str, "tables": [str], "processed_version": int}
Checks: the erasure log holds one row per user and table, the subject only as
HMAC-SHA256(key, value) in hex; no table holds the users; processed's change
feed shows the erased rows as deletes. Prints "ok" and exits 0, or raises.
"""
import hashlib
import hmac
import json
import os
import sys

import polars as pl
from deltalake import DeltaTable


def main() -> None:
    lake, expected = sys.argv[1], json.loads(sys.argv[2])
    users, key = expected["users"], expected["key"].encode()

    log = pl.read_delta(os.path.join(lake, "audit/erasure_log"))
    assert log.schema["requested_at"] == pl.Datetime("us", "UTC"), log.schema
    assert log.schema["unreadable_after"] == pl.Datetime("us", "UTC"), log.schema
    assert log.height == len(users) * len(expected["tables"]), log
    assert sorted(log["table_name"].unique().to_list()) == sorted(expected["tables"]), log
    hashes = {hmac.new(key, u.encode(), hashlib.sha256).hexdigest() for u in users}
    assert set(log["subject_hash"].to_list()) == hashes, (log["subject_hash"].to_list(), hashes)
    assert log.filter(pl.col("table_name") == "raw")["rows_deleted"].min() > 0, log
    for column in log.columns:
        values = log[column].cast(pl.Utf8).to_list()
        assert not any(v in users for v in values), column

    for table in ("processed", "curated/user_daily_activity", "curated/user_features"):
        df = pl.read_delta(os.path.join(lake, table))
        assert df.height > 0 and df.filter(pl.col("userId").is_in(users)).height == 0, table
    raw = pl.read_delta(os.path.join(lake, "raw"))
    assert raw.filter(pl.col("subject_userId").is_in(users)).height == 0

    # The change feed: the erase shows as deletes of exactly those users.
    feed = pl.DataFrame(
        DeltaTable(os.path.join(lake, "processed")).load_cdf(starting_version=expected["processed_version"]).read_all()
    )
    deletes = feed.filter(pl.col("_change_type") == "delete")
    assert deletes.height > 0 and set(deletes["userId"].to_list()) == set(users), deletes
    print("ok")


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    os._exit(0)
