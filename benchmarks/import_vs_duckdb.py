"""Import throughput: `lake import` against DuckDB's read_json + COPY ... TO parquet, on the same gzip trail
files, in one run.

    python benchmarks/import_vs_duckdb.py --events 1000000            # generate, then measure both
    python benchmarks/import_vs_duckdb.py --source DIR                # measure on existing trail logs

Prints a Markdown table (paste into docs/performance.md) and a JSON line with the raw figures. Peak memory
is the maximum resident set of the importer process tree (parent + workers), read from /proc.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time


def _tree_rss(pid: int) -> int:
    """Resident bytes of a process and its descendants, read from /proc (Linux). Reading the files directly
    matters: sampling with a `ps` subprocess every 0.2 s took a few percent of the 2 cores being measured."""
    page = os.sysconf("SC_PAGE_SIZE")
    total, stack, seen = 0, [pid], set()
    while stack:
        p = stack.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * page
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    stack.extend(int(x) for x in f.read().split())
        except (OSError, ValueError, IndexError):
            continue  # the process ended between two reads
    return total


def run_lake(source: str, workdir: str, workers: int | None) -> dict:
    lake_dir = os.path.join(workdir, "lake")
    shutil.rmtree(lake_dir, ignore_errors=True)
    subprocess.run([sys.executable, "-c", "from lake.cli import main; main()", "--lake", lake_dir, "store",
                    "create", "bench", "--retention-days", "3653"], check=True, capture_output=True)
    cmd = [sys.executable, "-c", "from lake.cli import main; main()", "--lake", lake_dir, "--format", "json",
           "import", source, "--store", "bench", "--no-progress"]
    if workers:
        cmd += ["--workers", str(workers)]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0]

    def sample():
        while proc.poll() is None:
            peak[0] = max(peak[0], _tree_rss(proc.pid))
            time.sleep(0.2)
    th = threading.Thread(target=sample, daemon=True)
    th.start()
    out, err = proc.communicate()
    elapsed = time.monotonic() - t0
    th.join()
    if proc.returncode not in (0, 1):
        raise SystemExit(f"lake import failed: {err.strip().splitlines()[-1] if err.strip() else proc.returncode}")
    stats = json.loads(out)["ImportStatistics"]
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(lake_dir) for f in fs)
    from lake import recordscan

    engine = "lake import" + ("" if recordscan.available() else " (pure Python: C record scanner not built)")
    return {"engine": engine, "events": stats["EventsCompleted"], "seconds": round(elapsed, 2),
            "events_per_s": round(stats["EventsCompleted"] / elapsed), "peak_rss_mb": round(peak[0] / 2**20),
            "output_mb": round(size / 2**20, 1)}


def run_duckdb(source: str, workdir: str) -> dict:
    import duckdb

    out = os.path.join(workdir, "duck.parquet")
    con = duckdb.connect()
    t0 = time.monotonic()
    # DuckDB infers a typed schema from a sample; on realistic data later records contradict it (e.g. a
    # requestID guessed as UUID) and the COPY fails. Then the records are read as JSON values instead,
    # which is the faster, untyped variant (it stores each record's JSON, like Lake's eventjson).
    mode = "typed"
    try:
        con.execute(f"""COPY (SELECT unnest(Records, recursive := false) AS r
                              FROM read_json('{source}/**/*.json.gz', maximum_object_size=1000000000))
                        TO '{out}' (FORMAT parquet, COMPRESSION zstd)""")
    except duckdb.Error:
        mode = "JSON records"
        t0 = time.monotonic()
        con.execute(f"""COPY (SELECT unnest(Records) AS r
                              FROM read_json('{source}/**/*.json.gz', maximum_object_size=1000000000,
                                             columns={{'Records': 'JSON[]'}}))
                        TO '{out}' (FORMAT parquet, COMPRESSION zstd)""")
    elapsed = time.monotonic() - t0
    n = con.execute(f"SELECT count(*) FROM '{out}'").fetchone()[0]
    return {"engine": f"duckdb read_json + COPY ({mode})", "events": n, "seconds": round(elapsed, 2),
            "events_per_s": round(n / elapsed), "peak_rss_mb": None,
            "output_mb": round(os.path.getsize(out) / 2**20, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", help="existing trail log directory (default: generate one)")
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="lake-bench-")
    try:
        source = args.source
        if not source:
            source = os.path.join(work, "logs")
            t0 = time.monotonic()
            try:
                from lake.datagen import generate_dataset
                generate_dataset(source, events=args.events, days=args.days, seed=7)
            except ImportError:
                from lake.generate import generate
                generate(source, events=args.events, days=args.days, seed=7, events_per_file=2000)
            print(f"generated {args.events:,} events in {time.monotonic() - t0:.1f}s", file=sys.stderr)
        gz = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(source) for f in fs)
        results = [run_lake(source, work, args.workers)]
        print(json.dumps(results[0]), file=sys.stderr)
        try:
            results.append(run_duckdb(source, work))
        except Exception as e:  # noqa: BLE001 - report, do not lose the lake figures
            print(f"duckdb failed: {str(e).splitlines()[0]}", file=sys.stderr)
        print(f"\nsource: {gz / 2**20:.1f} MiB of gzip trail logs, {os.cpu_count()} cores\n")
        print("| engine | events | seconds | events/s | peak RSS (MiB) | output (MiB) |")
        print("|---|---|---|---|---|---|")
        for r in results:
            print(f"| {r['engine']} | {r['events']:,} | {r['seconds']} | {r['events_per_s']:,} | "
                  f"{r['peak_rss_mb'] if r['peak_rss_mb'] is not None else 'n/a'} | {r['output_mb']} |")
        print(json.dumps(results))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
