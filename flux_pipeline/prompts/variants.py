"""Each partition's requests: one per row and variant, with its seed.

Variant 0 is the request a row has always made: its pinned seed, or the seed derived from
``(prompt_id, partition)``, so partitions built before variants existed keep their request
keys. Variant ``v > 0`` takes the pinned seed plus ``v``, or a seed derived from
``(prompt_id, partition, v)``; a derived seed that repeats an earlier variant's is derived again,
so the variants of a row always have distinct seeds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Final

import pandas as pd

from flux_pipeline.prompts.attributes import KNOWN_COLUMNS, attributes_json
from flux_pipeline.protocol import GenerationRequest

#: Images one partition may ask for (rows times variants).
MAX_PARTITION_IMAGES: Final = 1_000_000


def derive_seed(prompt_id: str, partition: str) -> int:
    """Variant 0's stable seed in ``0 .. 2**31 - 1`` from ``(prompt_id, partition)``."""
    return _seed(f"{prompt_id}\x00{partition}")


def variant_seeds(prompt_id: str, partition: str, pinned: int | None, variants: int) -> list[int]:
    """The seeds of a row's ``variants`` images in ``partition``, variant 0 first."""
    if pinned is not None:
        return [pinned + v for v in range(variants)]
    seeds = [derive_seed(prompt_id, partition)]
    for v in range(1, variants):
        seed, retry = _seed(f"{prompt_id}\x00{partition}\x00{v}"), 0
        while seed in seeds:
            retry += 1
            seed = _seed(f"{prompt_id}\x00{partition}\x00{v}\x00{retry}")
        seeds.append(seed)
    return seeds


class RangeRequests(Mapping[str, list[GenerationRequest]]):
    """The requests of each partition of a range, made when one is asked for: a month of a
    large table is never held in memory at once. The table's values are read out once, so the
    partitions' requests share their prompt and attribute strings."""

    def __init__(self, table: pd.DataFrame, partitions: Sequence[str]) -> None:
        self._rows = _prompt_rows(table)
        self._partitions = list(dict.fromkeys(partitions))

    def __getitem__(self, partition: str) -> list[GenerationRequest]:
        if partition not in self._partitions:
            raise KeyError(partition)
        return _requests(self._rows, partition)

    def __iter__(self) -> Iterator[str]:
        return iter(self._partitions)

    def __len__(self) -> int:
        return len(self._partitions)


def partition_requests(table: pd.DataFrame, partition: str) -> list[GenerationRequest]:
    """One request per row and variant: the pinned seed (plus the variant), or the seeds
    derived for this partition."""
    return _requests(_prompt_rows(table), partition)


#: One row of a validated table as Python values: prompt_id, prompt, pinned seed, steps, ratio,
#: variants, attributes (JSON object string or None).
_PromptRow = tuple[str, str, int | None, int, str, int, str | None]


def _prompt_rows(table: pd.DataFrame) -> list[_PromptRow]:
    names = [c for c in table.columns if c not in KNOWN_COLUMNS]
    has_variants = "variants" in table.columns
    rows = []
    for row in table.to_dict("records"):
        labels = {n: None if pd.isna(row[n]) else str(row[n]) for n in names}
        rows.append(
            (
                str(row["prompt_id"]),
                str(row["prompt"]),
                None if pd.isna(row["seed"]) else int(row["seed"]),
                int(row["steps"]),
                str(row["aspect_ratio"]),
                int(row["variants"]) if has_variants else 1,
                attributes_json(labels),
            )
        )
    return rows


def _requests(rows: list[_PromptRow], partition: str) -> list[GenerationRequest]:
    return [
        GenerationRequest(
            key=prompt_id,
            prompt=prompt,
            seed=seed,
            steps=steps,
            aspect_ratio=aspect_ratio,
            variant=variant,
            attributes=attributes,
        )
        for prompt_id, prompt, pinned, steps, aspect_ratio, variants, attributes in rows
        for variant, seed in enumerate(variant_seeds(prompt_id, partition, pinned, variants))
    ]


def _seed(text: str) -> int:
    digest = hashlib.sha256(text.encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF
