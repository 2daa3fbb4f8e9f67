"""Native memory of a process that imports the package: Arrow's allocator and glibc's arenas.

Both are set once, when the package is first imported (before any of a build's threads
starts), and only where the user has not chosen:

- Arrow's default allocator in the wheels (mimalloc) keeps what one thread's tables freed for
  that thread: a range build's peak RSS grew ~5 MB per partition of 1,000 images. Arrow reads
  ``ARROW_DEFAULT_MEMORY_POOL`` once, before its first allocation: it is set to ``system``.
- glibc gives each thread that allocates an arena of its own, up to 8 per core, and keeps
  what is freed in each: a build's worker threads (image bodies, store and ledger writes,
  lineage) held 19 MB more at 4 x 4,000 images (289 against 270 MB peak RSS with
  ``MALLOC_ARENA_MAX=2``). ``mallopt(M_ARENA_MAX, 2)`` caps them for the threads started
  afterwards, unless ``MALLOC_ARENA_MAX`` is set (glibc reads that itself); other C libraries
  are left alone.
"""

from __future__ import annotations

import ctypes
import os
from typing import Final

#: Arenas glibc may make: the main one and one shared by every thread.
ARENAS: Final = 2
_M_ARENA_MAX: Final = -8


def configure() -> None:
    """Set both, where the environment does not say otherwise."""
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    if "MALLOC_ARENA_MAX" not in os.environ and _glibc():
        ctypes.CDLL(None).mallopt(_M_ARENA_MAX, ARENAS)


def _glibc() -> bool:
    try:
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (ValueError, OSError):
        return False
