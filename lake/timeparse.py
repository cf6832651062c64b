"""Vectorised parsing of CloudTrail timestamps.

CloudTrail writes `2023-07-19T21:33:41Z`, but real archives also hold `YYYY-MM-DD HH:MM:SS[.fffffffff]`
(re-exported logs), fractions, explicit offsets and the ISO basic form `20131102T010628Z` (old
`creationDate`). Parsing a whole column at once in polars is ~50x faster than `datetime.fromisoformat`
per record, and a value no format accepts becomes null so the caller can reject that record with a reason.
"""

from __future__ import annotations

import polars as pl

_NAIVE_FORMATS = (
    "%Y-%m-%dT%H:%M:%SZ",
    "%Y-%m-%dT%H:%M:%S%.fZ",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%SZ",
    "%Y-%m-%d %H:%M:%S%.fZ",
    "%Y%m%dT%H%M%SZ",
)
_OFFSET_FORMATS = ("%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%z",
                   "%Y-%m-%d %H:%M:%S%.f%z")


def timestamp_expr(col: str | pl.Expr) -> pl.Expr:
    """A polars expression turning a string column into `Datetime('us', 'UTC')`, null where unparseable."""
    c = pl.col(col) if isinstance(col, str) else col
    c = c.str.strip_chars()
    naive = [c.str.strptime(pl.Datetime("us"), f, strict=False).dt.replace_time_zone("UTC")
             for f in _NAIVE_FORMATS]
    aware = [c.str.strptime(pl.Datetime("us", "UTC"), f, strict=False) for f in _OFFSET_FORMATS]
    return pl.coalesce(*naive, *aware)


def parse_timestamps(values: list[str | None]) -> pl.Series:
    """Parse a list of timestamp strings; unparseable or missing values are null."""
    s = pl.Series("t", values, dtype=pl.String)
    if s.len() == 0:
        return pl.Series("t", [], dtype=pl.Datetime("us", "UTC"))
    return pl.DataFrame({"t": s}).select(timestamp_expr("t")).to_series()
