"""From SQL text to a checked, qualified sqlglot tree: the front end of the query engine.

Steps, each with its own one-line error:
1. store references that are not plain identifiers (`FROM 0fbd6a84-...` ids, ARNs, names with `-`), which
   CloudTrail Lake accepts unquoted, are quoted so the Trino grammar can read them;
2. the text is parsed with sqlglot's Trino dialect; a syntax error names its line and column;
3. anything but a single query is refused as read-only *before* anything is planned or read: Lake's event
   data stores are immutable, like CloudTrail Lake's;
4. tables are resolved against the lake's stores (name, id or ARN) and every column is qualified against the
   CloudTrail Lake schema, so identifiers are case-insensitive and `a.b.c` paths are told apart from
   `table.column` references.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
import threading
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import pyarrow as pa
import sqlglot
from sqlglot import exp
from sqlglot.errors import OptimizeError, ParseError, TokenError
from sqlglot.optimizer.qualify import qualify
from sqlglot.schema import MappingSchema
from sqlglot.tokens import TokenType

from .errors import ReadOnlyError, SqlError
from .schema import EVENT_SCHEMA, FLAT_FIELDS

DIALECT = "trino"
# Physical columns that are not part of the CloudTrail Lake schema: not visible to SQL (SELECT * returns the
# Lake columns only); the planner routes struct paths to the flat copies itself.
HIDDEN_COLUMNS = frozenset(["eventjson", *FLAT_FIELDS])
_WRITE_NODES = (exp.Insert, exp.Update, exp.Delete, exp.Merge, exp.Create, exp.Drop, exp.Alter, exp.Command,
                exp.TruncateTable, exp.Grant, exp.Set, exp.Use, exp.Transaction, exp.Commit, exp.Rollback,
                exp.Copy, exp.LoadData, exp.Pragma, exp.Describe)
_WRITE_VERB = re.compile(r"^\s*(?:--[^\n]*\n\s*|/\*.*?\*/\s*)*(INSERT|UPDATE|DELETE|MERGE|CREATE|DROP|ALTER|TRUNCATE|"
                         r"GRANT|REVOKE|CALL|COMMENT|REFRESH|SET|RESET|USE|START|COMMIT|ROLLBACK|PREPARE|"
                         r"EXECUTE|DEALLOCATE|VACUUM|COPY|REPLACE|UPSERT)\b", re.IGNORECASE | re.DOTALL)
_STORE_REF = re.compile(r"""[^\s,();"'`]+""")
_TOKEN_REPR = re.compile(r"<Token token_type: TokenType\.(\w+), text: (.*?), line: \d+, col: \d+.*?>")
_MISSING = re.compile(r"Required keyword: '(\w+)' missing for <class 'sqlglot\.expressions\.(?:\w+\.)*(\w+)'>")
logging.getLogger("sqlglot").setLevel(logging.ERROR)  # its fallback warnings would reach the user's terminal


def _clean_parse_message(desc: str) -> str:
    """sqlglot's messages, minus its internal reprs: `<Token ... text: FROM ...>` becomes 'FROM'."""
    desc = _TOKEN_REPR.sub(lambda m: "the end of the query" if m.group(1) == "SENTINEL" else repr(m.group(2)), desc)
    desc = _MISSING.sub(lambda m: f"incomplete {m.group(2).upper()} clause", desc)
    return desc


def _sql_type(t: pa.DataType) -> str:
    if pa.types.is_struct(t):
        return "STRUCT<" + ", ".join(f'"{f.name}" {_sql_type(f.type)}' for f in t) + ">"
    if pa.types.is_map(t):
        return f"MAP({_sql_type(t.key_type)}, {_sql_type(t.item_type)})"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return f"ARRAY<{_sql_type(t.value_type)}>"
    if pa.types.is_timestamp(t):
        return "TIMESTAMP"
    if pa.types.is_boolean(t):
        return "BOOLEAN"
    if pa.types.is_integer(t):
        return "BIGINT"
    if pa.types.is_floating(t):
        return "DOUBLE"
    return "VARCHAR"


VISIBLE_SCHEMA: dict[str, str] = {f.name: _sql_type(f.type) for f in EVENT_SCHEMA if f.name not in HIDDEN_COLUMNS}


@dataclass
class Parsed:
    """A checked query: the qualified tree and the stores it reads, by the table name used in the tree."""

    tree: exp.Query
    tables: dict[str, object]  # internal table name -> Store
    sql: str                   # the text that was parsed (after quoting store references)


def position(node: exp.Expression | None) -> tuple[int | None, int | None]:
    """(line, column) of a node in the source, from the token meta sqlglot keeps on identifiers."""
    if node is None:
        return None, None
    for n in [node, *node.find_all(exp.Identifier)]:
        meta = getattr(n, "meta", None) or {}
        if "line" in meta:
            line, end_col = meta["line"], meta.get("col")
            start, end = meta.get("start"), meta.get("end")
            if end_col is not None and start is not None and end is not None:
                return line, end_col - (end - start)
            return line, end_col
    return None, None


def error_at(node: exp.Expression | None, message: str) -> SqlError:
    line, col = position(node)
    return SqlError(message, line, col)


def quote_store_refs(sql: str) -> str:
    """Quote `FROM`/`JOIN` targets that only CloudTrail Lake's grammar accepts bare (ids, ARNs, names with -)."""
    try:
        tokens = sqlglot.tokenize(sql, read=DIALECT)
    except TokenError as e:
        raise SqlError(f"cannot read the query: {str(e).splitlines()[0]}") from None
    out, last = [], 0
    for tok in tokens:
        if tok.token_type not in (TokenType.FROM, TokenType.JOIN):
            continue
        m = _STORE_REF.match(sql, tok.end + 1 + (len(sql[tok.end + 1:]) - len(sql[tok.end + 1:].lstrip())))
        if not m or not re.search(r"[-:/]", m.group(0)) or m.start() < last:
            continue
        out.append(sql[last:m.start()])
        out.append('"' + m.group(0) + '"')
        last = m.end()
    out.append(sql[last:])
    return "".join(out)


def _refuse_writes(statements: list[exp.Expression | None]) -> exp.Query:
    stmts = [s for s in statements if s is not None]
    if len(stmts) != 1:
        raise ReadOnlyError("only one SELECT statement can run at a time; event data stores are read-only")
    tree = stmts[0]
    for node in tree.walk():
        if isinstance(node, _WRITE_NODES):
            kind = node.key.upper() if not isinstance(node, exp.Command) else str(node.this).upper()
            raise ReadOnlyError(f"{kind} is not allowed: event data stores are read-only; only SELECT queries run")
    if not isinstance(tree, exp.Query):
        raise ReadOnlyError(f"{tree.key.upper()} is not allowed: only SELECT queries run on event data stores")
    return tree


# Nesting. sqlglot's parser, its optimizer and Lake's planner recurse once per level of nesting (about 20
# Python frames per parenthesis), so with Python's default limit of 1,000 frames a query nested ~50 deep
# failed with a RecursionError that reached the server as HTTP 500 and a 450 KB traceback (issue 15). Trino
# accepts deep nesting; Lake accepts MAX_NESTING levels of parentheses, checked on the tokens before anything
# recurses, and runs the recursive steps in a thread with a DEEP_STACK_BYTES stack and a recursion limit of
# DEEP_RECURSION frames, enough for that depth. Beyond it the query is refused with one line.
MAX_NESTING = 1000
DEEP_STACK_BYTES = 256 * 2**20  # virtual; 1,000 levels ran in 64 MB
DEEP_RECURSION = 60_000
_STACK_LOCK = threading.Lock()
T = TypeVar("T")


def nesting_depth(tokens: list) -> int:
    """The deepest parenthesis / bracket nesting of a token list (no recursion)."""
    depth = deepest = 0
    for tok in tokens:
        if tok.token_type in (TokenType.L_PAREN, TokenType.L_BRACKET):
            depth += 1
            deepest = max(deepest, depth)
        elif tok.token_type in (TokenType.R_PAREN, TokenType.R_BRACKET):
            depth -= 1
    return deepest


def deep(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`fn(*args, **kwargs)` on a thread with a stack and recursion limit fit for MAX_NESTING levels; a
    RecursionError becomes one SqlError line. The limit is process-wide in Python: it is only ever raised,
    and every other thread's recursion stays bounded by its own (8 MB) stack through the same limit it had
    before for the frames it actually uses."""
    if sys.getrecursionlimit() < DEEP_RECURSION:
        sys.setrecursionlimit(DEEP_RECURSION)
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["value"] = fn(*args, **kwargs)
        except RecursionError:
            box["error"] = SqlError(f"the query is nested too deeply for Lake (at most {MAX_NESTING} levels)")
        except BaseException as e:  # noqa: BLE001 - raised again in the caller's thread
            box["error"] = e

    with _STACK_LOCK:
        old = threading.stack_size(DEEP_STACK_BYTES)
        try:
            worker = threading.Thread(target=work, name="lake-sql-deep", daemon=True)
            worker.start()
        finally:
            threading.stack_size(old)
    worker.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def parse(sql: str) -> tuple[exp.Query, str]:
    """Parse and refuse anything that is not one query. Returns the tree and the text it was parsed from."""
    if not sql or not sql.strip():
        raise SqlError("the query is empty")
    verb = _WRITE_VERB.match(sql)
    if verb:  # refused even when the rest would not parse (e.g. an unquoted store id after INSERT INTO)
        raise ReadOnlyError(f"{verb.group(1).upper()} is not allowed: event data stores are read-only; "
                            "only SELECT queries run")
    text = quote_store_refs(sql)
    try:
        depth = nesting_depth(sqlglot.tokenize(text, read=DIALECT))
    except TokenError as e:
        raise SqlError(f"cannot read the query: {str(e).splitlines()[0]}") from None
    if depth > MAX_NESTING:
        raise SqlError(f"the query nests parentheses {depth} levels deep; Lake accepts at most {MAX_NESTING}")
    return _parse_text(text) if in_deep() else deep(_parse_text, text)


def in_deep() -> bool:
    """Whether this thread is one `deep` started (its callees may recurse MAX_NESTING levels)."""
    return threading.current_thread().name == "lake-sql-deep"


def _parse_text(text: str) -> tuple[exp.Query, str]:
    try:
        statements = sqlglot.parse(text, read=DIALECT)
    except ParseError as e:
        err = e.errors[0] if e.errors else {}
        desc = _clean_parse_message(err.get("description") or str(e).splitlines()[0])
        near = err.get("highlight")
        raise SqlError(f"syntax error: {desc}" + (f" near {near!r}" if near else ""),
                       err.get("line"), err.get("col")) from None
    except TokenError as e:
        raise SqlError(f"cannot read the query: {str(e).splitlines()[0]}") from None
    return _refuse_writes(statements), text


def _table_ref(t: exp.Table) -> str:
    return ".".join(p.name for p in t.parts)


def resolve_tables(tree: exp.Query, lookup) -> dict[str, object]:
    """Replace every store reference by an internal table name; `lookup(ref)` returns a Store or raises.

    A reference without an alias keeps the name it was written with as its alias, so `FROM my_store WHERE
    my_store.eventname = ...` still resolves after the rename."""
    ctes = {c.alias_or_name.lower() for c in tree.find_all(exp.CTE)}
    tables: dict[str, object] = {}
    for t in list(tree.find_all(exp.Table)):
        if isinstance(t.this, (exp.Unnest, exp.Anonymous)) or not t.name:
            continue
        ref = _table_ref(t)
        if not t.args.get("db") and ref.lower() in ctes:
            continue
        try:
            store = lookup(ref)
        except SqlError:
            raise
        except Exception as e:  # NotFound and friends: name the table and where it is
            line, col = position(t)
            raise SqlError(f"table {ref!r} not found: {e}", line, col) from None
        internal = f"__store_{store.id}"
        tables[internal] = store
        alias = t.alias or t.parts[-1].name
        t.set("db", None)
        t.set("catalog", None)
        t.set("this", exp.to_identifier(internal, quoted=True))
        t.set("alias", exp.TableAlias(this=exp.to_identifier(alias.lower(), quoted=True)))
    return tables


@functools.lru_cache(maxsize=64)
def _mapping_schema(tables: tuple[str, ...]) -> MappingSchema:
    """sqlglot's schema object for these store tables. Normalising the 40-column nested schema costs ~1 ms
    per table and qualify() only reads it, so it is built once per set of tables."""
    return MappingSchema({name: VISIBLE_SCHEMA for name in tables}, dialect=DIALECT)


def qualify_tree(tree: exp.Query, tables: dict[str, object]) -> exp.Query:
    """Qualify every column against the Lake schema (case-insensitive), expanding `*`."""
    if not in_deep():
        return deep(qualify_tree, tree, tables)
    try:
        return qualify(tree, schema=_mapping_schema(tuple(sorted(tables))), dialect=DIALECT,
                       validate_qualify_columns=True, quote_identifiers=True, identify=True)
    except OptimizeError as e:
        msg = str(e).splitlines()[0]
        m = re.search(r"Column '?\"?([^'\"]+)\"?'? could not be resolved", msg)
        node = None
        if m:
            node = next((c for c in tree.find_all(exp.Column) if c.name.lower() == m.group(1).lower()), None)
            msg = f"column {m.group(1)!r} cannot be resolved: check the name (see `.schema` in `lake sql`)"
        raise error_at(node, msg) from None
    except (ValueError, KeyError) as e:
        raise SqlError(f"cannot resolve the query: {e}") from None


__all__ = ["deep", "in_deep", "nesting_depth", "MAX_NESTING", "parse", "resolve_tables", "qualify_tree",
           "quote_store_refs", "error_at", "position", "Parsed", "VISIBLE_SCHEMA", "HIDDEN_COLUMNS", "DIALECT"]
