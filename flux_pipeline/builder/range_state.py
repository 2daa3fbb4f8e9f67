"""The state the units of one range build share (:class:`RangeState`): the request keys it
sends (:class:`Sent`), the keys it waits on, the batches being fed, its claims, its tasks and
its tally. The range build and its units (routing, waiting, feeding, finishing) share it
instead of reaching into each other."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from dataclasses import InitVar, dataclass, field
from datetime import datetime

from flux_pipeline.builder.held_claims import HeldClaims
from flux_pipeline.builder.outcomes import Outcome
from flux_pipeline.builder.task_groups import WatchedTasks
from flux_pipeline.protocol import FAILED, GenerationRequest
from flux_pipeline.quality.facts import DEFAULT_BLANK_LUMA_STD
from flux_pipeline.segmind import EngineConfig
from flux_pipeline.store.ledger import Ledger, LedgerEntry
from flux_pipeline.store.storage import ObjectStore

__all__ = ["RangeState", "Sent", "Tally"]


@dataclass
class Tally:
    """Rows known so far, over the whole range (for progress)."""

    total: int
    done: int = 0
    failed: int = 0
    cached: int = 0
    generated: int = 0

    def count(self, rows: int, outcome: Outcome, partition: str) -> None:
        self.done += rows
        self.failed += rows if outcome.row.status == FAILED else 0
        self.cached += rows if outcome.partition != partition else 0


@dataclass(slots=True)
class Sent:
    """A request key this run attaches or submits: for which partition, and its outcome."""

    partition: str
    outcome: asyncio.Future[Outcome]
    #: The ledger entry the plan saw (a finished one that differs was written since).
    seen: LedgerEntry | None = None
    #: ``attach``: the request id to poll and when an earlier run submitted it.
    attach_id: str | None = None
    submitted_at: datetime | None = None
    #: An earlier run sent the key's submit at this time and never saw the answer.
    unanswered_at: datetime | None = None
    #: HTTP requests the engine spent on the key's result (0: no result from this engine).
    attempts: int = 0
    #: The outcome came from another run's ledger entry.
    from_other_run: bool = False


@dataclass
class RangeState:
    """One range build's shared state (``lease``: its claims'); use it on the build's loop."""

    ledger: Ledger
    config: EngineConfig
    tally: Tally
    lease: InitVar[float]
    #: ``blank`` is ``luma_std`` below this (FLUX_BLANK_LUMA_STD).
    blank_luma_std: float = DEFAULT_BLANK_LUMA_STD
    started: float = field(default_factory=time.monotonic)
    tasks: WatchedTasks = field(default_factory=WatchedTasks)
    #: Keys attached or submitted by this run, by request key, until their partition is
    #: done (then only those with no final outcome stay, for later partitions to share).
    sent: dict[str, Sent] = field(default_factory=dict)
    #: Requests of the batches being fed, not yet handed to the engine, in order.
    queues: list[deque[GenerationRequest]] = field(default_factory=list)
    #: Keys another live run holds, waited on by :class:`~flux_pipeline.builder.waiting.Waiting`.
    waiting: dict[str, GenerationRequest] = field(default_factory=dict)
    #: Set when keys join ``waiting`` (their first look comes ``WAIT_POLL`` s later).
    joined: asyncio.Event = field(default_factory=asyncio.Event)
    #: Keys whose claim this run holds and has not let go.
    held: HeldClaims = field(init=False)

    def __post_init__(self, lease: float) -> None:
        self.held = HeldClaims(self.store, lease=lease, upcoming=self.upcoming)

    @property
    def store(self) -> ObjectStore:
        return self.ledger.store

    def wait_on(self, request: GenerationRequest) -> None:
        """Wait for another run's outcome of ``request``'s key instead of sending it."""
        self.waiting[request.request_key] = request
        self.joined.set()

    def upcoming(self) -> list[str]:
        """The held keys next in line in each batch being fed: one window's worth of each."""
        return [
            request.request_key
            for queue in self.queues
            for request in itertools.islice(queue, self.config.max_concurrency)
            if request.request_key in self.held
        ]
