"""What a build will do with each request, read from storage alone (no API call, no write).

Prompts of a partition that share a request key form one group, led by the first of them. Each
group gets one action:

- ``reuse``: the ledger says COMPLETED and a stored copy with the recorded size and sha256 is
  found (this partition's own copies first, then the path the ledger names): copied, no API call;
- ``failed``: the ledger holds a final FAILED (400, 422, content that is not an image): reused;
- ``attach``: the ledger holds the request id of a job still in flight: polled, not paid again;
  or the send time of a submit whose answer an earlier run never saw: resolved from the
  account's record (adopted when found) before anything is sent;
- ``submit``: nothing usable is stored: a new, billed job;
- ``shared``: (ranges only) an earlier partition of the same range attaches or submits the key;
  this one waits for that outcome and copies it.

The ledger read is the one of the build's backend (:mod:`flux_pipeline.store.provenance`): what
another backend generated or has in flight is ``submit`` here.

The build (:mod:`flux_pipeline.builder`) acts on exactly this classification, so a ``plan``
command built on :func:`plan_partitions` and the build cannot disagree on what will be paid.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from flux_pipeline.builder.sliced_map import sliced_map
from flux_pipeline.protocol import COMPLETED, FAILED, GenerationRequest
from flux_pipeline.store.layout import image_path, images_dir
from flux_pipeline.store.ledger import SENDING, SUBMITTED, Ledger, LedgerEntry
from flux_pipeline.store.storage import ObjectStore

log = logging.getLogger(__name__)

Action = Literal["reuse", "failed", "attach", "submit", "shared"]
ACTIONS: Final[tuple[Action, ...]] = ("reuse", "failed", "attach", "submit", "shared")
#: Request keys classified at once (each may read and hash a stored image).
_CHECKERS: Final = 8


@dataclass(frozen=True, slots=True)
class KeyPlan:
    """One request key of a partition: its prompts (leader first) and what will be done."""

    prompts: tuple[GenerationRequest, ...]
    action: Action
    #: The ledger entry read (None: no entry).
    entry: LedgerEntry | None = None
    #: ``reuse``: the stored copy to reuse (path under the root).
    source: str | None = None

    @property
    def leader(self) -> GenerationRequest:
        return self.prompts[0]

    @property
    def request_key(self) -> str:
        return self.prompts[0].request_key


@dataclass(frozen=True)
class PartitionPlan:
    """Every request key of one partition, in the order of its first prompt."""

    partition: str
    keys: tuple[KeyPlan, ...]
    #: ``{path: size}`` of the images already in the partition's folder.
    stored: Mapping[str, int]
    #: ``(prompt_id, variant)`` of each request, in order (the order of the lineage rows).
    order: tuple[tuple[str, int], ...] = ()

    def of(self, action: Action) -> list[KeyPlan]:
        return [k for k in self.keys if k.action == action]

    def prompts(self, action: Action) -> int:
        """Images asked for (lineage rows: one per prompt and variant) whose key has ``action``."""
        return sum(len(k.prompts) for k in self.keys if k.action == action)

    @property
    def new_images(self) -> int:
        """Jobs this partition will submit (each one billed)."""
        return len(self.of("submit"))


def group_by_key(requests: Sequence[GenerationRequest]) -> list[tuple[GenerationRequest, ...]]:
    """Prompts grouped by request key, in first-seen order; each (prompt id, variant) must be
    unique."""
    names = Counter((r.key, r.variant) for r in requests)
    duplicates = sorted(k for k, n in names.items() if n > 1)
    if duplicates:
        raise ValueError(f"(prompt id, variant) pairs must be unique: {duplicates}")
    groups: dict[str, list[GenerationRequest]] = {}
    for request in requests:
        groups.setdefault(request.request_key, []).append(request)
    return [tuple(group) for group in groups.values()]


def plan_partition(
    ledger: Ledger,
    partition: str,
    requests: Sequence[GenerationRequest],
    *,
    shared: Iterable[str] = (),
) -> PartitionPlan:
    """Classify ``requests`` of ``partition`` against ``ledger`` (one backend's); keys in
    ``shared`` that are not reusable are left to an earlier partition of the range (action
    ``shared``)."""
    store = ledger.store
    groups = group_by_key(requests)
    entries = ledger.get_many(g[0].request_key for g in groups)
    stored = store.sizes(images_dir(partition))
    earlier = set(shared)

    def classify(group: tuple[GenerationRequest, ...]) -> KeyPlan:
        entry = entries.get(group[0].request_key)
        return _classify(store, partition, group, entry, stored=stored, shared=earlier)

    keys = tuple(sliced_map(classify, groups, threads=_CHECKERS))
    order = tuple((r.key, r.variant) for r in requests)
    return PartitionPlan(partition=partition, keys=keys, stored=stored, order=order)


def plan_partitions(
    ledger: Ledger, partitions: Mapping[str, Sequence[GenerationRequest]]
) -> list[PartitionPlan]:
    """Plan a range in order: a key attached or submitted by one partition is ``shared`` by
    the later ones, so each new image is counted (and paid) once."""
    plans, claimed = [], set[str]()
    for partition, requests in partitions.items():
        plan = plan_partition(ledger, partition, requests, shared=claimed)
        claimed.update(k.request_key for k in plan.keys if k.action in ("attach", "submit"))
        plans.append(plan)
    return plans


def _classify(
    store: ObjectStore,
    partition: str,
    group: tuple[GenerationRequest, ...],
    entry: LedgerEntry | None,
    *,
    stored: Mapping[str, int],
    shared: set[str],
) -> KeyPlan:
    if entry is not None and entry.lineage is not None:
        if entry.state == FAILED:
            return KeyPlan(group, "failed", entry)
        if entry.state == COMPLETED and entry.image_path is not None:
            source = _stored_copy(store, partition, group, entry, stored)
            if source is not None:
                return KeyPlan(group, "reuse", entry, source)
            log.warning(
                "no stored copy of %s's image with its recorded sha256 is left; generating it "
                "again",
                group[0].key,
            )
    if group[0].request_key in shared:
        return KeyPlan(group, "shared", entry)
    if entry is not None and entry.state == SUBMITTED and entry.request_id:
        return KeyPlan(group, "attach", entry)
    if entry is not None and entry.state == SENDING and entry.submitted_at is not None:
        return KeyPlan(group, "attach", entry)
    return KeyPlan(group, "submit", entry)


def _stored_copy(
    store: ObjectStore,
    partition: str,
    group: tuple[GenerationRequest, ...],
    entry: LedgerEntry,
    stored: Mapping[str, int],
) -> str | None:
    """The first copy of the entry's image that holds its recorded size and sha256: this
    partition's own copies (sizes listed in ``stored``), then the ledger's ``image_path``."""
    row, source = entry.lineage, entry.image_path or ""
    if row is None or row.backend is None:
        return None
    ext = source.rsplit(".", 1)[-1]
    own = [image_path(partition, r, ext, row.backend) for r in group]
    candidates = [path for path in own if stored.get(path) == row.image_bytes]
    if source not in own:
        candidates.append(source)
    for path in candidates:  # the ledger's copy is hashed without asking its size first
        try:
            if store.sha256(path) == row.image_sha256:
                return path
        except FileNotFoundError:
            continue
    return None
