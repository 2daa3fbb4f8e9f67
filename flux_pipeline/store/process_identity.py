"""Which process wrote a record (host, boot and pid namespace, pid), and whether it has exited.

Claims, owner heartbeats and run heartbeats record the writer so that a reader on the same
machine can tell at once that the writer is gone, instead of waiting out a lease.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Final

__all__ = ["process_gone", "this_process"]


def this_process() -> tuple[str, str, int]:
    """``(host, process_scope, pid)`` of this process, as claims and run heartbeats record it."""
    return _HOST, _PROCESS_SCOPE, os.getpid()


def process_gone(host: str, process_scope: str, pid: int) -> bool:
    """Whether ``pid`` was a process of this machine (same host name, boot and pid namespace)
    that no longer exists; a process of another machine is never known to be gone."""
    return host == _HOST and process_scope == _PROCESS_SCOPE and not _pid_alive(pid)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _process_scope() -> str:
    """This machine's boot id and pid namespace on Linux: a pid is only comparable within both
    (two containers may share a host name; a reboot recycles pids)."""
    parts = []
    try:
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
        parts.append(os.readlink("/proc/self/ns/pid"))
    except OSError:
        return ""
    return "/".join(parts)


_HOST: Final = socket.gethostname()
_PROCESS_SCOPE: Final = _process_scope()
