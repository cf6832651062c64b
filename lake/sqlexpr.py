"""Scalar and aggregate expressions: a qualified sqlglot node becomes a polars expression with Trino semantics.

The translator is a `Ctx` bound to what is visible at that point of a query (an `Env`: qualified column names
to polars column names) plus a `replace` map from already-computed sub-expressions (group keys, aggregates,
window functions, keyed by their canonical SQL) to columns. Function calls are looked up in
`sqlfunctions.FUNCTIONS` (by sqlglot node class) and `sqlfunctions.ANONYMOUS` (by lower-case name), so that
the Trino function library can grow without touching the core.

Semantics kept from Trino that polars does not give by default: three-valued logic (polars' Kleene `&`/`|`
already matches), integer division and modulo truncating toward zero, `GREATEST`/`LEAST` returning NULL when
any argument is NULL, `IN` returning NULL when no element matches but the list holds a NULL, `sum` of no
values being NULL, timestamps compared with string literals.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import polars as pl
from sqlglot import exp

from .sqlparse import error_at

UTC = timezone.utc
_PLACEHOLDERS = ("__lake_in", "__lake_exists", "__lake_scalar")
TS = pl.Datetime("us", "UTC")

_TS_FORMATS = ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S",
               "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M", "%Y-%m-%d")


def parse_timestamp(text: str) -> datetime | None:
    """A Trino timestamp literal (space or T, optional fraction, optional Z / +hh:mm / ' UTC') as UTC."""
    s = text.strip()
    tz = UTC
    m = re.search(r"(Z| UTC|[+-]\d{2}:?\d{2})$", s)
    if m:
        suffix = m.group(1)
        s = s[: m.start()].rstrip()
        if suffix not in ("Z", " UTC"):
            sign = 1 if suffix[0] == "+" else -1
            digits = suffix[1:].replace(":", "")
            tz = timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
    if "." in s:  # Python's %f takes at most 6 digits
        head, frac = s.rsplit(".", 1)
        s = f"{head}.{frac[:6]}"
    for fmt in _TS_FORMATS:
        try:
            return datetime.strptime(s, fmt).replace(tzinfo=tz).astimezone(UTC)
        except ValueError:
            continue
    return None


@dataclass
class Env:
    """What expressions can see: (qualifier, name) -> polars column, and the frame's schema."""

    columns: dict[tuple[str, str], str]
    schema: dict[str, pl.DataType]
    stores: dict[str, str] = field(default_factory=dict)  # alias -> polars prefix, for flat-column routing

    def lookup(self, qualifier: str, name: str) -> str | None:
        key = (qualifier.lower(), name.lower())
        if key in self.columns:
            return self.columns[key]
        if not qualifier:
            hits = [c for (q, n), c in self.columns.items() if n == key[1]]
            if len(set(hits)) == 1:
                return hits[0]
        return None


_EMPTY_FRAMES: dict[tuple, pl.LazyFrame] = {}


def _empty_frame(schema: dict[str, pl.DataType]) -> pl.LazyFrame:
    """An empty frame of this schema, for typing expressions. Building one costs ~2 ms for the event schema
    (every nested column is constructed), which made typing the largest fixed cost of a point lookup; the
    same few schemas recur in every query, so they are kept (keyed by content: Env schemas are mutable)."""
    key = tuple(schema.items())
    frame = _EMPTY_FRAMES.get(key)
    if frame is None:
        if len(_EMPTY_FRAMES) > 256:
            _EMPTY_FRAMES.clear()
        frame = _EMPTY_FRAMES[key] = pl.LazyFrame(schema=schema)
    return frame


def sql_key(node: exp.Expression) -> str:
    """Canonical text of a node: how group keys and aggregates are recognised where they are used again."""
    return node.sql(dialect="trino", normalize=True)


class Ctx:
    """Translates nodes in one Env. `bindings` holds lambda parameters, `replace` computed sub-expressions."""

    def __init__(self, env: Env, *, replace: dict[str, str] | None = None, bindings: dict[str, Any] | None = None,
                 planner: Any = None, clause: str = "expression", now: datetime | None = None):
        self.env = env
        self.replace = replace or {}
        self.bindings = bindings or {}
        self.planner = planner
        self.clause = clause
        self.now = now or datetime.now(UTC)

    # -- helpers for function handlers ----------------------------------------------------------------
    def error(self, node: exp.Expression | None, message: str):
        return error_at(node, message)

    def bind(self, names: dict[str, tuple[pl.Expr, pl.DataType]]) -> "Ctx":
        """A context where lambda parameters translate to the given (expression, dtype)."""
        return Ctx(self.env, replace=self.replace, bindings={**self.bindings, **names}, planner=self.planner,
                   clause=self.clause, now=self.now)

    def dtype(self, e: pl.Expr) -> pl.DataType:
        """The polars type of an expression in this context (evaluated on an empty frame: no data is read)."""
        lam = [v for v in self.bindings.values()]
        try:
            if lam:
                elem = lam[-1][1]
                frame = pl.LazyFrame(schema={**self.env.schema, "__l": pl.List(elem)})
                out = frame.select(pl.col("__l").list.eval(e).alias("__t")).collect_schema()["__t"]
                return out.inner if isinstance(out, pl.List) else out
            return _empty_frame(self.env.schema).select(e.alias("__t")).collect_schema()["__t"]
        except Exception:  # noqa: BLE001 - an expression polars cannot type is reported where it is used
            return pl.Null()

    def expr(self, node: exp.Expression) -> pl.Expr:
        if self.replace:
            hit = self.replace.get(sql_key(node))
            if hit is not None:
                return pl.col(hit)
        handler = _NODES.get(type(node))
        if handler is not None:
            out = handler(node, self)
            # sqlglot folds NOT into some predicates (`a NOT LIKE b` is Like(negate=True))
            return ~out if node.args.get("negate") and isinstance(node, exp.Predicate) else out
        if isinstance(node, exp.Anonymous) and node.name in _PLACEHOLDERS:
            return self.planner.subquery_expr(node, self)
        from . import sqlfunctions
        fn = sqlfunctions.FUNCTIONS.get(type(node))
        if fn is None and isinstance(node, exp.Anonymous):
            fn = sqlfunctions.ANONYMOUS.get(node.name.lower())
        if fn is None and isinstance(node, exp.AggFunc):
            raise self.error(node, f"aggregate {_name(node)} is not allowed in {self.clause}")
        if fn is None:
            raise self.error(node, f"{_name(node)} is not supported")
        return fn(node, self)

    def args(self, node: exp.Expression) -> list[pl.Expr]:
        """Translate a function node's positional arguments (this, expression(s)) in order."""
        return [self.expr(a) for a in function_args(node)]

    def literal_value(self, node: exp.Expression) -> Any:
        """The Python value of a constant node, or raise: for arguments that must be constant."""
        if isinstance(node, exp.Literal):
            return node.this if node.is_string else _number(node.this)
        if isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal):
            return -_number(node.this.this)
        if isinstance(node, exp.Boolean):
            return node.this
        if isinstance(node, exp.Null):
            return None
        if isinstance(node, exp.Paren):
            return self.literal_value(node.this)
        if isinstance(node, (exp.Cast, exp.TryCast)) and isinstance(node.this, exp.Null):
            return None  # CAST(NULL AS VARCHAR): a typed NULL, e.g. in VALUES
        raise self.error(node, f"{node.sql(dialect='trino')} must be a constant here")

    def coerce_pair(self, a: pl.Expr, an: exp.Expression, b: pl.Expr, bn: exp.Expression) -> tuple[pl.Expr, pl.Expr]:
        """Make a comparison's sides comparable the way Trino does for CloudTrail Lake queries: a timestamp
        or date against a string (a literal, usually) parses the string."""
        ta, tb = self.dtype(a), self.dtype(b)
        return _coerce(a, an, ta, tb, self), _coerce(b, bn, tb, ta, self)


def _coerce(e: pl.Expr, node: exp.Expression, t: pl.DataType, other: pl.DataType, ctx: Ctx) -> pl.Expr:
    if t == pl.String and isinstance(other, pl.Datetime):
        if isinstance(node, exp.Literal) and node.is_string:
            v = parse_timestamp(node.this)
            if v is None:
                raise ctx.error(node, f"{node.this!r} is not a timestamp")
            return pl.lit(v, dtype=TS)
        return string_to_timestamp(e)
    if t == pl.String and other == pl.Date:
        if isinstance(node, exp.Literal) and node.is_string:
            v = parse_timestamp(node.this)
            if v is None:
                raise ctx.error(node, f"{node.this!r} is not a date")
            return pl.lit(v.date(), dtype=pl.Date)
        return e.str.to_date(strict=False)
    if isinstance(t, pl.Datetime) and t.time_zone is None and isinstance(other, pl.Datetime) and other.time_zone:
        return e.dt.replace_time_zone("UTC")
    if t == pl.Date and isinstance(other, pl.Datetime):
        return e.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    if t == pl.Null and other != pl.Null:
        return e.cast(other)
    return e


def string_to_timestamp(e: pl.Expr) -> pl.Expr:
    """Strings in the usual timestamp forms to UTC timestamps (NULL when unparseable)."""
    s = e.str.replace(r"T", " ", literal=True).str.replace(r"(Z| UTC)$", "")
    return pl.coalesce(
        s.str.strptime(pl.Datetime("us"), "%Y-%m-%d %H:%M:%S%.f", strict=False),
        s.str.strptime(pl.Datetime("us"), "%Y-%m-%d %H:%M:%S", strict=False),
        s.str.strptime(pl.Datetime("us"), "%Y-%m-%d", strict=False),
    ).dt.replace_time_zone("UTC")


def _number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)


def _name(node: exp.Expression) -> str:
    if isinstance(node, exp.Anonymous):
        return f"function {node.name}()"
    if isinstance(node, exp.Func):
        return f"function {node.sql_name().lower()}()"
    return f"{node.key.upper()} expression"


def function_args(node: exp.Expression) -> list[exp.Expression]:
    """A function node's arguments in call order."""
    if isinstance(node, exp.Anonymous):
        return list(node.expressions)
    out = []
    for key in node.arg_types:
        v = node.args.get(key)
        if v is None:
            continue
        if isinstance(v, list):
            out.extend(x for x in v if isinstance(x, exp.Expression))
        elif isinstance(v, exp.Expression):
            out.append(v)
    return out


# ---- node handlers -----------------------------------------------------------------------------------

def _column(node: exp.Column, ctx: Ctx) -> pl.Expr:
    if not node.table and node.name.lower() in ctx.bindings:
        return ctx.bindings[node.name.lower()][0]
    col = ctx.env.lookup(node.table, node.name)
    if col is None:
        where = f"{node.table}.{node.name}" if node.table else node.name
        raise ctx.error(node, f"column {where!r} cannot be resolved here")
    return pl.col(col)


def _identifier(node: exp.Identifier, ctx: Ctx) -> pl.Expr:
    if node.name.lower() in ctx.bindings:
        return ctx.bindings[node.name.lower()][0]
    col = ctx.env.lookup("", node.name)
    if col is None:
        raise ctx.error(node, f"{node.name!r} cannot be resolved here")
    return pl.col(col)


def _dot_chain(node: exp.Dot) -> tuple[exp.Expression, list[str]]:
    path = []
    cur: exp.Expression = node
    while isinstance(cur, exp.Dot):
        path.append(cur.expression.name)
        cur = cur.this
    return cur, list(reversed(path))


def _dot(node: exp.Dot, ctx: Ctx) -> pl.Expr:
    base, path = _dot_chain(node)
    from .schema import FLAT_FIELDS
    if isinstance(base, exp.Column) and base.table and base.name.lower() == "useridentity":
        prefix = ctx.env.stores.get(base.table.lower())
        if prefix is not None:
            want = tuple(p.lower() for p in path)
            for flat, fpath in FLAT_FIELDS.items():
                if tuple(p.lower() for p in fpath) == want:
                    return pl.col(f"{prefix}{flat}")
    e = ctx.expr(base)
    t = ctx.dtype(e)
    for name in path:
        if isinstance(t, pl.Struct):
            fields = {f.name.lower(): f for f in t.fields}
            f = fields.get(name.lower())
            if f is None:
                raise ctx.error(node, f"field {name!r} does not exist in {base.sql(dialect='trino')}")
            e, t = e.struct.field(f.name), f.dtype
        elif _is_map(t):
            e, t = map_get(e, name, t), pl.String
        else:
            raise ctx.error(node, f"cannot read field {name!r} of a {t} value")
    return e


def is_map(t: pl.DataType) -> bool:
    """polars reads the stores' map<string,string> columns as its native Map type; a List(Struct{key,value})
    (what older polars, or a map built by hand, gives) is treated the same."""
    if isinstance(t, pl.Map):
        return True
    return isinstance(t, pl.List) and isinstance(t.inner, pl.Struct) and [f.name for f in t.inner.fields] == ["key", "value"]


_is_map = is_map


def map_get(m: pl.Expr, key: Any, dtype: pl.DataType | None = None) -> pl.Expr:
    """Value of a map at a key (a Python value or a literal expression), NULL when absent."""
    if isinstance(dtype, pl.List):
        k = key if isinstance(key, pl.Expr) else pl.lit(key)
        return m.list.eval(pl.element().filter(pl.element().struct.field("key") == k).struct.field("value")).list.first()
    return m.map.get(key)


def _literal(node: exp.Literal, ctx: Ctx) -> pl.Expr:
    if node.is_string:
        return pl.lit(node.this, dtype=pl.String)
    v = _number(node.this)
    return pl.lit(v, dtype=pl.Int64 if isinstance(v, int) else pl.Float64)


def _binary(op: Callable[[pl.Expr, pl.Expr], pl.Expr], coerce: bool = True):
    def handler(node: exp.Binary, ctx: Ctx) -> pl.Expr:
        a, b = ctx.expr(node.this), ctx.expr(node.expression)
        if coerce:
            a, b = ctx.coerce_pair(a, node.this, b, node.expression)
        return op(a, b)
    return handler


def _interval_parts(node: exp.Interval, ctx: Ctx) -> tuple[float, str]:
    value = node.this
    n = ctx.literal_value(value)
    unit = (node.unit.name if node.unit is not None else "DAY").upper()
    if isinstance(n, str):
        parts = n.strip().split()
        if len(parts) == 2:
            n, unit = parts[0], parts[1].upper()
        n = _number(n)
    return n, unit.rstrip("S") if unit.endswith("S") and unit != "S" else unit


def shift_time(e: pl.Expr, n: float, unit: str, sign: int = 1) -> pl.Expr:
    """Timestamp/date plus n units; months and years are calendar offsets, like Trino's date_add."""
    n = n * sign
    if unit in ("YEAR", "MONTH", "QUARTER"):
        months = int(n) * {"YEAR": 12, "MONTH": 1, "QUARTER": 3}[unit]
        return e.dt.offset_by(f"{months}mo")
    kw = {"WEEK": "weeks", "DAY": "days", "HOUR": "hours", "MINUTE": "minutes", "SECOND": "seconds",
          "MILLISECOND": "milliseconds"}.get(unit)
    if kw is None:
        raise ValueError(unit)
    return e + pl.duration(**{kw: n})


def _add_sub(sign: int):
    def handler(node: exp.Binary, ctx: Ctx) -> pl.Expr:
        left, right = node.this, node.expression
        if isinstance(right, exp.Interval) or isinstance(left, exp.Interval):
            if isinstance(left, exp.Interval):
                left, right = right, left
            n, unit = _interval_parts(right, ctx)
            try:
                return shift_time(ctx.expr(left), n, unit, sign)
            except ValueError:
                raise ctx.error(right, f"interval unit {unit} is not supported") from None
        a, b = ctx.expr(left), ctx.expr(right)
        ta, tb = ctx.dtype(a), ctx.dtype(b)
        if ta == pl.String and tb == pl.String:
            raise ctx.error(node, "'+'/'-' on strings: use || or concat() to join strings")
        return a + b if sign > 0 else a - b
    return handler


def _is_int(t: pl.DataType) -> bool:
    return t.is_integer() if hasattr(t, "is_integer") else False


def _div(node: exp.Div, ctx: Ctx) -> pl.Expr:
    a, b = ctx.expr(node.this), ctx.expr(node.expression)
    if _is_int(ctx.dtype(a)) and _is_int(ctx.dtype(b)):
        q = a // b  # floor; Trino truncates toward zero
        fix = ((a % b) != 0) & ((a < 0) != (b < 0))
        return pl.when(b == 0).then(None).when(fix).then(q + 1).otherwise(q)
    return a.cast(pl.Float64) / b


def _mod(node: exp.Mod, ctx: Ctx) -> pl.Expr:
    a, b = ctx.expr(node.this), ctx.expr(node.expression)
    r = a % b  # polars' sign follows the divisor; Trino's follows the dividend
    return pl.when((r != 0) & ((r < 0) != (a < 0))).then(r - b).otherwise(r)


def _concat(node: exp.DPipe, ctx: Ctx) -> pl.Expr:
    """`||`: arrays concatenate, everything else as strings (NULL if either side is NULL)."""
    a, b = ctx.expr(node.this), ctx.expr(node.expression)
    if isinstance(ctx.dtype(a), pl.List) or isinstance(ctx.dtype(b), pl.List):
        return pl.when(a.is_null() | b.is_null()).then(None).otherwise(pl.concat_list([a, b]))
    return pl.concat_str([a.cast(pl.String), b.cast(pl.String)])


def _and(node, ctx):
    return ctx.expr(node.this) & ctx.expr(node.expression)


def _or(node, ctx):
    return ctx.expr(node.this) | ctx.expr(node.expression)


def _not(node, ctx):
    return ~ctx.expr(node.this)


def _neg(node, ctx):
    return -ctx.expr(node.this)


def _paren(node, ctx):
    return ctx.expr(node.this)


def _alias(node, ctx):
    return ctx.expr(node.this)


def _is(node: exp.Is, ctx: Ctx) -> pl.Expr:
    e = ctx.expr(node.this)
    target = node.expression
    if isinstance(target, exp.Null):
        return e.is_null()
    if isinstance(target, exp.Boolean):
        return e.fill_null(not target.this) == target.this
    raise ctx.error(node, f"IS {target.sql(dialect='trino')} is not supported")


def _null_safe(equal: bool):
    def handler(node, ctx):
        a, b = ctx.coerce_pair(ctx.expr(node.this), node.this, ctx.expr(node.expression), node.expression)
        return a.eq_missing(b) if equal else a.ne_missing(b)
    return handler


def like_regex(pattern: str, escape: str | None = None) -> str:
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if escape and ch == escape and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
        i += 1
    return "(?s)^" + "".join(out) + "$"


def _like(node: exp.Expression, ctx: Ctx, escape: str | None = None) -> pl.Expr:
    subject = ctx.expr(node.this)
    pat = node.expression
    if isinstance(pat, exp.Literal) and pat.is_string:
        p = pat.this
        specials = set("%_") | ({escape} if escape else set())
        body = p.strip("%")
        if not (set(body) & specials):
            if p == body:
                return subject == pl.lit(p)
            if p == body + "%":
                return subject.str.starts_with(body)
            if p == "%" + body:
                return subject.str.ends_with(body)
            if p == "%" + body + "%":
                return subject.str.contains(body, literal=True)
        return subject.str.contains(like_regex(p, escape))
    raise ctx.error(pat, "LIKE patterns must be constant strings")


def _escape(node: exp.Escape, ctx: Ctx) -> pl.Expr:
    esc = ctx.literal_value(node.expression)
    if not isinstance(node.this, exp.Like) or not isinstance(esc, str) or len(esc) != 1:
        raise ctx.error(node, "ESCAPE takes one character and applies to LIKE")
    return _like(node.this, ctx, esc)


def _is_in(subject: pl.Expr, values: pl.Series) -> pl.Expr:
    return subject.is_in(pl.lit(values).implode(), nulls_equal=False)


def in_values(subject: pl.Expr, values: list, has_null: bool) -> pl.Expr:
    """SQL IN over constant values: NULL subject -> NULL; not found but NULL in list -> NULL."""
    found = _is_in(subject, pl.Series(values) if values else pl.Series([], dtype=pl.String))
    if has_null:
        found = pl.when(found).then(True).otherwise(None)
    return pl.when(subject.is_null()).then(None).otherwise(found)


def _in(node: exp.In, ctx: Ctx) -> pl.Expr:
    subject = ctx.expr(node.this)
    if node.args.get("query") is not None:
        raise ctx.error(node, "this IN (subquery) form is not supported")
    items = node.expressions
    st = ctx.dtype(subject)
    consts, others, has_null = [], [], False
    for it in items:
        try:
            v = ctx.literal_value(it)
        except Exception:  # noqa: BLE001 - not a constant: compared one by one below
            others.append(it)
            continue
        if v is None:
            has_null = True
        elif isinstance(st, pl.Datetime) and isinstance(v, str):
            ts = parse_timestamp(v)
            if ts is None:
                raise ctx.error(it, f"{v!r} is not a timestamp")
            consts.append(ts)
        else:
            consts.append(v)
    result = None
    if consts or not others:
        if consts and isinstance(st, pl.Datetime):
            s = pl.Series(consts, dtype=TS)
            result = pl.when(subject.is_null()).then(None).otherwise(_is_in(subject, s))
            if has_null:
                result = pl.when(result).then(True).otherwise(None)
        else:
            try:
                s = pl.Series(consts, dtype=st if st != pl.Null else None, strict=True)
            except Exception:  # noqa: BLE001 - mixed literal types: let polars find a common type
                s = pl.Series(consts)
            result = pl.when(subject.is_null()).then(None).otherwise(_is_in(subject, s))
            if has_null:
                result = pl.when(result).then(True).otherwise(None)
    for it in others:
        a, b = ctx.coerce_pair(subject, node.this, ctx.expr(it), it)
        result = (a == b) if result is None else (result | (a == b))
    return result


def _between(node: exp.Between, ctx: Ctx) -> pl.Expr:
    x = ctx.expr(node.this)
    lo_x, lo = ctx.coerce_pair(x, node.this, ctx.expr(node.args["low"]), node.args["low"])
    hi_x, hi = ctx.coerce_pair(x, node.this, ctx.expr(node.args["high"]), node.args["high"])
    return (lo_x >= lo) & (hi_x <= hi)


def _case(node: exp.Case, ctx: Ctx) -> pl.Expr:
    operand = node.this
    chain = None
    for branch in node.args.get("ifs") or []:
        cond_node = branch.this
        if operand is not None:
            a, b = ctx.coerce_pair(ctx.expr(operand), operand, ctx.expr(cond_node), cond_node)
            cond = a == b
        else:
            cond = ctx.expr(cond_node)
        value = ctx.expr(branch.args["true"])
        chain = pl.when(cond.fill_null(False)).then(value) if chain is None else \
            chain.when(cond.fill_null(False)).then(value)
    default = node.args.get("default")
    dv = ctx.expr(default) if default is not None else pl.lit(None)
    return dv if chain is None else chain.otherwise(dv)


def _if(node: exp.If, ctx: Ctx) -> pl.Expr:
    cond = ctx.expr(node.this).fill_null(False)
    f = node.args.get("false")
    return pl.when(cond).then(ctx.expr(node.args["true"])).otherwise(ctx.expr(f) if f is not None else pl.lit(None))


def _coalesce(node, ctx):
    return pl.coalesce([ctx.expr(a) for a in function_args(node)])


def _nullif(node, ctx):
    a, b = ctx.coerce_pair(ctx.expr(node.this), node.this, ctx.expr(node.expression), node.expression)
    return pl.when((a == b).fill_null(False)).then(None).otherwise(a)


def _extreme(horizontal):
    def handler(node, ctx):
        args = [ctx.expr(a) for a in function_args(node)]
        any_null = pl.any_horizontal([a.is_null() for a in args])
        return pl.when(any_null).then(None).otherwise(horizontal(args))
    return handler


# ---- CAST -----------------------------------------------------------------------------------------

def polars_type(dt: exp.DataType) -> pl.DataType | None:
    T = exp.DataType.Type
    t = dt.this
    if t in (T.VARCHAR, T.CHAR, T.TEXT, T.NVARCHAR, T.NCHAR, T.JSON):
        return pl.String
    if t in (T.BIGINT, T.INT, T.SMALLINT, T.TINYINT, T.UBIGINT, T.UINT):
        return pl.Int64
    if t in (T.DOUBLE, T.FLOAT, T.DECIMAL, T.BIGDECIMAL):
        return pl.Float64
    if t == T.BOOLEAN:
        return pl.Boolean
    if t == T.DATE:
        return pl.Date
    if t in (T.TIMESTAMP, T.TIMESTAMPTZ, T.TIMESTAMPLTZ, T.DATETIME):
        return TS
    return None


def cast(e: pl.Expr, src: pl.DataType, to: pl.DataType, strict: bool) -> pl.Expr:
    if to == TS:
        if src == pl.String:
            parsed = string_to_timestamp(e)
            return parsed if not strict else _strict(e, parsed, "timestamp")
        if src == pl.Date:
            return e.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
        return e.cast(TS, strict=strict)
    if to == pl.Date:
        if isinstance(src, pl.Datetime):
            return e.dt.date()
        if src == pl.String:
            parsed = e.str.strip_chars().str.slice(0, 10).str.to_date("%Y-%m-%d", strict=False)
            return parsed if not strict else _strict(e, parsed, "date")
    if to == pl.String:
        if isinstance(src, pl.Datetime):
            return e.dt.strftime("%Y-%m-%d %H:%M:%S%.3f")
        if src == pl.Boolean:
            return pl.when(e).then(pl.lit("true")).when(~e).then(pl.lit("false")).otherwise(None)
    if to == pl.Boolean and src == pl.String:
        low = e.str.strip_chars().str.to_lowercase()
        parsed = pl.when(low == "true").then(True).when(low == "false").then(False).otherwise(None)
        return parsed if not strict else _strict(e, parsed, "boolean")
    if to == pl.Int64 and src == pl.String:
        parsed = e.str.strip_chars().cast(pl.Int64, strict=False)
        return parsed if not strict else _strict(e, parsed, "bigint")
    if to == pl.Float64 and src == pl.String:
        parsed = e.str.strip_chars().cast(pl.Float64, strict=False)
        return parsed if not strict else _strict(e, parsed, "double")
    if to == pl.Int64 and src.is_float():  # Trino rounds half away from zero (polars' round is half-even)
        return ((e.abs() + 0.5).floor() * e.sign()).cast(pl.Int64, strict=strict)
    return e.cast(to, strict=strict)


class CastFailed(Exception):
    pass


def _strict(original: pl.Expr, parsed: pl.Expr, type_name: str) -> pl.Expr:
    """Fail the query, as Trino does, when a non-NULL value does not convert."""
    bad = original.is_not_null() & parsed.is_null()

    def check(s: pl.Series) -> pl.Series:
        if s.any():
            raise CastFailed(f"CAST to {type_name} failed: a value cannot be converted (use TRY_CAST to get NULL)")
        return s
    return pl.when(bad.map_batches(check, return_dtype=pl.Boolean)).then(None).otherwise(parsed)


def _cast(node: exp.Cast, ctx: Ctx) -> pl.Expr:
    to = polars_type(node.to)
    if to is None:
        raise ctx.error(node, f"CAST to {node.to.sql(dialect='trino')} is not supported")
    inner = node.this
    if isinstance(inner, exp.Literal) and inner.is_string and to in (TS, pl.Date):
        v = parse_timestamp(inner.this)
        if v is None:
            if isinstance(node, exp.TryCast) or node.args.get("safe"):
                return pl.lit(None, dtype=to)
            raise ctx.error(inner, f"{inner.this!r} is not a {'timestamp' if to == TS else 'date'}")
        return pl.lit(v if to == TS else v.date(), dtype=to)
    e = ctx.expr(inner)
    lenient = isinstance(node, exp.TryCast) or bool(node.args.get("safe"))
    if to == pl.String and _json_valued(inner):
        from .sqlfunctions import json_to_varchar
        return json_to_varchar(e, lenient=lenient)
    return cast(e, ctx.dtype(e), to, strict=not lenient)


def _json_valued(node: exp.Expression) -> bool:
    """Expressions whose value is JSON text (Trino's JSON type): CAST to VARCHAR unwraps a JSON string."""
    if isinstance(node, (exp.JSONExtract, exp.ParseJSON)):
        return True
    return isinstance(node, exp.Anonymous) and node.name.lower() in ("json_array_get", "json_parse", "json_extract")


def _bracket(node: exp.Bracket, ctx: Ctx) -> pl.Expr:
    base = ctx.expr(node.this)
    t = ctx.dtype(base)
    if len(node.expressions) != 1:
        raise ctx.error(node, "subscripts take one index")
    idx_node = node.expressions[0]
    if _is_map(t):
        key = ctx.literal_value(idx_node)
        return map_get(base, str(key), t)
    if isinstance(t, pl.List):
        offset = node.args.get("offset") or 0
        try:
            i = ctx.literal_value(idx_node)
        except Exception:  # noqa: BLE001
            i = None
        if isinstance(i, int):
            i = i - offset if offset else i  # sqlglot stores arr[1] as 0; element_at keeps 1-based with offset=1
            if offset and i < 0:  # element_at(array, -1): from the end
                i = i + offset
            return base.list.get(i, null_on_oob=True)
        idx = ctx.expr(idx_node) - (offset or 0)
        return base.list.get(idx, null_on_oob=True)
    if isinstance(t, pl.Struct):
        i = ctx.literal_value(idx_node)
        return base.struct[int(i) - 1] if isinstance(i, int) else base.struct.field(str(i))
    raise ctx.error(node, f"cannot subscript a {t} value")


def _boolean(node, ctx):
    return pl.lit(node.this, dtype=pl.Boolean)


def _null(node, ctx):
    return pl.lit(None)


def _now(node, ctx):
    return pl.lit(ctx.now, dtype=TS)


def _current_date(node, ctx):
    return pl.lit(ctx.now.date(), dtype=pl.Date)


def _subquery_placeholder(node: exp.Anonymous, ctx: Ctx) -> pl.Expr:
    return ctx.planner.subquery_expr(node, ctx)


def _star(node, ctx):
    raise ctx.error(node, "* is only allowed in SELECT lists and count(*)")


def _window(node, ctx):
    raise ctx.error(node, f"window functions are not allowed in {ctx.clause}")


def _subquery(node, ctx):
    raise ctx.error(node, "this kind of sub-query is not supported here")


_NODES: dict[type, Callable[[Any, Ctx], pl.Expr]] = {
    exp.Column: _column, exp.Identifier: _identifier, exp.Dot: _dot, exp.Literal: _literal,
    exp.Boolean: _boolean, exp.Null: _null, exp.Paren: _paren, exp.Alias: _alias,
    exp.EQ: _binary(lambda a, b: a == b), exp.NEQ: _binary(lambda a, b: a != b),
    exp.GT: _binary(lambda a, b: a > b), exp.GTE: _binary(lambda a, b: a >= b),
    exp.LT: _binary(lambda a, b: a < b), exp.LTE: _binary(lambda a, b: a <= b),
    exp.Add: _add_sub(1), exp.Sub: _add_sub(-1), exp.Mul: _binary(lambda a, b: a * b, coerce=False),
    exp.Div: _div, exp.Mod: _mod, exp.And: _and, exp.Or: _or, exp.Not: _not, exp.Neg: _neg,
    exp.DPipe: lambda n, c: _concat(n, c),
    exp.Is: _is, exp.NullSafeEQ: _null_safe(True), exp.NullSafeNEQ: _null_safe(False),
    exp.Like: lambda n, c: _like(n, c), exp.Escape: _escape, exp.In: _in, exp.Between: _between,
    exp.Case: _case, exp.If: _if, exp.Coalesce: _coalesce, exp.Nullif: _nullif,
    exp.Greatest: _extreme(pl.max_horizontal), exp.Least: _extreme(pl.min_horizontal),
    exp.Cast: _cast, exp.TryCast: _cast, exp.Bracket: _bracket,
    exp.CurrentTimestamp: _now, exp.CurrentDate: _current_date, exp.Star: _star, exp.Window: _window,
    exp.Subquery: _subquery, exp.Exists: _subquery,
}


# ---- aggregates ---------------------------------------------------------------------------------------

def _agg_arg(node: exp.AggFunc, ctx: Ctx) -> tuple[pl.Expr | None, bool]:
    arg = node.this
    distinct = False
    if isinstance(arg, exp.Distinct):
        distinct = True
        if len(arg.expressions) != 1:
            raise ctx.error(node, "DISTINCT aggregates take one argument")
        arg = arg.expressions[0]
    if arg is None or isinstance(arg, exp.Star):
        return None, distinct
    return per_row(ctx.expr(arg), arg), distinct


def per_row(e: pl.Expr, node: exp.Expression) -> pl.Expr:
    """A constant argument (sum(1), count(1)) as one value per row of the group, not one scalar."""
    if not any(True for _ in node.find_all(exp.Column, exp.Identifier)):
        return pl.when(pl.int_range(pl.len()) >= 0).then(e)
    return e


def aggregate(node: exp.Expression, ctx: Ctx) -> pl.Expr:
    """An aggregate call (optionally with FILTER (WHERE ...)) as a polars aggregation expression."""
    cond = None
    if isinstance(node, exp.Filter):
        cond = ctx.expr(node.expression.this).fill_null(False)
        node = node.this
    name = node.name.lower() if isinstance(node, exp.Anonymous) else node.key.lower()
    handler = AGGREGATES.get(name)
    if handler is None:
        raise ctx.error(node, f"aggregate {_name(node)} is not supported")
    x, distinct = _agg_arg(node, ctx) if not isinstance(node, exp.Anonymous) else (
        ctx.expr(node.expressions[0]) if node.expressions else None, False)
    if cond is not None and x is not None:
        x = x.filter(cond)
    return handler(node, ctx, x, distinct, cond)


def _count(node, ctx, x, distinct, cond):
    if x is None:
        return cond.sum().cast(pl.Int64) if cond is not None else pl.len().cast(pl.Int64)
    if distinct:
        return x.drop_nulls().n_unique().cast(pl.Int64)
    return x.count().cast(pl.Int64)


def _sum(node, ctx, x, distinct, cond):
    if distinct:
        x = x.unique()
    return pl.when(x.count() > 0).then(x.sum()).otherwise(None)


def _avg(node, ctx, x, distinct, cond):
    if distinct:
        x = x.unique()
    return x.cast(pl.Float64).mean()


def _min(node, ctx, x, distinct, cond):
    return x.min()


def _max(node, ctx, x, distinct, cond):
    return x.max()


def _approx_distinct(node, ctx, x, distinct, cond):
    return x.drop_nulls().n_unique().cast(pl.Int64)


def _arbitrary(node, ctx, x, distinct, cond):
    return x.drop_nulls().first()


def _count_if(node, ctx, x, distinct, cond):
    return x.fill_null(False).sum().cast(pl.Int64)


def _array_agg(node, ctx, x, distinct, cond):
    # over no rows Trino gives NULL, not an empty array (only a global aggregate can see no rows)
    return pl.when(pl.len() > 0).then((x.unique(maintain_order=True) if distinct else x).implode())


def _by(extreme: str):
    def handler(node, ctx, x, distinct, cond):
        key_node = node.expression if not isinstance(node, exp.Anonymous) else node.expressions[1]
        key = ctx.expr(key_node)
        if cond is not None:
            key = key.filter(cond)
        return x.get(key.arg_max() if extreme == "max" else key.arg_min())
    return handler


def _bool(kind: str):
    def handler(node, ctx, x, distinct, cond):
        return x.all(ignore_nulls=True) if kind == "and" else x.any(ignore_nulls=True)
    return handler


def _stddev(node, ctx, x, distinct, cond):
    return x.cast(pl.Float64).std()


def _variance(node, ctx, x, distinct, cond):
    return x.cast(pl.Float64).var()


AGGREGATES: dict[str, Callable] = {
    "count": _count, "sum": _sum, "avg": _avg, "min": _min, "max": _max,
    "approxdistinct": _approx_distinct, "approx_distinct": _approx_distinct, "anyvalue": _arbitrary,
    "arbitrary": _arbitrary, "any_value": _arbitrary, "countif": _count_if, "count_if": _count_if,
    "arrayagg": _array_agg, "array_agg": _array_agg, "argmax": _by("max"), "max_by": _by("max"),
    "argmin": _by("min"), "min_by": _by("min"), "logicaland": _bool("and"), "bool_and": _bool("and"),
    "every": _bool("and"), "logicalor": _bool("or"), "bool_or": _bool("or"), "stddev": _stddev,
    "stddevsamp": _stddev, "stddev_samp": _stddev, "variance": _variance, "variancesamp": _variance,
    "var_samp": _variance,
}


def is_aggregate(node: exp.Expression) -> bool:
    if isinstance(node, exp.Filter):
        return is_aggregate(node.this)
    if isinstance(node, exp.AggFunc):
        return True
    return isinstance(node, exp.Anonymous) and node.name.lower() in AGGREGATES


__all__ = ["Ctx", "Env", "aggregate", "is_aggregate", "sql_key", "parse_timestamp", "map_get", "is_map", "cast",
           "polars_type", "shift_time", "string_to_timestamp", "function_args", "like_regex", "in_values",
           "CastFailed", "TS", "UTC", "per_row"]
