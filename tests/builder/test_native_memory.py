"""Native allocators in a process that loads the code location: Arrow's is the system one, and
glibc makes at most two arenas for the threads; a choice the user made is kept."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

_ARROW = (
    "import flux_pipeline.definitions, pyarrow as pa; print(pa.default_memory_pool().backend_name)"
)
#: Eight threads allocate at once (bytes past pymalloc's 512, from glibc), then glibc's own
#: report is read: one ``<heap nr=...>`` per arena it made.
_ARENAS = """
import ctypes, sys, tempfile, threading
if sys.argv[1] == "package":
    import flux_pipeline
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
    print(open(report.name).read().count("<heap nr="))
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
def test_threads_share_two_arenas_once_the_package_is_imported() -> None:
    assert int(_run(_ARENAS, "bare")) > 2  # glibc's own default: an arena per thread here
    assert int(_run(_ARENAS, "package")) <= 2


@glibc
def test_arenas_the_user_chose_are_kept() -> None:
    assert int(_run(_ARENAS, "package", MALLOC_ARENA_MAX="6")) > 2


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
