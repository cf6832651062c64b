"""Tests for the `lake` command line: every verb through click's CliRunner, the console script through a real
subprocess, the one-line error contract, and docs/cli.md (generated from the `--help` texts, see
`generate_cli_docs`; regenerate with `LAKE_REGEN_DOCS=1 python -m pytest tests/test_cli.py -k docs`)."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

import lake.store as store_mod
from lake import output
from lake.cli import cli
from lake.lake import Lake

REPO = Path(__file__).resolve().parent.parent
CLI_DOCS = REPO / "docs" / "cli.md"
ACCOUNT = "111111111111"
MGMT_AND_DATA = json.dumps([{"Name": "all", "FieldSelectors": [
    {"Field": "eventCategory", "Equals": ["Management", "Data"]}]}])


# ---- helpers ----------------------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    """Rich tables as wide as needed so table assertions do not depend on the terminal."""
    monkeypatch.setattr(output.console, "width", 200)
    monkeypatch.delenv("LAKE_URI", raising=False)


@pytest.fixture
def lake_dir(tmp_path) -> str:
    return str(tmp_path / "lake")


def run(lake_dir: str, *args: str, fmt: str = "table", code: int = 0) -> Result:
    result = CliRunner().invoke(cli, ["--lake", lake_dir, "--format", fmt, *args], prog_name="lake")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    return result


def run_json(lake_dir: str, *args: str, code: int = 0):
    return json.loads(run(lake_dir, *args, fmt="json", code=code).stdout)


def rec(event_id: str, *, when: datetime | None = None, category: str = "Management", **extra) -> dict:
    when = when or datetime.now(timezone.utc) - timedelta(hours=1)
    r = {"eventVersion": "1.11", "eventTime": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
         "userIdentity": {"type": "IAMUser", "accountId": ACCOUNT, "arn": f"arn:aws:iam::{ACCOUNT}:user/bob"},
         "eventSource": "iam.amazonaws.com", "eventName": "ListRoles", "awsRegion": "us-east-1",
         "eventID": event_id, "eventType": "AwsApiCall", "readOnly": True,
         "managementEvent": category == "Management", "recipientAccountId": ACCOUNT, "eventCategory": category}
    r.update(extra)
    return r


def write_records(path: Path, records: list, *, style: str = "records") -> str:
    if style == "records":
        path.write_bytes(json.dumps({"Records": records}).encode())
    elif style == "ndjson":
        path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    elif style == "gzip-array":
        path.write_bytes(gzip.compress(json.dumps(records).encode()))
    return str(path)


def assert_one_error_line(result: Result) -> str:
    assert result.exit_code == 1, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stdout == ""
    return lines[0]


# ---- stores ------------------------------------------------------------------------------------------------

def test_store_commands_json(lake_dir):
    assert run_json(lake_dir, "store", "list") == []
    md = run_json(lake_dir, "store", "create", "audit", "--retention-days", "30", "--selectors", MGMT_AND_DATA,
                  "--max-event-size", "Large", "--single-region")
    assert md["Name"] == "audit" and md["Status"] == "ENABLED" and md["RetentionPeriod"] == 30
    assert md["TerminationProtectionEnabled"] is True and md["MaxEventSize"] == "Large"
    assert md["MultiRegionEnabled"] is False
    assert md["AdvancedEventSelectors"] == json.loads(MGMT_AND_DATA)
    sid, arn = md["EventDataStoreId"], md["EventDataStoreArn"]
    assert arn == f"arn:aws:cloudtrail:us-east-1:123456789012:eventdatastore/{sid}"
    fixed = run_json(lake_dir, "store", "create", "fixed", "--billing-mode", "FIXED_RETENTION_PRICING",
                     "--no-termination-protection", "--no-start-ingestion")
    assert fixed["RetentionPeriod"] == 2557 and fixed["Status"] == "STOPPED_INGESTION"

    listed = run_json(lake_dir, "store", "list")
    assert [m["Name"] for m in listed] == ["audit", "fixed"]
    for ref in ("audit", sid, arn):
        shown = run_json(lake_dir, "store", "show", ref)
        assert shown["EventDataStoreId"] == sid
        assert shown["Statistics"] == {"Version": 0, "Events": 0, "Segments": 0, "Bytes": 0}

    upd = run_json(lake_dir, "store", "update", "audit", "--name", "audit-2", "--retention-days", "60",
                   "--no-termination-protection", "--multi-region")
    assert (upd["Name"], upd["RetentionPeriod"], upd["TerminationProtectionEnabled"]) == ("audit-2", 60, False)
    assert upd["MultiRegionEnabled"] is True
    assert run_json(lake_dir, "store", "show", "audit-2")["EventDataStoreId"] == sid

    assert run_json(lake_dir, "store", "stop-ingestion", "audit-2")["Status"] == "STOPPED_INGESTION"
    started = run_json(lake_dir, "store", "start-ingestion", sid)
    assert started == {"Name": "audit-2", "Id": sid, "Status": "ENABLED", "RetentionPeriod": 60,
                       "TerminationProtection": False, "Created": md["CreatedTimestamp"]}
    assert run_json(lake_dir, "store", "delete", arn)["Status"] == "PENDING_DELETION"
    assert {m["Name"]: m["Status"] for m in run_json(lake_dir, "store", "list")} == {
        "audit-2": "PENDING_DELETION", "fixed": "STOPPED_INGESTION"}
    assert run_json(lake_dir, "store", "restore", "audit-2")["Status"] == "ENABLED"
    assert run_json(lake_dir, "store", "delete", "fixed")["Status"] == "PENDING_DELETION"
    assert run_json(lake_dir, "store", "restore", "fixed")["Status"] == "STOPPED_INGESTION"


def test_store_commands_table(lake_dir):
    out = run(lake_dir, "store", "list").stdout
    assert "nothing to show" in out
    out = run(lake_dir, "store", "create", "tabular", "--retention-days", "14").stdout
    assert "EventDataStoreArn" in out and "tabular" in out and "14" in out
    sid = Lake(lake_dir).store("tabular").id
    out = run(lake_dir, "store", "list").stdout
    for word in ("event data stores", "Name", "Status", "tabular", sid, "ENABLED"):
        assert word in out
    out = run(lake_dir, "store", "show", "tabular").stdout
    assert "Statistics" in out and sid in out
    assert "tabular-2" in run(lake_dir, "store", "update", "tabular", "--name", "tabular-2").stdout
    assert "STOPPED_INGESTION" in run(lake_dir, "store", "stop-ingestion", "tabular-2").stdout
    assert "ENABLED" in run(lake_dir, "store", "start-ingestion", "tabular-2").stdout
    run(lake_dir, "store", "update", "tabular-2", "--no-termination-protection")
    assert "PENDING_DELETION" in run(lake_dir, "store", "delete", "tabular-2").stdout
    assert "ENABLED" in run(lake_dir, "store", "restore", "tabular-2").stdout


def test_selectors_from_file_and_markup_safe_output(lake_dir, tmp_path):
    sel = [{"Name": "[/x] [bold]literal", "FieldSelectors": [{"Field": "eventCategory", "Equals": ["Data"]},
                                                            {"Field": "resources.type",
                                                             "Equals": ["AWS::S3::Object"]}]}]
    f = tmp_path / "sel.json"
    f.write_text(json.dumps(sel))
    md = run_json(lake_dir, "store", "create", "from-file", "--selectors", f"@{f}")
    assert md["AdvancedEventSelectors"] == sel
    # table output prints data verbatim (no rich markup interpretation, no crash)
    assert "[/x] [bold]literal" in run(lake_dir, "store", "show", "from-file").stdout
    md = run_json(lake_dir, "store", "update", "from-file", "--selectors", MGMT_AND_DATA)
    assert md["AdvancedEventSelectors"] == json.loads(MGMT_AND_DATA)


def test_expired_stores_hidden_and_vacuumed(lake_dir, monkeypatch):
    run(lake_dir, "store", "create", "old-store", "--no-termination-protection")
    run(lake_dir, "store", "create", "kept")
    sid = Lake(lake_dir).store("old-store").id
    run(lake_dir, "store", "delete", "old-store")

    real = datetime

    class Later(real):
        @classmethod
        def now(cls, tz=None):
            return real.now(tz) + timedelta(days=8)

    monkeypatch.setattr(store_mod, "datetime", Later)
    assert [m["Name"] for m in run_json(lake_dir, "store", "list")] == ["kept"]
    assert [m["Name"] for m in run_json(lake_dir, "store", "list", "--all")] == ["old-store", "kept"]
    assert_one_error_line(run(lake_dir, "store", "show", "old-store", code=1))
    report = run_json(lake_dir, "vacuum")
    assert report["dry_run"] is True and report["stores_purged"] == ["old-store"]
    assert (Path(lake_dir) / "stores" / sid).is_dir()
    report = run_json(lake_dir, "vacuum", "--apply")
    assert report["dry_run"] is False and report["stores_purged"] == ["old-store"]
    assert not (Path(lake_dir) / "stores" / sid).exists()
    assert [m["Name"] for m in run_json(lake_dir, "store", "list", "--all")] == ["kept"]
    run_json(lake_dir, "store", "create", "old-store")  # the name is free again


# ---- append -------------------------------------------------------------------------------------------------

def test_append(lake_dir, tmp_path):
    run(lake_dir, "store", "create", "ingest", "--selectors", MGMT_AND_DATA)
    f1 = write_records(tmp_path / "a.json", [rec("a1"), rec("a2")])
    f2 = write_records(tmp_path / "b.ndjson", [rec("b1"), rec("a1")], style="ndjson")
    f3 = write_records(tmp_path / "c.json.gz", [rec("c1"), rec("n1", category="NetworkActivity")],
                       style="gzip-array")
    out = run_json(lake_dir, "append", "ingest", f1, f2, f3)
    assert out == {"files": 3, "appended": 4, "duplicates": 1, "not_selected": 1, "expired": 0, "rejected": []}
    out = run_json(lake_dir, "append", "ingest", f1)
    assert (out["appended"], out["duplicates"]) == (0, 2)
    out = run(lake_dir, "append", "ingest", f2).stdout
    assert "duplicates" in out
    assert run_json(lake_dir, "store", "show", "ingest")["Statistics"]["Events"] == 4

    # rejected records are reported (and make the exit status 1) without stopping the valid ones
    no_time = rec("no-time")
    del no_time["eventTime"]
    bad = write_records(tmp_path / "bad.json", [rec("ok-1"), no_time, 7, rec("bad-time", eventTime="soon")])
    out = run_json(lake_dir, "append", "ingest", bad, code=1)
    assert out["appended"] == 1
    assert [(r["index"], r["code"], r["location"]) for r in out["rejected"]] == [
        (1, "MissingEventTime", bad), (2, "NotAnObject", bad), (3, "InvalidEventTime", bad)]

    # stopped ingestion refuses live appends
    run(lake_dir, "store", "stop-ingestion", "ingest")
    assert "start-ingestion" in assert_one_error_line(run(lake_dir, "append", "ingest", f1, code=1))
    # a file that is not CloudTrail JSON is one error line
    junk = tmp_path / "junk.gz"
    junk.write_bytes(b"\x1f\x8b not really gzip")
    run(lake_dir, "store", "start-ingestion", "ingest")
    assert_one_error_line(run(lake_dir, "append", "ingest", str(junk), code=1))


# ---- verify, compact, retention, vacuum --------------------------------------------------------------------

def test_maintenance_commands(lake_dir, tmp_path):
    run(lake_dir, "store", "create", "maint", "--retention-days", "7", "--selectors", MGMT_AND_DATA)
    when = datetime.now(timezone.utc).replace(hour=0, minute=30, second=0, microsecond=0)
    if when > datetime.now(timezone.utc):  # pragma: no cover - just after midnight
        when -= timedelta(days=1)
    for n in range(3):  # three appends of one partition: three small segments
        run(lake_dir, "append", "maint", write_records(tmp_path / f"{n}.json", [rec(f"e{n}", when=when)]))
    # events that were in retention when appended, but are not any more
    st = Lake(lake_dir).store("maint")
    old = datetime.now(timezone.utc) - timedelta(days=20)
    assert st.append([rec("old-1", when=old), rec("old-2", when=old)], now=old + timedelta(days=1)).appended == 2

    v = run_json(lake_dir, "verify")
    assert v["ok"] is True and v["stores"][0]["events"] == 5 and v["stores"][0]["segments"] == 4
    table = run(lake_dir, "verify")
    assert "verification" in table.stdout and "OK" in table.stderr

    dry = run_json(lake_dir, "compact", "--store", "maint", "--dry-run")
    assert dry[0]["dry_run"] is True and dry[0]["segments_in"] == 3 and dry[0]["segments_out"] == 0
    comp = run_json(lake_dir, "compact")
    assert (comp[0]["groups"], comp[0]["segments_in"], comp[0]["segments_out"], comp[0]["events"]) == (1, 3, 1, 3)
    assert "compaction" in run(lake_dir, "compact").stdout
    assert run_json(lake_dir, "store", "show", "maint")["Statistics"]["Segments"] == 2

    ret = run_json(lake_dir, "retention", "--store", "maint")
    assert ret[0]["dry_run"] is True and ret[0]["events_removed"] == 2
    assert "dry run" in run(lake_dir, "retention").stdout
    assert run_json(lake_dir, "store", "show", "maint")["Statistics"]["Events"] == 5
    ret = run_json(lake_dir, "retention", "--apply")
    assert ret[0]["dry_run"] is False and ret[0]["events_removed"] == 2 and ret[0]["segments_dropped"] == 1
    assert run_json(lake_dir, "store", "show", "maint")["Statistics"]["Events"] == 3

    data = Path(lake_dir) / "stores" / st.id / "data"
    files_before = sorted(p for p in data.rglob("*.parquet"))
    assert len(files_before) == 5  # 3 compacted away + 1 retired by retention + 1 live
    vac = run_json(lake_dir, "vacuum")  # default grace: nothing is old enough
    assert vac["dry_run"] is True and vac["files"] == 0
    assert "vacuum" in run(lake_dir, "vacuum").stdout
    vac = run_json(lake_dir, "vacuum", "--store", "maint", "--grace-hours", "0")
    assert vac["dry_run"] is True
    assert sorted(d["reason"] for d in vac["details"] if d["reason"] != "intent") == ["retired"] * 4
    assert sorted(data.rglob("*.parquet")) == files_before
    vac = run_json(lake_dir, "vacuum", "--grace-hours", "0", "--apply")
    assert vac["dry_run"] is False and vac["files"] >= 4
    assert len(list(data.rglob("*.parquet"))) == 1
    v = run_json(lake_dir, "verify", "--store", "maint")
    assert v["ok"] is True and v["stores"][0]["events"] == 3
    assert sorted(Lake(lake_dir).store("maint").to_arrow().column("eventid").to_pylist()) == ["e0", "e1", "e2"]


def test_verify_reports_tampering(lake_dir, tmp_path):
    run(lake_dir, "store", "create", "tamper", "--selectors", MGMT_AND_DATA)
    run(lake_dir, "append", "tamper", write_records(tmp_path / "x.json", [rec("t1"), rec("t2")]))
    seg = next((Path(lake_dir) / "stores").rglob("*.parquet"))
    seg.write_bytes(seg.read_bytes() + b"\0")
    v = run_json(lake_dir, "verify", code=1)
    assert v["ok"] is False and v["stores"][0]["findings"][0]["kind"] == "tampered"
    result = run(lake_dir, "verify", code=1)
    assert "tampered" in result.stderr and "FAILED" in result.stderr


# ---- errors: one line on stderr, exit 1 ---------------------------------------------------------------------

@pytest.fixture
def populated(lake_dir) -> str:
    run(lake_dir, "store", "create", "guarded")
    run(lake_dir, "store", "create", "other")
    return lake_dir


ERROR_CASES = {
    "show unknown": ["store", "show", "no-such-store"],
    "show unknown id": ["store", "show", str(uuid.UUID(int=1))],
    "show unknown arn": ["store", "show",
                         f"arn:aws:cloudtrail:us-east-1:123456789012:eventdatastore/{uuid.UUID(int=2)}"],
    "update unknown": ["store", "update", "no-such-store", "--retention-days", "30"],
    "delete unknown": ["store", "delete", "no-such-store"],
    "restore unknown": ["store", "restore", "no-such-store"],
    "start unknown": ["store", "start-ingestion", "no-such-store"],
    "stop unknown": ["store", "stop-ingestion", "no-such-store"],
    "verify unknown": ["verify", "--store", "no-such-store"],
    "compact unknown": ["compact", "--store", "no-such-store"],
    "retention unknown": ["retention", "--store", "no-such-store"],
    "vacuum unknown": ["vacuum", "--store", "no-such-store"],
    "markup-like ref": ["store", "show", "[/x]"],
    "duplicate name": ["store", "create", "guarded"],
    "rename to taken name": ["store", "update", "other", "--name", "guarded"],
    "invalid name": ["store", "create", "x"],
    "termination protection": ["store", "delete", "guarded"],
    "restore not deleted": ["store", "restore", "guarded"],
    "retention too short": ["store", "create", "short", "--retention-days", "6"],
    "retention too long": ["store", "create", "long", "--retention-days", "3654"],
    "fixed retention too long": ["store", "create", "fx", "--billing-mode", "FIXED_RETENTION_PRICING",
                                 "--retention-days", "3000"],
    "update retention": ["store", "update", "guarded", "--retention-days", "0"],
    "extendable to fixed": ["store", "update", "guarded", "--billing-mode", "FIXED_RETENTION_PRICING"],
    "update nothing": ["store", "update", "guarded"],
    "selectors not JSON": ["store", "create", "sel", "--selectors", "{not json"],
    "selectors truncated JSON": ["store", "create", "sel", "--selectors", '[{"FieldSelectors": ['],
    "selectors invalid": ["store", "create", "sel", "--selectors",
                          '[{"FieldSelectors": [{"Field": "eventCategory", "Equals": ["Nope"]}]}]'],
    "selectors not a list": ["store", "create", "sel", "--selectors", '{"Field": "eventCategory"}'],
    "selectors empty": ["store", "create", "sel", "--selectors", "[]"],
    "selectors file missing": ["store", "create", "sel", "--selectors", "@/nonexistent/selectors.json"],
    "selectors file is a directory": ["store", "create", "sel", "--selectors", "@/"],
    "update selectors not JSON": ["store", "update", "guarded", "--selectors", "nope"],
}


@pytest.mark.parametrize("fmt", ["table", "json"])
@pytest.mark.parametrize("args", list(ERROR_CASES.values()), ids=list(ERROR_CASES))
def test_errors_are_one_line(populated, args, fmt):
    before = run_json(populated, "store", "list")
    line = assert_one_error_line(run(populated, *args, fmt=fmt, code=1))
    assert len(line) > len("error: ") + 5
    assert run_json(populated, "store", "list") == before  # nothing changed


def test_lake_root_is_a_file(tmp_path):
    root = tmp_path / "not-a-dir"
    root.write_text("x")
    assert_one_error_line(run(str(root), "store", "create", "abc", code=1))


def test_error_messages_say_what_happened(populated):
    def err(*args):
        return assert_one_error_line(run(populated, *args, code=1))

    assert "no-such-store" in err("store", "show", "no-such-store")
    assert "[/x]" in err("store", "show", "[/x]")  # printed verbatim, not eaten as markup
    assert "already exists" in err("store", "create", "guarded")
    assert "--no-termination-protection" in err("store", "delete", "guarded")
    assert "RetentionPeriod" in err("store", "create", "short", "--retention-days", "6")
    assert "not valid JSON" in err("store", "create", "sel", "--selectors", "{not json")
    assert "eventCategory" in err("store", "create", "sel", "--selectors",
                                  '[{"FieldSelectors": [{"Field": "eventCategory", "Equals": ["Nope"]}]}]')


# ---- the console script, for real --------------------------------------------------------------------------

def _lake_exe() -> list[str]:
    exe = shutil.which("lake") or str(Path(sys.executable).with_name("lake"))
    if not os.path.exists(exe):  # pragma: no cover - not installed
        pytest.skip("the `lake` console script is not installed")
    return [exe]


def test_console_script_subprocess(lake_dir, tmp_path):
    exe = _lake_exe()
    env = {k: v for k, v in os.environ.items() if k != "LAKE_URI"}

    def lake(*args):
        return subprocess.run([*exe, "--lake", lake_dir, *args], capture_output=True, text=True, env=env,
                              timeout=60)

    p = lake("--format", "json", "store", "create", "sub", "--selectors", MGMT_AND_DATA)
    assert p.returncode == 0, p.stderr
    sid = json.loads(p.stdout)["EventDataStoreId"]
    f = write_records(tmp_path / "r.json", [rec("s1"), rec("s2")])
    p = lake("--format", "json", "append", "sub", f)
    assert p.returncode == 0 and json.loads(p.stdout)["appended"] == 2
    p = lake("--format", "json", "store", "list")
    assert [m["EventDataStoreId"] for m in json.loads(p.stdout)] == [sid]
    p = lake("verify")
    assert p.returncode == 0 and "OK" in p.stderr
    for args in (["store", "show", "missing"], ["store", "delete", "sub"],
                 ["store", "create", "x2", "--selectors", "{bad"]):
        p = lake(*args)
        assert p.returncode == 1
        assert len(p.stderr.splitlines()) == 1 and p.stderr.startswith("error: "), p.stderr
        assert "Traceback" not in p.stderr and p.stdout == ""
    p = subprocess.run([*exe, "--version"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "version" in p.stdout


def test_lake_uri_environment(tmp_path):
    d = str(tmp_path / "from-env")
    result = CliRunner().invoke(cli, ["--format", "json", "store", "create", "env-store"], env={"LAKE_URI": d})
    assert result.exit_code == 0, result.stderr
    assert Lake(d).store("env-store").name == "env-store"


# ---- demo ---------------------------------------------------------------------------------------------------

def test_demo(lake_dir):
    result = run(lake_dir, "demo", "--events", "200", "--days", "2", fmt="json")
    out = json.loads(result.stdout)
    assert out["store"] == "demo" and out["appended"] == 200 and out["verify"]["ok"] is True
    assert sum(r["events"] for r in out["top_actions"]) <= 200 and out["top_actions"]
    assert "verify: OK" in result.stderr
    assert run_json(lake_dir, "store", "show", "demo")["Statistics"]["Events"] == 200
    again = run(lake_dir, "demo", "--events", "50", "--days", "2")  # table output, existing store reused
    assert "top 10 actions" in again.stdout and "verify: OK" in again.stderr


# ---- help texts and docs/cli.md -----------------------------------------------------------------------------

def iter_commands(cmd: click.Command = cli, path: tuple[str, ...] = ("lake",)):
    """(path, command) for the root group and every command and subcommand, depth first, sorted by name."""
    yield path, cmd
    if isinstance(cmd, click.Group):
        for name in sorted(cmd.commands):
            yield from iter_commands(cmd.commands[name], path + (name,))


def help_text(path: tuple[str, ...]) -> str:
    result = CliRunner().invoke(cli, [*path[1:], "--help"], prog_name="lake", terminal_width=100)
    assert result.exit_code == 0, result.output
    return result.stdout.rstrip() + "\n"


def generate_cli_docs() -> str:
    """The full text of docs/cli.md, generated from every command's `--help` output."""
    paths = [p for p, _ in iter_commands()]
    out = [
        "# `lake` command reference",
        "",
        "<!-- Generated by generate_cli_docs() in tests/test_cli.py from the `--help` text of every command.",
        "     Do not edit by hand: change the docstrings/option help in lake/cli.py, then regenerate with",
        "     LAKE_REGEN_DOCS=1 python -m pytest tests/test_cli.py -k docs -->",
        "",
        "This page is generated from the commands' `--help` output; `tests/test_cli.py` fails when it is out of",
        "date. To regenerate it after changing `lake/cli.py`:",
        "",
        "```",
        "LAKE_REGEN_DOCS=1 python -m pytest tests/test_cli.py -k docs",
        "```",
        "",
        "Global options come before the command: `lake --lake s3://bucket/prefix --format json store list`.",
        "`--format json` prints one JSON document on stdout (the scriptable contract); `--format table` (the",
        "default) prints tables for people. An error prints exactly one line starting with `error:` on stderr",
        "and exits with status 1; `lake verify` also exits 1 when it finds anything, and `lake append` when a",
        "record was rejected.",
        "",
        "## Commands",
        "",
    ]
    for p in paths:
        name = " ".join(p)
        out.append(f"- [`{name}`](#{'-'.join(p)})")
    for p in paths:
        out += ["", f"## {' '.join(p)}", "", "```", help_text(p).rstrip(), "```"]
    return "\n".join(out) + "\n"


def test_every_command_has_help_text():
    missing = [" ".join(p) for p, cmd in iter_commands() if not (cmd.help or "").strip()]
    assert not missing, f"commands without a help text (add a docstring): {missing}"
    short = [" ".join(p) for p, cmd in iter_commands() if len(cmd.get_short_help_str(limit=200)) < 10]
    assert not short, f"commands whose help text is too short to be useful: {short}"
    names = {" ".join(p) for p, _ in iter_commands()}
    assert {"lake store create", "lake store list", "lake store show", "lake store update", "lake store delete",
            "lake store restore", "lake store start-ingestion", "lake store stop-ingestion", "lake append",
            "lake verify", "lake compact", "lake retention", "lake vacuum", "lake demo"} <= names


def test_cli_docs_up_to_date():
    expected = generate_cli_docs()
    if os.environ.get("LAKE_REGEN_DOCS"):
        CLI_DOCS.write_text(expected)
        return
    assert CLI_DOCS.exists(), "docs/cli.md is missing: run LAKE_REGEN_DOCS=1 python -m pytest tests/test_cli.py -k docs"
    actual = CLI_DOCS.read_text()
    assert actual == expected, ("docs/cli.md is out of date with the commands' --help output; regenerate it "
                                "with: LAKE_REGEN_DOCS=1 python -m pytest tests/test_cli.py -k docs")


def test_cli_docs_cover_every_command():
    text = CLI_DOCS.read_text() if CLI_DOCS.exists() else generate_cli_docs()
    for p, _ in iter_commands():
        assert f"\n## {' '.join(p)}\n" in text
        assert f"Usage: {' '.join(p)}" in text
