"""Where a secret could have been written: every file under a folder, Parquet cell by cell."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq


def files_containing(root: Path, needles: tuple[str, ...]) -> list[str]:
    """Every file under ``root`` whose bytes contain one of ``needles``; Parquet files (whose
    pages are compressed) are searched cell by cell."""
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if path.suffix == ".parquet":
            data = repr(pq.read_table(path).to_pylist()).encode()
        found += [f"{path}: {n}" for n in needles if n.encode() in data]
    return found
