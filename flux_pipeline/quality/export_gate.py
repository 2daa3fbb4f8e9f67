"""Which rows an export leaves out, and why: blank images, and near-duplicates whose original is
in the same export (its partitions). ``include_flagged`` keeps them all."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from flux_pipeline.quality.near_duplicates import near_duplicates_of
from flux_pipeline.store.layout import image_partition
from flux_pipeline.store.lineage import LineageRow
from flux_pipeline.store.storage import ObjectStore

log = logging.getLogger("flux_pipeline.quality")

BLANK = "blank"
NEAR_DUPLICATE = "near_duplicate"


@dataclass
class ExportGate:
    """Decides row by row; ``left_out`` counts the rows left out by reason."""

    near: dict[str, str]
    left_out: Counter[str] = field(default_factory=Counter)

    @classmethod
    def open(
        cls, store: ObjectStore, partitions: Sequence[str], bits: int, *, include_flagged: bool
    ) -> ExportGate | None:
        """The gate of an export of ``partitions``; None with ``include_flagged``."""
        if include_flagged:
            return None
        chosen = set(partitions)
        near = {
            uri: original
            for uri, original in near_duplicates_of(store, partitions, bits, log.warning).items()
            if _partition(store, original) in chosen
        }
        return cls(near)

    def keeps(self, row: LineageRow) -> bool:
        """False (counted) for a blank image or a near-duplicate of an image in the export."""
        if row.blank:
            self.left_out[BLANK] += 1
            return False
        if row.image_uri is not None and row.image_uri in self.near:
            self.left_out[NEAR_DUPLICATE] += 1
            return False
        return True


def _partition(store: ObjectStore, uri: str) -> str | None:
    relpath = store.relpath(uri)
    return None if relpath is None else image_partition(relpath)
