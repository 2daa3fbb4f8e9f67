"""Finding 64-bit hashes within ``k`` bits of each other without comparing every pair.

The pigeonhole principle: split the 64 bits into ``k + 1`` blocks; two hashes that differ in at
most ``k`` bits agree exactly on at least one block. Each block keeps the hashes sorted by that
block's value, so a query looks up ``k + 1`` buckets (binary searches) and compares only the
hashes found there. With ``k`` = 4, a block has 12 or 13 bits: a million spread-out hashes put
about 250 in a bucket.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]
#: Queries compared at once: bounds the memory of the candidate arrays.
BATCH: Final = 4096


@dataclass(frozen=True)
class Matches:
    """Pairs found: ``query[i]`` lies ``distance[i]`` bits from the index's entry ``entry[i]``."""

    query: I64
    entry: I64
    distance: I64


def blocks(bits: int) -> list[tuple[int, int]]:
    """``(shift, mask)`` of each of the ``bits + 1`` blocks covering the 64 bits."""
    count = bits + 1
    edges = [round(64 * i / count) for i in range(count + 1)]
    return [(low, (1 << (high - low)) - 1) for low, high in itertools.pairwise(edges)]


class MultiIndex:
    """The hashes of an index, sorted once per block, for lookups within ``bits`` bits."""

    def __init__(self, hashes: U64, bits: int) -> None:
        if not 0 <= bits < 64:
            raise ValueError(f"bits: must be between 0 and 63, got {bits}")
        self.hashes = np.ascontiguousarray(hashes, dtype=np.uint64)
        self.bits = bits
        self._blocks = []
        for shift, mask in blocks(bits):
            values = ((self.hashes >> np.uint64(shift)) & np.uint64(mask)).astype(_dtype(mask))
            order = np.argsort(values, kind="stable")  # a radix sort for 8 and 16 bits
            self._blocks.append((shift, mask, values[order], order))

    def __len__(self) -> int:
        return len(self.hashes)

    def search(self, queries: U64) -> Matches:
        """Every (query, entry) pair within ``bits`` bits, each pair once."""
        found = [
            self._search(queries[start : start + BATCH], start)
            for start in range(0, len(queries), BATCH)
        ]
        if not found:
            empty = np.empty(0, dtype=np.int64)
            return Matches(empty, empty, empty)
        return Matches(*(np.concatenate(parts) for parts in zip(*found, strict=True)))

    def _search(self, queries: U64, offset: int) -> tuple[I64, I64, I64]:
        queries = np.asarray(queries, dtype=np.uint64)
        pairs_q, pairs_e = [], []
        for shift, mask, sorted_values, order in self._blocks:
            wanted = ((queries >> np.uint64(shift)) & np.uint64(mask)).astype(sorted_values.dtype)
            low = np.searchsorted(sorted_values, wanted, side="left")
            high = np.searchsorted(sorted_values, wanted, side="right")
            counts = high - low
            total = int(counts.sum())
            if total == 0:
                continue
            query = np.repeat(np.arange(len(queries), dtype=np.int64), counts)
            starts = np.repeat(low - (np.cumsum(counts) - counts), counts)
            entry = order[starts + np.arange(total, dtype=np.int64)]
            near = _popcount(queries[query] ^ self.hashes[entry]) <= self.bits
            pairs_q.append(query[near])
            pairs_e.append(entry[near])
        if not pairs_q:
            empty = np.empty(0, dtype=np.int64)
            return empty, empty, empty
        # A pair agreeing on several blocks is found once per block: keep it once.
        size = np.int64(max(1, len(self.hashes)))
        pair = np.unique(np.concatenate(pairs_q) * size + np.concatenate(pairs_e))
        query, entry = pair // size, pair % size
        dist = _popcount(queries[query] ^ self.hashes[entry]).astype(np.int64)
        return query + offset, entry.astype(np.int64), dist


def _dtype(mask: int) -> type[np.unsignedinteger[Any]]:
    """The smallest unsigned type holding a block."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if mask <= np.iinfo(dtype).max:
            return dtype
    return np.uint64


def _popcount(values: U64) -> npt.NDArray[np.uint8]:
    counted: npt.NDArray[np.uint8] = np.bitwise_count(values)
    return counted
