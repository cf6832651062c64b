"""Segments: the row order (partitions, then row groups cut in eventtime order, then (source, name, region,
time)) and how scans read segments written with another schema."""

from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lake import segments
from lake.schema import EVENT_SCHEMA

from conftest import sample_records


def _keys(n: int, seed: int = 1) -> tuple[pa.Array, pa.Array, dict[str, pa.Array]]:
    rng = np.random.default_rng(seed)
    base = datetime(2025, 1, 1, tzinfo=timezone.utc)
    micros = rng.integers(0, 2 * 86_400 * 10**6, n)
    times = pa.array([base + timedelta(microseconds=int(m)) for m in micros], pa.timestamp("us", tz="UTC"))
    account = pa.array(rng.choice(["111111111111", "222222222222"], n))
    keys = {"eventsource": pa.array(rng.choice(["s3.amazonaws.com", "ec2.amazonaws.com", None], n)),
            "eventname": pa.array(rng.choice(["GetObject", "PutObject", "RunInstances"], n)),
            "awsregion": pa.array(rng.choice(["us-east-1", "eu-west-1"], n))}
    return account, times, keys


def test_small_partitions_are_ordered_by_source_name_region_time():
    account, times, keys = _keys(5_000)
    order = segments.row_order(account, times, keys)
    assert sorted(order.tolist()) == list(range(5_000))
    rows = list(zip(account.take(order).to_pylist(), times.take(order).cast(pa.date32()).to_pylist(),
                    *(keys[k].take(order).to_pylist() for k in ("eventsource", "eventname", "awsregion")),
                    times.take(order).to_pylist()))
    def key(r):  # nulls last, as Arrow sorts them
        return tuple((v is None, v) for v in r)
    assert rows == sorted(rows, key=key)


def test_row_groups_of_a_large_partition_cover_consecutive_time_spans():
    n = segments.ROW_GROUP_ROWS * 2 + 1_000
    _, _, keys = _keys(n, seed=2)
    times = pa.array([datetime(2025, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=i * 7919 % (86_400 * 10**6))
                      for i in range(n)], pa.timestamp("us", tz="UTC"))  # one day: one partition
    account = pa.array(["111111111111"] * n)
    order = segments.row_order(account, times, keys)
    t = times.take(order).to_numpy(zero_copy_only=False)
    groups = [t[i:i + segments.ROW_GROUP_ROWS] for i in range(0, n, segments.ROW_GROUP_ROWS)]
    assert len(groups) == 3
    for a, b in zip(groups, groups[1:]):
        assert a.max() <= b.min()  # time-pruning by row-group statistics still works
    first = keys["eventsource"].take(order[:segments.ROW_GROUP_ROWS]).to_pylist()
    assert first == sorted(first, key=lambda v: (v is None, v))  # sorted by source inside the group


def test_written_segments_are_in_segment_order_and_smaller_than_time_order():
    table = _table(sample_records(3_000, seed=5, days=1, accounts=1))
    parts = segments.split_partitions(table)
    assert sum(p[2].num_rows for p in parts) == table.num_rows
    for _, _, rows in parts:
        assert segments.in_segment_order(rows)
    rows = max((p[2] for p in parts), key=lambda t: t.num_rows)
    by_time = rows.sort_by("eventtime")
    assert len(segments.encode(rows, 1)) < len(segments.encode(by_time, 1))
    back = pq.read_table(io.BytesIO(segments.encode(rows, 1)))
    assert back.num_rows == rows.num_rows


def _table(records: list[dict]) -> pa.Table:
    from lake import events
    return events.convert(records).table.cast(EVENT_SCHEMA)


def test_scans_read_segments_of_an_older_or_newer_schema(tmp_path):
    """Scans give polars the event schema instead of inferring it: a segment without a column (written
    before it existed) reads it as NULL, and a column unknown to this version is ignored."""
    import lake

    table = _table(sample_records(20, seed=6, days=1, accounts=1))
    old = table.drop_columns(["sessioncontext_mfaauthenticated"]).append_column("futurecolumn",
                                                                             pa.array(["x"] * table.num_rows))
    pq.write_table(old, tmp_path / "old.parquet")
    pq.write_table(table, tmp_path / "new.parquet")
    st = lake.connect(str(tmp_path / "lake")).create_store("schemas", retention_days=3653)
    df = st.scan_files([str(tmp_path / "old.parquet"), str(tmp_path / "new.parquet")]).collect()
    assert df.height == 2 * table.num_rows and "futurecolumn" not in df.columns
    assert df["sessioncontext_mfaauthenticated"][:table.num_rows].null_count() == table.num_rows
    assert df["sessioncontext_mfaauthenticated"][table.num_rows:].to_list() == \
        table.column("sessioncontext_mfaauthenticated").to_pylist()


def test_a_subset_of_a_large_ordered_partition_is_put_back_in_order(tmp_path):
    """Retention and dedupe rewrite a segment from a subset of its rows: when the rows spanned more than one
    row group that subset is no longer in segment order (row-group time spans shift); `ordered` restores it,
    and retention does so."""
    import lake
    from lake import maintenance

    recs = sample_records(3_000, seed=7, days=1, accounts=1)
    day = min(r["eventTime"] for r in recs)[:10]
    recs = [r for r in recs if r["eventTime"].startswith(day)]
    copies = [{**r, "eventID": f"{r['eventID']}-{i}"}  # one partition, more than one row group
              for i in range(segments.ROW_GROUP_ROWS // len(recs) + 2) for r in recs]
    big = segments.ordered(_table(copies))
    assert big.num_rows > segments.ROW_GROUP_ROWS and segments.in_segment_order(big)
    oldest = np.argsort(big.column("eventtime").to_numpy(zero_copy_only=False), kind="stable")[:5_000]
    keep = np.ones(big.num_rows, dtype=bool)
    keep[oldest] = False  # what retention removes: the oldest rows
    subset = big.filter(pa.array(keep))
    assert not segments.in_segment_order(subset)
    again = segments.ordered(subset)
    assert again.num_rows == subset.num_rows and segments.in_segment_order(again)
    assert sorted(again.column("eventid").to_pylist()) == sorted(subset.column("eventid").to_pylist())

    st = lake.connect(str(tmp_path / "lake")).create_store("big-partition", retention_days=7)
    st.append(copies, source="import")
    assert len(st.snapshot().entries()) == 1
    cutoff = big.column("eventtime")[int(oldest[-1])].as_py()
    rep = maintenance.retention(st, now=cutoff + timedelta(days=7, microseconds=1), dry_run=False)
    assert rep["segments_rewritten"] == 1 and rep["events_removed"] >= 5_000
    (entry,) = st.snapshot().entries()
    kept = segments.read_segment(st.lake.storage, st.prefix, entry["path"])
    assert kept.num_rows == big.num_rows - rep["events_removed"] and segments.in_segment_order(kept)


def test_both_import_converters_deliver_rows_in_segment_order():
    """convert_raw orders rows while its columns are cheap to permute, so that split_partitions finds them in
    order and copies nothing: the C scanner and the pure-Python fast path alike."""
    import random

    import orjson

    from lake import events, recordscan

    recs = sample_records(2_000, seed=8, days=2, accounts=2)
    random.Random(8).shuffle(recs)
    raws = [orjson.dumps(r) for r in recs]
    for scanner in (False, True) if recordscan.available() else (False,):
        table = events.convert_raw(raws, scanner=scanner).table
        assert table.num_rows == len(recs) and segments.in_segment_order(table.cast(EVENT_SCHEMA)), scanner
