"""How the process allocates native memory: an entry point's decision, made once at start-up.

Only entry modules call :func:`tune` (the ``flux-pipeline`` command's ``main`` and the code
location's ``definitions.py``), before anything imports pyarrow or starts a thread; importing
the package changes nothing in the process. A choice the user made in the environment is kept.

- Arrow's default allocator in the wheels (mimalloc) keeps what one thread's tables freed for
  that thread, so a range build's RSS grows with each partition. Arrow reads
  ``ARROW_DEFAULT_MEMORY_POOL`` once, before its first allocation: :func:`tune` sets ``system``.
- glibc gives each thread that allocates an arena of its own (up to 8 per core) and keeps what
  is freed in each. ``mallopt(M_ARENA_MAX, 2)`` caps them for the threads started afterwards,
  unless ``MALLOC_ARENA_MAX`` is set (glibc reads that itself); other C libraries are left alone.
"""

from __future__ import annotations

import ctypes
import os

__all__ = ["GLIBC_ARENAS", "tune"]

#: Arenas glibc may make: the main one and one shared by every thread.
GLIBC_ARENAS = 2
_M_ARENA_MAX = -8


def _glibc() -> bool:
    try:
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (ValueError, OSError):
        return False


def tune() -> None:
    """Give Arrow the system allocator and cap glibc's arenas, unless the environment chose."""
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    if "MALLOC_ARENA_MAX" not in os.environ and _glibc():
        ctypes.CDLL(None).mallopt(_M_ARENA_MAX, GLIBC_ARENAS)
