"""A DuckDB oracle for Lake's SQL engine, and the corpus the differential tests run.

Lake speaks CloudTrail Lake SQL (Trino's dialect) and answers from its own planner. To check an answer we ask
DuckDB the same question over the same Parquet segment files: the query is parsed with sqlglot as Trino,
qualified against the store schema (identifiers are case-insensitive, `SELECT *` means the CloudTrail Lake
columns only), annotated with types, rewritten where Trino and DuckDB disagree and sqlglot's transpilation does
not cover it (the `_rw_*` functions below, one per difference, each saying why), and run in DuckDB, with
`TimeZone='UTC'`, over each store's segment files (read once into a table, or as a view). A corpus entry can instead carry its own reviewed DuckDB text
(`-- duckdb:`), for the few cases a tree rewrite cannot express.

Results are compared as values, not as text: both sides become lists of normalised Python tuples (timestamps
to naive UTC at microsecond precision, floats to 9 significant digits, maps to sorted pairs, lists in order
unless the entry says `-- unordered-lists`), compared as multisets; when the outermost query has ORDER BY, the
sequence of sort keys must match too (ties may come in any order). Column count and names (case-insensitive,
Trino's naming: alias, else column or last field name, else `_col<N>`) must match.

Corpus format (`tests/sqlcorpus/<area>.sql`): each entry starts with `-- name: <unique id>`, then optional
directive lines, then the SQL, ended by `;`:

    -- name: deleted_buckets          (unique across the corpus)
    -- dataset: any | ext | gen        (stores `$EDS_ID` stands for; default any = ext and gen)
    -- unordered-lists                 (list values are compared as multisets)
    -- duckdb: SELECT ...              (reviewed DuckDB text used instead of the transpilation; it may continue
    --   ...                            on the comment lines that follow, up to the SQL)
    SELECT ... FROM $EDS_ID ...;

`$EDS_ID` is the event data store placeholder of AWS's published CloudTrail Lake samples; queries that name
stores directly (`gen`, `gen2`, `ext`) run once.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import duckdb
import pyarrow as pa
import sqlglot
from sqlglot import exp
from sqlglot.optimizer.annotate_types import annotate_types
from sqlglot.optimizer.qualify import qualify
from sqlglot.schema import MappingSchema

from lake.schema import EVENT_SCHEMA, FLAT_FIELDS

CORPUS_DIR = Path(__file__).resolve().parent / "sqlcorpus"
PLACEHOLDER = "$EDS_ID"
DATASETS = ("ext", "gen")
HIDDEN = frozenset({"eventjson", *FLAT_FIELDS})
VISIBLE = [f for f in EVENT_SCHEMA if f.name not in HIDDEN]
SIGNIFICANT_DIGITS = 9


class OracleError(Exception):
    """The oracle could not translate or run a query (a corpus bug, or a difference needing an override)."""


# ---- schema ----------------------------------------------------------------------------------------------

def duckdb_columns(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """The visible columns with the DuckDB type each is read as, asked of DuckDB itself (from an empty Arrow
    table of the event schema). Timestamps become plain TIMESTAMP (UTC wall clock), at any depth: CloudTrail
    Lake's eventTime is a `timestamp`, not a `timestamp with time zone`."""
    con.register("oracle_schema_probe", pa.schema(VISIBLE).empty_table())
    rows = con.execute("DESCRIBE SELECT * FROM oracle_schema_probe").fetchall()
    con.unregister("oracle_schema_probe")
    return {name: typ.replace("TIMESTAMP WITH TIME ZONE", "TIMESTAMP") for name, typ, *_ in rows}


def relation_sql(store: str, files: list[str], columns: dict[str, str], *, materialize: bool = False) -> str:
    """A DuckDB view (or, materialized, a table loaded once) exposing exactly the visible columns of a store's
    segment files, each cast to its oracle type."""
    kind = "TABLE" if materialize else "VIEW"
    if not files:  # an empty store: a typed empty relation
        cols = ", ".join(f"CAST(NULL AS {t}) AS {c}" for c, t in columns.items())
        return f'CREATE OR REPLACE {kind} "{store}" AS SELECT {cols} WHERE false'
    cols = ", ".join(f"CAST({c} AS {t}) AS {c}" for c, t in columns.items())
    return f'CREATE OR REPLACE {kind} "{store}" AS SELECT {cols} FROM read_parquet({files!r}, hive_partitioning=false)'


def sqlglot_schema(stores: Iterable[str], columns: dict[str, str]) -> MappingSchema:
    """The schema sqlglot qualifies and types queries with: every store has the visible columns."""
    return MappingSchema({s: dict(columns) for s in stores}, dialect="duckdb")


# ---- rewrites: one per Trino/DuckDB difference sqlglot's transpilation gets wrong -------------------------

def _template(sql: str, **parts: exp.Expression) -> exp.Expression:
    """A DuckDB expression from text with `:name` placeholders, each replaced by a copy of a part."""
    tree = sqlglot.parse_one(sql, read="duckdb")
    for ph in list(tree.find_all(exp.Placeholder)):
        ph.replace(parts[ph.name].copy())
    return tree


def _replace_all(tree: exp.Expression, match: Callable[[exp.Expression], bool],
                 build: Callable[[exp.Expression], exp.Expression]) -> exp.Expression:
    """Replace every matching node, innermost first, so nested calls are rewritten once each."""
    for node in reversed(list(tree.find_all(exp.Expression))):
        if match(node):
            new = build(node)
            if node is tree:
                tree = new
            else:
                node.replace(new)
    return tree


def _anon(name: str) -> Callable[[exp.Expression], bool]:
    return lambda n: isinstance(n, exp.Anonymous) and n.name.lower() == name


def _is_map(node: exp.Expression) -> bool:
    return node.type is not None and node.type.is_type(exp.DataType.Type.MAP)


def _rw_map_cardinality(tree):
    """cardinality(map): sqlglot emits ARRAY_LENGTH, which DuckDB has only for lists; CARDINALITY counts
    map entries."""
    return _replace_all(tree, lambda n: isinstance(n, exp.ArraySize) and _is_map(n.this),
                        lambda n: _template("CARDINALITY(:m)", m=n.this))


def _rw_date_diff_whole_units(tree):
    """date_diff(unit, a, b): Trino counts whole units elapsed (23:00 -> 01:00 is 0 days); DuckDB's DATE_DIFF
    counts unit boundaries crossed (1 day). DuckDB's DATE_SUB has Trino's semantics and argument order."""
    def build(n: exp.DateDiff) -> exp.Expression:
        unit = exp.Literal.string((n.text("unit") or "day").lower())
        return exp.Anonymous(this="DATE_SUB", expressions=[unit, n.expression.copy(), n.this.copy()])
    return _replace_all(tree, lambda n: isinstance(n, exp.DateDiff), build)


def _rw_json_extract(tree):
    """json_extract on text that is not JSON: Trino returns NULL, DuckDB raises."""
    return _replace_all(tree, lambda n: isinstance(n, exp.JSONExtract) and not n.meta.get("oracle"),
                        lambda n: _template("CASE WHEN json_valid(:j) THEN :e END", j=n.this,
                                            e=_mark(n.copy())))


def _mark(n: exp.Expression) -> exp.Expression:
    n.meta["oracle"] = True
    return n


def _rw_json_extract_scalar(tree):
    """json_extract_scalar: Trino returns NULL when the value at the path is an object or array (DuckDB's ->>
    returns its JSON text) and when the input is not JSON (DuckDB raises)."""
    def build(n: exp.JSONExtractScalar) -> exp.Expression:
        return _template("CASE WHEN json_valid(:j) AND json_type(:j, :p) NOT IN ('OBJECT', 'ARRAY') THEN :e END",
                         j=n.this, p=n.expression, e=_mark(n.copy()))
    return _replace_all(tree, lambda n: isinstance(n, exp.JSONExtractScalar) and not n.meta.get("oracle"), build)


def _rw_json_array_length(tree):
    """json_array_length: Trino returns NULL for non-arrays and non-JSON; DuckDB returns 0 or raises."""
    return _replace_all(tree, _anon("json_array_length"), lambda n: _template(
        "CASE WHEN json_valid(:j) AND json_type(:j) = 'ARRAY' THEN json_array_length(:j) END", j=n.expressions[0]))


def _rw_json_array_get(tree):
    """json_array_get(json, i): DuckDB has no such function; json_extract with `$[i]` (0-based) or `$[#-k]`
    (from the end, as Trino's negative index) gives the element's JSON text; NULL for non-JSON input."""
    def build(n: exp.Anonymous) -> exp.Expression:
        j, i = n.expressions
        return _template("CASE WHEN json_valid(:j) THEN json_extract(:j, CASE WHEN :i >= 0 THEN '$[' || CAST(:i AS "
                         "VARCHAR) || ']' ELSE '$[#' || CAST(:i AS VARCHAR) || ']' END) END", j=j, i=i)
    return _replace_all(tree, _anon("json_array_get"), build)


def _rw_json_array_contains(tree):
    """json_array_contains(json, v): missing in DuckDB; an element matches when its JSON text equals v's
    (so 2 matches 2 and 'a' matches "a", as Trino compares by type). NULL for non-arrays, as Trino."""
    def build(n: exp.JSONArrayContains) -> exp.Expression:
        return _template("CASE WHEN json_valid(:j) AND json_type(:j) = 'ARRAY' THEN list_contains(CAST(json_extract("
                         ":j, '$[*]') AS VARCHAR[]), CAST(to_json(:v) AS VARCHAR)) END", j=n.this, v=n.expression)
    return _replace_all(tree, lambda n: isinstance(n, exp.JSONArrayContains), build)


def _rw_is_json_scalar(tree):
    """is_json_scalar: missing in DuckDB; a JSON value is scalar when it is neither object nor array."""
    return _replace_all(tree, _anon("is_json_scalar"), lambda n: _template(
        "CASE WHEN json_valid(:j) THEN json_type(:j) NOT IN ('OBJECT', 'ARRAY') END", j=n.expressions[0]))


def _rw_regexp_extract_no_match(tree):
    """regexp_extract: Trino returns NULL when the pattern does not match, DuckDB returns ''."""
    def build(n: exp.RegexpExtract) -> exp.Expression:
        return _template("CASE WHEN regexp_matches(:s, :p) THEN :e END", s=n.this, p=n.expression,
                         e=_mark(n.copy()))
    return _replace_all(tree, lambda n: isinstance(n, exp.RegexpExtract) and not n.meta.get("oracle"), build)


def _rw_regexp_replace_groups(tree):
    """regexp_replace replacement: Trino (Java) writes group references as $1, DuckDB (RE2) as \\1."""
    def build(n: exp.RegexpReplace) -> exp.Expression:
        rep = n.args.get("replacement")
        if isinstance(rep, exp.Literal) and rep.is_string:
            n.set("replacement", exp.Literal.string(re.sub(r"\$(\d)", r"\\\1", rep.this)))
        return n
    return _replace_all(tree, lambda n: isinstance(n, exp.RegexpReplace), build)


def _rw_split_part_past_end(tree):
    """split_part(s, d, i) past the last field: Trino returns NULL, DuckDB ''. A list subscript out of range
    is NULL in DuckDB."""
    def build(n: exp.SplitPart) -> exp.Expression:
        # Anonymous calls, not a subscript: sqlglot would shift a subscript's index by the dialect offset.
        parts = exp.Anonymous(this="string_split", expressions=[n.this.copy(), n.args["delimiter"].copy()])
        return exp.Anonymous(this="list_extract", expressions=[parts, n.args["part_index"].copy()])
    return _replace_all(tree, lambda n: isinstance(n, exp.SplitPart), build)


def _rw_slice_length(tree):
    """slice(a, start, length): Trino's third argument is a length, DuckDB's list_slice takes an end index
    (inclusive). Valid for positive starts and for negative starts that stay inside the list."""
    def build(n: exp.ArraySlice) -> exp.Expression:
        return _template("list_slice(:a, :s, :s + :n - 1)", a=n.this, s=n.args["start"], n=n.args["end"])
    return _replace_all(tree, lambda n: isinstance(n, exp.ArraySlice), build)


def _rw_array_distinct_order(tree):
    """array_distinct: Trino keeps first occurrences in order; DuckDB's list_distinct does not keep order and
    drops NULL. Keep an element when its first position is its own position."""
    return _replace_all(tree, lambda n: isinstance(n, exp.ArrayDistinct), lambda n: _template(
        "list_filter(:a, lambda x, i: list_position(:a, x) = i)", a=n.this))


def _rw_array_extreme_null(tree):
    """array_max/array_min: Trino returns NULL when the array holds a NULL; DuckDB's list_max skips NULLs."""
    def build(n: exp.Expression) -> exp.Expression:
        fn = "list_max" if isinstance(n, exp.ArrayMax) else "list_min"
        return _template(f"CASE WHEN len(list_filter(:a, lambda x: x IS NULL)) > 0 THEN NULL ELSE {fn}(:a) END",
                         a=n.this)
    return _replace_all(tree, lambda n: isinstance(n, (exp.ArrayMax, exp.ArrayMin)), build)


def _rw_array_sort_nulls_last(tree):
    """array_sort: Trino sorts NULLs last; spell it out so DuckDB's default_null_order cannot matter."""
    return _replace_all(tree, lambda n: isinstance(n, exp.ArraySort) and n.args.get("expression") is None,
                        lambda n: _template("list_sort(:a, 'ASC', 'NULLS LAST')", a=n.this))


def _rw_approx_distinct_exact(tree):
    """approx_distinct: DuckDB's HyperLogLog and Lake's need not agree on an estimate; the corpus keeps
    cardinalities small, where an exact count is the only defensible answer (Trino's error bound is 2.3%)."""
    return _replace_all(tree, lambda n: isinstance(n, exp.ApproxDistinct),
                        lambda n: exp.Count(this=exp.Distinct(expressions=[n.this.copy()])))


def _rw_max_by_null_values(tree):
    """max_by/min_by(x, y): Trino returns x of the extreme row even when x is NULL; DuckDB's arg_max skips
    rows whose x is NULL, arg_max_null does not."""
    def build(n: exp.Expression) -> exp.Expression:
        name = "arg_max_null" if isinstance(n, exp.ArgMax) else "arg_min_null"
        return exp.Anonymous(this=name, expressions=[n.this.copy(), n.expression.copy()])
    return _replace_all(tree, lambda n: isinstance(n, (exp.ArgMax, exp.ArgMin)) and not n.args.get("count"), build)


def _rw_to_iso8601(tree):
    """to_iso8601: missing in DuckDB. Trino formats a date as YYYY-MM-DD, a timestamp(3) (CloudTrail Lake's
    eventTime) as YYYY-MM-DDTHH:MM:SS.mmm and a timestamp with time zone with its offset; the oracle handles
    UTC values only (trailing Z), which is what the corpus passes."""
    def build(n: exp.Anonymous) -> exp.Expression:
        arg = n.expressions[0]
        t = arg.type
        if t is not None and t.is_type(exp.DataType.Type.DATE):
            return _template("strftime(:x, '%Y-%m-%d')", x=arg)
        if isinstance(arg, exp.FromISO8601Timestamp) or (t is not None and t.is_type(exp.DataType.Type.TIMESTAMPTZ)):
            return _template("strftime(timezone('UTC', :x), '%Y-%m-%dT%H:%M:%S.%gZ')", x=arg)
        return _template("strftime(:x, '%Y-%m-%dT%H:%M:%S.%g')", x=arg)
    return _replace_all(tree, _anon("to_iso8601"), build)


def _rw_count_if_empty(tree):
    """count_if over no rows: Trino returns 0 (it is a count), DuckDB's COUNT_IF returns NULL (it is a sum)."""
    return _replace_all(tree, lambda n: isinstance(n, exp.CountIf), lambda n: _template(
        "COUNT(CASE WHEN :c THEN 1 END)", c=n.this))


_INTEGER_TYPES = (exp.DataType.Type.TINYINT, exp.DataType.Type.SMALLINT, exp.DataType.Type.INT,
                  exp.DataType.Type.BIGINT)


def _rw_try_cast_integer_text(tree):
    """TRY_CAST(text AS integer): Trino parses with Long.parseLong, so only [+-]digits convert ('12.5' gives
    NULL); DuckDB rounds a decimal string ('12.5' gives 13). Text is a VARCHAR expression or a map value."""
    def match(n):
        if not (isinstance(n, exp.TryCast) and n.to.is_type(*_INTEGER_TYPES)):
            return False
        src = n.this
        return isinstance(src, exp.Bracket) or (src.type is not None and src.type.is_type(*exp.DataType.TEXT_TYPES))

    def build(n):
        guarded = n.copy()
        guarded.meta["oracle"] = True
        return _template("CASE WHEN regexp_matches(:x, '^[+-]?[0-9]+$') THEN :c END", x=n.this, c=guarded)
    return _replace_all(tree, lambda n: match(n) and not n.meta.get("oracle"), build)


def _rw_extract_dow_iso(tree):
    """EXTRACT(DOW | DAY_OF_WEEK FROM t): Trino's is ISO (Monday 1 .. Sunday 7); sqlglot emits DuckDB's
    DAYOFWEEK (Sunday 0 .. Saturday 6)."""
    def match(n):
        return isinstance(n, exp.Extract) and n.this.name.upper() in ("DOW", "DAY_OF_WEEK", "DAYOFWEEK")
    return _replace_all(tree, match, lambda n: exp.Extract(this=exp.var("ISODOW"), expression=n.expression.copy()))


REWRITES: list[Callable[[exp.Expression], exp.Expression]] = [
    _rw_array_extreme_null,
    _rw_map_cardinality, _rw_date_diff_whole_units, _rw_json_extract, _rw_json_extract_scalar,
    _rw_json_array_length, _rw_json_array_get, _rw_json_array_contains, _rw_is_json_scalar,
    _rw_regexp_extract_no_match, _rw_regexp_replace_groups, _rw_split_part_past_end, _rw_slice_length,
    _rw_array_distinct_order, _rw_array_sort_nulls_last, _rw_approx_distinct_exact, _rw_max_by_null_values,
    _rw_to_iso8601, _rw_extract_dow_iso, _rw_count_if_empty, _rw_try_cast_integer_text,
]


# ---- translation -------------------------------------------------------------------------------------------

@dataclass
class Translation:
    """A Trino query made ready for DuckDB, with what the comparison needs to know about its result."""
    duckdb_sql: str
    names: list[str]                      # Trino's output column names, lower-case
    order_keys: list[int | None] | None   # output column index per outermost ORDER BY key; None: unordered
    limit: bool                           # outermost query has LIMIT or OFFSET


_COL_N = re.compile(r"^_col_?(\d+)$")
_PENDING = "__oracle_col_"


def _leftmost_select(q: exp.Expression) -> exp.Select:
    while isinstance(q, (exp.SetOperation, exp.Subquery)):
        q = q.this
    if not isinstance(q, exp.Select):
        raise OracleError(f"not a SELECT query: {q.key}")
    return q


def _name_unaliased(tree: exp.Expression) -> None:
    """Give every unaliased computed projection of the outermost SELECT a pending alias, so that after
    qualification it can be named as Trino names it (`_col<position>`); sqlglot would otherwise invent names
    (`key` for element_at(m, 'key')). A column or field reference keeps its own (last) name."""
    sel = _leftmost_select(tree)
    for i, p in enumerate(sel.expressions):
        named = isinstance(p, (exp.Alias, exp.Star)) or \
            (isinstance(p, exp.Column) and isinstance(p.this, (exp.Identifier, exp.Star))) or \
            (isinstance(p, exp.Dot) and isinstance(p.expression, exp.Identifier))
        if named:
            continue
        p.replace(exp.alias_(p.copy(), f"{_PENDING}{i}"))


def _finish_names(tree: exp.Expression) -> list[str]:
    sel = _leftmost_select(tree)
    names = []
    renames = {}
    for pos, p in enumerate(sel.expressions):
        name = p.alias_or_name
        if name.startswith(_PENDING):
            renames[name] = f"_col{pos}"
            name = f"_col{pos}"
        m = _COL_N.match(name)
        names.append((f"_col{m.group(1)}" if m else name).lower())
    if renames:
        for ident in tree.find_all(exp.Identifier):
            if ident.this in renames:
                ident.set("this", renames[ident.this])
    return names


def _order_keys(tree: exp.Expression, names: list[str]) -> list[int | None] | None:
    order = tree.args.get("order")
    if not order:
        return None
    projections = [p.this if isinstance(p, exp.Alias) else p for p in _leftmost_select(tree).expressions]
    keys: list[int | None] = []
    for o in order.expressions:
        k = o.this
        idx = None
        if isinstance(k, exp.Literal) and k.is_int:
            idx = int(k.this) - 1
        elif isinstance(k, exp.Column) and not k.table and k.name.lower() in names:
            idx = names.index(k.name.lower())
        else:
            for i, p in enumerate(projections):
                if p == k:
                    idx = i
                    break
        keys.append(idx)
    return keys


def tables_of(sql: str) -> set[str]:
    """The stores a query reads (table names that are not its own CTEs), lower-case."""
    tree = sqlglot.parse_one(sql, read="trino")
    ctes = {c.alias_or_name.lower() for c in tree.find_all(exp.CTE)}
    return {t.name.lower() for t in tree.find_all(exp.Table) if t.name and t.name.lower() not in ctes}


def translate(sql: str, schema: MappingSchema) -> Translation:
    """Transpile one Trino SELECT to DuckDB text with the oracle's rewrites applied."""
    try:
        trees = sqlglot.parse(sql, read="trino")
    except sqlglot.errors.SqlglotError as e:
        raise OracleError(f"sqlglot cannot parse the query: {str(e).splitlines()[0]}") from None
    trees = [t for t in trees if t is not None]
    if len(trees) != 1:
        raise OracleError(f"expected one statement, got {len(trees)}")
    tree = trees[0]
    _name_unaliased(tree)
    try:
        tree = qualify(tree, schema=schema, dialect="trino", validate_qualify_columns=True)
        tree = annotate_types(tree, schema=schema, dialect="trino")
    except sqlglot.errors.SqlglotError as e:
        raise OracleError(f"sqlglot cannot qualify the query: {str(e).splitlines()[0]}") from None
    names = _finish_names(tree)
    keys = _order_keys(tree, names)
    for rw in REWRITES:
        tree = rw(tree)
    return Translation(duckdb_sql=tree.sql("duckdb"), names=names, order_keys=keys,
                       limit=bool(tree.args.get("limit") or tree.args.get("offset")))


# ---- running -----------------------------------------------------------------------------------------------

@dataclass
class Expected:
    """DuckDB's answer to a query, with what is needed to compare Lake's answer against it."""
    names: list[str]
    table: pa.Table
    order_keys: list[int | None] | None
    duckdb_sql: str


class Oracle:
    """DuckDB relations over a lake's stores, and the translation of Trino queries onto them.

    By default each store's segment files are read once into a DuckDB table (`materialize`): the rows are
    exactly those of the Parquet files, and a corpus run does not re-read a hundred small segments per
    query (12 s of DuckDB time instead of under 1 s). Answers are cached per (query, override)."""

    def __init__(self, lake, stores: Iterable[str], *, materialize: bool = True):
        self.stores = list(stores)
        self._cache: dict[tuple[str, str | None], Expected] = {}
        self.con = duckdb.connect()
        self.con.execute("SET TimeZone='UTC'")
        self.con.execute("SET default_null_order='nulls_last'")
        self.con.execute("SET threads=2")
        columns = duckdb_columns(self.con)
        for name in self.stores:
            st = lake.store(name)
            self.con.execute(relation_sql(name, st.files(st.snapshot()), columns, materialize=materialize))
        self.schema = sqlglot_schema(self.stores, columns)

    def translate(self, sql: str) -> Translation:
        return translate(sql, self.schema)

    def execute(self, duckdb_sql: str) -> pa.Table:
        try:
            return self.con.sql(duckdb_sql).to_arrow_table()
        except duckdb.Error as e:
            raise OracleError(f"DuckDB failed: {str(e).splitlines()[0]}\n{duckdb_sql}") from None

    def run(self, sql: str, override: str | None = None) -> Expected:
        """DuckDB's answer to a Trino query (or to the reviewed DuckDB text `override`)."""
        if (sql, override) in self._cache:
            return self._cache[(sql, override)]
        tr = self.translate(sql)
        duck = override if override else tr.duckdb_sql
        table = self.execute(duck)
        if table.num_columns != len(tr.names):
            raise OracleError(f"DuckDB returned {table.num_columns} columns, the query has {len(tr.names)}")
        out = Expected(names=tr.names, table=table, order_keys=tr.order_keys, duckdb_sql=duck)
        self._cache[(sql, override)] = out
        return out

    def limit_boundary_ties(self, sql: str, override: str | None = None) -> str | None:
        """For a query with ORDER BY and LIMIT/OFFSET, a message when rows tie on the sort keys across the
        LIMIT/OFFSET boundary (the answer is then not determined by the query); None when it is."""
        tr = self.translate(sql)
        if not tr.order_keys or not tr.limit or None in tr.order_keys:
            return None
        tree = sqlglot.parse_one(override, read="duckdb") if override else sqlglot.parse_one(tr.duckdb_sql,
                                                                                              read="duckdb")
        limit, offset = tree.args.get("limit"), tree.args.get("offset")
        n = int(limit.expression.this) if limit is not None else None
        off = int(offset.expression.this) if offset is not None else 0
        tree.set("limit", None)
        tree.set("offset", None)
        rows = rows_of(self.execute(tree.sql("duckdb")))
        keys = [tuple(r[i] for i in tr.order_keys) for r in rows]
        cuts = [off] + ([off + n] if n is not None else [])
        for c in cuts:
            if 0 < c < len(keys) and keys[c - 1] == keys[c]:
                return f"rows {c} and {c + 1} tie on the ORDER BY keys {keys[c]!r} at a LIMIT/OFFSET boundary"
        return None


# ---- normalisation and comparison ------------------------------------------------------------------------

def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t) or \
        getattr(pa.types, "is_list_view", lambda _: False)(t) or \
        getattr(pa.types, "is_large_list_view", lambda _: False)(t)


def _is_kv_list(t: pa.DataType) -> bool:
    """A list of {key, value} structs: how polars (which has no map type) returns a map."""
    return _is_list(t) and pa.types.is_struct(t.value_type) and \
        sorted(f.name for f in t.value_type) == ["key", "value"]


def _sort_key(v: Any) -> tuple:
    return (v is None, type(v).__name__, repr(v))


def _scalar(v: Any) -> Any:
    if isinstance(v, float):
        if math.isnan(v):
            return "NaN"
        if math.isinf(v) or v == 0:
            return v
        return float(f"{v:.{SIGNIFICANT_DIGITS}g}")
    if isinstance(v, decimal.Decimal):
        if v == v.to_integral_value():
            return int(v)
        return _scalar(float(v))
    if isinstance(v, dt.datetime):
        if v.tzinfo is not None:
            v = v.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return v
    return v


def normalise(v: Any, t: pa.DataType, unordered_lists: bool = False) -> Any:
    """One value of Arrow type t in comparable form (hashable, order-insensitive where order means nothing)."""
    if v is None:
        return None
    if pa.types.is_map(t):
        pairs = [(normalise(k, t.key_type, unordered_lists), normalise(x, t.item_type, unordered_lists))
                 for k, x in v]
        return ("<map>", tuple(sorted(pairs, key=_sort_key)))
    if _is_kv_list(t):
        kt = t.value_type.field("key").type
        vt = t.value_type.field("value").type
        pairs = [(normalise(e["key"], kt, unordered_lists), normalise(e["value"], vt, unordered_lists))
                 for e in v]
        return ("<map>", tuple(sorted(pairs, key=_sort_key)))
    if pa.types.is_struct(t):
        return ("<struct>", tuple(sorted((f.name.lower(), normalise(v.get(f.name), f.type, unordered_lists))
                                         for f in t)))
    if _is_list(t):
        items = [normalise(x, t.value_type, unordered_lists) for x in v]
        return tuple(sorted(items, key=_sort_key)) if unordered_lists else tuple(items)
    return _scalar(v)


def rows_of(table: pa.Table, unordered_lists: bool = False) -> list[tuple]:
    cols = [[normalise(v, col.type, unordered_lists) for v in col.to_pylist()] for col in table.columns]
    return list(zip(*cols)) if cols else [() for _ in range(table.num_rows)]


def _sample(rows: Iterable[tuple], n: int = 5) -> str:
    out = sorted(rows, key=lambda r: repr(r))[:n]
    return "\n".join(f"    {r!r}"[:400] for r in out)


def compare(got: pa.Table, expected: Expected, *, unordered_lists: bool = False) -> None:
    """Raise AssertionError naming the first difference between Lake's answer and DuckDB's."""
    got_names = [n.lower() for n in got.column_names]
    if len(got_names) != len(expected.names):
        raise AssertionError(f"column count: Lake {len(got_names)} {got_names}, expected {len(expected.names)} "
                             f"{expected.names}")
    if got_names != expected.names:
        raise AssertionError(f"column names: Lake {got_names}, expected {expected.names}")
    mine = rows_of(got, unordered_lists)
    theirs = rows_of(expected.table, unordered_lists)
    a, b = Counter(mine), Counter(theirs)
    if a != b:
        only_lake, only_duck = a - b, b - a
        raise AssertionError(
            f"rows differ: Lake {len(mine)}, DuckDB {len(theirs)}; {sum(only_lake.values())} only in Lake, "
            f"{sum(only_duck.values())} only in DuckDB\n  only in Lake:\n{_sample(only_lake.elements())}\n"
            f"  only in DuckDB:\n{_sample(only_duck.elements())}\n  DuckDB SQL: {expected.duckdb_sql}")
    keys = [k for k in (expected.order_keys or [])]
    if None in keys:
        keys = keys[:keys.index(None)]
    if keys:
        ka = [tuple(r[i] for i in keys) for r in mine]
        kb = [tuple(r[i] for i in keys) for r in theirs]
        if ka != kb:
            first = next(i for i, (x, y) in enumerate(zip(ka, kb)) if x != y)
            raise AssertionError(f"ORDER BY: row {first + 1} has sort keys {ka[first]!r} in Lake, "
                                 f"{kb[first]!r} in DuckDB")


def to_arrow(df) -> pa.Table:
    """Lake's answer (a polars DataFrame, or anything with to_arrow) as an Arrow table."""
    return df if isinstance(df, pa.Table) else df.to_arrow()


# ---- corpus ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CorpusQuery:
    area: str              # file stem
    name: str
    sql: str               # with $EDS_ID when written for any store
    dataset: str           # any | ext | gen
    unordered_lists: bool
    duckdb: str | None
    line: int

    def datasets(self) -> list[str]:
        """The stores `$EDS_ID` stands for in the runs of this query; one run when it names stores itself."""
        if PLACEHOLDER not in self.sql:
            return [self.dataset if self.dataset != "any" else "gen"]
        return list(DATASETS) if self.dataset == "any" else [self.dataset]

    def bind(self, store: str) -> tuple[str, str | None]:
        """The query (and its DuckDB override) with `$EDS_ID` replaced by a store name."""
        sub = (lambda s: s.replace(PLACEHOLDER, store)) if PLACEHOLDER in self.sql else (lambda s: s)
        return sub(self.sql), (sub(self.duckdb) if self.duckdb else None)


_DIRECTIVE = re.compile(r"^--\s*(name|dataset|duckdb|unordered-lists)\b:?\s*(.*)$")


def parse_corpus_file(path: Path) -> list[CorpusQuery]:
    out: list[CorpusQuery] = []
    entry: dict | None = None

    def flush():
        if entry is None:
            return
        sql = "\n".join(entry["body"]).strip()
        while sql.endswith(";"):
            sql = sql[:-1].rstrip()
        if not sql:
            raise ValueError(f"{path}:{entry['line']}: entry {entry['name']!r} has no SQL")
        out.append(CorpusQuery(area=path.stem, name=entry["name"], sql=sql, dataset=entry["dataset"],
                               unordered_lists=entry["unordered"],
                               duckdb="\n".join(entry["duckdb"]).strip() or None, line=entry["line"]))

    in_duck = False
    for no, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.rstrip()
        m = _DIRECTIVE.match(line.strip()) if line.lstrip().startswith("--") else None
        if m and m.group(1) == "name":
            flush()
            entry = {"name": m.group(2).strip(), "dataset": "any", "unordered": False, "duckdb": [],
                     "body": [], "line": no}
            in_duck = False
            continue
        if entry is None:
            continue  # file header comments
        if not entry["body"]:
            if m and m.group(1) == "dataset":
                ds = m.group(2).strip()
                if ds not in ("any", *DATASETS):
                    raise ValueError(f"{path}:{no}: dataset must be any, ext or gen, not {ds!r}")
                entry["dataset"] = ds
                in_duck = False
                continue
            if m and m.group(1) == "unordered-lists":
                entry["unordered"] = True
                in_duck = False
                continue
            if m and m.group(1) == "duckdb":
                entry["duckdb"].append(m.group(2))
                in_duck = True
                continue
            if line.lstrip().startswith("--"):
                if in_duck:
                    entry["duckdb"].append(line.lstrip()[2:])
                continue  # description
            if not line.strip():
                continue
        entry["body"].append(line)
    flush()
    return out


def load_corpus(directory: Path = CORPUS_DIR) -> list[CorpusQuery]:
    """Every corpus entry, file by file; names must be unique across the corpus."""
    queries = [q for f in sorted(directory.glob("*.sql")) for q in parse_corpus_file(f)]
    seen: dict[str, CorpusQuery] = {}
    for q in queries:
        if q.name in seen:
            raise ValueError(f"corpus name {q.name!r} is used twice ({seen[q.name].area}, {q.area})")
        seen[q.name] = q
    return queries


# ---- the test lake -----------------------------------------------------------------------------------------

GEN_END = dt.datetime(2024, 3, 4, tzinfo=dt.timezone.utc)
GEN2_END = dt.datetime(2024, 3, 5, tzinfo=dt.timezone.utc)
IMPORT_NOW = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
_LAKES: dict[str, Any] = {}


def build_lake(root: Path) -> tuple[Any, list[str]]:
    """A lake under `root` with stores gen (20k generated events over 3 days), gen2 (5k over 2 days, the same
    accounts and principals, one day overlapping gen) and, when ../shared is present, ext (every external
    real data set). Built once per process per root; returns the lake and its store names."""
    key = str(root)
    if key in _LAKES:
        return _LAKES[key]
    from lake import connect
    from lake.datagen import generate_dataset
    from lake.importer import Importer
    from tests import external

    root.mkdir(parents=True, exist_ok=True)
    src = root / "src"
    lk = connect(str(root / "lake"))
    ready = root / "READY"
    if ready.exists():  # built by an earlier process (a reused directory)
        _LAKES[key] = (lk, ready.read_text().split())
        return _LAKES[key]
    generate_dataset(str(src / "gen"), events=20_000, days=3, accounts=2, regions=2, seed=42, end=GEN_END,
                     workers=1)
    generate_dataset(str(src / "gen2"), events=5_000, days=2, accounts=2, regions=2, seed=42, end=GEN2_END,
                     workers=1)
    names = ["gen", "gen2"]
    if external.available():
        external.write_importable(src / "ext")
        names.append("ext")
    for name in names:
        st = lk.create_store(name, retention_days=3653)
        Importer(st, [str(src / name)], workers=1, now=IMPORT_NOW).run()
    ready.write_text(" ".join(names))
    _LAKES[key] = (lk, names)
    return lk, names
