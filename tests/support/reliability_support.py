"""Helpers of the reliability suite: generated prompt tables, engine settings, storage audits,
and a `dagster asset materialize` process that can be killed mid-partition (whole group)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
import re
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from flux_pipeline.prompts import load_prompt_table, partition_requests
from flux_pipeline.protocol import ASPECT_RATIOS, GenerationRequest
from flux_pipeline.segmind import EngineConfig
from flux_pipeline.store.layout import LEDGER_DIR
from flux_pipeline.store.lineage import read_lineage
from flux_pipeline.store.storage import ObjectStore, last_record
from tests.support import forked_cli
from tests.support.dagster_support import key_from_env
from tests.support.loopback import TEST_KEY, fast_config
from tests.support.recovery_support import settled_submits

if TYPE_CHECKING:
    from flux_pipeline.emulator.server import RunningEmulator

PARTITION = "2026-11-20"
#: ``history_grace`` of the runs of this suite: a submit cut off by a kill before it went out is
#: sent again this long after it was recorded as sending.
HISTORY_GRACE = 1.0
#: Every file name a reader may see under ``images/`` (``{prompt_id}-{image_id}.jpg``).
IMAGE_NAME = r"[A-Za-z0-9_.\-]+-[0-9a-f]{16}\.jpg"


def write_table(path: Path, n: int, *, nsfw: int = 0, max_steps: int = 4, seed: int = 0) -> Path:
    """A CSV of ``n`` prompts (steps and aspect ratios drawn from ``seed``); the last ``nsfw``
    ones carry the word the emulator's safety filter blocks."""
    draw = random.Random(seed)
    ratios = sorted(ASPECT_RATIOS)
    rows = []
    for i in range(n):
        subject = f"a lighthouse on cliff {i}" + (" NSFW" if i >= n - nsfw else "")
        steps, ratio = draw.randint(1, max_steps), draw.choice(ratios)
        rows.append(
            {"prompt_id": f"p{i:04d}", "prompt": subject, "steps": steps, "aspect_ratio": ratio}
        )
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def table_requests(path: Path, partition: str = PARTITION) -> list[GenerationRequest]:
    """The partition's requests, through the real loader."""
    return partition_requests(load_prompt_table(str(path)), partition)


def engine_config(base_url: str, **overrides: Any) -> EngineConfig:
    """Fast loopback settings with a wider window and a longer deadline, for big partitions."""
    return fast_config(base_url, **{"max_concurrency": 16, "deadline": 120.0, **overrides})


def ledger_entries(store: ObjectStore) -> dict[str, dict[str, Any]]:
    """Every ledger entry as stored, by request key."""
    found = store.read_many(store.list(LEDGER_DIR))
    return {(body := json.loads(last_record(data)))["request_key"]: body for data in found.values()}


def assert_whole_image(data: bytes, where: str) -> tuple[int, int]:
    """Decode every byte of an image (a torn JPEG fails here); return its size."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        size: tuple[int, int] = image.size
    assert size in ASPECT_RATIOS.values(), f"{where}: unexpected size {size}"
    return size


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class RestartableS3:
    """moto's S3 server on one fixed loopback port that can be stopped and started again.

    ``ThreadedMotoServer.stop`` leaves the listening socket open (clients then hang instead of
    being refused) and keeps serving keep-alive connections; this stop closes the listener and
    every open connection, so the outage is real. Buckets live in moto's in-process backends,
    so they survive a restart.
    """

    def __init__(self) -> None:
        self.port = 0
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._connections: list[socket.socket] = []

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
        from werkzeug.serving import WSGIRequestHandler, make_server

        class QuietHandler(WSGIRequestHandler):
            def log_request(self, *args: Any) -> None:
                """No access log."""

        app = DomainDispatcherApplication(create_backend_app)
        self._server = make_server(
            "127.0.0.1", self.port, app, threaded=True, request_handler=QuietHandler
        )
        self.port = self._server.server_port
        accept = self._server.get_request

        def get_request() -> tuple[socket.socket, Any]:
            connection, address = accept()
            self._connections.append(connection)
            return connection, address

        self._server.get_request = get_request
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for connection in self._connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self._connections.clear()
        if self._thread is not None:
            self._thread.join()


#: ``dagster`` of this virtualenv, and how long a materialization may take.
DAGSTER = Path(sys.executable).with_name("dagster")
TIMEOUT = 600.0


class Materialization:
    """``dagster asset materialize`` in a new session (its own process group), output to a file."""

    def __init__(self, env: dict[str, str], cwd: Path, *selection: str) -> None:
        self.log = cwd / f"dagster-{time.monotonic_ns()}.log"
        command = [str(DAGSTER), "asset", "materialize", "-m", "flux_pipeline.definitions"]
        self.process = forked_cli.start([*command, *selection], cwd=cwd, env=env, output=self.log)

    def finish(self) -> None:
        code = self.process.wait(timeout=TIMEOUT)
        assert code == 0, self.log.read_text()[-4000:]

    def kill_group(self) -> None:
        """SIGKILL every process of the group, and wait until none is left."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(self.process.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        pytest.fail("processes of the killed group are still alive")


def materialize_in_process(
    instance: dg.DagsterInstance, url: str, root: Path
) -> dg.ExecuteInProcessResult:
    """The partition again, in this process (quicker than the CLI), with its asset checks."""
    from flux_pipeline.assets import generated_images, generated_images_checks
    from flux_pipeline.resources import ObjectStoreResource, SegmindResource

    return dg.materialize(
        [generated_images, *generated_images_checks],
        partition_key=PARTITION,
        resources={
            "segmind": SegmindResource(
                api_key=key_from_env(TEST_KEY), base_url=url, history_grace=HISTORY_GRACE
            ),
            "storage": ObjectStoreResource(root=str(root)),
        },
        instance=instance,
        raise_on_error=False,
    )


def states(store: ObjectStore, keys: set[str]) -> dict[str, dict[str, Any]]:
    return {k: e for k, e in ledger_entries(store).items() if k in keys}


def wait_for_mid_build(run: Materialization, store: ObjectStore, keys: set[str]) -> None:
    """Until the ledger shows some images finished and some jobs still in flight."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        assert run.process.poll() is None, "the materialization ended before it was killed"
        found = [e["state"] for e in states(store, keys).values()]
        if found.count("COMPLETED") >= 5 and found.count("SUBMITTED") >= 3:
            return
        time.sleep(0.05)
    pytest.fail("the build never reached the middle of the partition")


@dataclass(frozen=True)
class Killed:
    """What a build killed mid-partition left: its ledger entries by state, and the submits
    that were sent (``SENDING``) without their answer reaching the ledger, by whether the
    service accepted them (the record has those)."""

    ledger: dict[str, dict[str, Any]]
    done: set[str]
    in_flight: dict[str, str]
    unanswered_accepted: set[str]
    unanswered_not_made: set[str]


def audit_killed(emu: RunningEmulator, store: ObjectStore, keys: set[str]) -> Killed:
    """Once the killed build's submits have settled: images finished, jobs in flight, every
    accepted key accepted once and in the ledger (a submit is recorded before it is sent)."""
    accepted = {k: n for k, n in settled_submits(emu).items() if k in keys}
    ledger = states(store, keys)
    done = {k for k, e in ledger.items() if e["state"] == "COMPLETED"}
    in_flight = {k: e["request_id"] for k, e in ledger.items() if e["state"] == "SUBMITTED"}
    unanswered = {k for k, e in ledger.items() if e["state"] == "SENDING"}
    assert done
    assert in_flight
    assert all(accepted.get(k) == 1 for k in ledger if k not in unanswered)
    assert all(accepted.get(k, 0) <= 1 for k in unanswered)
    assert set(accepted) <= set(ledger), "an accepted submit that the ledger never saw sent"
    made = {k for k in unanswered if k in accepted}
    return Killed(ledger, done, in_flight, made, unanswered - made)


def audit_resumed(
    emu: Any, store: ObjectStore, requests: dict[str, GenerationRequest], killed: Killed
) -> pd.DataFrame:
    """After the rerun: one COMPLETED row per prompt whose image matches its sha256; stored
    images reused, jobs in flight re-attached (same request ids), submits sent without an answer
    adopted from the account's record (``recovered_from = history``): nothing paid twice.
    Returns the partition's lineage indexed by request key."""
    keys = set(requests)
    lineage = read_lineage(store)
    lineage = lineage[lineage["partition"] == PARTITION].set_index("request_key")
    assert sorted(lineage.index) == sorted(keys)  # one row per prompt
    assert set(lineage["status"]) == {"COMPLETED"}
    for key, row in lineage.iterrows():
        data = store.read_bytes(store.relpath(row["image_uri"]) or "")
        assert sha256(data) == row["image_sha256"], requests[str(key)].key
    for key in killed.done:  # stored before the kill: reused, not requested again
        assert lineage.loc[key, "request_id"] == killed.ledger[key]["request_id"]
    for key, request_id in killed.in_flight.items():  # re-attached: same job, no new submit
        assert lineage.loc[key, "request_id"] == request_id
    for key in killed.unanswered_accepted:
        assert lineage.loc[key, "recovered_from"] == "history"
    submits = emu.stats()["jobs"]["by_request_key"]
    assert {k: submits[k] for k in keys} == dict.fromkeys(keys, 1)
    return lineage


def audit_visible_files(root: Path, entries: dict[str, dict[str, Any]]) -> int:
    """Only whole, finally named files under ``images/`` and ``lineage/``; returns images seen."""
    by_path = {e["image_path"]: e for e in entries.values() if e["state"] == "COMPLETED"}
    files = [p for p in (root / "images").rglob("*") if p.is_file()]
    for path in (p for p in files if p.name == "metadata.jsonl"):
        [json.loads(line) for line in path.read_text().splitlines()]  # whole lines only
    images = [p for p in files if p.name != "metadata.jsonl"]
    for path in images:
        assert re.fullmatch(IMAGE_NAME, path.name), f"not a final image name: {path}"
        entry = by_path.get(path.relative_to(root).as_posix())
        data = path.read_bytes()
        assert_whole_image(data, str(path))
        if entry is not None:
            assert sha256(data) == entry["lineage"]["image_sha256"], path
    for path in (p for p in (root / "lineage").rglob("*") if p.is_file()):
        assert path.name == "lineage.parquet", f"not a final lineage name: {path}"
        pq.read_table(path)
    return len(images)
