"""Console commands (``dagster``, ``flux-pipeline``) in processes forked from a warm server.

A test that runs a command as a user would gets a process of its own: its own environment,
working directory, process group, exit status, stdout and stderr, and everything it writes
happens through the command's own code. What it does not get is a fresh interpreter: the
process is forked by :mod:`multiprocessing`'s ``forkserver``, a single-threaded server that
imported Dagster, pandas, pyarrow, s3fs, ... once per pytest worker. Each command therefore
skips the 3-4 s of CPU an interpreter spends importing them, which was most of what the
suite's commands cost.

The command is its console script's entry point (the installed ``console_scripts``), called
with ``sys.argv`` as the script would set it; its import path is the server's (pytest's, so the
checkout is on it). What only a fresh interpreter shows (a console script's start-up from
another directory, ``native_memory.tune()`` before any import) is tested with
:mod:`subprocess` instead.
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

#: What the server imports before it forks a command: the heavy libraries only. The project's
#: own modules are imported by each command, as a user's command would (some read the
#: environment when imported).
PRELOAD = [
    "dagster",
    "dagster._cli",
    "pandas",
    "pyarrow.dataset",
    "pyarrow.parquet",
    "s3fs",
    "httpx",
    "jinja2.sandbox",
    "PIL.Image",
    "yaml",
    "imagehash",
]

_server = multiprocessing.get_context("forkserver")
_server.set_forkserver_preload(PRELOAD)


class Command:
    """A running command; the subset of :class:`subprocess.Popen` the tests use."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: str | Path | None = None,
        output: Path | None = None,
    ) -> None:
        self.args = [str(arg) for arg in args]
        #: The folder of the captured output when no ``output`` file was given.
        self._folder: Path | None = None
        if output is None:
            self._folder = Path(tempfile.mkdtemp(prefix="forked-cli-"))
            self._stdout, self._stderr = self._folder / "stdout", self._folder / "stderr"
        else:
            self._stdout = self._stderr = output
        self._stdout.touch()
        self._stderr.touch()
        where = str(cwd) if cwd is not None else os.getcwd()
        self._process = _server.Process(
            target=_command_main,
            args=(self.args, dict(env), where, str(self._stdout), str(self._stderr)),
            name=Path(self.args[0]).name,
        )
        self._process.start()
        self.pid: int = self._process.pid or 0

    @property
    def returncode(self) -> int | None:
        return self._process.exitcode

    def poll(self) -> int | None:
        return self._process.exitcode

    def wait(self, timeout: float | None = None) -> int:
        """The exit status (negative: the signal that ended it), like ``Popen.wait``."""
        self._process.join(timeout)
        if self._process.exitcode is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        return self._process.exitcode

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        """Wait, then what the command printed: ``(stdout, stderr)``; with an ``output`` file,
        both went there and stderr is ``""``."""
        self.wait(timeout)
        stdout = self._stdout.read_text(errors="replace")
        stderr = "" if self._stderr == self._stdout else self._stderr.read_text(errors="replace")
        return stdout, stderr

    def kill(self) -> None:
        """SIGKILL to the command's process group (it leads one, as with ``start_new_session``)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)


def start(
    args: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: str | Path | None = None,
    output: Path | None = None,
) -> Command:
    """Start ``args`` (a console script's path and its arguments) in a forked process of its
    own process group; its stdout and stderr go to ``output`` if given (appended)."""
    return Command(args, env=env, cwd=cwd, output=output)


def run(
    args: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: str | Path | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """Run ``args`` to its end, like ``subprocess.run(..., capture_output=True, text=True)``;
    ``timeout`` bounds a hang (the command is then killed)."""
    command = start(args, env=env, cwd=cwd)
    try:
        returncode = command.wait(timeout)
    except subprocess.TimeoutExpired:
        command.kill()
        raise
    stdout, stderr = command.communicate()
    if command._folder is not None:  # read: the temporary files are not needed any more
        shutil.rmtree(command._folder, ignore_errors=True)
    return subprocess.CompletedProcess(command.args, returncode, stdout, stderr)


def _entry_point(script: str) -> Callable[[], Any]:
    [entry] = entry_points(group="console_scripts", name=script)
    main: Callable[[], Any] = entry.load()
    return main


def _command_main(args: list[str], env: dict[str, str], cwd: str, stdout: str, stderr: str) -> None:
    """The forked process: becomes the console script ``args[0]`` and exits as it would."""
    os.setsid()
    _redirect(1, stdout)
    _redirect(2, stderr)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    script = Path(args[0])
    sys.argv = list(args)
    code = 0
    try:
        result = _entry_point(script.name)()
        code = result if isinstance(result, int) else 0
    except SystemExit as exit:
        code = _exit_status(exit.code)
    except BaseException:
        traceback.print_exc()
        code = 1
    # As an interpreter ends: wait for non-daemon threads, then run the atexit handlers.
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _redirect(fd: int, path: str) -> None:
    target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(target, fd)
    os.close(target)


def _exit_status(code: object) -> int:
    """``SystemExit.code`` as the interpreter turns it into a status."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1
