"""The engine against the emulator: throughput vs the service's limit and vs Segmind's SDK.

One emulator per run, in a subprocess (so this process's CPU time is the client's alone):
16 workers, 4 steps x 0.25 s (~1 s per image), 160 images (ten full rounds of the workers).

- images/s vs the limit: workers / mean service time (the reported ``inference_time``),
  over the whole batch (ramp-up and tail included) and sustained (between the first and the
  last round of results: the rate a long partition runs at);
- vs Segmind's SDK: ``segmind.SegmindClient.run`` in 16 threads, each also downloading the
  output URL, as our engine does;
- API requests per image: ``/_emulator/stats`` (submit + status + result + sync; media
  downloads are the CDN's, counted apart);
- client CPU per image: ``time.process_time`` over the run.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx

from bench.support import KEY, api_requests, emulator
from flux_pipeline.protocol import MODEL, GenerationRequest
from flux_pipeline.segmind import EngineConfig, SegmindEngine

WORKERS = 16
STEPS = 4
STEP_TIME = 0.25
IMAGES = 160
SDK_THREADS = 16
#: In flight: 2 x the workers, so the service's queue never runs dry while we poll.
CONCURRENCY = 32
TARGETS = {"vs_limit": 0.95, "vs_sdk": 1.5, "requests_per_image": 3.5}


@dataclass(frozen=True)
class Outcome:
    client: str
    completed: int
    wall: float
    sustained: float
    cpu: float
    api_requests: int
    service_time: float

    @property
    def rate(self) -> float:
        return self.completed / self.wall

    @property
    def limit(self) -> float:
        return WORKERS / self.service_time


def _requests() -> Iterator[GenerationRequest]:
    for i in range(IMAGES):
        yield GenerationRequest(key=f"b{i}", prompt=f"benchmark image {i}", seed=i, steps=STEPS)


def _measure(client: str, url: str, work: Callable[[], list[tuple[float, float]]]) -> Outcome:
    """Run ``work`` (returns (finish clock, inference_time) per completed image) and count."""
    cpu, start = time.process_time(), time.perf_counter()
    finished = work()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    clocks = sorted(clock for clock, _ in finished)
    first, last = WORKERS - 1, len(clocks) - WORKERS  # skip the first and the last round
    sustained = (last - first) / (clocks[last] - clocks[first]) if last > first else float("nan")
    inference_times = [t for _, t in finished]
    return Outcome(
        client=client,
        completed=len(inference_times),
        wall=wall,
        sustained=sustained,
        cpu=cpu,
        api_requests=api_requests(url),
        service_time=statistics.fmean(inference_times) if inference_times else float("nan"),
    )


def run_engine(url: str) -> list[tuple[float, float]]:
    """Our engine: every image through submit, poll, result and download."""
    config = EngineConfig(
        api_key=KEY,
        base_url=url,
        max_concurrency=CONCURRENCY,
        max_requests_per_second=200.0,
    )

    async def drive() -> list[tuple[float, float]]:
        finished: list[tuple[float, float]] = []
        async with SegmindEngine(config) as engine:
            async for result in engine.generate(_requests()):
                if result.status == "COMPLETED" and result.inference_time is not None:
                    finished.append((time.perf_counter(), result.inference_time))
        return finished

    return asyncio.run(drive())


def run_sdk(url: str) -> list[tuple[float, float]]:
    """Segmind's SDK as documented: ``client.run`` per image, 16 threads, then the download."""
    from segmind import SegmindClient  # the dev extra pins segmind==1.3.0

    sdk = SegmindClient(api_key=KEY, base_url=f"{url}/v1")
    http = httpx.Client()

    def one(request: GenerationRequest) -> tuple[float, float] | None:
        try:
            body: dict[str, Any] = sdk.run(MODEL, **request.payload())
            http.get(body["output"]).raise_for_status()
        except Exception:  # the SDK has no retries: a failure is a lost image
            return None
        return time.perf_counter(), float(body["metrics"]["inference_time"])

    with ThreadPoolExecutor(SDK_THREADS) as pool:
        times = [t for t in pool.map(one, _requests()) if t is not None]
    http.close()
    return times


def table(engine: Outcome, sdk: Outcome) -> str:
    lines = [
        "| client | images | wall s | images/s | vs limit | sustained images/s | vs limit "
        "| API requests/image | client CPU ms/image |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in (engine, sdk):
        lines.append(
            f"| {row.client} | {row.completed}/{IMAGES} | {row.wall:.1f} | {row.rate:.2f} | "
            f"{row.rate / row.limit:.3f} | {row.sustained:.2f} | {row.sustained / row.limit:.3f} | "
            f"{row.api_requests / max(1, row.completed):.2f} | "
            f"{1000 * row.cpu / max(1, row.completed):.1f} |"
        )
    lines += [
        "",
        f"limit = {WORKERS} workers / {engine.service_time:.3f} s mean inference_time = "
        f"{engine.limit:.2f} images/s; engine vs SDK: {engine.rate / sdk.rate:.2f}x whole batch, "
        f"{engine.sustained / sdk.sustained:.2f}x sustained "
        f"(targets: >= {TARGETS['vs_limit']} of the limit, >= {TARGETS['vs_sdk']}x the SDK, "
        f"<= {TARGETS['requests_per_image']} API requests/image)",
    ]
    return "\n".join(lines)


def main() -> None:
    with emulator(workers=WORKERS, step_time=STEP_TIME) as url:
        engine = _measure(
            f"flux-pipeline engine ({CONCURRENCY} in flight)", url, lambda: run_engine(url)
        )
    with emulator(workers=WORKERS, step_time=STEP_TIME) as url:
        sdk = _measure(f"segmind SDK 1.3.0 ({SDK_THREADS} threads)", url, lambda: run_sdk(url))
    print(
        f"{IMAGES} images, emulator with {WORKERS} workers x {STEPS} steps x {STEP_TIME} s\n",
        flush=True,
    )
    print(table(engine, sdk), flush=True)


if __name__ == "__main__":
    main()
