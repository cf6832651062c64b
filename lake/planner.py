"""Relational planning: a qualified sqlglot query becomes one polars LazyFrame.

Each FROM item becomes a frame whose columns are named `<alias>.<column>`, so joined relations never clash
and every qualified column reference maps to exactly one polars column (`Env`). A SELECT is then planned in
SQL's logical order: FROM (scans, derived tables, CTEs, joins, UNNEST) -> WHERE -> GROUP BY/aggregates ->
HAVING -> window functions -> SELECT list -> DISTINCT -> ORDER BY -> OFFSET/LIMIT.

Sub-queries: uncorrelated ones are planned on their own and evaluated once (their values become constants of
the outer plan, which keeps Trino's NULL semantics for IN/NOT IN); correlated ones are first rewritten into
joins by sqlglot's `unnest_subqueries`. Store scans are pruned with the WHERE clause's bounds before any file
is opened (`lake.pruning`), and polars then pushes projections and predicates into the Parquet reader.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import polars as pl
from sqlglot import exp
from sqlglot.optimizer.unnest_subqueries import unnest_subqueries

from . import pruning
from .errors import SqlError
from .schema import EVENT_SCHEMA
from .sqlexpr import Ctx, Env, aggregate, in_values, is_aggregate, per_row, sql_key
from .sqlparse import HIDDEN_COLUMNS, error_at
from .store import EMPTY_EVENTS

_SCAN_COLUMNS = [f.name for f in EVENT_SCHEMA if f.name != "eventjson"]
_MAP_COLUMNS = {c for c, t in EMPTY_EVENTS.schema.items() if isinstance(t, pl.Map)}


def _scan_column(c: str) -> pl.Expr:
    """Map columns are read as List(Struct{key, value}) (`map.entries()`, no copy): one representation for
    every map function, and the one polars' list kernels work on."""
    return pl.col(c).map.entries() if c in _MAP_COLUMNS else pl.col(c)


_SCAN_SCHEMA = dict(EMPTY_EVENTS.lazy().select([_scan_column(c) for c in _SCAN_COLUMNS]).collect_schema())


@dataclass
class Rel:
    """A planned relation: its frame, what its columns are called in SQL, and (for FROM items) by whom."""

    lf: pl.LazyFrame
    env: Env
    outputs: list[tuple[str, str]] = field(default_factory=list)  # (SQL name, polars column), in order


@dataclass
class ScanInfo:
    """What one store scan read, for EXPLAIN and the query statistics."""

    alias: str
    store: str
    segments: int
    segments_skipped: int
    bytes: int
    bytes_skipped: int
    rows: int
    rows_skipped: int
    bounds: list[str]


class Planner:
    def __init__(self, tables: dict[str, Any], *, now: datetime, storage_options: dict | None = None):
        self.tables = tables
        self.now = now
        self.scans: list[ScanInfo] = []
        self.subqueries: dict[int, exp.Expression] = {}
        self._ids = itertools.count()
        self._ctes: list[dict[str, Rel]] = [{}]

    # -- entry ------------------------------------------------------------------------------------------
    def plan(self, tree: exp.Query) -> Rel:
        tree = self._extract_uncorrelated(tree)
        try:
            tree = unnest_subqueries(tree)
        except Exception as e:  # noqa: BLE001 - sqlglot could not rewrite it: say which construct
            raise SqlError(f"this correlated sub-query is not supported: {str(e).splitlines()[0]}") from None
        return self.query(tree)

    def query(self, node: exp.Expression) -> Rel:
        with_ = node.args.get("with_") or node.args.get("with")
        if with_ is not None:
            self._ctes.append(dict(self._ctes[-1]))
            try:
                for cte in with_.expressions:
                    if with_.args.get("recursive"):
                        raise error_at(cte, "WITH RECURSIVE is not supported")
                    rel = self.query(cte.this)
                    names = [c.name for c in (cte.args.get("alias").columns if cte.args.get("alias") else [])]
                    if names:
                        rel = Rel(rel.lf, rel.env, [(n, c) for n, (_, c) in zip(names, rel.outputs)])
                    self._ctes[-1][cte.alias_or_name.lower()] = rel
                return self._query_body(node)
            finally:
                self._ctes.pop()
        return self._query_body(node)

    def _query_body(self, node: exp.Expression) -> Rel:
        if isinstance(node, exp.Select):
            return self.select(node)
        if isinstance(node, (exp.Union, exp.Except, exp.Intersect)):
            return self._set_op(node)
        if isinstance(node, exp.Subquery):
            rel = self.query(node.this)
            return self._order_limit(node, rel)
        if isinstance(node, exp.Values):
            return self._values(node)
        raise error_at(node, f"{node.key.upper()} is not supported as a query")

    # -- sub-queries ------------------------------------------------------------------------------------
    def _extract_uncorrelated(self, tree: exp.Expression) -> exp.Expression:
        """Replace uncorrelated IN/EXISTS/scalar sub-queries by placeholders evaluated once."""
        for node in list(tree.find_all(exp.Subquery, exp.Exists, exp.In)):
            if node.parent is None and node is not tree:
                continue
            if isinstance(node, exp.In):
                q = node.args.get("query")
                if q is None or _correlated(q):
                    continue
                k = next(self._ids)
                self.subqueries[k] = q.this if isinstance(q, exp.Subquery) else q
                node.replace(exp.Anonymous(this="__lake_in", expressions=[node.this.copy(), exp.Literal.number(k)]))
            elif isinstance(node, exp.Exists):
                if _correlated(node.this):
                    continue
                k = next(self._ids)
                self.subqueries[k] = node.this
                node.replace(exp.Anonymous(this="__lake_exists", expressions=[exp.Literal.number(k)]))
            elif isinstance(node, exp.Subquery) and _in_expression(node):
                if _correlated(node.this):
                    continue
                k = next(self._ids)
                self.subqueries[k] = node.this
                node.replace(exp.Anonymous(this="__lake_scalar", expressions=[exp.Literal.number(k)]))
        return tree

    def _evaluate(self, k: int, node: exp.Expression) -> pl.DataFrame:
        sub = Planner(self.tables, now=self.now)
        sub._ctes = [dict(self._ctes[-1])]  # CTEs of the enclosing query are visible to its sub-queries
        sub.subqueries = self.subqueries
        rel = sub.query(self.subqueries[k])
        self.scans += sub.scans
        try:
            return rel.lf.select([pl.col(c).alias(n) for n, c in rel.outputs]).collect()
        except pl.exceptions.PolarsError as e:
            raise error_at(node, f"sub-query failed: {str(e).splitlines()[0]}") from None

    def subquery_expr(self, node: exp.Anonymous, ctx: Ctx) -> pl.Expr:
        kind = node.name
        k = int(node.expressions[-1].this)
        df = self._evaluate(k, node)
        if kind == "__lake_exists":
            return pl.lit(df.height > 0)
        if df.width != 1:
            raise error_at(node, "a sub-query used as a value must return one column")
        s = df.to_series()
        if kind == "__lake_scalar":
            if s.len() > 1:
                raise error_at(node, "a scalar sub-query returned more than one row")
            return pl.lit(s[0] if s.len() else None, dtype=s.dtype)
        subject = ctx.expr(node.expressions[0])
        values = s.drop_nulls()
        st = ctx.dtype(subject)
        if st != values.dtype and st != pl.Null:
            try:
                values = values.cast(st)
            except Exception:  # noqa: BLE001 - leave the types to polars' comparison
                pass
        return in_values(subject, values.unique().to_list(), s.null_count() > 0)

    # -- FROM -------------------------------------------------------------------------------------------
    def _from(self, sel: exp.Select) -> Rel:
        src = sel.args.get("from_") or sel.args.get("from")
        if src is None:
            return Rel(pl.LazyFrame({"__one": [1]}), Env({}, {"__one": pl.Int64}))
        where = sel.args.get("where")
        joins = sel.args.get("joins") or []
        nullable = self._nullable_aliases(src.this, joins)
        rel = self._source(src.this, where, nullable)
        for j in joins:
            rel = self._join(rel, j, where, nullable)
        return rel

    @staticmethod
    def _nullable_aliases(first: exp.Expression, joins: list[exp.Join]) -> set[str]:
        """Aliases on the NULL-supplying side of an outer join: WHERE bounds must not prune their scans."""
        seen = {first.alias_or_name.lower()}
        out: set[str] = set()
        for j in joins:
            side = (j.side or "").upper()
            alias = j.this.alias_or_name.lower()
            if side in ("LEFT", "FULL"):
                out.add(alias)
            if side in ("RIGHT", "FULL"):
                out |= seen
            seen.add(alias)
        return out

    def _source(self, node: exp.Expression, where: exp.Expression | None, nullable: set[str]) -> Rel:
        alias = node.alias_or_name.lower()
        if isinstance(node, exp.Table):
            if isinstance(node.this, exp.Unnest):
                return self._unnest(None, node.this, node)
            name = node.name
            if name in self.tables:
                return self._scan(name, alias, None if alias in nullable else where)
            for scope in reversed(self._ctes):
                if name.lower() in scope:
                    return _rebase(scope[name.lower()], alias, node)
            raise error_at(node, f"table {name!r} not found")
        if isinstance(node, exp.Subquery):
            rel = self.query(node)
            cols = [c.name for c in node.args["alias"].columns] if node.args.get("alias") and \
                node.args["alias"].columns else None
            if cols:
                rel = Rel(rel.lf, rel.env, [(n, c) for n, (_, c) in zip(cols, rel.outputs)])
            return _rebase(rel, alias, node)
        if isinstance(node, exp.Unnest):
            return self._unnest(None, node, node)
        if isinstance(node, exp.Values):
            return _rebase(self._values(node), alias, node)
        raise error_at(node, f"{node.key.upper()} is not supported in FROM")

    def _scan(self, name: str, alias: str, where: exp.Expression | None) -> Rel:
        store = self.tables[name]
        snap = store.snapshot()
        md = snap.metadata
        if md.get("Status") == "PENDING_DELETION":
            raise SqlError(f"event data store {md.get('Name')} is pending deletion; restore it to query it")
        b = pruning.bounds(where, alias, now=self.now)
        result = pruning.prune(snap.segments, b)
        self.scans.append(ScanInfo(alias, md.get("Name", name), result.considered - result.skipped, result.skipped,
                                   result.bytes_considered - result.bytes_skipped, result.bytes_skipped,
                                   result.rows_considered - result.rows_skipped, result.rows_skipped,
                                   b.describe()))
        paths = result.segments.column("path").to_pylist()
        lf = store.scan_files([store.lake.storage.scan_target(f"{store.prefix}/{p}") for p in paths])
        prefix = f"{alias}."
        lf = lf.select([_scan_column(c).alias(prefix + c) for c in _SCAN_COLUMNS])
        schema = dict(_SCAN_SCHEMA)
        columns = {(alias, c): prefix + c for c in _SCAN_COLUMNS if c not in HIDDEN_COLUMNS}
        outputs = [(c, prefix + c) for c in _SCAN_COLUMNS if c not in HIDDEN_COLUMNS]
        env = Env(columns, {prefix + c: t for c, t in schema.items()}, stores={alias: prefix})
        return Rel(lf, env, outputs)

    def _values(self, node: exp.Values) -> Rel:
        ctx = Ctx(Env({}, {}), planner=self, now=self.now)
        rows = []
        for tup in node.expressions:
            items = tup.expressions if isinstance(tup, exp.Tuple) else [tup]
            rows.append([ctx.literal_value(i) for i in items])
        width = len(rows[0]) if rows else 0
        alias = node.args.get("alias")
        names = [c.name for c in alias.columns] if alias is not None and alias.columns else \
            [f"_col{i}" for i in range(width)]
        df = pl.DataFrame([list(r) for r in zip(*rows)] if rows else [[]] * width, schema=names, orient="col",
                          strict=False)
        return Rel(df.lazy(), Env({("", n): n for n in names}, dict(df.schema)), [(n, n) for n in names])

    def _unnest(self, left: Rel | None, node: exp.Unnest, carrier: exp.Expression, outer: bool = False) -> Rel:
        alias_node = carrier.args.get("alias") or node.args.get("alias")
        alias = (alias_node.name if alias_node is not None and alias_node.name else "unnest").lower()
        names = [c.name.lower() for c in alias_node.columns] if alias_node is not None and alias_node.columns else []
        base = left or Rel(pl.LazyFrame({"__one": [1]}), Env({}, {"__one": pl.Int64}))
        ctx = Ctx(base.env, planner=self, now=self.now, clause="UNNEST")
        lf, env = base.lf, Env(dict(base.env.columns), dict(base.env.schema), dict(base.env.stores))
        arrays = [ctx.expr(e) for e in node.expressions]
        tmp = [f"__unnest{next(self._ids)}" for _ in arrays]
        lf = lf.with_columns([a.alias(t) for a, t in zip(arrays, tmp)])
        types = [ctx.dtype(a) for a in arrays]
        if not outer:
            lf = lf.filter(pl.all_horizontal([pl.col(t).list.len().fill_null(0) > 0 for t in tmp]))
        if node.args.get("offset"):
            ordinal = f"__ord{next(self._ids)}"
            lf = lf.with_columns(pl.int_ranges(1, pl.col(tmp[0]).list.len() + 1).alias(ordinal))
            tmp.append(ordinal)
            types.append(pl.List(pl.Int64))
        # LEFT JOIN UNNEST keeps rows whose array is empty or NULL (one row of NULLs)
        lf = lf.explode(tmp, empty_as_null=outer, keep_nulls=outer)
        outputs = []
        ni = 0
        for t, dt in zip(tmp, types):
            inner = dt.inner if isinstance(dt, pl.List) else dt
            if isinstance(inner, pl.Struct) and not (len(names) - ni == 1 or (len(tmp) > 1 and ni < len(names)
                                                                            and len(names) == len(tmp))):
                for f in inner.fields:  # a row type without one alias: one column per field, as Trino does
                    col_name = names[ni] if ni < len(names) else f.name
                    ni += 1
                    pc = f"{alias}.{col_name}"
                    lf = lf.with_columns(pl.col(t).struct.field(f.name).alias(pc))
                    env.columns[(alias, col_name)] = pc
                    env.schema[pc] = f.dtype
                    outputs.append((col_name, pc))
                continue
            col_name = names[ni] if ni < len(names) else ("ordinality" if t.startswith("__ord") else f"_col{ni}")
            ni += 1
            pc = f"{alias}.{col_name}"
            lf = lf.rename({t: pc})
            env.columns[(alias, col_name)] = pc
            env.schema[pc] = inner
            outputs.append((col_name, pc))
        return Rel(lf, env, base.outputs + outputs if left is not None else outputs)

    def _join(self, left: Rel, j: exp.Join, where: exp.Expression | None, nullable: set[str]) -> Rel:
        side = (j.side or "").upper()
        kind = (j.kind or "").upper()
        target = j.this
        if isinstance(target, exp.Unnest) or (isinstance(target, exp.Table) and isinstance(target.this, exp.Unnest)):
            un = target if isinstance(target, exp.Unnest) else target.this
            return self._unnest(left, un, target, outer=side == "LEFT")
        if isinstance(target, exp.Lateral):
            raise error_at(target, "LATERAL is not supported")
        right = self._source(target, where, nullable)
        env = Env({**left.env.columns, **right.env.columns}, {**left.env.schema, **right.env.schema},
                  {**left.env.stores, **right.env.stores})
        outputs = left.outputs + right.outputs
        on = j.args.get("on")
        using = j.args.get("using")
        if using:
            raise error_at(j, "JOIN ... USING is not supported: write the condition with ON")
        if kind == "CROSS" or on is None:
            if side:
                raise error_at(j, f"{side} JOIN needs an ON condition")
            return Rel(left.lf.join(right.lf, how="cross"), env, outputs)
        ctx = Ctx(env, planner=self, now=self.now, clause="JOIN ... ON")
        lnames, rnames = set(left.env.schema), set(right.env.schema)
        lkeys, rkeys, residual = [], [], []
        for cond in _conjuncts(on):
            pair = _equi_pair(cond, ctx, lnames, rnames)
            if pair is None:
                residual.append(cond)
            else:
                lkeys.append(pair[0])
                rkeys.append(pair[1])
        res_expr = None
        for cond in residual:
            e = ctx.expr(cond)
            res_expr = e if res_expr is None else res_expr & e
        how = {"": "inner", "LEFT": "left", "RIGHT": "right", "FULL": "full"}[side]
        if lkeys and res_expr is None:
            lk = [f"__jl{next(self._ids)}" for _ in lkeys]
            rk = [f"__jr{next(self._ids)}" for _ in rkeys]
            llf = left.lf.with_columns([e.alias(n) for e, n in zip(lkeys, lk)])
            rlf = right.lf.with_columns([e.alias(n) for e, n in zip(rkeys, rk)])
            out = llf.join(rlf, left_on=lk, right_on=rk, how=how, coalesce=False, nulls_equal=False)
            return Rel(out.drop(lk + rk, strict=False), env, outputs)
        # General case: matched pairs, then the unmatched rows of the preserved side(s) padded with NULLs.
        li, ri = f"__li{next(self._ids)}", f"__ri{next(self._ids)}"
        llf = left.lf.with_row_index(li)
        rlf = right.lf.with_row_index(ri)
        if lkeys:
            lk = [f"__jl{next(self._ids)}" for _ in lkeys]
            rk = [f"__jr{next(self._ids)}" for _ in rkeys]
            matched = llf.with_columns([e.alias(n) for e, n in zip(lkeys, lk)]).join(
                rlf.with_columns([e.alias(n) for e, n in zip(rkeys, rk)]), left_on=lk, right_on=rk, how="inner",
                coalesce=False).drop(lk + rk)
        else:
            matched = llf.join(rlf, how="cross")
        if res_expr is not None:
            matched = matched.filter(res_expr.fill_null(False))
        parts = [matched]
        if how in ("left", "full"):
            parts.append(llf.join(matched.select(li), on=li, how="anti"))
        if how in ("right", "full"):
            parts.append(rlf.join(matched.select(ri), on=ri, how="anti"))
        out = pl.concat(parts, how="diagonal_relaxed") if len(parts) > 1 else matched
        return Rel(out.drop([li, ri], strict=False), env, outputs)

    # -- SELECT -----------------------------------------------------------------------------------------
    def select(self, sel: exp.Select) -> Rel:
        rel = self._from(sel)
        lf, env = rel.lf, rel.env
        where = sel.args.get("where")
        if where is not None:
            ctx = Ctx(env, planner=self, now=self.now, clause="WHERE")
            _no_aggregates(where.this, "WHERE")
            lf = lf.filter(ctx.expr(where.this).fill_null(False))
        projections = sel.expressions
        group = sel.args.get("group")
        having = sel.args.get("having")
        order = sel.args.get("order")
        order_terms = order.expressions if order is not None else []
        aggs = _collect_aggregates([*projections, *(o.this for o in order_terms),
                                    *([having.this] if having is not None else [])])
        replace: dict[str, str] = {}
        if group is not None or aggs:
            lf, env, replace = self._aggregate(lf, env, sel, group, aggs)
            if having is not None:
                ctx = Ctx(env, replace=replace, planner=self, now=self.now, clause="HAVING")
                lf = lf.filter(ctx.expr(having.this).fill_null(False))
        elif having is not None:
            raise error_at(having, "HAVING needs GROUP BY or an aggregate")
        windows = _collect_windows([*projections, *(o.this for o in order_terms)])
        if windows:
            lf, env, replace = self._windows(lf, env, replace, windows)
        ctx = Ctx(env, replace=replace, planner=self, now=self.now, clause="SELECT")
        exprs, outputs, used = [], [], set()
        for i, p in enumerate(projections):
            if isinstance(p, exp.Star):
                raise error_at(p, "SELECT * could not be expanded")
            name = _output_name(p, i)
            col = f"__c{i}"
            exprs.append(ctx.expr(p).alias(col))
            outputs.append((_unique(name, used), col))
        out_env = Env({("", n): c for n, c in outputs}, {})
        sort_cols, desc, nulls_last = [], [], []
        extra = []
        for k, o in enumerate(order_terms):
            term = o.this
            target = None
            if isinstance(term, exp.Literal) and not term.is_string:
                pos = int(term.this)
                if not 1 <= pos <= len(outputs):
                    raise error_at(o, f"ORDER BY position {pos} is not in the select list")
                target = outputs[pos - 1][1]
            elif isinstance(term, exp.Column) and not term.table:
                target = out_env.lookup("", term.name)
            if target is None:
                for (n, c), p in zip(outputs, projections):
                    if sql_key(p.this if isinstance(p, exp.Alias) else p) == sql_key(term):
                        target = c
                        break
            if target is None:
                if sel.args.get("distinct"):
                    raise error_at(o, "with SELECT DISTINCT, ORDER BY terms must appear in the select list")
                target = f"__o{k}"
                extra.append(ctx.expr(term).alias(target))
            sort_cols.append(target)
            desc.append(bool(o.args.get("desc")))
            nulls_last.append(not o.args.get("nulls_first"))
        try:
            # with_columns, not select: constants (`SELECT 'x' FROM t`) must give one value per input row
            names = [e.meta.output_name() for e in exprs + extra]
            lf = lf.with_columns(exprs + extra).select(names) if replace or env.columns else \
                lf.select(exprs + extra)
        except pl.exceptions.PolarsError as e:
            raise SqlError(f"cannot plan the SELECT list: {str(e).splitlines()[0]}") from None
        if sel.args.get("distinct"):
            if sel.args["distinct"].args.get("on"):
                raise error_at(sel, "DISTINCT ON is not supported")
            lf = lf.unique(subset=[c for _, c in outputs], maintain_order=False)
        if sort_cols:
            lf = lf.sort(sort_cols, descending=desc, nulls_last=nulls_last, maintain_order=True)
        lf = _slice(sel, lf, self)
        if extra:
            lf = lf.drop([e.meta.output_name() for e in extra])
        schema = lf.collect_schema()
        env = Env({("", n): c for n, c in outputs}, dict(schema))
        return Rel(lf, env, outputs)

    def _aggregate(self, lf: pl.LazyFrame, env: Env, sel: exp.Select, group: exp.Group | None,
                   aggs: list[exp.Expression]):
        ctx = Ctx(env, planner=self, now=self.now, clause="GROUP BY")
        keys, replace = [], {}
        group_nodes = list(group.expressions) if group is not None else []
        if group is not None and (group.args.get("rollup") or group.args.get("cube") or
                                  group.args.get("grouping_sets")):
            raise error_at(group, "ROLLUP, CUBE and GROUPING SETS are not supported")
        for i, g in enumerate(group_nodes):
            if isinstance(g, exp.Literal) and not g.is_string:
                pos = int(g.this)
                if not 1 <= pos <= len(sel.expressions):
                    raise error_at(g, f"GROUP BY position {pos} is not in the select list")
                g = sel.expressions[pos - 1]
                g = g.this if isinstance(g, exp.Alias) else g
            _no_aggregates(g, "GROUP BY")
            name = f"__g{i}"
            keys.append(ctx.expr(g).alias(name))
            replace[sql_key(g)] = name
        agg_exprs = []
        actx = Ctx(env, planner=self, now=self.now, clause="an aggregate")
        for j, a in enumerate(aggs):
            key = sql_key(a)
            if key in replace:
                continue
            name = f"__a{j}"
            agg_exprs.append(aggregate(a, actx).alias(name))
            replace[key] = name
        if keys:
            lf = lf.group_by(keys).agg(agg_exprs) if agg_exprs else lf.group_by(keys).agg()
        else:
            lf = lf.select(agg_exprs)
        schema = dict(lf.collect_schema())
        # After aggregation only group keys and aggregates are visible; plain columns that equal a group key
        # are found through `replace`.
        return lf, Env({}, schema), replace

    def _windows(self, lf: pl.LazyFrame, env: Env, replace: dict[str, str], windows: list[exp.Window]):
        ctx = Ctx(env, replace=replace, planner=self, now=self.now, clause="a window")
        stage1, new_cols, helpers = [], [], []
        replace = dict(replace)
        for k, w in enumerate(windows):
            key = sql_key(w)
            if key in replace:
                continue
            name = f"__w{k}"
            e = window_expr(w, ctx)
            if isinstance(e, tuple):
                stage1.extend(e[0])
                helpers.extend(x.meta.output_name() for x in e[0])
                e = e[1]
            new_cols.append(e.alias(name))
            replace[key] = name
        if stage1:
            lf = lf.with_columns(stage1)
        lf = lf.with_columns(new_cols)
        if helpers:
            lf = lf.drop(helpers)
        schema = dict(lf.collect_schema())
        return lf, Env(env.columns, schema, env.stores), replace

    def _set_op(self, node: exp.Expression) -> Rel:
        left = self.query(node.this)
        right = self.query(node.expression)
        if len(left.outputs) != len(right.outputs):
            raise error_at(node, f"{node.key.upper()} sides have {len(left.outputs)} and {len(right.outputs)} columns")
        names = [f"__s{i}" for i in range(len(left.outputs))]
        l_lf = left.lf.select([pl.col(c).alias(n) for (_, c), n in zip(left.outputs, names)])
        r_lf = right.lf.select([pl.col(c).alias(n) for (_, c), n in zip(right.outputs, names)])
        ls, rs = l_lf.collect_schema(), r_lf.collect_schema()
        casts = []
        for n in names:
            if ls[n] != rs[n]:
                target = ls[n] if rs[n] == pl.Null else rs[n] if ls[n] == pl.Null else None
                if target is None:
                    try:
                        target = pl.DataFrame(schema={"a": ls[n]}).vstack(
                            pl.DataFrame(schema={"a": rs[n]}).cast(ls[n])).schema["a"]
                    except Exception:  # noqa: BLE001
                        raise error_at(node, f"{node.key.upper()} column types differ: {ls[n]} and {rs[n]}") from None
                casts.append((n, target))
        if casts:
            l_lf = l_lf.with_columns([pl.col(n).cast(t) for n, t in casts])
            r_lf = r_lf.with_columns([pl.col(n).cast(t) for n, t in casts])
        distinct = node.args.get("distinct", True)
        if isinstance(node, exp.Union):
            lf = pl.concat([l_lf, r_lf], how="vertical_relaxed")
            if distinct:
                lf = lf.unique(maintain_order=False)
        elif isinstance(node, exp.Except):
            lf = l_lf.join(r_lf, on=names, how="anti", nulls_equal=True)
            if distinct:
                lf = lf.unique()
            else:
                raise error_at(node, "EXCEPT ALL is not supported")
        else:
            if not distinct:
                raise error_at(node, "INTERSECT ALL is not supported")
            lf = l_lf.unique().join(r_lf.unique(), on=names, how="semi", nulls_equal=True)
        outputs = [(n, c) for (n, _), c in zip(left.outputs, names)]
        rel = Rel(lf, Env({("", n): c for n, c in outputs}, dict(lf.collect_schema())), outputs)
        return self._order_limit(node, rel)

    def _order_limit(self, node: exp.Expression, rel: Rel) -> Rel:
        order = node.args.get("order")
        lf = rel.lf
        if order is not None:
            ctx = Ctx(rel.env, planner=self, now=self.now, clause="ORDER BY")
            cols, desc, nl = [], [], []
            for o in order.expressions:
                t = o.this
                if isinstance(t, exp.Literal) and not t.is_string:
                    cols.append(pl.col(rel.outputs[int(t.this) - 1][1]))
                else:
                    cols.append(ctx.expr(t))
                desc.append(bool(o.args.get("desc")))
                nl.append(not o.args.get("nulls_first"))
            lf = lf.sort(cols, descending=desc, nulls_last=nl, maintain_order=True)
        lf = _slice(node, lf, self)
        return Rel(lf, rel.env, rel.outputs)


# ---- helpers ------------------------------------------------------------------------------------------

def _slice(node: exp.Expression, lf: pl.LazyFrame, planner: Planner) -> pl.LazyFrame:
    limit = node.args.get("limit")
    offset = node.args.get("offset")
    ctx = Ctx(Env({}, {}), planner=planner, now=planner.now, clause="LIMIT")
    off = int(ctx.literal_value(offset.expression)) if offset is not None else 0
    if limit is not None:
        n_node = limit.expression if isinstance(limit, exp.Limit) else limit.args.get("count")
        n = ctx.literal_value(n_node) if n_node is not None else None
        if isinstance(n, str) and n.upper() == "ALL":
            n = None
        return lf.slice(off, int(n) if n is not None else None)
    return lf.slice(off) if off else lf


def _rebase(rel: Rel, alias: str, node: exp.Expression) -> Rel:
    """A relation's outputs as columns of one FROM item called `alias`."""
    cols, exprs = {}, []
    seen = set()
    for name, c in rel.outputs:
        n = name.lower()
        if n in seen:
            continue
        seen.add(n)
        pc = f"{alias}.{n}"
        exprs.append(pl.col(c).alias(pc))
        cols[(alias, n)] = pc
    lf = rel.lf.select(exprs)
    schema = dict(lf.collect_schema())
    return Rel(lf, Env(cols, schema), [(n, c) for (_, n), c in cols.items()])


def _conjuncts(e: exp.Expression) -> list[exp.Expression]:
    if isinstance(e, exp.And):
        return _conjuncts(e.this) + _conjuncts(e.expression)
    if isinstance(e, exp.Paren):
        return _conjuncts(e.this)
    return [e]


def _sides(e: exp.Expression, ctx: Ctx) -> set[str]:
    out = set()
    for c in e.find_all(exp.Column):
        col = ctx.env.lookup(c.table, c.name)
        if col is not None:
            out.add(col)
    return out


def _equi_pair(cond: exp.Expression, ctx: Ctx, lnames: set[str], rnames: set[str]):
    if not isinstance(cond, exp.EQ):
        return None
    a, b = cond.this, cond.expression
    sa, sb = _sides(a, ctx), _sides(b, ctx)
    if not sa or not sb:
        return None
    ea, eb = ctx.expr(a), ctx.expr(b)
    ea, eb = ctx.coerce_pair(ea, a, eb, b)
    if sa <= lnames and sb <= rnames:
        return ea, eb
    if sa <= rnames and sb <= lnames:
        return eb, ea
    return None


def _walk_no_subquery(node: exp.Expression):
    """Nodes of an expression, not descending into sub-queries (their aggregates are their own)."""
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        for child in n.iter_expressions():
            if isinstance(child, (exp.Select, exp.Subquery, exp.Union, exp.Except, exp.Intersect)):
                continue
            stack.append(child)


def _collect_aggregates(nodes: list[exp.Expression]) -> list[exp.Expression]:
    out, seen = [], set()
    for root in nodes:
        stack = [root]
        while stack:
            n = stack.pop()
            if isinstance(n, exp.Window):
                # the window's own function is not a grouping aggregate, but its arguments may hold some
                stack.extend(x for x in n.this.iter_expressions())
                for key in ("partition_by",):
                    stack.extend(n.args.get(key) or [])
                if n.args.get("order") is not None:
                    stack.extend(o.this for o in n.args["order"].expressions)
                continue
            if is_aggregate(n):
                k = sql_key(n)
                if k not in seen:
                    seen.add(k)
                    out.append(n)
                continue
            if isinstance(n, (exp.Select, exp.Subquery)):
                continue
            stack.extend(n.iter_expressions())
    return out


def _collect_windows(nodes: list[exp.Expression]) -> list[exp.Window]:
    out, seen = [], set()
    for root in nodes:
        for n in _walk_no_subquery(root):
            if isinstance(n, exp.Window):
                k = sql_key(n)
                if k not in seen:
                    seen.add(k)
                    out.append(n)
    return out


def _no_aggregates(node: exp.Expression, clause: str) -> None:
    for n in _walk_no_subquery(node):
        if is_aggregate(n) and not isinstance(n.parent, exp.Window):
            raise error_at(n, f"aggregate functions are not allowed in {clause}")


def _output_name(p: exp.Expression, i: int) -> str:
    if isinstance(p, exp.Alias):
        name = p.alias
    elif isinstance(p, exp.Column):
        name = p.name
    elif isinstance(p, exp.Dot):
        name = p.expression.name
    else:
        name = f"_col_{i}"
    return name


def _unique(name: str, used: set[str]) -> str:
    n, k = name, 1
    while n.lower() in used:
        k += 1
        n = f"{name}_{k}"
    used.add(n.lower())
    return n


def _correlated(q: exp.Expression) -> bool:
    """Whether a sub-query refers to a table alias it does not define itself."""
    defined = set()
    for t in q.find_all(exp.Table, exp.Subquery, exp.TableAlias, exp.CTE):
        if isinstance(t, exp.TableAlias):
            defined.add(t.name.lower())
        else:
            defined.add(t.alias_or_name.lower())
    for c in q.find_all(exp.Column):
        if c.table and c.table.lower() not in defined:
            return True
    return False


def _in_expression(node: exp.Subquery) -> bool:
    """A parenthesised sub-query used as a value (not a derived table in FROM/JOIN)."""
    parent = node.parent
    return parent is not None and not isinstance(parent, (exp.From, exp.Join, exp.Union, exp.Except,
                                                          exp.Intersect, exp.Select, exp.CTE, exp.Subquery)) \
        or (isinstance(parent, exp.Select) and node.arg_key == "expressions")


# ---- window functions --------------------------------------------------------------------------------

def window_expr(w: exp.Window, ctx: Ctx):
    """A window function as a polars expression evaluated over (PARTITION BY) groups in ORDER BY order, or
    (helper columns, final expression) when it needs two passes."""
    fn = w.this
    part = [ctx.expr(p) for p in (w.args.get("partition_by") or [])]
    order = w.args.get("order")
    okeys = [ctx.expr(o.this) for o in order.expressions] if order is not None else []
    odesc = [bool(o.args.get("desc")) for o in order.expressions] if order is not None else []
    onulls_last = [not o.args.get("nulls_first") for o in order.expressions] if order is not None else []
    spec = w.args.get("spec")
    if isinstance(fn, exp.Filter):
        raise error_at(fn, "FILTER in window functions is not supported")
    name = fn.key.lower() if not isinstance(fn, exp.Anonymous) else fn.name.lower()

    def over(e: pl.Expr) -> pl.Expr:
        if not part and not okeys:
            return e
        if okeys:
            # polars' over(order_by) takes one direction; encode mixed directions by negating sort keys
            # is not general, so sort by a struct of rank-transformed keys.
            ob = _order_key(okeys, odesc, onulls_last)
            return e.over(part or pl.lit(0), order_by=ob)
        return e.over(part)

    if name in ("rownumber", "row_number"):
        return over(pl.int_range(1, pl.len() + 1, dtype=pl.Int64))
    if name in ("rank", "denserank", "dense_rank", "percentrank", "cumedist", "ntile"):
        if not okeys:
            return over(pl.lit(1, dtype=pl.Int64)) if name in ("rank", "denserank", "dense_rank") else \
                pl.lit(None)
        ob = _order_key(okeys, odesc, onulls_last)
        method = "min" if name == "rank" else "dense"
        if name in ("rank", "denserank", "dense_rank"):
            r = ob.rank(method=method).cast(pl.Int64)
            return r.over(part) if part else r
        raise error_at(fn, f"window function {name} is not supported")
    if name in ("lag", "lead"):
        x = ctx.expr(fn.this)
        off_node = fn.args.get("offset")
        n = int(ctx.literal_value(off_node)) if off_node is not None else 1
        default = fn.args.get("default")
        shifted = x.shift(n if name == "lag" else -n)
        if default is not None:
            # the default only applies past the partition's edge, not to NULL values inside it
            idx = pl.int_range(0, pl.len())
            edge = (idx < n) if name == "lag" else (idx >= pl.len() - n)
            shifted = pl.when(edge).then(ctx.expr(default)).otherwise(shifted)
        return over(shifted)
    if name in ("firstvalue", "first_value", "lastvalue", "last_value"):
        x = ctx.expr(fn.this)
        if name.startswith("first"):
            return over(x.first())
        # with ORDER BY the default RANGE frame ends at the current row's last peer
        return over(x.last()) if not okeys else _cumulative_agg(fn, ctx, part, okeys, odesc, onulls_last, rows=False)
    if is_aggregate(fn):
        if spec is not None and not _default_frame(spec, bool(okeys)):
            frame = spec.sql(dialect="trino")
            if okeys and _rows_unbounded_current(spec):
                return _cumulative_agg(fn, ctx, part, okeys, odesc, onulls_last, rows=True)
            bounds = _rows_bounds(spec)
            if okeys and bounds is not None:
                return _rows_frame_agg(fn, ctx, part, okeys, odesc, onulls_last, *bounds)
            raise error_at(w, f"window frame {frame} is not supported")
        if not okeys:
            agg = aggregate(fn, ctx)
            return agg.over(part) if part else agg
        return _cumulative_agg(fn, ctx, part, okeys, odesc, onulls_last, rows=False)
    raise error_at(fn, f"window function {name} is not supported")


def _order_key(keys: list[pl.Expr], desc: list[bool], nulls_last: list[bool]) -> pl.Expr:
    """One sortable key for a multi-column ORDER BY with per-column direction and NULL placement:
    each column becomes a dense rank in its own direction (NULLs at their end), then a struct of ranks."""
    ranked = []
    for k, d, nl in zip(keys, desc, nulls_last):
        r = k.rank(method="dense", descending=d)
        big = pl.len().cast(pl.Int64) + 1
        r = r.cast(pl.Int64).fill_null(big if nl else 0)
        ranked.append(r)
    return ranked[0] if len(ranked) == 1 else pl.struct(ranked)


def _default_frame(spec: exp.WindowSpec, ordered: bool) -> bool:
    kind = (spec.args.get("kind") or "").upper()
    start = str(spec.args.get("start") or "").upper()
    end = str(spec.args.get("end") or "").upper()
    start_side = str(spec.args.get("start_side") or "").upper()
    if kind == "RANGE" and start == "UNBOUNDED" and start_side == "PRECEDING" and end in ("CURRENT ROW", ""):
        return True
    if not ordered and start == "UNBOUNDED" and end == "UNBOUNDED":
        return True
    return False


def _rows_unbounded_current(spec: exp.WindowSpec) -> bool:
    return (str(spec.args.get("kind") or "").upper() == "ROWS" and str(spec.args.get("start") or "").upper()
            == "UNBOUNDED" and str(spec.args.get("end") or "").upper() in ("CURRENT ROW", ""))


def _frame_offset(value, side) -> int | None:
    """Rows before (negative) or after (positive) the current row for one frame bound; None = unbounded."""
    v = str(value or "").upper()
    sd = str(side or "").upper()
    if v == "CURRENT ROW":
        return 0
    if v == "UNBOUNDED":
        return None
    n = int(value.this) if isinstance(value, exp.Literal) else int(v)
    return -n if sd == "PRECEDING" else n


def _rows_bounds(spec: exp.WindowSpec) -> tuple[int | None, int | None] | None:
    if str(spec.args.get("kind") or "").upper() != "ROWS":
        return None
    try:
        lo = _frame_offset(spec.args.get("start"), spec.args.get("start_side"))
        hi = _frame_offset(spec.args.get("end") or "CURRENT ROW", spec.args.get("end_side"))
    except (TypeError, ValueError):
        return None
    return lo, hi


def _rows_frame_agg(fn: exp.Expression, ctx: Ctx, part, okeys, odesc, onulls_last, lo: int | None,
                    hi: int | None) -> pl.Expr:
    """sum/count/avg over `ROWS BETWEEN lo AND hi` (offsets from the current row) from running sums: the
    frame's total is S[i+hi] - S[i+lo-1], clipped at the partition's edges."""
    name = fn.key.lower() if not isinstance(fn, exp.Anonymous) else fn.name.lower()
    arg = fn.this
    if isinstance(arg, exp.Distinct) or name not in ("sum", "count", "avg"):
        raise error_at(fn, f"{name} over a ROWS frame other than UNBOUNDED PRECEDING AND CURRENT ROW is not supported")
    x = per_row(ctx.expr(arg), arg) if arg is not None and not isinstance(arg, exp.Star) else None
    val = (x.cast(pl.Float64) if name == "avg" else x).fill_null(0) if x is not None else pl.lit(0)
    cnt = x.is_not_null().cast(pl.Int64) if x is not None else pl.int_range(0, pl.len()) * 0 + 1

    def window_total(v: pl.Expr) -> pl.Expr:
        run = v.cum_sum()
        upper = run.last() if hi is None else run.shift(-hi).fill_null(run.last()) if hi > 0 else run.shift(-hi)
        if lo is None:
            lower = pl.lit(0)
        else:
            lower = run.shift(1 - lo).fill_null(0) if lo <= 0 else run.shift(1 - lo)
        return upper - lower
    s_ = window_total(val)
    c_ = window_total(cnt)
    if name == "count":
        out = c_
    elif name == "sum":
        out = pl.when(c_ > 0).then(s_).otherwise(None)
    else:
        out = pl.when(c_ > 0).then(s_ / c_).otherwise(None)
    return out.over(part or pl.lit(0), order_by=_order_key(okeys, odesc, onulls_last))


def _cumulative_agg(fn: exp.Expression, ctx: Ctx, part, okeys, odesc, onulls_last, rows: bool) -> pl.Expr:
    """Running aggregates with ORDER BY: RANGE frames (the default) include the current row's peers."""
    name = fn.key.lower() if not isinstance(fn, exp.Anonymous) else fn.name.lower()
    ob = _order_key(okeys, odesc, onulls_last)
    arg = fn.this
    if isinstance(arg, exp.Distinct):
        raise error_at(fn, "DISTINCT aggregates over ordered windows are not supported")
    x = per_row(ctx.expr(arg), arg) if arg is not None and not isinstance(arg, exp.Star) else None
    if name == "count":
        run = x.is_not_null().cast(pl.Int64).cum_sum() if x is not None else pl.int_range(1, pl.len() + 1,
                                                                                          dtype=pl.Int64)
    elif name == "sum":
        run = pl.when(x.is_not_null().cum_sum() > 0).then(x.fill_null(0).cum_sum()).otherwise(None)
    elif name == "avg":
        run = x.cast(pl.Float64).fill_null(0).cum_sum() / x.is_not_null().cum_sum().cast(pl.Float64)
        run = pl.when(x.is_not_null().cum_sum() > 0).then(run).otherwise(None)
    elif name == "min":
        run = x.cum_min()
        run = run.forward_fill()
    elif name == "max":
        run = x.cum_max().forward_fill()
    elif name in ("lastvalue", "last_value"):
        run = x  # the frame's last row is the current row; the peer pass below moves it to the last peer
    elif name in ("countif", "count_if"):
        run = x.fill_null(False).cast(pl.Int64).cum_sum()
    else:
        raise error_at(fn, f"{name} over an ordered window is not supported")
    # Both frame kinds are computed in ORDER BY order within the partition; a RANGE frame then gives every
    # peer (same ORDER BY values) the running value at the last peer, which needs a second pass.
    e = run.over(part or pl.lit(0), order_by=ob)
    if rows:
        return e
    tag = f"__peer{id(fn)}"
    pos = pl.int_range(0, pl.len()).over(part or pl.lit(0), order_by=ob)
    final = pl.col(f"{tag}_v").sort_by(pl.col(f"{tag}_p")).last().over([*(part or []), ob])
    return [e.alias(f"{tag}_v"), pos.alias(f"{tag}_p")], final


__all__ = ["Planner", "Rel", "ScanInfo", "window_expr"]
