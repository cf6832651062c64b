"""Integrity anchors (issue 15, points 8 and 9): readers of retired segments check them against the manifest;
keys live in a key store outside the lake; chain heads are signed and checkable against anchors held
elsewhere (`lake verify --trusted-key`, `--expect-head`, the key store's own record). docs/security.md."""

from __future__ import annotations

import gzip
import os
import stat
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pyarrow as pa
import pytest
from click.testing import CliRunner

from lake import delivery, maintenance, segments
from lake import log as lakelog
from lake.cli import cli
from lake.delivery import Deliverer, deliver_all
from lake.keys import KeyRing, PublicKey, fingerprint, pkcs1_der
from lake.lake import Lake
from lake.log import Log, apply_commit, encode_commit, sha256_hex
from lake.storage import Storage
from lake.trails import TrailCatalog, map_bucket
from lake.verify import verify
from tests.server_fixture import *  # noqa: F401,F403 - server, cloudtrail_client

A = "111111111111"
REGION = "us-east-1"


def ev(user: str = "alice", n: int = 0) -> dict:
    return {"eventVersion": "1.09", "eventTime": (datetime.now(timezone.utc) - timedelta(minutes=10)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"), "userIdentity": {"type": "IAMUser", "arn": f"arn:aws:iam::{A}:user/{user}",
                                                  "accountId": A, "userName": user},
            "eventSource": "ec2.amazonaws.com", "eventName": "DescribeInstances", "awsRegion": REGION,
            "requestParameters": {"n": n}, "eventID": str(uuid.uuid4()), "readOnly": True,
            "eventType": "AwsApiCall", "managementEvent": True, "recipientAccountId": A,
            "eventCategory": "Management"}


@pytest.fixture
def keydir(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "keystore"
    monkeypatch.setenv("LAKE_KEY_DIR", str(d))
    return d


def findings(result: dict) -> list[dict]:
    return [f for s in result["stores"] for f in s["findings"]] + list(result["catalog"])


# ---- the attacker --------------------------------------------------------------------------------------------

def attacker_rewrite(lake: Lake, store_id: str, at: int, *, drop_signatures: bool = False) -> str:
    """What someone with write access to the lake storage (and no access to the key store) can do: delete one
    event from the segment commit `at` added, rewrite commit `at` with the new segment's manifest entry,
    re-chain every later commit, rebuild the checkpoints after `at`, and (optionally) delete the signed heads
    that no longer match. Returns the deleted event's eventjson."""
    storage = lake.storage
    prefix = f"stores/{store_id}"
    lg = Log(storage, prefix)
    commits = list(lg.commits())
    body = orjson.loads(commits[at][2])
    entry = body["add"][0]
    table = segments.read_segment(storage, prefix, entry["path"])
    victim = table.column("eventjson")[0].as_py()
    kept = table.slice(1)
    storage.delete(f"{prefix}/{entry['path']}")
    new_entry = segments.write_segment(storage, prefix, kept, entry["account"], entry["date"],
                                       entry["path"].rsplit("/", 1)[-1])
    entry.update({k: new_entry[k] for k in ("rows", "bytes", "sha256")})
    snap = None
    for v, _, raw in commits:
        if v >= at:
            b = body if v == at else orjson.loads(raw)
            if v > at:
                b["prev"] = snap.head_hash
            raw = encode_commit(b)
            storage.write(lg.commit_path(v), raw)
        snap = apply_commit(snap, orjson.loads(raw), raw)
        if v > at and storage.exists(lg.checkpoint_path(v)):
            storage.delete(lg.checkpoint_path(v))
            storage.delete(lg.checkpoint_path(v) + ".sha256")
            lg.write_checkpoint(snap)
    if drop_signatures:
        for f in storage.list(f"{prefix}/_heads"):
            if int(f.path.rsplit("/", 1)[-1].split("-")[0]) >= at:
                storage.delete(f.path)
    return victim


@pytest.fixture
def history(tmp_path, keydir, monkeypatch):
    """A store with 61 commits after creation (checkpoints at 20, 40, 60), its recorded head and the
    exported chain-head public key."""
    monkeypatch.setattr(lakelog, "CHECKPOINT_INTERVAL", 20)
    lake = Lake(str(tmp_path / "lake"), region=REGION, account_id=A)
    st = lake.create_store("audit-store")
    for n in range(61):
        st.append([ev(n=n), ev(n=n)], source="import")
    result = verify(lake)
    assert result["ok"], findings(result)
    s = result["stores"][0]
    assert s["version"] == 61 and s["anchor"] != "none" and s["signed_version"] == 61
    out = CliRunner().invoke(cli, ["--lake", lake.uri, "keys", "export"])
    assert out.exit_code == 0, out.output
    pem = tmp_path / "trusted.pem"
    pem.write_text(out.stdout if hasattr(out, "stdout") else out.output)
    return lake, st, s["head"], str(pem)


def test_signed_heads_and_key_store_record(history, keydir):
    lake, st, head, pem = history
    version, digest = head.split(":")
    assert int(version) == 61 and len(digest) == 64
    # every commit's head is signed before the commit exists; the key store remembers the newest
    assert len(lake.storage.list(f"{st.prefix}/_heads")) == 62
    from lake.keys import keyring_for_storage
    assert keyring_for_storage(lake.storage).recorded_head(st.id) == (61, digest)
    ok = verify(lake, trusted_key=pem, expect_heads=[head, f"audit-store={head}", digest])
    assert ok["ok"], findings(ok)
    # private keys are outside the lake, 0600 in 0700 directories
    pems = list(keydir.rglob("*.pem"))
    assert pems and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in pems)
    assert stat.S_IMODE(keydir.stat().st_mode) == 0o700
    assert not any(b"PRIVATE" in p.read_bytes() for p in Path(lake.uri).rglob("*") if p.is_file())


def test_attack_rewrite_commit_50_detected_by_anchors(history, tmp_path, monkeypatch):
    """Issue 15 point 9: delete one event, rewrite commit 50, re-chain 51-61 and the checkpoint at 60."""
    lake, st, head, pem = history
    victim = attacker_rewrite(lake, st.id, 50)
    assert victim not in Lake(lake.uri).store("audit-store").to_arrow().column("eventjson").to_pylist()

    # A verifier without any anchor (elsewhere, no key store, no recorded head) cannot tell: documented limit.
    monkeypatch.setenv("LAKE_KEY_DIR", str(tmp_path / "elsewhere"))
    os.makedirs(tmp_path / "elsewhere")
    blind = verify(Lake(lake.uri))
    assert blind["ok"], findings(blind)
    assert blind["stores"][0]["anchor"] == "none"

    # An expected head recorded elsewhere catches it.
    got = verify(Lake(lake.uri), expect_heads=[head])
    assert not got["ok"] and any("expected head" in f["message"] and "rewritten" in f["message"]
                                 for f in findings(got)), findings(got)
    # So does the chain-head key held elsewhere: commit 50 is not what was signed, the head is unsigned.
    got = verify(Lake(lake.uri), trusted_key=pem)
    msgs = [f["message"] for f in findings(got)]
    assert not got["ok"]
    assert any(m.startswith("commit 50 is not the commit the key store signed") for m in msgs), msgs
    assert any(m.startswith("the newest commit 61 carries no signature by a trusted key") for m in msgs), msgs

    # On the machine that holds the key store, plain `lake verify` catches it too (the key store's record).
    monkeypatch.setenv("LAKE_KEY_DIR", str(tmp_path / "keystore"))
    got = verify(Lake(lake.uri))
    assert not got["ok"] and any("the newest head this lake's key store signed" in f["message"]
                                 for f in findings(got)), findings(got)

    # Through the CLI: one line per finding, exit status 1.
    monkeypatch.setenv("LAKE_KEY_DIR", str(tmp_path / "elsewhere"))
    out = CliRunner().invoke(cli, ["--lake", lake.uri, "verify", "--expect-head", head])
    assert out.exit_code == 1 and "Traceback" not in out.output
    assert "expected head" in out.output


def test_attack_that_also_deletes_signatures(history, tmp_path, monkeypatch):
    lake, st, head, pem = history
    attacker_rewrite(lake, st.id, 50, drop_signatures=True)
    monkeypatch.setenv("LAKE_KEY_DIR", str(tmp_path / "elsewhere"))
    got = verify(Lake(lake.uri), trusted_key=pem)
    assert not got["ok"]
    assert got["stores"][0]["signed_version"] == 49
    assert any("newest commit 61 carries no signature" in f["message"] for f in findings(got))
    # the attacker's own key signs nothing we trust
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from lake.keys import HeadSigner
    forger = HeadSigner(Ed25519PrivateKey.generate())
    snap = st.log.load()
    rec = forger.sign_head(st.id, snap.version, snap.head_hash)
    lake.storage.write(f"{st.prefix}/_heads/{snap.version:020d}-{snap.head_hash}.json", orjson.dumps(rec))
    lake.storage.write(f"_keys/_heads/{forger.fingerprint}.pub.pem", forger.public_pem())
    got = verify(Lake(lake.uri), trusted_key=pem)
    assert not got["ok"] and any("newest commit 61 carries no signature" in f["message"] for f in findings(got))


def test_truncation_caught_by_expected_head_and_key_store(history, tmp_path, monkeypatch):
    lake, st, head, pem = history
    for v in (61, 60):
        lake.storage.delete(f"{st.prefix}/_log/{v:020d}.json")
    for f in lake.storage.list(f"{st.prefix}/_log"):
        if ".checkpoint." in f.path and "060" in f.path.rsplit("/", 1)[-1]:
            lake.storage.delete(f.path)
    lake.storage.write(f"{st.prefix}/_log/_last_checkpoint", b'{"version":40}')
    got = verify(Lake(lake.uri))  # this machine's key store remembers head 61
    assert not got["ok"] and any("truncated" in f["message"] for f in findings(got)), findings(got)
    monkeypatch.setenv("LAKE_KEY_DIR", str(tmp_path / "elsewhere"))
    got = verify(Lake(lake.uri), expect_heads=[head])
    assert not got["ok"] and any("truncated" in f["message"] for f in findings(got)), findings(got)


def test_bad_expect_head_is_one_line(history):
    lake, st, head, pem = history
    out = CliRunner().invoke(cli, ["--lake", lake.uri, "verify", "--expect-head", "61:xyz"])
    assert out.exit_code == 1 and "Traceback" not in out.output and "--expect-head" in out.output
    out = CliRunner().invoke(cli, ["--lake", lake.uri, "verify", "--trusted-key", "/nonexistent.pem"])
    assert out.exit_code == 1 and "Traceback" not in out.output and "no such file" in out.output


def test_verify_prints_head_to_record(history):
    lake, st, head, pem = history
    out = CliRunner().invoke(cli, ["--lake", lake.uri, "verify"])
    assert out.exit_code == 0, out.output
    assert f"head audit-store={head}" in out.output


# ---- keys outside the lake ----------------------------------------------------------------------------------

def test_planted_public_key_is_not_published(server, cloudtrail_client):
    """A `_keys/<region>/*.json` written by a lake writer is neither published by ListPublicKeys nor used."""
    lake = server.lake
    real = KeyRing(lake).signing_key(REGION)
    from cryptography.hazmat.primitives.asymmetric import rsa

    der = pkcs1_der(rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key())
    now = datetime.now(timezone.utc)
    planted = PublicKey(REGION, fingerprint(der), der, now - timedelta(days=1), now + timedelta(days=30))
    lake.storage.write(f"_keys/{REGION}/{planted.fingerprint}.json", planted.to_json())
    keys = cloudtrail_client("alice").list_public_keys()["PublicKeyList"]
    fps = [k["Fingerprint"] for k in keys]
    assert real.fingerprint in fps and planted.fingerprint not in fps
    assert KeyRing(lake).signing_key(REGION).fingerprint == real.fingerprint


def test_legacy_keys_in_the_lake_are_moved_out(tmp_path, keydir, caplog):
    """A lake made before keys moved out: its private key in `_keys/<region>/private/` moves into the key
    store on first use (with a warning), keeps signing and stays published."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    lake = Lake(str(tmp_path / "lake"), region=REGION, account_id=A)
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    der = pkcs1_der(private.public_key())
    now = datetime.now(timezone.utc).replace(microsecond=0)
    pub = PublicKey(REGION, fingerprint(der), der, now - timedelta(days=1), now + timedelta(days=29))
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    lake.storage.create(f"_keys/{REGION}/{pub.fingerprint}.json", pub.to_json())
    lake.storage.create(f"_keys/{REGION}/private/{pub.fingerprint}.pem", pem)
    with caplog.at_level("WARNING", logger="lake.keys"):
        ring = KeyRing(lake)
        assert ring.signing_key(REGION).fingerprint == pub.fingerprint
    assert "moved 1 private key" in caplog.text
    assert not lake.storage.exists(f"_keys/{REGION}/private/{pub.fingerprint}.pem")
    assert (keydir / REGION / f"{pub.fingerprint}.pem").read_bytes() == pem
    assert [k.fingerprint for k in KeyRing(lake).public_keys(REGION)] == [pub.fingerprint]
    # after the first use, a private key that appears in the lake is ignored
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    oder = pkcs1_der(other.public_key())
    opub = PublicKey(REGION, fingerprint(oder), oder, now - timedelta(days=1), now + timedelta(days=29))
    lake.storage.create(f"_keys/{REGION}/{opub.fingerprint}.json", opub.to_json())
    lake.storage.create(f"_keys/{REGION}/private/{opub.fingerprint}.pem", other.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    assert [k.fingerprint for k in KeyRing(lake).public_keys(REGION)] == [pub.fingerprint]


# ---- point 8: readers of retired segments ------------------------------------------------------------------

def _mallory(lake: Lake, prefix: str, path: str) -> None:
    """Rewrite a segment in place the way the issue did: same rows, "mallory" instead of "alice"."""
    t = segments.read_segment(lake.storage, prefix, path)
    cols = {n: t.column(n) for n in t.column_names}
    for n in ("eventjson", "useridentity_arn", "useridentity_username"):
        if n in cols:
            cols[n] = pa.array([None if x is None else x.replace("alice", "mallory") for x in cols[n].to_pylist()],
                               t.schema.field(n).type)
    lake.storage.write(f"{prefix}/{path}", segments.encode(pa.table(cols, schema=t.schema)))


def test_delivery_refuses_a_rewritten_retired_segment(tmp_path, keydir):
    lake = Lake(str(tmp_path / "lake"), region=REGION, account_id=A)
    map_bucket(lake, "trail-bucket", str(tmp_path / "bucket"))
    st = lake.create_store("store-one")
    cat = TrailCatalog(lake)
    t = cat.set_logging(cat.create("main", "trail-bucket", owner=A, region=REGION, validation=True), True)
    for n in range(3):
        st.append([ev("alice", n) for _ in range(4)], source="import")
    first = st.snapshot().paths()
    assert maintenance.compact(st)["segments_in"] == 3  # retires the three segments before delivery
    _mallory(lake, st.prefix, first[1])

    with pytest.raises(getattr(delivery, "SegmentIntegrityError", LookupError)) as e:
        Deliverer(lake, t).run_once()
    assert "\n" not in str(e.value) and "does not match its manifest entry" in str(e.value)
    reports = deliver_all(lake, now=datetime.now(timezone.utc) + timedelta(hours=2))
    assert reports and "does not match its manifest entry" in reports[0].error
    status = orjson.loads(lake.storage.read(f"_trails/{t.id}/status.json"))
    assert "does not match its manifest entry" in status["LatestDeliveryError"]
    bucket = Storage(str(tmp_path / "bucket"))
    for f in bucket.list(""):
        body = bucket.read(f.path)
        text = gzip.decompress(body) if f.path.endswith(".gz") else body
        assert b"mallory" not in text
        if "CloudTrail-Digest" in f.path and f.path.endswith(".json.gz"):
            assert orjson.loads(text)["logFiles"] == []  # nothing was signed over the bad data

    # lake verify: the retired segment is still referenced (vacuum grace, and the trail has to deliver it)
    got = verify(lake)
    assert not got["ok"]
    assert any(f["kind"] == "tampered" and f["path"].endswith(first[1]) and "retired segment" in f["message"]
               for f in findings(got)), findings(got)


def test_delivery_of_untouched_segments_still_works(tmp_path, keydir):
    lake = Lake(str(tmp_path / "lake"), region=REGION, account_id=A)
    map_bucket(lake, "trail-bucket", str(tmp_path / "bucket"))
    st = lake.create_store("store-one")
    cat = TrailCatalog(lake)
    t = cat.set_logging(cat.create("main", "trail-bucket", owner=A, region=REGION), True)
    for n in range(3):
        st.append([ev("alice", n) for _ in range(4)], source="import")
    maintenance.compact(st)
    assert Deliverer(lake, t).run_once().events == 12
    assert verify(lake)["ok"]
    assert verify(lake)["stores"][0]["retired_checked"] == 3


@pytest.mark.parametrize("operation", ["compact", "retention"])
def test_maintenance_does_not_launder_a_changed_segment(tmp_path, keydir, operation):
    """Compaction and retention write new, freshly hashed segments from old ones: reading a changed segment
    unchecked would turn it into one that verifies. They stop with one line instead, committing nothing."""
    from lake.errors import LakeError

    lake = Lake(str(tmp_path / "lake"), region=REGION, account_id=A)
    st = lake.create_store("store-one")
    early, late = ev("alice", 0), ev("alice", 1)
    early["eventTime"], late["eventTime"] = "2026-11-01T00:00:00Z", "2026-11-01T12:00:00Z"
    st.append([early, late], source="import")  # one segment that straddles the cutoff below
    for n in range(2):
        st.append([ev("alice", n)], source="import")
    before = st.snapshot()
    target = [e["path"] for e in before.entries() if (e["date"] == "2026-11-01") == (operation == "retention")]
    _mallory(lake, st.prefix, target[0])
    cutoff = datetime(2026, 11, 1, 6, tzinfo=timezone.utc)
    with pytest.raises(LakeError) as e:
        if operation == "compact":
            maintenance.compact(st)
        else:
            st2 = lake.store("store-one")
            days = st2.snapshot().metadata["RetentionPeriod"]
            maintenance.retention(st2, now=cutoff + timedelta(days=days), dry_run=False)
    assert "does not match its manifest entry" in str(e.value) and "\n" not in str(e.value)
    assert st.snapshot().version == before.version  # nothing committed
    assert any(f["kind"] == "tampered" for f in findings(verify(lake)))


def test_unusable_key_store_is_one_line(tmp_path, monkeypatch):
    """A key store the lake process cannot create (here: under a regular file) fails the write with one line
    that says what to do, before anything is committed."""
    from lake.errors import LakeError

    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("LAKE_KEY_DIR", str(tmp_path / "file" / "keys"))
    lake = Lake(str(tmp_path / "lake"), region=REGION, account_id=A)
    with pytest.raises(LakeError) as e:
        lake.create_store("store-one")
    assert "LAKE_KEY_DIR" in str(e.value) and "\n" not in str(e.value)


def test_delivery_refuses_a_commit_the_key_store_did_not_sign(tmp_path, keydir):
    """A lake writer appends a well-formed commit (correct chain link, checksum and segment hash) holding
    forged events: delivery must not put them into log files covered by signed digests."""
    lake = Lake(str(tmp_path / "lake"), region=REGION, account_id=A)
    map_bucket(lake, "trail-bucket", str(tmp_path / "bucket"))
    st = lake.create_store("store-one")
    cat = TrailCatalog(lake)
    t = cat.set_logging(cat.create("main", "trail-bucket", owner=A, region=REGION, validation=True), True)
    st.append([ev("alice", 0) for _ in range(3)], source="import")
    assert Deliverer(lake, t).run_once().events == 3

    # the forgery: a segment of "mallory" events and commit N+1 that adds it, chained and checksummed
    snap = st.log.load()
    good = snap.entries()[0]
    original = lake.storage.read(f"{st.prefix}/{good['path']}")
    _mallory(lake, st.prefix, good["path"])
    forged_bytes = lake.storage.read(f"{st.prefix}/{good['path']}")
    lake.storage.write(f"{st.prefix}/{good['path']}", original)
    txn = uuid.uuid4().hex
    path = good["path"].rsplit("/", 1)[0] + f"/part-{txn}-00000.parquet"
    lake.storage.create(f"{st.prefix}/{path}", forged_bytes)
    last = orjson.loads(st.log.read_commit(snap.version)[1])
    entry = {**last["add"][0], "path": path, "sha256": sha256_hex(forged_bytes), "bytes": len(forged_bytes)}
    body = {"version": snap.version + 1, "timestamp": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "operation": last["operation"], "txn": txn, "prev": snap.head_hash, "add": [entry], "remove": [],
            "info": {}}
    lake.storage.create(st.log.commit_path(snap.version + 1), encode_commit(body))

    with pytest.raises(getattr(delivery, "SegmentIntegrityError", LookupError)) as e:
        Deliverer(lake, t).run_once()
    assert "carries no signature by this lake's key store" in str(e.value)
    bucket = Storage(str(tmp_path / "bucket"))
    for f in bucket.list(""):
        if f.path.endswith(".json.gz") and "Digest" not in f.path:
            assert b"mallory" not in gzip.decompress(bucket.read(f.path))
