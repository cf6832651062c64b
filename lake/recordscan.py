"""The fixed and free-form columns of raw CloudTrail records, in one C pass (lake/_recordscan.c).

`scan(raws)` returns each top-level field the event schema uses as an Arrow array, keyed by its JSON name,
with nested structs still under their camelCase keys (the converter renames them), or None when the batch
must take the Python path: the extension is not built, or a record is one the scanner does not convert
exactly as the Python converter would (it says so rather than guess). Values the Python converter stores as
compact JSON text are produced by `canonical_text`, the same function the Python converter uses, whenever a
plain copy of the input could differ (floats, escapes, duplicate keys).
"""

from __future__ import annotations

from typing import Iterator

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import schema

try:
    from . import _recordscan
except ImportError:  # not compiled: the Python path does everything
    _recordscan = None

STRUCT, STRING, BOOL, MAP, LIST, TIME = range(6)


def _node(spec) -> tuple:
    if spec is None:
        return (STRING, ())
    if spec == "timestamp":
        return (TIME, ())
    if spec == "map":
        return (MAP, ())
    return (STRUCT, tuple((key.encode(), _node(sub)) for key, _, sub in spec))


# What segment order needs (segments.row_order): read first, by a lenient scan, so that rows can be sorted
# before the full scan instead of after it.
KEY_SPEC = (STRUCT, ((b"eventTime", (TIME, ())), (b"recipientAccountId", (STRING, ())),
                     (b"eventSource", (STRING, ())), (b"eventName", (STRING, ())), (b"awsRegion", (STRING, ()))))
# Enough to tell whether a record is valid JSON (a record whose eventTime is rejected is reported only if so).
TIME_SPEC = (STRUCT, ((b"eventTime", (TIME, ())), (b"recipientAccountId", (STRING, ()))))

SPEC = (STRUCT, (
    *[(key.encode(), (STRING, ())) for key in schema.STRING_FIELDS],
    *[(key.encode(), (BOOL, ())) for key in schema.BOOL_FIELDS],
    *[(key.encode(), (MAP, ())) for key in schema.FREEFORM_FIELDS],
    (b"userIdentity", _node(schema.USERIDENTITY_FIELDS)),
    (b"tlsDetails", _node(schema.TLS_SPEC)),
    (b"resources", (LIST, ((b"", _node(schema.RESOURCE_READ_SPEC)),))),
))

_ENTRY_FIELDS = [pa.field("key", pa.string(), nullable=False), pa.field("value", pa.string())]


def canonical_text(raw: bytes) -> str:
    """Compact JSON of one JSON value as the Python converter stores it (orjson's text of the decoded value;
    msgspec's for integers beyond 64 bits)."""
    from .events import _json_text

    return _json_text(msgspec.json.decode(raw))


def available() -> bool:
    return _recordscan is not None


TEXT = ":record"  # the key of the records' own texts in `scan(..., texts=True)`
DUPS = ":dups"  # the key of the rows that may name a key twice, in `scan(..., dups=True)`


def scan(raws: list[bytes], spec: tuple = SPEC, *, lenient: bool = False, check: bool = False,
         max_bytes: int = -1, order: np.ndarray | None = None, texts: bool = False,
         dups: bool = False) -> dict[str, pa.Array] | None:
    """Top-level columns of `raws` (compact JSON texts of single records, valid UTF-8: the caller checks,
    since Arrow and polars assume it), or None for the Python path.
    Time fields come as timestamps, null where missing or unparseable; a top-level one's received text is
    under `<key>:text` too (for reject messages). `lenient`: skip the fields the spec does not name without
    checking them, and stop reading a record once every named field was found (the key scan: what it keeps
    is checked by the full scan). `check`: None when a record is not valid UTF-8 or is longer than
    `max_bytes` (without it, the caller vouches for both). `order`: int64 positions of the records to read,
    in that order. `texts`: also the records' texts as read, under `TEXT`. `dups`: also, under `DUPS`, an
    int64 array of the rows (output positions) whose record may name a key twice in one object: found during
    the same pass, so only those few need the exact check (`duplicate_keys`)."""
    if _recordscan is None:
        return None
    out = _recordscan.decode(raws, spec, canonical_text, lenient=lenient, check=check, max_bytes=max_bytes,
                             order=None if order is None else np.ascontiguousarray(order, dtype=np.int64),
                             texts=texts, dups=dups)
    if out is None:
        return None
    flagged = np.frombuffer(out.pop(), dtype=np.int64) if dups else None
    text = None
    if texts:
        n, offsets, data = out.pop()
        text = pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])
    parts = iter(out)
    next(parts)  # the root: one slot per record
    columns: dict[str, pa.Array] = {}
    for key, node in spec[1]:
        found: list = []
        columns[key.decode()] = _array(node, parts, found)
        if found:
            columns[f"{key.decode()}:text"] = found[0]
    if text is not None:
        columns[TEXT] = text
    if flagged is not None:
        columns[DUPS] = flagged
    return columns


def split(data: bytes) -> list[bytes] | None:
    """The records of a `{"Records": [...]}` log file as compact JSON texts, or None (not built, another
    layout, or invalid JSON: the Python reader decides)."""
    return None if _recordscan is None else _recordscan.split(data)


MAX_DEPTH = 512  # records nested deeper are refused before any recursive JSON reader sees them


def too_deep(raws: list[bytes], limit: int = MAX_DEPTH) -> list[int]:
    """Indexes of the texts nested more than `limit` levels deep, found without recursion. msgspec and the
    json module recurse once per level, bounded only by Python's recursion limit, which the process may have
    raised (Lake's SQL parser does, for deep queries): a record nested 100,000 deep then overflowed the C
    stack of an import thread (a segfault). Callers refuse such records first."""
    if _recordscan is not None:
        return _recordscan.depth_over(raws, limit)
    import re

    strings = re.compile(rb'"(?:[^"\\]|\\.)*"')
    out = []
    for i, raw in enumerate(raws):
        depth = 0
        for c in strings.sub(b"", raw):
            if c in (0x7B, 0x5B):
                depth += 1
                if depth > limit:
                    out.append(i)
                    break
            elif c in (0x7D, 0x5D):
                depth -= 1
    return out


def duplicate_keys(raws: list[bytes]) -> list[tuple[int, str]]:
    """(index, key) of each record that names a key twice in one of its objects, at any depth (keys compared
    after unescaping). Such records are refused: the columns (orjson, msgspec, this scanner) take the last
    value, while readers of the stored `eventjson` may take the first, so the record would say two things.
    Records that are not valid JSON are not listed (the converter rejects them for that)."""
    if _recordscan is not None:
        return [(i, k if isinstance(k, str) else k.decode("utf-8", "replace"))
                for i, k in _recordscan.duplicate_keys(raws)]
    import json

    class _Dup(Exception):
        pass

    def pairs(items: list) -> dict:
        seen = set()
        for k, _ in items:
            if k in seen:
                raise _Dup(k)
            seen.add(k)
        return dict(items)

    out = []
    deep = set(too_deep(raws))  # json.loads recurses: never on those
    for i, raw in enumerate(raws):
        if i in deep:
            continue
        try:
            json.loads(raw, object_pairs_hook=pairs)
        except _Dup as e:
            out.append((i, str(e.args[0])))
        except (ValueError, RecursionError):
            pass
    return out


def _buf(b: bytes | None) -> pa.Buffer | None:
    return None if b is None else pa.py_buffer(b)


def _array(node: tuple, parts: Iterator[tuple], texts: list | None = None) -> pa.Array:
    kind, children = node
    got = next(parts)
    n, valid = got[0], _buf(got[1])
    if kind == STRING:
        return pa.Array.from_buffers(pa.string(), n, [valid, _buf(got[2]), _buf(got[3])])
    if kind == TIME:
        text = pa.Array.from_buffers(pa.string(), n, [valid, _buf(got[2]), _buf(got[3])])
        if texts is not None:
            texts.append(text)
        return _times(text, pa.Array.from_buffers(schema.TIMESTAMP, n, [_buf(got[4]), _buf(got[5])]))
    if kind == BOOL:
        return pa.Array.from_buffers(pa.bool_(), n, [valid, _buf(got[2])])
    if kind == MAP:
        offsets, koffs, kdata, vvalid, voffs, vdata = got[2:]
        nent = memoryview(koffs).nbytes // 4 - 1
        keys = pa.Array.from_buffers(pa.string(), nent, [None, _buf(koffs), _buf(kdata)])
        values = pa.Array.from_buffers(pa.string(), nent, [_buf(vvalid), _buf(voffs), _buf(vdata)])
        entries = pa.StructArray.from_arrays([keys, values], fields=_ENTRY_FIELDS)
        return pa.Array.from_buffers(schema.FREEFORM, n, [valid, _buf(offsets)], children=[entries])
    if kind == LIST:
        element = _array(children[0][1], parts)
        return pa.Array.from_buffers(pa.list_(element.type), n, [valid, _buf(got[2])], children=[element])
    arrays = [_array(sub, parts) for _, sub in children]
    typ = pa.struct([pa.field(key.decode(), a.type) for (key, _), a in zip(children, arrays)])
    return pa.Array.from_buffers(typ, n, [valid], children=arrays)


def _times(text: pa.Array, parsed: pa.Array) -> pa.Array:
    """The scanner reads CloudTrail's own timestamp form; the other forms real archives hold go through
    `timeparse`, as in the Python converter."""
    if parsed.null_count == text.null_count:
        return parsed
    import polars as pl

    from .timeparse import timestamp_expr

    rest = pl.from_arrow(pa.table({"t": text})).select(timestamp_expr("t")).to_series().to_arrow()
    return pc.coalesce(parsed, rest.cast(schema.TIMESTAMP))


__all__ = ["scan", "split", "available", "canonical_text", "duplicate_keys", "too_deep", "SPEC", "KEY_SPEC",
           "TIME_SPEC"]
