"""eventID Bloom filters: the hash is frozen (filters live in commits), there are no false negatives, the
false-positive rate is what the sizing promises, and a point lookup reads only the segments that may hold it."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
from hypothesis import given, settings, strategies as st

import lake
from lake import bloom
from lake.query import run


def test_hash_is_frozen():
    # Changing these values makes every stored filter wrong: never change the hash, add a new one instead.
    assert [int(x) for x in bloom.hash_strings(["a", "00000000-0000-0000-0000-000000000001", "éventID"])] == \
        [17360999193197444373, 15390906585495066154, 14838477326092092559]
    assert bloom.build(pa.array(["a", "b", "c"])).hex() == "061c01224788604182"


def test_legacy_filters_without_probe_byte_still_answer():
    # the first format: no header byte, 4 probes (lakes written before the sizing changed)
    keys = [str(uuid.uuid4()) for _ in range(300)]
    h = np.unique(bloom.hash_strings(keys))
    m = 64 * 60
    bits = np.zeros(m, dtype=bool)
    bits[bloom._positions(h, np.full(len(h), m), bloom.LEGACY_PROBES).ravel()] = True
    legacy = np.packbits(bits, bitorder="little").tobytes()
    f = pa.array([legacy, bloom.build(pa.array(keys))], pa.binary())
    assert all(bloom.may_contain(f, [k]).tolist() == [True, True] for k in keys)


def test_hash_batch_equals_single_and_skips_nulls():
    ids = [str(uuid.uuid4()) for _ in range(500)] + ["", "x" * 5000]
    batch = bloom.hash_strings(pa.array(ids + [None]))
    assert len(batch) == len(ids)
    assert all(bloom.hash_strings([v])[0] == batch[i] for i, v in enumerate(ids))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(min_size=0, max_size=40), min_size=1, max_size=300, unique=True))
def test_no_false_negatives(keys):
    f = pa.array([bloom.build(pa.array(keys)), None], pa.binary())
    for k in keys[:50]:
        assert bloom.may_contain(f, [k]).tolist() == [True, True]  # a missing filter always means "maybe"


def test_false_positive_rate():
    filters = pa.array([bloom.build(pa.array([str(uuid.uuid4()) for _ in range(5000)])) for _ in range(20)])
    probes = [str(uuid.uuid4()) for _ in range(1000)]
    rate = np.mean([bloom.may_contain(filters, [p]).mean() for p in probes])
    assert rate < 0.003  # 16 bits per key, 6 probes: ~0.1%


def test_point_lookup_reads_one_segment(tmp_path):
    lk = lake.connect(str(tmp_path))
    st_ = lk.create_store("pts", retention_days=3653)
    t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
    recs = [{"eventVersion": "1.08", "eventID": str(uuid.UUID(int=i)), "eventName": "GetObject",
             "eventSource": "s3.amazonaws.com", "recipientAccountId": "111111111111", "awsRegion": "us-east-1",
             "eventTime": (t0 + timedelta(hours=i)).strftime("%Y-%m-%dT%H:%M:%SZ")} for i in range(24 * 40)]
    st_.append(recs, source="import")
    target = str(uuid.UUID(int=500))
    r = run(lk, f"SELECT eventname, eventtime FROM pts WHERE eventid = '{target}'")
    assert r.df.height == 1 and r.df["eventtime"][0] == t0 + timedelta(hours=500)
    assert r.scans[0].segments <= 2 and r.scans[0].segments + r.scans[0].segments_skipped == 40
    r = run(lk, f"SELECT count(*) AS n FROM pts WHERE eventid IN ('{target}', '{uuid.UUID(int=7)}', 'nope')")
    assert r.df["n"][0] == 2 and r.scans[0].segments <= 4
