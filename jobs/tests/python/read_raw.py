"""Reads a Weir raw table with the Python `deltalake` package, as a consumer
would, and checks it against what the Rust side expects.

usage: read_raw.py TABLE_PATH EXPECTED_JSON
EXPECTED_JSON: {"pipeline": str, "last_sequence": {partition: int}}
Prints "ok" and exits 0, or raises.
"""
import json
import os
import sys
from collections import Counter

import pyarrow as pa
from deltalake import DeltaTable


def main() -> None:
    path, expected = sys.argv[1], json.loads(sys.argv[2])
    table = DeltaTable(path)

    protocol = table.protocol()
    assert protocol.min_reader_version == 1, protocol  # readable by every Spark
    config = table.metadata().configuration
    assert config.get("delta.enableChangeDataFeed") == "true", config
    assert table.metadata().partition_columns == ["enqueued_date"]

    data = table.to_pyarrow_table()
    schema = data.schema
    assert schema.field("enqueued_time").type == pa.timestamp("us", tz="UTC"), schema
    assert schema.field("ingested_at").type == pa.timestamp("us", tz="UTC"), schema
    assert schema.field("enqueued_date").type == pa.date32(), schema
    assert schema.field("properties").type == pa.map_(pa.string(), pa.string()), schema
    assert schema.field("body").type == pa.binary(), schema

    keys = Counter(zip(data.column("partition_id").to_pylist(), data.column("sequence_number").to_pylist()))
    want = Counter(
        (p, s) for p, last in expected["last_sequence"].items() for s in range(last + 1)
    )
    assert keys == want, f"multiset differs: missing {list((want - keys).items())[:5]}, extra {list((keys - want).items())[:5]}"

    for p, last in expected["last_sequence"].items():
        app_id = f"weir/{expected['pipeline']}/ingest/{p}"
        assert table.transaction_version(app_id) == last, (app_id, table.transaction_version(app_id))

    # Enqueue dates agree with enqueue times, in UTC.
    for t, d in zip(data.column("enqueued_time").to_pylist(), data.column("enqueued_date").to_pylist()):
        assert t.date() == d, (t, d)

    cdf = table.load_cdf(starting_version=0).read_all()
    change_types = Counter(cdf.column("_change_type").to_pylist())
    assert change_types == {"insert": data.num_rows}, change_types
    print("ok")


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    # deltalake's runtime can abort while the interpreter shuts down after
    # load_cdf; the checks are done, so leave without running finalizers.
    os._exit(0)
