"""A real PostgreSQL server (Debian's binaries) on 127.0.0.1 for the control API's tests."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.services import free_port, wait_for_port


def pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


class PostgresServer:
    """initdb + pg_ctl as the `postgres` user (initdb refuses root), trust auth on 127.0.0.1."""

    def __init__(self) -> None:
        self.port = free_port()
        self.base = Path(tempfile.mkdtemp(prefix="al-pg-"))
        self.bin = pg_bin()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _as_postgres(self, *args: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
        )

    def start(self) -> None:
        if self.bin is None:
            raise RuntimeError("PostgreSQL binaries not found under /usr/lib/postgresql")
        shutil.chown(self.base, "postgres", "postgres")
        data = self.base / "data"
        self._as_postgres(
            str(self.bin / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"
        )
        self._as_postgres(
            str(self.bin / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(self.base / "log"),
            "-w",
            "-o",
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.base} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off",
            "start",
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.bin is not None and (self.base / "data" / "postmaster.pid").exists():
            self._as_postgres(
                str(self.bin / "pg_ctl"), "-D", str(self.base / "data"), "-m", "immediate", "-w", "stop"
            )
        shutil.rmtree(self.base, ignore_errors=True)


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def available() -> bool:
    return pg_bin() is not None and os.geteuid() == 0 and shutil.which("runuser") is not None
