"""CLI output behind one interface: every command builds plain data, then `emit` renders it as a rich text
table or as JSON. The JSON form is the stable, scriptable contract; the text form is for people."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from datetime import date, datetime
from typing import Any, Iterator, Sequence

import orjson
from rich.console import Console
from rich.markup import escape
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.table import Table

console = Console()
err_console = Console(stderr=True, soft_wrap=True)


def _default(o: Any):
    if isinstance(o, (datetime, date)):
        return o.isoformat()
    return str(o)


def to_json(data: Any) -> str:
    return orjson.dumps(data, default=_default, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode()


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, (dict, list)):
        return orjson.dumps(v, default=_default).decode()
    if isinstance(v, datetime):
        return v.isoformat()
    return str(v)


def emit(data: Any, fmt: str, *, columns: Sequence[str] | None = None, rows: list[dict] | None = None,
         title: str | None = None) -> None:
    """Print `data` as JSON, or as a table of `rows` (default: data itself if a list, else key/value)."""
    if fmt == "json":
        sys.stdout.write(to_json(data) + "\n")
        return
    if rows is None:
        rows = data if isinstance(data, list) else [{"field": k, "value": v} for k, v in data.items()]
    if not rows:
        console.print(f"[dim]{title + ': ' if title else ''}nothing to show[/dim]")
        return
    columns = list(columns or rows[0].keys())
    table = Table(title=title, show_lines=False, header_style="bold")
    for c in columns:
        table.add_column(escape(str(c)), overflow="fold")
    for r in rows:
        # Cells are data (names, selectors, event fields), never markup: "[/x]" must print as itself, not crash.
        table.add_row(*(escape(_cell(r.get(c))) for c in columns))
    console.print(table)


@contextmanager
def progress_bar(description: str, total: int | None = None, enabled: bool = True) -> Iterator:
    """A progress bar on stderr; yields `update(done, total)`. Silent when not a terminal or disabled."""
    if not enabled or not err_console.is_terminal:
        yield lambda done, total=None: None
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=err_console, transient=True) as p:
        task = p.add_task(description, total=total)

        def update(done: int, total_: int | None = None) -> None:
            p.update(task, completed=done, total=total_ if total_ is not None else total)
        yield update
