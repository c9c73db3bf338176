"""Reads a Weir lake's processed and quarantine tables with the Python
`deltalake` package, as the ML team would, and checks types and contents.

usage: read_processed.py LAKE_DIR EXPECTED_JSON
EXPECTED_JSON: {"processed": int, "quarantined": int, "duplicates": int}
Prints "ok" and exits 0, or raises.
"""
import json
import os
import re
import sys
from decimal import Decimal

import pyarrow as pa
from deltalake import DeltaTable


def main() -> None:
    lake, expected = sys.argv[1], json.loads(sys.argv[2])
    processed = DeltaTable(os.path.join(lake, "processed/user_events"))
    assert processed.protocol().min_reader_version == 1, processed.protocol()
    assert processed.metadata().configuration.get("delta.enableChangeDataFeed") == "true"
    assert processed.metadata().partition_columns == ["event_date"]
    data = processed.to_pyarrow_table()
    schema = data.schema
    assert schema.field("eventTimestamp").type == pa.timestamp("us", tz="UTC"), schema
    assert schema.field("_enqueued_time").type == pa.timestamp("us", tz="UTC"), schema
    assert schema.field("amount").type == pa.decimal128(18, 2), schema
    assert schema.field("properties").type.num_fields == 2, schema
    assert not schema.field("eventId").nullable, schema
    assert data.num_rows == expected["processed"], data.num_rows

    rows = data.to_pylist()
    ids = [r["eventId"] for r in rows]
    assert len(set(ids)) == len(ids), "eventId is unique"
    for r in rows:
        assert r["email"] is None or re.fullmatch(r"[0-9a-f]{64}", r["email"]), r["email"]
        assert r["ipAddress"] is None or r["ipAddress"].endswith(".0"), r["ipAddress"]
        assert r["event_date"] == r["eventTimestamp"].date(), r
        if r["eventName"] == "purchase":
            assert isinstance(r["amount"], Decimal) and r["amount"] >= 0, r["amount"]
            assert re.fullmatch(r"[A-Z]{3}", r["currency"]), r["currency"]

    # Inserts only, and the change feed says so.
    changes = processed.load_cdf(starting_version=0).read_all()
    kinds = set(changes.column("_change_type").to_pylist())
    assert kinds == {"insert"}, kinds
    assert changes.num_rows == expected["processed"], changes.num_rows

    quarantine = DeltaTable(os.path.join(lake, "quarantine/user_events")).to_pyarrow_table().to_pylist()
    assert len(quarantine) == expected["quarantined"], len(quarantine)
    for q in quarantine:
        assert q["rules"] == ["schema"], q["rules"]
        assert q["reason"].startswith("schema: body is not valid JSON"), q["reason"]
        assert q["_source_file"].endswith(".avro"), q
        assert isinstance(q["body"], bytes)

    # One row per processed range and rule.
    metrics = DeltaTable(os.path.join(lake, "quality/user_events")).to_pyarrow_table().to_pylist()
    failed, outcomes = {}, {}
    for m in metrics:
        assert m["rows_checked"] > 0 and m["published"], m
        failed[m["rule"]] = failed.get(m["rule"], 0) + m["rows_failed"]
        outcomes.setdefault(m["rule"], set()).add(m["outcome"])
    assert failed["schema"] == expected["quarantined"], failed
    assert failed["dedup"] == expected["duplicates"], failed
    assert "dropped" in outcomes["dedup"], outcomes
    print("ok")
    sys.stdout.flush()
    # deltalake's native runtime can abort at interpreter exit after load_cdf.
    os._exit(0)


if __name__ == "__main__":
    main()
