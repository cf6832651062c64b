"""Turning CloudTrail JSON records into rows of `EVENT_SCHEMA`.

The converter is column-oriented: one pass over the records collects plain Python lists per column, and
Arrow builds each column in C++ with an explicit type. Struct columns are built from the records' own
camelCase dicts (no per-record key renaming) and renamed to the lower-case schema afterwards, zero-copy.
A record that cannot be stored is returned as a `Reject` with a reason; it never stops the batch.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import msgspec
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson
import polars as pl

from . import limits, recordscan, schema, segments
from .timeparse import parse_timestamps, timestamp_expr


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
_TLS_SPEC = schema.TLS_SPEC
_RES_READ_SPEC = schema.RESOURCE_READ_SPEC
_TLS_CAMEL = _camel_type(_TLS_SPEC)
_RES_CAMEL = pa.list_(_camel_type(_RES_READ_SPEC))


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
        if pa.types.is_timestamp(arr.type):  # the C scanner parses them itself
            return arr
        return pa.array(parse_timestamps(arr.to_pylist()).to_arrow(), type=schema.TIMESTAMP)
    if spec == "map":
        return arr
    children = [_rename(arr.field(i), sub) for i, (_, _, sub) in enumerate(spec)]
    names = [col for _, col, _ in spec]
    return pa.StructArray.from_arrays(children, names=names, mask=arr.is_null())


def _build_resources(values: list) -> pa.Array:
    """Elements that are not objects are dropped (null stays null); Arrow alone would read a list element as
    a struct of its items."""
    try:
        if not all(type(e) is dict or e is None for v in values if v for e in v):
            raise ValueError("not every resource is an object")
        arr = pa.array(values, type=_RES_CAMEL)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
        arr = pa.array([_clean_resources(v) for v in values], type=_RES_CAMEL)
    return _resources(arr)


def _resources(arr: pa.ListArray) -> pa.Array:
    """The resources column from lists of camelCase resource structs read with the "arn" alias."""
    values = arr.values
    arn = pc.coalesce(values.field("ARN"), values.field(schema.RESOURCE_ARN_ALIAS))
    children = [arn if key == "ARN" else values.field(key) for key, _ in schema.RESOURCE_FIELDS]
    inner = pa.StructArray.from_arrays(children, names=[col for _, col in schema.RESOURCE_FIELDS],
                                       mask=values.is_null())
    return pa.ListArray.from_arrays(arr.offsets, inner, mask=arr.is_null())


def _clean_resources(v: Any) -> list | None:
    if not isinstance(v, list):
        return None
    out = []
    for r in v:
        if r is None:
            out.append(None)  # a null element stays one, as in the fast path
        elif isinstance(r, dict):
            out.append(_sanitize(r, _RES_READ_SPEC))
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
    if _bool(rec.get("managementEvent")) is False:  # "false" strings too, as the column reads them
        return "Data"
    return "Management"


# ---- the converter -----------------------------------------------------------------------------------

def convert(records: Iterable[Any], *, size_mode: str = limits.STANDARD, location: str = "",
            field_caps: bool = True, _dups_checked: bool = False) -> Converted:
    """Convert records (dicts, or JSON bytes/str of one object each) into an Arrow table.

    Rows keep input order; `indexes` maps rows back to input positions. eventtime is parsed for the
    whole batch at once; records without a usable eventTime are rejected. `field_caps=False` is for
    records CloudTrail itself already delivered (trail log imports): they are kept byte-for-byte unless
    the whole event exceeds the size mode, because real delivered events do carry fields a few bytes over
    the documented caps and re-truncating them would alter digest-validated content. A record given as
    text that names a key twice in one object is rejected (`DuplicateKey`, see `recordscan.duplicate_keys`).
    """
    max_bytes = limits.MAX_EVENT_BYTES[size_mode]
    rejects: list[Reject] = []
    kept: list[dict] = []
    idx: list[int] = []
    jsons: list[str] = []
    truncated = 0
    records = records if isinstance(records, list) else list(records)
    dup_at: dict[int, str] = {}
    deep_at: set[int] = set()
    at = [i for i, r in enumerate(records) if isinstance(r, (bytes, bytearray, memoryview, str))]
    if at:
        texts = [r.encode() if isinstance(r, str) else bytes(r) for r in (records[i] for i in at)]
        deep_at = {at[j] for j in recordscan.too_deep(texts)}
        if not _dups_checked:
            dup_at = {at[j]: key for j, key in recordscan.duplicate_keys(texts)}
    for i, rec in enumerate(records):
        text = None
        if i in deep_at:
            rejects.append(_deep_reject(i, location))
            continue
        if i in dup_at:
            rejects.append(_duplicate_reject(i, dup_at[i], location))
            continue
        if isinstance(rec, (bytes, bytearray, memoryview, str)):
            text = compact_json(bytes(rec) if not isinstance(rec, str) else rec.encode())
            try:
                rec = orjson.loads(text)
            except (orjson.JSONDecodeError, RecursionError) as e:
                rejects.append(_json_reject(i, text, e, location))
                continue
        if type(rec) is not dict:
            rejects.append(Reject(i, "NotAnObject", f"record is a JSON {type(rec).__name__}, not an object",
                                  location))
            continue
        raw = text if (text is not None and not field_caps) else orjson.dumps(rec)
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
    far = _outside_bounds(times)
    bad_s = times.is_null() | far
    if bad_s.any():
        bad, far_l = bad_s.to_list(), far.to_list()
        good_recs, good_idx, good_json = [], [], []
        for r, i, j, b, f in zip(kept, idx, jsons, bad, far_l):
            if not b:
                good_recs.append(r); good_idx.append(i); good_json.append(j)
                continue
            t = r.get("eventTime")
            if t is None:
                rejects.append(Reject(i, "MissingEventTime", "record has no eventTime", location))
            else:
                rejects.append(_range_reject(i, _text(t), location) if f else
                               Reject(i, "InvalidEventTime", f"eventTime {_text(t)[:40]!r} is not a timestamp",
                                      location))
        kept, idx, jsons = good_recs, good_idx, good_json
        times = times.filter(~bad_s)
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
    cols["eventtime"] = eventtime.cast(schema.TIMESTAMP) if len(eventtime) else pa.array([], schema.TIMESTAMP)
    return pa.table([cols[f.name] for f in schema.EVENT_SCHEMA], schema=schema.EVENT_SCHEMA)


def _json_reject(index: int, text: bytes, error: Exception, location: str) -> Reject:
    """The reject for a record orjson refused. Text that is not UTF-8 is reported as such, with the offset of
    the first bad byte (orjson's own message, "surrogates not allowed", names neither)."""
    if isinstance(text, (bytes, bytearray)):
        try:
            text.decode("utf-8")
        except UnicodeDecodeError as u:
            bad = text[u.start:u.start + 4].hex(" ")
            return Reject(index, "InvalidUtf8", f"record is not valid UTF-8: byte {u.start:,} starts an invalid "
                                                f"sequence ({bad})", location)
    return Reject(index, "InvalidJson", f"record is not valid JSON: {error}", location)


def compact_json(raw: bytes) -> bytes:
    """A received record's JSON text without insignificant whitespace; strings and numbers untouched.

    This is what `eventjson` stores for raw input, so a pretty-printed record gets the same text and
    checksum whichever conversion path reads it. Single-line text (CloudTrail's own minified records, or
    `{"a": 1, "b": 2}`-style lines) is returned as is: spaces inside it may belong to strings, and finding out
    costs a full parse for nothing, since both paths keep such text unchanged."""
    if b"\n" in raw or b"\r" in raw or raw[:1].isspace() or raw[-1:].isspace():
        if recordscan.too_deep([raw]):
            return raw  # msgspec would recurse as deep as Python's limit allows: left for the caller to reject
        try:
            return msgspec.json.format(raw, indent=-1)
        except (msgspec.DecodeError, RecursionError):
            return raw  # invalid JSON: left for the caller to reject with its parse error
    return raw


# ---- the fast path for raw JSON texts (trail log imports) -------------------------------------------

def _fast_type(spec) -> pa.DataType:
    """camelCase Arrow type for pyarrow's JSON reader: like _camel_type but without map leaves, which that
    reader cannot build (they are filled in afterwards)."""
    if spec is None or spec == "timestamp":
        return pa.string()
    return pa.struct([(key, _fast_type(sub)) for key, _, sub in spec if sub != "map"])


_FAST_SCHEMA = pa.schema(
    [(k, pa.string()) for k in schema.STRING_FIELDS] + [(k, pa.bool_()) for k in schema.BOOL_FIELDS]
    + [("eventTime", pa.string()), ("userIdentity", _fast_type(schema.USERIDENTITY_FIELDS)),
       ("tlsDetails", _TLS_CAMEL), ("resources", _RES_CAMEL)])
_FAST_PARSE = pajson.ParseOptions(explicit_schema=_FAST_SCHEMA, unexpected_field_behavior="ignore")


class _Freeform(msgspec.Struct):
    """The free-form objects of a record, decoded to Python values (msgspec skips every other field
    without building anything). Integers beyond 64 bits stay exact here."""

    requestParameters: Any = None
    responseElements: Any = None
    additionalEventData: Any = None
    serviceEventDetails: Any = None
    addendum: Any = None
    edgeDeviceDetails: Any = None
    insightDetails: Any = None
    eventContext: Any = None


_FREEFORM_DECODER = msgspec.json.Decoder(list[_Freeform])
_FREEFORM_GETTER = operator.attrgetter(*schema.FREEFORM_FIELDS)


def _with_maps(arr: pa.Array, spec, fill: dict[tuple, list]) -> pa.Array:
    """Re-insert the map leaves the fast reader skipped; `fill[path]` holds their values (None = absent)."""
    def walk(a: pa.Array, sp, path: tuple) -> pa.Array:
        if sp is None or sp == "timestamp" or sp == "map":
            return a
        children, names = [], []
        for key, _, sub in sp:
            names.append(key)
            if sub == "map":
                children.append(pa.array(fill.get(path + (key,), [None] * len(a)), type=schema.FREEFORM))
            else:
                children.append(walk(a.field(key), sub, path + (key,)))
        return pa.StructArray.from_arrays(children, names=names, mask=a.is_null())
    return walk(arr, spec, ())


_WEBID_ATTRS = re.compile(rb'"webIdFederationData"\s*:\s*\{\s*"')


def _records_matching(pattern: re.Pattern, nd: bytes, raws: list[bytes]) -> list[int]:
    """Indexes of the records (joined by one separator byte in `nd`) in which `pattern` matches: one C-level
    scan of the batch instead of a search per record."""
    starts = [m.start() for m in pattern.finditer(nd)]
    if not starts:
        return []
    ends = np.cumsum(np.fromiter(map(len, raws), dtype=np.int64, count=len(raws)) + 1)
    return sorted(set(np.searchsorted(ends, starts, side="right").tolist()))


def _map_paths(spec, path: tuple = ()) -> list[tuple]:
    out = []
    for key, _, sub in spec:
        if sub == "map":
            out.append(path + (key,))
        elif isinstance(sub, list):
            out.extend(_map_paths(sub, path + (key,)))
    return out


_UID_MAP_PATHS = _map_paths(schema.USERIDENTITY_FIELDS)


def convert_raw(raws: list, *, size_mode: str = limits.STANDARD, location: str = "",
                scanner: bool = True, compacted: bool = False) -> Converted:
    """Convert records given as raw JSON texts exactly as received (e.g. split from a trail log file).

    `eventjson` is the received text itself. Every column comes from one pass of the C record scanner
    (lake/recordscan.py) when it is built and accepts the batch (`scanner=False` skips it, for differential
    tests); otherwise the fixed columns are parsed by Arrow's C++ JSON reader and the free-form objects by
    msgspec, so no Python dict is built per record; this is ~4x faster than `convert`. Records over the size
    limit, and batches the fast reader refuses (unexpected value types,
    invalid JSON), go through `convert`, which handles them one by one. Field caps never apply here: this is
    the import path for events CloudTrail already delivered. `compacted`: the texts went through
    `compact_json` already (the importer's `split_raw` does that).
    """
    if not compacted:
        raws = [compact_json(bytes(r)) for r in raws]
    if raws and scanner and recordscan.available():
        scanned = _convert_scanned(raws, location, limits.MAX_EVENT_BYTES[size_mode])
        if scanned is not None:  # it found the records with duplicate keys during its own pass
            return scanned
    deep = recordscan.too_deep(raws) if raws else []
    dups = recordscan.duplicate_keys(raws) if raws else []
    if not dups and not deep:
        return _convert_raw(raws, size_mode, location)
    bad = {**dict(dups), **dict.fromkeys(deep, "")}
    keep = [i for i in range(len(raws)) if i not in bad]
    conv = _convert_raw([raws[i] for i in keep], size_mode, location)
    rejects = [Reject(keep[r.index], r.code, r.message, r.location) for r in conv.rejects]
    rejects += [_deep_reject(i, location) for i in deep]
    rejects += [_duplicate_reject(i, key, location) for i, key in dups if i not in set(deep)]
    rejects.sort(key=lambda r: r.index)
    return Converted(conv.table, rejects, [keep[i] for i in conv.indexes], conv.truncated)


def _deep_reject(index: int, location: str) -> Reject:
    return Reject(index, "InvalidJson", f"record is nested more than {recordscan.MAX_DEPTH} levels deep", location)


def _duplicate_reject(index: int, key: str, location: str) -> Reject:
    return Reject(index, "DuplicateKey", f"record names the key {key[:100]!r} twice in one object; such records are "
                                         "refused (readers disagree on which value counts)", location)


def _convert_raw(raws: list[bytes], size_mode: str, location: str) -> Converted:
    """`convert_raw` of compacted texts without duplicate keys, without the C scanner."""
    max_bytes = limits.MAX_EVENT_BYTES[size_mode]
    if not raws:
        return convert([], size_mode=size_mode, location=location, field_caps=False, _dups_checked=True)
    if max(map(len, raws)) > max_bytes:
        return convert(raws, size_mode=size_mode, location=location, field_caps=False, _dups_checked=True)
    try:
        received = _string_array(raws)  # invalid UTF-8 raises here, before any record is judged
    except pa.ArrowInvalid:
        return convert(raws, size_mode=size_mode, location=location, field_caps=False, _dups_checked=True)
    try:
        nd = b"\n".join(r.replace(b"\n", b" ").replace(b"\r", b" ") if (b"\n" in r or b"\r" in r) else r
                        for r in raws)
        tb = pajson.read_json(pa.BufferReader(nd), parse_options=_FAST_PARSE,
                              read_options=pajson.ReadOptions(block_size=max(1 << 20, len(nd) // 2 + 1),
                                                                 use_threads=False))
        if tb.num_rows != len(raws):
            raise ValueError("row count mismatch")
        free = _FREEFORM_DECODER.decode(b"[" + nd.replace(b"\n", b",") + b"]")
        # webIdFederationData.attributes is the one map inside userIdentity (the fast reader skips it);
        # assumed-role records carry an empty `"webIdFederationData":{}`, which needs no parse.
        webid_in = set(_records_matching(_WEBID_ATTRS, nd, raws)) if b"webIdFederationData" in nd else set()
    except (pa.ArrowException, msgspec.DecodeError, msgspec.ValidationError, ValueError, RecursionError):
        return convert(raws, size_mode=size_mode, location=location, field_caps=False, _dups_checked=True)
    tb = tb.combine_chunks()
    times = _parse_times(tb.column("eventTime"))
    far = _outside_bounds(times)
    good = times.is_not_null() & ~far
    rejects: list[Reject] = []
    idx = list(range(len(raws)))
    if not bool(good.all()):
        bad_times = tb.column("eventTime").to_pylist()
        far_l = far.to_list()
        for i, ok in enumerate(good.to_list()):
            if not ok:
                t = bad_times[i]
                rejects.append(Reject(i, "MissingEventTime", "record has no eventTime", location) if t is None
                               else _range_reject(i, t, location) if far_l[i]
                               else Reject(i, "InvalidEventTime", f"eventTime {t[:40]!r} is not a timestamp",
                                           location))
        mask = good.to_arrow()
        tb = tb.filter(mask)
        times = times.filter(good)
        keep = good.to_list()
        raws = [r for r, k in zip(raws, keep) if k]
        free = [f for f, k in zip(free, keep) if k]
        idx = [i for i, k in zip(idx, keep) if k]
    # Put rows in segment order (segments.row_order) now, while the wide columns are still Python lists:
    # permuting a list is cheap, while taking rows of the finished table copies every column.
    if tb.num_rows > 1:
        o = _row_order(lambda k: tb.column(k).combine_chunks(), times.to_arrow())
        if not np.array_equal(o, np.arange(len(o))):
            tb = tb.take(o)
            times = times.gather(o)
            ol = o.tolist()
            raws = [raws[i] for i in ol]
            free = [free[i] for i in ol]
            idx = [idx[i] for i in ol]
    cols: dict[str, Any] = {}
    for key, col in schema.STRING_FIELDS.items():
        cols[col] = tb.column(key).chunk(0) if tb.num_rows else pa.array([], pa.string())
    for key, col in schema.BOOL_FIELDS.items():
        cols[col] = tb.column(key).chunk(0) if tb.num_rows else pa.array([], pa.bool_())
    cols["eventcategory"] = _categories(tb.column("eventCategory"), tb.column("eventType"),
                                        tb.column("managementEvent"))
    by_field = list(zip(*map(_FREEFORM_GETTER, free))) if free else [()] * len(schema.FREEFORM_FIELDS)
    for (key, col), values in zip(schema.FREEFORM_FIELDS.items(), by_field):
        cols[col] = _freeform_column(values)
    fill: dict[tuple, list] = {}
    webid = [j for j, i in enumerate(idx) if i in webid_in] if webid_in else []
    for path in _UID_MAP_PATHS:
        if webid:
            values: list = [None] * len(raws)
            for i in webid:
                values[i] = _freeform(_get_path(orjson.loads(raws[i]).get("userIdentity"), path))
            fill[path] = values
    uid_fast = tb.column("userIdentity").chunk(0) if tb.num_rows else pa.array([], _UID_CAMEL)
    uid = _rename(_with_maps(uid_fast, schema.USERIDENTITY_FIELDS, fill) if tb.num_rows else uid_fast,
                  schema.USERIDENTITY_FIELDS)
    cols["useridentity"] = uid
    tls = tb.column("tlsDetails").chunk(0) if tb.num_rows else pa.array([], _TLS_CAMEL)
    cols["tlsdetails"] = _rename(tls, _TLS_SPEC)
    cols["resources"] = _resources(tb.column("resources").chunk(0) if tb.num_rows else pa.array([], _RES_CAMEL))
    for col, path in schema.FLAT_FIELDS.items():
        cols[col] = _struct_leaf(uid, path, schema.USERIDENTITY_FIELDS)
    cols["eventjson"] = received if idx == list(range(len(received))) else received.take(pa.array(idx, type=pa.int64()))
    cols["eventtime"] = times.to_arrow().cast(schema.TIMESTAMP)
    table = pa.table([cols[f.name] for f in schema.EVENT_SCHEMA], schema=schema.EVENT_SCHEMA)
    return Converted(table, rejects, idx, 0)


def _categories(category: Any, etype: Any, management: Any) -> pa.Array:
    """eventcategory for a batch: the record's own, else inferred as `infer_category` does."""
    cat = pl.from_arrow(pa.table({"c": category, "t": etype, "m": management})).select(
        pl.when(pl.col("c").is_not_null() & (pl.col("c") != "")).then(pl.col("c"))
        .when(pl.col("t") == "AwsCloudTrailInsight").then(pl.lit("Insight"))
        .when(pl.col("t").is_in(["AwsVpceEvent", "AwsVpceEvents"])).then(pl.lit("NetworkActivity"))
        .when(pl.col("m") == False).then(pl.lit("Data"))  # noqa: E712
        .otherwise(pl.lit("Management")).alias("c")).to_series()
    return cat.to_arrow().cast(pa.string())


def _outside_bounds(times: pl.Series) -> pl.Series:
    """True where a parsed eventTime lies outside the accepted range (limits.EARLIEST_EVENT_TIME to
    limits.MAX_FUTURE_EVENT_TIME past now); false where it is null. One vectorised comparison: such a record
    would otherwise be stored under a partition date no later code can handle (year 10000) or never expire."""
    if times.len() == 0:
        return pl.Series("far", [], dtype=pl.Boolean)
    return ((times < limits.EARLIEST_EVENT_TIME) | (times > limits.latest_event_time())).fill_null(False)


def _range_reject(index: int, text: str, location: str) -> Reject:
    return Reject(index, "InvalidEventTime", f"eventTime {text[:40]!r} is outside the accepted range "
                                             f"({limits.event_time_range_text()})", location)


def _time_rejects(times: pa.Array, texts: pa.Array, location: str) -> list[Reject]:
    """One reject per record whose eventTime is missing or unparseable (`texts`: the received values)."""
    bad = np.flatnonzero(times.is_null().to_numpy(zero_copy_only=False))
    values = texts.take(bad).to_pylist() if len(bad) else []
    return [Reject(int(i), "MissingEventTime", "record has no eventTime", location) if t is None
            else Reject(int(i), "InvalidEventTime", f"eventTime {t[:40]!r} is not a timestamp", location)
            for i, t in zip(bad, values)]


# The top-level fields behind segments.ROW_KEYS other than eventtime, as (record key, column).
_ROW_KEY_FIELDS = (("eventSource", "eventsource"), ("eventName", "eventname"), ("awsRegion", "awsregion"))


def _row_order(field: Callable[[str], pa.Array], times: pa.Array) -> np.ndarray:
    """segments.row_order of records whose top-level fields (by record key) `field` returns."""
    return segments.row_order(segments.account_key(field("recipientAccountId")), times,
                              {col: field(key) for key, col in _ROW_KEY_FIELDS})


def _convert_scanned(raws: list[bytes], location: str, max_bytes: int) -> Converted | None:
    """`convert_raw` through the C scanner; None when it declines the batch (a record over `max_bytes` or
    not valid UTF-8 included: the Python path rejects those one by one).

    Rows are put in segment order before the full scan: a first, lenient scan reads only the columns of
    that order (segments.row_order), and the full scan then reads the records in that order (and copies
    their texts for `eventjson`), which costs less than permuting ~50 finished columns with Arrow's take."""
    keys = recordscan.scan(raws, recordscan.KEY_SPEC, lenient=True, check=True, max_bytes=max_bytes)
    if keys is None:
        return None
    times = keys["eventTime"]
    rejects = _time_rejects(times, keys["eventTime:text"], location) if times.null_count else []
    far = _outside_bounds(pl.from_arrow(times)).to_numpy()
    if far.any():
        texts = keys["eventTime:text"].take(np.flatnonzero(far)).to_pylist()
        rejects = sorted(rejects + [_range_reject(int(i), t, location) for i, t in zip(np.flatnonzero(far), texts)],
                         key=lambda r: r.index)
    if rejects and recordscan.scan([raws[r.index] for r in rejects], recordscan.TIME_SPEC) is None:
        return None  # a rejected record that is not valid JSON: the Python path says so
    idx = np.arange(len(raws))
    good = pa.array(times.is_valid().to_numpy(zero_copy_only=False) & ~far) if rejects else None
    if good is not None:
        idx = idx[good.to_numpy(zero_copy_only=False)]
        times = times.filter(good)
    order = _row_order(lambda k: keys[k] if good is None else keys[k].filter(good), times)
    in_order = np.array_equal(order, np.arange(len(order)))
    if not in_order:
        idx = idx[order]
        times = times.take(order)
    c = recordscan.scan(raws, order=None if in_order and not rejects else idx, texts=True, dups=True)
    if c is None:
        return None
    drop = _confirmed_duplicates(raws, idx, c[recordscan.DUPS], location) if len(c[recordscan.DUPS]) else None
    if drop is not None:
        rejects = sorted(rejects + drop[1], key=lambda r: r.index)
    cols: dict[str, Any] = {}
    for key, col in schema.STRING_FIELDS.items():
        cols[col] = c[key]
    for key, col in schema.BOOL_FIELDS.items():
        cols[col] = c[key]
    for key, col in schema.FREEFORM_FIELDS.items():
        cols[col] = c[key]
    cols["eventcategory"] = _categories(c["eventCategory"], c["eventType"], c["managementEvent"])
    uid = _rename(c["userIdentity"], schema.USERIDENTITY_FIELDS)
    cols["useridentity"] = uid
    cols["tlsdetails"] = _rename(c["tlsDetails"], _TLS_SPEC)
    cols["resources"] = _resources(c["resources"])
    for col, path in schema.FLAT_FIELDS.items():
        cols[col] = _struct_leaf(uid, path, schema.USERIDENTITY_FIELDS)
    cols["eventjson"] = c[recordscan.TEXT]
    cols["eventtime"] = times
    table = pa.table([cols[f.name] for f in schema.EVENT_SCHEMA], schema=schema.EVENT_SCHEMA)
    if drop is not None and not drop[0].all():
        table = table.filter(pa.array(drop[0]))
        idx = idx[drop[0]]
    return Converted(table, rejects, idx.tolist(), 0)


def _confirmed_duplicates(raws: list[bytes], idx: np.ndarray, flagged: np.ndarray,
                          location: str) -> tuple[np.ndarray, list[Reject]]:
    """(rows to keep, rejects) after the exact check of the rows the scanner flagged as possibly naming a key
    twice (`flagged`: output rows; `idx`: input position of each output row)."""
    found = recordscan.duplicate_keys([raws[int(idx[j])] for j in flagged])
    keep = np.ones(len(idx), dtype=bool)
    rejects = []
    for n, key in found:
        row = int(flagged[n])
        keep[row] = False
        rejects.append(_duplicate_reject(int(idx[row]), key, location))
    return keep, rejects


def _freeform_column(values) -> pa.Array:
    """A map<string,string> column from decoded JSON values: an object becomes a map (strings as-is, other
    values as compact JSON); null, strings, arrays and absence give a null map.

    Keys and values are gathered with C-level `extend`s; only the rare non-string values are visited one
    by one. Building from flat key/value lists and offsets is ~3x faster than handing Arrow a list of pair
    lists."""
    n = len(values)
    objs = [i for i, v in enumerate(values) if type(v) is dict]
    if not objs:
        return pa.nulls(n, type=schema.FREEFORM)
    keys: list[str] = []
    vals: list = []
    for i in objs:
        d = values[i]
        keys.extend(d)
        vals.extend(d.values())
    for i in [i for i, x in enumerate(vals) if not (x is None or type(x) is str)]:
        vals[i] = _json_text(vals[i])
    sizes = np.zeros(n, dtype=np.int32)
    sizes[objs] = np.fromiter((len(values[i]) for i in objs), dtype=np.int32, count=len(objs))
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(sizes, out=offsets[1:])
    valid = np.zeros(n, dtype=bool)
    valid[objs] = True
    return pa.MapArray.from_arrays(pa.array(offsets), pa.array(keys, type=pa.string()),
                                   pa.array(vals, type=pa.string()), mask=pa.array(~valid))


def _json_text(x: Any) -> str:
    """Compact JSON text of a nested value, as orjson writes it; integers beyond 64 bits (which orjson
    cannot encode) through msgspec."""
    try:
        return orjson.dumps(x).decode()
    except orjson.JSONEncodeError:
        return msgspec.json.encode(x).decode()


def _parse_times(col: pa.ChunkedArray) -> pl.Series:
    """eventTime strings to timestamps: the canonical CloudTrail format in one pass, the variants only for
    the values it leaves unparsed."""
    df = pl.from_arrow(pa.table({"t": col}))
    fast = df.select(pl.col("t").str.strptime(pl.Datetime("us"), "%Y-%m-%dT%H:%M:%SZ", strict=False)
                     .dt.replace_time_zone("UTC")).to_series()
    if fast.null_count() == df.get_column("t").null_count():
        return fast
    return df.select(pl.coalesce(fast, timestamp_expr("t"))).to_series()


def _string_array(items: list[bytes]) -> pa.Array:
    """A UTF-8 string array built from one joined buffer and offsets (pa.array over bytes copies slowly)."""
    lengths = np.fromiter((len(b) for b in items), dtype=np.int64, count=len(items))
    offsets = np.zeros(len(items) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    arr = pa.Array.from_buffers(pa.large_string(), len(items),
                                [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(items))])
    arr.validate(full=True)  # invalid UTF-8 raises here, and the caller falls back to the slow path
    return arr.cast(pa.string())


def _get_path(d: Any, path: tuple) -> Any:
    for key in path:
        if type(d) is not dict:
            return None
        d = d.get(key)
    return d


__all__ = ["Reject", "Converted", "convert", "convert_raw", "compact_json", "infer_category"]
