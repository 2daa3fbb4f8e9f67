"""Status polls per second the emulator sustains while 16 workers render.

The emulator runs in this process (``run_emulator``, as the pipeline embeds it) with 16 workers
at 0.3 s per step (4 steps, ~1.2 s per image). A separate client process submits a steady
stream of jobs (enough to keep every slot busy) and polls their status URLs from many
concurrent asyncio tasks over keep-alive connections, for a bounded time and count.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import statistics
import time
from dataclasses import dataclass

import httpx

from flux_pipeline.emulator import EmulatorSettings, run_emulator

KEY = "SG_0123456789abcdef"
WORKERS = 16
STEP_TIME = 0.3
STEPS = 4
#: Submits per second: a bit above the 16 / 1.2 s the slots can serve, so none idles.
SUBMIT_RATE = 15.0
POLLERS = 16
#: Load-generator processes sharing submits and pollers. httpx costs more CPU per request
#: than the server does; on 2 cores a second client process only steals the server's core.
CLIENT_PROCESSES = 1
DURATION = 10.0
MAX_POLLS = 100_000
TARGET = 500.0


@dataclass(frozen=True)
class LoadResult:
    polls: int
    poll_errors: int
    submits: int
    completed_seen: int
    elapsed: float
    latencies_ms: list[float]


async def _load(url: str, duration: float, submit_rate: float, part: int) -> LoadResult:
    """Submit at ``submit_rate``/s, poll live jobs from many tasks with one connection each.

    Each poller owns its client: one shared httpx pool serialises 16 concurrent requests on
    its own bookkeeping and would measure the client rather than the server.
    """
    pollers = POLLERS // CLIENT_PROCESSES
    polls_allowed = MAX_POLLS // CLIENT_PROCESSES
    active: list[str] = []
    latencies: list[float] = []
    counts = {"polls": 0, "errors": 0, "submits": 0, "completed": 0}
    start = time.perf_counter()
    stop_at = start + duration

    def client() -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=url, headers={"x-api-key": KEY}, timeout=30)

    async def submitter() -> None:
        async with client() as http:
            index = 0
            while time.perf_counter() < stop_at:
                body = {"prompt": f"benchmark image {part}-{index}", "seed": index, "steps": STEPS}
                response = await http.post("/v2/fast-flux-schnell", json=body)
                if response.status_code == 200:
                    active.append(response.json()["status_url"])
                    counts["submits"] += 1
                index += 1
                await asyncio.sleep(max(0.0, start + index / submit_rate - time.perf_counter()))

    async def poller(offset: int) -> None:
        turn = offset
        async with client() as http:
            while time.perf_counter() < stop_at and counts["polls"] < polls_allowed:
                if not active:
                    await asyncio.sleep(0.01)
                    continue
                status_url = active[turn % len(active)]
                turn += 1
                sent = time.perf_counter()
                response = await http.get(status_url)
                latencies.append((time.perf_counter() - sent) * 1000)
                counts["polls"] += 1
                if response.status_code != 200:
                    counts["errors"] += 1
                elif response.json()["status"] == "COMPLETED" and status_url in active:
                    active.remove(status_url)
                    counts["completed"] += 1

    await asyncio.gather(submitter(), *(poller(index) for index in range(pollers)))
    return LoadResult(
        polls=counts["polls"],
        poll_errors=counts["errors"],
        submits=counts["submits"],
        completed_seen=counts["completed"],
        elapsed=time.perf_counter() - start,
        latencies_ms=latencies,
    )


def _client_process(url: str, duration: float, submit_rate: float, part: int) -> LoadResult:
    return asyncio.run(_load(url, duration, submit_rate / CLIENT_PROCESSES, part))


def main(submit_rate: float = SUBMIT_RATE, duration: float = DURATION) -> None:
    settings = EmulatorSettings(api_keys=(KEY,), workers=WORKERS, step_time=STEP_TIME)
    with run_emulator(settings) as emu:
        before = emu.stats()
        cpu_before = time.process_time()
        with multiprocessing.get_context("spawn").Pool(CLIENT_PROCESSES) as pool:
            parts = pool.starmap(
                _client_process,
                [(emu.url, duration, submit_rate, part) for part in range(CLIENT_PROCESSES)],
            )
        server_cpu = time.process_time() - cpu_before
        after = emu.stats()

    result = LoadResult(
        polls=sum(part.polls for part in parts),
        poll_errors=sum(part.poll_errors for part in parts),
        submits=sum(part.submits for part in parts),
        completed_seen=sum(part.completed_seen for part in parts),
        elapsed=max(part.elapsed for part in parts),
        latencies_ms=[latency for part in parts for latency in part.latencies_ms],
    )
    served = after["requests"]["status"] - before["requests"]["status"]
    rendered = after["jobs"]["completed"] - before["jobs"]["completed"]
    quantiles = statistics.quantiles(result.latencies_ms, n=100)
    rate = result.polls / result.elapsed
    rows = [
        ("workers x step time x steps", f"{WORKERS} x {STEP_TIME} s x {STEPS}"),
        ("client processes x pollers", f"{CLIENT_PROCESSES} x {POLLERS // CLIENT_PROCESSES}"),
        ("window (s)", f"{result.elapsed:.1f}"),
        ("submits accepted", f"{result.submits}"),
        ("images rendered", f"{rendered} ({rendered / result.elapsed:.1f}/s)"),
        ("status polls (client / server)", f"{result.polls} / {served}"),
        ("poll errors", f"{result.poll_errors}"),
        ("server CPU (cores busy)", f"{server_cpu / result.elapsed:.2f}"),
        ("status polls per server CPU-second", f"{served / server_cpu:.0f}"),
        ("poll latency p50 / p99 (ms)", f"{quantiles[49]:.1f} / {quantiles[98]:.1f}"),
        ("status polls/s", f"{rate:.0f}  (target >= {TARGET:.0f})"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print(f"RESULT emulator_status_polls_per_second={rate:.0f}", flush=True)


if __name__ == "__main__":
    main()
