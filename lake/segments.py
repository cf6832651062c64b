"""Immutable Parquet segments: one partition each, sorted by eventtime, described by a manifest entry.

The entry (rows, bytes, SHA-256, partition values, min/max and small value sets of the columns queries
filter on) is computed from the exact bytes written, so `lake verify` and pruning can trust it without
opening the file.
"""

from __future__ import annotations

import hashlib
import io
import re
from datetime import datetime, timezone

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import bloom
from .schema import EVENT_SCHEMA, STAT_COLUMNS
from .storage import Storage

ROW_GROUP_ROWS = 64 * 1024
MAX_VALUE_SET = 64
NO_ACCOUNT = "__none__"


# Within a row group rows are ordered by these columns: records of one API call of one service sit
# together, which makes every column (eventjson most) compress ~35% smaller and encode ~25% faster than
# plain eventtime order (measured on 10 M generated events, docs/performance.md). Row groups themselves are
# cut from the partition's rows in eventtime order, so each still covers a narrow span of time for pruning.
ROW_KEYS = ("eventsource", "eventname", "awsregion", "eventtime")


def account_key(recipient: pa.Array | pa.ChunkedArray) -> pa.Array:
    """The partition account of each row: recipientAccountId, or `__none__` when it is null or empty."""
    account = pc.fill_null(recipient, NO_ACCOUNT)
    account = pc.if_else(pc.equal(account, ""), NO_ACCOUNT, account)
    return account.combine_chunks() if isinstance(account, pa.ChunkedArray) else account


def event_ids(table: pa.Table) -> pl.Series:
    """The `eventid` column as the dedupe key uses it: rows without an eventID get `U+001E` + the SHA-256 of
    their `eventjson` (when the table has it), so the same record imported again (a resumed import re-reads
    objects committed but not yet in its ledger) is recognised as the same event instead of stored twice.
    The record text is what identifies such an event: two records with the same text are one event. Only
    rows lacking an eventID (none in real CloudTrail logs) pay the hashing."""
    ids = pl.from_arrow(table.column("eventid").combine_chunks()).alias("eventid")
    if not ids.null_count() or "eventjson" not in table.column_names:
        return ids
    missing = np.flatnonzero(ids.is_null().to_numpy())
    texts = table.column("eventjson").take(pa.array(missing)).to_pylist()
    content = ["\x1e" + hashlib.sha256(t.encode("utf-8", "surrogatepass")).hexdigest() if t is not None else None
               for t in texts]
    return ids.scatter(missing, pl.Series(content, dtype=pl.String))


def partition_columns(table: pa.Table) -> tuple[pa.Array, pa.Array]:
    """(account, date) per row: `account_key` and the UTC date of eventtime."""
    date = table.column("eventtime").cast(pa.date32()).cast(pa.string())  # UTC date; 10x faster than strftime
    return account_key(table.column("recipientaccountid")), date.combine_chunks()


def row_order(account: pa.Array, times: pa.Array, keys: dict[str, pa.Array]) -> np.ndarray:
    """The permutation that puts rows in segment order: by partition (account, UTC date); within one, by
    row group (the k-th ROW_GROUP_ROWS rows in eventtime order); within one, by ROW_KEYS (`keys` holds the
    arrays of the ROW_KEYS other than eventtime). `account` comes from `account_key`."""
    date = times.cast(pa.date32())
    cols = {"a": account, "d": date}
    if len(times) > ROW_GROUP_ROWS:
        by_time = pc.sort_indices(pa.table({**cols, "t": times}),
                                  sort_keys=[("a", "ascending"), ("d", "ascending"), ("t", "ascending")]).to_numpy()
        a, d = account.take(by_time), date.take(by_time)
        new = np.ones(len(by_time), dtype=bool)
        new[1:] = ~(pc.and_(pc.equal(a[1:], a[:-1]).fill_null(False),
                            pc.equal(d[1:], d[:-1]).fill_null(False)).to_numpy(zero_copy_only=False))
        starts = np.flatnonzero(new)
        pos = np.arange(len(by_time)) - np.repeat(starts, np.diff(np.append(starts, len(by_time))))
        group = np.empty(len(by_time), dtype=np.int64)
        group[by_time] = pos // ROW_GROUP_ROWS
        cols["g"] = pa.array(group)
    for k in ROW_KEYS:
        cols[k] = times if k == "eventtime" else keys[k]
    return pc.sort_indices(pa.table(cols), sort_keys=[(k, "ascending") for k in cols]).to_numpy()


def split_partitions(table: pa.Table) -> list[tuple[str, str, pa.Table]]:
    """Split rows into (account, date, rows in segment order) groups (see `row_order`)."""
    if table.num_rows == 0:
        return []
    account, date = partition_columns(table)
    order = _table_order(table, account)
    keyed = table.append_column("__a", account).append_column("__d", date)
    if not _is_identity(order):  # rows already in order (from convert_raw): no copy
        keyed = keyed.take(order)
    a = keyed.column("__a").to_pylist()
    d = keyed.column("__d").to_pylist()
    out, start = [], 0
    n = len(a)
    for i in range(1, n + 1):
        if i == n or a[i] != a[start] or d[i] != d[start]:
            out.append((a[start], d[start], keyed.slice(start, i - start).drop_columns(["__a", "__d"])))
            start = i
    return out


def _table_order(table: pa.Table, account: pa.Array) -> np.ndarray:
    return row_order(account, table.column("eventtime").combine_chunks(),
                     {k: table.column(k).combine_chunks() for k in ROW_KEYS if k != "eventtime"})


def _is_identity(order: np.ndarray) -> bool:
    return bool(np.array_equal(order, np.arange(len(order))))


def ordered(table: pa.Table) -> pa.Table:
    """The rows of a table in segment order (one partition, or several in partition order)."""
    order = _table_order(table, partition_columns(table)[0])
    return table if _is_identity(order) else table.take(order)


def in_segment_order(table: pa.Table) -> bool:
    """Whether a table's rows are in segment order (`row_order`): what every written segment holds."""
    return _is_identity(_table_order(table, partition_columns(table)[0]))


# A partition value is a path piece: only these characters are used as they are. Anything else (a record's
# recipientAccountId is whatever the record says: "1/../../<other store>/data/x", "redacted", "") is
# encoded, so no value can name a directory outside its store's own data folder.
_SAFE_VALUE = re.compile(r"[0-9A-Za-z_-]{1,64}")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_NAME = re.compile(r"[0-9A-Za-z_-][0-9A-Za-z._-]{0,254}")


def path_value(value: str) -> str:
    """A partition value as a safe path piece: itself when it is 1-64 of [0-9A-Za-z_-] (account ids,
    `__none__`), else `~` and the first 32 hex digits of its SHA-256. The path is never parsed back (the
    manifest entry keeps the value itself, which pruning and dedupe use), so the encoding need not be
    reversible, only deterministic (a partition's segments share one folder) and safe."""
    if _SAFE_VALUE.fullmatch(value):
        return value
    return "~" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def segment_path(account: str, date: str, name: str) -> str:
    """`data/account=<account>/date=<date>/<name>` inside a store; the account is encoded by `path_value`.
    Dates and names are made by Lake itself (a UTC date of a bounded eventtime, a transaction id), so one
    that does not have their shape is a bug, refused rather than written somewhere unexpected."""
    if not _DATE.fullmatch(date) or not _NAME.fullmatch(name):
        raise ValueError(f"refusing a segment path with date {date[:40]!r} and name {name[:80]!r}")
    return f"data/account={path_value(account)}/date={date}/{name}"


def _stats(table: pa.Table) -> dict:
    stats = {}
    for col in STAT_COLUMNS:
        arr = table.column(col)
        mm = pc.min_max(arr).as_py()
        uniq = pc.unique(arr.drop_null()) if arr.null_count < len(arr) else pa.array([], pa.string())
        values = sorted(uniq.to_pylist()) if len(uniq) <= MAX_VALUE_SET else None
        stats[col] = {"min": mm["min"], "max": mm["max"], "values": values}
    return stats


def _iso(ts) -> str:
    if isinstance(ts, datetime):
        return ts.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return str(ts)


# Unique-per-event columns: dictionary encoding only wastes time on them, and min/max statistics of the
# raw JSON are useless for pruning.
_UNIQUE = {"eventjson", "eventid", "requestid", "sharedeventid"}
_DICTIONARY_COLUMNS = [f.name for f in EVENT_SCHEMA if f.name not in _UNIQUE]
# Statistics for top-level scalar columns only: engines filter on those; nested and map leaves' statistics
# are never used for skipping and cost ~3% of a segment write.
_STATS_COLUMNS = [f.name for f in EVENT_SCHEMA if f.name != "eventjson" and not pa.types.is_nested(f.type)]


def encode(table: pa.Table, compression_level: int | None = None) -> bytes:
    """Parquet bytes for a segment: zstd, 64 Ki-row groups, page index and statistics. Imports use zstd
    level 1 (25% faster than the default level 3 at the same size on CloudTrail data); compaction uses the
    default."""
    buf = io.BytesIO()
    pq.write_table(table.cast(EVENT_SCHEMA), buf, compression="zstd", compression_level=compression_level,
                   row_group_size=ROW_GROUP_ROWS, write_page_index=True, use_dictionary=_DICTIONARY_COLUMNS,
                   write_statistics=_STATS_COLUMNS)
    return buf.getvalue()


def write_segment(storage: Storage, store_prefix: str, table: pa.Table, account: str, date: str,
                  name: str, compression_level: int | None = None) -> dict:
    """Write one partition's rows as a new segment; return its manifest entry. The rows must be in segment
    order: a subset of ordered rows is not always ordered (when the full set spanned more than one row group,
    the groups' time boundaries move), so callers that drop rows pass them through `ordered` again."""
    data = encode(table, compression_level)
    path = segment_path(account, date, name)
    with storage.open_write(f"{store_prefix}/{path}") as f:
        f.write(data)
    mm = pc.min_max(table.column("eventtime")).as_py()
    return {
        "path": path, "rows": table.num_rows, "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(), "account": account, "date": date,
        "eventtime_min": _iso(mm["min"]), "eventtime_max": _iso(mm["max"]), "stats": _stats(table),
        "eventid_bloom": bloom.encode(bloom.build(table.column("eventid"))),
    }


def arrow_owned(data: bytes) -> pa.Buffer:
    """`data` copied into memory Arrow allocated, for handing to pyarrow readers.

    Never give pyarrow a Python object (a file object, or `bytes` wrapped by `pa.BufferReader`) to read
    Parquet from: `pq.read_table` pre-buffers on Arrow's IO threads, and those threads may drop the last
    reference to a buffer that wraps a Python object after the call returned. If that happens while the
    interpreter is finalizing, the thread's `PyGILState_Ensure` calls `pthread_exit`, whose forced unwind
    crosses a noexcept C++ destructor, and the process aborts with SIGABRT ("terminate called without an
    active exception"; seen in 2/12 runs of `Store.to_arrow()`). Arrow-owned memory needs no GIL to free."""
    out = pa.BufferOutputStream()
    out.write(data)
    return out.getvalue()


def read_segment(storage: Storage, store_prefix: str, path: str, columns: list[str] | None = None) -> pa.Table:
    """A segment as an Arrow table, read by Arrow's own file or from Arrow-owned memory (`arrow_owned`
    says why never through a Python file object)."""
    full = f"{store_prefix}/{path}"
    if storage.local:
        return pq.read_table(storage.full(full), columns=columns)
    return pq.read_table(pa.BufferReader(arrow_owned(storage.read(full))), columns=columns)


def file_sha256(storage: Storage, path: str) -> tuple[str, int]:
    """(hex SHA-256, size) of a stored file, streamed."""
    h = hashlib.sha256()
    size = 0
    with storage.open_read(path) as f:
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                break
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size
