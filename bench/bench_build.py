"""The partition build end to end: throughput, reuse, memory, and S3, in one run.

``build_partition`` streams engine -> object storage -> ledger -> lineage. Everything here
runs against ``flux-pipeline emulator`` in a subprocess (16 workers, 4 steps x 0.25 s,
~1 s per image), with the engine settings of ``bench_engine`` (32 in flight), so the
figures are ratios taken together on the same machine at the same time:

1. throughput: a generated 160-prompt table (mixed aspect ratios, pinned seeds) built into a
   local root. images/s vs the service limit (workers / mean reported ``inference_time``),
   API requests per image (the emulator's ``/_emulator/stats``), and the build's overhead
   over the bare engine: ``SegmindEngine`` alone on the same prompts with other seeds, once
   before the build and once after it (the first timed run on a fresh emulator is a few
   percent slower; bracketing cancels that and any drift), compared with their mean;
2. re-materialization: the same partition again, served by the ledger (0 API requests);
3. a second partition with the same pinned seeds: the cross-partition copy path (0 requests);
4. memory: builds of 80 and 320 prompts, each in a child process of its own against a fast
   emulator (0.01 s per step), peak RSS from ``VmHWM`` (reset with ``/proc/self/clear_refs``
   once imported, so only the build counts; ``ru_maxrss`` would carry the parent's peak
   across fork and exec). The build holds no image bytes beyond those in flight, only one
   lineage row per prompt (the lineage file is written once, at the end), so the peaks should
   nearly match (ratio ~1.0) and the growth per 100 images is what those rows cost;
5. the throughput build again on an S3 root (moto's ``ThreadedMotoServer`` in a subprocess on
   loopback): S3 vs local.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import httpx

from bench.bench_engine import CONCURRENCY, STEP_TIME, STEPS, WORKERS
from bench.support import KEY, api_requests, emulator, free_port
from flux_pipeline.builder import BuildReport, build_partition
from flux_pipeline.prompts import load_prompt_table, partition_requests
from flux_pipeline.protocol import ASPECT_RATIOS, COMPLETED, GenerationRequest
from flux_pipeline.segmind import EngineConfig, SegmindEngine
from flux_pipeline.store.lineage import read_lineage
from flux_pipeline.store.storage import ObjectStore

PROMPTS = 160
MEMORY_SIZES = (80, 320)
FAST_STEP_TIME = 0.01
FIRST, SECOND = "2026-01-01", "2026-01-02"
#: Seeds of the bare-engine batches: far from the table's, so none is a cached request.
ENGINE_SEED_OFFSET = 1_000_000
BUCKET = "flux-bench"
REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Phase:
    name: str
    images: int
    wall: float
    api_requests: int
    cached: int = 0
    service_time: float = float("nan")

    @property
    def rate(self) -> float:
        return self.images / self.wall

    @property
    def limit(self) -> float:
        return WORKERS / self.service_time


@dataclass(frozen=True)
class Memory:
    prompts: int
    before_mb: float
    peak_mb: float
    wall: float


def engine_config(url: str) -> EngineConfig:
    return EngineConfig(
        api_key=KEY, base_url=url, max_concurrency=CONCURRENCY, requests_per_minute=12_000.0
    )


def prompt_requests(count: int, directory: str, partition: str) -> list[GenerationRequest]:
    """A generated CSV prompt table (pinned seeds, every aspect ratio in turn), loaded and
    validated as the pipeline does, then turned into the partition's requests."""
    ratios = list(ASPECT_RATIOS)
    path = Path(directory) / f"prompts-{count}.csv"
    lines = ["prompt_id,prompt,seed,steps,aspect_ratio"]
    lines += [
        f"p{i:04d},a lighthouse at dusk number {i},{i},{STEPS},{ratios[i % len(ratios)]}"
        for i in range(count)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return partition_requests(load_prompt_table(str(path)), partition)


def reseeded(requests: list[GenerationRequest], batch: int) -> list[GenerationRequest]:
    """The same prompts with seeds of their own, for a bare-engine batch."""
    return [replace(r, seed=r.seed + batch * ENGINE_SEED_OFFSET) for r in requests]


def timed_build(
    name: str, url: str, requests: list[GenerationRequest], store: ObjectStore, partition: str
) -> tuple[Phase, BuildReport]:
    before = api_requests(url)
    start = time.perf_counter()
    report = build_partition(
        requests, partition=partition, store=store, engine_config=engine_config(url)
    )
    wall = time.perf_counter() - start
    if report.completed != len(requests):
        raise RuntimeError(f"{name}: {report.completed}/{len(requests)} images completed")
    lineage = read_lineage(store)
    times = lineage.loc[lineage["partition"] == partition, "inference_time"].dropna()
    phase = Phase(
        name=name,
        images=report.completed,
        wall=wall,
        api_requests=api_requests(url) - before,
        cached=report.cached,
        service_time=float(times.mean()) if len(times) else float("nan"),
    )
    return phase, report


def timed_engine(name: str, url: str, requests: list[GenerationRequest]) -> Phase:
    """The bare engine over ``requests``: images downloaded and dropped, nothing stored."""

    async def drive() -> list[float]:
        times: list[float] = []
        async with SegmindEngine(engine_config(url)) as engine:
            async for result in engine.generate(requests):
                if result.status == COMPLETED and result.inference_time is not None:
                    times.append(result.inference_time)
        return times

    before = api_requests(url)
    start = time.perf_counter()
    times = asyncio.run(drive())
    wall = time.perf_counter() - start
    return Phase(
        name=name,
        images=len(times),
        wall=wall,
        api_requests=api_requests(url) - before,
        service_time=statistics.fmean(times) if times else float("nan"),
    )


def _proc_status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def measure_rss(argv: list[str]) -> None:
    """Child process: build ``count`` prompts into ``root``; print its memory as JSON."""
    url, count, root = argv[0], int(argv[1]), argv[2]
    requests = prompt_requests(count, root, FIRST)
    store = ObjectStore.from_uri(f"{root}/store")
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
    before = _proc_status_mb("VmRSS")
    start = time.perf_counter()
    report = build_partition(
        requests, partition=FIRST, store=store, engine_config=engine_config(url)
    )
    wall = time.perf_counter() - start
    if report.completed != count:
        raise RuntimeError(f"{report.completed}/{count} images completed")
    print(json.dumps({"before": before, "peak": _proc_status_mb("VmHWM"), "wall": wall}))


def memory_of_build(url: str, count: int) -> Memory:
    # Tuned as the shipped entry points tune a process, before the build imports pyarrow.
    code = (
        "import sys; from flux_pipeline import native_memory; native_memory.tune(); "
        "from bench.bench_build import measure_rss; measure_rss(sys.argv[1:])"
    )
    with tempfile.TemporaryDirectory() as root:
        done = subprocess.run(
            [sys.executable, "-c", code, url, str(count), root],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    figures = json.loads(done.stdout.splitlines()[-1])
    return Memory(count, figures["before"], figures["peak"], figures["wall"])


def _wait_until(ready: Callable[[], bool], process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while not ready():
        if time.monotonic() > deadline or process.poll() is not None:
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.1)


@contextlib.contextmanager
def s3_server() -> Iterator[str]:
    """moto's ``ThreadedMotoServer`` in a subprocess (its CPU kept out of the build's process),
    with the AWS variables pointing at it; yields the endpoint URL."""
    port = free_port()
    code = (
        "import logging, threading; from moto.server import ThreadedMotoServer; "
        "logging.getLogger('werkzeug').setLevel(logging.ERROR); "
        f"ThreadedMotoServer(ip_address='127.0.0.1', port={port}, verbose=False).start(); "
        "threading.Event().wait()"
    )
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    variables = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {name: os.environ.get(name) for name in variables}
    try:

        def answers() -> bool:
            with contextlib.suppress(httpx.TransportError):
                return httpx.get(endpoint, timeout=1).status_code < 500
            return False

        _wait_until(answers, process, "the moto server")
        os.environ.update(variables)
        yield endpoint
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        process.terminate()
        process.wait(timeout=10)


def s3_build(url: str, requests: list[GenerationRequest]) -> Phase:
    with s3_server():
        store = ObjectStore.from_uri(f"s3://{BUCKET}/root")
        store.fs.mkdir(BUCKET)
        phase, _ = timed_build("build, S3 root (moto)", url, requests, store, FIRST)
    return phase


def table(phases: list[Phase], memory: list[Memory]) -> str:
    lines = [
        "| phase | images | cached | wall s | images/s | vs limit | API requests "
        "| API requests/image |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in phases:
        vs_limit = f"{row.rate / row.limit:.3f}" if row.api_requests else "-"
        lines.append(
            f"| {row.name} | {row.images} | {row.cached} | {row.wall:.2f} | {row.rate:.1f} | "
            f"{vs_limit} | {row.api_requests} | {row.api_requests / max(1, row.images):.2f} |"
        )
    lines += [
        "",
        f"| memory: prompts (emulator {FAST_STEP_TIME} s/step) | RSS before build MB "
        "| peak RSS MB | build wall s |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {m.prompts} | {m.before_mb:.1f} | {m.peak_mb:.1f} | {m.wall:.2f} |" for m in memory
    ]
    return "\n".join(lines)


def main() -> None:
    started = time.perf_counter()
    service = emulator(workers=WORKERS, step_time=STEP_TIME)
    with tempfile.TemporaryDirectory() as tmp, service as url:
        requests = prompt_requests(PROMPTS, tmp, FIRST)
        timed_engine("warm-up", url, reseeded(requests[:WORKERS], 1))  # not counted
        store = ObjectStore.from_uri(f"{tmp}/store")
        before = timed_engine("bare SegmindEngine, before", url, reseeded(requests, 2))
        build, _ = timed_build("build, local root", url, requests, store, FIRST)
        after = timed_engine("bare SegmindEngine, after", url, reseeded(requests, 3))
        again, _ = timed_build("re-materialize (same partition)", url, requests, store, FIRST)
        second = partition_requests(load_prompt_table(f"{tmp}/prompts-{PROMPTS}.csv"), SECOND)
        copy, _ = timed_build("second partition (copies)", url, second, store, SECOND)
        with emulator(workers=WORKERS, step_time=FAST_STEP_TIME) as fast_url:
            memory = [memory_of_build(fast_url, n) for n in MEMORY_SIZES]
        s3 = s3_build(url, requests)
    phases = [before, build, after, again, copy, s3]
    engine_rate = statistics.fmean([before.rate, after.rate])
    small, large = memory
    peak_ratio = large.peak_mb / small.peak_mb
    growth = (large.peak_mb - small.peak_mb) / ((large.prompts - small.prompts) / 100)
    print(
        f"{PROMPTS} prompts x {STEPS} steps, mixed aspect ratios; emulator subprocess with "
        f"{WORKERS} workers x {STEP_TIME} s/step; engine {CONCURRENCY} in flight\n",
        flush=True,
    )
    print(table(phases, memory), flush=True)
    print(
        f"\nlimit = {WORKERS} workers / {build.service_time:.3f} s mean inference_time = "
        f"{build.limit:.2f} images/s; build vs bare engine (mean of before and after, "
        f"{engine_rate:.2f} images/s): {build.rate / engine_rate:.3f}; "
        f"S3 vs local: {s3.rate / build.rate:.3f}; peak RSS {large.prompts} vs "
        f"{small.prompts} prompts: {peak_ratio:.3f} ({growth:+.2f} MB per 100 images); "
        f"total wall {time.perf_counter() - started:.0f} s",
        flush=True,
    )
    results = {
        "build_images_per_second": f"{build.rate:.2f}",
        "build_vs_limit": f"{build.rate / build.limit:.3f}",
        "build_vs_engine": f"{build.rate / engine_rate:.3f}",
        "build_api_requests_per_image": f"{build.api_requests / build.images:.2f}",
        "rematerialize_seconds": f"{again.wall:.2f}",
        "rematerialize_api_requests": str(again.api_requests),
        "rematerialize_images_per_second": f"{again.rate:.0f}",
        "cross_partition_seconds": f"{copy.wall:.2f}",
        "cross_partition_api_requests": str(copy.api_requests),
        "rss_peak_ratio": f"{peak_ratio:.3f}",
        "rss_growth_mb_per_100_images": f"{growth:.2f}",
        "s3_vs_local": f"{s3.rate / build.rate:.3f}",
    }
    for name, value in results.items():
        print(f"RESULT {name}={value}", flush=True)


if __name__ == "__main__":
    main()
