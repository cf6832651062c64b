"""The `lake` command: one Click function per verb, output through `lake.output.emit`.

Errors a user can cause print one line on stderr (what went wrong, what to do) and exit 1; `lake verify`
exits 1 when it finds anything.
"""

from __future__ import annotations

import os
import sys
import tempfile
from datetime import timedelta
from functools import wraps

import click
import orjson
from rich.markup import escape

from . import maintenance
from .errors import InvalidParameter, LakeError
from .lake import Lake, default_uri
from .output import emit, err_console, progress_bar

FORMATS = click.Choice(["table", "json"])


class Ctx:
    def __init__(self, uri: str, fmt: str):
        self.uri = uri
        self.fmt = fmt
        self._lake: Lake | None = None

    @property
    def lake(self) -> Lake:
        if self._lake is None:
            self._lake = Lake(self.uri)
        return self._lake


def handle_errors(fn):
    """Turn expected failures into a one-line message and exit status 1, never a traceback."""
    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (LakeError, ValueError, OSError, RuntimeError) as e:  # OSError: also IsADirectory, NotADirectory
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            err_console.print(f"[red]error:[/red] {escape(msg)}", highlight=False)
            sys.exit(1)
    return wrapper


def query_limit_options(memory_default: str):
    """The per-query limits `lake sql` and `lake serve` share (lake.querylimits); only the memory default
    differs (the server divides it among its concurrent queries)."""
    def decorate(fn):
        for opt in reversed((
            click.option("--query-memory", metavar="SIZE", help="Memory each query may use, e.g. 1G (default "
                         f"$LAKE_QUERY_MEMORY, else {memory_default}); 0: no limit."),
            click.option("--query-timeout", type=float, metavar="SECONDS",
                         help="Stop a query after this long (default $LAKE_QUERY_TIMEOUT, else 3600); 0: no limit."),
            click.option("--query-max-rows", type=int, metavar="N",
                         help="Most rows a result may have (default $LAKE_QUERY_MAX_ROWS, else 1000000); 0: no limit."),
        )):
            fn = opt(fn)
        return fn
    return decorate


def _selectors_arg(value: str | None):
    if value is None:
        return None
    text = open(value[1:]).read() if value.startswith("@") else value
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as e:
        # A LakeError, not click.BadParameter: handle_errors prints it as the one-line "error:" contract.
        raise InvalidParameter(f"--selectors is not valid JSON: {e}") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--lake", "uri", default=None, metavar="URI",
              help="Lake location: a directory or s3://bucket/prefix (default $LAKE_URI or ./lake-data).")
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True, help="Output format.")
@click.version_option(package_name="lake")
@click.pass_context
def cli(ctx: click.Context, uri: str | None, fmt: str) -> None:
    """Lake: a self-hosted CloudTrail event lake with immutable, verifiable event data stores."""
    ctx.obj = Ctx(uri or default_uri(), fmt)


# ---- stores ------------------------------------------------------------------------------------------

@cli.group()
def store() -> None:
    """Create and manage event data stores."""


def _summary(md: dict) -> dict:
    return {"Name": md["Name"], "Id": md["EventDataStoreId"], "Status": md["Status"],
            "RetentionPeriod": md["RetentionPeriod"], "TerminationProtection": md["TerminationProtectionEnabled"],
            "Created": md["CreatedTimestamp"]}


@store.command("create")
@click.argument("name")
@click.option("--retention-days", type=int, help="7-3653 days (default 366; 2557 with FIXED billing).")
@click.option("--selectors", help="Advanced event selectors as JSON, or @file.json.")
@click.option("--termination-protection/--no-termination-protection", default=True, show_default=True,
              help="Refuse deletion until turned off.")
@click.option("--billing-mode", type=click.Choice(["EXTENDABLE_RETENTION_PRICING", "FIXED_RETENTION_PRICING"]),
              default="EXTENDABLE_RETENTION_PRICING", show_default=True,
              help="CloudTrail Lake billing mode; it sets the default and maximum retention.")
@click.option("--max-event-size", type=click.Choice(["Standard", "Large"]), default="Standard", show_default=True,
              help="Standard: 256 KB events with per-field caps; Large: 1 MB.")
@click.option("--multi-region/--single-region", default=True, show_default=True,
              help="Recorded as MultiRegionEnabled.")
@click.option("--organization/--no-organization", default=False, show_default=True,
              help="Recorded as OrganizationEnabled.")
@click.option("--start-ingestion/--no-start-ingestion", default=True, show_default=True,
              help="Accept live events from the start.")
@click.pass_obj
@handle_errors
def store_create(obj: Ctx, name, retention_days, selectors, termination_protection, billing_mode,
                 max_event_size, multi_region, organization, start_ingestion) -> None:
    """Create an event data store (all management events unless --selectors says otherwise)."""
    st = obj.lake.create_store(name, selectors=_selectors_arg(selectors), retention_days=retention_days,
                               termination_protection=termination_protection, billing_mode=billing_mode,
                               max_event_size=max_event_size, multi_region=multi_region,
                               organization=organization, start_ingestion=start_ingestion)
    emit(st.metadata, obj.fmt)


@store.command("list")
@click.option("--all", "include_all", is_flag=True, help="Include stores deleted more than 7 days ago.")
@click.pass_obj
@handle_errors
def store_list(obj: Ctx, include_all: bool) -> None:
    """List event data stores."""
    mds = [s.metadata for s in obj.lake.stores(include_expired=include_all)]
    emit(mds, obj.fmt, rows=[_summary(m) for m in mds], title="event data stores")


@store.command("show")
@click.argument("ref")
@click.pass_obj
@handle_errors
def store_show(obj: Ctx, ref: str) -> None:
    """Show one store (by name, id or ARN) with its statistics."""
    emit(obj.lake.store(ref).describe(), obj.fmt)


@store.command("update")
@click.argument("ref")
@click.option("--name", help="New name.")
@click.option("--retention-days", type=int, help="7-3653 days (2557 at most with FIXED billing).")
@click.option("--selectors", help="Advanced event selectors as JSON, or @file.json.")
@click.option("--termination-protection/--no-termination-protection", default=None,
              help="Turn deletion protection on or off.")
@click.option("--max-event-size", type=click.Choice(["Standard", "Large"]), help="Standard (256 KB) or Large (1 MB).")
@click.option("--billing-mode", type=click.Choice(["EXTENDABLE_RETENTION_PRICING", "FIXED_RETENTION_PRICING"]),
              help="EXTENDABLE to FIXED is refused; create a new store instead.")
@click.option("--multi-region/--single-region", default=None, help="Recorded as MultiRegionEnabled.")
@click.pass_obj
@handle_errors
def store_update(obj: Ctx, ref, name, retention_days, selectors, termination_protection, max_event_size,
                 billing_mode, multi_region) -> None:
    """Change a store's settings (at least one option)."""
    md = obj.lake.store(ref).update(name=name, retention_days=retention_days, selectors=_selectors_arg(selectors),
                                    termination_protection=termination_protection,
                                    max_event_size=max_event_size, billing_mode=billing_mode,
                                    multi_region=multi_region)
    emit(md, obj.fmt)


@store.command("delete")
@click.argument("ref")
@click.pass_obj
@handle_errors
def store_delete(obj: Ctx, ref: str) -> None:
    """Delete a store: PENDING_DELETION, restorable for 7 days. Refused under termination protection."""
    emit(_summary(obj.lake.store(ref).delete()), obj.fmt)


@store.command("restore")
@click.argument("ref")
@click.pass_obj
@handle_errors
def store_restore(obj: Ctx, ref: str) -> None:
    """Restore a store deleted less than 7 days ago."""
    emit(_summary(obj.lake.store(ref).restore()), obj.fmt)


@store.command("start-ingestion")
@click.argument("ref")
@click.pass_obj
@handle_errors
def store_start(obj: Ctx, ref: str) -> None:
    """Accept live events again."""
    emit(_summary(obj.lake.store(ref).start_ingestion()), obj.fmt)


@store.command("stop-ingestion")
@click.argument("ref")
@click.pass_obj
@handle_errors
def store_stop(obj: Ctx, ref: str) -> None:
    """Stop accepting live events (the data stays queryable)."""
    emit(_summary(obj.lake.store(ref).stop_ingestion()), obj.fmt)


# ---- data ---------------------------------------------------------------------------------------------

@cli.command("append")
@click.argument("ref")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.pass_obj
@handle_errors
def append_cmd(obj: Ctx, ref: str, files) -> None:
    """Add events from JSON files (a record, {"Records": [...]}, a JSON array or NDJSON; gzip ok) as live
    events: the store's selectors and size limits apply."""
    from .trailfiles import decode

    st = obj.lake.store(ref)
    total = {"files": 0, "appended": 0, "duplicates": 0, "not_selected": 0, "expired": 0, "rejected": []}
    for path in files:
        with open(path, "rb") as f:
            recs = decode(f.read(), path)
        r = st.append(recs, location=path)
        total["files"] += 1
        for k in ("appended", "duplicates", "not_selected", "expired"):
            total[k] += getattr(r, k)
        total["rejected"] += [x.as_dict() for x in r.rejected]
    emit(total, obj.fmt)
    if total["rejected"]:
        sys.exit(1)


# ---- import ------------------------------------------------------------------------------------------

def _when(value: str | None):
    if not value:
        return None
    from datetime import datetime, timezone

    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date or timestamp (use e.g. 2024-01-31 or "
                                 "2024-01-31T12:00:00Z)") from None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def _import_progress(enabled: bool):
    """A rich progress bar fed with ImportStatistics: files, events, bytes, rate and ETA."""
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    if not enabled or not err_console.is_terminal:
        return None, None
    p = Progress(TextColumn("importing"), BarColumn(), DownloadColumn(), TextColumn("{task.fields[files]} files"),
                 TextColumn("{task.fields[events]:,} events"), TextColumn("{task.fields[rate]:,.0f} ev/s"),
                 TimeElapsedColumn(), TimeRemainingColumn(), console=err_console, transient=True)
    task = p.add_task("import", total=None, files=0, events=0, rate=0.0)
    import time as _t
    t0 = _t.monotonic()

    def update(stats, total_bytes):
        el = max(_t.monotonic() - t0, 1e-9)
        p.update(task, total=total_bytes, completed=min(stats.BytesRead, total_bytes or stats.BytesRead),
                 files=stats.FilesCompleted, events=stats.EventsCompleted, rate=stats.EventsCompleted / el)
    return p, update


@cli.command("import")
@click.argument("sources", nargs=-1)
@click.option("--store", "ref", help="Destination event data store (name, id or ARN).")
@click.option("--start", help="Only events at or after this time (also skips older objects by key date).")
@click.option("--end", help="Only events at or before this time.")
@click.option("--resume", "resume_id", help="Continue the import with this id (same sources, store and window).")
@click.option("--workers", type=int, help="Decoding processes (default: one per core).")
@click.option("--no-progress", is_flag=True, help="Do not show the progress bar.")
@click.pass_obj
@handle_errors
def import_cmd(obj: Ctx, sources, ref, start, end, resume_id, workers, no_progress) -> None:
    """Import historical CloudTrail logs (files, directories or s3:// prefixes in the trail layout; gzip or
    plain {"Records": [...]}, JSON arrays, NDJSON). Re-importing an object adds nothing; a killed import
    continues with --resume ID. Exit status 1 if any file or record failed (see `lake imports failures`)."""
    from .importer import Importer, resume

    progress, update = _import_progress(not no_progress)
    if resume_id:
        # the operator's own import: symbolic links are followed wherever they point (the API confines them)
        imp = resume(obj.lake, resume_id, workers=workers, progress=update, confine_links=False)
    else:
        if not sources or not ref:
            raise click.UsageError("give SOURCES and --store (or --resume ID)")
        imp = Importer(obj.lake.store(ref), list(sources), start=_when(start), end=_when(end), workers=workers,
                       progress=update, confine_links=False)
    if progress:
        with progress:
            report = imp.run()
    else:
        report = imp.run()
    data = report.as_dict()
    st = data["ImportStatistics"]
    emit(data, obj.fmt, rows=[{"statistic": k, "value": v} for k, v in st.items()] +
         [{"statistic": "ElapsedSeconds", "value": data["ElapsedSeconds"]},
          {"statistic": "EventsPerSecond", "value": data["EventsPerSecond"]}],
         title=f"import {data['ImportId']}: {data['ImportStatus']}")
    if obj.fmt != "json":
        if st["FilesCompleted"] == 0 and st["FilesAlreadyImported"]:
            err_console.print(f"nothing new: all {st['FilesAlreadyImported']:,} objects were imported before",
                              highlight=False)
        if st["FailedEntries"]:
            err_console.print(f"{st['FailedEntries']:,} failures: `lake imports failures {data['ImportId']}`",
                              highlight=False)
    if st["FailedEntries"]:
        sys.exit(1)


@cli.group()
def imports() -> None:
    """Past imports: status, statistics and failures."""


@imports.command("list")
@click.pass_obj
@handle_errors
def imports_list(obj: Ctx) -> None:
    """List imports, oldest first."""
    from .importer import list_imports

    reps = list_imports(obj.lake)
    emit(reps, obj.fmt, rows=[{"ImportId": r["ImportId"], "Status": r["ImportStatus"],
                               "Events": r["ImportStatistics"]["EventsCompleted"],
                               "Failed": r["ImportStatistics"]["FailedEntries"], "Created": r["CreatedTimestamp"]}
                              for r in reps], title="imports")


@imports.command("show")
@click.argument("import_id")
@click.pass_obj
@handle_errors
def imports_show(obj: Ctx, import_id: str) -> None:
    """Show one import (GetImport)."""
    from .importer import get_import

    rep = get_import(obj.lake, import_id)
    emit(rep, obj.fmt, rows=[{"statistic": k, "value": v} for k, v in rep["ImportStatistics"].items()],
         title=f"import {import_id}: {rep['ImportStatus']}")


@imports.command("failures")
@click.argument("import_id")
@click.pass_obj
@handle_errors
def imports_failures(obj: Ctx, import_id: str) -> None:
    """List the failure entries of an import (ListImportFailures)."""
    from .importer import import_failures

    emit(import_failures(obj.lake, import_id), obj.fmt, columns=["Location", "ErrorType", "ErrorMessage"],
         title=f"failures of import {import_id}")


# ---- integrity and maintenance ------------------------------------------------------------------------

@cli.command("verify")
@click.option("--store", "ref", help="Only this store (default: all stores and the catalog).")
@click.option("--trusted-key", "trusted_key", metavar="PEM_OR_DIR",
              help="Chain-head public key(s) held outside the lake (`lake keys export`): the newest commit must "
                   "carry a valid signature by one of them.")
@click.option("--expect-head", "expect_heads", multiple=True, metavar="[STORE=][VERSION:]SHA256",
              help="A head recorded earlier (as printed by verify): the chain must reach it. Repeatable.")
@click.pass_obj
@handle_errors
def verify_cmd(obj: Ctx, ref: str | None, trusted_key: str | None, expect_heads: tuple[str, ...]) -> None:
    """Recompute every live segment's SHA-256 (and of retired segments still referenced), walk the commit
    chain, check it against the anchors held outside the lake, and report tampered, missing and unexpected
    files. Prints each store's head to record. Exit status 1 on any finding."""
    from .verify import verify

    with progress_bar("verifying segments") as update:
        result = verify(obj.lake, ref, progress=update, trusted_key=trusted_key, expect_heads=list(expect_heads))
    rows = [{"store": s["store"], "ok": s["ok"], "version": s["version"], "segments": s["segments"],
             "events": s["events"], "distinct_events": s["distinct_events"], "findings": len(s["findings"])}
            for s in result["stores"]]
    emit(result, obj.fmt, rows=rows, title="verification")
    if obj.fmt != "json":
        for s in result["stores"]:
            for f in s["findings"]:
                err_console.print(f"[red]{escape(f['kind'])}[/red] {escape(f['path'])}: {escape(f['message'])}",
                                  highlight=False)
        for f in result["catalog"]:
            err_console.print(f"[red]{escape(f['kind'])}[/red] {escape(f['path'])}: {escape(f['message'])}",
                              highlight=False)
        for s in result["stores"]:
            if s["head"]:
                err_console.print(f"head {escape(s['store'])}={s['head']} (record it elsewhere; check later with "
                                  f"--expect-head); checked against: {escape(s['anchor'])}", highlight=False)
        unanchored = [s["store"] for s in result["stores"] if s["anchor"] == "none"]
        if result["ok"] and unanchored:
            err_console.print("[yellow]note[/yellow]: no anchor outside the lake was checked for "
                              f"{escape(', '.join(unanchored))}: someone with write access to the lake could have "
                              "rewritten it consistently (use --trusted-key or --expect-head)", highlight=False)
        err_console.print("[green]OK[/green]: nothing altered" if result["ok"] else
                          "[red]FAILED[/red]: see findings above", highlight=False)
    if not result["ok"]:
        sys.exit(1)


@cli.group("keys")
def keys_group() -> None:
    """The key store outside the lake that holds the signing keys (docs/security.md)."""


@keys_group.command("export")
@click.pass_obj
@handle_errors
def keys_export_cmd(obj: Ctx) -> None:
    """Print the chain-head public key (PEM) of this lake's key store, to keep elsewhere for
    `lake verify --trusted-key`. Creates the key if the key store has none yet."""
    from .keys import keyring_for_storage

    ring = keyring_for_storage(obj.lake.storage)
    signer = ring.head_signer()
    if obj.fmt == "json":
        emit({"KeyDirectory": ring.key_dir, "Fingerprint": signer.fingerprint,
              "PublicKeyPem": signer.public_pem().decode()}, obj.fmt)
    else:
        click.echo(signer.public_pem().decode(), nl=False)
        err_console.print(f"key store {escape(ring.key_dir)}, fingerprint {signer.fingerprint}", highlight=False)


def _stores(obj: Ctx, ref: str | None):
    return [obj.lake.store(ref)] if ref else obj.lake.stores()


@cli.command("compact")
@click.option("--store", "ref", help="Only this store (default: all).")
@click.option("--target-mb", type=int, default=128, show_default=True, help="Target segment size.")
@click.option("--dry-run", is_flag=True, help="Only report what would be merged.")
@click.pass_obj
@handle_errors
def compact_cmd(obj: Ctx, ref: str | None, target_mb: int, dry_run: bool) -> None:
    """Merge small segments per partition, proving every event checksum is kept."""
    reports = []
    for st in _stores(obj, ref):
        with progress_bar(f"compacting {st.name}") as update:
            reports.append(maintenance.compact(st, target_bytes=target_mb << 20, dry_run=dry_run,
                                               progress=update))
    emit(reports, obj.fmt, title="compaction")


@cli.command("retention")
@click.option("--store", "ref", help="Only this store (default: all).")
@click.option("--apply", "do_apply", is_flag=True, help="Remove the events (default: dry run).")
@click.pass_obj
@handle_errors
def retention_cmd(obj: Ctx, ref: str | None, do_apply: bool) -> None:
    """Remove events older than each store's retention period (dry run unless --apply)."""
    reports = [maintenance.retention(st, dry_run=not do_apply) for st in _stores(obj, ref)]
    emit(reports, obj.fmt, title="retention" + ("" if do_apply else " (dry run: add --apply)"))


@cli.command("vacuum")
@click.option("--store", "ref", help="Only this store (default: all).")
@click.option("--grace-hours", type=float, default=168.0, show_default=True,
              help="Keep unreferenced files younger than this (protects readers and writers in flight).")
@click.option("--apply", "do_apply", is_flag=True, help="Delete the files (default: dry run).")
@click.pass_obj
@handle_errors
def vacuum_cmd(obj: Ctx, ref: str | None, grace_hours: float, do_apply: bool) -> None:
    """Delete files no snapshot references any more (dry run unless --apply)."""
    st = obj.lake.store(ref, include_expired=True) if ref else None
    report = maintenance.vacuum(obj.lake, store=st, grace=timedelta(hours=grace_hours), dry_run=not do_apply)
    emit(report, obj.fmt, rows=report["details"] or [{"files": 0, "bytes": 0}],
         title="vacuum" + ("" if do_apply else " (dry run: add --apply)"))


# ---- data sets -----------------------------------------------------------------------------------------

@cli.group()
def datasets() -> None:
    """Generated CloudTrail data sets for tests, benchmarks and demos."""


@datasets.command("generate")
@click.option("--events", type=int, required=True, help="Number of events.")
@click.option("--days", type=int, default=30, show_default=True, help="Days of activity, ending now.")
@click.option("--accounts", type=int, default=3, show_default=True, help="AWS accounts.")
@click.option("--regions", type=int, default=2, show_default=True, help="Regions per account.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (same seed, same files).")
@click.option("--anomalies/--no-anomalies", default=False, show_default=True,
              help="Inject labelled call-rate bursts and error spikes (listed in OUT/anomalies.json).")
@click.option("--workers", type=int, help="Generator processes (default: one per core).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.pass_obj
@handle_errors
def datasets_generate(obj: Ctx, events, days, accounts, regions, seed, anomalies, workers, out) -> None:
    """Write realistic gzip trail logs in the S3 trail layout (AWSLogs/<account>/CloudTrail/<region>/...)."""
    from .datagen import generate_dataset

    with progress_bar("generating", total=events) as update:
        summary = generate_dataset(out, events=events, days=days, accounts=accounts, regions=regions, seed=seed,
                                   anomalies=anomalies, workers=workers, progress=update)
    rows = [{"field": k, "value": v} for k, v in summary.items() if k != "anomalies"]
    rows.append({"field": "anomalies", "value": len(summary.get("anomalies") or [])})
    emit(summary, obj.fmt, rows=rows, title=f"data set in {out}")


# ---- SQL ----------------------------------------------------------------------------------------------

@cli.command("sql")
@click.option("-c", "--command", "command", metavar="SQL", help="Run these statements (end each with ;) and exit.")
@click.option("-f", "--file", "file", type=click.Path(exists=True, dir_okay=False, allow_dash=True),
              help="Run the statements in FILE ('-' for stdin) and exit.")
@click.option("--format", "result_fmt", type=click.Choice(["table", "csv", "json", "jsonl", "parquet"]),
              help="Result format (default: the global --format, table or json). See docs/sql.md.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), metavar="FILE",
              help="Write the result to FILE instead of stdout (one statement; required for parquet).")
@click.option("--stats", is_flag=True, help="Print each query's QueryStatistics as one JSON line on stderr.")
@click.option("--lake", "--uri", "uri", metavar="URI", help="Lake location (overrides the global --lake).")
@query_limit_options("half the machine's memory")
@click.pass_obj
@handle_errors
def sql_cmd(obj: Ctx, command, file, result_fmt, output, stats, uri, query_memory, query_timeout,
            query_max_rows) -> None:
    """Query the stores with SQL (CloudTrail Lake's Trino dialect; FROM names a store). With -c SQL, -f FILE
    or SQL on stdin it runs the statements and exits: status 1 after a query error, 2 for a usage error.
    On a terminal it starts a shell with history, multi-line input, completion and dot commands (.help);
    Ctrl-C cancels a running query. Details in docs/sql.md."""
    import shutil

    from . import shell

    if command is not None and file is not None:
        raise click.UsageError("give -c SQL or -f FILE, not both")
    fmt = result_fmt or obj.fmt
    if uri:
        obj.uri = uri
    text = None  # None: the interactive shell
    if command is not None or file is not None or not sys.stdin.isatty():
        if command is not None:
            text = command
        else:
            with click.open_file(file or "-") as f:
                text = f.read()
        units = shell.script_units(text)
        if not units:
            raise click.UsageError("no SQL given: use -c SQL, -f FILE or pipe statements on stdin")
        if fmt == "parquet" and not output:
            raise click.UsageError("--format parquet writes a binary file: add --output FILE")
        queries = sum(kind == "sql" for kind, _ in units)
        if output and queries > 1:
            raise click.UsageError(f"--output takes the result of one statement, not {queries}")
    tty = sys.stdout.isatty()
    from .querylimits import QueryLimits, prewarm

    # queries run in a worker process under these limits, so Ctrl-C and the limits really stop them
    qlimits = QueryLimits.from_env(1, memory=query_memory, timeout=query_timeout, max_rows=query_max_rows)
    prewarm()
    session = shell.Session(obj.lake, fmt=fmt, stats=stats, output=output, color=tty,
                            width=shutil.get_terminal_size().columns if tty else None,
                            spinner=err_console.is_terminal, limits=qlimits)
    sys.exit(shell.interactive(session) if text is None else shell.run_script(text, session))


# ---- the main job -------------------------------------------------------------------------------------

@cli.command("demo")
@click.option("--events", type=int, default=20_000, show_default=True, help="Sample events to generate.")
@click.option("--days", type=int, default=2, show_default=True, help="Days of activity to generate.")
@click.option("--seed", type=int, default=1, show_default=True, help="Random seed (same seed, same logs).")
@click.pass_obj
@handle_errors
def demo_cmd(obj: Ctx, events: int, days: int, seed: int) -> None:
    """Generate sample trail logs, import them into the store `demo`, verify it and run example queries."""
    from .generate import generate

    lk = obj.lake
    try:
        st = lk.store("demo")
    except LakeError:
        st = lk.create_store("demo", retention_days=3653)
    from .importer import Importer

    with tempfile.TemporaryDirectory() as tmp:
        files = generate(tmp, events=events, days=days, seed=seed)
        err_console.print(f"generated {events:,} events in {len(files)} trail log files", highlight=False)
        progress, update = _import_progress(True)
        imp = Importer(st, [tmp], progress=update)
        if progress:
            with progress:
                report = imp.run()
        else:
            report = imp.run()
    appended = report.ImportStatistics.EventsCompleted
    dups = report.ImportStatistics.DuplicatesSkipped
    err_console.print(f"store {st.name!r} at {escape(lk.uri)}: +{appended:,} events, {dups:,} duplicates skipped",
                      highlight=False)
    queries = {
        "top 10 actions": "SELECT eventSource, eventName, count(*) AS events FROM demo "
                          "GROUP BY eventSource, eventName ORDER BY events DESC LIMIT 10",
        "who gets errors": "SELECT userIdentity.arn AS principal, errorCode, count(*) AS events FROM demo "
                           "WHERE errorCode IS NOT NULL GROUP BY 1, 2 ORDER BY events DESC LIMIT 5",
    }
    results = {title: lk.sql(q) for title, q in queries.items()}
    top, errs = results["top 10 actions"], results["who gets errors"]
    from .verify import verify

    result = verify(lk, "demo")
    s = result["stores"][0]
    if obj.fmt == "json":
        # One JSON document on stdout (two concatenated documents would not parse as JSON).
        emit({"store": st.name, "appended": appended, "duplicates": dups, "top_actions": top.to_dicts(),
              "who_gets_errors": errs.to_dicts(), "verify": s}, obj.fmt)
    else:
        for title, q in queries.items():
            err_console.print(f"[dim]lake sql -c \"{escape(q)}\"[/dim]", highlight=False)
            emit(results[title].to_dicts(), obj.fmt, title=title)
    err_console.print(f"verify: {'OK' if result['ok'] else 'FAILED'} - {s['segments']} segments, "
                      f"{s['events']:,} events, {s['bytes_hashed']:,} bytes hashed", highlight=False)


# ---- the API server -----------------------------------------------------------------------------------

@cli.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=8455, show_default=True, help="TCP port.")
@click.option("--credentials", "credentials", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
              help="JSON or TOML file of access keys and the principals they stand for (default: "
                   "$LAKE_SERVE_CREDENTIALS). See docs/server.md.")
@click.option("--allow-anonymous", is_flag=True,
              help="Accept unsigned requests as the lake's default account (loopback addresses only).")
@click.option("--audit-store", metavar="NAME",
              help="Record every mutating API call as a CloudTrail event in this store (created if missing).")
@click.option("--region", help="Region this endpoint serves; clients must sign for it (default $LAKE_REGION "
                               "or us-east-1).")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]), default="info",
              show_default=True, help="Server log verbosity (debug also logs every request).")
@click.option("--delivery/--no-delivery", default=True, show_default=True,
              help="Deliver trail log files and digests (every $LAKE_DELIVERY_INTERVAL s, "
                   "default 300), summarise data events and detect Insights in the background.")
@click.option("--import-root", "import_roots", multiple=True, metavar="ACCOUNT=PATH",
              help="Let StartImport of ACCOUNT read local folder PATH (or confine its s3:// sources to an "
                   "s3://bucket/prefix); repeatable. Without one, StartImport accepts s3:// sources only.")
@click.option("--limit", "limits", multiple=True, metavar="NAME=VALUE",
              help="Change a request limit (repeatable): max_body_bytes, max_connections, header_timeout, "
                   "read_timeout, body_timeout (seconds), unverified_body_bytes, replay_cache_size. "
                   "Defaults in docs/server.md.")
@query_limit_options("half the machine's memory / 10 queries")
@click.pass_obj
@handle_errors
def serve_cmd(obj: Ctx, host, port, credentials, allow_anonymous, audit_store, region, log_level, delivery,
              import_roots, limits, query_memory=None, query_timeout=None, query_max_rows=None) -> None:
    """Serve the CloudTrail API (JSON 1.1) and cloudtrail-data PutAuditEvents over HTTP, so boto3 and the AWS
    CLI work with --endpoint-url. Requests are authenticated with Signature Version 4 against the configured
    credentials. Runs until interrupted. Details in docs/server.md."""
    from .api_imports import parse_import_roots
    from .apiserver import ServerConfig, check_bind, parse_limits, serve
    from .sigv4 import load_credentials

    try:
        roots = parse_import_roots(import_roots)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--import-root") from None
    try:
        limit_values = parse_limits(limits)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--limit") from None
    config = ServerConfig(credentials=load_credentials(credentials), allow_anonymous=allow_anonymous,
                          audit_store=audit_store, region=region, delivery=delivery, import_roots=roots,
                          **limit_values)
    check_bind(config, host)
    # the query limits reach the server's QueryManager (lake.api_queries) through the environment
    for var, value in (("LAKE_QUERY_MEMORY", query_memory), ("LAKE_QUERY_TIMEOUT", query_timeout),
                       ("LAKE_QUERY_MAX_ROWS", query_max_rows)):
        if value is not None:
            os.environ[var] = str(value)
    from .querylimits import QueryLimits

    # unusable limits: one line now (naming the option or variable), not a failure of every StartQuery
    QueryLimits.from_env(10, memory=query_memory, timeout=query_timeout, max_rows=query_max_rows)
    lk = obj.lake

    def ready(url: str) -> None:
        n = len(config.credentials)
        who = f"{n} access key{'s' if n != 1 else ''}" + (", anonymous on loopback" if allow_anonymous else "")
        click.echo(f"lake serve: {url} (lake {lk.uri}, region {region or lk.region}, {who}, audit store "
                   f"{audit_store or 'off'})", err=True)
    serve(lk, config, host=host, port=port, log_level=log_level, ready=ready)


from .insights import insights_cli  # noqa: E402 - `lake insights run ...`

cli.add_command(insights_cli)
from .aggregation import aggregate_cli  # noqa: E402 - `lake aggregate ...` (5-minute data event summaries)

cli.add_command(aggregate_cli)
from .enrichment import tags_cli  # noqa: E402 - `lake tags ...` (the resource tag registry)

cli.add_command(tags_cli)
from .trails import trails_cli  # noqa: E402 - `lake trails ...`

cli.add_command(trails_cli)
from .validatelogs import validate_logs_cmd  # noqa: E402 - its own module, like the AWS CLI's command

cli.add_command(validate_logs_cmd)


def main() -> None:
    cli(prog_name="lake")


if __name__ == "__main__":  # pragma: no cover
    main()
