"""Native allocators: the processes the entry points start (the ``flux-pipeline`` command, a
process that loads the code location) give Arrow the system allocator and let glibc make at
most two arenas for their threads; a choice the user made is kept; importing the package or any
of its modules changes nothing in the process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from flux_pipeline.native_memory import GLIBC_ARENAS

_ARROW = (
    "import flux_pipeline.definitions, pyarrow as pa; print(pa.default_memory_pool().backend_name)"
)
#: How the process starts (argv[1]), then eight threads allocate at once (bytes past pymalloc's
#: 512, from glibc) and glibc's own report is read: one ``<heap nr=...>`` per arena it made.
_ARENAS = """
import contextlib, ctypes, importlib, io, json, os, pkgutil, sys, tempfile, threading
start = sys.argv[1]
if start == "modules":  # every module of the package but the code location's entry module
    import flux_pipeline
    for info in pkgutil.walk_packages(flux_pipeline.__path__, "flux_pipeline."):
        if info.name != "flux_pipeline.definitions":
            importlib.import_module(info.name)
elif start == "command":
    from flux_pipeline.commands.cli import main
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        main(["--help"])
elif start == "definitions":
    import flux_pipeline.definitions
ready = threading.Barrier(8)
held = []
def allocate():
    ready.wait()
    held.append([bytes(4096) for _ in range(2000)])
threads = [threading.Thread(target=allocate) for _ in range(8)]
[t.start() for t in threads]
[t.join() for t in threads]
libc = ctypes.CDLL(None)
libc.fopen.restype = ctypes.c_void_p
with tempfile.NamedTemporaryFile(suffix=".xml") as report:
    stream = libc.fopen(report.name.encode(), b"w")
    libc.malloc_info(0, ctypes.c_void_p(stream))
    libc.fclose(ctypes.c_void_p(stream))
    arenas = open(report.name).read().count("<heap nr=")
print(json.dumps({"arenas": arenas, "arrow_pool": os.environ.get("ARROW_DEFAULT_MEMORY_POOL")}))
"""


def _run(code: str, *args: str, **env: str) -> str:
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in ("ARROW_DEFAULT_MEMORY_POOL", "MALLOC_ARENA_MAX")
    }
    run = subprocess.run(
        [sys.executable, "-c", code, *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return run.stdout.strip()


def _started(start: str, **env: str) -> tuple[int, str | None]:
    """Arenas glibc made for eight threads, and Arrow's pool variable, after ``start``."""
    found = json.loads(_run(_ARENAS, start, **env))
    return found["arenas"], found["arrow_pool"]


def test_the_code_location_gives_arrow_the_system_allocator() -> None:
    # mimalloc kept a build's freed table memory per thread: RSS grew with the range.
    assert _run(_ARROW) == "system"


def test_an_allocator_the_user_chose_is_kept() -> None:
    assert _run(_ARROW, ARROW_DEFAULT_MEMORY_POOL="mimalloc") == "mimalloc"


glibc = pytest.mark.skipif(
    not (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc"),
    reason="arenas are glibc's: nothing is set on another C library",
)


@glibc
def test_importing_the_package_changes_nothing_in_the_process() -> None:
    # The Dagster webserver and daemon import it too: tuning is the entry point's decision.
    assert _started("bare")[0] > GLIBC_ARENAS  # glibc's own default: an arena per thread here
    arenas, arrow_pool = _started("modules")
    assert arenas > GLIBC_ARENAS
    assert arrow_pool is None


@glibc
@pytest.mark.parametrize("start", ["command", "definitions"])
def test_the_entry_points_tune_the_process(start: str) -> None:
    arenas, arrow_pool = _started(start)
    assert arenas <= GLIBC_ARENAS
    assert arrow_pool == "system"


@glibc
def test_arenas_the_user_chose_are_kept() -> None:
    assert _started("command", MALLOC_ARENA_MAX="6")[0] > GLIBC_ARENAS


#: 40 MB of small blocks from glibc, all freed but the last (the heap cannot shrink from its
#: top), then RSS (kB) before and after the build's trim.
_TRIM = """
import ctypes, mmap
from flux_pipeline.builder import native_heap
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
blocks = [libc.malloc(1024) for _ in range(40_000)]
for block in blocks:
    ctypes.memset(block, 1, 1024)
for block in blocks[:-1]:
    libc.free(ctypes.c_void_p(block))
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * mmap.PAGESIZE // 1024
before = rss()
native_heap.trim()
print(before, rss())
"""


@glibc
def test_a_finished_partition_s_freed_heap_goes_back_to_the_system() -> None:
    before, after = map(int, _run(_TRIM).split())
    assert before - after > 30_000  # kB: most of the 40 MB freed
