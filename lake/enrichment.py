"""Enrichment: CloudTrail Lake's `eventContext` (context key selectors, resource tags, IAM global condition keys).

Why this module exists: an event data store configured with ContextKeySelectors (PutEventConfiguration, which
requires ``MaxEventSize`` ``Large``) stores each management and data event with an ``eventContext`` object:
``requestContext`` (selected IAM global condition keys) and ``tagContext`` (selected tag keys of the resources
involved and of the calling principal). AWS reads tags from the Resource Groups Tagging API at the time of the
call; Lake has no AWS account to ask, so users load tags into a **tag registry** stored in the lake, and condition
keys are derived from the event's own fields. Reference: cloudtrail-format.md sections 6.9 and 7.

The three pieces:

* **Selectors** live in the store's metadata (``ContextKeySelectors``), validated with the model's limits
  (at most 2 selectors, one per Type, 1-50 keys of 1-128 characters). ``put_event_configuration`` changes the
  selectors and ``MaxEventSize`` in one metadata commit, so a store never has selectors without ``Large``.
* **The tag registry** (``TagRegistry``) is a list of (resource ARN, tags, validFrom) entries written as
  create-only versions under ``_catalog/tags/``. An event is enriched with the tags an ARN had at its eventTime:
  the entry with the latest validFrom <= eventTime (a later-loaded entry wins a validFrom tie). Loading new tags
  later adds entries; it never edits old ones, and stored events keep the eventContext they were stored with.
* **enrich()** builds ``eventContext`` for records before they are stored; ``Store.append`` calls it (see
  docs/enrichment.md for the hook).

Record shape (UNCONFIRMED where AWS documents only ``"tagContext": {}``)::

    "eventContext": {
      "requestContext": {"aws:SourceIp": "192.0.2.1", "aws:RequestedRegion": "us-east-1"},
      "tagContext": {"resourceTags": [{"arn": "arn:aws:s3:::b", "tags": {"env": "prod"}}],
                     "principalTags": {"team": "blue"}}
    }

A key per configured selector Type is always present (possibly ``{}``); ``resourceTags``/``principalTags``
appear only when something matched. In the store the column ``eventcontext`` is map<string,string>, so
``element_at(eventcontext, 'tagContext')`` is the JSON text of the object above.
"""

from __future__ import annotations

import csv
import io
import ipaddress
import re
import threading
import uuid
from bisect import bisect_right
from datetime import datetime, timezone
from functools import wraps
from typing import Any, Iterable

import click
import orjson

from . import limits
from .errors import InvalidParameter, LakeError, NotFound
from .keys import iso_seconds

__all__ = [
    "TAG_CONTEXT", "REQUEST_CONTEXT", "CONDITION_KEYS", "InvalidCombination",
    "validate_context_key_selectors", "put_event_configuration", "get_event_configuration",
    "put_context_key_selectors", "get_context_key_selectors", "TagRegistry", "parse_tag_file",
    "request_context", "resource_arns", "event_context", "enrich", "enrich_for_store", "strip_event_context",
    "tags_cli",
]

TAG_CONTEXT = "TagContext"
REQUEST_CONTEXT = "RequestContext"
MAX_SELECTORS = 2
MAX_KEYS = 50
MAX_KEY_LEN = 128
TAGS_PREFIX = "_catalog/tags"
_VERSION_RE = re.compile(r"^v\d{8}\.json$")

#: The IAM global condition keys CloudTrail can put in requestContext (reference section 7).
CONDITION_KEYS: frozenset[str] = frozenset({
    "aws:FederatedProvider", "aws:TokenIssueTime", "aws:MultiFactorAuthAge", "aws:MultiFactorAuthPresent",
    "aws:SourceIdentity", "aws:PrincipalAccount", "aws:PrincipalArn", "aws:PrincipalIsAWSService",
    "aws:PrincipalOrgID", "aws:PrincipalOrgPaths", "aws:PrincipalServiceName", "aws:PrincipalServiceNamesList",
    "aws:PrincipalType", "aws:userid", "aws:username", "aws:RequestedRegion", "aws:SecureTransport",
    "aws:ViaAWSService", "aws:CurrentTime", "aws:EpochTime", "aws:SourceAccount", "aws:SourceOrgID",
    "aws:SourceIp",
})
# aws:SourceIp is an IAM global key the event carries directly (sourceIPAddress); the reference's list does not
# name it, but nothing in AWS's page forbids it and it is the most asked-for key, so Lake accepts it.
_CONDITION_KEYS_LOWER = {k.lower(): k for k in CONDITION_KEYS}


class InvalidCombination(LakeError):
    """Context key selectors without MaxEventSize Large (the model's InvalidParameterCombinationException)."""

    code = "InvalidParameterCombinationException"


# ---- selectors --------------------------------------------------------------------------------------------

def validate_context_key_selectors(selectors: Any) -> list[dict]:
    """The selectors in canonical form, or InvalidParameter naming the offending selector.

    Model limits (botocore ContextKeySelector): list of <= 2, Type TagContext|RequestContext, Equals 1-50
    strings of 1-128 characters. Lake also refuses a Type given twice (AWS allows 50 keys *per* Type) and, for
    RequestContext, keys that are not supported global condition keys (spelled case-insensitively, stored in
    AWS's spelling) so a typo does not silently select nothing.
    """
    if selectors is None:
        return []
    if not isinstance(selectors, list):
        raise InvalidParameter("ContextKeySelectors must be a list of {Type, Equals} objects")
    if len(selectors) > MAX_SELECTORS:
        raise InvalidParameter(f"ContextKeySelectors holds at most {MAX_SELECTORS} selectors, got {len(selectors)}")
    out: list[dict] = []
    seen: set[str] = set()
    for i, sel in enumerate(selectors):
        where = f"ContextKeySelectors[{i}]"
        if not isinstance(sel, dict) or set(sel) - {"Type", "Equals"}:
            raise InvalidParameter(f"{where} must be an object with exactly Type and Equals")
        typ, keys = sel.get("Type"), sel.get("Equals")
        if typ not in (TAG_CONTEXT, REQUEST_CONTEXT):
            raise InvalidParameter(f"{where}.Type must be TagContext or RequestContext, got {typ!r}")
        if typ in seen:
            raise InvalidParameter(f"{where}: Type {typ} is given twice; put all its keys in one selector")
        seen.add(typ)
        if not isinstance(keys, list) or not 1 <= len(keys) <= MAX_KEYS:
            raise InvalidParameter(f"{where}.Equals must be a list of 1-{MAX_KEYS} keys")
        clean: list[str] = []
        for k in keys:
            if not isinstance(k, str) or not 1 <= len(k) <= MAX_KEY_LEN:
                raise InvalidParameter(f"{where}.Equals: each key is a string of 1-{MAX_KEY_LEN} characters, "
                                       f"got {str(k)[:40]!r}")
            if typ == REQUEST_CONTEXT:
                canon = _CONDITION_KEYS_LOWER.get(k.lower())
                if canon is None:
                    raise InvalidParameter(f"{where}.Equals: {k!r} is not a supported IAM global condition key")
                k = canon
            if k not in clean:
                clean.append(k)
        out.append({"Type": typ, "Equals": clean})
    return out


def _selected(md: dict) -> dict[str, list[str]]:
    return {s["Type"]: s["Equals"] for s in md.get("ContextKeySelectors") or []}


def put_event_configuration(store, *, max_event_size: str | None = None,
                            context_key_selectors: list | None = None) -> dict:
    """PutEventConfiguration for a store: set MaxEventSize and/or ContextKeySelectors in one metadata commit.

    An empty selector list clears them. Selectors need ``Large``: asking for selectors on a Standard store, or
    for Standard while selectors stay, raises InvalidCombination. Returns {MaxEventSize, ContextKeySelectors}.
    """
    if max_event_size is not None and max_event_size not in limits.MAX_EVENT_BYTES:
        raise InvalidParameter(f"MaxEventSize must be Standard or Large, got {max_event_size!r}")
    sel = validate_context_key_selectors(context_key_selectors) if context_key_selectors is not None else None

    def change(md: dict) -> dict | None:
        from .store import PENDING_DELETION
        if md.get("Status") == PENDING_DELETION:
            from .errors import InactiveStore
            raise InactiveStore(f"event data store {md['Name']} is pending deletion; restore it first")
        size = max_event_size or md.get("MaxEventSize", limits.STANDARD)
        keys = sel if sel is not None else (md.get("ContextKeySelectors") or [])
        if keys and size != limits.LARGE:
            raise InvalidCombination(f"event data store {md['Name']}: ContextKeySelectors require MaxEventSize "
                                     "Large; pass --max-event-size Large (or clear the selectors)")
        if size == md.get("MaxEventSize") and keys == (md.get("ContextKeySelectors") or []):
            return None
        md["MaxEventSize"] = size
        if keys:
            md["ContextKeySelectors"] = keys
        else:
            md.pop("ContextKeySelectors", None)
        return md

    store._update_metadata("UPDATE", change)
    return get_event_configuration(store)


def get_event_configuration(store) -> dict:
    """GetEventConfiguration's store part: {MaxEventSize, ContextKeySelectors} (an empty list when unset)."""
    md = store.metadata
    return {"MaxEventSize": md.get("MaxEventSize", limits.STANDARD),
            "ContextKeySelectors": list(md.get("ContextKeySelectors") or [])}


def put_context_key_selectors(store, selectors: list | None, max_event_size: str | None = None) -> dict:
    """Alias used by the PutEventConfiguration handler (api_aggregation owns the operation)."""
    return put_event_configuration(store, max_event_size=max_event_size, context_key_selectors=selectors)


def get_context_key_selectors(store) -> list[dict]:
    """The store's selectors (empty when enrichment is off)."""
    return get_event_configuration(store)["ContextKeySelectors"]


# ---- time -------------------------------------------------------------------------------------------------

_TS_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(\.\d+)?(Z|[+-]\d{2}:?\d{2})?$")


def _parse_time(value: Any) -> datetime | None:
    """A CloudTrail timestamp (or a date) as an aware UTC datetime; None when unparseable."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if not isinstance(value, str):
        return None
    v = value.strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", v):
        v += "T00:00:00Z"
    m = _TS_RE.match(v)
    if not m:
        return None
    frac = (m.group(3) or "")[:7]
    tz = m.group(4) or "Z"
    try:
        dt = datetime.fromisoformat(f"{m.group(1)}T{m.group(2)}{frac}{'+00:00' if tz == 'Z' else tz}")
    except ValueError:
        return None
    return dt.astimezone(timezone.utc)



# ---- the tag registry -------------------------------------------------------------------------------------

def _tags_dict(value: Any, where: str) -> dict[str, str]:
    """Tags as {key: value} from a dict, a [{Key, Value}] list (ListTags shape) or JSON text of either."""
    if isinstance(value, str):
        try:
            value = orjson.loads(value) if value.strip() else {}
        except orjson.JSONDecodeError:
            raise InvalidParameter(f"{where}: tags must be a JSON object or a [{{Key, Value}}] list") from None
    if value is None:
        return {}
    if isinstance(value, list):
        try:
            value = {t["Key"]: t.get("Value") for t in value}
        except (TypeError, KeyError):
            raise InvalidParameter(f"{where}: a tag list holds {{Key, Value}} objects") from None
    if not isinstance(value, dict):
        raise InvalidParameter(f"{where}: tags must be an object or a [{{Key, Value}}] list")
    out = {}
    for k, v in value.items():
        if not isinstance(k, str) or not 1 <= len(k) <= MAX_KEY_LEN:
            raise InvalidParameter(f"{where}: tag key {str(k)[:40]!r} must be 1-{MAX_KEY_LEN} characters")
        out[k] = "" if v is None else str(v)
    return out


def _entry(raw: Any, where: str, default_from: datetime) -> dict:
    if not isinstance(raw, dict):
        raise InvalidParameter(f"{where}: an entry is an object with arn, tags and validFrom")
    arn = raw.get("arn") or raw.get("ARN") or raw.get("ResourceARN") or raw.get("ResourceId") \
        or raw.get("resource_arn")
    if not isinstance(arn, str) or not arn.startswith("arn:"):
        raise InvalidParameter(f"{where}: arn {str(arn)[:60]!r} is not an ARN")
    tags = _tags_dict(raw.get("tags", raw.get("Tags", raw.get("TagsList"))), where)
    vf_raw = raw.get("validFrom", raw.get("valid_from", raw.get("ValidFrom")))
    vf = default_from if vf_raw in (None, "") else _parse_time(vf_raw)
    if vf is None:
        raise InvalidParameter(f"{where}: validFrom {str(vf_raw)[:40]!r} is not a timestamp")
    return {"arn": arn, "tags": tags, "validFrom": iso_seconds(vf)}


def parse_tag_file(data: bytes | str, name: str = "tags") -> list[dict]:
    """Raw entries from a tag file: JSON (a list, or {"entries": [...]}, or NDJSON) or CSV.

    CSV columns: ``arn``, ``valid_from`` (optional) and either ``tags`` (a JSON object) or ``key``/``value``
    (one row per tag; rows with the same arn and valid_from form one entry).
    """
    text = data.decode("utf-8-sig") if isinstance(data, bytes) else data
    stripped = text.lstrip()
    if stripped.startswith(("[", "{")):
        try:
            doc = orjson.loads(text)
        except orjson.JSONDecodeError:
            try:
                return [orjson.loads(line) for line in text.splitlines() if line.strip()]
            except orjson.JSONDecodeError as e:
                raise InvalidParameter(f"{name} is not valid JSON or NDJSON: {e}") from None
        if isinstance(doc, dict):
            doc = doc.get("entries", doc.get("ResourceTagList", [doc]))
        if not isinstance(doc, list):
            raise InvalidParameter(f"{name}: expected a list of entries")
        return doc
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows:
        return []
    cols = {c.strip().lower() for c in rows[0] if c}
    if "arn" not in cols:
        raise InvalidParameter(f"{name}: a CSV tag file needs an 'arn' column (and 'tags' or 'key','value')")
    grouped: dict[tuple, dict] = {}
    for i, r in enumerate(rows, start=2):
        r = {(k or "").strip().lower(): (v or "").strip() for k, v in r.items()}
        key = (r["arn"], r.get("valid_from", r.get("validfrom", "")))
        e = grouped.setdefault(key, {"arn": key[0], "validFrom": key[1], "tags": {}})
        if "tags" in cols:
            e["tags"].update(_tags_dict(r.get("tags", ""), f"{name} line {i}"))
        elif r.get("key"):
            e["tags"][r["key"]] = r.get("value", "")
    return list(grouped.values())


class TagRegistry:
    """Resource and principal tags over time, stored in the lake as create-only versions.

    Each ``load`` writes ``_catalog/tags/v<NNNNNNNN>.json`` holding the entries it added; nothing is ever
    rewritten, so the registry's history is auditable and concurrent loaders never lose entries (a version
    number taken by another writer is retried with the next one). ``tags_at(arn, t)`` answers from all versions.
    An entry with empty tags means "no tags from validFrom on" (a resource untagged or deleted).
    """

    def __init__(self, lake):
        self.lake = lake
        self._versions: list[str] = []
        self._by_arn: dict[str, tuple[list[datetime], list[dict[str, str]]]] = {}
        self._raw: dict[str, list[tuple[datetime, int, dict]]] = {}
        self._lock = threading.Lock()  # `lake serve` appends from several threads through one cached registry
        self.refresh()

    def refresh(self) -> "TagRegistry":
        """Read versions written since the last refresh (by this or another process)."""
        with self._lock:
            self._refresh()
        return self

    def _refresh(self) -> None:
        known = set(self._versions)
        names = sorted(n for n in (f.path.rsplit("/", 1)[-1] for f in self._list()) if _VERSION_RE.match(n))
        new = [n for n in names if n not in known]
        for n in new:
            body = orjson.loads(self.lake.storage.read(f"{TAGS_PREFIX}/{n}"))
            ver = int(n[1:9])
            for e in body["entries"]:
                self._raw.setdefault(e["arn"], []).append((_parse_time(e["validFrom"]), ver, e["tags"]))
            self._versions.append(n)
        if new:
            by_arn = {}
            for arn, items in self._raw.items():
                items.sort(key=lambda x: (x[0], x[1]))
                by_arn[arn] = ([t for t, _, _ in items], [tags for _, _, tags in items])
            self._by_arn = by_arn  # swapped whole: readers never see a half-built index

    def _list(self):
        try:
            return self.lake.storage.list(TAGS_PREFIX)
        except FileNotFoundError:
            return []

    @property
    def versions(self) -> list[str]:
        return list(self._versions)

    def load(self, entries: Iterable[Any], *, source: str = "api", now: datetime | None = None) -> dict:
        """Validate entries and store them as a new version; entries without validFrom take `now`."""
        now = now or datetime.now(timezone.utc)
        clean = [_entry(e, f"{source} entry {i}", now) for i, e in enumerate(entries)]
        if not clean:
            raise InvalidParameter(f"{source} holds no tag entries")
        self.refresh()
        ver = len(self._versions) + 1
        body = {"loadedAt": iso_seconds(now), "source": source, "id": str(uuid.uuid4()), "entries": clean}
        data = orjson.dumps(body, option=orjson.OPT_INDENT_2)
        while not self.lake.storage.create(f"{TAGS_PREFIX}/v{ver:08d}.json", data):
            ver += 1  # another loader took this number: take the next one (versions are never rewritten)
        self.refresh()
        return {"version": ver, "entries": len(clean), "resources": len({e["arn"] for e in clean})}

    def load_file(self, path: str, *, now: datetime | None = None) -> dict:
        """Load a JSON/NDJSON/CSV tag file (see parse_tag_file)."""
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise InvalidParameter(f"cannot read tag file {path}: {e.strerror}") from None
        return self.load(parse_tag_file(data, path), source=path, now=now)

    def tags_at(self, arn: str, when: datetime) -> dict[str, str]:
        """The tags `arn` had at `when` (empty when unknown or untagged then)."""
        hit = self._by_arn.get(arn)
        if hit is None:
            return {}
        i = bisect_right(hit[0], when)
        return hit[1][i - 1] if i else {}

    def history(self, arn: str) -> list[dict]:
        """Every entry for `arn`, oldest validFrom first."""
        return [{"validFrom": iso_seconds(t), "version": v, "tags": tags}
                for t, v, tags in sorted(self._raw.get(arn, []), key=lambda x: (x[0], x[1]))]


# ---- IAM global condition keys ----------------------------------------------------------------------------

_PRINCIPAL_TYPE = {"Root": "Account", "IAMUser": "User", "AssumedRole": "AssumedRole",
                   "FederatedUser": "FederatedUser", "AWSAccount": "Account", "Anonymous": "Anonymous",
                   "IdentityCenterUser": "User"}


def _is_ip(text: Any) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except (ValueError, TypeError):
        return False


def request_context(rec: dict, when: datetime | None = None) -> dict[str, str]:
    """Every supported global condition key derivable from the record, as strings (lists as JSON text).

    Derivations (why: IAM evaluates these keys from the same request facts CloudTrail records):
    aws:SourceIp = sourceIPAddress when it is an IP; aws:RequestedRegion = awsRegion; aws:PrincipalAccount =
    userIdentity.accountId; aws:PrincipalArn = the role ARN for assumed roles (sessionIssuer.arn), else
    userIdentity.arn; aws:PrincipalType from userIdentity.type; aws:userid = principalId (the account id for
    root); aws:username for IAM users; aws:PrincipalIsAWSService / aws:PrincipalServiceName(sList) from
    AWSService identities; aws:ViaAWSService when invokedBy is set or the caller is a service hostname;
    aws:SecureTransport "true" when tlsDetails is present; aws:MultiFactorAuthPresent/Age and aws:TokenIssueTime
    from sessionContext; aws:SourceIdentity and aws:FederatedProvider from sessionContext; aws:CurrentTime and
    aws:EpochTime from eventTime. Organization keys (PrincipalOrgID/Paths, SourceOrgID) and aws:SourceAccount
    are not in CloudTrail records, so they are never produced.
    """
    out: dict[str, str] = {}
    uid = rec.get("userIdentity") if isinstance(rec.get("userIdentity"), dict) else {}
    sc = uid.get("sessionContext") if isinstance(uid.get("sessionContext"), dict) else {}
    attrs = sc.get("attributes") if isinstance(sc.get("attributes"), dict) else {}
    issuer = sc.get("sessionIssuer") if isinstance(sc.get("sessionIssuer"), dict) else {}
    utype = uid.get("type")
    src = rec.get("sourceIPAddress")
    if _is_ip(src):
        out["aws:SourceIp"] = src
    if isinstance(rec.get("awsRegion"), str):
        out["aws:RequestedRegion"] = rec["awsRegion"]
    if isinstance(uid.get("accountId"), str):
        out["aws:PrincipalAccount"] = uid["accountId"]
    parn = issuer.get("arn") if utype == "AssumedRole" and issuer.get("arn") else uid.get("arn")
    if isinstance(parn, str) and parn:
        out["aws:PrincipalArn"] = parn
    if utype in _PRINCIPAL_TYPE:
        out["aws:PrincipalType"] = _PRINCIPAL_TYPE[utype]
    if utype == "Root" and isinstance(uid.get("accountId"), str):
        out["aws:userid"] = uid["accountId"]
    elif isinstance(uid.get("principalId"), str) and uid["principalId"]:
        out["aws:userid"] = uid["principalId"]
    if utype == "IAMUser" and isinstance(uid.get("userName"), str):
        out["aws:username"] = uid["userName"]
    invoked = uid.get("invokedBy")
    is_service = utype == "AWSService"
    if utype is not None:
        out["aws:PrincipalIsAWSService"] = "true" if is_service else "false"
    if is_service and isinstance(invoked, str):
        out["aws:PrincipalServiceName"] = invoked
        out["aws:PrincipalServiceNamesList"] = orjson.dumps([invoked]).decode()
    via = (isinstance(invoked, str) and not is_service) or (isinstance(src, str) and src.endswith(".amazonaws.com"))
    out["aws:ViaAWSService"] = "true" if via else "false"
    if isinstance(rec.get("tlsDetails"), dict) and rec["tlsDetails"].get("tlsVersion"):
        out["aws:SecureTransport"] = "true"
    mfa = attrs.get("mfaAuthenticated")
    if mfa is None and isinstance(rec.get("additionalEventData"), dict):
        used = rec["additionalEventData"].get("MFAUsed")
        mfa = {"Yes": "true", "No": "false"}.get(used) if isinstance(used, str) else None
    if isinstance(mfa, (str, bool)):
        mfa = str(mfa).lower()
        if mfa in ("true", "false"):
            out["aws:MultiFactorAuthPresent"] = mfa
    when = when or _parse_time(rec.get("eventTime"))
    issued = _parse_time(attrs.get("creationDate"))
    if issued is not None:
        out["aws:TokenIssueTime"] = iso_seconds(issued)
        if out.get("aws:MultiFactorAuthPresent") == "true" and when is not None and when >= issued:
            out["aws:MultiFactorAuthAge"] = str(int((when - issued).total_seconds()))
    if isinstance(sc.get("sourceIdentity"), str):
        out["aws:SourceIdentity"] = sc["sourceIdentity"]
    web = sc.get("webIdFederationData")
    if isinstance(web, dict) and isinstance(web.get("federatedProvider"), str):
        out["aws:FederatedProvider"] = web["federatedProvider"]
    if when is not None:
        out["aws:CurrentTime"] = when.strftime("%Y-%m-%d %H:%M:%S")
        out["aws:EpochTime"] = str(int(when.timestamp()))
    return out


# ---- enrichment -------------------------------------------------------------------------------------------

_SKIP_CATEGORIES = {"NetworkActivity", "Insight"}


def resource_arns(rec: dict) -> list[str]:
    """The ARNs an event touched: resources[].ARN, plus the S3 bucket of requestParameters.bucketName."""
    out: list[str] = []
    res = rec.get("resources")
    if isinstance(res, list):
        for r in res:
            if isinstance(r, dict):
                a = r.get("ARN") or r.get("arn")
                if isinstance(a, str) and a and a not in out:
                    out.append(a)
    rp = rec.get("requestParameters")
    if rec.get("eventSource") == "s3.amazonaws.com" and isinstance(rp, dict) and isinstance(rp.get("bucketName"),
                                                                                         str):
        a = f"arn:aws:s3:::{rp['bucketName']}"
        if a not in out:
            out.append(a)
    return out


def _principal_arns(rec: dict) -> list[str]:
    uid = rec.get("userIdentity") if isinstance(rec.get("userIdentity"), dict) else {}
    sc = uid.get("sessionContext") if isinstance(uid.get("sessionContext"), dict) else {}
    issuer = sc.get("sessionIssuer") if isinstance(sc.get("sessionIssuer"), dict) else {}
    return [a for a in (issuer.get("arn"), uid.get("arn")) if isinstance(a, str) and a]


def event_context(rec: dict, selected: dict[str, list[str]], registry: "TagRegistry | None",
                  when: datetime) -> dict:
    """The eventContext object for one record under the store's selectors."""
    ctx: dict[str, Any] = {}
    keys = selected.get(REQUEST_CONTEXT)
    if keys:
        rc = request_context(rec, when)
        ctx["requestContext"] = {k: rc[k] for k in keys if k in rc}
    tag_keys = selected.get(TAG_CONTEXT)
    if tag_keys:
        tc: dict[str, Any] = {}
        if registry is not None:
            resources = []
            for arn in resource_arns(rec):
                tags = registry.tags_at(arn, when)
                picked = {k: tags[k] for k in tag_keys if k in tags}
                if picked:
                    resources.append({"arn": arn, "tags": picked})
            if resources:
                tc["resourceTags"] = resources
            for arn in _principal_arns(rec):
                tags = registry.tags_at(arn, when)
                picked = {k: tags[k] for k in tag_keys if k in tags}
                if picked:
                    tc["principalTags"] = picked
                    break
        ctx["tagContext"] = tc
    return ctx


def enrich(records: Iterable[Any], store_metadata: dict, registry: "TagRegistry | None" = None) -> list:
    """Records with eventContext added, for a store whose metadata has ContextKeySelectors.

    Returns the records unchanged (same objects) when the store has no selectors. Input records are never
    mutated: an enriched record is a shallow copy. JSON text/bytes records are parsed; records that are not
    JSON objects, have no parseable eventTime, are network-activity or Insights events, or already carry an
    eventContext pass through untouched (the store's converter rejects the malformed ones with a reason).
    """
    records = list(records)
    selected = _selected(store_metadata)
    if not selected:
        return records
    out = []
    for rec in records:
        if isinstance(rec, (bytes, bytearray, memoryview, str)):
            try:
                parsed = orjson.loads(bytes(rec) if not isinstance(rec, str) else rec)
            except orjson.JSONDecodeError:
                out.append(rec)
                continue
            if type(parsed) is not dict:
                out.append(rec)
                continue
            rec = parsed
        if type(rec) is not dict or "eventContext" in rec or rec.get("eventCategory") in _SKIP_CATEGORIES \
                or rec.get("eventType") in ("AwsCloudTrailInsight", "AwsVpceEvent"):
            out.append(rec)
            continue
        when = _parse_time(rec.get("eventTime"))
        if when is None:
            out.append(rec)
            continue
        out.append({**rec, "eventContext": event_context(rec, selected, registry, when)})
    return out


def enrich_for_store(store, records: Iterable[Any], md: dict | None = None) -> list:
    """`enrich` with the store's metadata and the lake's registry (cached on the Lake object)."""
    md = md if md is not None else store.metadata
    if not md.get("ContextKeySelectors"):
        return list(records) if not isinstance(records, list) else records
    reg = getattr(store.lake, "_tag_registry", None)
    if reg is None:
        reg = TagRegistry(store.lake)
        store.lake._tag_registry = reg
    else:
        reg.refresh()
    return enrich(records, md, reg)


def strip_event_context(eventjson: str) -> str:
    """A stored event's JSON without eventContext, for outputs AWS never enriches (LookupEvents, trail files).

    Fast path: text that does not mention eventContext is returned as is (the same object).
    """
    if '"eventContext"' not in eventjson:
        return eventjson
    rec = orjson.loads(eventjson)
    if not isinstance(rec, dict) or "eventContext" not in rec:
        return eventjson
    del rec["eventContext"]
    return orjson.dumps(rec).decode()


# ---- CLI: `lake tags ...` (registered by lake/cli.py) -----------------------------------------------------

def _cli_errors(fn):
    """lake.cli.handle_errors, imported at call time (lake.cli imports this module)."""
    @wraps(fn)
    def wrapper(*args, **kwargs):
        from .cli import handle_errors
        return handle_errors(fn)(*args, **kwargs)
    return wrapper


@click.group("tags", context_settings={"help_option_names": ["-h", "--help"]})
def tags_cli() -> None:
    """The tag registry used to enrich events (eventContext.tagContext)."""


@tags_cli.command("load")
@click.argument("path")
@click.pass_obj
@_cli_errors
def tags_load(obj, path: str) -> None:
    """Load a JSON/NDJSON/CSV file of (arn, tags, valid_from) entries as a new registry version."""
    from .output import emit
    emit(TagRegistry(obj.lake).load_file(path), obj.fmt)


@tags_cli.command("show")
@click.argument("arn")
@click.option("--at", "at", default=None, help="A timestamp: show the tags in force then (default: history).")
@click.pass_obj
@_cli_errors
def tags_show(obj, arn: str, at: str | None) -> None:
    """Show a resource's tag history, or its tags at one time."""
    from .output import emit
    reg = TagRegistry(obj.lake)
    if at is None:
        hist = reg.history(arn)
        if not hist:
            raise NotFound(f"no tags recorded for {arn}; `lake tags load FILE` adds some")
        emit(hist, obj.fmt)
        return
    when = _parse_time(at)
    if when is None:
        raise InvalidParameter(f"--at {at!r} is not a timestamp")
    emit({"arn": arn, "at": iso_seconds(when), "tags": reg.tags_at(arn, when)}, obj.fmt)


@tags_cli.command("configure")
@click.argument("store")
@click.option("--tag-keys", default=None, help="Comma-separated resource tag keys (TagContext).")
@click.option("--condition-keys", default=None, help="Comma-separated IAM global condition keys (RequestContext).")
@click.option("--clear", is_flag=True, help="Remove the selectors (the store keeps MaxEventSize Large).")
@click.pass_obj
@_cli_errors
def tags_configure(obj, store: str, tag_keys: str | None, condition_keys: str | None, clear: bool) -> None:
    """Set a store's ContextKeySelectors (and MaxEventSize Large, which they require)."""
    from .output import emit
    st = obj.lake.store(store)
    if clear:
        emit(put_event_configuration(st, context_key_selectors=[]), obj.fmt)
        return
    sel = [{"Type": t, "Equals": [k.strip() for k in v.split(",") if k.strip()]}
           for t, v in ((TAG_CONTEXT, tag_keys), (REQUEST_CONTEXT, condition_keys)) if v]
    if not sel:
        raise InvalidParameter("give --tag-keys and/or --condition-keys, or --clear")
    emit(put_event_configuration(st, max_event_size=limits.LARGE, context_key_selectors=sel), obj.fmt)
