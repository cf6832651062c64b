"""CloudTrail digest files: hourly, signed, chained summaries of the log files a trail delivered (reference
4.1-4.5), readable by `aws cloudtrail validate-logs` and `lake validate-logs`.

Interface for trail delivery (`lake/delivery.py`): one DigestWriter per (trail, account, source region).

    w = DigestWriter(lake, "s3://my-bucket", storage_options, bucket="my-bucket", key_prefix="prefix" or None,
                     account_id="111122223333", region="us-east-1", trail_arn=trail["TrailARN"],
                     state_store="_trails/<trail id>/digest/111122223333/us-east-1.json",
                     organization_id=None)          # "o-..." for organization trails
    w.start(when)                    # StartLogging / trail creation with validation on: a new chain begins
    w.record_log_file(key, decompressed_bytes, newest, oldest)   # after each log file is delivered
    w.write_digest(end)              # hourly (see `next_due`): digest of [previous end, end); returns its key
    w.stop(when)                     # StopLogging, trail deletion, validation turned off: final digest; the
                                     # next start() begins a new chain (previousDigest* fields null)

`dest_fs_uri` is the bucket root as an fsspec URI (`s3://bucket`, or a local directory standing in for the
bucket); keys (`key_prefix/AWSLogs/...`) are relative to it. `bucket` is the name written into the digest
(`digestS3Bucket`, `logFiles[].s3Bucket`). `state_store` is a path inside the lake (a str) or any object with
`load() -> dict | None` and `save(dict)`: the chain state (previous digest, window start, log files not yet
digested, a digest being written, the keys of the last ~2,000 log files digested) is saved after every call,
so a restarted process continues the same chain without losing or repeating a log file (a file reported twice
is digested once). `record_log_file`'s key is the log file's full key (with the prefix).

Digest files follow AWS byte for byte where it matters to validators:
- key `[prefix/]AWSLogs/[o-id/]<acct>/CloudTrail-Digest/<region>/YYYY/MM/DD/`
  `<acct>_CloudTrail-Digest_<region>_<trail name>_<home region>_<YYYYMMDDTHHMMSSZ>.json.gz` (digestEndTime);
- gzip (one member) of compact JSON with the fields of 4.2 in AWS's order; first digest of a chain has the
  five previousDigest* fields null; a digest with no log files has `logFiles: []` and null event times;
- logFiles[].hashValue = SHA-256 of the decompressed log file;
- signature = SHA256withRSA over `digestEndTime\\nbucket/key\\nsha256hex(uncompressed digest)\\nprevious
  signature or "null"`, hex, with the region's key (`lake/keys.py`) valid at digestEndTime;
- the signature is S3 user metadata `signature` + `signature-algorithm` on S3; where the destination has no
  object metadata (a local directory, other fsspec filesystems) it is in a sidecar file next to the digest,
  `<digest key>.metadata.json` = `{"signature": ..., "signature-algorithm": "SHA256withRSA"}` (the object's
  metadata as S3 would return it; the name does not end in .json.gz, so validators never take it for a digest).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import posixpath
import threading
from datetime import datetime, timedelta
from typing import Any, Protocol

import orjson

from .keys import SIGNATURE_ALGORITHM, iso_seconds, keyring, utc
from .storage import Storage

HASH_ALGORITHM = "SHA-256"
SIDECAR_SUFFIX = ".metadata.json"
DIGEST_INTERVAL = timedelta(hours=1)
KEY_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
STATE_VERSION = 1
RECENT_KEYS = 2000  # log files already digested that a retried delivery may report again


# ---- names and the string to sign ---------------------------------------------------------------------

def digest_key(*, key_prefix: str | None, account_id: str, region: str, trail_name: str, home_region: str,
               end: datetime, organization_id: str | None = None, backfill: bool = False) -> str:
    """The S3 key AWS gives the digest ending at `end` (reference 4.1)."""
    end = utc(end)
    org = f"{organization_id}/" if organization_id else ""
    key = (f"AWSLogs/{org}{account_id}/CloudTrail-Digest/{region}/{end:%Y/%m/%d}/"
           f"{account_id}_CloudTrail-Digest_{region}_{trail_name}_{home_region}_{end.strftime(KEY_DATE_FORMAT)}"
           f"{'_backfill' if backfill else ''}.json.gz")
    return f"{key_prefix.strip('/')}/{key}" if key_prefix and key_prefix.strip("/") else key


def string_to_sign(end_time: str, bucket: str, key: str, uncompressed: bytes, previous_signature: str | None
                   ) -> bytes:
    """Reference 4.4: what SHA256withRSA signs for a digest (`null` when the chain starts here)."""
    prev = "null" if previous_signature is None else previous_signature
    return f"{end_time}\n{bucket}/{key}\n{hashlib.sha256(uncompressed).hexdigest()}\n{prev}".encode()


def parse_trail_arn(arn: str) -> tuple[str, str, str]:
    """(home region, account id, trail name) of `arn:aws:cloudtrail:<region>:<acct>:trail/<name>`."""
    parts = arn.split(":")
    if len(parts) < 6 or parts[2] != "cloudtrail" or not parts[5].startswith("trail/"):
        raise ValueError(f"{arn!r} is not a trail ARN (arn:aws:cloudtrail:<region>:<account>:trail/<name>)")
    return parts[3], parts[4], arn.split("/")[-1]


# ---- destinations: objects with metadata --------------------------------------------------------------

class Destination:
    """A bucket (or a directory standing in for one): whole objects plus their user metadata.

    S3 keeps metadata on the object; elsewhere it lives in the `<key>.metadata.json` sidecar."""

    def __init__(self, uri: str, storage_options: dict[str, Any] | None = None):
        self.storage = Storage(uri, storage_options)
        self.s3 = self.storage.protocol in ("s3", "s3a")

    def __repr__(self) -> str:
        return f"<Destination {self.storage.uri}>"

    def uri_of(self, key: str) -> str:
        return self.storage.uri_of(key)

    def put(self, key: str, data: bytes, metadata: dict[str, str] | None = None) -> None:
        if self.s3:
            kwargs = {"Metadata": dict(metadata)} if metadata else {}
            self.storage.fs.pipe_file(self.storage.full(key), data, **kwargs)
            return
        if metadata:  # sidecar first: a digest never appears without its signature
            self.storage.write(key + SIDECAR_SUFFIX, orjson.dumps(metadata))
        self.storage.write(key, data)

    def get(self, key: str) -> bytes:
        """The object's bytes; FileNotFoundError when absent."""
        return self.storage.read(key)

    def metadata(self, key: str) -> dict[str, str]:
        """The object's user metadata ({} when it has none); FileNotFoundError when the object is absent."""
        if self.s3:
            return dict(self.storage.fs.metadata(self.storage.full(key)))
        try:
            meta = orjson.loads(self.storage.read(key + SIDECAR_SUFFIX))
        except FileNotFoundError:
            if not self.storage.exists(key):
                raise
            return {}
        except orjson.JSONDecodeError:
            return {}
        return {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}

    def list_after(self, prefix: str, marker: str) -> list[str]:
        """Keys starting with `prefix` that sort after `marker`, in S3's (byte-wise) order, like ListObjects
        with Prefix and Marker."""
        if self.s3:
            bucket, _, root = self.storage.root.partition("/")
            base = f"{root.strip('/')}/" if root.strip("/") else ""
            keys: list[str] = []
            token = None
            while True:
                args = {"Bucket": bucket, "Prefix": base + prefix, "StartAfter": base + marker}
                if token:
                    args["ContinuationToken"] = token
                resp = self.storage.fs.call_s3("list_objects_v2", **args)
                keys += [c["Key"][len(base):] for c in resp.get("Contents", [])]
                token = resp.get("NextContinuationToken")
                if not resp.get("IsTruncated") or not token:
                    break
            return keys
        directory = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        keys = [f.path for f in self.storage.list(directory) if f.path.startswith(prefix)
                and not f.path.endswith(SIDECAR_SUFFIX)]
        return sorted((k for k in keys if k > marker), key=lambda k: k.encode())


# ---- chain state --------------------------------------------------------------------------------------

class StateStore(Protocol):
    def load(self) -> dict | None: ...
    def save(self, state: dict) -> None: ...


class LakeStateStore:
    """Chain state in a JSON file inside the lake (atomically replaced on every save)."""

    def __init__(self, lake: Any, path: str):
        self.storage = lake.storage
        self.path = path

    def load(self) -> dict | None:
        try:
            return orjson.loads(self.storage.read(self.path))
        except FileNotFoundError:
            return None

    def save(self, state: dict) -> None:
        self.storage.write(self.path, orjson.dumps(state))


class MemoryStateStore:
    """Chain state kept in memory (tests, one-shot tools)."""

    def __init__(self, state: dict | None = None):
        self.state = state

    def load(self) -> dict | None:
        return None if self.state is None else orjson.loads(orjson.dumps(self.state))

    def save(self, state: dict) -> None:
        self.state = orjson.loads(orjson.dumps(state))


def _fresh_state() -> dict:
    return {"version": STATE_VERSION, "running": False, "window_start": None, "previous": None, "pending": [],
            "inflight": None, "recent": []}


# ---- the writer ---------------------------------------------------------------------------------------

class DigestWriter:
    """Hourly digest files for one trail and one (account, region): chain state persisted so restarts
    continue the chain. Thread-safe."""

    def __init__(self, lake: Any, dest_fs_uri: str, storage_options: dict[str, Any] | None = None, *,
                 bucket: str, key_prefix: str | None, account_id: str, region: str, trail_arn: str,
                 state_store: "StateStore | str", organization_id: str | None = None):
        self.lake = lake
        self.dest = Destination(dest_fs_uri, storage_options)
        self.bucket = bucket
        self.key_prefix = key_prefix.strip("/") if key_prefix else None
        self.account_id = account_id
        self.region = region
        self.trail_arn = trail_arn
        self.home_region, _, self.trail_name = parse_trail_arn(trail_arn)
        self.organization_id = organization_id
        self.state_store = LakeStateStore(lake, state_store) if isinstance(state_store, str) else state_store
        self._lock = threading.RLock()
        self._state = self.state_store.load() or _fresh_state()
        if self._state.get("version") != STATE_VERSION:
            raise ValueError(f"digest chain state of {trail_arn} ({account_id}, {region}) has version "
                             f"{self._state.get('version')!r}; this Lake reads version {STATE_VERSION}")
        self._finish_inflight()

    # -- public ---------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return bool(self._state["running"])

    @property
    def next_due(self) -> datetime | None:
        """When the next hourly digest is due (None while stopped)."""
        ws = self._state["window_start"]
        return utc(ws) + DIGEST_INTERVAL if self.running and ws else None

    def start(self, when: datetime) -> None:
        """Begin a chain at `when` (StartLogging, trail creation, validation turned on). No-op if running."""
        with self._lock:
            if self.running:
                return
            self._state.update(running=True, window_start=iso_seconds(when), previous=None, pending=[])
            self._save()

    def record_log_file(self, key: str, decompressed_bytes: bytes, newest: datetime, oldest: datetime) -> None:
        """Note one delivered log file for the next digest. Starts a chain at `newest` if none is running
        (call `start` first for an exact digestStartTime)."""
        entry = {"s3Bucket": self.bucket, "s3Object": key,
                 "hashValue": hashlib.sha256(decompressed_bytes).hexdigest(), "hashAlgorithm": HASH_ALGORITHM,
                 "newestEventTime": iso_seconds(newest), "oldestEventTime": iso_seconds(oldest)}
        with self._lock:
            if not self.running:
                self.start(newest)
            if key in self._state.get("recent", ()) or any(e["s3Object"] == key for e in self._state["pending"]):
                return  # a delivery retried after a crash: one entry per file, in one digest
            self._state["pending"].append(entry)
            self._save()

    def write_digest(self, end: datetime) -> str | None:
        """Write the digest of [window start, end) with every log file recorded since the last digest, even
        none; its key, or None when stopped or when `end` is not after the window start."""
        with self._lock:
            self._finish_inflight()
            if not self.running:
                return None
            end_s = iso_seconds(end)
            if utc(end_s) <= utc(self._state["window_start"]):
                return None
            return self._write(end_s)

    def stop(self, when: datetime) -> str | None:
        """The final digest (files up to `when`), then end the chain; the key written, if any."""
        with self._lock:
            self._finish_inflight()
            if not self.running:
                return None
            key = None
            if utc(iso_seconds(when)) > utc(self._state["window_start"]) or self._state["pending"]:
                end = max(utc(iso_seconds(when)), utc(self._state["window_start"]) + timedelta(seconds=1))
                key = self._write(iso_seconds(end))
            self._state.update(running=False, window_start=None, previous=None, pending=[])
            self._save()
            return key

    # -- internals ------------------------------------------------------------------------------------
    def _save(self) -> None:
        self.state_store.save(self._state)

    def _write(self, end_s: str) -> str:
        """Build, sign and write one digest ending at `end_s`; advance the chain."""
        end = utc(end_s)
        key = digest_key(key_prefix=self.key_prefix, account_id=self.account_id, region=self.region,
                         trail_name=self.trail_name, home_region=self.home_region, end=end,
                         organization_id=self.organization_id)
        signer = keyring(self.lake).signing_key(self.region, end)
        prev = self._state["previous"]
        logs = list(self._state["pending"])
        newest = max((e["newestEventTime"] for e in logs), default=None)
        oldest = min((e["oldestEventTime"] for e in logs), default=None)
        body = {
            "awsAccountId": self.account_id,
            "digestStartTime": self._state["window_start"],
            "digestEndTime": end_s,
            "digestS3Bucket": self.bucket,
            "digestS3Object": key,
            "digestPublicKeyFingerprint": signer.fingerprint,
            "digestSignatureAlgorithm": SIGNATURE_ALGORITHM,
            "newestEventTime": newest,
            "oldestEventTime": oldest,
            "previousDigestS3Bucket": prev["bucket"] if prev else None,
            "previousDigestS3Object": prev["key"] if prev else None,
            "previousDigestHashValue": prev["hash"] if prev else None,
            "previousDigestHashAlgorithm": HASH_ALGORITHM if prev else None,
            "previousDigestSignature": prev["signature"] if prev else None,
            "logFiles": logs,
        }
        raw = orjson.dumps(body)
        signature = signer.sign(string_to_sign(end_s, self.bucket, key, raw, prev["signature"] if prev else None)
                                ).hex()
        # Write-ahead: the signed digest goes into the state before the object, so a crash in between is
        # finished on restart with the very same bytes (never a second, different digest for the window).
        self._state["inflight"] = {"key": key, "end": end_s, "body": base64.b64encode(raw).decode(),
                                   "signature": signature}
        self._save()
        self._finish_inflight()
        return key

    def _finish_inflight(self) -> None:
        """Put the digest recorded as being written (again, if it already was) and advance the chain."""
        job = self._state.get("inflight")
        if not job:
            return
        raw = base64.b64decode(job["body"])
        self.dest.put(job["key"], gzip.compress(raw, mtime=0),
                      {"signature": job["signature"], "signature-algorithm": SIGNATURE_ALGORITHM})
        digested = {e["s3Object"] for e in orjson.loads(raw)["logFiles"]}
        self._state.update(
            inflight=None, window_start=job["end"],
            previous={"bucket": self.bucket, "key": job["key"], "hash": hashlib.sha256(raw).hexdigest(),
                      "signature": job["signature"]},
            pending=[e for e in self._state["pending"] if e["s3Object"] not in digested],
            recent=(self._state.get("recent", []) + sorted(digested))[-RECENT_KEYS:])
        self._save()


def read_digest(dest: Destination, key: str) -> tuple[dict, bytes, dict[str, str]]:
    """(parsed digest, uncompressed bytes, object metadata) of a digest object (for tools and tests)."""
    raw = gzip.decompress(dest.get(key))
    return orjson.loads(raw), raw, dest.metadata(key)


def key_for_log(key_prefix: str | None, account_id: str, region: str, when: datetime, unique: str,
                organization_id: str | None = None) -> str:
    """A CloudTrail log file key (reference 3.1-3.2), for tests and tools that write log files by hand."""
    when = utc(when)
    org = f"{organization_id}/" if organization_id else ""
    key = (f"AWSLogs/{org}{account_id}/CloudTrail/{region}/{when:%Y/%m/%d}/"
           f"{account_id}_CloudTrail_{region}_{when:%Y%m%dT%H%MZ}_{unique}.json.gz")
    return posixpath.join(key_prefix.strip("/"), key) if key_prefix and key_prefix.strip("/") else key


__all__ = ["DigestWriter", "Destination", "LakeStateStore", "MemoryStateStore", "digest_key", "string_to_sign",
           "parse_trail_arn", "read_digest", "key_for_log", "SIDECAR_SUFFIX", "HASH_ALGORITHM"]
