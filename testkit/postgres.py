"""A throwaway PostgreSQL server for the tests: Debian's binaries, a temp cluster, loopback only.

`make test` installs Debian's postgresql package; the cluster lives in a temporary folder,
listens on a free 127.0.0.1 port with its socket in that folder, trusts local connections
and is stopped and deleted when the session ends. PostgreSQL refuses to run as root, so as
root the server runs as the ``postgres`` system user that the Debian package creates.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from testkit.servers import free_port

SUPERUSER = "hashveil"
_BIN_GLOB = "/usr/lib/postgresql/*/bin"


def find_bin_dir() -> Path:
    """The newest /usr/lib/postgresql/<major>/bin that holds initdb and pg_ctl."""
    found = [
        Path(d)
        for d in glob.glob(_BIN_GLOB)
        if (Path(d) / "initdb").is_file() and (Path(d) / "pg_ctl").is_file()
    ]
    if not found:
        raise FileNotFoundError(
            f"PostgreSQL server binaries not found ({_BIN_GLOB}/initdb); run `make test`, "
            "which installs Debian's postgresql package before running the tests"
        )
    return max(found, key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0)


@dataclass
class PostgresServer:
    """One running cluster; :meth:`new_database` hands each test its own empty database."""

    bin_dir: Path
    root: Path
    port: int
    run_as: list[str]
    durable: bool = False  # fsync and full-page writes on, as in production (benchmarks)
    _names = itertools.count()

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def new_database(self, prefix: str = "t") -> str:
        """Create an empty database and return its SQLAlchemy URL."""
        import psycopg

        name = f"{prefix}_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(
            host="127.0.0.1", port=self.port, user=SUPERUSER, dbname="postgres", autocommit=True
        ) as con:
            con.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def _run(self, *args: str) -> None:
        out = subprocess.run([*self.run_as, *args], capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.is_file() else ""
            raise RuntimeError(
                f"{' '.join(args[:2])} failed ({out.returncode}): {out.stderr.strip()[-2000:]}\n{tail}"
            )

    def start(self) -> None:
        pg = str(self.bin_dir)
        self._run(
            f"{pg}/initdb",
            "-D",
            str(self.data_dir),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-sync",
        )
        # a zone other than UTC, so that the tests see timestamps come back in the session's zone
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c TimeZone=Asia/Kolkata"
        if not self.durable:  # the tests need no crash safety from their throwaway cluster
            opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run(
            f"{pg}/pg_ctl",
            "start",
            "-w",
            "-t",
            "60",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.root / "server.log"),
            "-o",
            opts,
        )

    def stop(self) -> None:
        if (self.data_dir / "postmaster.pid").is_file():
            self._run(f"{self.bin_dir}/pg_ctl", "stop", "-w", "-m", "fast", "-D", str(self.data_dir))


def start_server(durable: bool = False) -> PostgresServer:
    """initdb + pg_ctl start in a fresh temp folder (as ``postgres`` when we are root); ``durable``
    keeps PostgreSQL's crash-safety settings (the tests turn them off for speed)."""
    bin_dir = find_bin_dir()
    root = Path(tempfile.mkdtemp(prefix="hashveil-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(root)
            raise FileNotFoundError(
                "running as root, but there is no `postgres` system user to run "
                "PostgreSQL as; run `make test`, which installs Debian's postgresql"
            ) from None
        os.chown(root, user.pw_uid, user.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    server = PostgresServer(bin_dir, root, 0, run_as, durable)
    for attempt in range(3):  # a free port can be taken between the probe and the bind
        server.port = free_port()
        try:
            server.start()
            return server
        except RuntimeError:
            shutil.rmtree(server.data_dir, ignore_errors=True)
            if attempt == 2:
                shutil.rmtree(root, ignore_errors=True)
                raise
    raise AssertionError("unreachable")


def stop_server(server: PostgresServer) -> None:
    try:
        server.stop()
    finally:
        shutil.rmtree(server.root, ignore_errors=True)
