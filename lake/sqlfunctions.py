"""The Trino scalar function library, as polars expressions with Trino's semantics.

Each handler takes the sqlglot node and the translation context (`lake.sqlexpr.Ctx`) and returns a polars
expression. Handlers are registered by sqlglot node class (sqlglot parses most Trino functions into typed
nodes, e.g. `lower(x)` -> `exp.Lower`) in `FUNCTIONS`, or by lower-case name in `ANONYMOUS` for functions
sqlglot leaves as `exp.Anonymous`. Semantics to keep: NULL in -> NULL out unless Trino says otherwise,
1-based string and array positions, ISO day of week (Monday = 1), nested JSON values as JSON text.

Most functions are vectorised polars. A few run row by row in Python (`rowwise`), because polars has no
equivalent with the same semantics: the JSON functions (Trino's JSON path rules, number text, NULL for
objects in json_extract_scalar), levenshtein/hamming distance, chr/codepoint, url_encode/url_decode,
hashes, and the uncommon argument shapes of a few others (non-constant pad strings, strpos with an
instance, map() from computed arrays). They are correct first and cost about a microsecond or two a row.
Runtime failures that Trino reports as query errors (json_parse of bad text, date_parse that does not
match) raise `FunctionFailed` while the query runs; inside `try(...)` they give NULL instead.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from decimal import Decimal
from typing import Any, Callable
from urllib.parse import quote_plus, unquote, unquote_plus

import orjson
import polars as pl
from sqlglot import exp

from .sqlexpr import TS, CastFailed, cast, function_args, shift_time, string_to_timestamp

Handler = Callable[[exp.Expression, "Ctx"], pl.Expr]  # noqa: F821 - Ctx lives in sqlexpr (import cycle)

FUNCTIONS: dict[type, Handler] = {}
ANONYMOUS: dict[str, Handler] = {}
_NAMES: set[str] = set()

# Handled by the core (lake.sqlexpr / the planner), listed here so FUNCTION_NAMES is complete.
_CORE_NAMES = (
    "cast", "try_cast", "coalesce", "nullif", "if", "greatest", "least", "element_at", "current_timestamp",
    "current_date", "now", "count", "sum", "avg", "min", "max", "approx_distinct", "arbitrary", "any_value",
    "count_if", "array_agg", "max_by", "min_by", "bool_and", "bool_or", "every", "stddev", "stddev_samp",
    "variance", "var_samp", "row_number", "rank", "dense_rank", "lag", "lead", "mod",
)


class FunctionFailed(CastFailed):
    """A function that fails the query at run time, as Trino does (a CastFailed, so it is reported alike)."""


# Caps on what one function call may generate. Trino refuses lpad/rpad beyond 2^31-1 characters and
# repeat/sequence beyond 10,000 entries; Lake's string cap is far lower because one 97-character query
# asking for lpad(x, 2000000000) would otherwise build gigabytes per row (issue 15). A literal size past a
# cap is refused while the query is translated, before anything runs; a computed one fails the query.
MAX_GENERATED_CHARS = 1_048_576
MAX_GENERATED_ENTRIES = 10_000


def register(*keys: type | str, names: tuple[str, ...] = ()) -> Callable[[Handler], Handler]:
    """Register a handler for sqlglot node classes and/or lower-case anonymous function names; `names` are
    the SQL names a node class stands for (for FUNCTION_NAMES)."""
    def deco(fn: Handler) -> Handler:
        for k in keys:
            if isinstance(k, str):
                ANONYMOUS[k.lower()] = fn
                _NAMES.add(k.lower())
            else:
                FUNCTIONS[k] = fn
        _NAMES.update(n.lower() for n in names)
        return fn
    return deco


# ---- shared helpers ---------------------------------------------------------------------------------

_MISS = object()


def rowwise(fn: Callable[..., Any], args: list[pl.Expr], dtype: pl.DataType, *, lenient: bool = False) -> pl.Expr:
    """The slow path: `fn` applied in Python to each row's argument values; NULL in any argument gives NULL
    without calling `fn`. Results are memoised per batch (log fields repeat a lot). `lenient` (inside try()):
    a row whose `fn` raises FunctionFailed gives NULL instead of failing the query."""
    if lenient:
        strict_fn = fn

        def fn(*row: Any) -> Any:
            try:
                return strict_fn(*row)
            except FunctionFailed:
                return None

    def run(series: list[pl.Series]) -> pl.Series:
        cols = [s.to_list() for s in series]
        n = max(len(c) for c in cols)
        cols = [c * n if len(c) == 1 and n != 1 else c for c in cols]
        memo: dict = {}
        out = []
        for row in zip(*cols):
            if None in row:
                out.append(None)
                continue
            try:
                hit = memo.get(row, _MISS)
            except TypeError:  # a list argument: not hashable
                out.append(fn(*row))
                continue
            if hit is _MISS:
                hit = memo[row] = fn(*row)
            out.append(hit)
        return pl.Series(out, dtype=dtype)
    return pl.map_batches(args, run, return_dtype=dtype, is_elementwise=True)


def fail_unless(ok: pl.Expr, value: pl.Expr, message: str, lenient: bool = False) -> pl.Expr:
    """`value`, but the query fails with `message` (a FunctionFailed) if `ok` is false on any row; NULL on
    those rows instead when `lenient` (inside try())."""
    if lenient:
        return pl.when(ok).then(value)

    def check(s: pl.Series) -> pl.Series:
        s = s.fill_null(True)
        if not s.all():
            raise FunctionFailed(message)
        return s
    return pl.when(ok.map_batches(check, return_dtype=pl.Boolean, is_elementwise=True)).then(value)


def _lenient(node: exp.Expression) -> bool:
    """Inside try(...): run-time failures give NULL."""
    return bool(node.meta.get("lake_try"))


def checked(node: exp.Expression, original: pl.Expr, parsed: pl.Expr, message: str) -> pl.Expr:
    """A conversion that fails the query (Trino) when a non-NULL input gives NULL, unless inside try()."""
    return fail_unless(original.is_null() | parsed.is_not_null(), parsed, message, _lenient(node))


def _arg(node: exp.Expression, key: str) -> exp.Expression | None:
    return node.args.get(key)


def _const(node: exp.Expression | None, ctx) -> Any:
    """A constant argument's value, or _MISS when it is not a constant."""
    if node is None:
        return _MISS
    try:
        return ctx.literal_value(node)
    except Exception:  # noqa: BLE001 - not a constant
        return _MISS


def _is_list(t: pl.DataType) -> bool:
    return isinstance(t, pl.List)


def _is_map(t: pl.DataType) -> bool:
    return _is_list(t) and isinstance(t.inner, pl.Struct) and [f.name for f in t.inner.fields] == ["key", "value"]


def _any_null(*es: pl.Expr) -> pl.Expr:
    return pl.any_horizontal([e.is_null() for e in es])


def _null_if_any(value: pl.Expr, *inputs: pl.Expr) -> pl.Expr:
    return pl.when(_any_null(*inputs)).then(None).otherwise(value)


def _i64(e: pl.Expr) -> pl.Expr:
    return e.cast(pl.Int64)


def _unit(node: exp.Expression | None, ctx, what: str) -> str:
    """A date/time unit argument ('day', DAY) as an upper-case singular name."""
    if node is None:
        raise ctx.error(node, f"{what} needs a unit")
    v = node.name if isinstance(node, (exp.Var, exp.Identifier, exp.Column)) else _const(node, ctx)
    if not isinstance(v, str):
        raise ctx.error(node, f"{what}: the unit must be a constant string such as 'day'")
    u = v.strip().upper()
    return u[:-1] if u.endswith("S") and u not in ("S",) else u


def _typed(node: exp.Expression, ctx, want: pl.DataType) -> pl.Expr:
    """ctx.expr(node), an untyped NULL given the type the function expects (polars needs one)."""
    e = ctx.expr(node)
    return e.cast(want) if ctx.dtype(e) == pl.Null else e


def _str(node: exp.Expression, ctx) -> pl.Expr:
    return _typed(node, ctx, pl.String)


_MAP = pl.List(pl.Struct({"key": pl.String, "value": pl.String}))


def _arr(node: exp.Expression, ctx) -> pl.Expr:
    return _typed(node, ctx, pl.List(pl.Null))


def _temporal(e: pl.Expr, ctx) -> pl.Expr:
    """A date/timestamp argument; strings in the usual timestamp forms are read as UTC timestamps."""
    t = ctx.dtype(e)
    if t == pl.String:
        return string_to_timestamp(e)
    if t == pl.Null:
        return e.cast(TS)
    return e


# ---- strings --------------------------------------------------------------------------------------------

@register(exp.Lower, names=("lower",))
def _lower(node, ctx):
    return _str(node.this, ctx).str.to_lowercase()


@register(exp.Upper, names=("upper",))
def _upper(node, ctx):
    return _str(node.this, ctx).str.to_uppercase()


@register(exp.Length, names=("length",))
def _length(node, ctx):
    return _str(node.this, ctx).str.len_chars().cast(pl.Int64)


@register(exp.Substring, names=("substr", "substring"))
def _substring(node, ctx):
    s, start = _str(node.this, ctx), _i64(ctx.expr(node.args["start"]))
    n = _i64(s.str.len_chars())
    offset = pl.when(start > 0).then(start - 1).otherwise(n + start)
    empty = (start == 0) | (offset < 0)
    inputs = [s, start]
    if _arg(node, "length") is not None:
        length = _i64(ctx.expr(node.args["length"]))
        inputs.append(length)
        empty = empty | (length <= 0)
        sliced = s.str.slice(offset.clip(lower_bound=0), length.clip(lower_bound=0))
    else:
        sliced = s.str.slice(offset.clip(lower_bound=0))
    return pl.when(_any_null(*inputs)).then(None).when(empty).then(pl.lit("")).otherwise(sliced)


@register(exp.SplitPart, names=("split_part",))
def _split_part(node, ctx):
    s, delim = _str(node.this, ctx), _str(node.args["delimiter"], ctx)
    idx_node = node.args["part_index"]
    idx = _const(idx_node, ctx)
    if isinstance(idx, int) and idx <= 0:
        raise ctx.error(idx_node, "split_part: the index must be greater than zero")
    i = _i64(ctx.expr(idx_node))
    part = s.str.split(delim).list.get(pl.when(i > 0).then(i - 1).otherwise(None), null_on_oob=True)
    return _null_if_any(part, delim, i)


@register(exp.Split, names=("split",))
def _split(node, ctx):
    s, delim = _str(node.this, ctx), _str(node.expression, ctx)
    limit_node = _arg(node, "limit")
    if limit_node is None:
        return _null_if_any(s.str.split(delim), delim)
    limit, d = _const(limit_node, ctx), _const(node.expression, ctx)
    if not isinstance(limit, int) or not isinstance(d, str):
        raise ctx.error(node, "split: the delimiter and limit must be constants")
    if limit <= 0:
        raise ctx.error(limit_node, "split: the limit must be positive")
    parts = s.str.splitn(d, limit)
    listed = pl.concat_list([parts.struct.field(f"field_{i}") for i in range(limit)]).list.drop_nulls()
    return _null_if_any(listed, s)


@register(exp.Replace, names=("replace",))
def _replace(node, ctx):
    s = _str(node.this, ctx)
    r = _arg(node, "replacement")
    search, repl = _const(node.expression, ctx), "" if r is None else _const(r, ctx)
    if isinstance(search, str) and isinstance(repl, str):
        return s.str.replace_all(search, repl, literal=True)
    if search is None or repl is None:
        return pl.lit(None, dtype=pl.String)
    args = [s, _str(node.expression, ctx), pl.lit("") if r is None else _str(r, ctx)]
    return rowwise(lambda text, a, b: text.replace(a, b), args, pl.String)


@register(exp.Concat, names=("concat",))
def _concat(node, ctx):
    args = [ctx.expr(a) for a in node.expressions]
    types = [ctx.dtype(a) for a in args]
    if any(_is_list(t) for t in types):
        return _null_if_any(pl.concat_list(args), *args)
    return pl.concat_str([a if t == pl.String else cast(a, t, pl.String, False) for a, t in zip(args, types)],
                         ignore_nulls=False)


def _strpos_py(s: str, sub: str, instance: int) -> int:
    if instance == 0:
        raise FunctionFailed("strpos: the instance must be a positive or negative number")
    if sub == "":
        return 1
    if instance > 0:
        i, found = -1, 0
        while found < instance:
            i = s.find(sub, i + 1)
            if i < 0:
                return 0
            found += 1
        return i + 1
    i, found = len(s), 0
    while found < -instance:  # Java's lastIndexOf(sub, i - 1): occurrences may overlap
        if i - 1 < 0:
            return 0
        i = s.rfind(sub, 0, i - 1 + len(sub))
        if i < 0:
            return 0
        found += 1
    return i + 1


@register(exp.StrPosition, names=("strpos", "position"))
def _strpos(node, ctx):
    s, sub = _str(node.this, ctx), _str(node.args["substr"], ctx)
    occ = _arg(node, "occurrence")
    if occ is not None and _const(occ, ctx) != 1:
        return rowwise(_strpos_py, [s, sub, _i64(ctx.expr(occ))], pl.Int64, lenient=_lenient(node))
    before = _i64(s.str.split(sub).list.first().str.len_chars())
    found = s.str.contains(sub, literal=True)
    pos = pl.when(sub.str.len_bytes() == 0).then(1).when(found).then(before + 1).otherwise(0)
    return _null_if_any(pos, s, sub).cast(pl.Int64)


@register(exp.Trim, names=("trim", "ltrim", "rtrim"))
def _trim(node, ctx):
    s = _str(node.this, ctx)
    chars = _arg(node, "expression")
    where = str(node.args.get("position") or "BOTH").upper()
    if chars is not None:
        c = _const(chars, ctx)
        if not isinstance(c, str):
            raise ctx.error(chars, "trim: the characters to remove must be a constant string")
        c_arg: str | None = c
    else:
        c_arg = None
    if where == "LEADING":
        return s.str.strip_chars_start(c_arg)
    if where == "TRAILING":
        return s.str.strip_chars_end(c_arg)
    return s.str.strip_chars(c_arg)


def _pad_py(left: bool):
    def pad(s: str, size: int, fill: str) -> str:
        if size < 0:
            raise FunctionFailed("lpad/rpad: the target size must be non-negative")
        if size > MAX_GENERATED_CHARS:
            raise FunctionFailed(f"lpad/rpad: the target size {size} is larger than Lake's limit of "
                                 f"{MAX_GENERATED_CHARS} characters per value")
        if fill == "":
            raise FunctionFailed("lpad/rpad: the padding string must not be empty")
        if len(s) >= size:
            return s[:size]
        padding = (fill * (size // len(fill) + 1))[: size - len(s)]
        return padding + s if left else s + padding
    return pad


@register(exp.Pad, names=("lpad", "rpad"))
def _pad(node, ctx):
    s = _str(node.this, ctx)
    left = bool(node.args.get("is_left"))
    fill_node = _arg(node, "fill_pattern")
    size, fill = _const(node.expression, ctx), _const(fill_node, ctx) if fill_node is not None else " "
    if isinstance(size, int) and isinstance(fill, str):
        if size < 0 or fill == "":
            raise ctx.error(node, "lpad/rpad: the size must be non-negative and the padding string not empty")
        if size > MAX_GENERATED_CHARS:  # refused before the padding literal is built (it would be `size` long)
            raise ctx.error(node, f"lpad/rpad: the target size {size} is larger than Lake's limit of "
                                  f"{MAX_GENERATED_CHARS} characters per value")
        n = _i64(s.str.len_chars())
        padding = pl.lit((fill * (size // len(fill) + 1))[:size]).str.slice(0, (size - n).clip(lower_bound=0))
        padded = pl.concat_str([padding, s] if left else [s, padding])
        return pl.when(n >= size).then(s.str.slice(0, size)).otherwise(padded)
    fill_e = _str(fill_node, ctx) if fill_node is not None else pl.lit(" ")
    return rowwise(_pad_py(left), [s, _i64(ctx.expr(node.expression)), fill_e], pl.String, lenient=_lenient(node))


@register(exp.Reverse, names=("reverse",))
def _reverse(node, ctx):
    e = ctx.expr(node.this)
    return e.list.reverse() if _is_list(ctx.dtype(e)) else _str(node.this, ctx).str.reverse()


@register(exp.StartsWith, names=("starts_with",))
def _starts_with(node, ctx):
    s, prefix = _str(node.this, ctx), _str(node.expression, ctx)
    return _null_if_any(s.str.starts_with(prefix), prefix)


def _regex(node: exp.Expression | None, ctx, what: str) -> str:
    """A constant regular expression, checked now so a bad one is a one-line error naming the function."""
    p = _const(node, ctx)
    if not isinstance(p, str):
        raise ctx.error(node, f"{what}: the pattern must be a constant string")
    try:
        pl.select(pl.lit("").str.contains(p))
    except Exception as e:  # noqa: BLE001 - polars' regex compile error
        detail = [ln.strip()[7:] for ln in str(e).splitlines() if ln.strip().startswith("error: ")]
        raise ctx.error(node, f"{what}: invalid regular expression {p!r}"
                              f"{': ' + detail[0] if detail else ''}") from None
    return p


def _group_count(pattern: str) -> int:
    return len(pl.select(pl.lit("").str.extract_groups(pattern)).to_series().dtype.fields)


@register(exp.RegexpLike, names=("regexp_like",))
def _regexp_like(node, ctx):
    return _str(node.this, ctx).str.contains(_regex(node.expression, ctx, "regexp_like"))


def _group_arg(node, ctx, pattern: str, what: str) -> int:
    g_node = _arg(node, "group")
    g = 0 if g_node is None else _const(g_node, ctx)
    if not isinstance(g, int) or g < 0:
        raise ctx.error(g_node, f"{what}: the group must be a non-negative constant")
    n = _group_count(pattern)
    if g > n:
        raise ctx.error(g_node, f"{what}: pattern has {n} groups, cannot access group {g}")
    return g


@register(exp.RegexpExtract, names=("regexp_extract",))
def _regexp_extract(node, ctx):
    p = _regex(node.expression, ctx, "regexp_extract")
    return _str(node.this, ctx).str.extract(p, _group_arg(node, ctx, p, "regexp_extract"))


@register(exp.RegexpExtractAll, names=("regexp_extract_all",))
def _regexp_extract_all(node, ctx):
    p = _regex(node.expression, ctx, "regexp_extract_all")
    g = _group_arg(node, ctx, p, "regexp_extract_all")
    matches = _str(node.this, ctx).str.extract_all(p)
    # group n: the pattern applied again to each whole match (same result unless the pattern looks around)
    return matches if g == 0 else matches.list.eval(pl.element().str.extract(p, g))


def java_replacement(r: str, groups: int) -> str:
    """A Java regex replacement (`$1`, `${name}`, `\\$`) in the syntax of polars' (Rust) replace_all."""
    out, i = [], 0
    while i < len(r):
        c = r[i]
        if c == "\\":
            if i + 1 >= len(r):
                raise ValueError("character to be escaped is missing")
            out.append("$$" if r[i + 1] == "$" else r[i + 1])
            i += 2
        elif c == "$":
            if i + 1 < len(r) and r[i + 1] == "{":
                j = r.find("}", i)
                if j < 0:
                    raise ValueError("named capturing group is missing trailing '}'")
                out.append(r[i:j + 1])
                i = j + 1
                continue
            j = i + 1
            if j >= len(r) or not r[j].isdigit():
                raise ValueError("illegal group reference")
            num = r[j]
            j += 1
            while j < len(r) and r[j].isdigit() and int(num + r[j]) <= groups:
                num += r[j]
                j += 1
            if int(num) > groups:
                raise ValueError(f"no group {num}")
            out.append("${" + num + "}")
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)


@register(exp.RegexpReplace, names=("regexp_replace",))
def _regexp_replace(node, ctx):
    p = _regex(node.expression, ctx, "regexp_replace")
    r_node = _arg(node, "replacement")
    r = "" if r_node is None else _const(r_node, ctx)
    if not isinstance(r, str):
        raise ctx.error(r_node, "regexp_replace: the replacement must be a constant string")
    try:
        rust = java_replacement(r, _group_count(p))
    except ValueError as e:
        raise ctx.error(r_node, f"regexp_replace: {e} in replacement {r!r}") from None
    return _str(node.this, ctx).str.replace_all(p, rust)


@register(exp.RegexpCount, names=("regexp_count",))
def _regexp_count(node, ctx):
    return _i64(_str(node.this, ctx).str.count_matches(_regex(node.expression, ctx, "regexp_count")))


def _chr_py(n: int) -> str:
    try:
        return chr(n)
    except (ValueError, OverflowError):
        raise FunctionFailed(f"chr: not a valid Unicode code point: {n}") from None


@register(exp.Chr, names=("chr",))
def _chr(node, ctx):
    return rowwise(_chr_py, [_i64(ctx.expr(node.expressions[0]))], pl.String, lenient=_lenient(node))


def _codepoint_py(s: str) -> int:
    if len(s) != 1:
        raise FunctionFailed(f"codepoint: the argument must be a single character, not {s[:20]!r}")
    return ord(s)


@register("codepoint")
def _codepoint(node, ctx):
    return rowwise(_codepoint_py, [_str(node.expressions[0], ctx)], pl.Int64, lenient=_lenient(node))


def _levenshtein_py(a: str, b: str) -> int:
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


@register(exp.Levenshtein, names=("levenshtein_distance",))
def _levenshtein(node, ctx):
    return rowwise(_levenshtein_py, [_str(node.this, ctx), _str(node.expression, ctx)], pl.Int64)


def _hamming_py(a: str, b: str) -> int:
    if len(a) != len(b):
        raise FunctionFailed("hamming_distance: the two strings must have the same length")
    return sum(x != y for x, y in zip(a, b))


@register("hamming_distance")
def _hamming(node, ctx):
    return rowwise(_hamming_py, [_str(a, ctx) for a in node.expressions], pl.Int64, lenient=_lenient(node))


# ---- binary (varbinary is polars Binary) ---------------------------------------------------------------

@register(exp.Encode, names=("to_utf8",))
def _to_utf8(node, ctx):
    return _str(node.this, ctx).cast(pl.Binary)


def _from_utf8_py(b: bytes) -> str:
    return b.decode("utf-8", errors="replace")


@register(exp.Decode, names=("from_utf8",))
def _from_utf8(node, ctx):
    return rowwise(_from_utf8_py, [ctx.expr(node.this)], pl.String)


@register(exp.Hex, names=("to_hex",))
def _to_hex(node, ctx):
    e = ctx.expr(node.this)
    if ctx.dtype(e) in (pl.String, pl.Null):
        e = e.cast(pl.Binary)
    return e.bin.encode("hex").str.to_uppercase()


@register(exp.Unhex, names=("from_hex",))
def _from_hex(node, ctx):
    e = _str(node.this, ctx)
    return checked(node, e, e.str.decode("hex", strict=False), "from_hex: not a hexadecimal string")


def _digest(algorithm: str):
    def handler(node, ctx):
        e = ctx.expr(node.this)
        if ctx.dtype(e) == pl.String:
            e = e.cast(pl.Binary)
        return rowwise(lambda b: hashlib.new(algorithm, b).digest(), [e], pl.Binary)
    return handler


register(exp.MD5Digest, names=("md5",))(_digest("md5"))
register(exp.SHA, names=("sha1",))(_digest("sha1"))


@register(exp.SHA2Digest, names=("sha256", "sha512"))
def _sha2(node, ctx):
    length = _const(_arg(node, "length"), ctx)
    return _digest(f"sha{length if length is not _MISS else 256}")(node, ctx)


# ---- URLs (java.net.URI's parts, RFC 3986 regular expression) ------------------------------------------

_URL = r"^(?:([^:/?#]+):)?(?://([^/?#]*))?([^?#]*)(?:\?([^#]*))?(?:#(.*))?$"
_URL_INVALID = r"[\s\"<>\\^`{|}]"


def _url_part(e: pl.Expr, group: int, decode: bool = False) -> pl.Expr:
    """One part of a URL; NULL when the text is not a valid URI (java.net.URI refuses spaces etc.)."""
    part = e.str.extract(_URL, group)
    if decode:
        encoded = pl.when(part.str.contains("%", literal=True)).then(part)
        part = pl.coalesce(rowwise(unquote, [encoded], pl.String), part)
    return pl.when(e.str.contains(_URL_INVALID)).then(None).otherwise(part)


def _authority(e: pl.Expr) -> pl.Expr:
    return _url_part(e, 2).str.replace(r"^.*@", "")


@register("url_extract_host")
def _url_host(node, ctx):
    host = _authority(_str(node.expressions[0], ctx)).str.replace(r":\d*$", "")
    return pl.when(host == "").then(None).otherwise(host)


@register("url_extract_port")
def _url_port(node, ctx):
    return _authority(_str(node.expressions[0], ctx)).str.extract(r":(\d+)$", 1).cast(pl.Int64, strict=False)


@register("url_extract_protocol")
def _url_protocol(node, ctx):
    return _url_part(_str(node.expressions[0], ctx), 1)


def _opaque(e: pl.Expr) -> pl.Expr:
    """`mailto:x@y` and the like: a scheme not followed by '/' has no path or query in java.net.URI."""
    return e.str.contains(r"^[^:/?#]+:[^/]")


@register("url_extract_path")
def _url_path(node, ctx):
    e = _str(node.expressions[0], ctx)
    return pl.when(_opaque(e)).then(None).otherwise(_url_part(e, 3, decode=True))


@register("url_extract_query")
def _url_query(node, ctx):
    e = _str(node.expressions[0], ctx)
    return pl.when(_opaque(e)).then(None).otherwise(_url_part(e, 4, decode=True))


@register("url_extract_fragment")
def _url_fragment(node, ctx):
    return _url_part(_str(node.expressions[0], ctx), 5, decode=True)


@register("url_extract_parameter")
def _url_parameter(node, ctx):
    e = _str(node.expressions[0], ctx)
    name = _const(node.expressions[1], ctx)
    if not isinstance(name, str):
        raise ctx.error(node.expressions[1], "url_extract_parameter: the parameter name must be a constant")
    query = pl.when(_opaque(e)).then(None).otherwise(_url_part(e, 4))
    pat = r"(?:^|&)" + re.escape(name) + r"(?:=([^&]*))?(?:&|$)"
    return pl.when(query.str.contains(pat)).then(query.str.extract(pat, 1).fill_null("")).otherwise(None)


def _url_encode_py(s: str) -> str:
    return quote_plus(s, safe="*").replace("~", "%7E")  # java.net.URLEncoder's set


@register("url_encode")
def _url_encode(node, ctx):
    return rowwise(_url_encode_py, [_str(node.expressions[0], ctx)], pl.String)


@register("url_decode")
def _url_decode(node, ctx):
    return rowwise(unquote_plus, [_str(node.expressions[0], ctx)], pl.String)


# ---- math ---------------------------------------------------------------------------------------------

def _num(e: pl.Expr, ctx) -> tuple[pl.Expr, pl.DataType]:
    t = ctx.dtype(e)
    if t == pl.Null:
        return e.cast(pl.Float64), pl.Float64
    return e, t


@register(exp.Abs, names=("abs",))
def _abs(node, ctx):
    return _num(ctx.expr(node.this), ctx)[0].abs()


def _integral(method: str):
    def handler(node, ctx):
        e, t = _num(ctx.expr(node.this), ctx)
        return e if t.is_integer() else getattr(e, method)()
    return handler


register(exp.Ceil, names=("ceil", "ceiling"))(_integral("ceil"))
register(exp.Floor, names=("floor",))(_integral("floor"))


def _rounding(name: str, integer: Callable[[pl.Expr, int], pl.Expr], double: Callable[[pl.Expr], pl.Expr]):
    """round/truncate(x[, d]): integers keep their type (d < 0 works on tens, hundreds...); doubles scale by 10^d,
    apply `double` to |x| * 10^d and put the sign back; NaN and infinities pass through."""
    def handler(node, ctx):
        e, t = _num(ctx.expr(node.this), ctx)
        d_node = node.args.get("decimals")
        d = 0 if d_node is None else _const(d_node, ctx)
        if not isinstance(d, int):
            raise ctx.error(d_node, f"{name}: the number of digits must be a constant integer")
        if t.is_integer():
            return e if d >= 0 else e.sign() * integer(e.abs(), 10 ** -d)
        factor = 10.0 ** d
        scaled = e.abs() * factor
        done = double(scaled) / factor
        exact = e.is_nan() | e.is_infinite() | (scaled >= 2.0 ** 52)  # already integral: nothing to round
        return pl.when(exact).then(e).when(e < 0).then(-done).otherwise(done)
    return handler


# Trino: Math.round(|x| * 10^d) / 10^d with the sign put back, i.e. half away from zero
register(exp.Round, names=("round",))(
    _rounding("round", lambda a, f: (a + f // 2) // f * f, lambda a: (a + 0.5).floor()))
register(exp.Trunc, names=("truncate",))(_rounding("truncate", lambda a, f: a // f * f, lambda a: a.floor()))


def _float_fn(fn: Callable[[pl.Expr], pl.Expr]):
    def handler(node, ctx):
        return fn(ctx.expr(node.this).cast(pl.Float64))
    return handler


register(exp.Sqrt, names=("sqrt",))(_float_fn(lambda e: e.sqrt()))
register(exp.Cbrt, names=("cbrt",))(_float_fn(lambda e: e.cbrt()))
register(exp.Ln, names=("ln",))(_float_fn(lambda e: e.log()))
register(exp.Exp, names=("exp",))(_float_fn(lambda e: e.exp()))
register(exp.IsNan, names=("is_nan",))(_float_fn(lambda e: e.is_nan()))
register("is_finite")(lambda node, ctx: ctx.args(node)[0].cast(pl.Float64).is_finite())
register("is_infinite")(lambda node, ctx: ctx.args(node)[0].cast(pl.Float64).is_infinite())


@register(exp.Log, names=("log", "log2", "log10"))
def _log(node, ctx):
    if node.expression is None:
        raise ctx.error(node, "log() takes a base and a value: use ln(x) or log10(x)")
    base, x = ctx.expr(node.this).cast(pl.Float64), ctx.expr(node.expression).cast(pl.Float64)
    b = _const(node.this, ctx)
    if b == 10:
        return x.log10()
    if isinstance(b, (int, float)):
        return x.log(float(b))
    return x.log() / base.log()


@register(exp.Pow, names=("power", "pow"))
def _pow(node, ctx):
    return ctx.expr(node.this).cast(pl.Float64).pow(ctx.expr(node.expression).cast(pl.Float64))


@register(exp.Sign, names=("sign",))
def _sign(node, ctx):
    e, t = _num(ctx.expr(node.this), ctx)
    return e.sign().cast(t) if not t.is_float() else pl.when(e.is_nan()).then(e).otherwise(e.sign().cast(t))


register(exp.Pi, names=("pi",))(lambda node, ctx: pl.lit(math.pi, dtype=pl.Float64))
register("e")(lambda node, ctx: pl.lit(math.e, dtype=pl.Float64))
register("infinity")(lambda node, ctx: pl.lit(math.inf, dtype=pl.Float64))
register("nan")(lambda node, ctx: pl.lit(math.nan, dtype=pl.Float64))


# ---- type and error handling ---------------------------------------------------------------------------

def trino_type(t: pl.DataType) -> str:
    """The Trino name of a polars type as the engine uses it (map<string,string> is a list of key/value)."""
    if _is_map(t):
        k, v = (f.dtype for f in t.inner.fields)
        return f"map({trino_type(k)}, {trino_type(v)})"
    if isinstance(t, pl.List):
        return f"array({trino_type(t.inner)})"
    if isinstance(t, pl.Struct):
        return "row(" + ", ".join(f"{f.name} {trino_type(f.dtype)}" for f in t.fields) + ")"
    if isinstance(t, pl.Datetime):
        p = {"ms": 3, "us": 6, "ns": 9}[t.time_unit]
        return f"timestamp({p}) with time zone" if t.time_zone else f"timestamp({p})"
    if isinstance(t, pl.Decimal):
        return f"decimal({t.precision},{t.scale})"
    simple = {pl.String: "varchar", pl.Int8: "tinyint", pl.Int16: "smallint", pl.Int32: "integer",
              pl.Int64: "bigint", pl.UInt8: "smallint", pl.UInt16: "integer", pl.UInt32: "bigint",
              pl.UInt64: "bigint", pl.Float32: "real", pl.Float64: "double", pl.Boolean: "boolean",
              pl.Date: "date", pl.Binary: "varbinary", pl.Null: "unknown", pl.Time: "time"}
    for k, v in simple.items():
        if t == k:
            return v
    return str(t).lower()


@register(exp.Typeof, names=("typeof",))
def _typeof(node, ctx):
    e = ctx.expr(node.this)
    name = pl.lit(trino_type(ctx.dtype(e)), dtype=pl.String)
    return pl.when(e.is_null() | e.is_not_null()).then(name)  # one value a row, like any other column


@register(exp.Try, names=("try",))
def _try(node, ctx):
    """try(x): failures inside x give NULL. Casts become TRY_CASTs; functions that fail the query at run
    time (json_parse, date_parse, ...) see the `lake_try` mark and return NULL instead."""
    def lenient(n: exp.Expression) -> exp.Expression:
        if type(n) is exp.Cast:
            n = exp.TryCast(**n.args)
        n.meta["lake_try"] = True
        return n
    return ctx.expr(node.this.copy().transform(lenient))


# ---- maps and arrays -------------------------------------------------------------------------------------

@register(exp.MapKeys, names=("map_keys",))
def _map_keys(node, ctx):
    return _typed(node.this, ctx, _MAP).list.eval(pl.element().struct.field("key"))


@register("map_values")
def _map_values(node, ctx):
    return _typed(node.expressions[0], ctx, _MAP).list.eval(pl.element().struct.field("value"))


@register("map_entries")
def _map_entries(node, ctx):
    return _typed(node.expressions[0], ctx, _MAP)


@register(exp.ArraySize, names=("cardinality",))
def _cardinality(node, ctx):
    return _i64(_arr(node.this, ctx).list.len())


@register(exp.Array)
def _array(node, ctx):
    items = [ctx.expr(a) for a in node.expressions]
    if not items:
        return pl.lit(pl.Series([[]], dtype=pl.List(pl.Null)))
    types = [ctx.dtype(e) for e in items]
    known = next((t for t in types if t != pl.Null), pl.Null)
    items = [e.cast(known) if t == pl.Null else e for e, t in zip(items, types)]
    # concat_list would splice list items together: an array of arrays wraps each one first
    return pl.concat_list([e.repeat_by(1) if _is_list(known) else e for e in items])


def _map_zip(keys: list, values: list) -> list:
    if keys is None or values is None:
        return None
    if len(keys) != len(values):
        raise FunctionFailed("map: the key and value arrays must have the same length")
    if any(k is None for k in keys):
        raise FunctionFailed("map: map keys must not be NULL")
    if len(set(keys)) != len(keys):
        raise FunctionFailed("map: duplicate map keys are not allowed")
    return [{"key": k, "value": v} for k, v in zip(keys, values)]


@register(exp.Map, names=("map",))
def _map(node, ctx):
    keys, values = node.args.get("keys"), node.args.get("values")
    if keys is None and values is None:
        return pl.lit(pl.Series([[]], dtype=_MAP))
    if isinstance(keys, exp.Array) and isinstance(values, exp.Array):
        if len(keys.expressions) != len(values.expressions):
            raise ctx.error(node, "map: the key and value arrays must have the same length")
        consts = [_const(k, ctx) for k in keys.expressions]
        if any(c is None for c in consts):
            raise ctx.error(node, "map: map keys must not be NULL")
        known = [c for c in consts if c is not _MISS]
        if len(set(known)) != len(known):
            raise ctx.error(node, "map: duplicate map keys are not allowed")
        return pl.concat_list([pl.struct(key=ctx.expr(k), value=ctx.expr(v))
                               for k, v in zip(keys.expressions, values.expressions)])
    k, v = ctx.expr(keys), ctx.expr(values)
    kt, vt = ctx.dtype(k), ctx.dtype(v)
    dtype = pl.List(pl.Struct({"key": kt.inner if _is_list(kt) else pl.String,
                               "value": vt.inner if _is_list(vt) else pl.String}))
    return rowwise(_map_zip, [k, v], dtype, lenient=_lenient(node))


@register(exp.ArrayContains, names=("contains",))
def _contains(node, ctx):
    arr, x = _arr(node.this, ctx), ctx.expr(node.expression)
    has_null = arr.list.eval(pl.element().is_null()).list.any()
    return pl.when(arr.is_null() | x.is_null()).then(None).when(arr.list.contains(x)).then(True) \
        .when(has_null).then(None).otherwise(False)


@register(exp.ArrayDistinct, names=("array_distinct",))
def _array_distinct(node, ctx):
    return _arr(node.this, ctx).list.unique(maintain_order=True)


@register(exp.ArraySort, names=("array_sort",))
def _array_sort(node, ctx):
    if _arg(node, "expression") is not None:
        raise ctx.error(node, "array_sort with a comparator lambda is not supported")
    return _arr(node.this, ctx).list.sort(nulls_last=True)


def _array_extreme(which: str):
    def handler(node, ctx):
        arr = _arr(node.this, ctx)
        has_null = arr.list.eval(pl.element().is_null()).list.any()
        return pl.when(has_null).then(None).otherwise(getattr(arr.list, which)())
    return handler


register(exp.ArrayMax, names=("array_max",))(_array_extreme("max"))
register(exp.ArrayMin, names=("array_min",))(_array_extreme("min"))


@register(exp.ArraySlice, names=("slice",))
def _slice(node, ctx):
    arr = _arr(node.this, ctx)
    start_node, len_node = node.args.get("start"), node.args.get("end")
    if len_node is None:
        raise ctx.error(node, "slice takes an array, a start and a length")
    if _const(start_node, ctx) == 0:
        raise ctx.error(start_node, "slice: SQL array indices start at 1")
    start, length = _i64(ctx.expr(start_node)), _i64(ctx.expr(len_node))
    n = _i64(arr.list.len())
    offset = pl.when(start > 0).then(start - 1).otherwise(n + start)
    sliced = arr.list.slice(offset.clip(lower_bound=0), length.clip(lower_bound=0))
    empty = (offset < 0) | (length <= 0) | (start == 0)
    return pl.when(_any_null(arr, start, length)).then(None).when(empty).then(arr.list.head(0)).otherwise(sliced)


def _lambda(node: exp.Expression, ctx, what: str, params: dict[str, tuple[pl.Expr, pl.DataType]],
            elem: pl.DataType) -> pl.Expr:
    """Translate a lambda body with its parameters bound to list elements (polars list.eval)."""
    if not isinstance(node, exp.Lambda):
        raise ctx.error(node, f"{what} takes a lambda such as x -> x > 1")
    names = [p.name.lower() for p in node.expressions]
    if len(names) != len(params):
        raise ctx.error(node, f"{what}: the lambda takes {len(params)} parameter(s)")
    for col in node.this.find_all(exp.Column):
        if col.table or col.name.lower() not in names:
            raise ctx.error(col, f"{what}: a lambda can only use its parameters and constants, not "
                                 f"{col.sql(dialect='trino')}")
    bound = {n: v for n, v in zip(names, params.values())}
    bound["\0element"] = (pl.element(), elem)  # last binding: the list element type ctx.dtype evaluates with
    return ctx.bind(bound).expr(node.this)


def _element_lambda(node: exp.Expression, arr: pl.Expr, ctx, what: str) -> pl.Expr:
    t = ctx.dtype(arr)
    elem = t.inner if _is_list(t) else pl.Null
    return _lambda(node, ctx, what, {"x": (pl.element(), elem)}, elem)


@register(exp.Transform, names=("transform",))
def _transform(node, ctx):
    arr = _arr(node.this, ctx)
    return arr.list.eval(_element_lambda(node.expression, arr, ctx, "transform"))


@register(exp.ArrayFilter, names=("filter",))
def _filter(node, ctx):
    arr = _arr(node.this, ctx)
    pred = _element_lambda(node.expression, arr, ctx, "filter")
    return arr.list.eval(pl.element().filter(pred.fill_null(False)))


_FLIP = {exp.GT: exp.LT, exp.LT: exp.GT, exp.GTE: exp.LTE, exp.LTE: exp.GTE, exp.EQ: exp.EQ, exp.NEQ: exp.NEQ}


def _outer_comparison(lam: exp.Expression, arr: pl.Expr, ctx, kind: str) -> pl.Expr | None:
    """`any/all/none_match(arr, x -> x OP e)` where `e` reads other columns (what sqlglot's decorrelation of
    `EXISTS (... WHERE inner.t > outer.t)` produces): polars lambdas cannot read other columns, but a comparison
    with every element reduces to one with the list's min or max."""
    if not isinstance(lam, exp.Lambda) or len(lam.expressions) != 1 or type(lam.this) not in _FLIP:
        return None
    param = lam.expressions[0].name.lower()
    body = lam.this

    def is_param(n):
        return isinstance(n, (exp.Identifier, exp.Column)) and not getattr(n, "table", None) and \
            n.name.lower() == param
    op, other = type(body), None
    if is_param(body.this) and not any(is_param(c) for c in body.expression.find_all(exp.Identifier, exp.Column)):
        other = body.expression
    elif is_param(body.expression) and not any(is_param(c) for c in body.this.find_all(exp.Identifier, exp.Column)):
        op, other = _FLIP[op], body.this
    if other is None:
        return None
    e = ctx.expr(other)
    lo, hi = arr.list.min(), arr.list.max()
    lo, e_lo = ctx.coerce_pair(lo, None, e, other)
    hi, e_hi = ctx.coerce_pair(hi, None, e, other)
    any_true = {exp.GT: hi > e_hi, exp.GTE: hi >= e_hi, exp.LT: lo < e_lo, exp.LTE: lo <= e_lo,
                exp.EQ: arr.list.contains(e), exp.NEQ: (lo != e_lo) | (hi != e_hi)}[op]
    all_true = {exp.GT: lo > e_lo, exp.GTE: lo >= e_lo, exp.LT: hi < e_hi, exp.LTE: hi <= e_hi,
                exp.EQ: (lo == e_lo) & (hi == e_hi), exp.NEQ: ~arr.list.contains(e)}[op]
    empty = arr.list.len() == 0
    if kind == "any":
        return pl.when(arr.is_null()).then(None).when(empty).then(False).otherwise(any_true)
    if kind == "none":
        return pl.when(arr.is_null()).then(None).when(empty).then(True).otherwise(~any_true)
    return pl.when(arr.is_null()).then(None).when(empty).then(True).otherwise(all_true)


def _match(kind: str):
    def handler(node, ctx):
        first, lam = (node.expressions[0], node.expressions[1]) if isinstance(node, exp.Anonymous) else \
            (node.this, node.expression)
        arr = _arr(first, ctx)
        if isinstance(lam, exp.Lambda):
            names = {p.name.lower() for p in lam.expressions}
            outer = [c for c in lam.this.find_all(exp.Column) if c.table or c.name.lower() not in names]
            if outer:
                reduced = _outer_comparison(lam, arr, ctx, kind)
                if reduced is not None:
                    return reduced
        r = arr.list.eval(_element_lambda(lam, arr, ctx, f"{kind}_match"))
        any_true = r.list.eval(pl.element().fill_null(False)).list.any()
        any_false = r.list.eval(pl.element().not_().fill_null(False)).list.any()
        any_null = r.list.eval(pl.element().is_null()).list.any()
        decided, value = (any_false, False) if kind == "all" else (any_true, kind == "any")
        return pl.when(arr.is_null()).then(None).when(decided).then(value).when(any_null).then(None) \
            .otherwise(not value)
    return handler


for _kind in ("any", "all", "none"):
    register(f"{_kind}_match")(_match(_kind))
register(exp.ArrayAny)(_match("any"))  # what sqlglot's decorrelation of EXISTS emits


def _map_lambda(node, ctx, what: str) -> tuple[pl.Expr, pl.Expr, pl.DataType]:
    m = _typed(node.expressions[0], ctx, _MAP)
    t = ctx.dtype(m)
    if not _is_map(t):
        raise ctx.error(node, f"{what} takes a map")
    kt, vt = (f.dtype for f in t.inner.fields)
    body = _lambda(node.expressions[1], ctx, what, {"k": (pl.element().struct.field("key"), kt),
                                                    "v": (pl.element().struct.field("value"), vt)}, t.inner)
    return m, body, t


@register("map_filter")
def _map_filter(node, ctx):
    m, pred, _ = _map_lambda(node, ctx, "map_filter")
    return m.list.eval(pl.element().filter(pred.fill_null(False)))


@register("transform_values")
def _transform_values(node, ctx):
    m, body, _ = _map_lambda(node, ctx, "transform_values")
    return m.list.eval(pl.struct(key=pl.element().struct.field("key"), value=body))


@register(exp.ArrayToString, names=("array_join",))
def _array_join(node, ctx):
    arr = _arr(node.this, ctx)
    t = ctx.dtype(arr)
    if _is_list(t) and t.inner != pl.String:
        arr = arr.list.eval(cast(pl.element(), t.inner, pl.String, False))
    sep = _const(node.expression, ctx)
    if not isinstance(sep, str):
        raise ctx.error(node.expression, "array_join: the delimiter must be a constant string")
    null_node = _arg(node, "null")
    if null_node is not None:
        arr = arr.list.eval(pl.element().fill_null(ctx.expr(null_node)))
    return arr.list.join(sep, ignore_nulls=True)


def _array_position_py(arr: list, x: Any) -> int:
    try:
        return arr.index(x) + 1
    except ValueError:
        return 0


@register(exp.ArrayPosition, names=("array_position",))
def _array_position(node, ctx):
    arr = _arr(node.this, ctx)
    x = _const(node.expression, ctx)
    if x is _MISS:
        return rowwise(_array_position_py, [arr, ctx.expr(node.expression)], pl.Int64)
    if x is None:
        return pl.lit(None, dtype=pl.Int64)
    first = arr.list.eval((pl.element() == x).arg_true().first()).list.first()
    return pl.when(arr.is_null()).then(None).otherwise(_i64(first.fill_null(-1)) + 1)


@register(exp.ArrayRemove, names=("array_remove",))
def _array_remove(node, ctx):
    arr = _arr(node.this, ctx)
    x = _const(node.expression, ctx)
    if x is _MISS:
        return rowwise(lambda a, y: [v for v in a if v != y], [arr, ctx.expr(node.expression)], ctx.dtype(arr))
    if x is None:
        return pl.lit(None, dtype=ctx.dtype(arr))
    return arr.list.eval(pl.element().filter((pl.element() != x).fill_null(True)))


def _distinct(items: list) -> list:
    out: list = []
    for x in items:
        if x not in out:
            out.append(x)
    return out


def _set_op(keep: Callable[[Any, list], bool] | None):
    """array_union/intersect/except: distinct elements in first-seen order, NULL equal to NULL (Trino)."""
    def py(a: list, b: list) -> list:
        if keep is None:
            return _distinct(a + b)
        return [x for x in _distinct(a) if keep(x, b)]

    def handler(node, ctx):
        args = [ctx.expr(a) for a in function_args(node)]
        return rowwise(py, args, ctx.dtype(args[0]))
    return handler


register("array_union")(_set_op(None))
register(exp.ArrayIntersect, names=("array_intersect",))(_set_op(lambda x, b: x in b))
register(exp.ArrayExcept, names=("array_except",))(_set_op(lambda x, b: x not in b))


@register("arrays_overlap")
def _arrays_overlap(node, ctx):
    a, b = (ctx.expr(x) for x in node.expressions)
    if pl.Null in (ctx.dtype(a), ctx.dtype(b)):
        return pl.lit(None, dtype=pl.Boolean)
    common = a.list.set_intersection(b).list.eval(pl.element().drop_nulls()).list.len() > 0
    nulls = a.list.eval(pl.element().is_null()).list.any() | b.list.eval(pl.element().is_null()).list.any()
    return pl.when(_any_null(a, b)).then(None).when(common).then(True).when(nulls).then(None).otherwise(False)


@register(exp.Flatten, names=("flatten",))
def _flatten(node, ctx):
    return _arr(node.this, ctx).list.eval(pl.element().drop_nulls().explode())


@register("trim_array")
def _trim_array(node, ctx):
    arr, n = _arr(node.expressions[0], ctx), ctx.expr(node.expressions[1])
    return arr.list.head((_i64(arr.list.len()) - _i64(n)).clip(lower_bound=0))


@register(exp.Repeat, names=("repeat",))
def _repeat(node, ctx):
    """repeat(x, n): Trino refuses n > 10,000 ("count argument of repeat function must be less than or equal
    to 10000"); so does Lake, upfront for a literal n."""
    msg = f"repeat: the count must be less than or equal to {MAX_GENERATED_ENTRIES}"
    times = _const(node.args["times"], ctx)
    if isinstance(times, int) and times > MAX_GENERATED_ENTRIES:
        raise ctx.error(node, msg)
    x, n = ctx.expr(node.this), _i64(ctx.expr(node.args["times"]))
    out = pl.when(n.is_null()).then(None).otherwise(x.repeat_by(n.clip(lower_bound=0)))
    return out if isinstance(times, int) else fail_unless(n.is_null() | (n <= MAX_GENERATED_ENTRIES), out, msg,
                                                          _lenient(node))


@register(exp.GenerateSeries, names=("sequence",))
def _sequence(node, ctx):
    """sequence(start, stop[, step]): inclusive; the default step is 1 or -1 (a day for dates), towards stop."""
    start, stop = ctx.expr(node.args["start"]), ctx.expr(node.args["end"])
    step_node = node.args.get("step")
    st = ctx.dtype(start)
    if st == pl.Date or isinstance(st, pl.Datetime) or st == pl.String:
        if step_node is not None:
            raise ctx.error(step_node, "sequence of dates: only the default step of one day is supported")
        start, stop = _temporal(start, ctx), _temporal(stop, ctx)
        ranges = pl.date_ranges if ctx.dtype(start) == pl.Date else pl.datetime_ranges
        days = (stop.cast(pl.Date) - start.cast(pl.Date)).dt.total_days().abs()
        return fail_unless(days.is_null() | (days < MAX_GENERATED_ENTRIES),
                           pl.when(start <= stop).then(ranges(start, stop, "1d"))
                           .otherwise(ranges(stop, start, "1d").list.reverse()),
                           f"sequence: the result must have at most {MAX_GENERATED_ENTRIES} entries", _lenient(node))
    lo, hi = _const(node.args["start"], ctx), _const(node.args["end"], ctx)
    by = 1 if step_node is None else _const(step_node, ctx)
    if all(isinstance(v, int) for v in (lo, hi, by)) and by and 0 <= (hi - lo) // by and \
            (hi - lo) // by >= MAX_GENERATED_ENTRIES:  # refused upfront, as the computed case fails at run time
        raise ctx.error(node, f"sequence: the result must have at most {MAX_GENERATED_ENTRIES} entries")
    start, stop = _i64(start), _i64(stop)
    if step_node is None:
        step = pl.when(stop >= start).then(1).otherwise(-1).cast(pl.Int64)
    else:
        if _const(step_node, ctx) == 0:
            raise ctx.error(step_node, "sequence: the step must not be zero")
        step = _i64(ctx.expr(step_node))
    cap = MAX_GENERATED_ENTRIES
    ok = pl.when(step == 0).then(False).when(step > 0).then((stop >= start) & ((stop - start) // step < cap)) \
        .otherwise((stop <= start) & ((start - stop) // (-step) < cap))
    seq = pl.int_ranges(start, stop + step.sign(), step, dtype=pl.Int64)
    return fail_unless(ok, seq, f"sequence: stop must be reachable from start by step, in at most {cap} entries",
                       _lenient(node))


# ---- date and time -----------------------------------------------------------------------------------------

@register(exp.Date, names=("date",))
def _date(node, ctx):
    e = ctx.expr(node.this)
    t = ctx.dtype(e)
    if t == pl.String:
        return cast(e, t, pl.Date, strict=not _lenient(node))
    if t == pl.Date:
        return e
    return _temporal(e, ctx).dt.date()


_SHIFT_KW = {"WEEK": "weeks", "DAY": "days", "HOUR": "hours", "MINUTE": "minutes", "SECOND": "seconds",
             "MILLISECOND": "milliseconds"}
_MONTHS = {"YEAR": 12, "QUARTER": 3, "MONTH": 1}


@register(exp.DateAdd, names=("date_add",))
def _date_add(node, ctx):
    unit = _unit(node.args.get("unit"), ctx, "date_add")
    if unit not in _SHIFT_KW and unit not in _MONTHS:
        raise ctx.error(node, f"date_add: unit {unit.lower()!r} is not supported")
    e = _temporal(ctx.expr(node.this), ctx)
    if ctx.dtype(e) == pl.Date and unit in ("HOUR", "MINUTE", "SECOND", "MILLISECOND"):
        raise ctx.error(node, f"date_add: cannot add {unit.lower()}s to a date")
    n = _const(node.expression, ctx)
    if isinstance(n, int):
        return shift_time(e, n, unit)
    amount = _i64(ctx.expr(node.expression))
    if unit in _MONTHS:
        return _null_if_any(e.dt.offset_by(pl.format("{}mo", amount * _MONTHS[unit])), amount)
    return e + pl.duration(**{_SHIFT_KW[unit]: amount})


_US = {"MILLISECOND": 1_000, "SECOND": 1_000_000, "MINUTE": 60_000_000, "HOUR": 3_600_000_000,
       "DAY": 86_400_000_000, "WEEK": 7 * 86_400_000_000}


def _as_ts(e: pl.Expr, ctx) -> pl.Expr:
    e = _temporal(e, ctx)
    if ctx.dtype(e) == pl.Date:
        return e.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    return e


def _time_of_day_us(e: pl.Expr) -> pl.Expr:
    return (e - e.dt.truncate("1d")).dt.total_microseconds()


def _months_between(later: pl.Expr, earlier: pl.Expr) -> pl.Expr:
    """Whole months from earlier to later (later >= earlier), Joda's rule: a month-end day counts as reaching
    any larger day of month."""
    months = (later.dt.year().cast(pl.Int64) - earlier.dt.year()) * 12 + later.dt.month().cast(pl.Int64) \
        - earlier.dt.month()
    dom_l, dom_e = later.dt.day().cast(pl.Int64), earlier.dt.day().cast(pl.Int64)
    last = dom_l == later.dt.days_in_month().cast(pl.Int64)
    dom_e = pl.when(last & (dom_e > dom_l)).then(dom_l).otherwise(dom_e)
    rem_l = (dom_l - 1) * _US["DAY"] + _time_of_day_us(later)
    rem_e = (dom_e - 1) * _US["DAY"] + _time_of_day_us(earlier)
    return months - (rem_l < rem_e).cast(pl.Int64)


def _years_between(later: pl.Expr, earlier: pl.Expr) -> pl.Expr:
    """Whole years from earlier to later (later >= earlier), Joda's getYearDifference (Feb 29 balanced)."""
    def rem(e: pl.Expr) -> pl.Expr:
        return (e.dt.ordinal_day().cast(pl.Int64) - 1) * _US["DAY"] + _time_of_day_us(e)
    feb29 = 59 * _US["DAY"]
    rem_l, rem_e = rem(later), rem(earlier)
    leap_l, leap_e = later.dt.is_leap_year(), earlier.dt.is_leap_year()
    rem_e2 = pl.when((rem_e >= feb29) & leap_e & ~leap_l).then(rem_e - _US["DAY"]).otherwise(rem_e)
    rem_l2 = pl.when((rem_e >= feb29) & ~leap_e & (rem_l >= feb29) & leap_l).then(rem_l - _US["DAY"]).otherwise(rem_l)
    return later.dt.year().cast(pl.Int64) - earlier.dt.year() - (rem_l2 < rem_e2).cast(pl.Int64)


@register(exp.DateDiff, names=("date_diff",))
def _date_diff(node, ctx):
    unit = _unit(node.args.get("unit"), ctx, "date_diff")
    t2, t1 = _as_ts(ctx.expr(node.this), ctx), _as_ts(ctx.expr(node.expression), ctx)  # date_diff(u, t1, t2)
    if unit in _US:
        us = (t2 - t1).dt.total_microseconds()
        f = _US[unit]
        return pl.when(us >= 0).then(us // f).otherwise(-((-us) // f))
    if unit not in _MONTHS:
        raise ctx.error(node, f"date_diff: unit {unit.lower()!r} is not supported")
    forward = t2 >= t1
    later = pl.when(forward).then(t2).otherwise(t1)
    earlier = pl.when(forward).then(t1).otherwise(t2)
    n = _years_between(later, earlier) if unit == "YEAR" else _months_between(later, earlier)
    if unit == "QUARTER":
        n = n // 3
    return pl.when(forward).then(n).otherwise(-n)


_TRUNC = {"MILLISECOND": "1ms", "SECOND": "1s", "MINUTE": "1m", "HOUR": "1h", "DAY": "1d", "WEEK": "1w",
          "MONTH": "1mo", "QUARTER": "1q", "YEAR": "1y"}


@register(exp.TimestampTrunc, exp.DateTrunc, names=("date_trunc",))
def _date_trunc(node, ctx):
    unit = _unit(node.args.get("unit"), ctx, "date_trunc")
    if unit not in _TRUNC:
        raise ctx.error(node, f"date_trunc: unit {unit.lower()!r} is not supported")
    e = _temporal(ctx.expr(node.this), ctx)
    if ctx.dtype(e) == pl.Date and _TRUNC[unit] in ("1ms", "1s", "1m", "1h"):
        raise ctx.error(node, f"date_trunc: cannot truncate a date to a {unit.lower()}")
    return e.dt.truncate(_TRUNC[unit])


# MySQL-style date_format specifiers, as sqlglot hands them over (already in Python strftime spelling), to
# chrono (polars). %f prints microseconds truncated to milliseconds, as Trino does.
_MYSQL_OUT = {"%Y": "%Y", "%m": "%m", "%d": "%d", "%H": "%H", "%M": "%M", "%S": "%S", "%f": "%3f000",
              "%a": "%a", "%b": "%b", "%-m": "%-m", "%-d": "%-d", "%j": "%j", "%p": "%p", "%I": "%I",
              "%A": "%A", "%y": "%y", "%B": "%B", "%-H": "%-H", "%-I": "%-I", "%v": "%V", "%G": "%G",
              "%%": "%%"}
_MYSQL_UNSUPPORTED = {"%D", "%U", "%W", "%V", "%w", "%X"}
_MYSQL_TOKEN = re.compile(r"%-?.|[^%]+|%$")


def mysql_format(fmt: str, parse: bool = False) -> str:
    """A date_format/date_parse format (MySQL specifiers; sqlglot's strftime spelling) as a chrono format."""
    out = []
    for tok in _MYSQL_TOKEN.findall(fmt):
        if not tok.startswith("%"):
            out.append(tok)
        elif tok in _MYSQL_UNSUPPORTED:
            raise ValueError(f"specifier {tok} is not supported")
        elif tok in _MYSQL_OUT:
            spec = _MYSQL_OUT[tok]
            if parse:
                spec = spec.replace("%-", "%")
                if tok == "%f":
                    if not out or not out[-1].endswith("."):
                        raise ValueError("%f must follow a '.' when parsing")
                    out[-1] = out[-1][:-1]
                    spec = "%.f"
            out.append(spec)
        else:
            out.append(tok[-1] if len(tok) > 1 else "%%")  # Trino: %x is x for any x not listed
    return "".join(out)


def _format_arg(node, ctx, what: str, convert: Callable[[str], str]) -> str:
    f_node = node.args.get("format") if "format" in node.args else node.expressions[1]
    fmt = _const(f_node, ctx)
    if not isinstance(fmt, str):
        raise ctx.error(f_node, f"{what}: the format must be a constant string")
    try:
        return convert(fmt)
    except ValueError as e:
        raise ctx.error(f_node, f"{what}: {e}") from None


@register(exp.TimeToStr, names=("date_format",))
def _date_format(node, ctx):
    fmt = _format_arg(node, ctx, "date_format", mysql_format)
    return _as_ts(ctx.expr(node.this), ctx).dt.strftime(fmt)


@register(exp.StrToTime, names=("date_parse",))
def _date_parse(node, ctx):
    fmt = _format_arg(node, ctx, "date_parse", lambda f: mysql_format(f, parse=True))
    s = _str(node.this, ctx)
    parsed = s.str.strptime(pl.Datetime("us"), fmt, strict=False).dt.replace_time_zone("UTC")
    return checked(node, s, parsed, "date_parse: a value does not match the format (use try(...) for NULL)")


_JODA_TOKEN = re.compile(r"'(?:[^']|'')*'|([A-Za-z])\1*|[^A-Za-z']+")


def _joda_field(tok: str) -> str:
    c, n = tok[0], len(tok)
    numeric = {"d": ("%-d", "%d"), "H": ("%-H", "%H"), "h": ("%-I", "%I"), "m": ("%-M", "%M"),
               "s": ("%-S", "%S"), "w": ("%-V", "%V")}
    if c in numeric and n <= 2:
        return numeric[c][n - 1]
    if c in "yY":
        return "%y" if n == 2 else "%Y"
    if c == "x":
        return "%g" if n == 2 else "%G"
    if c == "M":
        return ("%-m", "%m", "%b", "%B")[min(n, 4) - 1]
    if c == "D" and n in (1, 3):
        return "%-j" if n == 1 else "%j"
    if c == "S" and n in (3, 6, 9):
        return f"%{n}f"
    if c == "E":
        return "%a" if n <= 3 else "%A"
    if c == "e" and n == 1:
        return "%u"
    if c == "a":
        return "%p"
    if c == "z" and n <= 3:
        return "%Z"
    if c == "Z":
        return ("%z", "%:z", "%Z")[min(n, 3) - 1]
    if c == "C" and n == 2:
        return "%C"
    if c == "G":
        return "AD"
    raise ValueError(f"pattern {tok!r} is not supported")


def joda_format(fmt: str) -> str:
    """A format_datetime (Joda-Time) pattern as a chrono format: the common fields, quoted text, literals."""
    out = []
    for m in _JODA_TOKEN.finditer(fmt):
        tok = m.group(0)
        if tok.startswith("'"):
            out.append("'" if tok == "''" else tok[1:-1].replace("''", "'").replace("%", "%%"))
        elif tok[0].isalpha():
            out.append(_joda_field(tok))
        else:
            out.append(tok.replace("%", "%%"))
    if "".join(m.group(0) for m in _JODA_TOKEN.finditer(fmt)) != fmt:
        raise ValueError("unterminated quote")
    return "".join(out)


@register("format_datetime")
def _format_datetime(node, ctx):
    fmt = _format_arg(node, ctx, "format_datetime", joda_format)
    return _as_ts(ctx.args(node)[0], ctx).dt.strftime(fmt)


@register(exp.FromISO8601Timestamp, names=("from_iso8601_timestamp",))
def _from_iso8601_timestamp(node, ctx):
    s = _str(node.this, ctx)
    norm = s.str.strip_chars().str.replace(r"[zZ]$", "+00:00").str.replace(r"(T[0-9:.]+[+-]\d\d)$", "${1}:00")
    with_offset = [norm.str.to_datetime(f, strict=False, time_zone="UTC", time_unit="us")
                   for f in ("%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M%#z")]
    local = [norm.str.strptime(pl.Datetime("us"), f, strict=False).dt.replace_time_zone("UTC")
             for f in ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d")]
    return checked(node, s, pl.coalesce(*with_offset, *local),
                   "from_iso8601_timestamp: a value is not an ISO 8601 timestamp")


@register(exp.FromISO8601Date, names=("from_iso8601_date",))
def _from_iso8601_date(node, ctx):
    s = _str(node.this, ctx)
    return checked(node, s, s.str.strip_chars().str.to_date("%Y-%m-%d", strict=False),
                   "from_iso8601_date: a value is not an ISO 8601 date")


@register("to_iso8601")
def _to_iso8601(node, ctx):
    e = _temporal(ctx.args(node)[0], ctx)
    t = ctx.dtype(e)
    if t == pl.Date:
        return e.dt.strftime("%Y-%m-%d")
    # eventtime is CloudTrail Lake's `timestamp` (no zone; UTC by convention), held as UTC internally: it
    # prints without a zone suffix, as Trino prints a zoneless timestamp. Other zones keep their offset.
    if isinstance(t, pl.Datetime) and t.time_zone and (t.time_zone != "UTC" or _zoned(node)):
        return e.dt.strftime("%Y-%m-%dT%H:%M:%S%.3f" + ("Z" if t.time_zone == "UTC" else "%:z"))
    return e.dt.strftime("%Y-%m-%dT%H:%M:%S%.3f")


def _zoned(node: exp.Expression) -> bool:
    """Whether to_iso8601's argument is a Trino `timestamp with time zone` (prints its zone, `Z` for UTC):
    from_iso8601_timestamp, current_timestamp/now, AT TIME ZONE. Stored eventtime is a zoneless timestamp."""
    arg = node.expressions[0] if isinstance(node, exp.Anonymous) else node.this
    while isinstance(arg, exp.Paren):
        arg = arg.this
    if isinstance(arg, (exp.CurrentTimestamp, exp.AtTimeZone)):
        return True
    name = arg.name.lower() if isinstance(arg, exp.Anonymous) else ""
    return name in ("from_iso8601_timestamp", "now") or type(arg).__name__ == "FromISO8601Timestamp"


@register(exp.UnixToTime, names=("from_unixtime",))
def _from_unixtime(node, ctx):
    if node.args.get("zone") is not None or node.args.get("hours") is not None:
        raise ctx.error(node, "from_unixtime with a time zone is not supported: timestamps are UTC")
    secs = ctx.expr(node.this).cast(pl.Float64)
    ms = (secs * 1000 + 0.5).floor().cast(pl.Int64)  # Trino rounds to milliseconds
    return pl.from_epoch(ms, time_unit="ms").cast(pl.Datetime("us")).dt.replace_time_zone("UTC")


@register(exp.TimeToUnix, names=("to_unixtime",))
def _to_unixtime(node, ctx):
    return _as_ts(ctx.expr(node.this), ctx).dt.epoch("us").cast(pl.Float64) / 1_000_000


def _field(fn: Callable[[pl.Expr], pl.Expr]) -> Handler:
    def handler(node, ctx):
        arg = node.this if not isinstance(node, exp.Anonymous) else node.expressions[0]
        return _i64(fn(_temporal(ctx.expr(arg), ctx)))
    return handler


_FIELDS: dict[str, Callable[[pl.Expr], pl.Expr]] = {
    "YEAR": lambda e: e.dt.year(), "QUARTER": lambda e: e.dt.quarter(), "MONTH": lambda e: e.dt.month(),
    "WEEK": lambda e: e.dt.week(), "DAY": lambda e: e.dt.day(), "DAY_OF_WEEK": lambda e: e.dt.weekday(),
    "DAY_OF_YEAR": lambda e: e.dt.ordinal_day(), "YEAR_OF_WEEK": lambda e: e.dt.iso_year(),
    "HOUR": lambda e: e.dt.hour(), "MINUTE": lambda e: e.dt.minute(), "SECOND": lambda e: e.dt.second(),
    "MILLISECOND": lambda e: e.dt.millisecond(),
}
_FIELD_ALIASES = {"DOW": "DAY_OF_WEEK", "DOY": "DAY_OF_YEAR", "YOW": "YEAR_OF_WEEK", "DAY_OF_MONTH": "DAY",
                  "WEEK_OF_YEAR": "WEEK"}
for _cls, _f, _names in [
    (exp.Year, "YEAR", ("year",)), (exp.Quarter, "QUARTER", ("quarter",)), (exp.Month, "MONTH", ("month",)),
    (exp.WeekOfYear, "WEEK", ("week", "week_of_year")), (exp.Day, "DAY", ("day",)),
    (exp.DayOfMonth, "DAY", ("day_of_month",)), (exp.DayOfWeekIso, "DAY_OF_WEEK", ("day_of_week", "dow")),
    (exp.DayOfYear, "DAY_OF_YEAR", ("day_of_year", "doy")),
    (exp.YearOfWeek, "YEAR_OF_WEEK", ("year_of_week",)), (exp.Hour, "HOUR", ("hour",)),
    (exp.Minute, "MINUTE", ("minute",)), (exp.Second, "SECOND", ("second",)),
]:
    register(_cls, names=_names)(_field(_FIELDS[_f]))
register("millisecond")(_field(_FIELDS["MILLISECOND"]))
register("yow")(_field(_FIELDS["YEAR_OF_WEEK"]))


@register(exp.Extract, names=("extract",))
def _extract(node, ctx):
    name = node.this.name.upper()
    f = _FIELDS.get(_FIELD_ALIASES.get(name, name))
    if f is None:
        raise ctx.error(node, f"EXTRACT({name} FROM ...) is not supported")
    return _i64(f(_temporal(ctx.expr(node.expression), ctx)))


@register(exp.LastDay, names=("last_day_of_month",))
def _last_day_of_month(node, ctx):
    e = _temporal(ctx.expr(node.this), ctx)
    end = e.dt.month_end()
    return end if ctx.dtype(e) == pl.Date else end.dt.date()


@register(exp.AtTimeZone)
def _at_time_zone(node, ctx):
    zone = _const(node.args.get("zone"), ctx)
    if not isinstance(zone, str):
        raise ctx.error(node, "AT TIME ZONE needs a constant zone name such as 'America/New_York'")
    e = _as_ts(ctx.expr(node.this), ctx)
    try:
        pl.select(pl.lit(None, dtype=TS).dt.convert_time_zone(zone))
    except Exception:  # noqa: BLE001 - unknown zone
        raise ctx.error(node, f"unknown time zone {zone!r}") from None
    return e.dt.convert_time_zone(zone)


register(exp.CurrentTimezone, names=("current_timezone",))(lambda node, ctx: pl.lit("UTC"))


# ---- JSON (row by row: Trino's legacy JSON path semantics) --------------------------------------------------

def _path_char(c: str) -> bool:
    return c == "_" or c.isalnum()


def parse_json_path(path: str) -> tuple[str, ...]:
    """Trino's json_extract path grammar: `$`, `.name`, `[index]` / `[name]`, `["quoted name"]`."""
    if not path.startswith("$"):
        raise ValueError(f"invalid JSON path {path!r}")
    tokens, i = [], 1
    while i < len(path):
        if path[i] == ".":
            j = i + 1
            while j < len(path) and (_path_char(path[j]) or path[j] == ":"):
                j += 1
            if j == i + 1:
                raise ValueError(f"invalid JSON path {path!r}")
            tokens.append(path[i + 1:j])
            i = j
        elif path[i] == "[":
            if path[i + 1:i + 2] == '"':
                j, buf = i + 2, []
                while j < len(path) and path[j] != '"':
                    if path[j] == "\\":
                        if path[j + 1:j + 2] not in ('"', "\\"):
                            raise ValueError(f"invalid JSON path {path!r}")
                        j += 1
                    buf.append(path[j])
                    j += 1
                if path[j:j + 2] != '"]':
                    raise ValueError(f"invalid JSON path {path!r}")
                tokens.append("".join(buf))
                i = j + 2
            else:
                j = i + 1
                while j < len(path) and _path_char(path[j]):
                    j += 1
                if j == i + 1 or path[j:j + 1] != "]":
                    raise ValueError(f"invalid JSON path {path!r}")
                tokens.append(path[i + 1:j])
                i = j + 1
        else:
            raise ValueError(f"invalid JSON path {path!r}")
    return tuple(tokens)


def _path_tokens(node: exp.Expression, ctx, what: str) -> tuple[str, ...] | None:
    """A constant JSON path's tokens (None when the path is computed per row)."""
    if isinstance(node, exp.JSONPath):
        tokens = []
        for part in node.expressions:
            if isinstance(part, exp.JSONPathRoot):
                continue
            if isinstance(part, exp.JSONPathKey) and isinstance(part.this, str):
                tokens.append(part.this)
            elif isinstance(part, exp.JSONPathSubscript) and isinstance(part.this, int) and part.this >= 0:
                tokens.append(str(part.this))
            else:
                raise ctx.error(node, f"{what}: invalid JSON path: only $, .name, [\"name\"] and [index] steps "
                                      "are supported (no wildcards, slices or filters)")
        return tuple(tokens)
    p = _const(node, ctx)
    if isinstance(p, str):
        try:
            return parse_json_path(p)
        except ValueError as e:
            raise ctx.error(node, f"{what}: {e}") from None
    return None


class _Num(str):
    """A JSON number's source text (kept for json_extract_scalar, which returns numbers as written)."""


_BAD = object()


def _loads(text: str, exact_numbers: bool = False, exact_ints: bool = False) -> Any:
    """Parsed JSON or _BAD. orjson first; exact integers (beyond 64 bits) and number text (`exact_numbers`:
    floats as written) go through the json module."""
    if not (exact_numbers or exact_ints):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    try:
        return json.loads(text, parse_float=_Num if exact_numbers else float, parse_constant=_refuse)
    except (ValueError, RecursionError):
        return _BAD


def _refuse(name: str) -> Any:
    raise ValueError(name)


def _walk(doc: Any, tokens: tuple[str, ...]) -> Any:
    """Follow path tokens: object keys by name, array elements by a non-negative integer token."""
    cur = doc
    for t in tokens:
        if isinstance(cur, dict):
            if t not in cur:
                return _MISS
            cur = cur[t]
        elif isinstance(cur, list):
            i = int(t) if t.isascii() and t.isdigit() else -1
            if not 0 <= i < len(cur):
                return _MISS
            cur = cur[i]
        else:
            return _MISS
    return cur


def _java_double(x: float) -> str:
    """Java's Double.toString (what Trino's JSON writer prints): 1.5, 100.0, 1.0E7, 1.0E-4."""
    if math.isnan(x) or math.isinf(x):
        return "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")
    if x == 0:
        return "-0.0" if math.copysign(1, x) < 0 else "0.0"
    if 1e-3 <= abs(x) < 1e7:
        return repr(x)  # positional in this range, always with a '.'
    _, digits, exponent = Decimal(repr(abs(x))).normalize().as_tuple()
    text = "".join(map(str, digits))
    return f"{'-' if x < 0 else ''}{text[0]}.{text[1:] or '0'}E{len(text) - 1 + exponent}"


def json_text(v: Any) -> str:
    """Compact JSON text as Trino writes it (key order kept, Java number formatting)."""
    if isinstance(v, float):
        return _java_double(v)
    if isinstance(v, _Num):
        return str(v)
    if isinstance(v, dict):
        return "{" + ",".join(orjson.dumps(k).decode() + ":" + json_text(x) for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ",".join(json_text(x) for x in v) + "]"
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 2 ** 63:
        return str(v)
    return orjson.dumps(v).decode()


def _scalar_text(v: Any) -> str | None:
    if v is None or isinstance(v, (dict, list)) or v is _MISS:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _extract_scalar_py(text: str, tokens: tuple[str, ...]) -> str | None:
    doc = _loads(text)
    if doc is _BAD:
        return None
    v = _walk(doc, tokens)
    if isinstance(v, float):  # numbers come back as written: parse again keeping the source text
        v = _walk(_loads(text, exact_numbers=True), tokens)
    return _scalar_text(v)


def _has_float(v: Any) -> bool:
    if isinstance(v, float):
        return True
    if isinstance(v, dict):
        return any(_has_float(x) for x in v.values())
    return isinstance(v, list) and any(_has_float(x) for x in v)


def _exact(text: str, v: Any, tokens: tuple[str, ...] = ()) -> Any:
    """orjson reads integers beyond 64 bits as floats: values holding floats are read again exactly."""
    return _walk(_loads(text, exact_ints=True), tokens) if _has_float(v) else v


def _extract_py(text: str, tokens: tuple[str, ...]) -> str | None:
    doc = _loads(text)
    if doc is _BAD:
        return None
    v = _walk(doc, tokens)
    return None if v is _MISS else json_text(_exact(text, v, tokens))


def _size_py(text: str, tokens: tuple[str, ...]) -> int | None:
    doc = _loads(text)
    if doc is _BAD:
        return None
    v = _walk(doc, tokens)
    if v is _MISS:
        return None
    return len(v) if isinstance(v, (dict, list)) else 0


def _json_path_fn(fn: Callable[[str, tuple[str, ...]], Any], dtype: pl.DataType, what: str) -> Handler:
    def handler(node, ctx):
        args = function_args(node)
        text, path_node = _str(args[0], ctx), args[1]
        if isinstance(path_node, exp.Null):
            return pl.lit(None, dtype=dtype)
        tokens = _path_tokens(path_node, ctx, what)
        if tokens is not None:
            return rowwise(lambda s: fn(s, tokens), [text], dtype)

        def per_row(s: str, p: str) -> Any:
            try:
                return fn(s, parse_json_path(p))
            except ValueError as e:
                raise FunctionFailed(f"{what}: {e}") from None
        return rowwise(per_row, [text, _str(path_node, ctx)], dtype, lenient=_lenient(node))
    return handler




register(exp.JSONExtractScalar, names=("json_extract_scalar",))(
    _json_path_fn(_extract_scalar_py, pl.String, "json_extract_scalar"))
register(exp.JSONExtract, names=("json_extract",))(_json_path_fn(_extract_py, pl.String, "json_extract"))
register("json_size")(_json_path_fn(_size_py, pl.Int64, "json_size"))


def _json_parse_py(text: str) -> str:
    doc = _loads(text)
    if doc is _BAD:
        raise FunctionFailed(f"json_parse: cannot convert value to JSON: {text[:60]!r}")
    return json_text(_sort_keys(_exact(text, doc)))


def _sort_keys(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _sort_keys(v[k]) for k in sorted(v)}
    if isinstance(v, list):
        return [_sort_keys(x) for x in v]
    return v


@register(exp.ParseJSON, names=("json_parse",))
def _json_parse(node, ctx):
    return rowwise(_json_parse_py, [_str(node.this, ctx)], pl.String, lenient=_lenient(node))


@register(exp.JSONFormat, names=("json_format",))
def _json_format(node, ctx):
    return ctx.expr(node.this)  # JSON values are JSON text already


def _array_doc(text: str) -> list | None:
    doc = _loads(text)
    return doc if isinstance(doc, list) else None


def _array_get_py(text: str, i: int) -> str | None:
    arr = _array_doc(text)
    if arr is None or not -len(arr) <= i < len(arr):
        return None
    return json_text(_exact(text, arr[i], (str(i % len(arr)),)))


@register("json_array_get")
def _json_array_get(node, ctx):
    text, i = _str(node.expressions[0], ctx), ctx.expr(node.expressions[1])
    return rowwise(_array_get_py, [text, _i64(i)], pl.String)


def _array_length_py(text: str) -> int | None:
    arr = _array_doc(text)
    return None if arr is None else len(arr)


@register("json_array_length")
def _json_array_length(node, ctx):
    return rowwise(_array_length_py, [_str(node.expressions[0], ctx)], pl.Int64)


def _array_contains_py(kind: str):
    def contains(text: str, value: Any) -> bool | None:
        arr = _array_doc(text)
        if arr is None:
            return None
        for x in arr:
            if kind == "bool" and isinstance(x, bool) and x == value:
                return True
            if kind == "int" and isinstance(x, int) and not isinstance(x, bool) and x == value:
                return True
            if kind == "float" and isinstance(x, (int, float)) and not isinstance(x, bool) and x == value:
                return True
            if kind == "str" and isinstance(x, str) and x == value:
                return True
        return False
    return contains


@register(exp.JSONArrayContains, names=("json_array_contains",))
def _json_array_contains(node, ctx):
    text, value = _str(node.this, ctx), ctx.expr(node.expression)
    t = ctx.dtype(value)
    kind = "bool" if t == pl.Boolean else "int" if t.is_integer() else "float" if t.is_float() else "str"
    return rowwise(_array_contains_py(kind), [text, value], pl.Boolean)


def _is_json_scalar_py(text: str) -> bool:
    doc = _loads(text)
    if doc is _BAD:
        raise FunctionFailed(f"is_json_scalar: invalid JSON value: {text[:60]!r}")
    return not isinstance(doc, (dict, list))


@register("is_json_scalar")
def _is_json_scalar(node, ctx):
    return rowwise(_is_json_scalar_py, [_str(node.expressions[0], ctx)], pl.Boolean, lenient=_lenient(node))


def _json_to_varchar_py(text: str) -> str | None:
    doc = _loads(text)
    if doc is _BAD or isinstance(doc, (dict, list)):
        raise FunctionFailed(f"cannot cast JSON {text[:60]!r} to varchar: only JSON scalars convert")
    if isinstance(doc, float):  # or an integer beyond 64 bits, which orjson reads as a float
        doc = _loads(text, exact_ints=True)
        return str(doc) if isinstance(doc, int) else _java_double(doc)
    return _scalar_text(doc)


def json_to_varchar(e: pl.Expr, lenient: bool = False) -> pl.Expr:
    """CAST(json AS varchar) with Trino's rules, for the core's CAST of JSON-valued expressions: a JSON string
    gives its text (no quotes), numbers and booleans their text, JSON null gives NULL, objects and arrays fail
    (NULL when `lenient`, i.e. TRY_CAST / try())."""
    return rowwise(_json_to_varchar_py, [e], pl.String, lenient=lenient)


FUNCTION_NAMES: list[str] = sorted(_NAMES | set(_CORE_NAMES))

__all__ = ["FUNCTIONS", "ANONYMOUS", "FUNCTION_NAMES", "FunctionFailed", "register", "rowwise", "trino_type",
           "parse_json_path", "json_text", "json_to_varchar", "mysql_format", "joda_format", "java_replacement"]
