"""Status polls per second the emulator sustains while 16 workers render.

The emulator runs in this process (``run_emulator``, as the pipeline embeds it) with 16 workers
at 0.3 s per step (4 steps, ~1.2 s per image). A separate client process submits a steady
stream of jobs (enough to keep every slot busy) and polls their status URLs from many
threads, each with its own keep-alive connection, for a bounded time and count.
"""

from __future__ import annotations

import multiprocessing
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
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


class _Load:
    """One client process: a submitter and pollers, each a thread with its own connection.

    Synchronous httpx clients in threads cost less CPU per request than one asyncio client
    juggling many connections, so more of the machine is left to the server under test.
    """

    def __init__(self, url: str, duration: float, submit_rate: float, part: int) -> None:
        self.url, self.submit_rate, self.part = url, submit_rate, part
        self.start = time.perf_counter()
        self.stop_at = self.start + duration
        self.polls_allowed = MAX_POLLS // CLIENT_PROCESSES
        self.active: list[str] = []
        self.lock = threading.Lock()
        self.polls = self.errors = self.submits = self.completed = 0

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"x-api-key": KEY}, timeout=30)

    def submitter(self) -> None:
        with self.client() as http:
            index = 0
            while time.perf_counter() < self.stop_at:
                body = {"prompt": f"benchmark image {self.part}-{index}", "seed": index}
                response = http.post("/v2/fast-flux-schnell", json={**body, "steps": STEPS})
                if response.status_code == 200:
                    with self.lock:
                        self.active.append(response.json()["status_url"])
                        self.submits += 1
                index += 1
                pause = self.start + index / self.submit_rate - time.perf_counter()
                time.sleep(max(0.0, pause))

    def poller(self, offset: int) -> list[float]:
        latencies: list[float] = []
        turn = offset
        with self.client() as http:
            while time.perf_counter() < self.stop_at and self.polls < self.polls_allowed:
                with self.lock:
                    status_url = self.active[turn % len(self.active)] if self.active else None
                if status_url is None:
                    time.sleep(0.01)
                    continue
                turn += 1
                sent = time.perf_counter()
                response = http.get(status_url)
                latencies.append((time.perf_counter() - sent) * 1000)
                with self.lock:
                    self.polls += 1
                    if response.status_code != 200:
                        self.errors += 1
                    elif response.json()["status"] == "COMPLETED" and status_url in self.active:
                        self.active.remove(status_url)
                        self.completed += 1
        return latencies

    def run(self) -> LoadResult:
        pollers = POLLERS // CLIENT_PROCESSES
        with ThreadPoolExecutor(pollers + 1) as threads:
            submitting = threads.submit(self.submitter)
            latencies = [ms for part in threads.map(self.poller, range(pollers)) for ms in part]
            submitting.result()
        return LoadResult(
            polls=self.polls,
            poll_errors=self.errors,
            submits=self.submits,
            completed_seen=self.completed,
            elapsed=time.perf_counter() - self.start,
            latencies_ms=latencies,
        )


def _client_process(url: str, duration: float, submit_rate: float, part: int) -> LoadResult:
    return _Load(url, duration, submit_rate / CLIENT_PROCESSES, part).run()


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
