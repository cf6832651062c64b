"""`lake sql`: the SQL shell and the non-interactive runner behind it.

The command handling is pure: `handle(text, session)` takes what the user entered (SQL statements ending in
`;` and dot commands) and returns `Reply` objects holding stdout and stderr text, so tests drive it without
a terminal. Only `interactive` touches prompt_toolkit (history, multi-line editing, completion,
highlighting) and only `run_in_worker` touches threads and Ctrl-C: a query runs in a worker thread with a
`threading.Event` the engine polls, so Ctrl-C cancels the query and the shell stays.

The query engine (`lake.query`: run, explain, table_names, columns, FUNCTION_NAMES) is looked up through
`Session.engine`, which tests replace with a stub.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import re
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import orjson

from . import resultformat
from .errors import LakeError, QueryCancelled, SqlError

T = TypeVar("T")

PROMPT, CONTINUATION = "lake> ", "  ..> "
CANCEL_GRACE_SECONDS = 5.0  # how long Ctrl-C waits for the engine to notice before giving the prompt back

KEYWORDS = """SELECT FROM WHERE GROUP BY HAVING ORDER ASC DESC NULLS FIRST LAST LIMIT OFFSET FETCH NEXT ROWS ONLY
AS AND OR NOT IN IS NULL LIKE ESCAPE BETWEEN EXISTS DISTINCT ALL ANY SOME CASE WHEN THEN ELSE END CAST TRY_CAST
JOIN INNER LEFT RIGHT FULL OUTER CROSS ON USING UNION INTERSECT EXCEPT WITH RECURSIVE VALUES UNNEST ORDINALITY
LATERAL OVER PARTITION RANGE ROW PRECEDING FOLLOWING UNBOUNDED CURRENT WINDOW FILTER TRUE FALSE INTERVAL
TIMESTAMP DATE TIME ZONE AT DAY HOUR MINUTE SECOND MONTH YEAR WEEK QUARTER EXPLAIN ANALYZE ARRAY MAP
ROW VARCHAR BIGINT INTEGER DOUBLE REAL BOOLEAN DECIMAL JSON TABLESAMPLE GROUPING SETS CUBE ROLLUP""".split()

DOT_COMMANDS = {
    ".tables": "list the event data stores you can query (FROM name)",
    ".schema STORE": "the columns of a store with their types, nested fields by dotted path",
    ".explain SQL": "the query plan and which segments pruning skips, without running the query",
    ".timer on|off": "print the run time and scan statistics after each query",
    ".format FMT": "result format: " + "|".join(resultformat.FORMATS),
    ".output [FILE]": "write each result to FILE (replaced per query; needed for parquet); no FILE: the screen",
    ".help": "this list",
    ".quit": "leave the shell (also .exit, Ctrl-D)",
}


def load_engine() -> Any:
    """The query engine module. Imported late so that the shell module loads (and its tests run) alone."""
    from . import query

    return query


@dataclass
class Session:
    """What the shell remembers between commands."""

    lake: Any
    fmt: str = "table"
    timer: bool = False
    stats: bool = False  # --stats: QueryStatistics as one JSON line on stderr after each query
    output: str | None = None  # results go to this file instead of stdout
    width: int | None = None  # table width; None: as wide as the data needs (pipes, files)
    color: bool = False
    max_rows: int = resultformat.MAX_TABLE_ROWS
    spinner: bool = False
    engine: Any = None
    # Per-query limits (lake.querylimits.QueryLimits): when set, each query and .explain runs in a worker
    # process that Ctrl-C, the timeout or the memory budget kill, so a cancelled query really stops.
    limits: Any = None
    _tables: list[str] | None = field(default=None, repr=False)
    _columns: list[str] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.engine is None:
            self.engine = load_engine()

    def isolated(self) -> bool:
        """Whether queries run under `limits` (an engine whose run() takes them: lake.query does)."""
        return self.limits is not None and "limits" in inspect.signature(self.engine.run).parameters

    def tables(self) -> list[str]:
        if self._tables is None:
            self._tables = list(self.engine.table_names(self.lake))
        return self._tables

    def columns(self) -> list[str]:
        if self._columns is None:
            # The column set is the lake's fixed event schema: engines may take the lake or not.
            fn = self.engine.columns
            self._columns = list(fn(self.lake) if inspect.signature(fn).parameters else fn())
        return self._columns


@dataclass
class Reply:
    """What one unit of input produced. `ok` is False after an error (the exit status of a script)."""

    out: str | bytes = ""
    err: str = ""
    ok: bool = True
    quit: bool = False
    cancelled: bool = False


# ---- splitting input into statements ----------------------------------------------------------------

_NORMAL, _QUOTE, _IDENT, _LINE_COMMENT, _BLOCK_COMMENT = range(5)


def _scan(text: str) -> tuple[list[tuple[str, str]], str, int]:
    """Split `text` into complete units: ("dot", line) for a dot command (a line starting with `.` where a
    statement would start) and ("sql", statement) for SQL up to a `;` outside strings, quoted identifiers
    and comments. Returns the units, the unfinished remainder ("" when it holds only blanks and comments)
    and the lexical state at the end (to know whether the cursor sits in a string or comment)."""
    units: list[tuple[str, str]] = []
    state, start, i, n = _NORMAL, 0, 0, len(text)
    significant = False  # the current unit has something besides blanks and comments
    while i < n:
        c = text[i]
        if state == _NORMAL:
            if not significant and c == ".":
                end = text.find("\n", i)
                end = n if end < 0 else end
                units.append(("dot", text[i:end].strip()))
                i = start = end + 1
                continue
            if c == ";":
                if significant:
                    units.append(("sql", text[start:i].strip()))
                start, significant = i + 1, False
            elif c == "'":
                state, significant = _QUOTE, True
            elif c == '"':
                state, significant = _IDENT, True
            elif c == "-" and text.startswith("--", i):
                state, i = _LINE_COMMENT, i + 1
            elif c == "/" and text.startswith("/*", i):
                state, i = _BLOCK_COMMENT, i + 1
            elif not c.isspace():
                significant = True
        elif state == _QUOTE and c == "'":
            state = _NORMAL  # a doubled '' closes and reopens: same result
        elif state == _IDENT and c == '"':
            state = _NORMAL
        elif state == _LINE_COMMENT and c == "\n":
            state = _NORMAL
        elif state == _BLOCK_COMMENT and c == "*" and text.startswith("*/", i):
            state, i = _NORMAL, i + 1
        i += 1
    rest = text[start:].strip() if significant else ""
    return units, rest, state


def split_statements(text: str) -> tuple[list[tuple[str, str]], str]:
    """The complete units of `text` and its unfinished remainder (see `_scan`)."""
    units, rest, _ = _scan(text)
    return units, rest


def script_units(text: str) -> list[tuple[str, str]]:
    """Every unit of a script (-c, -f, stdin): the last statement may omit its `;`."""
    units, rest = split_statements(text)
    return units + ([("sql", rest)] if rest else [])


def is_complete(text: str) -> bool:
    """Whether Enter should run the buffer: it ends a statement, is a dot command, is empty, or says exit."""
    if text.strip().lower() in ("exit", "quit"):
        return True
    return split_statements(text)[1] == ""


# ---- running queries ---------------------------------------------------------------------------------

def run_in_worker(fn: Callable[[threading.Event], T], *, spinner: bool = False,
                  grace: float | None = None) -> T:
    """Run `fn(cancel)` in a worker thread; Ctrl-C (KeyboardInterrupt here, in the main thread) sets `cancel`
    and raises QueryCancelled once the worker stops, or after `grace` seconds (the worker then finishes in
    the background and its result is dropped). The caller's thread stays responsive either way."""
    cancel, done = threading.Event(), threading.Event()
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["value"] = fn(cancel)
        except BaseException as e:  # handed to the caller's thread, raised there
            box["error"] = e
        finally:
            done.set()

    # Waiting on `done`, not Thread.join: a join interrupted by Ctrl-C can leave is_alive() wrongly False.
    worker = threading.Thread(target=work, name="lake-query", daemon=True)
    status = None
    if spinner:
        from .output import err_console

        status = err_console.status("running query… (Ctrl-C cancels)", spinner="dots")
        status.start()
    try:
        worker.start()
        while not done.wait(0.05):
            pass
    except KeyboardInterrupt:
        cancel.set()
        try:
            done.wait(CANCEL_GRACE_SECONDS if grace is None else grace)
        except KeyboardInterrupt:
            pass  # a second Ctrl-C: give the prompt back now
        raise QueryCancelled("query cancelled" + ("" if done.is_set() else
                                                  " (it stops in the background)")) from None
    finally:
        if status is not None:
            status.stop()
    if "error" in box:
        raise box["error"]
    return box["value"]


def error_reply(e: BaseException, sql: str | None = None) -> Reply:
    """One line naming what went wrong (plus the caret line for a located SQL error), never a traceback."""
    if isinstance(e, QueryCancelled):
        return Reply(err=f"{e}\n", ok=False, cancelled=True)
    text = str(e).strip()
    first = text.splitlines()[0] if text else type(e).__name__
    if not isinstance(e, (LakeError, OSError, ValueError)):
        first = f"{type(e).__name__}: {first}"  # an engine failure: the type says where to look
    msg = f"error: {first}\n"
    if isinstance(e, SqlError) and sql is not None:
        caret = e.caret(sql)
        if caret:
            msg += caret.rstrip("\n") + "\n"
    return Reply(err=msg, ok=False)


def _timer_line(seconds: float, stats: Any) -> str:
    s = dataclasses.asdict(stats) if dataclasses.is_dataclass(stats) else dict(vars(stats))
    parts = [f"run time {seconds:.3f} s"]
    if "EventsScanned" in s:
        parts.append(f"scanned {s['EventsScanned']:,} events, {s.get('BytesScanned', 0):,} bytes")
    if s.get("SegmentsConsidered"):
        parts.append(f"skipped {s.get('SegmentsSkipped', 0):,} of {s['SegmentsConsidered']:,} segments")
    return "; ".join(parts) + "\n"


def _write_output(path: str, data: str | bytes) -> None:
    with open(path, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


def run_sql(sql: str, session: Session) -> Reply:
    """Run one statement and format its result in the session's format."""
    if session.fmt == "parquet" and not session.output:
        return Reply(err="error: the parquet format writes a file: set one with .output FILE (or --output)\n",
                     ok=False)
    t0 = time.monotonic()
    try:
        extra = {"limits": session.limits} if session.isolated() else {}
        result = run_in_worker(lambda cancel: session.engine.run(session.lake, sql, cancel=cancel, **extra),
                               spinner=session.spinner)
        data = resultformat.render(result.df, session.fmt, width=session.width, color=session.color,
                                   max_rows=session.max_rows)
        if session.output:
            _write_output(session.output, data)
    except Exception as e:  # noqa: BLE001 - every failure becomes one line; the shell goes on
        return error_reply(e, sql)
    reply = Reply(out="" if session.output else data)
    if session.output:
        reply.err += f"wrote {resultformat.row_count_text(result.df.height)} to {session.output}\n"
    if session.timer:
        reply.err += _timer_line(time.monotonic() - t0, result.stats)
    if session.stats:
        st = result.stats
        d = dataclasses.asdict(st) if dataclasses.is_dataclass(st) else dict(vars(st))
        reply.err += orjson.dumps(d).decode() + "\n"
    return reply


# ---- dot commands ------------------------------------------------------------------------------------

def quote_ident(name: str) -> str:
    """`name` as a SQL identifier: bare when it is a plain lower-case word, else double-quoted."""
    return name if re.fullmatch(r"[a-z_][a-z0-9_]*", name) and name.upper() not in KEYWORDS else \
        '"' + name.replace('"', '""') + '"'


def help_text() -> str:
    lines = ["End SQL statements with ; (Enter inside a statement starts a new line). Ctrl-C cancels a",
             "running query, Ctrl-D leaves. Commands:"]
    width = max(map(len, DOT_COMMANDS))
    lines += [f"  {k.ljust(width)}  {v}" for k, v in DOT_COMMANDS.items()]
    return "\n".join(lines) + "\n"


def _schema(session: Session, store: str) -> Reply:
    # The columns as SELECT * shows them: exactly what the SQL layer exposes, by construction.
    sql = f"SELECT * FROM {quote_ident(store)} LIMIT 0"
    try:
        df = run_in_worker(lambda cancel: session.engine.run(session.lake, sql, cancel=cancel)).df
    except Exception as e:  # noqa: BLE001
        return error_reply(e)
    rows = resultformat.schema_lines(df.schema)
    width = max((len(p) for p, _ in rows), default=0)
    return Reply(out="".join(f"{p.ljust(width)}  {t}\n" for p, t in rows))


def dot_command(line: str, session: Session) -> Reply:
    """Run one dot command line (`.tables`, `.schema STORE`, ...)."""
    cmd, _, arg = line.strip().partition(" ")
    cmd, arg = cmd.lower(), arg.strip()
    if cmd in (".quit", ".exit", ".q"):
        return Reply(quit=True)
    if cmd == ".help":
        return Reply(out=help_text())
    if cmd == ".tables":
        try:
            session._tables = None  # stores may have been created since: .tables always asks again
            names = session.tables()
        except Exception as e:  # noqa: BLE001
            return error_reply(e)
        return Reply(out="".join(f"{n}\n" for n in names) if names else "",
                     err="" if names else "no event data stores: create one with `lake store create NAME`\n")
    if cmd == ".schema":
        if not arg:
            return Reply(err="usage: .schema STORE (.tables lists the stores)\n", ok=False)
        return _schema(session, arg.rstrip(";").strip().strip('"'))
    if cmd == ".explain":
        sql = arg.rstrip().rstrip(";")
        if not sql:
            return Reply(err="usage: .explain SELECT ...\n", ok=False)
        try:
            if session.isolated():  # planning alone can be costly (300 chained CTEs): under the limits
                res = run_in_worker(lambda cancel: session.engine.run(session.lake, f"EXPLAIN {sql}", cancel=cancel,
                                                                      limits=session.limits))
                return Reply(out="".join(f"{line}\n" for line in res.df["plan"].to_list()))
            return Reply(out=session.engine.explain(session.lake, sql).rstrip("\n") + "\n")
        except Exception as e:  # noqa: BLE001
            return error_reply(e, sql)
    if cmd == ".timer":
        if arg.lower() not in ("on", "off", ""):
            return Reply(err="usage: .timer on|off\n", ok=False)
        if arg:
            session.timer = arg.lower() == "on"
        return Reply(err=f"timer {'on' if session.timer else 'off'}\n")
    if cmd == ".format":
        if arg and arg.lower() not in resultformat.FORMATS:
            return Reply(err=f"usage: .format {'|'.join(resultformat.FORMATS)}\n", ok=False)
        if arg:
            session.fmt = arg.lower()
        note = " (results go to the .output file)" if session.fmt == "parquet" else ""
        return Reply(err=f"format {session.fmt}{note}\n")
    if cmd == ".output":
        session.output = os.path.expanduser(arg) if arg else None
        return Reply(err=f"results go to {session.output}\n" if session.output else "results go to the screen\n")
    return Reply(err=f"error: unknown command {cmd}: .help lists the commands\n", ok=False)


def run_unit(kind: str, text: str, session: Session) -> Reply:
    if kind == "dot":
        return dot_command(text, session)
    if text.strip().lower() in ("exit", "quit"):
        return Reply(quit=True)
    return run_sql(text, session)


def handle(text: str, session: Session) -> Iterator[Reply]:
    """Run every unit of `text` in order, yielding each reply as soon as it is ready; stops after an error
    or a quit. The last statement may omit its `;` (scripts; in the shell Enter waits for the `;`)."""
    if text.strip().lower() in ("exit", "quit"):
        yield Reply(quit=True)
        return
    for kind, unit in script_units(text):
        reply = run_unit(kind, unit, session)
        yield reply
        if reply.quit or not reply.ok:
            return


# ---- completion --------------------------------------------------------------------------------------

_WORD = re.compile(r"[\w.$]*$")


def completions(text: str, session: Session) -> tuple[str, list[tuple[str, str]]]:
    """What to offer at the end of `text`: (the word being completed, [(replacement, kind)]). Dot commands
    at the start of a unit; store names after `.schema`; otherwise keywords, functions, store names and
    column paths (nested ones by dotted path, also behind a table alias). Nothing inside strings/comments."""
    units, rest, state = _scan(text)
    if state in (_QUOTE, _LINE_COMMENT, _BLOCK_COMMENT):
        return "", []
    # A dot command has no newline yet when the cursor is on it, so _scan counted it as a complete unit.
    line = text[text.rfind("\n") + 1:]
    if units and units[-1][0] == "dot" and line.lstrip().startswith("."):
        return _dot_completions(line.lstrip(), session)
    # Inside an open quoted identifier the word starts at its quote: `FROM "my-st` completes store names.
    word = text[text.rfind('"'):] if state == _IDENT else _WORD.search(text).group(0)  # type: ignore[union-attr]
    low = word.lower()
    out: list[tuple[str, str]] = []
    try:
        tables = session.tables()
        columns = session.columns()
    except Exception:  # noqa: BLE001 - completion never breaks typing
        tables, columns = [], []
    if word.startswith('"'):
        return word, [(f'"{t}"', "store") for t in tables if f'"{t}'.lower().startswith(low)]
    if not word:
        return word, []
    if "." in word:
        roots = {c.split(".", 1)[0].lower() for c in columns}
        head, _, tail = word.partition(".")
        prefix = ""
        if head.lower() not in roots:  # a table alias: complete the path behind it
            prefix, low = head + ".", tail.lower()
        return word, [(prefix + c, "column") for c in columns if c.lower().startswith(low)]
    fix = (lambda s: s.upper()) if word.isupper() else (lambda s: s.lower())  # keywords in the user's case
    stores = [(quote_ident(t), "store") for t in tables if t.lower().startswith(low)]
    after_from = re.search(r"\b(from|join)\s+[\w.$]*$", text, re.IGNORECASE) is not None
    out += stores if after_from else []  # where a store name goes, offer those first
    out += [(fix(k), "keyword") for k in KEYWORDS if k.lower().startswith(low)]
    out += [(f, "function") for f in getattr(session.engine, "FUNCTION_NAMES", []) if f.lower().startswith(low)]
    out += [] if after_from else stores
    out += [(c, "column") for c in columns if "." not in c and c.lower().startswith(low)]
    seen: set[str] = set()
    return word, [(c, k) for c, k in out if not (c in seen or seen.add(c))]  # type: ignore[func-returns-value]


def _dot_completions(line: str, session: Session) -> tuple[str, list[tuple[str, str]]]:
    cmd, sep, arg = line.partition(" ")
    if not sep:
        names = [k.split()[0] for k in DOT_COMMANDS]
        return cmd, [(n, "command") for n in names if n.startswith(cmd.lower())]
    choices = {".format": list(resultformat.FORMATS), ".timer": ["on", "off"]}.get(cmd.lower())
    if cmd.lower() == ".schema":
        try:
            choices = session.tables()
        except Exception:  # noqa: BLE001
            choices = []
    if cmd.lower() == ".explain":
        return completions(arg, session)
    word = arg.strip()
    return word, [(c, "") for c in choices or [] if c.lower().startswith(word.lower())]


# ---- the interactive shell ---------------------------------------------------------------------------

def history_path() -> str | None:
    """$LAKE_HISTORY (empty: no history file), else ~/.lake_history."""
    env = os.environ.get("LAKE_HISTORY")
    if env is not None:
        return os.path.expanduser(env) or None
    return str(Path.home() / ".lake_history")


def _emit(reply: Reply, out: Any = None, err: Any = None) -> None:
    out, err = out or sys.stdout, err or sys.stderr
    if reply.out:
        text = reply.out if isinstance(reply.out, str) else reply.out.decode(errors="replace")
        out.write(text)
        out.flush()
    if reply.err:
        err.write(reply.err)
        err.flush()


def _prompt_session(session: Session, input: Any = None, output: Any = None) -> Any:
    from prompt_toolkit import PromptSession
    from prompt_toolkit.auto_suggest import AutoSuggestFromHistory
    from prompt_toolkit.completion import Completer, Completion
    from prompt_toolkit.history import FileHistory, InMemoryHistory
    from prompt_toolkit.key_binding import KeyBindings
    from prompt_toolkit.lexers import PygmentsLexer
    from pygments.lexers.sql import SqlLexer

    class SqlCompleter(Completer):
        def get_completions(self, document, complete_event):  # type: ignore[override]
            word, items = completions(document.text_before_cursor, session)
            for text, kind in items:
                yield Completion(text, start_position=-len(word), display_meta=kind)

    kb = KeyBindings()

    @kb.add("enter")
    def _enter(event: Any) -> None:
        buf = event.current_buffer
        state = buf.complete_state
        if state is not None and state.current_completion is not None:  # Enter picks the highlighted word
            buf.apply_completion(state.current_completion)
            return
        if buf.document.is_cursor_at_the_end and is_complete(buf.text):
            buf.validate_and_handle()
        else:
            buf.insert_text("\n")

    path = history_path()
    history: Any = InMemoryHistory()
    if path:
        try:
            Path(path).touch(exist_ok=True)
            history = FileHistory(path)
        except OSError as e:
            sys.stderr.write(f"warning: no history file ({e}); set LAKE_HISTORY to a writable path\n")
    return PromptSession(
        message=PROMPT, multiline=True, key_bindings=kb, history=history, completer=SqlCompleter(),
        complete_while_typing=True, lexer=PygmentsLexer(SqlLexer), auto_suggest=AutoSuggestFromHistory(),
        prompt_continuation=lambda width, line_number, is_soft_wrap: CONTINUATION.rjust(width),
        input=input, output=output, enable_history_search=False)


def interactive(session: Session, *, input: Any = None, output: Any = None, out: Any = None,
                err: Any = None) -> int:
    """The read-eval-print loop until .quit or Ctrl-D. Returns 0. `input`/`output` are prompt_toolkit's
    (tests pass a pipe input and a dummy output); `out`/`err` receive the replies."""
    ps = _prompt_session(session, input=input, output=output)
    (err or sys.stderr).write(f"Lake SQL on {getattr(session.lake, 'uri', session.lake)}: end statements "
                              "with ;  .help lists the commands, Ctrl-D leaves.\n")
    while True:
        session.width = shutil.get_terminal_size().columns  # follows a resized window
        try:
            text = ps.prompt()
        except KeyboardInterrupt:
            continue  # Ctrl-C at the prompt clears the line, as in a shell
        except EOFError:
            return 0
        for reply in handle(text, session):
            _emit(reply, out, err)
            if reply.quit:
                return 0


def run_script(text: str, session: Session, *, out: Any = None, err: Any = None) -> int:
    """Run a script (-c, -f, stdin) and return the exit status: 0, 1 after an error, 130 when cancelled."""
    for reply in handle(text, session):
        _emit(reply, out, err)
        if reply.cancelled:
            return 130
        if not reply.ok:
            return 1
        if reply.quit:
            break
    return 0
