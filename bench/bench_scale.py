"""What one image costs the client as a run grows: 1k, 10k and 100k images in one run.

Each case is one run of the ``synthetic_build`` job over a partition range, as the README's
shell command runs it (``dagster job execute ... --tags`` with the range; default settings,
Dagster start-up, the prompt table, the checks and ``generation_metrics`` included), against
``flux-pipeline emulator`` in a subprocess with enough slots never to bind (256 x 0.1 s, one
step per image), on a local root and on S3 (moto's server in a subprocess). Reported per case:

- client CPU ms/image: user + system time of the ``dagster`` process and its step process,
  read from ``getrusage(RUSAGE_CHILDREN)`` in a small wrapper process that runs nothing else;
- peak RSS of that process tree (the largest of its processes, same source);
- storage requests per generated image, by verb, as the run's metadata counts them
  (``run_storage_requests``: the build's S3 API calls on S3, their local stand-ins on a folder);
- on S3, also every request the S3 server served during the run (the whole command: the prompt
  table, the build, the checks reading each image back, ``generation_metrics``), counted by the
  server itself (:mod:`bench.counting_s3`);
- images/s over the whole command, start-up included.

``python -m bench scale`` runs every case; ``FLUX_BENCH_SCALE=1k,10k`` picks some (names as in
the table: ``1k``, ``10k``, ``100k``, ``s3-1k``, ``s3-10k``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import httpx

from bench.support import KEY, emulator, free_port

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FIRST_DAY = date(2026, 1, 1)
BUCKET = "flux-bench-scale"
WORKERS, STEP_TIME = 256, 0.1
#: Measures a command's process tree: runs it, prints its children's rusage as JSON.
MEASURE = """
import json, resource, subprocess, sys
run = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
cpu = usage.ru_utime + usage.ru_stime
tail = run.stderr[-3000:]
print(json.dumps({"code": run.returncode, "cpu": cpu, "rss_kb": usage.ru_maxrss, "tail": tail}))
"""


@dataclass(frozen=True)
class Case:
    name: str
    partitions: int
    prompts: int
    s3: bool = False

    @property
    def images(self) -> int:
        return self.partitions * self.prompts


CASES = (
    Case("1k", 1, 1_000),
    Case("10k", 10, 1_000),
    Case("100k", 25, 4_000),
    Case("s3-1k", 1, 1_000, s3=True),
    Case("s3-10k", 10, 1_000, s3=True),
)


@dataclass(frozen=True)
class Outcome:
    case: Case
    cpu_s: float
    rss_mb: float
    wall_s: float
    storage: dict[str, int]
    #: Requests the S3 server served during the run (None: a local root).
    served: dict[str, int] | None = None

    def row(self) -> str:
        served = self._per_image(self.served) if self.served is not None else "-"
        return (
            f"| {self.case.name} | {self.case.partitions} x {self.case.prompts} | "
            f"{1000 * self.cpu_s / self.case.images:.2f} | {self.rss_mb:.0f} | "
            f"{self._per_image(self.storage)} | {served} | {self.case.images / self.wall_s:.1f} |"
        )

    def _per_image(self, counts: dict[str, int]) -> str:
        images = self.case.images
        per_verb = ", ".join(f"{verb} {n / images:.2f}" for verb, n in sorted(counts.items()) if n)
        return f"{sum(counts.values()) / images:.2f} ({per_verb})"


def _table(path: Path, prompts: int) -> None:
    lines = ["prompt_id,prompt,seed,steps,aspect_ratio"]
    lines += [f"p{i:05d},a lighthouse number {i} at dusk,,1,1:1" for i in range(prompts)]
    path.write_text("\n".join(lines) + "\n")


@contextlib.contextmanager
def _moto() -> Iterator[dict[str, str]]:
    """moto's S3 server in a subprocess, counting what it serves (:mod:`bench.counting_s3`);
    yields the AWS variables that reach it."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.counting_s3", str(port)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    try:
        import s3fs

        deadline = time.monotonic() + 30
        while True:
            try:
                s3 = s3fs.S3FileSystem(
                    key="bench",
                    secret="bench",
                    endpoint_url=env["AWS_ENDPOINT_URL"],
                    skip_instance_cache=True,
                )
                s3.mkdir(BUCKET)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield env
    finally:
        server.terminate()
        server.wait(timeout=10)


def _storage_requests(home: Path) -> dict[str, int]:
    """``run_storage_requests`` (or ``storage_requests``) of the newest materialization."""
    with dg.DagsterInstance.from_config(str(home)) as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey("generated_images"))
    if event is None or event.asset_materialization is None:
        raise RuntimeError("no materialization of generated_images was recorded")
    metadata = event.asset_materialization.metadata
    value = metadata.get("run_storage_requests") or metadata.get("storage_requests")
    if value is None:
        raise RuntimeError("the materialization has no storage_requests")
    counts: dict[str, int] = value.value  # type: ignore[assignment]
    return counts


def run_case(case: Case, url: str, aws: dict[str, str], parent: Path) -> Outcome:
    """One case, in a folder of its own under ``parent``, which the caller removes."""
    work = Path(tempfile.mkdtemp(prefix=f"{case.name}-", dir=parent))
    home = work / "home"
    home.mkdir()
    shutil.copy(REPO / "deploy" / "local" / "dagster.yaml", home / "dagster.yaml")
    _table(work / "prompts.csv", case.prompts)
    root = f"s3://{BUCKET}/{case.name}-{time.time_ns()}" if case.s3 else str(work / "data")
    env = {
        **os.environ,
        **aws,
        "DAGSTER_HOME": str(home),
        "FLUX_PROMPTS": str(work / "prompts.csv"),
        "FLUX_STORAGE_ROOT": root,
        "SEGMIND_API_KEY": KEY,
        "SEGMIND_BASE_URL": url,
    }
    last = FIRST_DAY + timedelta(days=case.partitions - 1)
    range_tags = {
        "dagster/asset_partition_range_start": FIRST_DAY.isoformat(),
        "dagster/asset_partition_range_end": last.isoformat(),
    }
    command = [
        *(str(BIN / "dagster"), "job", "execute", "-m", "flux_pipeline.definitions"),
        *("-j", "synthetic_build", "--tags", json.dumps(range_tags)),
    ]
    if case.s3:
        httpx.post(f"{aws['AWS_ENDPOINT_URL']}/_bench/reset").raise_for_status()
    started = time.monotonic()
    measured = subprocess.run(
        [sys.executable, "-c", MEASURE, *command],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    wall = time.monotonic() - started
    usage = json.loads(measured.stdout)
    if usage["code"] != 0:
        raise RuntimeError(f"{case.name}: dagster asset materialize failed:\n{usage['tail']}")
    served = None
    if case.s3:
        served = httpx.get(f"{aws['AWS_ENDPOINT_URL']}/_bench/counts").json()
    storage = _storage_requests(home)
    return Outcome(case, usage["cpu"], usage["rss_kb"] / 1024, wall, storage, served)


def main() -> None:
    chosen = os.environ.get("FLUX_BENCH_SCALE")
    cases = [c for c in CASES if chosen is None or c.name in chosen.split(",")]
    outcomes = []
    # Every case's files are removed after the last case, not before the next one: on an ext4
    # without a journal (this VM's), creating a file scans the inodes freed in the last minutes,
    # so deleting a case's 40,000 files would charge the next case for that clean-up.
    with (
        tempfile.TemporaryDirectory(prefix="flux-scale-") as parent,
        emulator(workers=WORKERS, step_time=STEP_TIME) as url,
    ):
        local = [c for c in cases if not c.s3]
        for case in local:
            outcomes.append(run_case(case, url, {}, Path(parent)))
            print(outcomes[-1].row(), flush=True)
        if any(c.s3 for c in cases):
            with _moto() as aws:
                for case in (c for c in cases if c.s3):
                    outcomes.append(run_case(case, url, aws, Path(parent)))
                    print(outcomes[-1].row(), flush=True)
    print(f"\nscale, {datetime.now(UTC).date()} (emulator {WORKERS} x {STEP_TIME} s, 1 step)")
    print(
        "| case | partitions x prompts | client CPU ms/image | peak RSS MB "
        "| storage requests/image (the build) | S3 requests/image (the whole run, as served) "
        "| images/s |"
    )
    print("|---|---|---|---|---|---|---|")
    for outcome in outcomes:
        print(outcome.row())
    small = next((o for o in outcomes if o.case.name == "1k"), None)
    large = next((o for o in outcomes if o.case.name == "100k"), None)
    if small and large:
        print(f"\npeak RSS 100k / 1k: {large.rss_mb / small.rss_mb:.2f}")
