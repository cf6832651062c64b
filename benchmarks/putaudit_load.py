"""PutAuditEvents under load: N concurrent boto3 `cloudtrail-data` clients for S seconds against `lake serve` on
loopback, then proof that every acknowledged event is in the lake exactly once.

    python -m benchmarks.putaudit_load --seconds 30 --clients 8 --batch 100 [--json out.json]

The server is `lake serve` itself, started as its own process (`--no-delivery`, optionally `--audit-store`), so
the clients' SigV4 signing and JSON work do not share a GIL with it; the clients are threads of this process, each with its own boto3 session and client
(retries off: a request is either acknowledged or counted as an error, never silently re-sent). Setup goes
through the API too: CreateEventDataStore is not needed (the store is created in the lake directly), the
channel is made with CreateChannel.

Verification after the clients stop and the server has shut down: one SQL query over the store
(`SELECT eventid, count(*) ... GROUP BY eventid`) must show every acknowledged eventID exactly once; events
stored but never acknowledged (a request that timed out after its commit) are reported as `unacknowledged`.
Figures: events/s and requests/s over the measured window, request latency p50/p90/p99/max (ms).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import socket
import subprocess
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

ACCOUNT = "123456789012"
CRED = {"access_key_id": "AKIALOADTEST00000001", "secret_access_key": "load-test-secret-key/0123456789abcdef",
        "principal_arn": f"arn:aws:iam::{ACCOUNT}:user/loadtest", "account_id": ACCOUNT}
REGION = "us-east-1"
SELECTORS = [{"Name": "integrations", "FieldSelectors": [{"Field": "eventCategory", "Equals": ["ActivityAuditLog"]}]}]


class _Server:
    """`lake serve` as its own process, exactly as an operator starts it (the console script's code path),
    on a free loopback port with one access key."""

    LAUNCH = "from lake.cli import main; main()"  # the `lake` console script

    def __init__(self, uri: str, workdir: Path, audit_store: str | None):
        creds = workdir / "credentials.json"
        creds.write_text(json.dumps({"credentials": [CRED]}))
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-c", self.LAUNCH, "--lake", uri, "serve", "--host",
               "127.0.0.1", "--port", str(self.port), "--credentials", str(creds), "--region", REGION,
               "--log-level", "warning", "--no-delivery"]
        if audit_store:
            cmd += ["--audit-store", audit_store]
        env = {**os.environ, "LAKE_ACCOUNT_ID": ACCOUNT, "LAKE_REGION": REGION,
               "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        self.log = open(workdir / "server.log", "w+")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 120.0) -> None:
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"lake serve exited with status {self.proc.returncode}: {self._log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2):
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"lake serve did not answer on {self.url} within {timeout:.0f} s: {self._log_tail()}")

    def _log_tail(self) -> str:
        self.log.seek(0)
        return " | ".join(self.log.read().strip().splitlines()[-5:])

    def cpu_seconds(self) -> float | None:
        return _server_cpu(self.proc.pid)

    def stop(self) -> None:
        """SIGINT, as Ctrl-C: uvicorn finishes in-flight requests and the audit writer flushes."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_cpu(pid: int) -> float | None:
    """CPU seconds the server process has used so far (Linux /proc; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 1)
    except (OSError, IndexError, ValueError):
        return None


def _client(url: str):
    import boto3
    from botocore.config import Config

    session = boto3.session.Session()
    return session.client("cloudtrail-data", endpoint_url=url, region_name=REGION,
                          aws_access_key_id=CRED["access_key_id"], aws_secret_access_key=CRED["secret_access_key"],
                          config=Config(retries={"max_attempts": 1}, read_timeout=120, connect_timeout=10))


def _event_data(client: int, seq: int) -> str:
    return json.dumps({
        "version": "0.01", "UID": f"c{client}-{seq}",
        "userIdentity": {"type": "CustomUser", "principalId": f"user-{seq % 97}", "details": {"tenant": "acme"}},
        "eventSource": "loadtest.example.com", "eventName": ("Read", "Write", "Delete")[seq % 3],
        "eventTime": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "userAgent": "putaudit-load/1.0", "sourceIPAddress": "192.0.2.10",
        "requestParameters": {"document": f"doc-{seq}", "size": str(seq % 1000)},
        "recipientAccountId": ACCOUNT})


class _Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.acked: list[str] = []
        self.failed_events = 0
        self.errors: list[str] = []
        self.latencies: list[float] = []
        self.requests = 0


def _run_client(k: int, url: str, channel_arn: str, batch: int, deadline_box: list[float], stats: _Stats,
                start: threading.Barrier, go: threading.Event) -> None:
    c = _client(url)
    seq = 0
    start.wait()  # every client is built
    go.wait()     # the main thread has set the deadline
    deadline = deadline_box[0]
    while time.monotonic() < deadline:
        events = [{"id": f"c{k}-{seq + i}", "eventData": _event_data(k, seq + i)} for i in range(batch)]
        seq += batch
        t0 = time.perf_counter()
        try:
            out = c.put_audit_events(channelArn=channel_arn, auditEvents=events)
        except Exception as e:  # noqa: BLE001 - counted, not fatal
            with stats.lock:
                stats.errors.append(f"{type(e).__name__}: {str(e).splitlines()[0][:200]}")
            continue
        dt = time.perf_counter() - t0
        with stats.lock:
            stats.requests += 1
            stats.latencies.append(dt)
            stats.acked.extend(s["eventID"] for s in out["successful"])
            stats.failed_events += len(out["failed"])


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))] * 1000


def run(seconds: float = 30.0, clients: int = 8, batch: int = 100, workdir: str | None = None,
        audit_store: str | None = None) -> dict:
    """Run the load test; returns the figures (and raises AssertionError if any acknowledged event is missing
    or stored more than once)."""
    import boto3  # before starting anything: fail early when absent

    import lake

    tmp = tempfile.TemporaryDirectory(prefix="putaudit-load-") if workdir is None else None
    root = Path(workdir or tmp.name)
    uri = str(root / "lake")
    lk = lake.connect(uri, account_id=ACCOUNT, region=REGION)
    store = lk.create_store(f"load-{uuid.uuid4().hex[:8]}", selectors=SELECTORS)

    server = _Server(uri, root, audit_store)
    try:
        url = server.url
        ct = boto3.session.Session().client(
            "cloudtrail", endpoint_url=url, region_name=REGION, aws_access_key_id=CRED["access_key_id"],
            aws_secret_access_key=CRED["secret_access_key"])
        channel_arn = ct.create_channel(Name="load", Source="Custom", Destinations=[
            {"Type": "EVENT_DATA_STORE", "Location": store.arn}])["ChannelArn"]
        stats = _Stats()
        barrier = threading.Barrier(clients + 1)
        threads = []
        deadline_box: list[float] = []
        go = threading.Event()
        for k in range(clients):
            threads.append(threading.Thread(target=_run_client, args=(k, url, channel_arn, batch, deadline_box,
                                                                      stats, barrier, go), daemon=True))
        for t in threads:
            t.start()
        barrier.wait()
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        t_start = time.monotonic()
        deadline_box.append(t_start + seconds)
        go.set()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - t_start
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        server_cpu = server.cpu_seconds()
    finally:
        server.stop()

    t0 = time.perf_counter()
    counts = lake.connect(uri).sql(f"SELECT eventid, count(*) AS n FROM {store.id} GROUP BY eventid")
    verify_s = time.perf_counter() - t0
    stored = dict(zip(counts["eventid"].to_list(), counts["n"].to_list()))
    acked = stats.acked
    missing = [e for e in acked if e not in stored]
    repeated = [e for e, n in stored.items() if n != 1]
    unacked = len(set(stored) - set(acked))
    snap = lake.connect(uri).store(store.id).snapshot()
    fig = {
        "seconds": round(elapsed, 2), "clients": clients, "batch": batch, "audit_store": audit_store,
        "requests": stats.requests, "events_acknowledged": len(acked), "events_failed": stats.failed_events,
        "request_errors": len(stats.errors), "error_samples": stats.errors[:5],
        "events_per_s": round(len(acked) / elapsed, 1), "requests_per_s": round(stats.requests / elapsed, 1),
        "latency_ms": {"p50": round(_pct(stats.latencies, 50), 1), "p90": round(_pct(stats.latencies, 90), 1),
                       "p99": round(_pct(stats.latencies, 99), 1),
                       "max": round(max(stats.latencies) * 1000, 1) if stats.latencies else None,
                       "mean": round(statistics.fmean(stats.latencies) * 1000, 1) if stats.latencies else None},
        "stored_events": sum(stored.values()), "missing": len(missing), "stored_more_than_once": len(repeated),
        "unacknowledged_stored": unacked, "duplicate_acks": len(acked) - len(set(acked)),
        "commits": snap.version, "segments": snap.segments.num_rows, "verify_query_s": round(verify_s, 2),
        "cpu_count": os.cpu_count(),
        "client_cpu_s": round(cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime, 1),
        "server_cpu_s": server_cpu,
    }
    if tmp is not None:
        tmp.cleanup()
    assert not missing and not repeated and fig["duplicate_acks"] == 0, fig
    return fig


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--batch", type=int, default=100, help="events per PutAuditEvents request (1-100)")
    ap.add_argument("--workdir", help="lake directory to use (default: a temporary one, removed afterwards)")
    ap.add_argument("--audit-store", help="let the server audit PutAuditEvents calls into this store")
    ap.add_argument("--json", help="write the figures to this file")
    a = ap.parse_args(argv)
    fig = run(a.seconds, a.clients, a.batch, a.workdir, a.audit_store)
    lat = fig["latency_ms"]
    print(f"{fig['clients']} clients x {fig['seconds']} s, {fig['batch']} events/request: "
          f"{fig['events_per_s']:,.0f} events/s, {fig['requests_per_s']:,.1f} requests/s; latency p50 {lat['p50']} ms, "
          f"p99 {lat['p99']} ms, max {lat['max']} ms; {fig['events_acknowledged']:,} acknowledged, all stored once "
          f"({fig['commits']} commits, {fig['segments']} segments); errors {fig['request_errors']}, "
          f"failed events {fig['events_failed']}, unacknowledged stored {fig['unacknowledged_stored']}; CPU s: "
          f"clients {fig['client_cpu_s']}, server {fig['server_cpu_s']} (whole life)")
    if a.json:
        Path(a.json).write_text(json.dumps(fig, indent=2))
    return fig


if __name__ == "__main__":
    main()
