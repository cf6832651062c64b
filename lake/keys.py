"""Signing keys: RSA 2048 key pairs per region for digest files and query-result sign files (rotated, with
validity windows, published through `ListPublicKeys` exactly as CloudTrail does, reference 4.4, 4.6, 11), and
an Ed25519 key that signs every commit's chain head (`lake verify --trusted-key`).

Why the keys live outside the lake: CloudTrail's guarantee comes from AWS holding the keys, not the bucket
owner. A key kept in the lake proves nothing against someone who can write the lake: they can sign anything,
or plant their own public key and have it published. So the private keys, and the list of public keys that
may be published or trusted, live in a **key store**: a directory the lake process owns and the lake's
storage does not contain (threat model: docs/security.md).

Key store directory (first that is set):
    $LAKE_KEY_DIR                          this lake's key directory, used as is
    $LAKE_PRIVATE_KEYS_DIR                 the same, under its old name (kept working)
    $LAKE_KEY_HOME/<lake-id>/              a root holding one directory per lake
    ${XDG_CONFIG_HOME:-~/.config}/lake/keys/<lake-id>/
`<lake-id>` is the first 32 hex digits of SHA-256 of the lake's location (`file:///abs/path` with symlinks
resolved, or `s3://bucket/prefix`): derived, never read from the lake, so a lake writer cannot point the lake
process at another key directory. A lake moved elsewhere needs `LAKE_KEY_DIR` (or its directory renamed).
Directories are 0700, files 0600, created that way from their first byte.

    <keydir>/<region>/<fingerprint>.pem    RSA private key, PKCS#8 PEM
    <keydir>/<region>/<fingerprint>.json   its public half and validity window: only these are published
    <keydir>/_heads/<fingerprint>.pem      Ed25519 chain-head key (PKCS#8 PEM), and `.pub.pem` beside it
    <keydir>/_heads/stores/<store id>.json newest chain head this key store signed for a store
    <keydir>/_heads/legacy.json            each store's newest commit when the first head key was made: the
                                           commits delivery accepts without a signature
    <keydir>/_heads/*.pub.pem              also other writers' head keys, trusted like its own

The lake receives copies of the public halves, for readers without access to the key store (and to show
what was published): `_keys/<region>/<fingerprint>.json`, `_keys/_heads/<fingerprint>.pub.pem`. Nothing
trusts these copies: ListPublicKeys publishes only the key store's own list, so a `_keys/<region>/*.json`
planted by a lake writer is never published or used.

Migration of lakes made before keys moved out: on the first use of a region in a key store (its directory
does not exist yet), private keys found in the lake (`_keys/<region>/private/*.pem`) are moved into the key
store, with their public halves, and deleted from the lake (a warning says so). After that first use, keys
that appear in the lake are ignored. A private key already in the key directory without its public JSON
(the old `$LAKE_PRIVATE_KEYS_DIR` layout) is adopted when the lake's public copy matches it.

Extension point: `KeyStore` is one class with a small interface (`public_keys`, `signing_key`,
`head_signer`, `head_public_keys`, `record_head`, `recorded_head`); a KMS or OpenBao backend would implement
the same methods, be registered in `KEY_BACKENDS` and be chosen by `$LAKE_KEY_BACKEND` (only `dir` exists
today: the extension point is left for later).

Rotation: a region key signs only inside its window [ValidityStartTime, ValidityEndTime), `rotation_days`
long (default 30, `$LAKE_KEY_ROTATION_DAYS`). Signing at a time no window covers creates a new key whose
window starts then. Old keys are never deleted. Windows may overlap (as AWS says they may); validators look
keys up by fingerprint. The chain-head key does not rotate (verifiers pin it: `lake keys export`).

Fingerprint = lowercase hex MD5 of the PKCS#1 DER bytes (32 characters), as AWS computes it; for the
Ed25519 head key, the first 32 hex digits of SHA-256 of its raw 32-byte public key.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
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

log = logging.getLogger("lake.keys")


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


def _write_private(path: str, data: bytes) -> bool:
    """Create a local file readable by its owner only, atomically and never visible half-written; False when
    it already exists (create-only: a key file is never replaced)."""
    d = os.path.dirname(path)
    _make_private_dir(d)
    tmp = os.path.join(d, f".tmp-{uuid.uuid4().hex}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        os.unlink(tmp)


def _replace_private(path: str, data: bytes) -> None:
    """Atomically replace a small 0600 state file of the key store (no fsync: it is a hint that only ever
    moves forward, and losing the last write makes checks weaker, never wrong)."""
    d = os.path.dirname(path)
    _make_private_dir(d)
    tmp = os.path.join(d, f".tmp-{uuid.uuid4().hex}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _make_private_dir(d: str) -> None:
    """Create `d` (and missing parents) as 0700: the key store is readable by the lake process's user only."""
    if not os.path.isdir(d):
        parent = os.path.dirname(d)
        if parent and parent != d and not os.path.isdir(parent):
            _make_private_dir(parent)
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            pass
    if os.stat(d).st_mode & 0o077 and os.stat(d).st_uid == os.getuid():
        os.chmod(d, 0o700)


def lake_id(storage: Any) -> str:
    """The lake's identity for its key directory: SHA-256 of its location (never of anything stored in it, so
    a lake writer cannot send the lake process to another key directory)."""
    if storage.local:
        where = "file://" + os.path.realpath(storage.root)
    else:
        where = f"{storage.protocol}://{storage.root.strip('/')}"
    return hashlib.sha256(where.encode()).hexdigest()[:32]


def key_dir_for(storage: Any) -> str:
    """The key store directory of the lake at `storage` (see the module docstring for the order)."""
    explicit = os.environ.get("LAKE_KEY_DIR") or os.environ.get("LAKE_PRIVATE_KEYS_DIR")
    if explicit:
        return os.path.abspath(os.path.expanduser(explicit))
    home = os.environ.get("LAKE_KEY_HOME")
    if not home:
        config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
        home = os.path.join(config, "lake", "keys")
    return os.path.join(os.path.abspath(os.path.expanduser(home)), lake_id(storage))


HEADS_DIR = "_heads"                 # key store and lake folder of the chain-head key (not a region name)
HEAD_ALGORITHM = "Ed25519"
HEAD_DOMAIN = b"lake-chain-head/1\n"  # domain separation: a head signature is never a valid other signature


def head_message(store_id: str, version: int, head_hash: str) -> bytes:
    """What the chain-head key signs for commit `version` of a store: its id, version and SHA-256."""
    return HEAD_DOMAIN + f"{store_id}\n{version}\n{head_hash}".encode()


def ed25519_fingerprint(public_key: Any) -> str:
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:32]


class HeadSigner:
    """The key store's Ed25519 key that signs chain heads."""

    def __init__(self, private: Any):
        self._private = private
        self.public = private.public_key()
        self.fingerprint = ed25519_fingerprint(self.public)

    def sign_head(self, store_id: str, version: int, head_hash: str) -> dict:
        """A signed-head record (what `stores/<id>/_heads/...` holds)."""
        sig = self._private.sign(head_message(store_id, version, head_hash))
        return {"store": store_id, "version": version, "hash": head_hash, "algorithm": HEAD_ALGORITHM,
                "fingerprint": self.fingerprint, "signature": sig.hex()}

    def public_pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return self.public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def verify_head(record: dict, trusted: dict[str, Any]) -> bool:
    """True if `record` (a signed-head record) carries a valid signature by one of `trusted` (fingerprint ->
    Ed25519 public key) over its own store, version and hash."""
    from cryptography.exceptions import InvalidSignature

    try:
        key = trusted.get(record["fingerprint"])
        if key is None:
            return False
        key.verify(bytes.fromhex(record["signature"]),
                   head_message(str(record["store"]), int(record["version"]), str(record["hash"])))
        return True
    except (InvalidSignature, KeyError, ValueError, TypeError):
        return False


def load_trusted_head_keys(path: str) -> dict[str, Any]:
    """Ed25519 public keys (fingerprint -> key) from a PEM file, or from every `*.pem` of a directory (a key
    store directory or a folder of exported keys); ValueError with one line when there is none."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import (
        load_pem_private_key,
        load_pem_public_key,
    )

    path = os.path.expanduser(path)
    if os.path.isdir(path):
        files = [os.path.join(r, n) for r, _, ns in os.walk(path) for n in sorted(ns) if n.endswith(".pem")]
    elif os.path.exists(path):
        files = [path]
    else:
        raise ValueError(f"trusted key {path}: no such file or directory")
    out: dict[str, Any] = {}
    for f in files:
        with open(f, "rb") as fh:
            data = fh.read()
        for m in re.finditer(rb"-----BEGIN ([A-Z ]+)-----.*?-----END \1-----", data, re.DOTALL):
            try:
                key = load_pem_public_key(m.group(0)) if m.group(1) == b"PUBLIC KEY" else \
                    load_pem_private_key(m.group(0), password=None).public_key()
            except (ValueError, TypeError):
                continue
            if isinstance(key, Ed25519PublicKey):
                out[ed25519_fingerprint(key)] = key
    if not out:
        raise ValueError(f"trusted key {path}: no Ed25519 public key found (export one with `lake keys export`)")
    return out


class KeyRing:
    """The lake's key store (a directory outside the lake, see the module docstring): region key pairs and the
    chain-head key. Cheap to create; keeps what it has read in memory."""

    def __init__(self, lake: Any, *, rotation_days: float | None = None, private_dir: str | None = None):
        self.lake = lake
        self.storage = getattr(lake, "storage", lake)  # a Lake, or a bare Storage (the commit log has no Lake)
        days = rotation_days if rotation_days is not None else \
            float(os.environ.get("LAKE_KEY_ROTATION_DAYS") or DEFAULT_ROTATION_DAYS)
        if days <= 0:
            raise ValueError(f"key rotation period must be positive, got {days} days")
        self.rotation = timedelta(days=days)
        self.key_dir = os.path.abspath(os.path.expanduser(private_dir)) if private_dir else \
            key_dir_for(self.storage)
        self._lock = threading.RLock()
        self._signers: dict[str, SigningKey] = {}
        self._migrated: set[str] = set()
        self._head: HeadSigner | None = None
        self._trusted_heads: dict[str, Any] | None = None

    # -- paths --------------------------------------------------------------------------------------------
    def _region_dir(self, region: str) -> str:
        if not region or "/" in region or region.startswith(".") or region == HEADS_DIR:
            raise ValueError(f"invalid region name for a key: {region!r}")
        return os.path.join(self.key_dir, region)

    # -- migration of keys kept in the lake by older versions ---------------------------------------------
    def _migrate(self, region: str) -> None:
        """First use of `region` in this key store: move private keys found in the lake out of it (once)."""
        if region in self._migrated:
            return
        with self._lock:
            if region in self._migrated:
                return
            rdir = self._region_dir(region)
            first_use = not os.path.isdir(rdir)
            _make_private_dir(rdir)
            lake_private = f"{KEY_ROOT}/{region}/private"
            found = [i.path for i in self.storage.list(lake_private) if i.path.endswith(".pem")]
            if first_use:
                moved = 0
                for path in found:
                    if self._adopt(region, self.storage.read(path)):
                        self.storage.delete(path)
                        moved += 1
                if moved:
                    log.warning("moved %d private key(s) of region %s out of the lake into the key store %s",
                                moved, region, self.key_dir)
            elif found:
                log.warning("ignoring %d private key file(s) in %s: keys are trusted only from the key store %s",
                            len(found), self.storage.uri_of(lake_private), self.key_dir)
            # the old $LAKE_PRIVATE_KEYS_DIR layout: a private key here whose public JSON is only in the lake
            for name in sorted(os.listdir(rdir)):
                if name.endswith(".pem") and not os.path.exists(os.path.join(rdir, name[:-4] + ".json")):
                    with open(os.path.join(rdir, name), "rb") as f:
                        self._adopt(region, f.read())
            self._migrated.add(region)

    def _adopt(self, region: str, pem: bytes) -> bool:
        """Take a legacy private key into the key store, with the validity window of its public copy in the
        lake (which must match the private key). False when it cannot be matched."""
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        try:
            private = load_pem_private_key(pem, password=None)
            der = pkcs1_der(private.public_key())
            fp = fingerprint(der)
            pub = PublicKey.from_json(self.storage.read(f"{KEY_ROOT}/{region}/{fp}.json"))
        except (ValueError, TypeError, KeyError, FileNotFoundError) as e:
            log.warning("key store %s: a legacy private key of region %s could not be adopted: %s",
                        self.key_dir, region, str(e).splitlines()[0] if str(e) else type(e).__name__)
            return False
        if pub.der != der or pub.region != region:
            return False
        rdir = self._region_dir(region)
        _write_private(os.path.join(rdir, f"{fp}.pem"), pem)
        _write_private(os.path.join(rdir, f"{fp}.json"), pub.to_json())
        return True

    # -- public halves ------------------------------------------------------------------------------------
    def public_keys(self, region: str, start: datetime | None = None, end: datetime | None = None
                    ) -> list[PublicKey]:
        """Keys of `region` the key store holds whose validity window meets [start, end] (both default to
        now), newest first. Only these may be published or trusted."""
        now = datetime.now(timezone.utc)
        start = utc(start) if start is not None else now
        end = utc(end) if end is not None else now
        keys = [k for k in self._all(region) if k.overlaps(start, end)]
        return sorted(keys, key=lambda k: (k.valid_from, k.fingerprint), reverse=True)

    def _all(self, region: str) -> list[PublicKey]:
        self._migrate(region)
        rdir = self._region_dir(region)
        out = []
        for name in sorted(os.listdir(rdir)) if os.path.isdir(rdir) else []:
            if not name.endswith(".json") or name.startswith("."):
                continue
            path = os.path.join(rdir, name)
            try:
                with open(path, "rb") as f:
                    out.append(PublicKey.from_json(f.read()))
            except FileNotFoundError:
                continue
            except (ValueError, KeyError) as e:
                raise ValueError(f"public key file {path} is corrupt: {e}") from None
        return out

    def lake_copies(self, region: str, start: datetime | None = None, end: datetime | None = None
                    ) -> list[PublicKey]:
        """The public keys *the lake* holds for `region` (copies anyone who can write the lake may have
        changed or added): only for readers that have no key store, and never for publishing."""
        now = datetime.now(timezone.utc)
        start = utc(start) if start is not None else now
        end = utc(end) if end is not None else now
        out = []
        for info in self.storage.list(f"{KEY_ROOT}/{region}"):
            name = info.path.rsplit("/", 1)[-1]
            if info.path.count("/") != 2 or not name.endswith(".json"):
                continue
            try:
                k = PublicKey.from_json(self.storage.read(info.path))
            except (FileNotFoundError, ValueError, KeyError):
                continue
            if k.overlaps(start, end):
                out.append(k)
        return sorted(out, key=lambda k: (k.valid_from, k.fingerprint), reverse=True)

    def has_region(self, region: str) -> bool:
        """Whether this key store has ever been used for `region` (without creating or migrating anything)."""
        return os.path.isdir(os.path.join(self.key_dir, region))

    # -- signing ------------------------------------------------------------------------------------------
    def signing_key(self, region: str, at: datetime | None = None) -> SigningKey:
        """The key that signs in `region` at time `at` (default now): the newest of the key store whose window
        covers `at`; a new key (window starting at `at`) when none does."""
        at = utc(at) if at is not None else datetime.now(timezone.utc)
        with self._lock:
            cached = self._signers.get(region)
            if cached is not None and cached.public.covers(at):
                return cached
            for pub in sorted(self._all(region), key=lambda k: k.valid_from, reverse=True):
                if not pub.covers(at):
                    continue
                try:
                    with open(os.path.join(self._region_dir(region), f"{pub.fingerprint}.pem"), "rb") as f:
                        return self._remember(region, pub, f.read())
                except FileNotFoundError:
                    continue
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
        rdir = self._region_dir(region)
        # Private half first: a published key whose private half is missing could never sign.
        _write_private(os.path.join(rdir, f"{pub.fingerprint}.pem"), pem)
        _write_private(os.path.join(rdir, f"{pub.fingerprint}.json"), pub.to_json())
        self.storage.create(f"{KEY_ROOT}/{region}/{pub.fingerprint}.json", pub.to_json())  # the lake's copy
        signer = SigningKey(pub, private)
        self._signers[region] = signer
        return signer

    # -- chain heads --------------------------------------------------------------------------------------
    def head_signer(self) -> HeadSigner:
        """The key store's chain-head key, created on first use (and its public half copied into the lake)."""
        if self._head is not None:
            return self._head
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        with self._lock:
            if self._head is not None:
                return self._head
            hdir = os.path.join(self.key_dir, HEADS_DIR)
            existing = sorted(n for n in os.listdir(hdir) if n.endswith(".pem") and not n.endswith(".pub.pem")) \
                if os.path.isdir(hdir) else []
            if existing:
                with open(os.path.join(hdir, existing[0]), "rb") as f:
                    signer = HeadSigner(load_pem_private_key(f.read(), password=None))
            else:
                self._record_legacy(hdir)
                private = Ed25519PrivateKey.generate()
                signer = HeadSigner(private)
                pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption())
                _write_private(os.path.join(hdir, f"{signer.fingerprint}.pub.pem"), signer.public_pem())
                if not _write_private(os.path.join(hdir, f"{signer.fingerprint}.pem"), pem):
                    pass  # pragma: no cover - same fingerprint means the same key
                # Two processes creating at once: both keep the first file name in sorted order.
                names = sorted(n for n in os.listdir(hdir) if n.endswith(".pem") and not n.endswith(".pub.pem"))
                if names[0] != f"{signer.fingerprint}.pem":  # pragma: no cover - race
                    with open(os.path.join(hdir, names[0]), "rb") as f:
                        signer = HeadSigner(load_pem_private_key(f.read(), password=None))
            try:
                self.storage.create(f"{KEY_ROOT}/{HEADS_DIR}/{signer.fingerprint}.pub.pem", signer.public_pem())
            except OSError:  # pragma: no cover - the lake's copy is a courtesy
                pass
            self._head = signer
            return signer

    def _record_legacy(self, hdir: str) -> None:
        """Before the first chain-head key exists: note each store's newest commit, all made before this key
        store signed anything (`legacy_heads`). Delivery accepts those unsigned and nothing else."""
        heads: dict[str, int] = {}
        for sid in self.storage.list_dirs("stores"):
            names = [i.path.rsplit("/", 1)[-1] for i in self.storage.list(f"stores/{sid}/_log")]
            versions = [int(n[:-5]) for n in names if n.endswith(".json") and n[:-5].isdigit()]
            if versions:
                heads[sid] = max(versions)
        _write_private(os.path.join(hdir, "legacy.json"), orjson.dumps(heads))

    def legacy_heads(self) -> dict[str, int] | None:
        """Per store, the newest commit that existed before this key store signed its first head (those are
        accepted without a signature); None when the key store has never signed a head."""
        try:
            with open(os.path.join(self.key_dir, HEADS_DIR, "legacy.json"), "rb") as f:
                return {str(k): int(v) for k, v in orjson.loads(f.read()).items()}
        except FileNotFoundError:
            return {} if self.head_public_keys() else None
        except (ValueError, TypeError, AttributeError, orjson.JSONDecodeError):
            return {}  # damaged: trust nothing unsigned

    def commit_is_signed(self, store_id: str, version: int, raw: bytes, read: Any) -> bool:
        """Whether commit `version` of a store (its bytes `raw`) carries a valid signature by this key store's
        head keys; `read(path)` reads a lake file (FileNotFoundError when absent)."""
        digest = hashlib.sha256(raw).hexdigest()
        try:
            rec = orjson.loads(read(f"stores/{store_id}/{HEADS_DIR}/{version:020d}-{digest}.json"))
        except (FileNotFoundError, orjson.JSONDecodeError):
            return False
        if not isinstance(rec, dict):
            return False
        if self._trusted_heads is None or rec.get("fingerprint") not in self._trusted_heads:
            self._trusted_heads = self.head_public_keys()  # a key added since (another process, an operator)
        return isinstance(rec, dict) and rec.get("store") == store_id and rec.get("version") == version and \
            rec.get("hash") == digest and verify_head(rec, self._trusted_heads)

    def head_public_keys(self) -> dict[str, Any]:
        """The chain-head public keys this key store holds (fingerprint -> key); {} when it has none."""
        hdir = os.path.join(self.key_dir, HEADS_DIR)
        if not os.path.isdir(hdir) or not any(n.endswith(".pem") for n in os.listdir(hdir)):
            return {}
        return load_trusted_head_keys(hdir)

    def _head_record_path(self, store_id: str) -> str:
        if not store_id or "/" in store_id or store_id.startswith("."):
            raise ValueError(f"invalid store id {store_id!r}")
        return os.path.join(self.key_dir, HEADS_DIR, "stores", f"{store_id}.json")

    def record_head(self, store_id: str, version: int, head_hash: str) -> None:
        """Remember the newest head this key store signed for a store (outside the lake: `lake verify` on this
        machine checks the chain still reaches it, which catches rewritten and truncated history)."""
        cur = self.recorded_head(store_id)
        if cur is not None and cur[0] >= version:
            return
        _replace_private(self._head_record_path(store_id),
                         orjson.dumps({"store": store_id, "version": version, "hash": head_hash}))

    def recorded_head(self, store_id: str) -> tuple[int, str] | None:
        try:
            with open(self._head_record_path(store_id), "rb") as f:
                d = orjson.loads(f.read())
            return int(d["version"]), str(d["hash"])
        except (FileNotFoundError, ValueError, KeyError, TypeError, orjson.JSONDecodeError):
            return None


# Key store backends by name ($LAKE_KEY_BACKEND, default "dir"). The extension point for a KMS or OpenBao
# backend, left for later: register a class with KeyRing's public methods under a new name.
KEY_BACKENDS: dict[str, type] = {"dir": KeyRing}


def _backend() -> type:
    name = os.environ.get("LAKE_KEY_BACKEND", "dir").strip() or "dir"
    try:
        return KEY_BACKENDS[name]
    except KeyError:
        from .errors import InvalidParameter

        raise InvalidParameter(f"LAKE_KEY_BACKEND={name!r} is not a key store backend; available: "
                               f"{', '.join(sorted(KEY_BACKENDS))}") from None


_RINGS: dict[tuple[str, str], KeyRing] = {}
_RINGS_LOCK = threading.Lock()


def keyring_for_storage(storage: Any) -> KeyRing:
    """One KeyRing per (lake location, key directory) in this process: the commit log signs heads with it."""
    key = (storage.uri, key_dir_for(storage))
    with _RINGS_LOCK:
        ring = _RINGS.get(key)
        if ring is None:
            ring = _RINGS[key] = _backend()(storage)
        return ring


def keyring(lake: Any) -> KeyRing:
    """The lake's KeyRing, shared by everything that signs or publishes in this process."""
    ring = getattr(lake, "_keyring", None)
    if ring is None:
        ring = _backend()(lake)
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


__all__ = ["KeyRing", "PublicKey", "HeadSigner", "keyring_for_storage", "key_dir_for", "lake_id", "verify_head",
           "load_trusted_head_keys", "head_message", "SigningKey", "keyring", "fingerprint", "pkcs1_der",
           "load_public_der",
           "verify_signature", "iso_seconds", "utc", "list_public_keys", "SIGNATURE_ALGORITHM",
           "DEFAULT_ROTATION_DAYS"]
