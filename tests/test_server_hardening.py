"""`lake serve` under abuse (issue 15, points 6, 7 (server part), 12 and 13): bodies are read only for
requests whose signature can hold, under a size cap, read timeouts and a connection cap; SigV4's clock window
is AWS's 5 minutes, replays and unsigned payloads are refused; an unexpected error costs the log one line;
lake files are private; credentials files and logs do not leak secrets.

Everything runs against a live server on loopback (raw sockets where the point is what a misbehaving client
sends, boto3 where it is what SDKs see). Each test is bounded: every loop has a deadline and stops by itself.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import signal
import socket
import stat
import threading
import time
from datetime import datetime, timedelta, timezone

import boto3
import botocore.auth
import pytest
import urllib3
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from lake.apicore import OPERATIONS, TARGET_PREFIX
from lake.apiserver import ServerConfig, ServerThread
from lake.lake import Lake
from lake.sigv4 import SigV4Error, load_credentials
from lake.storage import Storage, StorageError
from tests.server_fixture import *  # noqa: F403 - server, cloudtrail_client, data_client
from tests.server_fixture import ACCOUNT_A, AUDIT_STORE, PRINCIPALS, REGION, boto_client, lake_serve_process

ACTIVITY = [{"Name": "integrations", "FieldSelectors": [{"Field": "eventCategory", "Equals": ["ActivityAuditLog"]}]}]


# ---- helpers ----------------------------------------------------------------------------------------------

def _start(tmp_path, **limits) -> ServerThread:
    lake = Lake(str(tmp_path / "lake"), region=REGION, account_id=ACCOUNT_A)
    return ServerThread(lake, ServerConfig(credentials=list(PRINCIPALS.values()), audit_store=AUDIT_STORE,
                                           **limits)).start()


def _sign(srv, body: bytes, *, target: str = "ListEventDataStores", principal: str = "alice",
          secret: str | None = None, headers: dict | None = None, service: str = "cloudtrail",
          path: str = "/", query: str = "") -> AWSRequest:
    cred = PRINCIPALS[principal]
    hdrs = {"Content-Type": "application/x-amz-json-1.1" if service == "cloudtrail" else "application/json"}
    if service == "cloudtrail":
        hdrs["X-Amz-Target"] = TARGET_PREFIX + target
    hdrs.update(headers or {})
    req = AWSRequest(method="POST", url=srv.url + path + (f"?{query}" if query else ""), data=body, headers=hdrs)
    botocore.auth.SigV4Auth(Credentials(cred.access_key_id, secret or cred.secret_access_key), service,
                            REGION).add_auth(req)
    return req


def _connect(srv, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", srv.port), timeout=timeout)


def _head(srv, headers: dict, content_length: int | None, path: str = "/") -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{srv.port}"]
    lines += [f"{k}: {v}" for k, v in headers.items() if k.lower() not in ("host", "content-length")]
    if content_length is not None:
        lines.append(f"Content-Length: {content_length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _response(sock: socket.socket) -> tuple[int, dict, dict]:
    resp = http.client.HTTPResponse(sock)
    resp.begin()
    data = resp.read()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, (json.loads(data) if data else {})


def _send(req: AWSRequest):
    r = urllib3.PoolManager().request("POST", req.url, body=req.body, headers=dict(req.headers.items()),
                                      retries=False)
    try:
        body = json.loads(r.data) if r.data else {}
    except ValueError:
        body = {"text": r.data.decode(errors="replace")}
    return r.status, {k.lower(): v for k, v in r.headers.items()}, body


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def _closed(sock: socket.socket, within: float) -> bool:
    """True when the server closes `sock` within `within` seconds (reads and drops what it answered)."""
    deadline = time.monotonic() + within
    sock.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            if sock.recv(65536) == b"":
                return True
        except TimeoutError:
            continue
        except OSError:  # reset
            return True
    return False


# ---- point 6: nothing is read before the headers could be authentic -----------------------------------------

def test_unauthenticated_request_is_refused_before_its_body(server):
    """Old code read (and buffered) the whole body before looking at the signature: these requests, whose
    bodies never come, got no answer at all."""
    # no signature at all: refused on the headers, connection closed
    with _connect(server, timeout=3) as s:
        s.sendall(_head(server, {"Content-Type": "application/x-amz-json-1.1",
                                 "X-Amz-Target": TARGET_PREFIX + "ListEventDataStores"}, 4 << 20))
        status, headers, body = _response(s)
    assert status == 400 and body["__type"] == "MissingAuthenticationTokenException"
    assert headers.get("connection") == "close"
    # a key the server does not know
    req = _sign(server, b"{}")
    hdrs = {k: v.replace(PRINCIPALS["alice"].access_key_id, "AKIANOBODY0000000000") if k == "Authorization" else v
            for k, v in req.headers.items()}
    with _connect(server, timeout=3) as s:
        s.sendall(_head(server, hdrs, 4 << 20))
        status, _, body = _response(s)
    assert status == 400 and body["__type"] == "UnrecognizedClientException"
    # a known key, a wrong secret, and the payload hash declared: the signature is checked on the headers
    payload = b'{"MaxResults": 1}'
    req = _sign(server, payload, secret="guessed-secret",
                headers={"X-Amz-Content-SHA256": __import__("hashlib").sha256(payload).hexdigest()})
    with _connect(server, timeout=3) as s:
        s.sendall(_head(server, dict(req.headers.items()), len(payload) + (4 << 20)))
        status, _, body = _response(s)
    assert status == 400 and body["__type"] == "InvalidSignatureException"
    # a correct signature but a declared length over the cap: 413 before reading
    req = _sign(server, b"{}")
    with _connect(server, timeout=3) as s:
        s.sendall(_head(server, dict(req.headers.items()), (8 << 20) + 1))
        status, headers, body = _response(s)
    assert status == 413 and body["__type"] == "RequestEntityTooLargeException" and "\n" not in body["message"]
    assert headers.get("connection") == "close"


def test_declared_payload_hash_is_verified_against_the_body(server):
    """With x-amz-content-sha256 the signature is verified on the headers; the body must then hash to it."""
    payload = b'{"MaxResults": 1}'
    sha = __import__("hashlib").sha256(payload).hexdigest()
    ok = _sign(server, payload, headers={"X-Amz-Content-SHA256": sha})
    assert _send(ok)[0] == 200
    swapped = _sign(server, payload, headers={"X-Amz-Content-SHA256": sha})
    swapped.data = b'{"MaxResults": 2}'
    status, _, body = _send(swapped)
    assert status == 400 and body["__type"] == "InvalidSignatureException"


def test_trickling_body_is_cut_off(tmp_path):
    """Old code waited for a body for ever: one byte every 0.2 s held the connection and its buffer."""
    srv = _start(tmp_path, read_timeout=0.6, body_timeout=1.2)
    try:
        body = b'{"MaxResults": 1' + b" " * 200 + b"}"
        req = _sign(srv, body)
        with _connect(srv, timeout=6) as s:
            s.sendall(_head(srv, dict(req.headers.items()), len(body)))
            t0 = time.monotonic()
            sent = 0
            s.settimeout(0.2)
            answer = b""
            while time.monotonic() - t0 < 6 and sent < len(body) - 1:  # never completes the body
                try:
                    s.sendall(body[sent:sent + 1])
                    sent += 1
                except OSError:
                    break
                try:
                    answer = s.recv(65536)
                    if answer:
                        break
                except TimeoutError:
                    pass
            elapsed = time.monotonic() - t0
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"RequestTimeoutException" in answer and elapsed < 3
        # a body that stops: the gap between chunks is limited too
        req = _sign(srv, body)
        with _connect(srv, timeout=6) as s:
            s.sendall(_head(srv, dict(req.headers.items()), len(body)) + body[:10])
            t0 = time.monotonic()
            status, _, out = _response(s)
            assert status == 408 and out["__type"] == "RequestTimeoutException"
            assert 0.5 < time.monotonic() - t0 < 2.5
        # the server still answers normal calls
        assert boto_client(srv, "cloudtrail").list_event_data_stores()["EventDataStores"]
    finally:
        srv.stop()


def test_trickling_headers_are_cut_off(tmp_path):
    """Old code never timed out a request whose headers trickle in (slowloris)."""
    srv = _start(tmp_path, header_timeout=1.0)
    try:
        with _connect(srv) as s:
            s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n")
            t0 = time.monotonic()
            closed = False
            for i in range(25):  # 5 s at most
                try:
                    s.sendall(f"X-Slow-{i}: y\r\n".encode())
                except OSError:
                    closed = True
                    break
                if _closed(s, 0.2):
                    closed = True
                    break
            assert closed and time.monotonic() - t0 < 3
        with _connect(srv) as s:  # a connection that says nothing is closed too
            assert _closed(s, 3)
        assert boto_client(srv, "cloudtrail").list_event_data_stores()["EventDataStores"]
    finally:
        srv.stop()


def test_connection_cap(tmp_path):
    """Old code accepted any number of connections; past `max_connections` the server answers 503."""
    srv = _start(tmp_path, max_connections=4, header_timeout=10.0)
    idle = []
    try:
        idle = [_connect(srv) for _ in range(4)]
        time.sleep(0.2)
        req = _sign(srv, b"{}")
        status = _send(req)[0]
        assert status == 503
    finally:
        for s in idle:
            s.close()
    try:
        deadline = time.monotonic() + 5
        while True:  # the server notices the closed connections
            status = _send(_sign(srv, b"{}"))[0]
            if status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert status == 200
    finally:
        srv.stop()


def test_slow_bodies_keep_memory_flat_and_the_server_answers(tmp_path):
    """32 clients send nearly all of an 8 MB body and then stall: 24 unsigned, 8 signed with a known key
    and a wrong secret. Old code buffered every one of them (~256 MB); now the unsigned ones are refused on
    their headers and the plausible ones share a 16 MB budget, while a boto3 call is answered meanwhile."""
    size = 8 << 20
    srv = _start(tmp_path, unverified_body_bytes=16 << 20, read_timeout=2.0, body_timeout=4.0)
    stop = threading.Event()
    peak = [0.0]

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_mb())
            time.sleep(0.05)

    blob = b"x" * (size - 1)
    forged = dict(_sign(srv, b"{}", target="CreateEventDataStore", secret="guessed-secret").headers.items())
    unsigned = {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": TARGET_PREFIX + "CreateEventDataStore"}

    def attacker(signed: bool) -> None:
        try:
            with _connect(srv, timeout=3) as s:
                s.sendall(_head(srv, forged if signed else unsigned, size))
                try:
                    s.sendall(blob)  # everything but the last byte
                except OSError:
                    return  # refused and closed: what should happen to the unsigned ones
                stop.wait(4)
        except OSError:
            pass

    client = boto_client(srv, "cloudtrail")
    client.list_event_data_stores()
    base = _rss_mb()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    threads = [threading.Thread(target=attacker, args=(i % 4 == 0,), daemon=True) for i in range(32)]
    try:
        for t in threads:
            t.start()
        time.sleep(1.0)
        t0 = time.monotonic()
        assert client.list_event_data_stores()["EventDataStores"][0]["Name"] == AUDIT_STORE
        assert time.monotonic() - t0 < 3
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        sampler.join(2)
        srv.stop()
    grown = peak[0] - base
    assert grown < 80, f"RSS grew by {grown:.0f} MB under slow bodies"


# ---- point 12: clock window, replays, unsigned payloads ------------------------------------------------------

def test_replayed_put_audit_events_is_refused_and_stores_nothing(server, cloudtrail_client):
    """Old code stored one event per replay of the same signed PutAuditEvents."""
    ct = cloudtrail_client("alice")
    store_arn = ct.create_event_data_store(Name="integrations", AdvancedEventSelectors=ACTIVITY,
                                           TerminationProtectionEnabled=False)["EventDataStoreArn"]
    arn = ct.create_channel(Name="app", Source="Custom",
                            Destinations=[{"Type": "EVENT_DATA_STORE", "Location": store_arn}])["ChannelArn"]
    data = {"version": "0.01", "UID": "uid-1", "userIdentity": {"type": "CustomUser", "principalId": "u1",
                                                              "details": {}},
            "eventSource": "app.example.com", "eventName": "DocumentOpened",
            "eventTime": (datetime.now(timezone.utc) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "recipientAccountId": ACCOUNT_A}
    body = json.dumps({"auditEvents": [{"id": "one", "eventData": json.dumps(data)}]}).encode()
    from urllib.parse import quote
    req = _sign(server, body, service="cloudtrail-data", path="/PutAuditEvents",
                query=f"channelArn={quote(arn, safe='')}")
    status, _, out = _send(req)
    assert status == 200 and len(out["successful"]) == 1
    for _ in range(3):
        status, headers, out = _send(req)
        assert status == 400 and headers["x-amzn-errortype"] == "ThrottlingException"
        assert "replay" in out["message"] and "\n" not in out["message"]
    rows = server.lake.sql("SELECT count(*) AS n FROM integrations")["n"][0]
    assert rows == 1


def test_identical_read_calls_in_one_second_are_not_replays(server, cloudtrail_client):
    """botocore signs no per-call nonce: identical reads within a second (polling) have one signature and
    must all be answered; replays are refused for mutating operations only."""
    client = cloudtrail_client("alice")
    req = _sign(server, b"{}")
    for _ in range(3):
        assert _send(req)[0] == 200
    for _ in range(5):
        client.list_event_data_stores()


def test_plain_boto3_repeating_a_mutating_call_recovers_by_retrying(server, cloudtrail_client):
    """botocore signs no nonce: the same AddTags three times in a row may share a signature; the duplicate
    is answered ThrottlingException, which boto3's default retry re-signs in a later second."""
    arn = cloudtrail_client("alice").create_event_data_store(Name="tagged")["EventDataStoreArn"]
    cred = PRINCIPALS["alice"]
    plain = boto3.session.Session(aws_access_key_id=cred.access_key_id, aws_secret_access_key=cred.secret_access_key,
                                  region_name=REGION).client("cloudtrail", endpoint_url=server.url,
                                                             config=Config(retries={"mode": "standard",
                                                                                    "max_attempts": 8}))
    retried = []
    plain.meta.events.register("needs-retry", lambda response, **kw: retried.append(
        (response[1] or {}).get("Error", {}).get("Code") if response else None))
    for _ in range(3):
        plain.add_tags(ResourceId=arn, TagsList=[{"Key": "team", "Value": "blue"}])
    assert set(retried) <= {None, "ThrottlingException"}
    assert plain.list_tags(ResourceIdList=[arn])["ResourceTagList"][0]["TagsList"] == [{"Key": "team",
                                                                                         "Value": "blue"}]


def test_a_mutating_call_that_failed_may_be_retried_with_its_signature(server, monkeypatch):
    """A server fault is retried by SDKs, within the same second with the same signature: not a replay."""
    from lake.apicore import OPERATIONS as ops

    real = ops["CreateEventDataStore"]
    calls = []

    def flaky(ctx, params):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("transient")
        return real(ctx, params)

    monkeypatch.setitem(ops, "CreateEventDataStore", flaky)
    req = _sign(server, b'{"Name": "retried"}', target="CreateEventDataStore")
    status, _, body = _send(req)
    assert status == 500 and body["__type"] == "InternalFailure"
    assert _send(req)[0] == 200
    status, _, body = _send(req)  # now it succeeded: a third send is a replay
    assert status == 400 and "replay" in body["message"]


def test_unsigned_payload_is_refused_for_json_operations(server):
    """Old code accepted UNSIGNED-PAYLOAD, so a captured request's body could be swapped."""
    req = _sign(server, b'{"Name": "legit"}', target="CreateEventDataStore",
                headers={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"})
    req.data = b'{"Name": "swapped"}'
    status, _, body = _send(req)
    assert status == 400 and body["__type"] == "InvalidSignatureException"
    assert "signed payload" in body["message"]
    # a presigned URL signs no body: one sent with a body is refused
    cred = PRINCIPALS["alice"]
    pre = AWSRequest(method="POST", url=server.url + "/", data=b"",
                     headers={"X-Amz-Target": TARGET_PREFIX + "CreateEventDataStore",
                              "Content-Type": "application/x-amz-json-1.1"})
    botocore.auth.SigV4QueryAuth(Credentials(cred.access_key_id, cred.secret_access_key), "cloudtrail", REGION,
                                 expires=60).add_auth(pre)
    r = urllib3.PoolManager().request("POST", pre.url, body=b'{"Name": "swapped2"}',
                                      headers=dict(pre.headers.items()), retries=False)
    assert r.status == 400 and json.loads(r.data)["__type"] == "InvalidSignatureException"
    assert [s.name for s in server.lake.stores()] == [AUDIT_STORE] or \
        not {"swapped", "swapped2"} & {s.name for s in server.lake.stores()}


def test_replay_cache_is_bounded():
    from lake.sigv4 import ReplayCache

    cache = ReplayCache(capacity=2)
    now = datetime.now(timezone.utc)
    cache.remember("aa" * 32, now + timedelta(seconds=1), now=now)
    cache.remember("bb" * 32, now + timedelta(minutes=5), now=now)
    with pytest.raises(SigV4Error) as e:
        cache.remember("aa" * 32, now + timedelta(seconds=1), now=now)
    assert e.value.code == "ThrottlingException" and "replay" in e.value.message
    with pytest.raises(SigV4Error) as e:
        cache.remember("cc" * 32, now + timedelta(minutes=5), now=now)
    assert e.value.code == "ThrottlingException"
    later = now + timedelta(seconds=2)  # "aa" left the window: its place is free
    cache.remember("cc" * 32, now + timedelta(minutes=5), now=later)
    assert len(cache) == 2


# ---- point 7 (server part): an unexpected error costs the log one line --------------------------------------

def test_internal_error_logs_one_line_and_a_bounded_traceback(server, monkeypatch):
    """Old code logged the whole traceback at ERROR: ~1,000 frames of mutual recursion per request."""
    def ping(n):
        return pong(n)

    def pong(n):
        return ping(n + 1)

    def boom(ctx, params):
        return ping(0)

    monkeypatch.setitem(OPERATIONS, "ListEventDataStores", boom)
    records: list[logging.LogRecord] = []
    text: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record):
            records.append(record)
            text.append(self.format(record))

    handler = Catch(level=logging.DEBUG)
    logger = logging.getLogger("lake.serve")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        client = boto_client(server, "cloudtrail")
        with pytest.raises(ClientError) as e:
            client.list_event_data_stores()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    err = e.value.response["Error"]
    request_id = e.value.response["ResponseMetadata"]["RequestId"]
    assert err["Code"] == "InternalFailure" and "\n" not in err["Message"] and request_id in err["Message"]
    errors = [t for r, t in zip(records, text) if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0] and request_id in errors[0] and len(errors[0]) < 600
    assert "RecursionError" in errors[0]
    assert sum(len(t) for t in text) < 10_000


# ---- point 13: file modes, credentials files, logs ----------------------------------------------------------

def _modes(root) -> tuple[set[int], set[int]]:
    files, dirs = set(), set()
    for dirpath, dirnames, filenames in os.walk(root):
        dirs.add(stat.S_IMODE(os.stat(dirpath).st_mode))
        for n in filenames:
            files.add(stat.S_IMODE(os.stat(os.path.join(dirpath, n)).st_mode))
    return files, dirs


def _use_lake(lake: Lake) -> None:
    from lake import api_lookup

    st = lake.create_store("events")
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    st.append([{"eventVersion": "1.08", "eventID": f"e{i}", "eventTime": now, "eventSource": "s3.amazonaws.com",
                "eventName": "GetObject", "awsRegion": REGION, "recipientAccountId": ACCOUNT_A,
                "eventType": "AwsApiCall", "managementEvent": True} for i in range(3)])
    api_lookup._token_key(lake)  # the NextToken HMAC key, _api/token-key


def test_lake_files_are_private_by_default(tmp_path, monkeypatch):
    """Old code created every lake file 0644 (the token HMAC key included) and directories 0755."""
    monkeypatch.delenv("LAKE_FILE_MODE", raising=False)
    old = os.umask(0o022)
    try:
        lake = Lake(str(tmp_path / "lake"), region=REGION, account_id=ACCOUNT_A)
        _use_lake(lake)
    finally:
        os.umask(old)
    assert os.path.exists(tmp_path / "lake" / "_api" / "token-key")
    assert stat.S_IMODE(os.stat(tmp_path / "lake" / "_api" / "token-key").st_mode) == 0o600
    files, dirs = _modes(tmp_path / "lake")
    assert files == {0o600} and dirs == {0o700}


def test_lake_file_mode_is_the_operators_choice(tmp_path, monkeypatch):
    monkeypatch.setenv("LAKE_FILE_MODE", "0640")
    old = os.umask(0o077)  # the chosen mode wins over a stricter umask
    try:
        _use_lake(Lake(str(tmp_path / "lake"), region=REGION, account_id=ACCOUNT_A))
    finally:
        os.umask(old)
    files, dirs = _modes(tmp_path / "lake")
    assert files == {0o640} and dirs == {0o750}
    for bad in ("0755", "rw", "0400", "4600"):
        monkeypatch.setenv("LAKE_FILE_MODE", bad)
        with pytest.raises(StorageError, match="LAKE_FILE_MODE") as e:
            Storage(str(tmp_path / "other"))
        assert "\n" not in str(e.value)
    monkeypatch.setenv("LAKE_FILE_MODE", "0755")
    assert Storage("s3://bucket/lake").protocol == "s3"  # S3 has no modes: the setting does not apply


def test_credentials_file_mode_is_checked(tmp_path, caplog):
    """Old code read a world-readable (and a world-writable) credentials file silently."""
    path = tmp_path / "creds.json"
    path.write_text(json.dumps([{"access_key_id": "AK1", "secret_access_key": "s1",
                                 "principal_arn": "arn:aws:iam::111111111111:user/x"}]))
    os.chmod(path, 0o600)
    with caplog.at_level(logging.WARNING, logger="lake.serve"):
        assert load_credentials(str(path))[0].access_key_id == "AK1"
    assert not caplog.records
    os.chmod(path, 0o644)
    with caplog.at_level(logging.WARNING, logger="lake.serve"):
        assert load_credentials(str(path))[0].access_key_id == "AK1"
    assert len(caplog.records) == 1 and "readable by group or others (mode 0644)" in caplog.records[0].getMessage()
    assert "chmod 600" in caplog.records[0].getMessage()
    for mode in (0o666, 0o620):
        os.chmod(path, mode)
        with pytest.raises(ValueError, match="writable by group or others"):
            load_credentials(str(path))


def test_debug_logs_do_not_print_signatures(tmp_path):
    """`lake serve --log-level debug` logs every request; old code printed presigned URLs whole."""
    a = PRINCIPALS["alice"]
    proc, port = lake_serve_process(tmp_path, "--log-level", "debug", "--no-delivery")
    try:
        http = urllib3.PoolManager()
        pre = AWSRequest(method="POST", url=f"http://127.0.0.1:{port}/", data=b"",
                         headers={"X-Amz-Target": TARGET_PREFIX + "ListEventDataStores"})
        botocore.auth.SigV4QueryAuth(Credentials(a.access_key_id, a.secret_access_key), "cloudtrail", REGION,
                                     expires=60).add_auth(pre)
        assert http.request("POST", pre.url, body=b"", headers=dict(pre.headers.items()),
                            retries=False).status == 200
        signature = pre.url.split("X-Amz-Signature=")[1].split("&")[0]
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    logged = out + err
    assert "POST /?" in logged  # the request was logged ...
    assert signature not in logged and "X-Amz-Signature=REDACTED" in logged  # ... without its signature
    assert a.access_key_id not in logged


def test_redact():
    from lake.apiserver import redact

    line = ('POST /?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA%2F20260101%2Fus-east-1&'
            'X-Amz-Signature=' + "ab" * 32 + ' Authorization: AWS4-HMAC-SHA256 Credential=AKIA/x/y/z/aws4_request, '
            'SignedHeaders=host, Signature=' + "cd" * 32)
    out = redact(line)
    assert "ab" * 32 not in out and "cd" * 32 not in out and "AKIA" not in out
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in out and "SignedHeaders=host" in out
    # botocore logs its request object at DEBUG: the filter redacts what it formats to
    from lake.apiserver import RedactingFilter

    class Req:
        def __repr__(self):
            return "<AWSPreparedRequest headers={'Authorization': b'" + line.split("Authorization: ")[1] + "'}>"
    record = logging.LogRecord("botocore.endpoint", logging.DEBUG, __file__, 1, "Sending http request: %s",
                               (Req(),), None)
    assert RedactingFilter().filter(record)
    assert "cd" * 32 not in record.getMessage() and "Signature=REDACTED" in record.getMessage()


def test_sdk_still_works_end_to_end(server, cloudtrail_client):
    client = cloudtrail_client("alice")
    arn = client.create_event_data_store(Name="hardened", TerminationProtectionEnabled=False)["EventDataStoreArn"]
    assert client.get_event_data_store(EventDataStore=arn)["Name"] == "hardened"
    session = boto3.session.Session(aws_access_key_id=PRINCIPALS["bob"].access_key_id,
                                    aws_secret_access_key=PRINCIPALS["bob"].secret_access_key, region_name=REGION)
    bob = session.client("cloudtrail", endpoint_url=server.url, config=Config(retries={"total_max_attempts": 1}))
    assert bob.list_event_data_stores()["EventDataStores"] == []


def test_limits_are_configurable_from_the_command_line(tmp_path):
    from lake.apiserver import parse_limits

    assert parse_limits(["max_connections=512", "read-timeout=2.5"]) == {"max_connections": 512,
                                                                          "read_timeout": 2.5}
    for bad in ("nope=1", "max_connections", "max_connections=-3", "read_timeout=soon", "max_body_bytes=1.5"):
        with pytest.raises(ValueError) as e:
            parse_limits([bad])
        assert "\n" not in str(e.value)
    proc, port = lake_serve_process(tmp_path, "--no-delivery", "--log-level", "warning", "--limit",
                                    "max_body_bytes=1000")
    try:
        class Srv:
            url = f"http://127.0.0.1:{port}"
        with pytest.raises(ClientError) as e:
            boto_client(Srv, "cloudtrail").create_event_data_store(Name="x" * 100, TagsList=[
                {"Key": f"k{i}", "Value": "v" * 100} for i in range(20)])
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
