"""Per-segment Bloom filters on eventID: a point lookup opens only the segments that may hold the event.

eventIDs are random UUIDs, so min/max statistics cannot prune them; without an index a lookup by eventID
(CloudTrail's LookupEvents EventId, or `WHERE eventid = '...'`) reads every segment's eventid column. Each
segment's manifest entry therefore carries a Bloom filter of its eventIDs (16 bits per event, 6 probes:
~0.1% false positives, 2 bytes per event in the log), and the pruner tests all segments at once with numpy.
A filter's first byte is its probe count, so filters stay readable if the sizing changes; a filter whose
length is a multiple of 8 has no such byte and uses 4 probes (the first format).

The hash must never change (filters are persisted in commits), so it is written out here rather than
borrowed from a library whose hash is documented as unstable across versions: a polynomial hash over the
UTF-8 bytes (mod 2^64) finished with splitmix64, computed for a whole Arrow string array with numpy from
the array's own buffers.
"""

from __future__ import annotations

import base64

import numpy as np
import pyarrow as pa

BITS_PER_KEY = 16
PROBES = 6
LEGACY_PROBES = 4
_P = np.uint64(0x100000001B3)  # FNV-64 prime as the polynomial base
_MAX_POWERS = 1 << 12


def _powers(n: int) -> np.ndarray:
    out = np.empty(n, dtype=np.uint64)
    out[0] = 1
    with np.errstate(over="ignore"):
        for i in range(1, n):
            out[i] = out[i - 1] * _P
    return out


_POW = _powers(_MAX_POWERS)


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: spreads the polynomial hash over all 64 bits."""
    with np.errstate(over="ignore"):
        h = h ^ (h >> np.uint64(30))
        h = h * np.uint64(0xBF58476D1CE4E5B9)
        h = h ^ (h >> np.uint64(27))
        h = h * np.uint64(0x94D049BB133111EB)
        return h ^ (h >> np.uint64(31))


def hash_strings(values: pa.Array | pa.ChunkedArray | list[str]) -> np.ndarray:
    """A stable 64-bit hash of each non-null string (nulls are dropped)."""
    if isinstance(values, list):
        values = pa.array(values, pa.string())
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    values = values.drop_null().cast(pa.large_string())
    n = len(values)
    if n == 0:
        return np.empty(0, dtype=np.uint64)
    _, offsets_buf, data_buf = values.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int64)[values.offset: values.offset + n + 1]
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.empty(0, np.uint8)
    starts, ends = offsets[:-1], offsets[1:]
    lengths = ends - starts
    if lengths.max(initial=0) >= _MAX_POWERS:  # absurdly long ids: hash their first 4 KiB
        ends = np.minimum(ends, starts + _MAX_POWERS - 1)
        lengths = ends - starts
    total = int(lengths.sum())
    h = np.zeros(n, dtype=np.uint64)
    if total:
        first = np.cumsum(lengths) - lengths  # where each string's bytes start in the flattened order
        pos_in = np.arange(total) - np.repeat(first, lengths)
        idx = np.repeat(starts, lengths) + pos_in
        # byte i of a string of length L weighs P^(L-1-i): Horner's rule, vectorised
        weights = _POW[np.repeat(lengths, lengths) - 1 - pos_in]
        with np.errstate(over="ignore"):
            contrib = (data[idx].astype(np.uint64) + np.uint64(1)) * weights
        nz = lengths > 0
        h[nz] = np.add.reduceat(contrib, first[nz])
    with np.errstate(over="ignore"):
        h = h + lengths.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    return _mix(h)


def _positions(h: np.ndarray, m: np.ndarray, probes: int = PROBES) -> np.ndarray:
    """Probe bit positions (double hashing), shape (len(h), probes); `m` broadcasts against h."""
    h1 = (h & np.uint64(0xFFFFFFFF)).astype(np.uint64)
    h2 = ((h >> np.uint64(32)) | np.uint64(1)).astype(np.uint64)
    i = np.arange(probes, dtype=np.uint64)
    with np.errstate(over="ignore"):
        return (h1[:, None] + i[None, :] * h2[:, None]) % m.astype(np.uint64)[:, None]


def build(values: pa.Array | pa.ChunkedArray) -> bytes:
    """The Bloom filter of a segment's eventIDs: one byte of probe count, then the bits (a multiple of 64)."""
    h = np.unique(hash_strings(values))
    m = max(64, -(-len(h) * BITS_PER_KEY // 64) * 64)
    bits = np.zeros(m, dtype=bool)
    if len(h):
        bits[_positions(h, np.full(len(h), m)).ravel()] = True
    return bytes([PROBES]) + np.packbits(bits, bitorder="little").tobytes()


def encode(bloom: bytes) -> str:
    return base64.b64encode(bloom).decode("ascii")


def decode(text: str | None) -> bytes | None:
    return base64.b64decode(text) if text else None


def may_contain(filters: pa.Array | pa.ChunkedArray, keys: list[str]) -> np.ndarray:
    """For each filter (one per segment; null = no filter, so "maybe"), whether any of `keys` may be in it."""
    if isinstance(filters, pa.ChunkedArray):
        filters = filters.chunk(0) if filters.num_chunks == 1 else filters.combine_chunks()
    n = len(filters)
    out = np.zeros(n, dtype=bool)
    if n == 0:
        return out
    if filters.type not in (pa.binary(), pa.large_binary()):
        filters = filters.cast(pa.large_binary())
    valid = np.asarray(filters.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    out[~valid] = True
    _, offsets_buf, data_buf = filters.buffers()
    width = np.int64 if filters.type == pa.large_binary() else np.int32  # read in place: no copy of the bits
    offsets = np.frombuffer(offsets_buf, dtype=width)[filters.offset: filters.offset + n + 1].astype(np.int64)
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.empty(0, np.uint8)
    sizes = offsets[1:] - offsets[:-1]
    headed = sizes % 8 == 1  # current format: a probe-count byte before the bits
    starts = offsets[:-1] + headed
    bits_len = (sizes - headed) * 8
    probes = np.full(n, LEGACY_PROBES, dtype=np.int64)
    if headed.any():
        probes[headed] = data[offsets[:-1][headed]]
    hashes = hash_strings(keys)
    for k in np.unique(probes[valid & (bits_len > 0)]):
        rows = np.nonzero(valid & (bits_len > 0) & (probes == k))[0]
        m, base = bits_len[rows], starts[rows]
        for h in hashes:
            pos = _positions(np.full(len(rows), h, dtype=np.uint64), m, int(k))
            byte = data[base[:, None] + (pos >> np.uint64(3)).astype(np.int64)]
            bit = (byte >> (pos & np.uint64(7)).astype(np.uint8)) & 1
            out[rows] |= bit.all(axis=1).astype(bool)
    return out


__all__ = ["build", "encode", "decode", "may_contain", "hash_strings", "BITS_PER_KEY", "PROBES", "LEGACY_PROBES"]
