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

The engine runs with its default settings (``EngineConfig(api_key, base_url)``). Then the same
defaults through Dagster, as a user runs it: ``dagster asset materialize`` in a subprocess
(temporary DAGSTER_HOME, SEGMIND_BASE_URL at an emulator subprocess with 16 workers x 4 steps
x 0.275 s = 1.1 s per image, no run config) on a 320-prompt table, vs the SDK in 16 threads on
the same emulator settings. Its images/s is taken from the lineage (first ``submitted_at`` to
last ``completed_at``: the build itself) and from the whole step's process (Dagster's start-up
included).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pandas as pd

from bench.support import KEY, api_requests, emulator
from flux_pipeline.protocol import MODEL, GenerationRequest
from flux_pipeline.segmind import EngineConfig, SegmindEngine
from flux_pipeline.store.layout import partition_dir

WORKERS = 16
STEPS = 4
STEP_TIME = 0.25
IMAGES = 160
SDK_THREADS = 16
#: In flight in bench_build (the engine's default, 2 x the workers here).
CONCURRENCY = 32
TARGETS = {"vs_limit": 0.95, "vs_sdk": 1.5, "requests_per_image": 3.5}
#: The Dagster run: 1.1 s per image (limit 14.5 images/s), a 320-prompt table.
DAGSTER_STEP_TIME = 0.275
DAGSTER_PROMPTS = 320
DAGSTER_TARGETS = {"vs_limit": 0.9, "vs_sdk": 1.5, "requests_per_image": 3.5}
PARTITION = "2026-01-01"


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


def _requests(images: int = IMAGES) -> Iterator[GenerationRequest]:
    for i in range(images):
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
    """Our engine with its default settings: submit, poll, result and download per image."""
    config = EngineConfig(api_key=KEY, base_url=url)

    async def drive() -> list[tuple[float, float]]:
        finished: list[tuple[float, float]] = []
        async with SegmindEngine(config) as engine:
            async for result in engine.generate(_requests()):
                if result.status == "COMPLETED" and result.inference_time is not None:
                    finished.append((time.perf_counter(), result.inference_time))
        return finished

    return asyncio.run(drive())


def run_sdk(url: str, images: int = IMAGES) -> list[tuple[float, float]]:
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
        times = [t for t in pool.map(one, _requests(images)) if t is not None]
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


@dataclass(frozen=True)
class DagsterOutcome:
    completed: int
    build_wall: float
    step_wall: float
    api_requests: int
    service_time: float
    mode_used: str

    @property
    def limit(self) -> float:
        return WORKERS / self.service_time


def _prompt_table(path: Path) -> None:
    rows = [
        {"prompt_id": f"p{i:04d}", "prompt": f"defaults benchmark image {i}", "seed": i,
         "steps": STEPS, "aspect_ratio": "1:1"}
        for i in range(DAGSTER_PROMPTS)
    ]  # fmt: skip
    pd.DataFrame(rows).to_csv(path, index=False)


def run_dagster_defaults(url: str) -> DagsterOutcome:
    """``dagster asset materialize`` of one partition, no run config: the defaults as shipped."""
    dagster = Path(sys.executable).with_name("dagster")
    with tempfile.TemporaryDirectory(prefix="flux-bench-") as tmp:
        root, home = Path(tmp) / "data", Path(tmp) / "home"
        home.mkdir()
        _prompt_table(Path(tmp) / "prompts.csv")
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "FLUX_STORAGE_ROOT": str(root),
            "FLUX_PROMPTS": str(Path(tmp) / "prompts.csv"),
            "SEGMIND_API_KEY": KEY,
            "SEGMIND_BASE_URL": url,
        }
        base = [str(dagster), "asset", "materialize", "-m", "flux_pipeline.definitions"]
        steps = (
            ["--select", "prompt_table"],
            ["--select", "generated_images", "--partition", PARTITION],
        )
        for step in steps:
            start = time.perf_counter()
            run = subprocess.run(
                [*base, *step], cwd=tmp, env=env, capture_output=True, text=True, check=False
            )
            if run.returncode != 0:
                raise RuntimeError(f"dagster asset materialize failed:\n{run.stderr[-3000:]}")
            step_wall = time.perf_counter() - start
        lineage = pd.read_parquet(root / partition_dir(PARTITION))
    served = httpx.get(f"{url}/_emulator/stats").json()["requests"]
    protocols = [name for name, kind in (("async", "submit"), ("sync", "sync")) if served[kind]]
    done = lineage[lineage["status"] == "COMPLETED"]
    span = (done["completed_at"].max() - done["submitted_at"].min()).total_seconds()
    return DagsterOutcome(
        completed=len(done),
        build_wall=span,
        step_wall=step_wall,
        api_requests=api_requests(url),
        service_time=float(done["inference_time"].mean()),
        mode_used="+".join(protocols),
    )


def dagster_table(dagster: DagsterOutcome, sdk: Outcome) -> str:
    build_rate = dagster.completed / dagster.build_wall
    step_rate = dagster.completed / dagster.step_wall
    lines = [
        "| client | images | images/s | vs limit | vs SDK | API requests/image |",
        "|---|---|---|---|---|---|",
        f"| Dagster, default settings ({dagster.mode_used}): the build "
        f"(lineage span {dagster.build_wall:.1f} s) | "
        f"{dagster.completed}/{DAGSTER_PROMPTS} | {build_rate:.2f} | "
        f"{build_rate / dagster.limit:.3f} | {build_rate / sdk.rate:.2f}x | "
        f"{dagster.api_requests / max(1, dagster.completed):.2f} |",
        f"| Dagster, default settings: the whole step process ({dagster.step_wall:.1f} s) | "
        f"{dagster.completed}/{DAGSTER_PROMPTS} | {step_rate:.2f} | "
        f"{step_rate / dagster.limit:.3f} | {step_rate / sdk.rate:.2f}x | |",
        f"| segmind SDK 1.3.0 ({SDK_THREADS} threads) | {sdk.completed}/{DAGSTER_PROMPTS} | "
        f"{sdk.rate:.2f} | {sdk.rate / sdk.limit:.3f} | 1.00x | "
        f"{sdk.api_requests / max(1, sdk.completed):.2f} |",
        "",
        f"limit = {WORKERS} workers / {dagster.service_time:.3f} s mean inference_time = "
        f"{dagster.limit:.2f} images/s (targets: >= {DAGSTER_TARGETS['vs_limit']} of the limit, "
        f">= {DAGSTER_TARGETS['vs_sdk']}x the SDK, <= {DAGSTER_TARGETS['requests_per_image']} "
        "API requests/image)",
    ]
    return "\n".join(lines)


def main() -> None:
    with emulator(workers=WORKERS, step_time=STEP_TIME) as url:
        engine = _measure("flux-pipeline engine (default settings)", url, lambda: run_engine(url))
    with emulator(workers=WORKERS, step_time=STEP_TIME) as url:
        sdk = _measure(f"segmind SDK 1.3.0 ({SDK_THREADS} threads)", url, lambda: run_sdk(url))
    print(
        f"{IMAGES} images, emulator with {WORKERS} workers x {STEPS} steps x {STEP_TIME} s\n",
        flush=True,
    )
    print(table(engine, sdk), flush=True)
    with emulator(workers=WORKERS, step_time=DAGSTER_STEP_TIME) as url:
        dagster = run_dagster_defaults(url)
    with emulator(workers=WORKERS, step_time=DAGSTER_STEP_TIME) as url:
        sdk = _measure(
            f"segmind SDK 1.3.0 ({SDK_THREADS} threads)",
            url,
            lambda: run_sdk(url, DAGSTER_PROMPTS),
        )
    print(
        f"\nThrough Dagster with no run config: {DAGSTER_PROMPTS} prompts, emulator with "
        f"{WORKERS} workers x {STEPS} steps x {DAGSTER_STEP_TIME} s\n",
        flush=True,
    )
    print(dagster_table(dagster, sdk), flush=True)


if __name__ == "__main__":
    main()
