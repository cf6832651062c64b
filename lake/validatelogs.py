"""`lake validate-logs`: the AWS CLI's `aws cloudtrail validate-logs`, same arguments, same walk over the digest
chain, same messages, same exit codes (reference 4.7), plus `--local DIR` to validate a local copy of a bucket
(which the AWS CLI cannot do).

The walk mirrors the AWS CLI's so that both tools give the same verdict on the same bucket:
list the trail's digest keys (ListObjects with the Marker of `start - 1 minute`, keys of this trail only, key
dates in [start, end + 1 hour]), start from the newest, and for each digest: gunzip + parse ("invalid format"),
require the signature metadata ("signature verification failed"), the six required fields ("invalid
format"), its own location ("has been moved"), a public key with its fingerprint ("public key not found"), a
PKCS #1 key ("Unable to load PKCS #1 key"), the SHA256withRSA signature; then hash every log file it lists
("hash value doesn't match", "not found", "invalid format"). Follow `previousDigestS3Object`; at a chain start
take the next older listed digest and report the gap ("No log files were delivered ..."); a deleted digest
is "not found" and the walk continues with the next older listed one. Backfill digests (`_backfill`) form a
second chain, validated after the first.

Where things come from:
- digests and logs: S3 (`--s3-bucket`, or the trail's bucket from DescribeTrails), through fsspec with the
  endpoint of `$AWS_ENDPOINT_URL_S3` / `$LAKE_S3_ENDPOINT`; or the directory `--local DIR`, a copy of the
  bucket's root (object metadata from the `<key>.metadata.json` sidecars Lake writes; a digest without one
  is still checked when the next newer valid digest names its signature in `previousDigestSignature`);
- public keys: a Lake server's ListPublicKeys when `--endpoint-url` is given (exactly what the AWS CLI uses),
  else the lake itself (`--lake`, `$LAKE_URI`);
- the trail's bucket and prefix when `--s3-bucket` is not given: DescribeTrails on the server, or the lake's
  own trails.

Exit status: 0 when every digest and log file found is valid, 1 when any is invalid, 255 (the AWS CLI's code)
with a one-line message when validation cannot run at all (bad ARN or dates, no public keys, a bucket that
cannot be read).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import importlib
import json
import logging
import os
import re
import sys
import uuid
import zlib
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterator

import click

from .digest import Destination
from .keys import keyring, load_public_der

log = logging.getLogger("lake.validatelogs")

DATE_FORMAT = "%Y%m%dT%H%M%SZ"
DISPLAY_DATE_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
REQUIRED_DIGEST_KEYS = ("digestPublicKeyFingerprint", "digestS3Bucket", "digestS3Object", "previousDigestSignature",
                        "digestEndTime", "digestStartTime")
ARN_PATTERN = re.compile(r"arn:.+:cloudtrail:.+:\d{12}:trail/.+")
FATAL_EXIT = 255


# ---- dates, as the AWS CLI reads and prints them -------------------------------------------------------

def parse_date(text: str) -> datetime:
    """Lenient date parsing (dateutil, as the AWS CLI), e.g. `2015-01-08T05:21:42Z` or `20150108T052142Z`."""
    from dateutil import parser

    try:
        return parser.parse(text)
    except (ValueError, OverflowError):
        raise ValueError(f"Unable to parse date value: {text}") from None


def normalize_date(d: datetime) -> datetime:
    """The AWS CLI's normalisation: the wall-clock time taken as UTC (tzinfo replaced, not converted)."""
    return d.replace(tzinfo=timezone.utc)


def display(d: datetime) -> str:
    return d.strftime(DISPLAY_DATE_FORMAT)


def is_backfill_key(key: str) -> bool:
    return key.endswith("_backfill.json.gz")


def key_date(key: str) -> str:
    """The `YYYYMMDDTHHMMSSZ` end time in a digest key."""
    return key[-33:-17] if is_backfill_key(key) else key[-24:-8]


# ---- errors -------------------------------------------------------------------------------------------

class ValidationAborted(Exception):
    """Validation cannot run at all (the AWS CLI's uncaught errors): printed as one line, exit 255."""


class _NotFound(Exception):
    """An object that is not there (S3 NoSuchKey)."""


class DigestError(ValueError):
    """A digest that fails validation; the message is the full status line."""


class DigestSignatureError(DigestError):
    def __init__(self, bucket: str, key: str):
        super().__init__(f"Digest file\ts3://{bucket}/{key}\tINVALID: signature verification failed")


class InvalidDigestFormat(DigestError):
    def __init__(self, bucket: str, key: str):
        super().__init__(f"Digest file\ts3://{bucket}/{key}\tINVALID: invalid format")


# ---- objects and keys ---------------------------------------------------------------------------------

class Objects:
    """Read access to the buckets a trail's digests and logs live in: S3, or one local directory that holds
    a copy of the bucket root (then every bucket name maps to it)."""

    def __init__(self, local_dir: str | None = None, storage_options: dict[str, Any] | None = None,
                 resolve: Callable[[str], tuple[str, dict | None]] | None = None):
        self.local_dir = local_dir
        self.storage_options = storage_options
        self.resolve = resolve  # bucket name -> (fsspec URI of its root, storage options)
        self._dests: dict[str, Destination] = {}

    def dest(self, bucket: str) -> Destination:
        d = self._dests.get(bucket)
        if d is None:
            if self.local_dir:
                d = Destination(self.local_dir, self.storage_options)
            elif self.resolve is not None:
                d = Destination(*self.resolve(bucket))
            else:
                d = Destination(f"s3://{bucket}", self.storage_options)
            self._dests[bucket] = d
        return d

    def _call(self, bucket: str, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except FileNotFoundError:
            raise _NotFound() from None
        except Exception as e:  # noqa: BLE001 - any storage failure stops validation, as in the AWS CLI
            raise ValidationAborted(f"cannot read {what} in bucket {bucket}: {type(e).__name__}: {e}") from None

    def get(self, bucket: str, key: str) -> bytes:
        return self._call(bucket, f"s3://{bucket}/{key}", lambda: self.dest(bucket).get(key))

    def metadata(self, bucket: str, key: str) -> dict[str, str]:
        return self._call(bucket, f"s3://{bucket}/{key}", lambda: self.dest(bucket).metadata(key))

    def list_after(self, bucket: str, prefix: str, marker: str) -> list[str]:
        try:
            return self._call(bucket, f"the keys under {prefix}",
                              lambda: self.dest(bucket).list_after(prefix, marker))
        except _NotFound:
            return []


PublicKeys = Callable[[datetime, datetime], dict[str, dict]]


def lake_public_keys(lake: Any, region: str) -> PublicKeys:
    """Public keys straight from the lake's key store (outside the lake, lake/keys.py), as ListPublicKeys
    would return them. On a machine that has no key store for the lake, the public copies kept in the lake
    are used instead, with a warning: anyone who can write the lake can change those (validating against
    `--endpoint-url` of the server that holds the keys does not have that weakness)."""
    warned: list[bool] = []

    def get(start: datetime, end: datetime) -> dict[str, dict]:
        ring = keyring(lake)
        if ring.has_region(region):
            keys = ring.public_keys(region, start, end)
        else:
            keys = ring.lake_copies(region, start, end)
            if keys and not warned:
                warned.append(True)
                log.warning("no key store for this lake at %s: public keys are read from the lake itself, which "
                            "anyone with write access to it can replace; use --endpoint-url or LAKE_KEY_DIR",
                            ring.key_dir)
        return {k.fingerprint: {"Fingerprint": k.fingerprint, "Value": k.value} for k in keys}
    return get


def cloudtrail_client(endpoint_url: str | None, region: str):
    """A botocore CloudTrail client for a Lake server (credentials from the usual AWS environment)."""
    import botocore.session
    from botocore.config import Config

    session = botocore.session.get_session()
    return session.create_client("cloudtrail", region_name=region, endpoint_url=endpoint_url,
                                 config=Config(retries={"total_max_attempts": 2}))


def server_public_keys(client: Any) -> PublicKeys:
    """Public keys from ListPublicKeys, with Value as the base64 text the AWS CLI decodes."""
    def get(start: datetime, end: datetime) -> dict[str, dict]:
        try:
            resp = client.list_public_keys(StartTime=start, EndTime=end)
        except Exception as e:  # noqa: BLE001 - botocore's errors are one line already
            raise ValidationAborted(str(e)) from None
        out = {}
        for k in resp.get("PublicKeyList", []):
            value = k.get("Value")
            if isinstance(value, (bytes, bytearray)):
                value = base64.b64encode(value).decode()
            out[k["Fingerprint"]] = {**k, "Value": value}
        return out
    return get


# ---- the walk -----------------------------------------------------------------------------------------

class Traverser:
    """Finds and validates the digests of one trail (account, source region) between two dates, newest
    first, following the chain the way the AWS CLI does. Valid digests are yielded; problems go to the
    callbacks `on_invalid(message=...)`, `on_missing(bucket=, last_key=)`, `on_gap(next_end_date=,
    last_start_date=)` (each also gets `is_backfill`)."""

    def __init__(self, objects: Objects, *, trail_arn: str, source_region: str | None, bucket: str,
                 prefix: str | None, account_id: str | None, organization_id: str | None,
                 public_keys: PublicKeys, on_invalid: Callable, on_missing: Callable, on_gap: Callable):
        if not ARN_PATTERN.match(trail_arn):
            raise ValidationAborted(f"Invalid trail ARN provided: {trail_arn}")
        self.objects = objects
        self.home_region = trail_arn.split(":")[3]
        self.trail_name = trail_arn.split("/")[-1]
        self.account_id = account_id or trail_arn.split(":")[4]
        self.source_region = source_region or self.home_region
        self.organization_id = organization_id
        self.starting_bucket = bucket
        self.prefix = prefix
        self._public_keys = public_keys
        self.on_invalid, self.on_missing, self.on_gap = on_invalid, on_missing, on_gap
        self._listing_cache: dict[tuple, dict[str, list[str]]] = {}
        self._known_signatures: dict[tuple[str, str], str] = {}  # local copies: signatures vouched for

    # -- keys -----------------------------------------------------------------------------------------
    def _base(self) -> str:
        org = f"{self.organization_id}/" if self.organization_id else ""
        return f"AWSLogs/{org}{self.account_id}/CloudTrail-Digest/{self.source_region}"

    def _with_prefix(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _marker(self, start: datetime) -> str:
        d = start - timedelta(minutes=1)
        return self._with_prefix(
            f"{self._base()}/{d:%Y/%m/%d}/{self.account_id}_CloudTrail-Digest_{self.source_region}_"
            f"{self.trail_name}_{self.home_region}_{d.strftime(DATE_FORMAT)}.json.gz")

    def _key_regex(self) -> re.Pattern:
        org = f"{self.organization_id}/" if self.organization_id else ""
        acct, src = re.escape(self.account_id), re.escape(self.source_region)
        body = (f"AWSLogs/{org}{acct}/CloudTrail\\-Digest/{src}/\\d+/\\d+/\\d+/{acct}_CloudTrail\\-Digest_"
                f"{src}_{re.escape(self.trail_name)}_{re.escape(self.home_region)}_.+(?:_backfill)?\\.json\\.gz")
        return re.compile("^" + (re.escape(self.prefix) + "/" if self.prefix else "") + body + "$")

    def digest_keys(self, bucket: str, start: datetime, end: datetime, backfill: bool) -> list[str]:
        """The listed digest keys of this trail in [start, end + 1 h], oldest first (one listing per bucket
        and range; the walk consumes the returned list, as the AWS CLI's does)."""
        cache_key = (bucket, self.prefix, start, end)
        if cache_key not in self._listing_cache:
            standard, backfills = [], []
            lo = normalize_date(start).strftime(DATE_FORMAT)
            hi = normalize_date(end + timedelta(hours=1)).strftime(DATE_FORMAT)
            rx = self._key_regex()
            for key in self.objects.list_after(bucket, self._with_prefix(self._base()), self._marker(start)):
                if not rx.match(key):
                    continue
                d = key_date(key)
                if d > hi:
                    break
                if d < lo:
                    continue
                (backfills if is_backfill_key(key) else standard).append(key)
            self._listing_cache[cache_key] = {"standard": standard, "backfill": backfills}
        return self._listing_cache[cache_key]["backfill" if backfill else "standard"]

    @staticmethod
    def _last(digests: list[str], before: str | None = None) -> tuple[str | None, datetime | None]:
        """Pop the newest listed key (older than `before` when given) with its end date."""
        if not digests:
            return None, None
        if before is None:
            key = digests.pop()
            return key, normalize_date(parse_date(key_date(key)))
        limit = parse_date(key_date(before))
        while digests:
            key = digests.pop()
            d = normalize_date(parse_date(key_date(key)))
            if d < limit:
                return key, d
        return None, None

    def _load_public_keys(self, start: datetime, end: datetime) -> dict[str, dict]:
        keys = self._public_keys(start, end)
        if not keys:
            raise ValidationAborted(f"No public keys found between {display(start)} and {display(end)}")
        return keys

    # -- traversal ------------------------------------------------------------------------------------
    def traverse(self, start: datetime, end: datetime, backfill: bool = False) -> Iterator[dict]:
        start, end = normalize_date(start), normalize_date(end)
        bucket = self.starting_bucket
        digests = self.digest_keys(bucket, start, end, backfill)
        public_keys = {} if backfill else self._load_public_keys(start, end + timedelta(hours=2))
        key, end_date = self._last(digests)
        last_start = end_date
        while key and start <= last_start:
            try:
                digest, end_date = self._load_and_validate(public_keys, bucket, key, backfill)
                last_start = normalize_date(parse_date(digest["digestStartTime"]))
                prev_bucket = digest.get("previousDigestS3Bucket")
                prev_key = digest.get("previousDigestS3Object")
                yield digest
                if prev_bucket is None or prev_key is None:
                    key, end_date = self._next(digests, bucket, key, last_start, self.on_gap, backfill,
                                               conditional=True)
                else:
                    key = prev_key
                    if prev_bucket != bucket:
                        bucket = prev_bucket
                        digests = self.digest_keys(bucket, start, end_date, backfill)
            except ValidationAborted:
                raise
            except _NotFound:
                key, end_date = self._next(digests, bucket, key, last_start, self.on_missing, backfill)
            except DigestError as e:
                key, end_date = self._next(digests, bucket, key, last_start, self.on_invalid, backfill,
                                           message=str(e))
            except Exception as e:  # noqa: BLE001 - anything else makes this digest invalid, as in the CLI
                key, end_date = self._next(digests, bucket, key, last_start, self.on_invalid, backfill,
                                           message=f"Digest file\ts3://{bucket}/{key}\tINVALID: {e}")

    def _next(self, digests: list[str], bucket: str, last_key: str, last_start: datetime, cb: Callable,
              backfill: bool, *, conditional: bool = False, message: str | None = None
              ) -> tuple[str | None, datetime | None]:
        next_key, next_end = self._last(digests, last_key)
        if not conditional or next_key:
            cb(bucket=bucket, next_key=next_key, last_key=last_key, next_end_date=next_end,
               last_start_date=last_start, message=message, is_backfill=backfill)
        return next_key, next_end

    def _fetch(self, bucket: str, key: str, backfill: bool) -> tuple[Any, bytes]:
        body = self.objects.get(bucket, key)
        try:
            raw = zlib.decompress(body, zlib.MAX_WBITS | 16)
            data = json.loads(raw.decode())
        except (ValueError, zlib.error):
            raise InvalidDigestFormat(bucket, key) from None
        if self.objects.local_dir and isinstance(data, dict) and data.get("previousDigestSignature") \
                and data.get("previousDigestS3Object"):
            # A signature proves itself (it must verify with a published key), so whichever digest names
            # its predecessor's signature may stand in for that predecessor's missing metadata.
            self._known_signatures[(data.get("previousDigestS3Bucket"), data["previousDigestS3Object"])] = \
                data["previousDigestSignature"]
        meta = self.objects.metadata(bucket, key)
        if "signature" not in meta or "signature-algorithm" not in meta:
            vouched = self._known_signatures.get((bucket, key)) if self.objects.local_dir else None
            if vouched is None:
                raise DigestSignatureError(bucket, key)
            meta = {"signature": vouched, "signature-algorithm": "SHA256withRSA", **meta}
        data["_signature"] = meta["signature"]
        data["_signature_algorithm"] = meta["signature-algorithm"]
        if backfill:
            if "backfill-generation-timestamp" not in meta:
                raise InvalidDigestFormat(bucket, key)
            data["_backfill_generation_timestamp"] = meta["backfill-generation-timestamp"]
        return data, raw

    def _load_and_validate(self, public_keys: dict, bucket: str, key: str, backfill: bool
                           ) -> tuple[dict, datetime]:
        data, raw = self._fetch(bucket, key, backfill)
        for required in REQUIRED_DIGEST_KEYS:
            if required not in data:
                raise InvalidDigestFormat(bucket, key)
        if data["digestS3Bucket"] != bucket or data["digestS3Object"] != key:
            raise DigestError(f"Digest file\ts3://{bucket}/{key}\tINVALID: has been moved from its original "
                              "location")
        fp = data["digestPublicKeyFingerprint"]
        if fp not in public_keys and backfill:
            when = normalize_date(parse_date(data["_backfill_generation_timestamp"]))
            public_keys.update(self._load_public_keys(when - timedelta(hours=1), when + timedelta(hours=1)))
        if fp not in public_keys:
            raise DigestError(f"Digest file\ts3://{bucket}/{key}\tINVALID: public key not found in region "
                              f"{self.home_region} for fingerprint {fp}")
        self._verify(bucket, key, public_keys[fp]["Value"], data, raw)
        return data, normalize_date(parse_date(data["digestEndTime"]))

    @staticmethod
    def _verify(bucket: str, key: str, value: str, data: dict, raw: bytes) -> None:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        der = base64.b64decode(value)
        try:
            public = load_public_der(der)
        except ValueError:
            raise DigestError(f"Digest file\ts3://{bucket}/{key}\tINVALID: Unable to load PKCS #1 key with "
                              f"fingerprint {data['digestPublicKeyFingerprint']}") from None
        prev = data["previousDigestSignature"]
        to_sign = (f"{data['digestEndTime']}\n{data['digestS3Bucket']}/{data['digestS3Object']}\n"
                   f"{hashlib.sha256(raw).hexdigest()}\n{'null' if prev is None else prev}").encode()
        signature = binascii.unhexlify(data["_signature"])
        try:
            public.verify(signature, to_sign, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            raise DigestSignatureError(bucket, key) from None


# ---- the command's reporting ------------------------------------------------------------------------

class LogValidation:
    """One `validate-logs` run: counts, messages (stdout/stderr exactly as the AWS CLI), exit status."""

    def __init__(self, objects: Objects, *, trail_arn: str, start: datetime, end: datetime, source_region: str,
                 bucket: str, prefix: str | None, account_id: str | None, organization_id: str | None,
                 public_keys: PublicKeys, verbose: bool = False, out=None, err=None):
        self.objects = objects
        self.trail_arn = trail_arn
        self.start, self.end = start, end
        self.verbose = verbose
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.valid_digests = self.invalid_digests = 0
        self.valid_backfill = self.invalid_backfill = 0
        self.valid_logs = self.invalid_logs = 0
        self._double_spaced = True
        self._found_start: datetime | None = None
        self._found_end: datetime | None = None
        self.traverser = Traverser(objects, trail_arn=trail_arn, source_region=source_region, bucket=bucket,
                                   prefix=prefix, account_id=account_id, organization_id=organization_id,
                                   public_keys=public_keys, on_invalid=self._on_invalid,
                                   on_missing=self._on_missing, on_gap=self._on_gap)

    def run(self) -> int:
        self.out.write(f"Validating log files for trail {self.trail_arn} between {display(self.start)} and "
                       f"{display(self.end)}\n\n")
        for backfill in (False, True):
            for digest in self.traverser.traverse(self.start, self.end, backfill):
                self._track_found_times(digest)
                if backfill:
                    self.valid_backfill += 1
                else:
                    self.valid_digests += 1
                self._status(f"{'(backfill) ' if backfill else ''}Digest file\t"
                             f"s3://{digest['digestS3Bucket']}/{digest['digestS3Object']}\tvalid")
                for log in digest["logFiles"] or []:
                    self._check_log(log)
        self._summary()
        return 1 if self.invalid_digests + self.invalid_backfill > 0 or self.invalid_logs > 0 else 0

    def _track_found_times(self, digest: dict) -> None:
        s = max(parse_date(digest["digestStartTime"]), self.start)
        if not self._found_start or s < self._found_start:
            self._found_start = s
        e = min(parse_date(digest["digestEndTime"]), self.end)
        if not self._found_end or e > self._found_end:
            self._found_end = e

    def _check_log(self, log: dict) -> None:
        where = f"s3://{log['s3Bucket']}/{log['s3Object']}"
        try:
            body = self.objects.get(log["s3Bucket"], log["s3Object"])
        except _NotFound:
            return self._log_invalid(where, "not found")
        try:
            inflater = zlib.decompressobj(zlib.MAX_WBITS | 16)
            h = hashlib.sha256()
            for i in range(0, len(body), 2048):
                h.update(inflater.decompress(body[i:i + 2048]))
            h.update(inflater.flush())
            ok = h.hexdigest() == log["hashValue"]
        except Exception:  # noqa: BLE001 - not gzip, or a malformed entry: "invalid format", as the CLI
            return self._log_invalid(where, "invalid format")
        if not ok:
            return self._log_invalid(where, "hash value doesn't match")
        self.valid_logs += 1
        self._status(f"Log file\t{where}\tvalid")

    def _log_invalid(self, where: str, why: str) -> None:
        self.invalid_logs += 1
        self._status(f"Log file\t{where}\tINVALID: {why}", error=True)

    def _status(self, message: str, error: bool = False) -> None:
        if error:
            self.err.write(f"{message}\n\n" if self._double_spaced else f"\n{message}\n\n")
            self._double_spaced = True
        elif self.verbose:
            self._double_spaced = False
            self.out.write(f"{message}\n")

    def _count_invalid(self, backfill: bool) -> None:
        if backfill:
            self.invalid_backfill += 1
        else:
            self.invalid_digests += 1

    def _on_missing(self, bucket: str, last_key: str, is_backfill: bool = False, **_: Any) -> None:
        self._count_invalid(is_backfill)
        self._status(f"{'(backfill) ' if is_backfill else ''}Digest file\ts3://{bucket}/{last_key}\t"
                     "INVALID: not found", error=True)

    def _on_gap(self, is_backfill: bool = False, **kw: Any) -> None:
        self._status(f"{'(backfill) ' if is_backfill else ''}No log files were delivered by CloudTrail between "
                     f"{display(kw['next_end_date'])} and {display(kw['last_start_date'])}", error=True)

    def _on_invalid(self, message: str, is_backfill: bool = False, **_: Any) -> None:
        self._count_invalid(is_backfill)
        self._status(f"{'(backfill) ' if is_backfill else ''}{message}", error=True)

    def _summary(self) -> None:
        w = self.out.write
        if not self._double_spaced:
            w("\n")
        w(f"Results requested for {display(self.start)} to {display(self.end)}\n")
        if not (self.valid_digests + self.valid_backfill) and not (self.invalid_digests + self.invalid_backfill):
            w("No digests found\n")
            return
        if not self._found_start or not self._found_end:
            w("No valid digests found in range\n")
        else:
            w(f"Results found for {display(self._found_start)} to {display(self._found_end)}:\n")
        for valid, invalid, name in ((self.valid_digests, self.invalid_digests, "digest"),
                                     (self.valid_backfill, self.invalid_backfill, "backfill digest"),
                                     (self.valid_logs, self.invalid_logs, "log")):
            total = valid + invalid
            if total > 0:
                w(f"\n{valid}/{total} {name} files valid")
                if invalid > 0:
                    w(f", {invalid}/{total} {name} files INVALID")
        w("\n")


# ---- trail lookup -------------------------------------------------------------------------------------

def _trail_from_server(client: Any, trail_arn: str) -> dict:
    try:
        trails = client.describe_trails().get("trailList", [])
    except Exception as e:  # noqa: BLE001 - botocore's errors are one line already
        raise ValidationAborted(str(e)) from None
    for trail in trails:
        if trail.get("TrailARN") == trail_arn:
            return trail
    raise ValidationAborted(f"A trail could not be found for {trail_arn}")


def _trail_from_lake(lake: Any, trail_arn: str, region: str) -> dict:
    """The trail as DescribeTrails describes it, asked of the lake's own trail handlers."""
    from .apicore import OPERATIONS, ApiContext, ApiError, Principal

    try:
        importlib.import_module("lake.api_trails")  # registers DescribeTrails (built separately)
    except ModuleNotFoundError:
        pass
    handler = OPERATIONS.get("DescribeTrails")
    if handler is None:
        raise ValidationAborted(f"cannot look up trail {trail_arn}: give --s3-bucket (and --s3-prefix)")
    acct = trail_arn.split(":")[4]
    principal = Principal(access_key_id="lake-cli", arn=f"arn:aws:iam::{acct}:root", account_id=acct,
                          allowed_accounts=frozenset({acct, lake.account_id}))
    ctx = ApiContext(lake=lake, principal=principal, region=region, request_id=str(uuid.uuid4()))
    try:
        trails = handler(ctx, {"trailNameList": [trail_arn], "includeShadowTrails": True}).get("trailList", [])
    except ApiError as e:
        raise ValidationAborted(f"cannot look up trail {trail_arn}: {e.message}") from None
    except Exception as e:  # noqa: BLE001 - the lake's trails could not say: one line, not a traceback
        raise ValidationAborted(f"cannot look up trail {trail_arn}: {type(e).__name__}: {e}") from None
    for trail in trails:
        if trail.get("TrailARN") == trail_arn:
            return trail
    raise ValidationAborted(f"A trail could not be found for {trail_arn}")


def _bucket_of_local_copy(objects: Objects, traverser: Traverser, start: datetime) -> str | None:
    """The bucket named in the newest digest of a local copy (when none was given)."""
    for key in reversed(objects.list_after("local", traverser._with_prefix(traverser._base()),
                                           traverser._marker(start))):
        if not traverser._key_regex().match(key):
            continue
        try:
            return json.loads(zlib.decompress(objects.get("local", key), zlib.MAX_WBITS | 16))["digestS3Bucket"]
        except Exception:  # noqa: BLE001 - unreadable: try an older one
            continue
    return None


def _bucket_resolver(lake: Any) -> Callable[[str], tuple[str, dict | None]] | None:
    """Where the lake's trails deliver a bucket (`lake trails map-bucket` may map a bucket name to a local
    directory or another filesystem); None when the lake has no trails module."""
    try:
        from .trails import bucket_target
    except ImportError:
        return None
    return lambda bucket: bucket_target(lake, bucket)


# ---- the command ----------------------------------------------------------------------------------------

def validate_logs(*, trail_arn: str, start_time: str, end_time: str | None = None, s3_bucket: str | None = None,
                  s3_prefix: str | None = None, account_id: str | None = None, verbose: bool = False,
                  local: str | None = None, region: str | None = None, endpoint_url: str | None = None,
                  organization_id: str | None = None, lake: Any = None, out=None, err=None) -> int:
    """Run `validate-logs`; the exit status (0 valid, 1 invalid). Raises ValidationAborted (exit 255)."""
    out = out or sys.stdout
    if not ARN_PATTERN.match(trail_arn):
        raise ValidationAborted(f"Invalid trail ARN provided: {trail_arn}")
    try:
        start = normalize_date(parse_date(start_time))
        end = normalize_date(parse_date(end_time)) if end_time else normalize_date(datetime.now(timezone.utc))
    except ValueError as e:
        raise ValidationAborted(str(e)) from None
    if start > end:
        raise ValidationAborted("Invalid time range specified: start-time must occur before end-time")
    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or trail_arn.split(":")[3]
    client = cloudtrail_client(endpoint_url, region) if endpoint_url else None
    if lake is None and client is None:
        from .lake import Lake
        lake = Lake()
    prefix = s3_prefix
    if s3_bucket is None:
        try:
            trail = _trail_from_server(client, trail_arn) if client else _trail_from_lake(lake, trail_arn, region)
        except ValidationAborted:
            if not local:
                raise
            trail = None  # a local copy of a trail this lake does not know: bucket from the digests
    else:
        trail = None
    if trail is not None:
        s3_bucket = trail["S3BucketName"]
        prefix = trail.get("S3KeyPrefix") if s3_prefix is None else s3_prefix
        if trail.get("IsOrganizationTrail"):
            if not account_id:
                raise ValidationAborted("Missing required parameter for organization trail: '--account-id'")
            if not organization_id:
                raise ValidationAborted("organization trail: give --organization-id (Lake has no Organizations "
                                        "API to ask)")
    objects = Objects(local, resolve=_bucket_resolver(lake) if lake is not None and client is None else None)
    keys = server_public_keys(client) if client else lake_public_keys(lake, region)
    run = LogValidation(objects, trail_arn=trail_arn, start=start, end=end, source_region=region,
                        bucket=s3_bucket or "local", prefix=prefix, account_id=account_id,
                        organization_id=organization_id, public_keys=keys, verbose=verbose, out=out, err=err)
    if local and s3_bucket is None:
        found = _bucket_of_local_copy(objects, run.traverser, start)
        run.traverser.starting_bucket = found or "local"
    return run.run()


@click.command("validate-logs", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--trail-arn", required=True, help="The ARN of the trail to validate.")
@click.option("--start-time", required=True,
              help='Validate log files delivered on or after this UTC time, e.g. "2015-01-08T05:21:42Z".')
@click.option("--end-time", default=None, help="Validate log files delivered on or before this UTC time "
                                                "(default now).")
@click.option("--s3-bucket", default=None, help="Bucket of the digest files (default: the trail's).")
@click.option("--s3-prefix", default=None, help="Key prefix of the digest files (default: the trail's).")
@click.option("--account-id", default=None, help="Account whose logs to validate (organization trails).")
@click.option("--verbose", is_flag=True, help="Also list every valid digest and log file.")
@click.option("--local", "local", default=None, metavar="DIR",
              type=click.Path(exists=True, file_okay=False),
              help="Lake extension: validate a local copy of the bucket (DIR holds the bucket's root).")
@click.option("--region", default=None, help="Source region of the logs (default $AWS_REGION, "
                                              "$AWS_DEFAULT_REGION, else the trail's home region).")
@click.option("--endpoint-url", default=None, metavar="URL",
              help="A Lake server: public keys (and the trail) come from its API instead of the lake.")
@click.option("--organization-id", default=None, help="Organization id (o-...) of an organization trail.")
@click.pass_context
def validate_logs_cmd(ctx: click.Context, trail_arn: str, start_time: str, end_time: str | None,
                      s3_bucket: str | None, s3_prefix: str | None, account_id: str | None, verbose: bool,
                      local: str | None, region: str | None, endpoint_url: str | None,
                      organization_id: str | None) -> None:
    """Validate a trail's log files with its digest files (the AWS CLI's `cloudtrail validate-logs`).

    Exit status 0 when everything found is valid, 1 when any digest or log file is invalid, 255 when
    validation cannot run."""
    root = ctx.find_root().obj
    lake = getattr(root, "lake", None) if endpoint_url is None else None
    try:
        code = validate_logs(trail_arn=trail_arn, start_time=start_time, end_time=end_time, s3_bucket=s3_bucket,
                             s3_prefix=s3_prefix, account_id=account_id, verbose=verbose, local=local,
                             region=region, endpoint_url=endpoint_url, organization_id=organization_id, lake=lake)
    except ValidationAborted as e:
        sys.stdout.flush()
        sys.stderr.write(f"\n{e}\n")
        ctx.exit(FATAL_EXIT)
    ctx.exit(code)


__all__ = ["validate_logs_cmd", "validate_logs", "LogValidation", "Traverser", "Objects", "ValidationAborted",
           "lake_public_keys", "server_public_keys"]
