"""Query results as text or bytes: one set of pure functions (DataFrame -> str/bytes) behind `lake sql`, the
shell and anything else that prints rows, so every output path agrees on how a value looks.

`jsonl` is the stable, scriptable contract (docs/sql.md, "Result formats"): one JSON object per row, keys
are the column names in order; timestamps are UTC text `YYYY-MM-DD HH:MM:SS` with `.fff` only when the
milliseconds are not zero (sub-millisecond digits are dropped, as Trino's timestamp(3) does); maps (polars
Map or List(Struct{key, value})) are JSON objects, lists are arrays, structs are objects, NULL is null,
floats are JSON numbers and NaN/Infinity (which JSON cannot hold) are null. `json` is a JSON array of the
same objects, `csv` the same values with a header (nested values as compact JSON text), `table` a box table
for people, `parquet` the result with its native types.
"""

from __future__ import annotations

import base64
import csv
import io
import math
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any, Callable, Iterator

import numpy as np
import orjson
import polars as pl
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

FORMATS = ("table", "csv", "json", "jsonl", "parquet")
TEXT_FORMATS = ("table", "csv", "json", "jsonl")
MAX_TABLE_ROWS = 1000  # a terminal table beyond this is unreadable; other formats print everything
MAX_CELL_CHARS = 200  # table cells only: eventjson and friends would otherwise fill the screen

Convert = Callable[[Any], Any]


# ---- values: polars -> JSON-ready Python -------------------------------------------------------------

def _ms_suffix(us: int) -> str:
    ms = us // 1000
    return f".{ms:03d}" if ms else ""


def _timestamp(v: datetime) -> str:
    if v.tzinfo is not None:
        v = v.astimezone(timezone.utc)
    # f-string, not strftime: strftime does not zero-pad years before 1000 on every platform.
    return (f"{v.year:04d}-{v.month:02d}-{v.day:02d} {v.hour:02d}:{v.minute:02d}:{v.second:02d}"
            f"{_ms_suffix(v.microsecond)}")


def _date(v: date) -> str:
    return f"{v.year:04d}-{v.month:02d}-{v.day:02d}"


def _time(v: time) -> str:
    return f"{v.hour:02d}:{v.minute:02d}:{v.second:02d}{_ms_suffix(v.microsecond)}"


def _interval(v: timedelta) -> str:
    """Trino's `interval day to second` text: `D HH:MM:SS.fff`, negative with a leading `-`."""
    ms = round(v / timedelta(milliseconds=1))
    sign, ms = ("-", -ms) if ms < 0 else ("", ms)
    s, ms = divmod(ms, 1000)
    m, s = divmod(s, 60)
    h, m = divmod(m, 60)
    d, h = divmod(h, 24)
    return f"{sign}{d} {h:02d}:{m:02d}:{s:02d}.{ms:03d}"


def _float(v: float) -> float | None:
    return v if math.isfinite(v) else None


def _float32(v: float) -> float | None:
    # The shortest text that reads back as the same float32: 0.1, not 0.10000000149011612.
    return float(str(np.float32(v))) if math.isfinite(v) else None


def _decimal(v: Decimal) -> int | float:
    return int(v) if v == v.to_integral_value() else float(v)


def _key_text(k: Any) -> str:
    """JSON object keys are strings: map keys of other types become their JSON text (1 -> "1")."""
    return k if isinstance(k, str) else orjson.dumps(k).decode()


def _nullable(conv: Convert | None) -> Convert | None:
    return None if conv is None else (lambda v: None if v is None else conv(v))


def _map_dtypes(dtype: pl.DataType) -> tuple[pl.DataType, pl.DataType] | None:
    """(key, value) dtypes when `dtype` is a map: polars Map, or List(Struct{key, value}) as Arrow maps arrive."""
    if isinstance(dtype, pl.Map):
        return dtype.key, dtype.value
    if isinstance(dtype, pl.List) and isinstance(dtype.inner, pl.Struct):
        fields = dtype.inner.fields
        if [f.name for f in fields] == ["key", "value"]:
            return fields[0].dtype, fields[1].dtype
    return None


_LEAF_CONVERTERS: list[tuple[type, Convert]] = [
    (pl.Datetime, _timestamp), (pl.Date, _date), (pl.Time, _time), (pl.Duration, _interval),
    (pl.Float32, _float32), (pl.Float64, _float), (pl.Decimal, _decimal),
    (pl.Binary, lambda b: base64.b64encode(b).decode()), (pl.Object, str)]


def converter(dtype: pl.DataType) -> Convert | None:
    """A function from one non-null Python value of `dtype` (as `Series.to_list` gives it) to its JSON-ready
    form, or None when the value is already JSON-ready (strings, ints, booleans)."""
    kv = _map_dtypes(dtype)
    if kv is not None:
        key_conv = _nullable(converter(kv[0])) or (lambda k: k)
        val_conv = _nullable(converter(kv[1])) or (lambda x: x)
        if isinstance(dtype, pl.Map):
            return lambda m: {_key_text(key_conv(k)): val_conv(x) for k, x in m.items()}
        return lambda entries: {_key_text(key_conv(e["key"])): val_conv(e["value"]) for e in entries}
    if isinstance(dtype, (pl.List, pl.Array)):
        inner = _nullable(converter(dtype.inner))
        return None if inner is None else (lambda xs: [inner(x) for x in xs])
    if isinstance(dtype, pl.Struct):
        convs = [(f.name, _nullable(converter(f.dtype))) for f in dtype.fields]
        if all(c is None for _, c in convs):
            return None
        return lambda d: {name: (c(d[name]) if c else d[name]) for name, c in convs}
    for cls, conv in _LEAF_CONVERTERS:
        if isinstance(dtype, cls):
            return conv
    return None


def column_values(s: pl.Series) -> list:
    """The JSON-ready values of one column (see the module docstring for the contract)."""
    if isinstance(s.dtype, pl.Datetime):
        # Vectorised: a result of millions of timestamps should not cost a Python call each.
        u = s.dt.convert_time_zone("UTC") if s.dtype.time_zone else s
        ms = u.dt.millisecond()
        base = u.dt.strftime("%Y-%m-%d %H:%M:%S")
        text = pl.select(pl.when(ms != 0).then(base + "." + ms.cast(pl.String).str.zfill(3))
                         .otherwise(base)).to_series()
        return text.to_list()
    if isinstance(s.dtype, pl.Float64):
        return pl.select(pl.when(s.is_finite()).then(s)).to_series().to_list()
    conv = _nullable(converter(s.dtype))
    values = s.to_list()
    return values if conv is None else [conv(v) for v in values]


def records(df: pl.DataFrame) -> Iterator[dict]:
    """Each row as a JSON-ready dict, keys in column order."""
    names = df.columns
    cols = [column_values(df.get_column(n)) for n in names]
    for row in zip(*cols):
        yield dict(zip(names, row))


# ---- text formats ------------------------------------------------------------------------------------

def to_jsonl(df: pl.DataFrame) -> str:
    """One compact JSON object per row, each line ending in a newline; "" for no rows."""
    return "".join(orjson.dumps(r).decode() + "\n" for r in records(df))


def to_json(df: pl.DataFrame) -> str:
    """A JSON array of the jsonl objects, one object per line; `[]` for no rows."""
    rows = [orjson.dumps(r).decode() for r in records(df)]
    return "[\n" + ",\n".join(rows) + "\n]\n" if rows else "[]\n"


def cell_text(v: Any) -> str | None:
    """A JSON-ready value as one text cell: None stays None, strings as-is, the rest as JSON text."""
    if v is None or isinstance(v, str):
        return v
    return orjson.dumps(v).decode()


def to_csv(df: pl.DataFrame) -> str:
    """RFC 4180 CSV with a header row; NULL is an empty field, nested values compact JSON text."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(df.columns)
    for r in records(df):
        w.writerow(["" if c is None else c for c in map(cell_text, r.values())])
    return buf.getvalue()


def to_parquet(df: pl.DataFrame) -> bytes:
    """The result as a Parquet file with its native types (timestamps stay timestamps, maps stay maps)."""
    buf = io.BytesIO()
    df.write_parquet(buf)
    return buf.getvalue()


def row_count_text(n: int) -> str:
    return f"{n:,} row" + ("" if n == 1 else "s")


def to_table(df: pl.DataFrame, *, width: int | None = None, color: bool = False,
             max_rows: int = MAX_TABLE_ROWS, max_cell: int = MAX_CELL_CHARS) -> str:
    """A box table for a terminal `width` columns wide (None: as wide as the data needs), NULL shown as NULL,
    long cells cut at `max_cell` characters, then a footer with the row count and, past `max_rows`, a
    note that the table shows only the first rows."""
    table = Table(box=box.SQUARE, header_style="bold", show_lines=False)
    for name in df.columns:
        table.add_column(escape(name), justify="right" if df.schema[name].is_numeric() else "left",
                         overflow="fold")
    shown = df.head(max_rows)
    for r in records(shown):
        cells = []
        for v in r.values():
            t = cell_text(v)
            if t is None:
                cells.append("[dim]NULL[/dim]")
                continue
            if len(t) > max_cell:
                t = t[:max_cell - 1] + "…"
            cells.append(escape(t))  # data, never markup: "[/x]" must print as itself
        table.add_row(*cells)
    out = io.StringIO()
    console = Console(file=out, width=width or 1_000_000, force_terminal=color, no_color=not color,
                      color_system="standard" if color else None, highlight=False, soft_wrap=False)
    if df.width:
        console.print(table)
    footer = row_count_text(df.height)
    if df.height > max_rows:
        footer = f"{footer}; showing the first {max_rows:,}: use LIMIT, or the csv or jsonl format for all"
    console.print(f"[dim]({footer})[/dim]")
    return out.getvalue()


def render(df: pl.DataFrame, fmt: str, *, width: int | None = None, color: bool = False,
           max_rows: int = MAX_TABLE_ROWS) -> str | bytes:
    """`df` in format `fmt` (one of FORMATS): text, or bytes for parquet."""
    if fmt == "table":
        return to_table(df, width=width, color=color, max_rows=max_rows)
    if fmt == "csv":
        return to_csv(df)
    if fmt == "json":
        return to_json(df)
    if fmt == "jsonl":
        return to_jsonl(df)
    if fmt == "parquet":
        return to_parquet(df)
    raise ValueError(f"unknown result format {fmt!r}: use one of {', '.join(FORMATS)}")


# ---- types ------------------------------------------------------------------------------------------

_SIMPLE_TYPES = [(pl.String, "varchar"), (pl.Categorical, "varchar"), (pl.Enum, "varchar"),
                 (pl.Boolean, "boolean"), (pl.Int8, "tinyint"), (pl.Int16, "smallint"), (pl.Int32, "integer"),
                 (pl.Int64, "bigint"), (pl.UInt8, "smallint"), (pl.UInt16, "integer"), (pl.UInt32, "bigint"),
                 (pl.UInt64, "decimal(20,0)"), (pl.Float32, "real"), (pl.Float64, "double"),
                 (pl.Date, "date"), (pl.Time, "time(3)"), (pl.Binary, "varbinary"),
                 (pl.Duration, "interval day to second"), (pl.Null, "unknown")]


def sql_type(dtype: pl.DataType) -> str:
    """The Trino type name a column shows in `.schema`: varchar, bigint, timestamp(3), map(varchar, varchar),
    array(row(...)), row(name type, ...)."""
    kv = _map_dtypes(dtype)
    if kv is not None:
        return f"map({sql_type(kv[0])}, {sql_type(kv[1])})"
    if isinstance(dtype, (pl.List, pl.Array)):
        return f"array({sql_type(dtype.inner)})"
    if isinstance(dtype, pl.Struct):
        return "row(" + ", ".join(f"{f.name} {sql_type(f.dtype)}" for f in dtype.fields) + ")"
    if isinstance(dtype, pl.Datetime):
        return "timestamp(3)"
    if isinstance(dtype, pl.Decimal):
        return f"decimal({dtype.precision},{dtype.scale})"
    for cls, name in _SIMPLE_TYPES:
        if isinstance(dtype, cls):
            return name
    return str(dtype).lower()


def schema_lines(schema: pl.Schema | dict) -> list[tuple[str, str]]:
    """(column path, type) for every column and, under each struct, every nested field by its dotted path
    (the way SQL reaches it: `useridentity.sessioncontext.sessionissuer.username`)."""
    out: list[tuple[str, str]] = []

    def walk(prefix: str, dtype: pl.DataType) -> None:
        out.append((prefix, sql_type(dtype) if not isinstance(dtype, pl.Struct) else "row"))
        if isinstance(dtype, pl.Struct):
            for f in dtype.fields:
                walk(f"{prefix}.{f.name}", f.dtype)

    for name, dtype in schema.items():
        walk(name, dtype)
    return out
