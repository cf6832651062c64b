"""`lake validate-logs` and the real `aws cloudtrail validate-logs` on the same digest chains: a valid
multi-hour chain, each tamper case (modified / deleted log file, modified / deleted / moved digest, digest
signed by an unknown key) and the gap after StopLogging/StartLogging, on a local directory and on a moto S3
bucket. Messages and exit codes are compared with AWS's (reference 4.7), and where the AWS CLI can run, with
its actual output byte for byte. Also `aws cloudtrail verify-query-results` on a delivered result."""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner

from lake.digest import Destination, DigestWriter, key_for_log, read_digest
from lake.keys import KeyRing  # importing lake.keys registers ListPublicKeys with the server
from lake.lake import Lake
from lake.validatelogs import validate_logs_cmd

ACCOUNT = "111111111111"
REGION = "us-east-1"
TRAIL = "audit-trail"
ARN = f"arn:aws:cloudtrail:{REGION}:{ACCOUNT}:trail/{TRAIL}"
T0 = datetime(2026, 1, 1, 0, 0, 30, tzinfo=timezone.utc)
START, END = "2026-01-01T00:00:00Z", "2026-01-01T09:00:00Z"
PREFIX = "pfx"


@dataclass
class Trail:
    """Log files and digests written for ARN: chain 1 (3 hourly digests + the final one at StopLogging),
    then chain 2 after StartLogging (2 hourly digests)."""

    dest: Destination
    bucket: str
    digests: list[str] = field(default_factory=list)   # oldest first
    logs: dict[str, list[str]] = field(default_factory=dict)  # digest key -> its log keys

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"


def write_log(dest: Destination, when: datetime, n: int) -> tuple[str, bytes]:
    """A minimal CloudTrail log file at its AWS key; (key, decompressed bytes)."""
    records = [{"eventVersion": "1.08", "eventTime": (when - timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "eventSource": "s3.amazonaws.com", "eventName": "GetObject", "awsRegion": REGION,
                "eventID": f"{n:08d}-0000-4000-8000-{i:012d}", "recipientAccountId": ACCOUNT} for i in range(3)]
    body = json.dumps({"Records": records}).encode()
    key = key_for_log(PREFIX, ACCOUNT, REGION, when, f"{n:016d}")
    dest.put(key, gzip.compress(body))
    return key, body


def build_trail(lk: Lake, dest_uri: str, bucket: str) -> Trail:
    dest = Destination(dest_uri)
    trail = Trail(dest, bucket)
    w = DigestWriter(lk, dest_uri, None, bucket=bucket, key_prefix=PREFIX, account_id=ACCOUNT, region=REGION,
                     trail_arn=ARN, state_store="_trails/audit-trail/digest-state.json")
    n = 0

    def deliver(hour_start: datetime, minutes: tuple[int, ...]) -> list[str]:
        nonlocal n
        keys = []
        for m in minutes:
            n += 1
            when = hour_start + timedelta(minutes=m)
            key, body = write_log(dest, when, n)
            w.record_log_file(key, body, when - timedelta(seconds=20), when - timedelta(minutes=2))
            keys.append(key)
        return keys

    w.start(T0)
    for h in range(3):  # hours 0-2: one digest an hour, the middle one with no log files
        logs = deliver(T0 + timedelta(hours=h), () if h == 1 else (5, 35))
        trail.digests.append(w.write_digest(T0 + timedelta(hours=h + 1)))
        trail.logs[trail.digests[-1]] = logs
    logs = deliver(T0 + timedelta(hours=3), (10,))
    trail.digests.append(w.stop(T0 + timedelta(hours=3, minutes=30)))  # StopLogging: final digest
    trail.logs[trail.digests[-1]] = logs
    w.start(T0 + timedelta(hours=5))  # StartLogging: a new chain
    for h in range(5, 7):
        logs = deliver(T0 + timedelta(hours=h), (20,))
        trail.digests.append(w.write_digest(T0 + timedelta(hours=h + 1)))
        trail.logs[trail.digests[-1]] = logs
    return trail


# ---- tampering ---------------------------------------------------------------------------------------------

def tamper_modify_log(t: Trail) -> None:
    key = t.logs[t.digests[2]][0]
    body = gzip.decompress(t.dest.get(key)).replace(b"GetObject", b"PutObject")
    t.dest.put(key, gzip.compress(body))


def tamper_delete_log(t: Trail) -> None:
    t.dest.storage.delete(t.logs[t.digests[4]][0])


def _rewrite_digest(t: Trail, key: str, change, metadata=None) -> None:
    digest, raw, meta = read_digest(t.dest, key)
    change(digest)
    t.dest.put(key, gzip.compress(json.dumps(digest).encode()), metadata or meta)


def tamper_modify_digest(t: Trail) -> None:
    _rewrite_digest(t, t.digests[2], lambda d: d["logFiles"].pop())


def tamper_delete_digest(t: Trail) -> None:
    t.dest.storage.delete(t.digests[1])
    t.dest.storage.delete(t.digests[1] + ".metadata.json")


def tamper_move_digest(t: Trail) -> None:
    """The newest digest moved to the key of a digest 10 minutes later (so it is still listed)."""
    old = t.digests[-1]
    new = old.replace("T070030Z", "T071030Z")
    t.dest.put(new, t.dest.get(old), t.dest.metadata(old))
    t.dest.storage.delete(old)
    t.dest.storage.delete(old + ".metadata.json")


def tamper_unknown_key(t: Trail) -> None:
    """Digest 5 re-signed, correctly, by a key that ListPublicKeys does not know."""
    key = t.digests[5]
    alien_lake = Lake(str(Path(os.environ["LAKE_TEST_TMP"]) / "alien"), region=REGION, account_id=ACCOUNT)
    signer = KeyRing(alien_lake).signing_key(REGION, T0)
    digest, raw, meta = read_digest(t.dest, key)
    digest["digestPublicKeyFingerprint"] = signer.fingerprint
    raw = json.dumps(digest).encode()
    to_sign = (f"{digest['digestEndTime']}\n{t.bucket}/{key}\n{hashlib.sha256(raw).hexdigest()}\n"
               f"{digest['previousDigestSignature']}").encode()
    t.dest.put(key, gzip.compress(raw), {"signature": signer.sign(to_sign).hex(),
                                         "signature-algorithm": "SHA256withRSA"})


def expected(t: Trail, case: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) the AWS CLI prints for `case` (non-verbose)."""
    d = t.digests
    head = f"Validating log files for trail {ARN} between {START} and {END}\n\n"
    gap = ("No log files were delivered by CloudTrail between 2026-01-01T03:30:30Z and "
           "2026-01-01T05:00:30Z\n\n")
    found = "Results found for 2026-01-01T00:00:30Z to 2026-01-01T07:00:30Z:\n"
    req = f"Results requested for {START} to {END}\n"
    if case == "valid":
        return 0, head + req + found + "\n6/6 digest files valid\n7/7 log files valid\n", gap
    if case == "modify_log":
        err = gap + f"Log file\t{t.uri(t.logs[d[2]][0])}\tINVALID: hash value doesn't match\n\n"
        return 1, head + req + found + "\n6/6 digest files valid\n6/7 log files valid, 1/7 log files INVALID\n", err
    if case == "delete_log":
        err = f"Log file\t{t.uri(t.logs[d[4]][0])}\tINVALID: not found\n\n" + gap
        return 1, head + req + found + "\n6/6 digest files valid\n6/7 log files valid, 1/7 log files INVALID\n", err
    if case == "modify_digest":
        err = gap + f"Digest file\t{t.uri(d[2])}\tINVALID: signature verification failed\n\n"
        return 1, head + req + found + ("\n5/6 digest files valid, 1/6 digest files INVALID\n"
                                        "5/5 log files valid\n"), err
    if case == "delete_digest":
        err = gap + f"Digest file\t{t.uri(d[1])}\tINVALID: not found\n\n"
        return 1, head + req + found + ("\n5/6 digest files valid, 1/6 digest files INVALID\n"
                                        "7/7 log files valid\n"), err
    if case == "move_digest":
        moved = d[-1].replace("T070030Z", "T071030Z")
        err = f"Digest file\t{t.uri(moved)}\tINVALID: has been moved from its original location\n\n" + gap
        found5 = "Results found for 2026-01-01T00:00:30Z to 2026-01-01T06:00:30Z:\n"
        return 1, head + req + found5 + ("\n5/6 digest files valid, 1/6 digest files INVALID\n"
                                         "6/6 log files valid\n"), err
    if case == "unknown_key":
        fp = read_digest(t.dest, d[5])[0]["digestPublicKeyFingerprint"]
        err = (f"Digest file\t{t.uri(d[5])}\tINVALID: public key not found in region {REGION} for fingerprint "
               f"{fp}\n\n" + gap)
        found5 = "Results found for 2026-01-01T00:00:30Z to 2026-01-01T06:00:30Z:\n"
        return 1, head + req + found5 + ("\n5/6 digest files valid, 1/6 digest files INVALID\n"
                                        "6/6 log files valid\n"), err
    raise AssertionError(case)


CASES = {"valid": None, "modify_log": tamper_modify_log, "delete_log": tamper_delete_log,
         "modify_digest": tamper_modify_digest, "delete_digest": tamper_delete_digest,
         "move_digest": tamper_move_digest, "unknown_key": tamper_unknown_key}


class _Obj:
    """What the `lake` group puts in the click context: the lake of `--lake`."""

    def __init__(self, lk):
        self.lake = lk


def run_lake(lk: Lake, *args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(validate_logs_cmd, ["--trail-arn", ARN, "--start-time", START, "--end-time", END,
                                                 *args], obj=_Obj(lk), catch_exceptions=False)
    return res.exit_code, res.stdout, res.stderr


@pytest.fixture(autouse=True)
def _tmp_env(tmp_path, monkeypatch):
    monkeypatch.setenv("LAKE_TEST_TMP", str(tmp_path))
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.delenv("AWS_REGION", raising=False)


# ---- local directory --------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", list(CASES))
def test_local_directory(tmp_path, case):
    lk = Lake(str(tmp_path / "lake"), region=REGION, account_id=ACCOUNT)
    trail = build_trail(lk, str(tmp_path / "bucket"), "my-bucket")
    if CASES[case]:
        CASES[case](trail)
    got = run_lake(lk, "--local", str(tmp_path / "bucket"), "--s3-bucket", "my-bucket", "--s3-prefix", PREFIX)
    assert got == expected(trail, case)


def test_local_directory_bucket_from_digests_and_verbose(tmp_path):
    lk = Lake(str(tmp_path / "lake"), region=REGION, account_id=ACCOUNT)
    trail = build_trail(lk, str(tmp_path / "bucket"), "my-bucket")
    code, out, err = run_lake(lk, "--local", str(tmp_path / "bucket"), "--s3-prefix", PREFIX, "--verbose")
    assert code == 0
    lines = out.splitlines()
    assert lines[2] == f"Digest file\t{trail.uri(trail.digests[-1])}\tvalid"
    assert sum(line.startswith("Digest file\t") and line.endswith("\tvalid") for line in lines) == 6
    assert sum(line.startswith("Log file\t") and line.endswith("\tvalid") for line in lines) == 7
    assert err.startswith("\nNo log files were delivered by CloudTrail between")  # after a verbose line


def test_local_copy_without_sidecars(tmp_path):
    """A copy made without object metadata (e.g. `aws s3 sync`): every digest but the newest is still
    checked, its signature vouched for by the next newer digest's previousDigestSignature."""
    lk = Lake(str(tmp_path / "lake"), region=REGION, account_id=ACCOUNT)
    trail = build_trail(lk, str(tmp_path / "bucket"), "my-bucket")
    for p in (tmp_path / "bucket").rglob("*.metadata.json"):
        p.unlink()
    code, out, err = run_lake(lk, "--local", str(tmp_path / "bucket"), "--s3-bucket", "my-bucket",
                              "--s3-prefix", PREFIX)
    assert code == 1
    # the newest digest of each chain has no one to vouch for it
    assert f"Digest file\t{trail.uri(trail.digests[-1])}\tINVALID: signature verification failed" in err
    assert f"Digest file\t{trail.uri(trail.digests[3])}\tINVALID: signature verification failed" in err
    assert "\n4/6 digest files valid, 2/6 digest files INVALID\n" in out


def test_arguments_and_fatal_errors(tmp_path):
    lk = Lake(str(tmp_path / "lake"), region=REGION, account_id=ACCOUNT)
    (tmp_path / "empty").mkdir()
    res = CliRunner().invoke(validate_logs_cmd, ["--trail-arn", "arn:aws:cloudtrail:us-east-1:1:trail/x",
                                                 "--start-time", START, "--local", str(tmp_path / "empty")],
                             obj=_Obj(lk))
    assert res.exit_code == 255
    assert res.stderr == "\nInvalid trail ARN provided: arn:aws:cloudtrail:us-east-1:1:trail/x\n"
    code, out, err = run_lake(lk, "--local", str(tmp_path / "empty"), "--s3-bucket", "b", "--start-time",
                              "2026-01-02T00:00:00Z")
    assert code == 255 and "start-time must occur before end-time" in err
    code, out, err = run_lake(lk, "--local", str(tmp_path / "empty"), "--s3-bucket", "b")
    assert code == 255  # a lake without keys: AWS's own message
    assert out == f"Validating log files for trail {ARN} between {START} and {END}\n\n"
    assert err == "\nNo public keys found between 2026-01-01T00:00:00Z and 2026-01-01T11:00:00Z\n"
    KeyRing(lk).signing_key(REGION, T0)
    code, out, err = run_lake(lk, "--local", str(tmp_path / "empty"), "--s3-bucket", "b")
    assert (code, err) == (0, "")
    assert out.endswith(f"Results requested for {START} to {END}\nNo digests found\n")


# ---- moto S3 ----------------------------------------------------------------------------------------------

def make_bucket(endpoint: str) -> str:
    from tests.conftest import make_bucket as mk

    return mk(endpoint)


@pytest.mark.s3
@pytest.mark.parametrize("case", ["valid", "modify_digest", "move_digest", "delete_log"])
def test_s3_bucket(tmp_path, s3_env, case):
    bucket = make_bucket(s3_env)
    lk = Lake(str(tmp_path / "lake"), region=REGION, account_id=ACCOUNT)
    trail = build_trail(lk, f"s3://{bucket}", bucket)
    if CASES[case]:
        CASES[case](trail)
    got = run_lake(lk, "--s3-bucket", bucket, "--s3-prefix", PREFIX)
    assert got == expected(trail, case)


# ---- the real AWS CLI ------------------------------------------------------------------------------------

try:
    from tests.server_fixture import PRINCIPALS, ServerConfig, ServerThread, aws_cli, aws_cli_v2  # noqa: F401
    HAVE_SERVER = True
except ImportError:  # the server is built separately
    HAVE_SERVER = False

needs_server = pytest.mark.skipif(not HAVE_SERVER, reason="tests/server_fixture.py (lake serve) is not present")


@pytest.fixture
def served(tmp_path):
    """A Lake server on loopback (anonymous on loopback plus alice's keys) for a fresh lake."""
    lk = Lake(str(tmp_path / "lake"), region=REGION, account_id=ACCOUNT)
    srv = ServerThread(lk, ServerConfig(credentials=list(PRINCIPALS.values()))).start()
    try:
        yield srv
    finally:
        srv.stop()


def run_aws(exe: str, server_url: str, s3_endpoint: str, *args: str) -> subprocess.CompletedProcess:
    cred = PRINCIPALS["alice"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID=cred.access_key_id, AWS_SECRET_ACCESS_KEY=cred.secret_access_key,
               AWS_DEFAULT_REGION=REGION, AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull,
               AWS_PAGER="", AWS_MAX_ATTEMPTS="1", AWS_ENDPOINT_URL_S3=s3_endpoint)
    return subprocess.run([exe, *args, "--endpoint-url", server_url], env=env, capture_output=True, text=True,
                          timeout=300)


@needs_server
@pytest.mark.s3
@pytest.mark.parametrize("case", list(CASES))
def test_aws_cli_validate_logs(served, aws_cli, s3_env, case, monkeypatch):
    """The real `aws cloudtrail validate-logs` against `lake serve` (ListPublicKeys) and moto (the bucket)
    prints AWS's verdict, and `lake validate-logs` prints the very same bytes, through the server and with
    keys from the lake."""
    bucket = make_bucket(s3_env)
    trail = build_trail(served.lake, f"s3://{bucket}", bucket)
    if CASES[case]:
        CASES[case](trail)
    proc = run_aws(aws_cli, served.url, s3_env, "cloudtrail", "validate-logs", "--trail-arn", ARN,
                   "--start-time", START, "--end-time", END, "--s3-bucket", bucket, "--s3-prefix", PREFIX)
    want = expected(trail, case)
    assert (proc.returncode, proc.stdout, proc.stderr) == want
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", PRINCIPALS["alice"].access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", PRINCIPALS["alice"].secret_access_key)
    assert run_lake(served.lake, "--s3-bucket", bucket, "--s3-prefix", PREFIX, "--endpoint-url",
                    served.url) == want
    # and a local copy of the bucket (sidecars instead of metadata) gets the same verdict
    local = Path(os.environ["LAKE_TEST_TMP"]) / "copy"
    copy = Destination(str(local))
    for key in trail.dest.list_after("", ""):
        copy.put(key, trail.dest.get(key), trail.dest.metadata(key) or None)
    assert run_lake(served.lake, "--local", str(local), "--s3-bucket", bucket, "--s3-prefix", PREFIX) == want


@needs_server
@pytest.mark.s3
def test_aws_cli_verbose_multi_hour_chain(served, aws_cli, s3_env):
    bucket = make_bucket(s3_env)
    build_trail(served.lake, f"s3://{bucket}", bucket)
    proc = run_aws(aws_cli, served.url, s3_env, "cloudtrail", "validate-logs", "--trail-arn", ARN,
                   "--start-time", START, "--end-time", END, "--s3-bucket", bucket, "--s3-prefix", PREFIX,
                   "--verbose")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("\tvalid\n") == 13
    assert run_lake(served.lake, "--s3-bucket", bucket, "--s3-prefix", PREFIX, "--verbose") == \
        (0, proc.stdout, proc.stderr)


def test_list_public_keys_via_boto(tmp_path):
    """What the AWS CLI receives from ListPublicKeys: one base64 PKCS#1 DER per key, epoch windows."""
    if not HAVE_SERVER:
        pytest.skip("tests/server_fixture.py (lake serve) is not present")
    from tests.server_fixture import boto_client

    lk = Lake(str(tmp_path / "lake"), region=REGION, account_id=ACCOUNT)
    key = KeyRing(lk).signing_key(REGION, T0)
    srv = ServerThread(lk, ServerConfig(credentials=list(PRINCIPALS.values()))).start()
    try:
        client = boto_client(srv, "cloudtrail")
        got = client.list_public_keys(StartTime=T0, EndTime=T0 + timedelta(hours=2))["PublicKeyList"]
        assert [k["Fingerprint"] for k in got] == [key.fingerprint]
        assert got[0]["Value"] == key.public.der  # botocore decoded the base64 blob
        assert got[0]["ValidityStartTime"] == T0.replace(microsecond=0)
        assert client.list_public_keys(StartTime=T0 - timedelta(days=3),
                                       EndTime=T0 - timedelta(days=2))["PublicKeyList"] == []
        with pytest.raises(client.exceptions.InvalidTimeRangeException):
            client.list_public_keys(StartTime=T0, EndTime=T0 - timedelta(hours=1))
    finally:
        srv.stop()


# ---- query results: verify-query-results --------------------------------------------------------------------

def verify_like_aws_cli_v2(list_public_keys, folder: Path) -> None:
    """What `aws cloudtrail verify-query-results --local-export-path` (AWS CLI v2) does, step by step."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    sign = json.loads((folder / "result_sign.json").read_text())
    if not sign["files"]:
        raise ValueError("No export file was found in sign file.")
    for f in sign["files"]:
        got = hashlib.sha256((folder / f["fileName"]).read_bytes()).hexdigest()
        if got != f["fileHashValue"]:
            raise ValueError(f"File {f['fileName']} has inconsistent hash value with hash value recorded")
    when = datetime.strptime(sign["queryCompleteTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    keys = list_public_keys(StartTime=when, EndTime=when + timedelta(days=20))["PublicKeyList"]
    value = next(k["Value"] for k in keys if k["Fingerprint"] == sign["publicKeyFingerprint"])
    der = value if isinstance(value, bytes) else base64.b64decode(value)
    load_der_public_key(der).verify(binascii.unhexlify(sign["hashSignature"]),
                                    " ".join(f["fileHashValue"] for f in sign["files"]).encode(), PKCS1v15(),
                                    hashes.SHA256())


def _deliver_results(lk: Lake, root: Path) -> Path:
    from lake.resultsign import sign_query_results

    qid = "0f2d5c8e-1111-4222-8333-444455556666"
    folder = f"AWSLogs/{ACCOUNT}/CloudTrail-Lake/Query/2026/01/01/{qid}"
    files = [(f"{folder}/result_{i}.csv.gz", gzip.compress(f"eventid\nrow-{i}\n".encode(), mtime=0))
             for i in (1, 2)]
    for k, data in files:
        Destination(str(root)).put(k, data)
    key = sign_query_results(lk, REGION, ACCOUNT, str(root), files, qid, when=T0)
    assert key == f"{folder}/result_sign.json"
    return root / folder


def test_result_sign_file_verifies(tmp_path):
    from cryptography.exceptions import InvalidSignature

    lk = Lake(str(tmp_path / "lake"), region=REGION, account_id=ACCOUNT)
    folder = _deliver_results(lk, tmp_path / "out")
    sign = json.loads((folder / "result_sign.json").read_text())
    assert list(sign) == ["version", "region", "files", "hashAlgorithm", "signatureAlgorithm", "queryCompleteTime",
                          "hashSignature", "publicKeyFingerprint"]
    assert sign["queryCompleteTime"] == "2026-01-01T00:00:30Z" and len(sign["hashSignature"]) == 512
    assert [f["fileName"] for f in sign["files"]] == ["result_1.csv.gz", "result_2.csv.gz"]

    def list_public_keys(StartTime, EndTime):
        return {"PublicKeyList": [k.to_api() for k in KeyRing(lk).public_keys(REGION, StartTime, EndTime)]}

    verify_like_aws_cli_v2(list_public_keys, folder)
    (folder / "result_2.csv.gz").write_bytes(gzip.compress(b"eventid\nforged\n"))
    with pytest.raises(ValueError, match="inconsistent hash value"):
        verify_like_aws_cli_v2(list_public_keys, folder)
    sign["files"][1]["fileHashValue"] = hashlib.sha256((folder / "result_2.csv.gz").read_bytes()).hexdigest()
    (folder / "result_sign.json").write_text(json.dumps(sign))
    with pytest.raises(InvalidSignature):  # hashes fixed up too: the signature no longer matches
        verify_like_aws_cli_v2(list_public_keys, folder)


def test_result_signer_hook(tmp_path):
    from lake.resultsign import result_signer

    lk = Lake(str(tmp_path / "lake"), region=REGION, account_id=ACCOUNT)
    written = {}
    result_signer(lk)({"QueryId": "q"}, [("result_1.csv.gz", b"abc")], lambda n, d: written.update({n: d}))
    sign = json.loads(written["result_sign.json"])
    assert sign["files"] == [{"fileHashValue": hashlib.sha256(b"abc").hexdigest(), "fileName": "result_1.csv.gz"}]
    assert sign["region"] == REGION


@needs_server
@pytest.mark.s3
def test_aws_cli_verify_query_results(served, aws_cli_v2, s3_env, tmp_path):
    """AWS CLI v2's `verify-query-results` (v1, what `pip install awscli` gives, does not have it): accepts a
    delivered result, rejects an altered result file; with ListPublicKeys from `lake serve`."""
    folder = _deliver_results(served.lake, tmp_path / "out")
    proc = run_aws(aws_cli_v2, served.url, s3_env, "cloudtrail", "verify-query-results", "--local-export-path",
                   str(folder))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "Successfully validated sign and query result files\n"
    (folder / "result_1.csv.gz").write_bytes(gzip.compress(b"eventid\nforged\n"))
    proc = run_aws(aws_cli_v2, served.url, s3_env, "cloudtrail", "verify-query-results", "--local-export-path",
                   str(folder))
    assert proc.returncode != 0 and "inconsistent hash value" in proc.stderr


@needs_server
def test_verify_query_results_against_server(served, tmp_path):
    """The v2 CLI's algorithm with the public key fetched from `lake serve` by botocore."""
    from tests.server_fixture import boto_client

    folder = _deliver_results(served.lake, tmp_path / "out")
    verify_like_aws_cli_v2(boto_client(served, "cloudtrail").list_public_keys, folder)
    shutil.copy(folder / "result_1.csv.gz", folder / "result_2.csv.gz")
    with pytest.raises(ValueError, match="inconsistent hash value"):
        verify_like_aws_cli_v2(boto_client(served, "cloudtrail").list_public_keys, folder)


def test_trail_lookup_in_the_lake(tmp_path):
    """Without --s3-bucket: the trail's bucket and prefix from the lake's DescribeTrails, the bucket read
    where `lake trails map-bucket` points it."""
    trails = pytest.importorskip("lake.trails")
    pytest.importorskip("lake.api_trails")
    from lake.apicore import OPERATIONS, ApiContext, Principal

    lk = Lake(str(tmp_path / "lake"), region=REGION, account_id=ACCOUNT)
    trails.map_bucket(lk, "my-bucket", str(tmp_path / "bucket"))
    ctx = ApiContext(lake=lk, principal=Principal("AK", f"arn:aws:iam::{ACCOUNT}:root", ACCOUNT,
                                                  frozenset({ACCOUNT})), region=REGION, request_id="r")
    arn = OPERATIONS["CreateTrail"](ctx, {"Name": TRAIL, "S3BucketName": "my-bucket", "S3KeyPrefix": PREFIX,
                                          "EnableLogFileValidation": True})["TrailARN"]
    assert arn == ARN
    trail = build_trail(lk, str(tmp_path / "bucket"), "my-bucket")
    tamper_modify_log(trail)
    assert run_lake(lk) == expected(trail, "modify_log")
