"""AWS CLI v2 for the tests that need it (`cloudtrail verify-query-results` exists only in v2 >= 2.13).

v2 is not on PyPI, and AWS's installer comes from awscli.amazonaws.com. Debian packages it as pure Python
(trixie: 2.23.6), so where the Debian archive is reachable the tests build it once into a cached venv: the
package is downloaded with apt into a private directory (the system's apt configuration is not touched),
unpacked with dpkg-deb, and its dist-info requirements are installed from PyPI. Anything missing on the way
(no apt, no network, a failed install) makes the caller skip with the reason.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SUITE = "trixie"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
MIRROR = "http://deb.debian.org/debian"


class Unavailable(RuntimeError):
    """AWS CLI v2 cannot be found or built here; the message says why."""


def has_verify_query_results(exe: str) -> bool:
    try:
        proc = subprocess.run([exe, "cloudtrail", "verify-query-results", "help"], capture_output=True, text=True,
                              timeout=120, env={**os.environ, "AWS_PAGER": "", "PAGER": "cat"})
    except (OSError, subprocess.SubprocessError):
        return False
    return proc.returncode == 0


def find_or_build(cache: Path) -> str:
    """An `aws` executable with `verify-query-results`: $LAKE_AWS_CLI or `aws` on PATH if they have it, else
    the one cached under `cache`, else one built there from Debian's package."""
    for exe in (os.environ.get("LAKE_AWS_CLI"), shutil.which("aws")):
        if exe and has_verify_query_results(exe):
            return exe
    exe = cache / "bin" / "aws"
    if exe.exists() and has_verify_query_results(str(exe)):
        return str(exe)
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise Unavailable(f"AWS CLI v2 is not installed and `{tool}` is missing to build it from Debian's package")
    if not os.path.exists(KEYRING):
        raise Unavailable(f"AWS CLI v2 is not installed and {KEYRING} is missing to fetch Debian's package")
    with tempfile.TemporaryDirectory() as tmp:
        deb = _download(Path(tmp))
        _install(deb, Path(tmp) / "ext", cache)
    if not has_verify_query_results(str(exe)):
        raise Unavailable(f"the AWS CLI built from Debian {SUITE}'s package at {exe} has no verify-query-results")
    return str(exe)


def _run(args: list, what: str, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, **kw)
    except (OSError, subprocess.SubprocessError) as e:
        raise Unavailable(f"{what} failed: {e}") from None
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        raise Unavailable(f"{what} failed: {lines[-1] if lines else f'exit status {proc.returncode}'}")
    return proc


def _download(tmp: Path) -> Path:
    parts = tmp / "sources"
    parts.mkdir()
    (parts / f"{SUITE}.sources").write_text(f"Types: deb\nURIs: {MIRROR}\nSuites: {SUITE}\nComponents: main\n"
                                            f"Signed-By: {KEYRING}\n")
    (tmp / "lists" / "partial").mkdir(parents=True)
    (tmp / "cache" / "archives" / "partial").mkdir(parents=True)
    opts = ["-o", "Dir::Etc::SourceList=/dev/null", "-o", f"Dir::Etc::SourceParts={parts}",
            "-o", f"Dir::State::Lists={tmp / 'lists'}", "-o", f"Dir::Cache={tmp / 'cache'}",
            "-o", "APT::Sandbox::User=root", "-o", "Debug::NoLocking=1"]
    _run(["apt-get", *opts, "update"], f"apt-get update of Debian {SUITE}", timeout=300)
    _run(["apt-get", *opts, "download", "awscli"], f"apt-get download awscli ({SUITE})", timeout=300, cwd=tmp)
    debs = sorted(tmp.glob("awscli_*.deb"))
    if not debs:
        raise Unavailable(f"apt-get download awscli ({SUITE}) left no .deb")
    return debs[-1]


def _install(deb: Path, ext: Path, venv: Path) -> None:
    _run(["dpkg-deb", "-x", deb, ext], f"unpacking {deb.name}")
    dist = ext / "usr" / "lib" / "python3" / "dist-packages"
    meta = next(dist.glob("awscli-*.dist-info/METADATA"), None)
    if meta is None:
        raise Unavailable(f"{deb.name} holds no awscli dist-info")
    reqs = [m.group(1).strip() for m in re.finditer(r"^Requires-Dist: (.+)$", meta.read_text(), re.M)
            if "extra ==" not in m.group(1)]
    shutil.rmtree(venv, ignore_errors=True)
    _run([sys.executable, "-m", "venv", venv], "creating the AWS CLI v2 venv")
    python = venv / "bin" / "python"
    _run([python, "-m", "pip", "install", "-q", *reqs], "installing AWS CLI v2's requirements", timeout=900)
    site = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                "locating the venv's site-packages").stdout.strip()
    for item in dist.iterdir():
        if item.name.startswith("awscli"):
            shutil.copytree(item, Path(site) / item.name, dirs_exist_ok=True)
    script = (ext / "usr" / "bin" / "aws").read_text().split("\n", 1)[1]
    exe = venv / "bin" / "aws"
    exe.write_text(f"#!{python}\n{script}")
    exe.chmod(0o755)
