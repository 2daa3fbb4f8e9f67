"""Freed native memory handed back to the system once a partition is finished (glibc).

A finished partition frees its image bodies, Arrow buffers and frames, but glibc keeps the
freed pages mapped among the objects of the partitions still building, so its heap cannot
shrink from the top and peak RSS would creep up partition after partition. ``malloc_trim(0)``
gives back every free page, so RSS follows what is live. With another C library, :func:`trim`
does nothing.
"""

from __future__ import annotations

import ctypes
import os

__all__ = ["trim"]


def _glibc_trim() -> ctypes._NamedFuncPointer | None:
    try:
        if (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc"):
            return ctypes.CDLL(None).malloc_trim
    except (ValueError, OSError, AttributeError):
        pass
    return None


_MALLOC_TRIM = _glibc_trim()


def trim() -> None:
    """Give the free pages of glibc's heaps back to the system (a few ms)."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
