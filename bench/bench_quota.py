"""Images per minute under an account quota of Q = 60 API requests per minute, per mode.

Time is scaled: the emulator's quota window is ``WINDOW`` seconds instead of 60 (its
``--quota-window``), so one "minute" passes every ``WINDOW`` s and the client's
``requests_per_minute`` is Q in those units (Q x 60 / WINDOW in real minutes). The service
(16 workers x 4 steps x 0.05 s, 80 images/s) is far faster than the quota: the quota binds.

For each of ``async``, ``sync`` and ``auto``, and a quota counting ``all`` API requests or only
``submits`` (v2 submits and v1 POSTs): images per (scaled) minute, as a ratio of
Q / (least API requests per image the quota can count: 1, a v1 POST), and the share of API
requests answered 429. The last rows leave ``requests_per_minute`` unset: the engine only
learns the quota from its 429s (AIMD), which is what happens when a user does not set it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from bench.support import KEY, emulator
from flux_pipeline.protocol import GenerationRequest
from flux_pipeline.segmind import EngineConfig, EngineStats, SegmindEngine

QUOTA = 60
#: Seconds of the emulator's scaled "minute".
WINDOW = 6.0
WORKERS, STEPS, STEP_TIME = 16, 4, 0.05
IMAGES = 240
#: v1 sync costs one request per image, whatever the quota counts.
LEAST_REQUESTS_PER_IMAGE = 1.0
TARGETS = {"vs_best": 0.9, "share_429": 0.01}


@dataclass(frozen=True)
class Case:
    mode: str
    counts: str
    paced: bool = True

    @property
    def name(self) -> str:
        pace = "" if self.paced else ", no requests_per_minute"
        return f"{self.mode} (quota counts {self.counts}{pace})"


@dataclass(frozen=True)
class Outcome:
    case: Case
    completed: int
    wall: float
    counted: int
    refused: int
    api_requests: int
    stats: EngineStats

    @property
    def per_minute(self) -> float:
        """Images per scaled minute."""
        return self.completed / self.wall * WINDOW

    @property
    def vs_best(self) -> float:
        return self.per_minute / (QUOTA / LEAST_REQUESTS_PER_IMAGE)

    @property
    def share_429(self) -> float:
        return self.refused / max(1, self.api_requests)


def _requests() -> Iterator[GenerationRequest]:
    for i in range(IMAGES):
        yield GenerationRequest(key=f"q{i}", prompt=f"quota image {i}", seed=i, steps=STEPS)


def run_case(case: Case) -> Outcome:
    flags: dict[str, Any] = {
        "quota_per_minute": QUOTA,
        "quota_counts": case.counts,
        "quota_window": WINDOW,
    }
    with emulator(workers=WORKERS, step_time=STEP_TIME, **flags) as url:
        config = EngineConfig(
            api_key=KEY,
            base_url=url,
            mode=case.mode,  # type: ignore[arg-type]
            requests_per_minute=QUOTA * 60 / WINDOW if case.paced else None,
        )

        async def drive() -> tuple[int, float, EngineStats]:
            completed = 0
            async with SegmindEngine(config) as engine:
                start = time.perf_counter()
                async for result in engine.generate(_requests()):
                    completed += result.status == "COMPLETED"
                return completed, time.perf_counter() - start, engine.stats

        completed, wall, stats = asyncio.run(drive())
        served = httpx.get(f"{url}/_emulator/stats").json()
    requests = served["requests"]
    kinds = (
        ("submit", "sync") if case.counts == "submits" else ("submit", "status", "result", "sync")
    )
    refused = sum(served["quota"]["refused"].values())
    return Outcome(
        case=case,
        completed=completed,
        wall=wall,
        counted=sum(requests[kind] for kind in kinds) - refused,
        refused=refused,
        api_requests=sum(n for kind, n in requests.items() if kind != "output"),
        stats=stats,
    )


def table(outcomes: list[Outcome]) -> str:
    lines = [
        "| mode | images | images/min | vs Q / least req/image | counted req/image "
        "| 429 share | mode used (switches) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in outcomes:
        lines.append(
            f"| {row.case.name} | {row.completed}/{IMAGES} | {row.per_minute:.1f} | "
            f"{row.vs_best:.3f} | {row.counted / max(1, row.completed):.2f} | "
            f"{100 * row.share_429:.2f} % | {row.stats.mode_used} ({row.stats.mode_switches}) |"
        )
    lines += [
        "",
        f"Q = {QUOTA} API requests per minute (one minute = {WINDOW:g} s here), least requests "
        f"per image {LEAST_REQUESTS_PER_IMAGE:g} (a v1 POST): the best is {QUOTA} images/min. "
        f"Targets for auto: >= {TARGETS['vs_best']} of it, <= "
        f"{100 * TARGETS['share_429']:g} % answered 429.",
    ]
    return "\n".join(lines)


def main() -> None:
    cases = [
        Case(mode, counts) for counts in ("all", "submits") for mode in ("async", "sync", "auto")
    ]
    cases += [Case("auto", counts, paced=False) for counts in ("all", "submits")]
    outcomes = []
    for case in cases:
        outcomes.append(run_case(case))
        print(f"  {case.name}: done", flush=True)
    print(
        f"{IMAGES} images per run, emulator with {WORKERS} workers x {STEPS} steps x "
        f"{STEP_TIME} s (capacity far above the quota)\n",
        flush=True,
    )
    print(table(outcomes), flush=True)


if __name__ == "__main__":
    main()
