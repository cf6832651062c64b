"""Digest files and signing keys (reference 4.1-4.6, 11): the digest JSON and key layout, the chain, the
signature and where it is stored (S3 metadata on moto, a sidecar locally), restarts, Stop/StartLogging, and
the keys' fingerprint, PKCS#1 encoding, file modes, rotation windows and ListPublicKeys."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
from pathlib import Path
import stat
from datetime import datetime, timedelta, timezone

import pytest

from lake.apicore import ApiContext, ApiError, Principal
from lake.digest import (Destination, DigestWriter, LakeStateStore, MemoryStateStore, digest_key, key_for_log,
                         read_digest, string_to_sign)
from lake.keys import KeyRing, fingerprint, list_public_keys, load_public_der, verify_signature
from lake.lake import Lake

ACCOUNT = "111122223333"
REGION = "us-east-2"
ARN = f"arn:aws:cloudtrail:{REGION}:{ACCOUNT}:trail/your-trail-name"
T0 = datetime(2015, 8, 17, 13, 1, 31, tzinfo=timezone.utc)
FIELDS = ["awsAccountId", "digestStartTime", "digestEndTime", "digestS3Bucket", "digestS3Object",
          "digestPublicKeyFingerprint", "digestSignatureAlgorithm", "newestEventTime", "oldestEventTime",
          "previousDigestS3Bucket", "previousDigestS3Object", "previousDigestHashValue",
          "previousDigestHashAlgorithm", "previousDigestSignature", "logFiles"]


@pytest.fixture
def lake(tmp_path):
    return Lake(str(tmp_path / "lake"), region=REGION, account_id=ACCOUNT)


def writer(lake, dest_uri, state="_trails/t/state.json", prefix=None, bucket="S3-bucket-name", **kw):
    return DigestWriter(lake, dest_uri, None, bucket=bucket, key_prefix=prefix, account_id=ACCOUNT, region=REGION,
                        trail_arn=ARN, state_store=state, **kw)


def deliver(dest: Destination, w: DigestWriter, when: datetime, tag: str, prefix=None) -> tuple[str, bytes]:
    body = json.dumps({"Records": [{"eventTime": when.strftime("%Y-%m-%dT%H:%M:%SZ"), "eventName": tag}]}).encode()
    key = key_for_log(prefix, ACCOUNT, REGION, when, tag.ljust(16, "x"))
    dest.put(key, gzip.compress(body))
    w.record_log_file(key, body, when, when - timedelta(minutes=10))
    return key, body


def check_signature(lake, dest: Destination, key: str) -> dict:
    """The digest's signature verifies with its published key over AWS's string to sign; the digest."""
    digest, raw, meta = read_digest(dest, key)
    assert meta["signature-algorithm"] == "SHA256withRSA" and len(meta["signature"]) == 512
    pub = {k.fingerprint: k for k in KeyRing(lake).public_keys(REGION, T0 - timedelta(days=1),
                                                              T0 + timedelta(days=1))}
    to_sign = string_to_sign(digest["digestEndTime"], digest["digestS3Bucket"], digest["digestS3Object"], raw,
                             digest["previousDigestSignature"])
    assert verify_signature(pub[digest["digestPublicKeyFingerprint"]].der, bytes.fromhex(meta["signature"]),
                            to_sign)
    return digest


# ---- digest files ------------------------------------------------------------------------------------------

def test_digest_format_chain_and_sidecar(lake, tmp_path):
    dest_uri = str(tmp_path / "bucket")
    dest = Destination(dest_uri)
    w = writer(lake, dest_uri)
    w.start(T0)
    k1, b1 = deliver(dest, w, T0 + timedelta(minutes=40), "one")
    k2, b2 = deliver(dest, w, T0 + timedelta(minutes=50), "two")
    first = w.write_digest(T0 + timedelta(hours=1))
    assert first == ("AWSLogs/111122223333/CloudTrail-Digest/us-east-2/2015/08/17/111122223333_CloudTrail-Digest_"
                     "us-east-2_your-trail-name_us-east-2_20150817T140131Z.json.gz")
    raw_gz = (tmp_path / "bucket" / first).read_bytes()
    assert raw_gz[:2] == b"\x1f\x8b"  # gzip
    assert json.loads((tmp_path / "bucket" / (first + ".metadata.json")).read_text()).keys() == \
        {"signature", "signature-algorithm"}
    d1 = check_signature(lake, dest, first)
    assert list(d1) == FIELDS
    assert d1["digestStartTime"] == "2015-08-17T13:01:31Z" and d1["digestEndTime"] == "2015-08-17T14:01:31Z"
    assert d1["digestS3Bucket"] == "S3-bucket-name" and d1["digestS3Object"] == first
    assert d1["digestSignatureAlgorithm"] == "SHA256withRSA" and len(d1["digestPublicKeyFingerprint"]) == 32
    assert [d1[f] for f in FIELDS[9:14]] == [None] * 5  # the first digest of a chain
    assert d1["newestEventTime"] == "2015-08-17T13:51:31Z" and d1["oldestEventTime"] == "2015-08-17T13:31:31Z"
    assert d1["logFiles"] == [
        {"s3Bucket": "S3-bucket-name", "s3Object": k1, "hashValue": hashlib.sha256(b1).hexdigest(),
         "hashAlgorithm": "SHA-256", "newestEventTime": "2015-08-17T13:41:31Z",
         "oldestEventTime": "2015-08-17T13:31:31Z"},
        {"s3Bucket": "S3-bucket-name", "s3Object": k2, "hashValue": hashlib.sha256(b2).hexdigest(),
         "hashAlgorithm": "SHA-256", "newestEventTime": "2015-08-17T13:51:31Z",
         "oldestEventTime": "2015-08-17T13:41:31Z"}]
    # an hour without log files still gets its digest, chained to the first
    second = w.write_digest(T0 + timedelta(hours=2))
    d2 = check_signature(lake, dest, second)
    raw1 = gzip.decompress(raw_gz)
    assert d2["digestStartTime"] == d1["digestEndTime"] and d2["logFiles"] == []
    assert d2["newestEventTime"] is None and d2["oldestEventTime"] is None
    assert d2["previousDigestS3Bucket"] == "S3-bucket-name" and d2["previousDigestS3Object"] == first
    assert d2["previousDigestHashValue"] == hashlib.sha256(raw1).hexdigest()
    assert d2["previousDigestHashAlgorithm"] == "SHA-256"
    assert d2["previousDigestSignature"] == read_digest(dest, first)[2]["signature"]
    assert w.next_due == T0 + timedelta(hours=3)
    assert w.write_digest(T0 + timedelta(hours=2)) is None  # nothing new to cover


def test_key_layout_prefix_and_organization():
    end = datetime(2015, 8, 17, 15, 1, 31, tzinfo=timezone.utc)
    assert digest_key(key_prefix="/my/prefix/", account_id=ACCOUNT, region="eu-west-1", trail_name="t",
                      home_region="us-east-1", end=end, organization_id="o-abc123") == (
        "my/prefix/AWSLogs/o-abc123/111122223333/CloudTrail-Digest/eu-west-1/2015/08/17/"
        "111122223333_CloudTrail-Digest_eu-west-1_t_us-east-1_20150817T150131Z.json.gz")
    assert digest_key(key_prefix=None, account_id=ACCOUNT, region="eu-west-1", trail_name="t",
                      home_region="us-east-1", end=end, backfill=True).endswith("_20150817T150131Z_backfill.json.gz")
    assert string_to_sign("2015-08-12T04:01:31Z", "b", "k", b"x", None) == (
        b"2015-08-12T04:01:31Z\nb/k\n" + hashlib.sha256(b"x").hexdigest().encode() + b"\nnull")


def test_stop_writes_final_digest_and_start_begins_new_chain(lake, tmp_path):
    dest_uri = str(tmp_path / "bucket")
    dest = Destination(dest_uri)
    w = writer(lake, dest_uri, prefix="p")
    w.start(T0)
    a = w.write_digest(T0 + timedelta(hours=1))
    k, _ = deliver(dest, w, T0 + timedelta(hours=1, minutes=5), "late", prefix="p")
    final = w.stop(T0 + timedelta(hours=1, minutes=20))
    d = check_signature(lake, dest, final)
    assert d["digestEndTime"] == "2015-08-17T14:21:31Z" and [f["s3Object"] for f in d["logFiles"]] == [k]
    assert d["previousDigestS3Object"] == a and final.startswith("p/AWSLogs/")
    assert not w.running and w.next_due is None
    assert w.write_digest(T0 + timedelta(hours=2)) is None and w.stop(T0 + timedelta(hours=2)) is None
    w.start(T0 + timedelta(hours=3))
    b = w.write_digest(T0 + timedelta(hours=4))
    d = check_signature(lake, dest, b)
    assert d["digestStartTime"] == "2015-08-17T16:01:31Z"
    assert [d[f] for f in FIELDS[9:14]] == [None] * 5


def test_restart_continues_chain_without_losing_files(lake, tmp_path):
    dest_uri = str(tmp_path / "bucket")
    dest = Destination(dest_uri)
    w = writer(lake, dest_uri)
    w.start(T0)
    first = w.write_digest(T0 + timedelta(hours=1))
    k, _ = deliver(dest, w, T0 + timedelta(hours=1, minutes=3), "before-crash")
    w2 = writer(Lake(lake.uri, region=REGION, account_id=ACCOUNT), dest_uri)  # a new process
    k2, _ = deliver(dest, w2, T0 + timedelta(hours=1, minutes=8), "after-crash")
    w2.record_log_file(k2, b"ignored: a retried delivery", T0, T0)  # recorded once
    second = w2.write_digest(T0 + timedelta(hours=2))
    d = check_signature(lake, dest, second)
    assert d["previousDigestS3Object"] == first
    assert [f["s3Object"] for f in d["logFiles"]] == [k, k2]
    w2.record_log_file(k, b"reported again after the digest", T0, T0)  # already digested: not again
    assert check_signature(lake, dest, w2.write_digest(T0 + timedelta(hours=3)))["logFiles"] == []


def test_crash_while_writing_a_digest_is_finished_on_restart(lake, tmp_path, monkeypatch):
    dest_uri = str(tmp_path / "bucket")
    dest = Destination(dest_uri)
    state = MemoryStateStore()
    w = writer(lake, dest_uri, state=state)
    w.start(T0)
    k, _ = deliver(dest, w, T0 + timedelta(minutes=3), "x")

    def boom(*a, **kw):
        raise OSError("disk gone")

    monkeypatch.setattr(w.dest, "put", boom)
    with pytest.raises(OSError):
        w.write_digest(T0 + timedelta(hours=1))
    assert state.state["inflight"] is not None
    w2 = writer(lake, dest_uri, state=state)  # restart: the same signed bytes are written
    key = state.state["previous"]["key"]
    d = check_signature(lake, dest, key)
    assert [f["s3Object"] for f in d["logFiles"]] == [k] and state.state["pending"] == []
    d2 = check_signature(lake, dest, w2.write_digest(T0 + timedelta(hours=2)))
    assert d2["previousDigestS3Object"] == key and d2["logFiles"] == []


def test_state_in_lake_file(lake, tmp_path):
    w = writer(lake, str(tmp_path / "bucket"), state="_trails/x/s.json")
    w.start(T0)
    assert LakeStateStore(lake, "_trails/x/s.json").load()["window_start"] == "2015-08-17T13:01:31Z"


@pytest.mark.s3
def test_digest_on_s3_carries_signature_metadata(lake, s3_env):
    import boto3

    from tests.conftest import make_bucket

    bucket = make_bucket(s3_env)
    dest = Destination(f"s3://{bucket}")
    w = writer(lake, f"s3://{bucket}", bucket=bucket, prefix="logs")
    w.start(T0)
    deliver(dest, w, T0 + timedelta(minutes=30), "s3", prefix="logs")
    key = w.write_digest(T0 + timedelta(hours=1))
    s3 = boto3.client("s3", endpoint_url=s3_env, region_name="us-east-1")
    obj = s3.get_object(Bucket=bucket, Key=key)
    assert set(obj["Metadata"]) == {"signature", "signature-algorithm"}
    assert obj["Metadata"]["signature-algorithm"] == "SHA256withRSA"
    names = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert not any(n.endswith(".metadata.json") for n in names)  # S3 has metadata: no sidecar
    d = check_signature(lake, dest, key)
    assert d["digestS3Bucket"] == bucket and d["logFiles"][0]["s3Bucket"] == bucket
    d2 = check_signature(lake, dest, w.write_digest(T0 + timedelta(hours=2)))
    assert d2["previousDigestSignature"] == obj["Metadata"]["signature"]


# ---- keys -------------------------------------------------------------------------------------------------

def test_fingerprint_and_pkcs1_encoding(lake):
    key = KeyRing(lake).signing_key(REGION, T0)
    der = key.public.der
    assert key.public.value.startswith("MIIBCgKCAQEA") and len(der) == 270
    assert key.fingerprint == hashlib.md5(der).hexdigest() == fingerprint(der)
    assert len(key.fingerprint) == 32
    try:
        import rsa  # what AWS CLI v1 decodes ListPublicKeys' Value with
    except ImportError:
        rsa = None
    if rsa is not None:
        pk = rsa.PublicKey.load_pkcs1(base64.b64decode(key.public.value), format="DER")
        assert pk.e == 65537 and pk.n.bit_length() == 2048
        sig = key.sign(b"hello")
        assert rsa.verify(b"hello", sig, pk) == "SHA-256"
    pub = load_public_der(der)
    assert pub.key_size == 2048 and pub.public_numbers().e == 65537
    from cryptography.hazmat.primitives import serialization
    spki = pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(ValueError):
        load_public_der(spki)  # X.509 SubjectPublicKeyInfo is not what AWS CLI v1 accepts


def test_private_keys_are_never_world_readable(lake, tmp_path, monkeypatch):
    """Private keys live in the key store outside the lake (lake/keys.py), 0600 in 0700 directories; the lake
    holds public halves only."""
    ring = KeyRing(lake)
    key = ring.signing_key(REGION, T0)
    path = Path(ring.key_dir) / REGION / f"{key.fingerprint}.pem"
    assert not str(path).startswith(str(tmp_path / "lake"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(Path(ring.key_dir).stat().st_mode) == 0o700
    assert b"PRIVATE KEY" in path.read_bytes()
    assert not list((tmp_path / "lake").rglob("*.pem")) or \
        all(b"PRIVATE" not in p.read_bytes() for p in (tmp_path / "lake").rglob("*.pem"))
    public = tmp_path / "lake" / "_keys" / REGION / f"{key.fingerprint}.json"
    assert b"PRIVATE" not in public.read_bytes()
    monkeypatch.setenv("LAKE_PRIVATE_KEYS_DIR", str(tmp_path / "secrets"))  # the old name still works
    other = KeyRing(lake).signing_key("eu-west-1", T0)
    outside = tmp_path / "secrets" / "eu-west-1" / f"{other.fingerprint}.pem"
    assert stat.S_IMODE(outside.stat().st_mode) == 0o600
    assert not (tmp_path / "lake" / "_keys" / "eu-west-1" / "private").exists()


def test_rotation_windows(lake):
    ring = KeyRing(lake, rotation_days=30)
    k1 = ring.signing_key(REGION, T0)
    assert k1.public.valid_from == T0 and k1.public.valid_to == T0 + timedelta(days=30)
    assert ring.signing_key(REGION, T0 + timedelta(days=29)).fingerprint == k1.fingerprint
    k2 = ring.signing_key(REGION, T0 + timedelta(days=31))
    assert k2.fingerprint != k1.fingerprint and k2.public.valid_from == T0 + timedelta(days=31)
    # old keys stay published with their windows; a fresh process signs with the right one for the time
    fresh = KeyRing(Lake(lake.uri, region=REGION, account_id=ACCOUNT), rotation_days=30)
    assert [k.fingerprint for k in fresh.public_keys(REGION, T0, T0 + timedelta(hours=1))] == [k1.fingerprint]
    assert [k.fingerprint for k in fresh.public_keys(REGION, T0 + timedelta(days=32), T0 + timedelta(days=33))] \
        == [k2.fingerprint]
    assert [k.fingerprint for k in fresh.public_keys(REGION, T0, T0 + timedelta(days=40))] == \
        [k2.fingerprint, k1.fingerprint]
    assert fresh.signing_key(REGION, T0 + timedelta(days=1)).fingerprint == k1.fingerprint
    assert fresh.signing_key(REGION, T0 + timedelta(days=35)).fingerprint == k2.fingerprint
    assert fresh.public_keys("ap-south-1", T0, T0 + timedelta(days=40)) == []  # keys are per region


def test_list_public_keys_handler(lake):
    from lake.apiserver import operation_model, serialize

    k = KeyRing(lake).signing_key(REGION, T0)
    ctx = ApiContext(lake=lake, principal=Principal("AKIA", f"arn:aws:iam::{ACCOUNT}:root", ACCOUNT,
                                                    frozenset({ACCOUNT})), region=REGION, request_id="r",
                     now=T0 + timedelta(hours=5))
    out = list_public_keys(ctx, {})  # StartTime/EndTime default to now
    assert [x["Fingerprint"] for x in out["PublicKeyList"]] == [k.fingerprint]
    wire = serialize(operation_model("cloudtrail", "ListPublicKeys").output_shape,
                     list_public_keys(ctx, {"StartTime": T0.timestamp(), "EndTime": T0.timestamp() + 60}))
    assert wire == {"PublicKeyList": [{"Value": k.public.value, "ValidityStartTime": T0.timestamp(),
                                       "ValidityEndTime": (T0 + timedelta(days=30)).timestamp(),
                                       "Fingerprint": k.fingerprint}]}
    assert list_public_keys(ctx, {"StartTime": (T0 - timedelta(days=2)).timestamp(),
                                  "EndTime": (T0 - timedelta(days=1)).timestamp()}) == {"PublicKeyList": []}
    with pytest.raises(ApiError) as e:
        list_public_keys(ctx, {"StartTime": T0.timestamp(), "EndTime": T0.timestamp() - 1})
    assert e.value.code == "InvalidTimeRangeException"
    other = ApiContext(lake=lake, principal=ctx.principal, region="eu-west-1", request_id="r", now=ctx.now)
    assert list_public_keys(other, {"StartTime": T0.timestamp()})["PublicKeyList"] == []


def test_corrupt_public_key_file_is_named(lake, tmp_path):
    ring = KeyRing(lake)
    ring.signing_key(REGION, T0)
    bad = Path(ring.key_dir) / REGION / "deadbeef.json"
    bad.write_text("{}")
    with pytest.raises(ValueError, match="deadbeef.json is corrupt"):
        KeyRing(lake).public_keys(REGION, T0, T0)
    os.unlink(bad)
