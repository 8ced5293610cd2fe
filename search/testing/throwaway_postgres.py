"""A PostgreSQL server of a test's (or a benchmark's) own: its data directory, a free port.

Restart tests stop and start this server, never the machine's shared one; the storage
benchmark runs one on the proxy's CPU, as a database host of its own would. The server runs as
the ``postgres`` user when run as root (PostgreSQL refuses to run as root).

Use: ``server = ThrowawayPostgres(); server.init(); server.start()``, then ``server.url``
(``postgresql://postgres@127.0.0.1:<port>/postgres``) until ``server.cleanup()``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from search import settings

BIN = settings.postgres_bin_dir()


def missing_reason() -> str | None:
    """Why no throw-away server can be started here, or None."""
    for tool in ("initdb", "pg_ctl"):
        if not (BIN / tool).exists():
            return f"{BIN / tool} not found (set CAPSEARCH_TEST_PG_BIN to PostgreSQL's bin folder)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser to start PostgreSQL as the postgres user"
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ThrowawayPostgres:
    """``initdb`` in a temporary folder, ``pg_ctl start/stop``; trust auth on 127.0.0.1.

    Args:
        cpus: Run the server (every backend it starts) on these CPUs, ``taskset`` style
            (``"0"``, ``"0-1"``); None: wherever the system schedules it.
        durable: Keep ``fsync`` on, as a production server does; off (the default) suits tests,
            whose data is thrown away.
    """

    def __init__(self, cpus: str | None = None, *, durable: bool = False) -> None:
        self.cpus = cpus
        self.durable = durable
        self.root = Path(tempfile.mkdtemp(prefix="capsearch-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "sock"
        self.log = self.root / "server.log"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.events: list[tuple[str, float]] = []

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = list(argv)
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, capture_output=True, text=True, check=check, timeout=120)

    def init(self) -> None:
        self.socket_dir.mkdir(parents=True)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
            shutil.chown(self.socket_dir, "postgres")
        self._run(
            str(BIN / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
        )
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"port = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.socket_dir}'\nmax_connections = 200\n"
                f"fsync = {'on' if self.durable else 'off'}\nshared_buffers = 32MB\n"
            )

    def start(self) -> None:
        pinned = ["taskset", "-c", self.cpus] if self.cpus else []
        self._run(
            *pinned, str(BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "start"
        )
        self.events.append(("up", time.time()))

    @property
    def pid(self) -> int:
        """The running server's process id (the first line of ``postmaster.pid``)."""
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def stop(self) -> None:
        self._run(
            str(BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop", check=False
        )
        self.events.append(("down", time.time()))

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
