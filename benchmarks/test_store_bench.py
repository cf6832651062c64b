"""Store engine benchmarks (pytest-benchmark). Run: python -m pytest benchmarks -q --benchmark-only

Targets (docs/performance.md): opening a store with 100,000 segments stays well under a second because it
reads one checkpoint and at most 100 commits.
"""

from __future__ import annotations

import pytest

import lake
from lake.generate import records as sample_records
from lake.schema import STAT_COLUMNS

SEGMENTS = 100_000


def _entry(i: int) -> dict:
    return {"path": f"data/account=1/date=2024-01-01/part-bench-{i:06d}.parquet", "rows": 100, "bytes": 5000,
            "sha256": "0" * 64, "account": "1", "date": "2024-01-01",
            "eventtime_min": "2024-01-01T00:00:00.000000Z", "eventtime_max": "2024-01-01T01:00:00.000000Z",
            "stats": {c: {"min": "a", "max": "z", "values": ["a", "z"]} for c in STAT_COLUMNS}}


@pytest.fixture(scope="module")
def big_store(tmp_path_factory):
    """A store whose log references 100,000 segments (manifest only: opening never touches segments)."""
    uri = str(tmp_path_factory.mktemp("big") / "lake")
    st = lake.connect(uri).create_store("big")
    snap = st.snapshot()
    per = SEGMENTS // 100
    for v in range(1, 104):
        snap = st.log.try_commit(snap, "APPEND", add=[_entry(v * per + i) for i in range(per if v <= 100 else 1)])
    return uri


def test_open_store_with_100k_segments(benchmark, big_store):
    def open_store():
        return lake.connect(big_store).store("big").snapshot()
    snap = benchmark(open_store)
    assert snap.segments.num_rows == SEGMENTS + 3


def test_append_10k_events(benchmark, tmp_path):
    records = sample_records(10_000)
    counter = iter(range(10**6))

    def append():
        st = lake.connect(str(tmp_path / f"l{next(counter)}")).create_store("bench")
        return st.append(records, source="import")
    result = benchmark.pedantic(append, rounds=3, iterations=1)
    assert result.appended == 10_000
