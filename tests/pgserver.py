"""A throwaway PostgreSQL server for the test suite.

Started as the ``postgres`` user (``initdb`` refuses root) in a temporary directory, listening on
127.0.0.1 and a free port, with fsync off; stopped and removed when the tests end. If it cannot
start, the test run fails: nothing is skipped.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

PG_BIN_CANDIDATES = (
    os.environ.get("CBDC_PG_BIN", ""),
    "/usr/lib/postgresql/15/bin",
    "/usr/lib/postgresql/16/bin",
    "/usr/lib/postgresql/17/bin",
)


class PostgresUnavailable(RuntimeError):
    pass


def _pg_bin() -> Path:
    for candidate in PG_BIN_CANDIDATES:
        if candidate and (Path(candidate) / "initdb").exists():
            return Path(candidate)
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise PostgresUnavailable(
        "PostgreSQL server binaries not found (install the Debian package postgresql-15)"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PostgresServer:
    directory: Path
    port: int
    run_as: str | None

    @property
    def admin_url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [str(_pg_bin() / args[0]), *args[1:]]
        if self.run_as:
            command = ["runuser", "-u", self.run_as, "--", *command]
        return subprocess.run(command, capture_output=True, text=True, check=False)

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.directory / "data"), "-m", "immediate", "stop")
        shutil.rmtree(self.directory, ignore_errors=True)


def start() -> PostgresServer:
    """Start a server or raise PostgresUnavailable saying why."""
    run_as = "postgres" if os.geteuid() == 0 else None
    if run_as:
        try:
            owner = pwd.getpwnam(run_as)
        except KeyError as exc:
            raise PostgresUnavailable("no 'postgres' user to run the server as") from exc
    directory = Path(tempfile.mkdtemp(prefix="cbdc-pg-"))
    if run_as:
        os.chown(directory, owner.pw_uid, owner.pw_gid)
    server = PostgresServer(directory=directory, port=_free_port(), run_as=run_as)
    data = directory / "data"
    initdb = server._run(
        "initdb", "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"
    )
    if initdb.returncode != 0:
        shutil.rmtree(directory, ignore_errors=True)
        raise PostgresUnavailable(f"initdb failed: {initdb.stderr.strip()}")
    options = (
        f"-p {server.port} -c listen_addresses=127.0.0.1 -k {directory} "
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
        "-c max_connections=300 -c shared_buffers=128MB"
    )
    started = server._run(
        "pg_ctl", "-D", str(data), "-o", options, "-l", str(directory / "log"), "-w", "-t", "60",
        "start",
    )
    if started.returncode != 0:
        log = (directory / "log").read_text() if (directory / "log").exists() else ""
        server.stop()
        raise PostgresUnavailable(f"pg_ctl start failed: {started.stderr.strip()} {log[-2000:]}")
    _wait_ready(server)
    return server


def _wait_ready(server: PostgresServer, timeout_s: float = 30.0) -> None:
    import psycopg

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with psycopg.connect(
                f"host=127.0.0.1 port={server.port} user=postgres dbname=postgres"
            ):
                return
        except psycopg.OperationalError as exc:
            if time.monotonic() > deadline:
                server.stop()
                raise PostgresUnavailable(f"server did not accept connections: {exc}") from exc
            time.sleep(0.1)
