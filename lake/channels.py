"""Channels (CloudTrail Lake integrations): the catalog, resource policies, and PutAuditEvents ingestion.

Independent of HTTP so the `lake serve` handlers (`lake/api_channels.py`), tests and scripts share one
implementation. Three parts:

* **Catalog.** A channel is a JSON document versioned under `_catalog/channels/<id>/v<N>.json`. Every change
  (update, resource policy, delete) writes the next version with a create-only write, so two servers
  changing the same channel never lose an update: the loser of the race re-reads and re-applies. A delete
  writes a tombstone version. Names (per owner account) and partner sources (one channel per source and
  account) are claimed with create-only files under `_catalog/channel-names/` and `_catalog/channel-sources/`.
* **Resource policies.** The IAM subset CloudTrail accepts on a channel (one action,
  `cloudtrail-data:PutAuditEvents`; the channel's own ARN as resource; 1-20 statements of 1-50 AWS
  principals; string conditions such as `cloudtrail:ExternalId`), validated when put and evaluated on every
  PutAuditEvents: an explicit Deny wins, the owner account is allowed, anyone else needs an Allow.
* **Ingestion.** `build_record` checks one audit event (JSON, checksum, the custom event schema of the
  reference, section 6.4) and wraps it as a stored ActivityAuditLog record; `Ingestor` group-commits the
  records of concurrent requests into each destination store (one `store.append(source="live")` per batch
  and store, from one writer thread per store and process), so 8 clients cost one commit per round rather
  than 8 racing commits, and a request is answered only after its events are committed.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import functools
import hashlib
import ipaddress
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable

import orjson

from . import limits
from .errors import LakeError, NotFound
from .log import now_iso
from .selectors import matches_record
from .store import PENDING_DELETION, STOPPED
from .timeparse import parse_timestamps

# --------------------------------------------------------------------------------------------- constants

CUSTOM_SOURCE = "Custom"
MAX_CHANNELS_PER_ACCOUNT = 25          # reference section 10: not adjustable
MAX_EVENTS_PER_REQUEST = 100
MAX_REQUEST_BYTES = 1024 * 1024        # "up to 100 events (or up to 1 MB) per PutAuditEvents request"
ACTIVITY_CATEGORY = "ActivityAuditLog"
ACTIVITY_EVENT_TYPE = "ActivityLog"
ACTIVITY_EVENT_VERSION = "1.11"        # UNCONFIRMED: AWS does not document the value it stamps
PUT_AUDIT_EVENTS_ACTION = "cloudtrail-data:PutAuditEvents"

NAME_RE = re.compile(r"^[a-zA-Z0-9._\-]{3,128}\Z")
CHANNEL_ID_RE = re.compile(r"^[A-Za-z0-9-]{1,128}\Z")
CHANNEL_ARN_RE = re.compile(r"^arn:(aws[a-z-]*):cloudtrail:([a-z0-9-]*):([0-9]{12}|[^:]*):channel/([A-Za-z0-9-]+)\Z")
EDS_ARN_RE = re.compile(r"^arn:aws[a-z-]*:cloudtrail:[a-z0-9-]*:([^:]*):eventdatastore/([A-Za-z0-9-]+)\Z")
_PREFIX = "_catalog/channels"
_VERSION_RE = re.compile(r"^v(\d{8})\.json\Z")


# ------------------------------------------------------------------------------------------------ errors

class ChannelError(LakeError):
    """A channel operation that cannot be done; `code` is the CloudTrail control-plane exception name."""


class ChannelNotFound(ChannelError):
    code = "ChannelNotFoundException"


class ChannelArnInvalid(ChannelError):
    code = "ChannelARNInvalidException"


class ChannelExists(ChannelError):
    code = "ChannelAlreadyExistsException"


class ChannelLimitExceeded(ChannelError):
    code = "ChannelMaxLimitExceededException"


class InvalidSource(ChannelError):
    code = "InvalidSourceException"


class InvalidChannelParameter(ChannelError):
    code = "InvalidParameterException"


class DestinationArnInvalid(ChannelError):
    code = "EventDataStoreARNInvalidException"


class DestinationNotFound(ChannelError):
    code = "EventDataStoreNotFoundException"


class DestinationInactive(ChannelError):
    code = "InactiveEventDataStoreException"


class DestinationWrongCategory(ChannelError):
    code = "InvalidEventDataStoreCategoryException"


class PolicyInvalid(ChannelError):
    code = "ResourcePolicyNotValidException"


class PolicyNotFound(ChannelError):
    code = "ResourcePolicyNotFoundException"


# ----------------------------------------------------------------------------------------------- catalog

@dataclass(frozen=True)
class Channel:
    """One version of a channel document (what GetChannel describes)."""

    id: str
    arn: str
    name: str
    source: str
    destinations: tuple[dict, ...]
    owner: str                      # the account that created it (the ARN's account)
    created: str
    updated: str
    version: int
    policy: str | None = None       # the resource policy text exactly as put

    def as_doc(self) -> dict:
        return {"ChannelId": self.id, "ChannelArn": self.arn, "Name": self.name, "Source": self.source,
                "Destinations": list(self.destinations), "Owner": self.owner, "CreatedTimestamp": self.created,
                "UpdatedTimestamp": self.updated, "ResourcePolicy": self.policy}

    @staticmethod
    def from_doc(doc: dict, version: int) -> "Channel":
        return Channel(id=doc["ChannelId"], arn=doc["ChannelArn"], name=doc["Name"], source=doc["Source"],
                       destinations=tuple(doc["Destinations"]), owner=doc["Owner"], created=doc["CreatedTimestamp"],
                       updated=doc["UpdatedTimestamp"], version=version, policy=doc.get("ResourcePolicy"))

    @property
    def store_ids(self) -> list[str]:
        return [EDS_ARN_RE.match(d["Location"]).group(2) for d in self.destinations]


def parse_channel_ref(ref: Any) -> tuple[str, str | None]:
    """(channel id, the ARN given or None) from a channel ARN or its id suffix; ChannelArnInvalid otherwise."""
    if not isinstance(ref, str):
        raise ChannelArnInvalid(f"channel {ref!r} is not a channel ARN or id")
    m = CHANNEL_ARN_RE.match(ref)
    if m:
        return m.group(4), ref
    if ref.startswith("arn:") or not CHANNEL_ID_RE.match(ref):
        raise ChannelArnInvalid(f"{ref[:300]!r} is not a channel ARN (arn:aws:cloudtrail:REGION:ACCOUNT:channel/ID) "
                                "or channel id")
    return ref, None


class ChannelCatalog:
    """The channels of one lake. Reads always go to storage (a few small files), so every server process
    sees every change at once; the only cache is the per-process ingestion status."""

    def __init__(self, lake: Any):
        self.lake = lake
        self.storage = lake.storage

    # -- reading --------------------------------------------------------------------------------------
    def _versions(self, channel_id: str) -> list[int]:
        return sorted(int(m.group(1)) for f in self.storage.list(f"{_PREFIX}/{channel_id}")
                      if (m := _VERSION_RE.match(f.path.rsplit("/", 1)[-1])))

    def _read(self, channel_id: str, version: int) -> dict:
        return orjson.loads(self.storage.read(f"{_PREFIX}/{channel_id}/v{version:08d}.json"))

    def _latest(self, channel_id: str) -> tuple[int, dict | None]:
        """(latest version, its document or None for a deleted channel); (0, None) if it never existed."""
        versions = self._versions(channel_id)
        if not versions:
            return 0, None
        doc = self._read(channel_id, versions[-1])
        return versions[-1], (None if doc.get("Deleted") else doc)

    def get(self, ref: str) -> Channel:
        """A live channel by ARN or id. An ARN must match the channel's own ARN exactly (region, account)."""
        channel_id, arn = parse_channel_ref(ref)
        version, doc = self._latest(channel_id)
        if doc is None or (arn is not None and arn != doc["ChannelArn"]):
            raise ChannelNotFound(f"no channel {ref!r}")
        return Channel.from_doc(doc, version)

    def list(self, accounts: Iterable[str] | None = None) -> list[Channel]:
        """Live channels, oldest first, optionally only those owned by `accounts`."""
        wanted = None if accounts is None else set(accounts)
        latest: dict[str, int] = {}
        for f in self.storage.list(_PREFIX):
            parts = f.path.split("/")
            m = _VERSION_RE.match(parts[-1])
            if m and len(parts) == 4:
                latest[parts[2]] = max(latest.get(parts[2], 0), int(m.group(1)))
        out = []
        for channel_id, version in latest.items():
            try:
                doc = self._read(channel_id, version)
            except FileNotFoundError:
                continue
            if doc.get("Deleted") or (wanted is not None and doc["Owner"] not in wanted):
                continue
            out.append(Channel.from_doc(doc, version))
        return sorted(out, key=lambda c: (c.created, c.id))

    # -- claims ---------------------------------------------------------------------------------------
    @staticmethod
    def _name_claim(account: str, name: str) -> str:
        return f"_catalog/channel-names/{account}/{name}"

    @staticmethod
    def _source_claim(account: str, source: str) -> str:
        return f"_catalog/channel-sources/{account}/{hashlib.sha256(source.encode()).hexdigest()}"

    def _claim(self, path: str, channel_id: str, what: str, holds: Callable[[dict], bool]) -> None:
        """Claim a unique name for `channel_id`. A claim is taken over when its holder no longer holds it
        (`holds(doc)` is false: deleted, renamed, a crash before the release) or never came to exist (a
        creation that died before writing its channel, claim older than a minute)."""
        for _ in range(3):
            if self.storage.create(path, channel_id.encode(), durable=False):
                return
            try:
                holder = self.storage.read(path).decode()
            except FileNotFoundError:
                continue
            if holder == channel_id:
                return
            version, doc = self._latest(holder)
            if (doc is not None and holds(doc)) or (version == 0 and not self._stale(path)):
                raise ChannelExists(f"a channel with {what} already exists ({holder})")
            self.storage.delete(path)
        raise ChannelExists(f"a channel with {what} already exists")

    def _stale(self, path: str, age: float = 60.0) -> bool:
        found = [f for f in self.storage.list(path.rsplit("/", 1)[0]) if f.path == path]
        return bool(found) and time.time() - found[0].mtime > age

    def _release(self, path: str, channel_id: str) -> None:
        try:
            if self.storage.read(path).decode() == channel_id:
                self.storage.delete(path)
        except FileNotFoundError:
            pass

    # -- writing --------------------------------------------------------------------------------------
    def create(self, *, name: str, source: str, destinations: list[dict], owner: str, region: str,
               partition: str = "aws",
               may_use_store: Callable[[Any], bool] = lambda store: True) -> Channel:
        """CreateChannel. `may_use_store(store)` says whether the caller may send events to that store (a
        destination the caller cannot see is reported as not found)."""
        check_name(name)
        check_source(source)
        dests = self.resolve_destinations(destinations, may_use_store)
        if len(self.list([owner])) >= MAX_CHANNELS_PER_ACCOUNT:
            raise ChannelLimitExceeded(f"account {owner} already has {MAX_CHANNELS_PER_ACCOUNT} channels, the "
                                       "maximum; delete one first")
        channel_id = str(uuid.uuid4())
        claims = [(self._name_claim(owner, name), f"name {name!r}", lambda d: d["Name"] == name)]
        if source != CUSTOM_SOURCE:
            claims.append((self._source_claim(owner, source), f"source {source!r}", lambda d: d["Source"] == source))
        taken: list[str] = []
        try:
            for path, what, holds in claims:
                self._claim(path, channel_id, what, holds)
                taken.append(path)
            ts = now_iso()
            doc = {"ChannelId": channel_id, "ChannelArn": f"arn:{partition}:cloudtrail:{region}:{owner}:channel/"
                   f"{channel_id}", "Name": name, "Source": source, "Destinations": dests, "Owner": owner,
                   "CreatedTimestamp": ts, "UpdatedTimestamp": ts, "ResourcePolicy": None}
            if not self.storage.create(f"{_PREFIX}/{channel_id}/v{1:08d}.json", orjson.dumps(doc)):
                raise ChannelExists(f"channel id {channel_id} already exists")  # pragma: no cover - uuid clash
        except Exception:
            for path in taken:
                self._release(path, channel_id)
            raise
        return Channel.from_doc(doc, 1)

    def _change(self, ref: str, change: Callable[[dict], dict | None]) -> tuple[Channel, dict]:
        """Write the next version of a channel: `change(doc)` returns the new document (None: no change)
        and is re-run on the newest version when another writer got there first. Returns (new, old doc)."""
        channel_id, arn = parse_channel_ref(ref)
        for _ in range(50):
            version, doc = self._latest(channel_id)
            if doc is None or (arn is not None and arn != doc["ChannelArn"]):
                raise ChannelNotFound(f"no channel {ref!r}")
            new = change(dict(doc))
            if new is None:
                return Channel.from_doc(doc, version), doc
            if not new.get("Deleted"):
                new["UpdatedTimestamp"] = now_iso()
            if self.storage.create(f"{_PREFIX}/{channel_id}/v{version + 1:08d}.json", orjson.dumps(new)):
                return (Channel.from_doc(new, version + 1) if not new.get("Deleted") else
                        Channel.from_doc(doc, version)), doc
        raise ChannelError(f"channel {ref!r} is being changed by other writers; try again")

    def update(self, ref: str, *, name: str | None = None, destinations: list[dict] | None = None,
               may_use_store: Callable[[Any], bool] = lambda store: True) -> Channel:
        """UpdateChannel: a new name and/or new destinations (the source never changes)."""
        if name is None and destinations is None:
            raise InvalidChannelParameter("UpdateChannel needs Name or Destinations")
        if name is not None:
            check_name(name)
        dests = self.resolve_destinations(destinations, may_use_store) if destinations is not None else None
        current = self.get(ref)
        renamed = name is not None and name != current.name
        if renamed:
            self._claim(self._name_claim(current.owner, name), current.id, f"name {name!r}",
                        lambda d: d["Name"] == name)
        old_names: list[str] = []

        def change(doc: dict) -> dict:
            if name is not None:
                old_names[:] = [doc["Name"]]
                doc["Name"] = name
            if dests is not None:
                doc["Destinations"] = dests
            return doc
        try:
            new, _ = self._change(ref, change)
        except Exception:
            if renamed:
                self._release(self._name_claim(current.owner, name), current.id)
            raise
        if old_names and old_names[0] != new.name:
            self._release(self._name_claim(new.owner, old_names[0]), new.id)
        return new

    def delete(self, ref: str) -> Channel:
        """DeleteChannel: a tombstone version, then the name and source are free again."""
        _, old = self._change(ref, lambda doc: {"ChannelId": doc["ChannelId"], "Deleted": True,
                                                "DeletedTimestamp": now_iso()})
        gone = Channel.from_doc(old, 0)
        self._release(self._name_claim(gone.owner, gone.name), gone.id)
        if gone.source != CUSTOM_SOURCE:
            self._release(self._source_claim(gone.owner, gone.source), gone.id)
        return gone

    def put_policy(self, ref: str, text: str) -> Channel:
        """PutResourcePolicy: validated against the channel's ARN, kept as the exact text given."""
        channel = self.get(ref)
        validate_policy(text, channel.arn)

        def change(doc: dict) -> dict:
            doc["ResourcePolicy"] = text
            return doc
        return self._change(channel.arn, change)[0]

    def delete_policy(self, ref: str) -> Channel:
        def change(doc: dict) -> dict:
            if not doc.get("ResourcePolicy"):
                raise PolicyNotFound(f"channel {doc['ChannelArn']} has no resource policy")
            doc["ResourcePolicy"] = None
            return doc
        return self._change(ref, change)[0]

    # -- destinations ---------------------------------------------------------------------------------
    def resolve_destinations(self, destinations: Any, may_use_store: Callable[[Any], bool]) -> list[dict]:
        """Check destinations and return them with each Location as the store's full ARN. A destination must
        be an existing, active event data store whose selectors accept ActivityAuditLog events."""
        if not isinstance(destinations, list) or not 1 <= len(destinations) <= 200:
            raise InvalidChannelParameter("Destinations must list 1 to 200 destinations")
        out: list[dict] = []
        for i, d in enumerate(destinations):
            if not isinstance(d, dict) or not isinstance(d.get("Location"), str):
                raise InvalidChannelParameter(f"Destinations[{i}] needs Type and Location")
            if d.get("Type") != "EVENT_DATA_STORE":
                raise InvalidChannelParameter(f"Destinations[{i}]: Type {d.get('Type')!r} is not supported; Lake "
                                              "channels deliver to event data stores (Type EVENT_DATA_STORE)")
            st = self._destination_store(d["Location"], may_use_store)
            md = st.metadata
            if md["Status"] == PENDING_DELETION:
                raise DestinationInactive(f"event data store {md['Name']} is pending deletion")
            if not accepts_activity(md):
                raise DestinationWrongCategory(
                    f"event data store {md['Name']} does not accept {ACTIVITY_CATEGORY} events: a channel's "
                    "destination needs the selector eventCategory Equals ActivityAuditLog")
            entry = {"Type": "EVENT_DATA_STORE", "Location": md["EventDataStoreArn"]}
            if entry in out:
                raise InvalidChannelParameter(f"Destinations[{i}] repeats {entry['Location']}")
            out.append(entry)
        return out

    def _destination_store(self, location: str, may_use_store: Callable[[Any], bool]):
        m = EDS_ARN_RE.match(location)
        if m is None and (location.startswith("arn:") or not CHANNEL_ID_RE.match(location)):
            raise DestinationArnInvalid(f"{location[:300]!r} is not an event data store ARN")
        store_id = m.group(2) if m else location
        try:
            st = self.lake._open(store_id)
        except NotFound:
            raise DestinationNotFound(f"no event data store {location!r}") from None
        arn = st.metadata["EventDataStoreArn"]
        if (m is not None and location != arn) or not may_use_store(st) or st.expired_deletion():
            raise DestinationNotFound(f"no event data store {location!r}")
        return st

    # -- ingestion status (GetChannel IngestionStatus) ------------------------------------------------
    def ingestion_status(self, channel_id: str) -> dict:
        """The newest of this process's in-memory status and the shared hint file (other processes)."""
        mine = _STATUS.get((self.storage.uri, channel_id))
        try:
            theirs = orjson.loads(self.storage.read(f"{_PREFIX}/{channel_id}/ingestion.json"))
        except (FileNotFoundError, orjson.JSONDecodeError):
            theirs = None
        cands = [s for s in (mine, theirs) if s]
        return max(cands, key=lambda s: s.get("LatestIngestionAttemptTime", 0)) if cands else {}

    def record_ingestion(self, channel_id: str, *, attempt_id: str | None, success_id: str | None,
                         error_code: str | None, now: float | None = None) -> None:
        """Remember the latest attempt of a PutAuditEvents; persisted at most once a second per channel
        (a hint for other processes, never used for anything but GetChannel)."""
        now = time.time() if now is None else now
        key = (self.storage.uri, channel_id)
        with _STATUS_LOCK:
            st = dict(_STATUS.get(key) or {})
            st["LatestIngestionAttemptTime"] = now
            if attempt_id:
                st["LatestIngestionAttemptEventID"] = attempt_id
            if success_id:
                st["LatestIngestionSuccessTime"] = now
                st["LatestIngestionSuccessEventID"] = success_id
            if error_code:
                st["LatestIngestionErrorCode"] = error_code
            _STATUS[key] = st
            flush = now - _STATUS_FLUSHED.get(key, 0.0) >= 1.0
            if flush:
                _STATUS_FLUSHED[key] = now
        if flush:
            try:
                self.storage.write(f"{_PREFIX}/{channel_id}/ingestion.json", orjson.dumps(st))
            except OSError:  # a hint only
                pass


_STATUS: dict[tuple[str, str], dict] = {}
_STATUS_FLUSHED: dict[tuple[str, str], float] = {}
_STATUS_LOCK = threading.Lock()


def check_name(name: Any) -> None:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise InvalidChannelParameter(f"channel name {name!r} is invalid: use 3-128 characters from a-z A-Z 0-9 . _ -")


def check_source(source: Any) -> None:
    """`Custom` or a partner source name. Lake has no list of partners, so any printable name of 1-256
    characters is accepted as a partner source (one channel per partner source and account)."""
    if not isinstance(source, str) or not 1 <= len(source) <= 256 or not source.isprintable() or not source.strip():
        raise InvalidSource(f"source {source!r} is invalid: use 'Custom' or a partner source name")


def accepts_activity(store_metadata: dict) -> bool:
    """Whether a store's selectors take ActivityAuditLog events (what a channel destination requires)."""
    return matches_record({"eventCategory": ACTIVITY_CATEGORY}, store_metadata.get("AdvancedEventSelectors") or [])


# -------------------------------------------------------------------------------------- resource policies

_POLICY_VERSIONS = ("2012-10-17", "2008-10-17")
_CONDITION_KEYS = ("cloudtrail:externalid", "aws:principalaccount", "aws:principalarn", "aws:sourceaccount")
_CONDITION_OPS = {"stringequals", "stringnotequals", "stringequalsignorecase", "stringnotequalsignorecase",
                  "stringlike", "stringnotlike"}
_ROOT_RE = re.compile(r"^arn:aws[a-z-]*:iam::([0-9]{12}):root\Z")
_IAM_ARN_RE = re.compile(r"^arn:aws[a-z-]*:(iam|sts)::([0-9]{12}):.+\Z")


def _as_list(v: Any) -> list:
    return v if isinstance(v, list) else [v]


def validate_policy(text: Any, channel_arn: str) -> dict:
    """Parse and check a channel resource policy; PolicyInvalid with the first problem otherwise.

    CloudTrail's rules for channel policies: Version and Statement present; 1-20 statements; each with Effect
    Allow or Deny, 1-50 principals, the single action cloudtrail-data:PutAuditEvents and the channel's own
    ARN as Resource. Lake evaluates AWS principals (account ids, `arn:aws:iam::ACCOUNT:root`, IAM/STS ARNs,
    `*`) and string conditions on cloudtrail:ExternalId, aws:PrincipalAccount, aws:PrincipalArn and
    aws:SourceAccount; anything else is refused here rather than silently misjudged later."""
    if not isinstance(text, str):
        raise PolicyInvalid("ResourcePolicy must be a JSON document in a string")
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as e:
        raise PolicyInvalid(f"ResourcePolicy is not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise PolicyInvalid("ResourcePolicy must be a JSON object with Version and Statement")
    unknown = set(doc) - {"Version", "Id", "Statement"}
    if unknown:
        raise PolicyInvalid(f"ResourcePolicy has unsupported element {sorted(unknown)[0]!r}")
    if doc.get("Version") not in _POLICY_VERSIONS:
        raise PolicyInvalid(f"ResourcePolicy Version must be one of {', '.join(_POLICY_VERSIONS)}, "
                            f"got {doc.get('Version')!r}")
    if "Statement" not in doc:
        raise PolicyInvalid("ResourcePolicy has no Statement")
    stmts = _as_list(doc["Statement"])
    if not 1 <= len(stmts) <= 20:
        raise PolicyInvalid(f"ResourcePolicy must have 1 to 20 statements, has {len(stmts)}")
    for i, s in enumerate(stmts):
        _validate_statement(i, s, channel_arn)
    return doc


def _validate_statement(i: int, s: Any, channel_arn: str) -> None:
    where = f"Statement[{i}]"
    if not isinstance(s, dict):
        raise PolicyInvalid(f"{where} must be an object")
    unknown = set(s) - {"Sid", "Effect", "Principal", "Action", "Resource", "Condition"}
    if unknown:
        raise PolicyInvalid(f"{where} has unsupported element {sorted(unknown)[0]!r} (Lake supports Sid, Effect, "
                            "Principal, Action, Resource, Condition)")
    if s.get("Effect") not in ("Allow", "Deny"):
        raise PolicyInvalid(f"{where}.Effect must be Allow or Deny, got {s.get('Effect')!r}")
    principals = _principals(where, s.get("Principal"))
    if not 1 <= len(principals) <= 50:
        raise PolicyInvalid(f"{where} must name 1 to 50 principals, names {len(principals)}")
    actions = _as_list(s.get("Action"))
    if not actions or any(not isinstance(a, str) or a.lower() != PUT_AUDIT_EVENTS_ACTION.lower() for a in actions):
        raise PolicyInvalid(f"{where}.Action must be {PUT_AUDIT_EVENTS_ACTION}, the only action of a channel "
                            f"policy, got {s.get('Action')!r}")
    resources = _as_list(s.get("Resource"))
    if not resources or any(r != channel_arn for r in resources):
        raise PolicyInvalid(f"{where}.Resource must be the channel's ARN {channel_arn}, got {s.get('Resource')!r}")
    cond = s.get("Condition", {})
    if not isinstance(cond, dict):
        raise PolicyInvalid(f"{where}.Condition must be an object")
    for op, body in cond.items():
        if not isinstance(op, str) or op.lower() not in _CONDITION_OPS:
            raise PolicyInvalid(f"{where}.Condition operator {op!r} is not supported (use one of StringEquals, "
                                "StringNotEquals, StringEqualsIgnoreCase, StringNotEqualsIgnoreCase, StringLike, "
                                "StringNotLike)")
        if not isinstance(body, dict) or not body:
            raise PolicyInvalid(f"{where}.Condition.{op} must map condition keys to values")
        for key, vals in body.items():
            if key.lower() not in _CONDITION_KEYS:
                raise PolicyInvalid(f"{where}.Condition.{op} key {key!r} is not supported (use cloudtrail:ExternalId, "
                                    "aws:PrincipalAccount, aws:PrincipalArn or aws:SourceAccount)")
            vals = _as_list(vals)
            if not vals or any(not isinstance(v, str) for v in vals):
                raise PolicyInvalid(f"{where}.Condition.{op}.{key} must be a string or a list of strings")


def _principals(where: str, p: Any) -> list[str]:
    if p == "*":
        return ["*"]
    if not isinstance(p, dict) or not p:
        raise PolicyInvalid(f"{where}.Principal must be \"*\" or {{\"AWS\": [...]}}")
    if set(p) != {"AWS"}:
        raise PolicyInvalid(f"{where}.Principal type {sorted(set(p) - {'AWS'})[0]!r} is not supported; "
                            "name AWS accounts or IAM principals under \"AWS\"")
    out = _as_list(p["AWS"])
    for v in out:
        if not isinstance(v, str) or not (v == "*" or re.fullmatch(r"[0-9]{12}", v) or _IAM_ARN_RE.match(v)):
            raise PolicyInvalid(f"{where}.Principal {v!r} is not an account id, an IAM ARN or \"*\"")
    return out


def _principal_matches(values: list[str], account: str, arn: str) -> bool:
    for v in values:
        if v == "*" or v == account or v == arn:
            return True
        m = _ROOT_RE.match(v)
        if m and m.group(1) == account:
            return True
    return False


def _condition_holds(op: str, key: str, wanted: list[str], context: dict[str, str | None]) -> bool:
    op = op.lower()
    value = context.get(key.lower())
    negated = "not" in op
    if value is None:
        return negated  # IAM: a negated operator holds when the key is absent, a positive one does not
    if op.startswith("stringlike") or op.startswith("stringnotlike"):
        hit = any(fnmatch.fnmatchcase(value, w) for w in wanted)
    elif op.endswith("ignorecase"):
        hit = value.lower() in {w.lower() for w in wanted}
    else:
        hit = value in wanted
    return not hit if negated else hit


def policy_decision(policy_text: str | None, *, account: str, arn: str, external_id: str | None,
                    channel_arn: str) -> str | None:
    """"Deny" if a Deny statement applies, "Allow" if an Allow applies, None if no statement applies."""
    if not policy_text:
        return None
    doc = orjson.loads(policy_text)
    context = {"cloudtrail:externalid": external_id, "aws:principalaccount": account, "aws:principalarn": arn,
               "aws:sourceaccount": account}
    decision = None
    for s in _as_list(doc["Statement"]):
        values = ["*"] if s["Principal"] == "*" else _as_list(s["Principal"]["AWS"])
        if not _principal_matches(values, account, arn):
            continue
        if channel_arn not in _as_list(s["Resource"]):
            continue
        if all(_condition_holds(op, key, _as_list(vals), context)
               for op, body in (s.get("Condition") or {}).items() for key, vals in body.items()):
            if s["Effect"] == "Deny":
                return "Deny"
            decision = "Allow"
    return decision


def may_put(channel: Channel, *, account: str, arn: str, external_id: str | None) -> bool:
    """PutAuditEvents permission: an explicit Deny in the channel's policy wins; otherwise the owner account
    may put, and another account only if the policy allows it (conditions such as the external id included)."""
    decision = policy_decision(channel.policy, account=account, arn=arn, external_id=external_id,
                               channel_arn=channel.arn)
    if decision == "Deny":
        return False
    return account == channel.owner or decision == "Allow"


# -------------------------------------------------------------------------------- audit event -> record

@dataclass
class Failure:
    """A per-event failure of PutAuditEvents (the model's `failed` entry)."""

    code: str
    message: str


# eventData fields (reference section 6.4): name -> (required, kind, max length). Kinds: "str", "obj".
_EVENT_FIELDS: dict[str, tuple[bool, str, int | None]] = {
    "version": (True, "str", 256),
    "userIdentity": (True, "obj", None),
    "userAgent": (False, "str", 1024),
    "eventSource": (True, "str", 1024),
    "eventName": (True, "str", 1024),
    "eventTime": (True, "str", None),
    "UID": (True, "str", 1024),
    "requestParameters": (False, "obj", 100 * 1024),
    "responseElements": (False, "obj", 100 * 1024),
    "errorCode": (False, "str", 256),
    "errorMessage": (False, "str", 256),
    "sourceIPAddress": (False, "str", None),
    "recipientAccountId": (True, "str", None),
    "additionalEventData": (False, "obj", 28 * 1024),
}
_IDENTITY_FIELDS: dict[str, tuple[bool, str, int | None]] = {
    "type": (True, "str", 128),
    "principalId": (True, "str", 1024),
    "details": (False, "obj", None),
}


def checksum_matches(event_data: str, checksum: str) -> bool:
    """eventDataChecksum is base64 of the SHA-256 of eventData's UTF-8 bytes (the model's documentation);
    the hex form is accepted too, since both spellings of "a SHA-256" circulate."""
    digest = hashlib.sha256(event_data.encode("utf-8")).digest()
    c = checksum.strip()
    if len(c) == 64 and re.fullmatch(r"[0-9A-Fa-f]{64}", c):
        return c.lower() == digest.hex()
    try:
        return base64.b64decode(c, validate=True) == digest
    except (binascii.Error, ValueError):
        return False


def _check_fields(obj: dict, spec: dict, where: str) -> Failure | None:
    for key in obj:
        if key not in spec:
            return Failure("InvalidData", f"{where} has unknown field {key[:100]!r}; the custom event schema has "
                                          f"{', '.join(spec)}")
    for key, (required, kind, cap) in spec.items():
        value = obj.get(key)
        if value is None:
            if required:
                return Failure("FieldNotFound", f"{where}.{key} is required")
            continue
        if kind == "str" and not isinstance(value, str):
            return Failure("InvalidData", f"{where}.{key} must be a string, got {_json_kind(value)}")
        if kind == "obj" and not isinstance(value, dict):
            return Failure("InvalidData", f"{where}.{key} must be a JSON object, got {_json_kind(value)}")
        if cap is not None:
            size = len(value) if kind == "str" else len(orjson.dumps(value))
            if size > cap:
                unit = "characters" if kind == "str" else "bytes of JSON"
                return Failure("FieldTooLong", f"{where}.{key} is {size:,} {unit}; the limit is {cap:,}")
    return None


def _json_kind(v: Any) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array",
            dict: "an object"}.get(type(v), type(v).__name__)


_CANONICAL_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z\Z")


_OUT_OF_RANGE = datetime.min.replace(tzinfo=timezone.utc)  # an eventTime that parses but is outside the bounds


def _event_times(values: list[str | None]) -> list[datetime | None]:
    """eventTime values as UTC datetimes (None where unparseable, `_OUT_OF_RANGE` where outside the accepted
    range, limits.EARLIEST_EVENT_TIME to limits.MAX_FUTURE_EVENT_TIME past now). The canonical CloudTrail form
    is parsed directly; anything else goes through the lake's timestamp parser, so both paths accept the same
    forms. The range is checked on the parsed column, before any value becomes a Python datetime: year 10000
    has none, and converting it raised OverflowError, which failed the whole request with HTTP 500."""
    out = _parse_event_times(values)
    lo, hi = limits.EARLIEST_EVENT_TIME, limits.latest_event_time()
    return [t if t is None or t is _OUT_OF_RANGE or lo <= t <= hi else _OUT_OF_RANGE for t in out]


def _parse_event_times(values: list[str | None]) -> list[datetime | None]:
    out: list[datetime | None] = [None] * len(values)
    rest: list[int] = []
    for i, v in enumerate(values):
        if v is None:
            continue
        try:
            if _CANONICAL_TIME.match(v):
                out[i] = datetime.fromisoformat(v[:-1]).replace(tzinfo=timezone.utc)
                continue
        except ValueError:  # e.g. February 30th: the general parser gives the final answer
            pass
        rest.append(i)
    if rest:
        parsed = parse_timestamps([values[i] for i in rest])
        far = ((parsed < limits.EARLIEST_EVENT_TIME) | (parsed > limits.latest_event_time())).fill_null(False)
        for i, t, f in zip(rest, parsed.set(far, None).to_list(), far.to_list()):
            out[i] = _OUT_OF_RANGE if f else t
    return out


@functools.lru_cache(maxsize=4096)
def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


@dataclass
class Prepared:
    """One audit event checked and wrapped: the record to store, or why it fails."""

    id: str
    record: dict | None = None
    failure: Failure | None = None


def build_records(items: list[dict], *, channel: Channel, region: str, ingestion_time: datetime,
                  max_event_bytes: int, oldest: datetime | None) -> list[Prepared]:
    """Check every audit event of a request and wrap the good ones as ActivityAuditLog records.

    The stored record follows the reference (section 6.4): eventVersion, eventCategory, eventType, eventID,
    eventTime (eventData.eventTime in UTC), awsRegion, recipientAccountId, metadata {ingestionTime,
    channelARN}, and eventData, the caller's payload as a JSON object. `max_event_bytes` is the smallest
    MaxEventSize of the destinations; `oldest` the earliest eventTime every destination still retains."""
    out: list[Prepared] = []
    parsed: list[dict | None] = []
    for item in items:
        p = Prepared(id=item.get("id", ""))
        out.append(p)
        parsed.append(None)
        data = item.get("eventData")
        if not isinstance(data, str):
            p.failure = Failure("InvalidData", "eventData must be a string holding a JSON object")
            continue
        checksum = item.get("eventDataChecksum")
        if checksum is not None and not (isinstance(checksum, str) and checksum_matches(data, checksum)):
            p.failure = Failure("InvalidChecksum", "eventDataChecksum is not the base64 SHA-256 of eventData")
            continue
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError as e:
            p.failure = Failure("InvalidData", f"eventData is not valid JSON: {str(e)[:200]}")
            continue
        if not isinstance(obj, dict):
            p.failure = Failure("InvalidData", f"eventData must be a JSON object, got {_json_kind(obj)}")
            continue
        p.failure = _check_fields(obj, _EVENT_FIELDS, "eventData") or \
            _check_fields(obj["userIdentity"], _IDENTITY_FIELDS, "eventData.userIdentity")
        if p.failure is None and obj["recipientAccountId"] != channel.owner:
            p.failure = Failure("InvalidRecipient", f"eventData.recipientAccountId {obj['recipientAccountId'][:40]!r} "
                                                    f"is not {channel.owner}, the account that owns the channel")
        ip = obj.get("sourceIPAddress")
        if p.failure is None and ip is not None:
            if not _is_ip(ip):
                p.failure = Failure("InvalidData", f"eventData.sourceIPAddress {ip[:60]!r} is not an IPv4 or IPv6 "
                                                   "address")
        if p.failure is None:
            parsed[-1] = obj
    times = _event_times([o["eventTime"] if o is not None else None for o in parsed])
    ingested = ingestion_time.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    for p, obj, t in zip(out, parsed, times):
        if obj is None:
            continue
        if t is None:
            p.failure = Failure("InvalidData", f"eventData.eventTime {obj['eventTime'][:40]!r} is not a timestamp "
                                               "(use yyyy-MM-ddTHH:mm:ssZ)")
            continue
        if t is _OUT_OF_RANGE:
            p.failure = Failure("InvalidData", f"eventData.eventTime {obj['eventTime'][:40]!r} is outside the "
                                               f"accepted range ({limits.event_time_range_text()})")
            continue
        if oldest is not None and t < oldest:
            p.failure = Failure("InvalidData", f"eventData.eventTime {obj['eventTime'][:40]} is older than the "
                                               "retention period of the channel's event data store")
            continue
        record = {
            "eventVersion": ACTIVITY_EVENT_VERSION,
            "eventCategory": ACTIVITY_CATEGORY,
            "eventType": ACTIVITY_EVENT_TYPE,
            "eventID": str(uuid.uuid4()),
            "eventTime": t.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "awsRegion": region,
            "recipientAccountId": channel.owner,
            "metadata": {"ingestionTime": ingested, "channelARN": channel.arn},
            "eventData": obj,
        }
        size = limits.event_size(record)
        if size > max_event_bytes:
            p.failure = Failure("FieldTooLong", f"the event is {size:,} bytes once stored; the event data store "
                                                f"limit is {max_event_bytes:,} bytes")
            continue
        p.record = record
    return out


# ----------------------------------------------------------------------------------- group-commit ingestion

@dataclass
class _Ticket:
    records: list[dict]
    done: threading.Event = field(default_factory=threading.Event)
    errors: list[Failure | None] = field(default_factory=list)


class _StoreWriter:
    """Commits the records of concurrent requests to one store, oldest requests first, one append per
    round. The thread exits after a few idle seconds and is restarted by the next request."""

    MAX_BATCH_EVENTS = 20_000
    IDLE_SECONDS = 5.0

    def __init__(self, lake: Any, store_id: str):
        self.lake = lake
        self.store_id = store_id
        self._cv = threading.Condition()
        self._queue: list[_Ticket] = []
        self._running = False

    def submit(self, records: list[dict]) -> _Ticket:
        t = _Ticket(records)
        with self._cv:
            self._queue.append(t)
            if not self._running:
                self._running = True
                threading.Thread(target=self._run, name=f"lake-ingest-{self.store_id[:8]}", daemon=True).start()
            self._cv.notify()
        return t

    def _run(self) -> None:
        while True:
            with self._cv:
                if not self._queue:
                    self._cv.wait(self.IDLE_SECONDS)
                    if not self._queue:
                        self._running = False
                        return
                batch, n = [], 0
                while self._queue and (not batch or n + len(self._queue[0].records) <= self.MAX_BATCH_EVENTS):
                    t = self._queue.pop(0)
                    batch.append(t)
                    n += len(t.records)
            self._commit(batch)

    def _commit(self, batch: list[_Ticket]) -> None:
        records = [r for t in batch for r in t.records]
        errors: list[Failure | None] = [None] * len(records)
        try:
            result = self.lake._open(self.store_id).append(records, source="live")
            for rej in result.rejected:
                errors[rej.index] = Failure("FieldTooLong" if rej.code == limits.EventTooLarge.code else "InvalidData",
                                            rej.message[:1000])
            expected = len(records) - len(result.rejected)
            if result.appended != expected:
                # Only a selector or retention change racing this request gets here (both are checked
                # before submitting); the counts do not say which events, so none is acknowledged.
                msg = (f"the event data store changed during ingestion ({result.not_selected} not selected, "
                       f"{result.expired} past retention, {result.duplicates} duplicates); send the events again")
                errors = [e or Failure("InternalFailure", msg) for e in errors]
        except Exception as e:  # noqa: BLE001 - every waiting request must be answered
            msg = str(e).splitlines()[0][:900] if str(e) else type(e).__name__
            errors = [Failure("InternalFailure", f"could not store the event: {msg}")] * len(records)
        i = 0
        for t in batch:
            t.errors = errors[i:i + len(t.records)]
            i += len(t.records)
            t.done.set()


_WRITERS: dict[tuple[str, str], _StoreWriter] = {}
_WRITERS_LOCK = threading.Lock()


def writer_for(lake: Any, store_id: str) -> _StoreWriter:
    key = (lake.storage.uri, store_id)
    with _WRITERS_LOCK:
        w = _WRITERS.get(key)
        if w is None:
            w = _WRITERS[key] = _StoreWriter(lake, store_id)
        return w


@dataclass
class PutResult:
    successful: list[dict]
    failed: list[dict]


def put_audit_events(lake: Any, channel: Channel, items: list[dict], *, region: str,
                     now: datetime | None = None, timeout: float = 120.0) -> PutResult:
    """Validate, wrap and store a request's audit events in every active destination of the channel.

    An event is reported successful only once every active destination committed it, so every
    acknowledged event is stored exactly once per destination (its eventID is new). Destinations that are
    pending deletion or no longer select ActivityAuditLog events are skipped; with none left every event
    fails with InternalFailure."""
    now = now or datetime.now(timezone.utc)
    stores = []
    for store_id in channel.store_ids:
        try:
            st = lake._open(store_id)
        except NotFound:
            continue
        md = st.metadata
        if md["Status"] in (PENDING_DELETION, STOPPED) or not accepts_activity(md):
            continue
        stores.append((st, md))
    if not stores:
        fail = {"errorCode": "InternalFailure",
                "errorMessage": f"channel {channel.arn} has no active event data store that accepts "
                                f"{ACTIVITY_CATEGORY} events"}
        return PutResult([], [{"id": i.get("id", ""), **fail} for i in items])
    max_bytes = min(limits.MAX_EVENT_BYTES.get(md.get("MaxEventSize", limits.STANDARD),
                                               limits.MAX_EVENT_BYTES[limits.STANDARD]) for _, md in stores)
    oldest = max(now - timedelta(days=md["RetentionPeriod"]) for _, md in stores)
    prepared = build_records(items, channel=channel, region=region, ingestion_time=now, max_event_bytes=max_bytes,
                             oldest=oldest)
    good = [p for p in prepared if p.record is not None]
    if good:
        tickets = [writer_for(lake, st.id).submit([p.record for p in good]) for st, _ in stores]
        for t in tickets:
            if not t.done.wait(timeout):  # not acknowledged; it may still be committed later
                t.errors = [Failure("InternalFailure", "the event data store did not commit the event in time")] \
                    * len(good)
            for p, err in zip(good, t.errors):
                if err is not None and p.failure is None:
                    p.failure = err
    successful, failed = [], []
    for p in prepared:
        if p.failure is None and p.record is not None:
            successful.append({"id": p.id, "eventID": p.record["eventID"]})
        else:
            f = p.failure or Failure("InternalFailure", "the event was not stored")
            failed.append({"id": p.id, "errorCode": f.code, "errorMessage": f.message[:1024] or f.code})
    return PutResult(successful, failed)


__all__ = ["Channel", "ChannelCatalog", "ChannelError", "Failure", "PutResult", "build_records", "check_name",
           "checksum_matches", "may_put", "parse_channel_ref", "policy_decision", "put_audit_events",
           "validate_policy", "accepts_activity", "MAX_EVENTS_PER_REQUEST", "MAX_REQUEST_BYTES", "CUSTOM_SOURCE"]
