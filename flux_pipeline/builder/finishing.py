"""Finishing a partition once all its outcomes are known: its rows, its images, its files.

:meth:`Finishing.finish` waits for every key of the partition, builds one lineage row per
request (with the facts of its image, read once from the stored copy when its ledger entry
predates them; copying into the partition's folder the images it shares with other partitions,
with ``copiers`` threads), writes ``metadata.jsonl`` (warning when its keys differ from the
previous partition's), the receipts of the images this build wrote
for it (:mod:`flux_pipeline.store.receipts`, where the store tags them) and then the lineage
file atomically, hands the native memory it freed back to the system
(:mod:`.native_heap`) and emits the partition's
:class:`~flux_pipeline.builder.reports.BuildReport`. The keys it sent whose outcome is final are
then dropped from :attr:`RangeState.sent <flux_pipeline.builder.range_state.RangeState.sent>`:
later partitions find them in the ledger.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

from flux_pipeline.builder import native_heap
from flux_pipeline.builder.outcomes import Outcome, prompt_rows, with_facts
from flux_pipeline.builder.planning import KeyPlan, PartitionPlan
from flux_pipeline.builder.range_state import RangeState, Sent
from flux_pipeline.builder.reports import BuildReport
from flux_pipeline.builder.sliced_map import sliced_map
from flux_pipeline.builder.worker_loop import Emit
from flux_pipeline.protocol import COMPLETED, FAILED
from flux_pipeline.store.imagefolder import (
    attribute_names,
    key_difference,
    metadata_keys,
    previous_partition,
    stored_metadata_keys,
    write_imagefolder_metadata,
)
from flux_pipeline.store.layout import images_dir
from flux_pipeline.store.lineage import LineageRow, write_partition_lineage
from flux_pipeline.store.receipts import Receipt, keep_receipts

__all__ = ["Finishing"]

log = logging.getLogger(__name__)


class Finishing:
    """Finishes partitions and keeps their reports, by partition key."""

    def __init__(self, state: RangeState, emit: Emit, *, copiers: int) -> None:
        self.state = state
        self.emit = emit
        #: Threads copying reused images into a partition's folder.
        self.copiers = copiers
        self.reports: dict[str, BuildReport] = {}
        #: The last partition finished with images, and its metadata keys.
        self._last_keys: tuple[str, list[str]] | None = None

    async def finish(
        self, plan: PartitionPlan, reused: dict[str, Outcome], waits: dict[str, Sent]
    ) -> None:
        """Wait for every key of the partition (``waits``: those not reused), copy its images,
        write its lineage, report; then forget the keys it sent whose outcome is final (later
        partitions find them in the ledger)."""
        state = self.state
        outcomes = dict(reused)
        for key in plan.keys:
            if key.request_key not in outcomes:
                outcome = await waits[key.request_key].outcome
                state.tally.count(len(key.prompts), outcome, plan.partition)
                outcomes[key.request_key] = outcome
        rows = await asyncio.to_thread(self._rows, plan, outcomes)
        names = attribute_names(rows)
        await asyncio.to_thread(
            write_imagefolder_metadata, state.store, plan.partition, rows, attributes=names
        )
        if any(row.status == COMPLETED for row in rows):
            await asyncio.to_thread(self._compare_keys, plan.partition, metadata_keys(names))
        written = _receipts(plan.partition, outcomes.values())
        await asyncio.to_thread(keep_receipts, state.store, plan.partition, written)
        lineage_uri = await asyncio.to_thread(
            write_partition_lineage, state.store, plan.partition, rows
        )
        native_heap.trim()
        own = [sent for sent in waits.values() if sent.partition == plan.partition]
        report = self._report(plan, rows, lineage_uri, own)
        self.reports[plan.partition] = report
        for request_key, sent in waits.items():
            if sent.partition == plan.partition and outcomes[request_key].final:
                del state.sent[request_key]
        self.emit(report)

    def _compare_keys(self, partition: str, keys: list[str]) -> None:
        """Warn when the partition's ``metadata.jsonl`` keys differ from the previous
        partition's (the last one this build finished, else the stored one before it):
        ``datasets`` does not load a folder of metadata files with different keys whole."""
        previous = self._last_keys
        if previous is None:
            key = previous_partition(self.state.store, partition)
            found = None if key is None else stored_metadata_keys(self.state.store, key)
            previous = None if key is None or found is None else (key, found)
        self._last_keys = (partition, keys)
        if previous is None:
            return
        difference = key_difference(keys, previous[1])
        if difference is not None:
            first, last = sorted((previous[0], partition))
            log.warning(
                "partition %s: its metadata.jsonl keys differ from partition %s's (%s); "
                "datasets.load_dataset('imagefolder', ...) needs the same keys in every "
                "metadata.jsonl (else it fails, or drops or nulls columns, depending on which "
                "file it reads first): run `flux-pipeline export imagefolder -p %s...%s` to "
                "rewrite them with the union of their keys",
                partition,
                previous[0],
                difference,
                first,
                last,
            )

    def _rows(self, plan: PartitionPlan, outcomes: dict[str, Outcome]) -> list[LineageRow]:
        """One row per request (prompt and variant) of the partition, in the order given."""
        stored = dict(plan.stored)

        def rows_of(key: KeyPlan) -> list[LineageRow]:
            state = self.state
            outcome = with_facts(state.store, state.ledger, outcomes[key.request_key])
            return prompt_rows(
                state.store,
                outcome,
                key.prompts,
                plan.partition,
                stored,
                blank_luma_std=state.blank_luma_std,
            )

        by_image = {
            (row.prompt_id, row.variant): row
            for rows in sliced_map(rows_of, plan.keys, threads=self.copiers)
            for row in rows
        }
        return [by_image[image] for image in plan.order]

    def _report(
        self, plan: PartitionPlan, rows: list[LineageRow], lineage_uri: str, own: list[Sent]
    ) -> BuildReport:
        """The partition's report; ``own``: the keys this run sent for it."""
        return BuildReport(
            partition=plan.partition,
            total=len(rows),
            completed=sum(r.status == COMPLETED for r in rows),
            failed=sum(r.status == FAILED for r in rows),
            cached=sum(r.cached for r in rows),
            api_requests=sum(sent.attempts for sent in own),
            elapsed_s=time.monotonic() - self.state.started,
            images_prefix_uri=self.state.store.uri(images_dir(plan.partition)),
            lineage_uri=lineage_uri,
            reused=plan.prompts("reuse") + plan.prompts("failed"),
            from_other_runs=sum(sent.from_other_run for sent in own),
        )


def _receipts(partition: str, outcomes: Iterable[Outcome]) -> dict[str, Receipt]:
    """The receipts of the images this build wrote into ``partition`` (tagged by the store)."""
    return {
        o.path: Receipt(o.etag, o.row.image_sha256)
        for o in outcomes
        if o.partition == partition and o.path and o.etag and o.row.image_sha256
    }
