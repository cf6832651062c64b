"""Turning CloudTrail JSON records into rows of `EVENT_SCHEMA`.

The converter is column-oriented: one pass over the records collects plain Python lists per column, and
Arrow builds each column in C++ with an explicit type. Struct columns are built from the records' own
camelCase dicts (no per-record key renaming) and renamed to the lower-case schema afterwards, zero-copy.
A record that cannot be stored is returned as a `Reject` with a reason; it never stops the batch.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Iterable

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import polars as pl

from . import limits, schema
from .timeparse import parse_timestamps


@dataclass(frozen=True)
class Reject:
    """A record that was not stored, with why. `index` is its position in the input batch."""

    index: int
    code: str
    message: str
    location: str = ""

    def as_dict(self) -> dict:
        return {"index": self.index, "code": self.code, "message": self.message, "location": self.location}


@dataclass
class Converted:
    table: pa.Table
    rejects: list[Reject]
    indexes: list[int]  # input position of each table row
    truncated: int = 0  # records that had fields truncated or omitted by size limits


# ---- struct columns: camelCase Arrow types mirroring the schema specs -------------------------------

def _camel_type(spec) -> pa.DataType:
    if spec is None or spec == "timestamp":
        return pa.string()
    if spec == "map":
        return schema.FREEFORM
    return pa.struct([(key, _camel_type(sub)) for key, _, sub in spec])


_UID_CAMEL = _camel_type(schema.USERIDENTITY_FIELDS)
_TLS_SPEC = [(k, c, None) for k, c in schema.TLS_FIELDS]
_RES_SPEC = [(k, c, None) for k, c in schema.RESOURCE_FIELDS]
_TLS_CAMEL = _camel_type(_TLS_SPEC)
_RES_CAMEL = pa.list_(_camel_type(_RES_SPEC))


def _text(v: Any) -> str | None:
    """A JSON value as the string CloudTrail Lake shows: strings as-is, anything else as compact JSON."""
    if v is None or type(v) is str:
        return v
    return orjson.dumps(v).decode()


def _sanitize(value: Any, spec) -> Any:
    """Coerce one nested value to its camel type (slow path for records with unexpected value types)."""
    if value is None:
        return None
    if spec is None or spec == "timestamp":
        return _text(value)
    if spec == "map":
        return _freeform(value)
    if not isinstance(value, dict):
        return None
    return {key: _sanitize(value.get(key), sub) for key, _, sub in spec}


def _build_struct(values: list, spec, camel: pa.DataType) -> pa.Array:
    try:
        return pa.array(values, type=camel)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
        return pa.array([_sanitize(v, spec) for v in values], type=camel)


def _rename(arr: pa.Array, spec) -> pa.Array:
    """Rename a camelCase struct array to the schema's column names and parse timestamp leaves."""
    if spec is None:
        return arr
    if spec == "timestamp":
        return pa.array(parse_timestamps(arr.to_pylist()).to_arrow(), type=schema.TIMESTAMP)
    if spec == "map":
        return arr
    children = [_rename(arr.field(i), sub) for i, (_, _, sub) in enumerate(spec)]
    names = [col for _, col, _ in spec]
    return pa.StructArray.from_arrays(children, names=names, mask=arr.is_null())


def _build_resources(values: list) -> pa.Array:
    try:
        arr = pa.array(values, type=_RES_CAMEL)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
        arr = pa.array([_clean_resources(v) for v in values], type=_RES_CAMEL)
    inner = _rename(arr.flatten(), _RES_SPEC)
    return pa.ListArray.from_arrays(arr.offsets, inner, mask=arr.is_null())


def _clean_resources(v: Any) -> list | None:
    if not isinstance(v, list):
        return None
    out = []
    for r in v:
        if isinstance(r, dict):
            if "ARN" not in r and "arn" in r:
                r = {**r, "ARN": r["arn"]}
            out.append(_sanitize(r, _RES_SPEC))
    return out


def _freeform(v: Any) -> list | None:
    if type(v) is not dict:
        return None
    return [(k, x if (x is None or type(x) is str) else orjson.dumps(x).decode()) for k, x in v.items()]


def _bool(v: Any) -> bool | None:
    if v is True or v is False or v is None:
        return v
    if isinstance(v, str):
        low = v.strip().lower()
        if low in ("true", "false"):
            return low == "true"
    return None


def infer_category(rec: dict) -> str:
    """eventCategory for records older than 1.07, which lack it."""
    cat = rec.get("eventCategory")
    if isinstance(cat, str) and cat:
        return cat
    etype = rec.get("eventType")
    if etype == "AwsCloudTrailInsight":
        return "Insight"
    if etype in ("AwsVpceEvent", "AwsVpceEvents"):
        return "NetworkActivity"
    if rec.get("managementEvent") is False:
        return "Data"
    return "Management"


# ---- the converter -----------------------------------------------------------------------------------

def convert(records: Iterable[Any], *, size_mode: str = limits.STANDARD, location: str = "",
            field_caps: bool = True) -> Converted:
    """Convert records (dicts, or JSON bytes/str of one object each) into an Arrow table.

    Rows keep input order; `indexes` maps rows back to input positions. eventtime is parsed for the
    whole batch at once; records without a usable eventTime are rejected. `field_caps=False` is for
    records CloudTrail itself already delivered (trail log imports): they are kept byte-for-byte unless
    the whole event exceeds the size mode, because real delivered events do carry fields a few bytes over
    the documented caps and re-truncating them would alter digest-validated content.
    """
    max_bytes = limits.MAX_EVENT_BYTES[size_mode]
    rejects: list[Reject] = []
    kept: list[dict] = []
    idx: list[int] = []
    jsons: list[str] = []
    truncated = 0
    for i, rec in enumerate(records):
        if isinstance(rec, (bytes, bytearray, memoryview, str)):
            try:
                rec = orjson.loads(rec)
            except orjson.JSONDecodeError as e:
                rejects.append(Reject(i, "InvalidJson", f"record is not valid JSON: {e}", location))
                continue
        if type(rec) is not dict:
            rejects.append(Reject(i, "NotAnObject", f"record is a JSON {type(rec).__name__}, not an object",
                                  location))
            continue
        raw = orjson.dumps(rec)
        if not field_caps and len(raw) <= max_bytes:
            kept.append(rec)
            idx.append(i)
            jsons.append(raw.decode())
            continue
        try:
            stored, touched = limits.apply_size_limits(rec, size_mode, len(raw))
        except limits.EventTooLarge as e:
            rejects.append(Reject(i, e.code, str(e), location))
            continue
        if stored is not rec:
            raw = orjson.dumps(stored)
            truncated += 1
        kept.append(stored)
        idx.append(i)
        jsons.append(raw.decode())

    times = parse_timestamps([_text(r.get("eventTime")) for r in kept])
    bad = times.is_null().to_list()
    if any(bad):
        good_recs, good_idx, good_json = [], [], []
        for r, i, j, b in zip(kept, idx, jsons, bad):
            if not b:
                good_recs.append(r); good_idx.append(i); good_json.append(j)
                continue
            t = r.get("eventTime")
            if t is None:
                rejects.append(Reject(i, "MissingEventTime", "record has no eventTime", location))
            else:
                rejects.append(Reject(i, "InvalidEventTime", f"eventTime {str(t)[:40]!r} is not a timestamp",
                                      location))
        kept, idx, jsons = good_recs, good_idx, good_json
        times = times.filter(~pl.Series(bad, dtype=pl.Boolean))
    rejects.sort(key=lambda r: r.index)
    return Converted(_to_table(kept, jsons, times.to_arrow()), rejects, idx, truncated)


def _strings(values: list) -> pa.Array:
    """A string column; the fast path assumes every value is a str or None (true for real CloudTrail)."""
    try:
        return pa.array(values, type=pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
        return pa.array([_text(v) for v in values], type=pa.string())


def _bools(values: list) -> pa.Array:
    try:
        return pa.array(values, type=pa.bool_())
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
        return pa.array([_bool(v) for v in values], type=pa.bool_())


def _struct_leaf(arr: pa.Array, path: tuple[str, ...], spec) -> pa.Array:
    """A leaf of a (renamed) struct column by JSON-key path, with parent nulls propagated."""
    indices = []
    for key in path:
        i = next(n for n, (k, _, _) in enumerate(spec) if k == key)
        indices.append(i)
        spec = spec[i][2]
    return pc.struct_field(arr, indices)


def _to_table(recs: list[dict], jsons: list[str], eventtime: pa.Array) -> pa.Table:
    cols: dict[str, Any] = {}
    for key, col in schema.STRING_FIELDS.items():
        cols[col] = _strings([r.get(key) for r in recs])
    cols["eventcategory"] = pa.array([infer_category(r) for r in recs], type=pa.string())
    for key, col in schema.BOOL_FIELDS.items():
        cols[col] = _bools([r.get(key) for r in recs])
    for key, col in schema.FREEFORM_FIELDS.items():
        cols[col] = pa.array([None if v is None else _freeform(v) for v in [r.get(key) for r in recs]],
                             type=schema.FREEFORM)
    uids = [r.get("userIdentity") for r in recs]
    uids = [u if type(u) is dict else None for u in uids]
    uid = _rename(_build_struct(uids, schema.USERIDENTITY_FIELDS, _UID_CAMEL), schema.USERIDENTITY_FIELDS)
    cols["useridentity"] = uid
    tls = [r.get("tlsDetails") for r in recs]
    cols["tlsdetails"] = _rename(_build_struct([t if type(t) is dict else None for t in tls], _TLS_SPEC,
                                               _TLS_CAMEL), _TLS_SPEC)
    res = [r.get("resources") for r in recs]
    cols["resources"] = _build_resources([v if type(v) is list else None for v in res])
    for col, path in schema.FLAT_FIELDS.items():
        cols[col] = _struct_leaf(uid, path, schema.USERIDENTITY_FIELDS)
    cols["eventjson"] = pa.array(jsons, type=pa.string())
    cols["eventjsonchecksum"] = pa.array([hashlib.sha256(j.encode()).hexdigest() for j in jsons],
                                         type=pa.string())
    cols["eventtime"] = eventtime.cast(schema.TIMESTAMP) if len(eventtime) else pa.array([], schema.TIMESTAMP)
    return pa.table([cols[f.name] for f in schema.EVENT_SCHEMA], schema=schema.EVENT_SCHEMA)


def checksum(eventjson: str) -> str:
    """The stored `eventjsonchecksum` of an `eventjson` string."""
    return hashlib.sha256(eventjson.encode()).hexdigest()


def dedupe_keys(table: pa.Table) -> list[tuple[str | None, str | None]]:
    """(eventid, recipientaccountid) per row: the store's primary key."""
    return list(zip(table.column("eventid").to_pylist(), table.column("recipientaccountid").to_pylist()))


def empty_table() -> pa.Table:
    return schema.EVENT_SCHEMA.empty_table()


__all__ = ["Reject", "Converted", "convert", "checksum", "infer_category", "empty_table"]
