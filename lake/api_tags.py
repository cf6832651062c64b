"""Tags of `lake serve` resources: AddTags, ListTags, RemoveTags.

An event data store keeps its tags in its own metadata (`TagsList`, committed like any other setting, so
they are versioned with the store). Other taggable resources (channels, written in `lake/api_channels.py`)
keep theirs in a small registry keyed by ARN (`_server/tags/<sha256 of the ARN>.json` under the lake root),
through `tags_for`/`set_tags`/`delete_tags`. Such a module makes its resource kind taggable with
`@tag_resource("channel")` on a function `(ctx, arn) -> owner account id` that raises the resource's
not-found ApiError; AddTags/ListTags/RemoveTags then work on its ARNs with the same account rules as stores.
"""

from __future__ import annotations

import hashlib
import re
import threading
from typing import Callable

import orjson

from .apicore import ApiContext, ApiError, operation
from .store import PENDING_DELETION

MAX_TAGS = 50  # per resource, as in CloudTrail
MAX_LIST_RESOURCES = 20
_ARN = re.compile(r"^arn:aws[a-z-]*:cloudtrail:([^:]*):(\d{12}):([a-z]+)/(.+)\Z")
_TAG_CHARS = re.compile(r"^[\w\s.:/=+\-@]*\Z")

TAG_RESOURCES: dict[str, Callable[[ApiContext, str], str]] = {}  # ARN resource kind -> owner-account resolver
_lock = threading.Lock()


def tag_resource(kind: str):
    """Make ARNs `arn:aws:cloudtrail:<region>:<account>:<kind>/<id>` taggable; the decorated function returns
    the resource's owner account or raises its not-found ApiError."""
    def deco(fn: Callable[[ApiContext, str], str]):
        TAG_RESOURCES[kind] = fn
        return fn
    return deco


def check_tags(tags: list[dict], code: str = "InvalidTagParameterException") -> list[dict]:
    """Tags in canonical form ({Key, Value}), or ApiError(code): unique keys, no reserved `aws:` prefix,
    letters, digits, spaces and _ . : / = + - @ only, at most 50."""
    out, seen = [], set()
    for t in tags:
        key, value = t["Key"], t.get("Value", "")
        if key in seen:
            raise ApiError(code, f"Tag key {key!r} appears more than once in TagsList")
        if key.lower().startswith("aws:"):
            raise ApiError(code, f"Tag key {key!r} uses the reserved prefix 'aws:'")
        for what, text in (("key", key), ("value", value)):
            if not _TAG_CHARS.match(text):
                raise ApiError(code, f"Tag {what} {text!r} may contain only letters, digits, spaces and "
                                     "_ . : / = + - @")
        seen.add(key)
        out.append({"Key": key, "Value": value})
    if len(out) > MAX_TAGS:
        raise ApiError(code, f"A resource can have at most {MAX_TAGS} tags; {len(out)} were given")
    return out


# ---- the registry for resources other than stores -----------------------------------------------------------

def _path(arn: str) -> str:
    return f"_server/tags/{hashlib.sha256(arn.encode()).hexdigest()}.json"


def tags_for(lake, arn: str) -> list[dict]:
    """The tags of a non-store resource (empty when it has none)."""
    try:
        return orjson.loads(lake.storage.read(_path(arn)))["TagsList"]
    except FileNotFoundError:
        return []


def set_tags(lake, arn: str, tags: list[dict]) -> None:
    """Replace the tags of a non-store resource (an empty list forgets it)."""
    if not tags:
        delete_tags(lake, arn)
        return
    lake.storage.write(_path(arn), orjson.dumps({"ResourceId": arn, "TagsList": tags}))


def delete_tags(lake, arn: str) -> None:
    """Forget a deleted resource's tags."""
    lake.storage.delete(_path(arn))


# ---- the operations -------------------------------------------------------------------------------------------

def _resource(ctx: ApiContext, arn: str):
    """('store', Store) or (kind, arn) for a resource the caller may see, or the AWS error."""
    m = _ARN.match(arn)
    if not m:
        raise ApiError("CloudTrailARNInvalidException",
                       f"{arn} is not a valid CloudTrail ARN (arn:aws:cloudtrail:<region>:<account>:<type>/<id>)")
    kind = m.group(3)
    if kind == "eventdatastore":
        from .api_stores import resolve_store

        return "store", resolve_store(ctx, arn)
    resolver = TAG_RESOURCES.get(kind)
    if resolver is None:
        raise ApiError("ResourceTypeNotSupportedException", f"Lake cannot tag {kind} resources ({arn})")
    owner = resolver(ctx, arn)
    if not ctx.principal.may_access(owner):
        raise ApiError("ResourceNotFoundException", f"The specified resource {arn} was not found.")
    return kind, arn


def _active(st, arn: str) -> None:
    if st.metadata["Status"] == PENDING_DELETION:
        raise ApiError("InactiveEventDataStoreException", f"Event data store {arn} is pending deletion.")


def _change_tags(ctx: ApiContext, arn: str, change: Callable[[list[dict]], list[dict]]) -> None:
    kind, res = _resource(ctx, arn)
    if kind == "store":
        _active(res, arn)

        def update(md: dict) -> dict | None:
            old = list(md.get("TagsList") or [])
            new = change(old)
            if new == old:
                return None
            md["TagsList"] = new
            return md
        res._update_metadata("UPDATE_TAGS", update)
        return
    with _lock:
        old = tags_for(ctx.lake, arn)
        new = change(old)
        if new != old:
            set_tags(ctx.lake, arn, new)


@operation("AddTags", mutating=True)
def add_tags(ctx: ApiContext, params: dict) -> dict:
    given = check_tags(params["TagsList"])

    def change(old: list[dict]) -> list[dict]:
        merged = {t["Key"]: t for t in old}
        merged.update({t["Key"]: t for t in given})
        if len(merged) > MAX_TAGS:
            raise ApiError("TagsLimitExceededException",
                           f"The resource would have {len(merged)} tags; the limit is {MAX_TAGS}.")
        return list(merged.values())
    _change_tags(ctx, params["ResourceId"], change)
    return {}


@operation("RemoveTags", mutating=True)
def remove_tags(ctx: ApiContext, params: dict) -> dict:
    keys = {t["Key"] for t in params["TagsList"]}
    _change_tags(ctx, params["ResourceId"], lambda old: [t for t in old if t["Key"] not in keys])
    return {}


@operation("ListTags")
def list_tags(ctx: ApiContext, params: dict) -> dict:
    ids = params["ResourceIdList"]
    if len(ids) > MAX_LIST_RESOURCES:
        raise ApiError("InvalidParameterException",
                       f"ResourceIdList has {len(ids)} ARNs; ListTags takes at most {MAX_LIST_RESOURCES}")
    out = []
    for arn in ids:
        kind, res = _resource(ctx, arn)
        if kind == "store":
            _active(res, arn)
            tags = res.metadata.get("TagsList") or []
        else:
            tags = tags_for(ctx.lake, arn)
        out.append({"ResourceId": arn, "TagsList": tags})
    return {"ResourceTagList": out}


__all__ = ["tag_resource", "check_tags", "tags_for", "set_tags", "delete_tags", "TAG_RESOURCES", "MAX_TAGS"]
