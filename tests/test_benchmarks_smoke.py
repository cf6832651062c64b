"""The benchmark comparison runner (`python -m benchmarks.compare`) in smoke mode: a tiny data set, one run
per query. It checks the runner, not timings: every workload query gives the same answer in Lake and in
DuckDB, the report prints, and the JSON and Markdown outputs carry every figure."""

from __future__ import annotations

import contextlib
import io
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `benchmarks` is a directory of the repository, not an installed package
    sys.path.insert(0, str(REPO))

from benchmarks import compare  # noqa: E402
from benchmarks.workload import QUERIES  # noqa: E402

QUERY_FIELDS = {"name", "measures", "lake_ms", "duckdb_ms", "ratio", "rows", "lake_rows", "duckdb_rows", "match",
                "lake_checksum", "duckdb_checksum", "events_scanned", "segments_considered", "segments_skipped",
                "error"}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    work = tmp_path_factory.mktemp("bench")
    out = {"json": work / "figures.json", "md": work / "section.md", "data": work / "data"}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        fig = compare.main(["--smoke", "--workdir", str(work / "data"), "--json", str(out["json"]),
                            "--markdown", str(out["md"])])
    out["printed"] = printed.getvalue()
    return fig, out


def test_every_query_agrees_in_both_engines(smoke):
    fig, _ = smoke
    assert [r["name"] for r in fig["queries"]] == [q.name for q in QUERIES]
    assert len(QUERIES) >= 15
    for r in fig["queries"]:
        assert r["error"] is None, r
        assert r["match"], r
        assert r["rows"] > 0, f"{r['name']} returns no rows on the smoke data: the comparison would prove nothing"
        assert r["lake_ms"] > 0 and r["duckdb_ms"] > 0 and r["ratio"] > 0


def test_report_prints_the_table(smoke):
    _, out = smoke
    text = out["printed"]
    for q in QUERIES:
        assert q.name in text
    for part in ("Lake ms", "DuckDB ms", "ratio", "rows", "geometric mean", "import", "storage", "store open",
                 "targets"):
        assert part in text
    assert "MISMATCH" not in text and "ERROR" not in text


def test_json_has_every_figure(smoke):
    fig, out = smoke
    saved = json.loads(out["json"].read_text())
    for key in ("date", "machine", "command", "config", "dataset", "second_dataset", "import", "storage",
                "queries", "params", "geomean", "store_open", "scale", "targets"):
        assert key in saved, key
    assert saved["config"]["smoke"] and saved["config"]["events"] == 3000
    for r in saved["queries"]:
        assert set(r) == QUERY_FIELDS
        assert all(r[k] is not None for k in QUERY_FIELDS - {"error"}), r
    lake_imp, duck_imp = saved["import"]["lake"], saved["import"]["duckdb"]
    assert lake_imp["events"] == 3000 and lake_imp["events_per_s"] > 0 and lake_imp["peak_rss_mb"] > 0
    assert duck_imp["events"] == 3000 and duck_imp["events_per_s"] > 0
    st = saved["storage"]
    assert st["events"] == 3000 and st["segment_bytes"] > 0 and st["bytes_per_event"] > 0 and st["ratio"] > 0
    assert [o["segments"] for o in saved["store_open"]] == [1003] and saved["store_open"][0]["median_ms"] > 0
    assert [p["events"] for p in saved["scale"]] == [1000, 3000]  # the sizes, timed in alternating rounds
    for p in saved["scale"]:
        assert [r["name"] for r in p["queries"]] == [q.name for q in QUERIES if q.scale]
        assert all(r["match"] and r["lake_ms"] > 0 and r["duckdb_ms"] > 0 for r in p["queries"]), p
    assert saved["geomean"] > 0
    params = saved["params"]
    assert params["event_id"] and params["hour_start"] < params["hour_end"]
    names = [t["target"] for t in saved["targets"]]
    assert len(names) == len(set(names)) == 10
    for t in saved["targets"]:
        assert set(t) == {"target", "value", "limit", "met"}


def test_markdown_section(smoke):
    _, out = smoke
    md = out["md"].read_text()
    assert md.startswith("### Run of ")
    for q in QUERIES:
        assert f"`{q.name}`" in md
    assert "geometric mean" in md and "| target | measured | limit | met |" in md


def test_a_cached_data_set_is_reused(smoke):
    fig, out = smoke
    logs, summary = compare.dataset(out["data"], 3000, 2, compare.SEED)
    assert summary == fig["dataset"]
    assert logs.is_dir()


def test_fingerprint_compares_values_not_representations():
    t = datetime(2025, 12, 30, 11, 0, tzinfo=timezone.utc)
    lake_side = pa.table({"h": pa.array([t], pa.timestamp("us", "UTC")), "n": pa.array([3], pa.int64()),
                          "s": pa.array(["x"], pa.large_string())})
    duck_side = pa.table({"h": pa.array([t.replace(tzinfo=None)], pa.timestamp("us")),
                          "n": pa.array([3], pa.int32()), "s": pa.array(["x"], pa.string())})
    assert compare.fingerprint(lake_side) == compare.fingerprint(duck_side)
    # row order does not matter, values do
    two = pa.table({"a": [1, 2], "b": ["p", "q"]})
    assert compare.fingerprint(two) == compare.fingerprint(pa.table({"a": [2, 1], "b": ["q", "p"]}))
    assert compare.fingerprint(two) != compare.fingerprint(pa.table({"a": [1, 2], "b": ["q", "p"]}))


def test_a_mismatch_is_reported_loudly():
    row = {"name": "q", "lake_ms": 2.0, "duckdb_ms": 1.0, "ratio": 2.5, "rows": 1, "lake_rows": 1,
           "duckdb_rows": 2, "match": False, "lake_checksum": "aaa", "duckdb_checksum": "bbb", "error": None}
    assert "MISMATCH" in compare.query_table([row], 2.5)
    ok = dict(row, match=True, duckdb_rows=1, duckdb_checksum="aaa")
    assert "SLOW" in compare.query_table([ok], 2.5)
    assert "ERROR" in compare.query_table([dict(ok, match=False, error="Lake: boom")], None)
