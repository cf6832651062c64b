"""Signing keys for digest files and query-result sign files: RSA 2048 key pairs per region, rotated, with
validity windows, published through `ListPublicKeys` exactly as CloudTrail does (reference 4.4, 4.6, 11).

Why this shape: validators (AWS's `aws cloudtrail validate-logs`, `lake validate-logs`) look a digest's key up
by fingerprint among the keys ListPublicKeys returns for a time window, so every key that ever signed must
stay published with the window in which it signed.

Layout in the lake (public parts are plain JSON anyone may read; private parts never leave the signer):

    _keys/<region>/<fingerprint>.json          {"Region", "Fingerprint", "Value", "ValidityStartTime",
                                                 "ValidityEndTime"}  (Value = base64 PKCS#1 RSAPublicKey DER)
    _keys/<region>/private/<fingerprint>.pem   PKCS#8 PEM, unencrypted

Local lakes write the private key with mode 0600 from the first byte (os.open with 0o600, then an atomic
link into place) inside a 0700 directory: never world- or group-readable. S3 has no file modes: there the
object is protected only by who may read the bucket, so for lakes on S3 set `$LAKE_PRIVATE_KEYS_DIR` (a local
directory) to keep private keys off the bucket; the public halves stay in the lake either way.

Rotation: a key signs only inside its window [ValidityStartTime, ValidityEndTime), which is `rotation_days`
long (default 30, `$LAKE_KEY_ROTATION_DAYS`). Signing at a time no window covers creates a new key whose window
starts then, so rotation happens by itself and every signature is covered by its key's published window.
Old keys are never deleted. Windows may overlap (as AWS says they may) when two processes create a key at
once or when signing times go backwards; validators look keys up by fingerprint, so that is harmless.

Fingerprint = lowercase hex MD5 of the PKCS#1 DER bytes (32 characters), as AWS computes it.
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson

from .apicore import ApiContext, ApiError, operation

KEY_ROOT = "_keys"
DEFAULT_ROTATION_DAYS = 30
KEY_BITS = 2048
SIGNATURE_ALGORITHM = "SHA256withRSA"


def utc(dt: datetime | float | int | str) -> datetime:
    """An aware UTC datetime from a datetime (naive = UTC), epoch seconds or ISO-8601 text."""
    if isinstance(dt, (int, float)):
        return datetime.fromtimestamp(dt, timezone.utc)
    if isinstance(dt, str):
        dt = datetime.fromisoformat(dt.replace("Z", "+00:00"))
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


def iso_seconds(dt: datetime) -> str:
    """CloudTrail's timestamp text: `2015-08-17T14:01:31Z`."""
    return utc(dt).strftime("%Y-%m-%dT%H:%M:%SZ")


def fingerprint(pkcs1_der: bytes) -> str:
    """AWS's key fingerprint: hex MD5 of the DER bytes published in ListPublicKeys' Value."""
    return hashlib.md5(pkcs1_der).hexdigest()


@dataclass(frozen=True)
class PublicKey:
    """One published key: what ListPublicKeys returns for it."""

    region: str
    fingerprint: str
    der: bytes                 # PKCS#1 RSAPublicKey DER (starts 0x30 0x82 0x01 0x0a: base64 "MIIBCgKCAQEA")
    valid_from: datetime
    valid_to: datetime

    @property
    def value(self) -> str:
        """Base64 of the DER: the wire form of the model's blob `Value`."""
        return base64.b64encode(self.der).decode()

    def covers(self, at: datetime) -> bool:
        return self.valid_from <= at < self.valid_to

    def overlaps(self, start: datetime, end: datetime) -> bool:
        return self.valid_from <= end and start <= self.valid_to

    def to_api(self) -> dict[str, Any]:
        """A PublicKeyList member (the server base64-encodes the blob and turns datetimes into epochs)."""
        return {"Value": self.der, "ValidityStartTime": self.valid_from, "ValidityEndTime": self.valid_to,
                "Fingerprint": self.fingerprint}

    def to_json(self) -> bytes:
        return orjson.dumps({"Region": self.region, "Fingerprint": self.fingerprint, "Value": self.value,
                             "ValidityStartTime": iso_seconds(self.valid_from),
                             "ValidityEndTime": iso_seconds(self.valid_to)}, option=orjson.OPT_INDENT_2)

    @classmethod
    def from_json(cls, data: bytes) -> "PublicKey":
        d = orjson.loads(data)
        der = base64.b64decode(d["Value"])
        return cls(d["Region"], fingerprint(der), der, utc(d["ValidityStartTime"]), utc(d["ValidityEndTime"]))


class SigningKey:
    """A private key with its published public half; `sign` is SHA256withRSA (RSASSA-PKCS1-v1_5, SHA-256)."""

    def __init__(self, public: PublicKey, private: Any):
        self.public = public
        self._private = private

    @property
    def fingerprint(self) -> str:
        return self.public.fingerprint

    def sign(self, data: bytes) -> bytes:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        return self._private.sign(data, padding.PKCS1v15(), hashes.SHA256())


def pkcs1_der(public_key: Any) -> bytes:
    """The PKCS#1 RSAPublicKey DER of a cryptography public key (what AWS CLI v1's rsa.load_pkcs1 reads)."""
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)


def load_public_der(der: bytes) -> Any:
    """A cryptography RSA public key from PKCS#1 DER only; ValueError for anything else (such as X.509
    SubjectPublicKeyInfo), because AWS CLI v1 accepts nothing else."""
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    key = load_der_public_key(der)
    if pkcs1_der(key) != der:
        raise ValueError("not a PKCS #1 RSAPublicKey")
    return key


def verify_signature(der: bytes, signature: bytes, data: bytes) -> bool:
    """SHA256withRSA check of `signature` over `data` with the PKCS#1 DER public key `der`."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    try:
        load_public_der(der).verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        return True
    except InvalidSignature:
        return False


def _write_private(path: str, data: bytes) -> None:
    """Create a local file readable by its owner only, atomically and never visible half-written."""
    d = os.path.dirname(path)
    os.makedirs(d, mode=0o700, exist_ok=True)
    os.chmod(d, 0o700)
    tmp = os.path.join(d, f".tmp-{uuid.uuid4().hex}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)
    finally:
        os.unlink(tmp)


class KeyRing:
    """The lake's key pairs, all regions. Cheap to create; keeps what it has read in memory."""

    def __init__(self, lake: Any, *, rotation_days: float | None = None, private_dir: str | None = None):
        self.lake = lake
        self.storage = lake.storage
        days = rotation_days if rotation_days is not None else \
            float(os.environ.get("LAKE_KEY_ROTATION_DAYS") or DEFAULT_ROTATION_DAYS)
        if days <= 0:
            raise ValueError(f"key rotation period must be positive, got {days} days")
        self.rotation = timedelta(days=days)
        self.private_dir = private_dir if private_dir is not None else os.environ.get("LAKE_PRIVATE_KEYS_DIR")
        self._lock = threading.Lock()
        self._signers: dict[str, SigningKey] = {}

    # -- public halves ------------------------------------------------------------------------------------
    def public_keys(self, region: str, start: datetime | None = None, end: datetime | None = None
                    ) -> list[PublicKey]:
        """Keys of `region` whose validity window meets [start, end] (both default to now), newest first."""
        now = datetime.now(timezone.utc)
        start = utc(start) if start is not None else now
        end = utc(end) if end is not None else now
        keys = [k for k in self._all(region) if k.overlaps(start, end)]
        return sorted(keys, key=lambda k: (k.valid_from, k.fingerprint), reverse=True)

    def _all(self, region: str) -> list[PublicKey]:
        out = []
        for info in self.storage.list(f"{KEY_ROOT}/{region}"):
            name = info.path.rsplit("/", 1)[-1]
            if info.path.count("/") != 2 or not name.endswith(".json"):
                continue  # private/ and anything that is not a published key
            try:
                out.append(PublicKey.from_json(self.storage.read(info.path)))
            except FileNotFoundError:
                continue
            except (ValueError, KeyError) as e:
                raise ValueError(f"public key file {self.storage.uri_of(info.path)} is corrupt: {e}") from None
        return out

    # -- private halves -----------------------------------------------------------------------------------
    def _private_path(self, region: str, fp: str) -> str | None:
        """A local path when private keys live on the local disk, else None (stored in the lake)."""
        if self.private_dir:
            return os.path.join(os.path.abspath(os.path.expanduser(self.private_dir)), region, f"{fp}.pem")
        if self.storage.local:
            return self.storage.full(f"{KEY_ROOT}/{region}/private/{fp}.pem")
        return None

    def _read_private(self, region: str, fp: str) -> bytes | None:
        path = self._private_path(region, fp)
        try:
            if path is not None:
                with open(path, "rb") as f:
                    return f.read()
            return self.storage.read(f"{KEY_ROOT}/{region}/private/{fp}.pem")
        except FileNotFoundError:
            return None

    def _write_private(self, region: str, fp: str, pem: bytes) -> None:
        path = self._private_path(region, fp)
        if path is not None:
            _write_private(path, pem)
        else:
            self.storage.create(f"{KEY_ROOT}/{region}/private/{fp}.pem", pem)

    # -- signing ------------------------------------------------------------------------------------------
    def signing_key(self, region: str, at: datetime | None = None) -> SigningKey:
        """The key that signs in `region` at time `at` (default now): the newest whose window covers `at`
        and whose private half this process can read; a new key (window starting at `at`) when none does."""
        at = utc(at) if at is not None else datetime.now(timezone.utc)
        with self._lock:
            cached = self._signers.get(region)
            if cached is not None and cached.public.covers(at):
                return cached
            for pub in sorted(self._all(region), key=lambda k: k.valid_from, reverse=True):
                if not pub.covers(at):
                    continue
                pem = self._read_private(region, pub.fingerprint)
                if pem is not None:
                    return self._remember(region, pub, pem)
            return self._create(region, at)

    def _remember(self, region: str, pub: PublicKey, pem: bytes) -> SigningKey:
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        signer = SigningKey(pub, load_pem_private_key(pem, password=None))
        if pkcs1_der(signer._private.public_key()) != pub.der:
            raise ValueError(f"private key {pub.fingerprint} of region {region} does not match its public key")
        self._signers[region] = signer
        return signer

    def _create(self, region: str, at: datetime) -> SigningKey:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        private = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
        der = pkcs1_der(private.public_key())
        start = at.replace(microsecond=0)
        pub = PublicKey(region, fingerprint(der), der, start, start + self.rotation)
        pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        # Private half first: a published key whose private half is missing could never sign.
        self._write_private(region, pub.fingerprint, pem)
        self.storage.create(f"{KEY_ROOT}/{region}/{pub.fingerprint}.json", pub.to_json())
        signer = SigningKey(pub, private)
        self._signers[region] = signer
        return signer


def keyring(lake: Any) -> KeyRing:
    """The lake's KeyRing, shared by everything that signs or publishes in this process."""
    ring = getattr(lake, "_keyring", None)
    if ring is None:
        ring = KeyRing(lake)
        try:
            lake._keyring = ring
        except AttributeError:  # pragma: no cover - a lake-like object with __slots__
            pass
    return ring


@operation("ListPublicKeys")
def list_public_keys(ctx: ApiContext, params: dict) -> dict:
    """ListPublicKeys: the endpoint region's keys whose validity window meets [StartTime, EndTime]
    (each defaults to now). NextToken is "reserved for future use" by AWS: every key fits in one page."""
    start = utc(params["StartTime"]) if params.get("StartTime") is not None else utc(ctx.now)
    end = utc(params["EndTime"]) if params.get("EndTime") is not None else utc(ctx.now)
    if start > end:
        raise ApiError("InvalidTimeRangeException",
                       "Occurs if the timestamp values are invalid. Either the start time occurs after the end "
                       "time or the time range is outside the range of possible values.")
    keys = keyring(ctx.lake).public_keys(ctx.region, start, end)
    return {"PublicKeyList": [k.to_api() for k in keys]}


__all__ = ["KeyRing", "PublicKey", "SigningKey", "keyring", "fingerprint", "pkcs1_der", "load_public_der",
           "verify_signature", "iso_seconds", "utc", "list_public_keys", "SIGNATURE_ALGORITHM",
           "DEFAULT_ROTATION_DAYS"]
