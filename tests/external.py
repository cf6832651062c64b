"""Loader for the external CloudTrail data sets in `../shared/datasets/external` (see its SOURCES.md).

Each data set has its own shape on disk; `DATASETS` knows them, so tests can

- read every record exactly as the files hold it (`load(name)`, `load_external()`), with the stdlib `json`
  module as an oracle independent of Lake's own decoders, and
- write the set out as files `lake import` accepts (`write_importable(dest)`): the native log files are
  copied byte for byte; panther's JSONL (whose lines wrap the record in `log`) becomes NDJSON of the bare
  records; only awsdocs' `*log-file-example*.json` blocks are copied (the other blocks there are digest files,
  sign files and CLI responses, not logs).

The location can be moved with LAKE_EXTERNAL_DATA (the same variable conftest.py reads). `load_external()`
returns the same dict as conftest.py's function of that name, which the `external` fixture still uses.

| name | shape | records |
|---|---|---|
| invictus | `{"Records": [...]}` per file, plain `.json`, real trail file names | 2,900 |
| stratus | one pretty-printed JSON array per file | 310 |
| otrf | `.zip` holding one NDJSON file; Logstash records with no `eventTime` | 103 |
| trailscraper | gzip `{"Records": [...]}` with the real trail file name | 2 |
| panther | JSONL, one test case per line, the record under `log`; 2 eventTimes are not timestamps | 438 |
| awsdocs | `*log-file-example*.json`, `{"Records": [...]}` (also accepts a bare array or record) | 8 |
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
EXTERNAL = Path(os.environ.get("LAKE_EXTERNAL_DATA", REPO.parent / "shared" / "datasets" / "external"))


# ---- readers: one per shape, each returning the records of one file -----------------------------------

def _envelope(doc: Any, path: Path) -> list:
    if isinstance(doc, dict) and "Records" in doc:
        recs = doc["Records"]
        if not isinstance(recs, list):
            raise ValueError(f"{path}: 'Records' is not a list")
        return recs
    if isinstance(doc, list):
        return doc
    if isinstance(doc, dict):
        return [doc]
    raise ValueError(f"{path}: JSON {type(doc).__name__} is not a log file")


def read_envelope(path: Path) -> list:
    """`{"Records": [...]}` (CloudTrail's own log file body)."""
    with open(path, "rb") as f:
        doc = json.loads(f.read())
    if not (isinstance(doc, dict) and isinstance(doc.get("Records"), list)):
        raise ValueError(f"{path}: not a {{'Records': [...]}} log file")
    return doc["Records"]


def read_array(path: Path) -> list:
    """One JSON array of records."""
    with open(path, "rb") as f:
        doc = json.loads(f.read())
    if not isinstance(doc, list):
        raise ValueError(f"{path}: not a JSON array")
    return doc


def read_gzip_envelope(path: Path) -> list:
    with gzip.open(path, "rb") as f:
        return _envelope(json.loads(f.read()), path)


def read_zip_ndjson(path: Path) -> list:
    """Every member of a zip archive, each NDJSON (one record per non-blank line), members in name order."""
    out: list = []
    with zipfile.ZipFile(path) as z:
        for name in sorted(z.namelist()):
            if name.endswith("/"):
                continue
            with z.open(name) as member:
                out += [json.loads(line) for line in io.TextIOWrapper(member, encoding="utf-8") if line.strip()]
    return out


def read_panther_jsonl(path: Path) -> list:
    """Panther's derived test cases: the CloudTrail record of each line is its `log` member."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line)["log"] for line in f if line.strip()]


def read_any_json(path: Path) -> list:
    """A record, `{"Records": [...]}` or an array (awsdocs blocks come in all three)."""
    with open(path, "rb") as f:
        return _envelope(json.loads(f.read()), path)


# ---- writers: the importable form of one source file -------------------------------------------------

def _copy(src: Path, dest_dir: Path) -> Path:
    dest_dir.mkdir(parents=True, exist_ok=True)
    out = dest_dir / src.name
    shutil.copyfile(src, out)
    return out


def _panther_ndjson(src: Path, dest_dir: Path) -> Path:
    dest_dir.mkdir(parents=True, exist_ok=True)
    out = dest_dir / (src.name.rsplit(".", 1)[0] + ".ndjson")
    with open(out, "w", encoding="utf-8") as f:
        for rec in read_panther_jsonl(src):
            f.write(json.dumps(rec, ensure_ascii=False, separators=(",", ":")) + "\n")
    return out


@dataclass(frozen=True)
class DataSet:
    name: str
    folder: str
    pattern: str  # glob under the folder; `**` recurses
    reader: Callable[[Path], list]
    records: int  # what SOURCES.md documents
    shape: str
    writer: Callable[[Path, Path], Path] = _copy

    @property
    def root(self) -> Path:
        return EXTERNAL / self.folder

    def files(self) -> list[Path]:
        """The data files of the set, sorted (licence files and non-log blocks excluded)."""
        return sorted(p for p in self.root.glob(self.pattern) if p.is_file())

    def load(self) -> list:
        """Every record, in file order then record order, exactly as parsed by the stdlib json module."""
        return [r for f in self.files() for r in self.reader(f)]

    def records_by_file(self) -> dict[str, list]:
        """Records per source file name (the file name is what an import failure's Location names)."""
        return {f.name: self.reader(f) for f in self.files()}

    def write(self, dest: str | os.PathLike) -> list[Path]:
        """Write the set as importable files into `dest` (created); return the written paths."""
        dest = Path(dest)
        return [self.writer(f, dest) for f in self.files()]


DATASETS: dict[str, DataSet] = {d.name: d for d in [
    DataSet("invictus", "invictus-ir-aws_dataset", "CloudTrail/*.json", read_envelope, 2_900,
            "{Records:[...]} per file, plain .json"),
    DataSet("stratus", "stratus-red-team-detonation-logs", "**/*.json", read_array, 310,
            "one JSON array per file, pretty-printed"),
    DataSet("otrf", "otrf-security-datasets", "*.zip", read_zip_ndjson, 103,
            "zip of one NDJSON file; no eventTime"),
    DataSet("trailscraper", "trailscraper-fixtures", "*.json.gz", read_gzip_envelope, 2,
            "gzip {Records:[...]}"),
    DataSet("panther", "panther-analysis-cloudtrail-tests", "*.jsonl", read_panther_jsonl, 438,
            "JSONL test cases, record under `log`", writer=_panther_ndjson),
    DataSet("awsdocs", "awsdocs-cloudtrail-user-guide-examples", "*log-file-example*.json", read_any_json, 8,
            "AWS documentation log file examples"),
]}

# What an import of each written set must give (see tests/test_importer.py).
PANTHER_BAD_TIMES = ("redacted", "...")  # the two panther eventTimes that are not timestamps


def available() -> bool:
    return EXTERNAL.is_dir() and all(d.root.is_dir() for d in DATASETS.values())


def load(name: str) -> list:
    return DATASETS[name].load()


def load_external() -> dict[str, list]:
    """Every record of every set, by name (the dict conftest.py's `external` fixture provides)."""
    return {name: d.load() for name, d in DATASETS.items()}


def write_importable(dest: str | os.PathLike, names: list[str] | None = None) -> dict[str, Path]:
    """Write the sets (all by default) under `dest/<name>/`; return each set's directory."""
    out = {}
    for name in names or list(DATASETS):
        d = Path(dest) / name
        DATASETS[name].write(d)
        out[name] = d
    return out


__all__ = ["EXTERNAL", "DATASETS", "DataSet", "available", "load", "load_external", "write_importable",
           "read_envelope", "read_array", "read_gzip_envelope", "read_zip_ndjson", "read_panther_jsonl",
           "read_any_json", "PANTHER_BAD_TIMES"]
