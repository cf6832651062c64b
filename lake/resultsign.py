"""The sign file of delivered CloudTrail Lake query results, `result_sign.json` (reference 4.8), which
`aws cloudtrail verify-query-results` (AWS CLI v2) checks against ListPublicKeys.

    {"version": "1.0", "region": "us-east-1",
     "files": [{"fileHashValue": "<sha256 hex of result_1.csv.gz as stored, still gzipped>",
                "fileName": "result_1.csv.gz"}, ...],
     "hashAlgorithm": "SHA-256", "signatureAlgorithm": "SHA256withRSA",
     "queryCompleteTime": "2022-05-10T22:06:30Z",
     "hashSignature": "<hex SHA256withRSA over the fileHashValues joined by one space, in files order>",
     "publicKeyFingerprint": "<32 hex: the region's key valid at queryCompleteTime>"}

It sits next to the result files, `<DeliveryS3Uri>/AWSLogs/<acct>/CloudTrail-Lake/Query/<yyyy>/<mm>/<dd>/
<query id>/result_sign.json`, and file names in it are relative to that folder (the CLI joins its prefix and
`fileName`). The keys are the same per-region keys as digest files (`lake/keys.py`); the CLI finds the key with
ListPublicKeys(StartTime=queryCompleteTime, EndTime=queryCompleteTime + 20 days).

Hooking into StartQuery delivery (`lake/api_queries.py`): `api_queries.RESULT_SIGNER = result_signer(lake)`
(or call `sign_query_results` after writing the files yourself).
"""

from __future__ import annotations

import hashlib
import posixpath
from datetime import datetime, timezone
from typing import Any, Callable

import orjson

from .digest import Destination
from .keys import SIGNATURE_ALGORITHM, iso_seconds, keyring, utc

SIGN_FILE_NAME = "result_sign.json"


def sign_file(lake: Any, region: str, files: list[tuple[str, bytes]], when: datetime | None = None) -> bytes:
    """The bytes of `result_sign.json` for result files [(file name, bytes as stored)], completed at `when`."""
    if not files:
        raise ValueError("no query result files to sign")
    when = utc(when) if when is not None else datetime.now(timezone.utc)
    complete = iso_seconds(when)
    signer = keyring(lake).signing_key(region, utc(complete))
    entries = [{"fileHashValue": hashlib.sha256(data).hexdigest(), "fileName": name} for name, data in files]
    signature = signer.sign(" ".join(e["fileHashValue"] for e in entries).encode()).hex()
    return orjson.dumps({"version": "1.0", "region": region, "files": entries, "hashAlgorithm": "SHA-256",
                         "signatureAlgorithm": SIGNATURE_ALGORITHM, "queryCompleteTime": complete,
                         "hashSignature": signature, "publicKeyFingerprint": signer.fingerprint},
                        option=orjson.OPT_INDENT_2)


def sign_query_results(lake: Any, region: str, account_id: str, destination_uri: str,
                       files: list[tuple[str, bytes]], query_id: str, *, when: datetime | None = None) -> str:
    """Write `result_sign.json` for delivered result files; its key (relative to `destination_uri`).

    `destination_uri` is the DeliveryS3Uri (`s3://bucket[/prefix]` or a local directory). `files` are
    (key, bytes as stored): keys relative to `destination_uri`, all in one folder (then the sign file goes
    there), or bare file names (then the folder is AWS's `AWSLogs/<account>/CloudTrail-Lake/Query/<yyyy>/<mm>/
    <dd>/<query id>` for `when`, default now)."""
    when = utc(when) if when is not None else datetime.now(timezone.utc)
    folders = {posixpath.dirname(k) for k, _ in files}
    if len(folders) > 1:
        raise ValueError(f"query {query_id}: result files are in more than one folder: {sorted(folders)}")
    folder = folders.pop() if folders else ""
    if not folder:
        folder = f"AWSLogs/{account_id}/CloudTrail-Lake/Query/{when:%Y/%m/%d}/{query_id}"
    data = sign_file(lake, region, [(posixpath.basename(k), b) for k, b in files], when)
    key = f"{folder}/{SIGN_FILE_NAME}"
    Destination(destination_uri).put(key, data)
    return key


def result_signer(lake: Any, region: str | None = None
                  ) -> Callable[[dict, list[tuple[str, bytes]], Callable[[str, bytes], None]], None]:
    """A `lake.api_queries.RESULT_SIGNER`: signs the files just delivered and writes the sign file next to
    them with the delivery's own writer. The region is the lake's unless given."""
    def sign(record: dict, written: list[tuple[str, bytes]], write: Callable[[str, bytes], None]) -> None:
        write(SIGN_FILE_NAME, sign_file(lake, region or lake.region, written))
    return sign


__all__ = ["sign_file", "sign_query_results", "result_signer", "SIGN_FILE_NAME"]
