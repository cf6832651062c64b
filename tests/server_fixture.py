"""Fixtures for tests of `lake serve`: a live server on loopback and real boto3 / AWS CLI clients for it.

Use them with `from tests.server_fixture import *` in a test module (or `pytest_plugins = ["tests.server_fixture"]`).
The names below are stable; other test files depend on them.

Constants
    ACCOUNT_A = "111111111111", ACCOUNT_B = "222222222222", REGION = "us-east-1", AUDIT_STORE = "lake-audit"
    PRINCIPALS: name -> Credential. "alice" (IAM user in A, sees A), "bob" (IAM user in B, sees B),
    "admin" (assumed role in A that sees A and B). The lake's default account is ACCOUNT_A, so stores created
    by the CLI/Python API (and the audit store) belong to A.

Fixtures
    server                 a started `ServerThread` on a fresh lake in tmp_path, auditing into AUDIT_STORE.
                           `server.url`, `server.lake`, `server.flush_audit()` (append queued audit events now),
                           `server.state` (the LakeServer: `.services`, `.audit`).
    cloudtrail_client      factory: `cloudtrail_client("alice")` -> boto3 CloudTrail client for the server
                           (endpoint_url, us-east-1, the principal's keys, no retries).
    data_client            factory: `data_client("bob")` -> boto3 cloudtrail-data client (PutAuditEvents).
    aws_cli                path of an `aws` executable: the one on PATH if `aws --version` works, else awscli
                           installed into a cached venv under ~/.cache/lake-test-awscli; skips if neither works.
    aws_run                `aws_run("alice", "cloudtrail", "list-event-data-stores")` -> parsed JSON output
                           (or text when the output is not JSON); raises AwsCliError(returncode, stderr) on
                           failure. Pass `check=False` to get the CompletedProcess instead.

Helpers
    signed_request(server, principal, body, *, target=None, service="cloudtrail", path="/", query="",
                   headers=None, when=None, tamper=None, secret=None, key_id=None) -> (status, headers, body)
        sends a raw request signed by botocore's SigV4Auth (for malformed-input and signature tests).
    audit_events(server) -> list of CloudTrail record dicts in the audit store (flushes first).
    expect(code, fn, *args) -> the ApiError `fn(*args)` raises, checked to have `code` and a one-line message
        (for handlers called directly with an ApiContext).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from lake.apicore import TARGET_PREFIX, ApiError
from lake.apiserver import ServerConfig, ServerThread
from lake.lake import Lake
from lake.sigv4 import Credential

ACCOUNT_A = "111111111111"
ACCOUNT_B = "222222222222"
REGION = "us-east-1"
AUDIT_STORE = "lake-audit"

PRINCIPALS: dict[str, Credential] = {
    "alice": Credential("AKIAALICE0000000TEST", "alice-secret-key-0000000000000000000000",
                        f"arn:aws:iam::{ACCOUNT_A}:user/alice", ACCOUNT_A, frozenset({ACCOUNT_A})),
    "bob": Credential("AKIABOB00000000000TEST", "bob-secret-key-00000000000000000000000000",
                      f"arn:aws:iam::{ACCOUNT_B}:user/bob", ACCOUNT_B, frozenset({ACCOUNT_B})),
    "admin": Credential("ASIAADMIN000000000TEST", "admin-secret-key-000000000000000000000000",
                        f"arn:aws:sts::{ACCOUNT_A}:assumed-role/LakeAdmin/admin-session", ACCOUNT_A,
                        frozenset({ACCOUNT_A, ACCOUNT_B})),
}

__all__ = ["expect", "ACCOUNT_A", "ACCOUNT_B", "REGION", "AUDIT_STORE", "PRINCIPALS", "server", "cloudtrail_client",
           "data_client", "aws_cli", "aws_run", "AwsCliError", "signed_request", "audit_events", "boto_client",
           "lake_serve_process"]


@pytest.fixture
def server(tmp_path):
    """A running server on a fresh lake (default account A), auditing into AUDIT_STORE."""
    lake = Lake(str(tmp_path / "lake"), region=REGION, account_id=ACCOUNT_A)
    config = ServerConfig(credentials=list(PRINCIPALS.values()), audit_store=AUDIT_STORE)
    srv = ServerThread(lake, config).start()
    try:
        yield srv
    finally:
        srv.stop()


def boto_client(server, service: str, principal: str = "alice"):
    """A boto3 client for `service` ("cloudtrail" or "cloudtrail-data") signed as `principal`."""
    import boto3
    from botocore.config import Config

    cred = PRINCIPALS[principal]
    session = boto3.session.Session(aws_access_key_id=cred.access_key_id,
                                    aws_secret_access_key=cred.secret_access_key, region_name=REGION)
    client = session.client(service, endpoint_url=server.url,
                            config=Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=120))
    # The server refuses a replayed mutating call (ThrottlingException, which SDKs retry). botocore signs no
    # per-call nonce, so two identical calls within one second are one signature; with retries off, tests
    # that repeat a call on purpose would meet the replay cache instead of the call. A signed nonce header
    # keeps each call distinct (test_server_hardening covers plain boto3 and its retry).
    client.meta.events.register("before-sign", _sign_a_nonce)
    return client


def _sign_a_nonce(request, **kwargs) -> None:
    import uuid

    if "X-Lake-Test-Nonce" in request.headers:  # HTTPHeaders would add a second one
        del request.headers["X-Lake-Test-Nonce"]
    request.headers["X-Lake-Test-Nonce"] = uuid.uuid4().hex


@pytest.fixture
def cloudtrail_client(server):
    return lambda principal="alice": boto_client(server, "cloudtrail", principal)


@pytest.fixture
def data_client(server):
    return lambda principal="alice": boto_client(server, "cloudtrail-data", principal)


def _works(exe: str) -> bool:
    try:
        return subprocess.run([exe, "--version"], capture_output=True, timeout=120).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def aws_cli() -> str:
    """An `aws` executable (AWS CLI): $LAKE_AWS_CLI (e.g. an AWS CLI v2, which alone has `verify-query-results`),
    else PATH, else a cached venv with `pip install awscli` (v1); else skip."""
    exe = os.environ.get("LAKE_AWS_CLI") or shutil.which("aws")
    if exe and _works(exe):
        return exe
    venv = Path.home() / ".cache" / "lake-test-awscli"
    exe = str(venv / "bin" / "aws")
    if os.path.exists(exe) and _works(exe):
        return exe
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300)
        subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "awscli"], check=True,
                       capture_output=True, timeout=900)
    except (OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"no AWS CLI: `aws` is not on PATH and installing awscli into {venv} failed ({e})")
    if not _works(exe):
        pytest.skip(f"no AWS CLI: {exe} does not run")
    return exe


@pytest.fixture(scope="session")
def aws_cli_v2() -> str:
    """An AWS CLI v2 (`verify-query-results` exists only there): $LAKE_AWS_CLI or PATH if they are v2, else
    one built once from Debian's package into a cached venv (tests/awscli_v2.py); else skip."""
    from tests.awscli_v2 import Unavailable, find_or_build

    try:
        return find_or_build(Path.home() / ".cache" / "lake-test-awscli-v2")
    except Unavailable as e:
        pytest.skip(str(e))


class AwsCliError(RuntimeError):
    def __init__(self, returncode: int, stderr: str):
        super().__init__(f"aws exited {returncode}: {stderr.strip()[-2000:]}")
        self.returncode = returncode
        self.stderr = stderr


def run_aws(exe: str, server, principal: str, *args: str, check: bool = True, timeout: float = 180):
    """Run the AWS CLI against the server as `principal`, isolated from the user's AWS configuration."""
    cred = PRINCIPALS[principal]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID=cred.access_key_id, AWS_SECRET_ACCESS_KEY=cred.secret_access_key,
               AWS_DEFAULT_REGION=REGION, AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull,
               AWS_PAGER="", AWS_MAX_ATTEMPTS="1")
    proc = subprocess.run([exe, *args, "--endpoint-url", server.url, "--output", "json"], env=env,
                          capture_output=True, text=True, timeout=timeout)
    if not check:
        return proc
    if proc.returncode != 0:
        raise AwsCliError(proc.returncode, proc.stderr)
    try:
        return json.loads(proc.stdout) if proc.stdout.strip() else None
    except json.JSONDecodeError:
        return proc.stdout


@pytest.fixture
def aws_run(aws_cli, server):
    return lambda principal, *args, **kw: run_aws(aws_cli, server, principal, *args, **kw)


def signed_request(server, principal: str | None, body: bytes | str | dict, *, target: str | None = None,
                   service: str = "cloudtrail", path: str = "/", query: str = "", headers: dict | None = None,
                   when: datetime | None = None, tamper=None, secret: str | None = None,
                   key_id: str | None = None):
    """Send one raw request signed with botocore's SigV4Auth; (status, headers, parsed JSON body or text).

    `target` is the operation name for CloudTrail (X-Amz-Target is built from it); `when` signs at another
    time (expired-signature tests); `tamper(request)` may change the request after signing; `secret` and
    `key_id` override the principal's keys; `principal=None` sends the request unsigned."""
    import urllib3
    from unittest import mock

    import botocore.auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    if isinstance(body, dict):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    hdrs = {"Content-Type": "application/x-amz-json-1.1" if service == "cloudtrail" else "application/json"}
    if target:
        hdrs["X-Amz-Target"] = TARGET_PREFIX + target
    hdrs.update(headers or {})
    url = server.url + path + (f"?{query}" if query else "")
    req = AWSRequest(method="POST", url=url, data=body, headers=hdrs)
    if principal is not None:
        cred = PRINCIPALS[principal]
        creds = Credentials(key_id or cred.access_key_id, secret or cred.secret_access_key)
        signer = botocore.auth.SigV4Auth(creds, service, REGION)
        if when is not None:
            with mock.patch.object(botocore.auth, "get_current_datetime", lambda: when.replace(tzinfo=None)):
                signer.add_auth(req)
        else:
            signer.add_auth(req)
    if tamper is not None:
        tamper(req)
    http = urllib3.PoolManager()
    resp = http.request("POST", req.url, body=req.body, headers=dict(req.headers.items()), retries=False)
    text = resp.data.decode()
    try:
        payload = json.loads(text) if text else None
    except json.JSONDecodeError:
        payload = text
    return resp.status, {k.lower(): v for k, v in resp.headers.items()}, payload


def lake_serve_process(tmp_path, *args: str, timeout: float = 30):
    """`lake serve` as a subprocess on a free loopback port with alice's key (credentials file 0600) and
    `args`; waits until /health answers. Returns (Popen with text stdout/stderr pipes, port)."""
    import socket
    import time

    import urllib3

    creds = tmp_path / "creds.json"
    a = PRINCIPALS["alice"]
    creds.write_text(json.dumps([{"access_key_id": a.access_key_id, "secret_access_key": a.secret_access_key,
                                  "principal_arn": a.principal_arn}]))
    os.chmod(creds, 0o600)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "LAKE_ACCOUNT_ID": ACCOUNT_A, "LAKE_REGION": REGION}
    proc = subprocess.Popen([sys.executable, "-m", "lake.cli", "--lake", str(tmp_path / "lake"), "serve", "--port",
                             str(port), "--credentials", str(creds), *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    http = urllib3.PoolManager()
    deadline = time.monotonic() + timeout
    while True:
        try:
            if http.request("GET", f"http://127.0.0.1:{port}/health", retries=False).status == 200:
                return proc, port
        except urllib3.exceptions.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"lake serve exited: {proc.communicate()[1][-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("lake serve did not come up")
        time.sleep(0.1)


def audit_events(server) -> list[dict]:
    """Every event in the audit store by eventTime, as CloudTrail records (after flushing the queue). The
    events of one second come in the order the store keeps them, not necessarily the order of the calls."""
    server.flush_audit()
    st = server.lake.store(AUDIT_STORE)
    table = st.to_arrow()
    recs = [json.loads(x) for x in table.column("eventjson").to_pylist()]
    return sorted(recs, key=lambda r: r["eventTime"])


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def expect(code: str, fn, *args):
    with pytest.raises(ApiError) as e:
        fn(*args)
    assert e.value.code == code, (e.value.code, e.value.message)
    assert "\n" not in e.value.message
    return e.value
