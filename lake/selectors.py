"""CloudTrail advanced event selectors for event data stores.

An event data store (EDS) keeps only the events its *advanced event selectors*
accept.  This module is the single place that knows the selector rules, so the
store, the ingest path and the API layer all agree on what is valid and on what
an event "matches":

* :func:`validate_selectors` checks selectors against the AWS rules (reference
  ``cloudtrail-format.md`` section 6.2 and 2.2) and returns a normalised copy,
  so what we persist and echo back is canonical.
* :func:`selector_expr` compiles selectors to one boolean polars expression over
  the lake's normalised (lower-case) columns, for bulk filtering of ingest
  batches and imports.
* :func:`matches_record` / :func:`record_matcher` evaluate the same selectors
  on one raw CloudTrail JSON record (camelCase keys).  They are used for single
  events and as the test oracle for the polars path.

Semantics (shared by both evaluators):

* selectors are ORed; field selectors within a selector are ANDed; several
  operators inside one field selector are ANDed;
* positive operators (Equals/StartsWith/EndsWith) match if ANY value matches;
  negative operators (NotEquals/NotStartsWith/NotEndsWith) match only if the
  field differs from / does not start with / does not end with EVERY value;
* a positive operator on a null/absent field is False, a negative one is True;
* matching is exact and case-sensitive; ``*`` has no wildcard meaning;
* all ``resources.*`` conditions of one selector must hold for the SAME element
  of ``resources`` ("exists r in resources: all conditions hold for r"); an
  event without resources fails any selector that has ``resources.*``
  conditions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import polars as pl

__all__ = [
    "SelectorError",
    "DEFAULT_SELECTORS",
    "validate_selectors",
    "selector_expr",
    "matches",
    "matches_record",
    "record_matcher",
]


class SelectorError(ValueError):
    """Invalid selectors; message is one line naming the selector index/field and what is wrong.

    A ``ValueError`` subclass so API layers can map it to AWS's
    ``InvalidEventSelectorsException`` without catching unrelated errors.
    """


DEFAULT_SELECTORS: list[dict] = [
    {
        "Name": "Default management events",
        "FieldSelectors": [{"Field": "eventCategory", "Equals": ["Management"]}],
    }
]
"""What a new store gets when none are given: all management events (AWS default)."""

# --------------------------------------------------------------------------- rules

MAX_SELECTORS = 5
MAX_TOTAL_VALUES = 500
MAX_NAME_LEN = 1000
MAX_VALUE_LEN = 2048

POSITIVE_OPS: tuple[str, ...] = ("Equals", "StartsWith", "EndsWith")
NEGATIVE_OPS: tuple[str, ...] = ("NotEquals", "NotStartsWith", "NotEndsWith")
ALL_OPS: tuple[str, ...] = POSITIVE_OPS + NEGATIVE_OPS

CLOUDTRAIL_CATEGORIES = ("Management", "Data", "NetworkActivity")
OTHER_CATEGORIES = ("Insight", "ConfigurationItem", "Evidence", "ActivityAuditLog")
CATEGORIES = CLOUDTRAIL_CATEGORIES + OTHER_CATEGORIES

_MGMT_DATA = frozenset({"Management", "Data"})
_MGMT_DATA_NET = frozenset(CLOUDTRAIL_CATEGORIES)

# canonical field -> (normalised column, categories the field may be used with,
# allowed operators or None for "any").  From reference section 6.2's table.
_FIELDS: dict[str, tuple[str, frozenset[str], tuple[str, ...] | None]] = {
    "eventCategory": ("eventcategory", frozenset(CATEGORIES), ("Equals",)),
    "eventSource": ("eventsource", _MGMT_DATA_NET, None),
    "eventName": ("eventname", _MGMT_DATA_NET, None),
    "readOnly": ("readonly", _MGMT_DATA, ("Equals",)),
    "eventType": ("eventtype", _MGMT_DATA, None),
    "resources.type": ("resources", frozenset({"Data"}), ("Equals",)),
    "resources.ARN": ("resources", frozenset({"Data"}), None),
    "sessionCredentialFromConsole": (
        "sessioncredentialfromconsole",
        _MGMT_DATA,
        ("Equals", "NotEquals"),
    ),
    "userIdentity.arn": ("useridentity_arn", _MGMT_DATA, None),
    "errorCode": ("errorcode", frozenset({"NetworkActivity"}), ("Equals",)),
    "vpcEndpointId": ("vpcendpointid", frozenset({"NetworkActivity"}), None),
}
_CANONICAL = {name.lower(): name for name in _FIELDS}

# Only these values are legal for the fields that have a closed value set.
_ALLOWED_VALUES: dict[str, tuple[str, ...]] = {
    "eventCategory": CATEGORIES,
    "readOnly": ("true", "false"),
    "errorCode": ("VpceAccessDenied",),
}

# resources.<x> field -> struct field name inside the `resources` list column.
_RESOURCE_STRUCT_FIELD = {"resources.type": "type", "resources.ARN": "arn"}

RESOURCES_DTYPE = pl.List(
    pl.Struct({"accountid": pl.Utf8, "type": pl.Utf8, "arn": pl.Utf8, "arnprefix": pl.Utf8})
)
"""dtype of the normalised `resources` column the expression expects."""


def _short(value: Any, limit: int = 60) -> str:
    """repr() of user input, clipped, so error messages stay one readable line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _where(i: int, name: Any = None, j: int | None = None, field: Any = None) -> str:
    """Location prefix for error messages: which selector / field selector is wrong."""
    loc = f"selector[{i}]"
    if isinstance(name, str) and name:
        loc += f" ({_short(name, 40)})"
    if j is not None:
        loc += f" FieldSelectors[{j}]"
        if field is not None:
            loc += f" ({field})"
    return loc


def validate_selectors(selectors: list[dict]) -> list[dict]:
    """Validate per AWS rules and return a normalised deep copy.

    Normalisation: ``Field`` names are matched case-insensitively and rewritten
    to their canonical spelling (``resources.ARN``, ``eventCategory``, ...); an
    operator given as a single string becomes a one-element list; operators set
    to ``None`` are dropped; operator keys are emitted in a fixed order.  Values
    are never altered (matching is case-sensitive and literal, ``*`` included).

    Returning a copy means callers can persist/echo the result without sharing
    mutable state with the request that supplied it.

    Raises:
        SelectorError: one-line message naming the selector, field and rule.
    """
    if not isinstance(selectors, Sequence) or isinstance(selectors, (str, bytes)):
        raise SelectorError(
            f"AdvancedEventSelectors must be a list of selectors, got {type(selectors).__name__}"
        )
    if not 1 <= len(selectors) <= MAX_SELECTORS:
        raise SelectorError(
            f"AdvancedEventSelectors must contain 1 to {MAX_SELECTORS} selectors, got {len(selectors)}"
        )

    out: list[dict] = []
    total_values = 0
    for i, sel in enumerate(selectors):
        if not isinstance(sel, Mapping):
            raise SelectorError(f"{_where(i)}: must be an object, got {type(sel).__name__}")
        unknown = set(sel) - {"Name", "FieldSelectors"}
        if unknown:
            raise SelectorError(
                f"{_where(i)}: unknown key(s) {sorted(map(str, unknown))}; allowed: Name, FieldSelectors"
            )
        name = sel.get("Name")
        if name is not None:
            if not isinstance(name, str):
                raise SelectorError(f"{_where(i)}: Name must be a string, got {type(name).__name__}")
            if len(name) > MAX_NAME_LEN:
                raise SelectorError(
                    f"{_where(i, name)}: Name is {len(name)} characters, max {MAX_NAME_LEN}"
                )
        fsels = sel.get("FieldSelectors")
        if (
            not isinstance(fsels, Sequence)
            or isinstance(fsels, (str, bytes))
            or len(fsels) == 0
        ):
            raise SelectorError(f"{_where(i, name)}: FieldSelectors must be a non-empty list")

        norm_fsels: list[dict] = []
        for j, fs in enumerate(fsels):
            norm, n_values = _validate_field_selector(i, name, j, fs)
            total_values += n_values
            norm_fsels.append(norm)
        _validate_selector_rules(i, name, norm_fsels)

        norm_sel: dict = {}
        if name is not None:
            norm_sel["Name"] = name
        norm_sel["FieldSelectors"] = norm_fsels
        out.append(norm_sel)

    if total_values > MAX_TOTAL_VALUES:
        raise SelectorError(
            f"AdvancedEventSelectors have {total_values} condition values in total, max {MAX_TOTAL_VALUES}"
        )
    return out


def _validate_field_selector(i: int, name: Any, j: int, fs: Any) -> tuple[dict, int]:
    """Per-field-selector checks (field name, operator keys, value shapes and closed value sets)."""
    if not isinstance(fs, Mapping):
        raise SelectorError(f"{_where(i, name, j)}: must be an object, got {type(fs).__name__}")
    raw_field = fs.get("Field")
    if not isinstance(raw_field, str) or not raw_field:
        raise SelectorError(f"{_where(i, name, j)}: Field is required and must be a non-empty string")
    field = _CANONICAL.get(raw_field.lower())
    if field is None:
        raise SelectorError(
            f"{_where(i, name, j, _short(raw_field, 40))}: unknown Field; allowed: {', '.join(_FIELDS)}"
        )
    where = _where(i, name, j, field)
    unknown = [k for k in fs if k != "Field" and k not in ALL_OPS]
    if unknown:
        raise SelectorError(
            f"{where}: unknown operator(s) {[_short(k, 30) for k in unknown]}; allowed: {', '.join(ALL_OPS)}"
        )
    allowed_ops = _FIELDS[field][2]
    norm: dict = {"Field": field}
    n_values = 0
    for op in ALL_OPS:
        if op not in fs or fs[op] is None:
            continue
        if allowed_ops is not None and op not in allowed_ops:
            raise SelectorError(
                f"{where}: operator {op} is not supported; {field} allows only {', '.join(allowed_ops)}"
            )
        values = fs[op]
        if isinstance(values, str):
            values = [values]
        if not isinstance(values, Sequence) or isinstance(values, bytes) or len(values) == 0:
            raise SelectorError(f"{where}: {op} must be a non-empty list of strings")
        for v in values:
            if not isinstance(v, str):
                raise SelectorError(
                    f"{where}: {op} values must be strings, got {type(v).__name__} {_short(v, 30)}"
                )
            if not 1 <= len(v) <= MAX_VALUE_LEN:
                raise SelectorError(
                    f"{where}: {op} value must be 1 to {MAX_VALUE_LEN} characters, got {len(v)}"
                )
            legal = _ALLOWED_VALUES.get(field)
            if legal is not None and v not in legal:
                raise SelectorError(
                    f"{where}: invalid value {_short(v, 40)}; allowed: {', '.join(legal)}"
                )
        norm[op] = list(values)
        n_values += len(values)
    if len(norm) == 1:
        raise SelectorError(f"{where}: at least one operator ({', '.join(ALL_OPS)}) is required")
    return norm, n_values


def _validate_selector_rules(i: int, name: Any, fsels: list[dict]) -> None:
    """Cross-field rules of one selector: eventCategory, per-category fields, resources.type count."""
    cat_idx = [j for j, fs in enumerate(fsels) if fs["Field"] == "eventCategory"]
    if len(cat_idx) != 1:
        raise SelectorError(
            f"{_where(i, name)}: exactly one eventCategory field selector is required, got {len(cat_idx)}"
        )
    # Equals-only is already enforced for eventCategory, and it has >= 1 operator.
    categories = set(fsels[cat_idx[0]]["Equals"])

    other = sorted(categories & set(OTHER_CATEGORIES))
    if other and len(fsels) > 1:
        extra = next(fs["Field"] for fs in fsels if fs["Field"] != "eventCategory")
        raise SelectorError(
            f"{_where(i, name)}: eventCategory {other[0]} allows no other field selectors, found {extra}"
        )

    n_rtype = 0
    for j, fs in enumerate(fsels):
        field = fs["Field"]
        allowed_cats = _FIELDS[field][1]
        bad = sorted(categories - allowed_cats)
        if bad:
            raise SelectorError(
                f"{_where(i, name, j, field)}: field not allowed with eventCategory {bad[0]}; "
                f"it applies to {', '.join(c for c in CATEGORIES if c in allowed_cats)}"
            )
        if field == "resources.type":
            n_rtype += 1
            if n_rtype > 1:
                raise SelectorError(
                    f"{_where(i, name, j, field)}: at most one resources.type field selector per selector"
                )
        if field == "eventSource" and "NetworkActivity" in categories:
            ops = [op for op in ALL_OPS if op in fs]
            if ops != ["Equals"]:
                raise SelectorError(
                    f"{_where(i, name, j, field)}: for NetworkActivity, eventSource supports only Equals"
                )

    if "NetworkActivity" in categories and not any(fs["Field"] == "eventSource" for fs in fsels):
        raise SelectorError(
            f"{_where(i, name)}: NetworkActivity selectors require an eventSource field selector with Equals"
        )


# --------------------------------------------------------------------------- polars


def _str_condition(col: pl.Expr, op: str, values: list[str]) -> pl.Expr:
    """One operator as a never-null boolean; nulls: positive -> False, negative -> True."""
    if op in ("Equals", "NotEquals"):
        hit = col.is_in(values)
    elif op in ("StartsWith", "NotStartsWith"):
        hit = pl.any_horizontal([col.str.starts_with(v) for v in values])
    else:  # EndsWith / NotEndsWith
        hit = pl.any_horizontal([col.str.ends_with(v) for v in values])
    if op in POSITIVE_OPS:
        return hit.fill_null(False)
    return (~hit).fill_null(True)


def _field_condition(col: pl.Expr, fs: dict) -> list[pl.Expr]:
    return [_str_condition(col, op, fs[op]) for op in ALL_OPS if op in fs]


def _and(conds: list[pl.Expr]) -> pl.Expr:
    return pl.all_horizontal(conds) if len(conds) > 1 else conds[0]


def _column_expr(field: str) -> pl.Expr:
    """Normalised column for a non-resources field, as Utf8 (readOnly Boolean -> 'true'/'false')."""
    col = pl.col(_FIELDS[field][0])
    return col.cast(pl.Utf8) if field == "readOnly" else col


def _selector_expr_one(sel: dict) -> pl.Expr:
    conds: list[pl.Expr] = []
    res_conds: list[pl.Expr] = []
    for fs in sel["FieldSelectors"]:
        field = fs["Field"]
        if field in _RESOURCE_STRUCT_FIELD:
            elem = pl.element().struct.field(_RESOURCE_STRUCT_FIELD[field])
            res_conds.extend(_field_condition(elem, fs))
        else:
            conds.extend(_field_condition(_column_expr(field), fs))
    if res_conds:
        # exists r in resources: all resources.* conditions hold for r.
        # A null list gives null from list.any(); an empty list gives False.
        conds.append(pl.col("resources").list.eval(_and(res_conds)).list.any().fill_null(False))
    return _and(conds)


def selector_expr(selectors: list[dict]) -> pl.Expr:
    """Compile selectors into one boolean polars expression (True = the store accepts the event).

    The expression reads the lake's normalised columns (``eventcategory``,
    ``eventsource``, ``eventname``, ``readonly`` (Boolean), ``eventtype``,
    ``sessioncredentialfromconsole``, ``useridentity_arn``, ``errorcode``,
    ``vpcendpointid`` and ``resources`` as ``List(Struct{accountid,type,arn,
    arnprefix})``); only the columns the selectors mention must exist.  It is
    never null and is aliased ``selector_match`` so ``with_columns`` cannot
    overwrite a source column by accident.  Works on DataFrames and LazyFrames.

    Selectors are validated first, so an invalid selector can never be
    evaluated with made-up semantics.
    """
    sels = validate_selectors(selectors)
    return pl.any_horizontal([_selector_expr_one(s) for s in sels]).fill_null(False).alias(
        "selector_match"
    )


def _referenced_columns(sels: list[dict]) -> dict[str, pl.DataType]:
    out: dict[str, pl.DataType] = {}
    for s in sels:
        for fs in s["FieldSelectors"]:
            col = _FIELDS[fs["Field"]][0]
            out[col] = (
                RESOURCES_DTYPE
                if col == "resources"
                else pl.Boolean() if col == "readonly" else pl.Utf8()
            )
    return out


def matches(df: pl.DataFrame, selectors: list[dict]) -> pl.Series:
    """Boolean Series (one per row of ``df``): does the store accept the event?

    Convenience over :func:`selector_expr`: columns the selectors need but
    ``df`` lacks are treated as all-null (absent field), which is what an
    event without that field means.
    """
    sels = validate_selectors(selectors)
    missing = [
        pl.lit(None, dtype=dtype).alias(col)
        for col, dtype in _referenced_columns(sels).items()
        if col not in df.columns
    ]
    frame = df.with_columns(missing) if missing else df
    return frame.select(selector_expr(sels)).to_series()


# --------------------------------------------------------------------------- records


def _text(value: Any) -> str | None:
    """Scalar JSON value as the string the selector compares (booleans as 'true'/'false')."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return str(value)
    return None  # objects/arrays never match a string condition


def _record_value(record: Mapping, field: str) -> str | None:
    if field == "userIdentity.arn":
        uid = record.get("userIdentity")
        return _text(uid.get("arn")) if isinstance(uid, Mapping) else None
    return _text(record.get(field))


def _resource_value(resource: Any, field: str) -> str | None:
    if not isinstance(resource, Mapping):
        return None
    if field == "resources.ARN":
        value = resource.get("ARN")
        if value is None:
            value = resource.get("arn")
        return _text(value)
    return _text(resource.get("type"))


def _op_holds(value: str | None, op: str, values: list[str]) -> bool:
    if value is None:
        return op in NEGATIVE_OPS
    if op in ("Equals", "NotEquals"):
        hit = value in values
    elif op in ("StartsWith", "NotStartsWith"):
        hit = any(value.startswith(v) for v in values)
    else:
        hit = any(value.endswith(v) for v in values)
    return hit if op in POSITIVE_OPS else not hit


def _fs_holds(value: str | None, fs: dict) -> bool:
    return all(_op_holds(value, op, fs[op]) for op in ALL_OPS if op in fs)


def _selector_holds(record: Mapping, sel: dict) -> bool:
    res_fs = []
    for fs in sel["FieldSelectors"]:
        field = fs["Field"]
        if field in _RESOURCE_STRUCT_FIELD:
            res_fs.append(fs)
        elif not _fs_holds(_record_value(record, field), fs):
            return False
    if not res_fs:
        return True
    resources = record.get("resources")
    if not isinstance(resources, list):
        return False
    return any(
        all(_fs_holds(_resource_value(r, fs["Field"]), fs) for fs in res_fs) for r in resources
    )


def record_matcher(selectors: list[dict]) -> Callable[[Mapping], bool]:
    """Validate once and return ``f(record) -> bool`` for evaluating many single records.

    Use this in per-event loops; :func:`matches_record` re-validates on every call.
    """
    sels = validate_selectors(selectors)

    def match(record: Mapping) -> bool:
        return any(_selector_holds(record, s) for s in sels)

    return match


def matches_record(record: dict, selectors: list[dict]) -> bool:
    """Pure-Python evaluation of selectors on one raw CloudTrail JSON record.

    Reads camelCase keys as delivered by CloudTrail: ``readOnly`` as a JSON
    boolean, ``userIdentity.arn``, ``resources[].type`` and ``resources[].ARN``
    (``arn`` also accepted).  No defaults are inferred (e.g. a pre-1.07 record
    without ``eventCategory`` has a null category); callers normalise first if
    they want that.  Same semantics as :func:`selector_expr`, which this
    function serves as the oracle for.
    """
    return record_matcher(selectors)(record)
