"""Synthetic data set generation throughput (pytest-benchmark). Run:

    python -m pytest benchmarks/test_datagen_bench.py -q --benchmark-only

200,000 events over one day for 3 accounts x 2 regions: about 115 records per 5-minute delivery window, close
to the ~190 of 10 M events over 30 days, so events/s extrapolates (slightly pessimistically) to 10 M.
`extra_info` records events/s, compressed and uncompressed MB/s and the 10 M extrapolation in seconds.
`target=ram` writes to /dev/shm and so measures generation alone; `target=disk` adds the file system, which
on a busy shared VM can dominate (every 5-minute window is a file).
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from datetime import datetime, timezone

import pytest

from lake.datagen import generate_dataset

EVENTS = 200_000
END = datetime(2024, 6, 3, tzinfo=timezone.utc)


@pytest.mark.parametrize("target", ["disk", "ram"])
@pytest.mark.parametrize("workers", [1, os.cpu_count() or 1], ids=lambda w: f"workers={w}")
def test_generate_200k_events(benchmark, tmp_path, workers, target):
    if target == "ram":
        if not os.access("/dev/shm", os.W_OK):
            pytest.skip("no /dev/shm")
        tmp_path = tempfile.mkdtemp(prefix="lake-datagen-bench-", dir="/dev/shm")
    n = itertools.count()

    def setup():                       # untimed: drop the previous round's files, pick a fresh directory
        i = next(n)
        shutil.rmtree(os.path.join(tmp_path, f"run{i - 1}"), ignore_errors=True)
        return (os.path.join(tmp_path, f"run{i}"),), {}

    def run(out):
        return generate_dataset(out, events=EVENTS, days=1, accounts=3, regions=2, seed=1, end=END, workers=workers)

    try:
        s = benchmark.pedantic(run, setup=setup, rounds=3, iterations=1)
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)
    assert s["events"] == EVENTS
    secs = benchmark.stats.stats.mean
    benchmark.extra_info.update({
        "events_per_s": round(EVENTS / secs),
        "compressed_MB_per_s": round(s["bytes"] / secs / 1e6, 1),
        "uncompressed_MB_per_s": round(s["uncompressed_bytes"] / secs / 1e6, 1),
        "bytes_per_event_gz": round(s["bytes"] / EVENTS, 1),
        "seconds_for_10M_extrapolated": round(10_000_000 / (EVENTS / secs)),
    })
