"""A private, throw-away PostgreSQL 15 cluster for tests with a shared Orthanc index.

Scale-out runs several Orthanc processes on one PostgreSQL index
(``orthanc-postgresql``). The tests must not touch a system database, so each
test starts its own cluster with Debian's ``initdb`` / ``pg_ctl`` in a
temporary directory, on a free loopback port, and removes it afterwards::

    with PostgresCluster() as pg:
        config["Plugins"].append(POSTGRESQL_INDEX_PLUGIN)
        config.update(pg.orthanc_config())

PostgreSQL refuses to run as root. When the tests run as root, every server
command runs as the ``postgres`` system user (``runuser``) and the temporary
directory is handed to that user; otherwise the cluster runs as the current user.
Authentication is ``trust`` on 127.0.0.1 only, which is fine for a cluster that
lives for one test.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Self

from support.orthanc import free_port

#: Debian's PostgreSQL 15 server binaries.
PG_BIN = Path("/usr/lib/postgresql/15/bin")
#: The orthanc-postgresql index plugin (Debian package ``orthanc-postgresql``).
POSTGRESQL_INDEX_PLUGIN = "/usr/share/orthanc/plugins/libOrthancPostgreSQLIndex.so"
#: The system user that runs the server when the tests run as root.
SERVER_USER = "postgres"


def unavailable() -> str | None:
    """``None`` when a cluster can be started here, else the reason (used to skip tests)."""
    for tool in ("initdb", "pg_ctl", "createdb"):
        if not (PG_BIN / tool).exists():
            return f"{PG_BIN / tool} is missing (apt-get install postgresql-15)"
    if not Path(POSTGRESQL_INDEX_PLUGIN).exists():
        return f"{POSTGRESQL_INDEX_PLUGIN} is missing (apt-get install orthanc-postgresql)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVER_USER)
        except KeyError:
            return f"running as root but there is no {SERVER_USER!r} user to run PostgreSQL"
        if not shutil.which("runuser"):
            return "running as root but runuser(1) is missing"
    return None


class PostgresCluster:
    """One PostgreSQL cluster with one database, started on a free port of 127.0.0.1."""

    def __init__(self, database: str = "orthanc", *, port: int | None = None) -> None:
        self.database = database
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.workdir: Path | None = None
        self.user = SERVER_USER if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        self._started = False

    # -- paths ------------------------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        assert self.workdir is not None, "start() first"
        return self.workdir / "data"

    @property
    def log_path(self) -> Path:
        assert self.workdir is not None, "start() first"
        return self.workdir / "postgres.log"

    # -- lifecycle --------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> Self:
        """initdb, start the server, create the database. Cleans up after itself if any step fails."""
        reason = unavailable()
        if reason:
            raise RuntimeError(reason)
        self.workdir = Path(tempfile.mkdtemp(prefix="pg-cluster-"))
        try:
            if os.geteuid() == 0:
                pw = pwd.getpwnam(SERVER_USER)
                os.chown(self.workdir, pw.pw_uid, pw.pw_gid)
            self._run("initdb", "-D", str(self.data_dir), "-U", self.user, "--auth=trust",
                      "-E", "UTF8", "--locale=C", "--no-sync")
            options = (f"-p {self.port} -c listen_addresses={self.host} -k {self.workdir} "
                       "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
            self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_path), "-o", options,
                      "-w", "-t", str(int(timeout)), "start")
            self._started = True
            self._run("createdb", "-h", self.host, "-p", str(self.port), "-U", self.user, self.database)
        except BaseException:
            self.cleanup()
            raise
        return self

    def stop(self) -> None:
        """Fast shutdown (aborts open transactions); no-op when not running."""
        if self._started and self.workdir is not None:
            try:
                self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "-t", "30", "stop")
            except subprocess.CalledProcessError:
                pass  # already gone: nothing left to stop
            self._started = False

    def cleanup(self) -> None:
        """Stop the server and delete the cluster's directory."""
        self.stop()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    # -- use --------------------------------------------------------------------------------
    def orthanc_config(self, *, lock: bool = False) -> dict[str, Any]:
        """The ``PostgreSQL`` section for Orthanc: index only (files stay on disk), no lock.

        ``Lock`` is false so that several Orthanc processes may write to the index at once
        (supported since Orthanc 1.9.2 with orthanc-postgresql 4.0).
        """
        return {
            "PostgreSQL": {
                "EnableIndex": True,
                "EnableStorage": False,
                "Host": self.host,
                "Port": self.port,
                "Database": self.database,
                "Username": self.user,
                "Password": "",
                "Lock": lock,
                "EnableSsl": False,
            }
        }

    def psql(self, sql: str) -> str:
        """Run one SQL command in the database and return psql's unaligned output."""
        return self._run("psql", "-h", self.host, "-p", str(self.port), "-U", self.user, "-d", self.database,
                         "-At", "-c", sql).strip()

    def log_every_statement(self, line_prefix: str) -> None:
        """From now on, log every statement with ``line_prefix`` (e.g. backend and transaction)."""
        self.psql("ALTER SYSTEM SET log_statement = 'all'")
        self.psql(f"ALTER SYSTEM SET log_line_prefix = '{line_prefix}'")
        self.psql("SELECT pg_reload_conf()")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.workdir and self.log_path.exists() else ""

    # -- internals --------------------------------------------------------------------------
    def _run(self, tool: str, *args: str) -> str:
        """Run a PostgreSQL binary as the server user; raise with its output on failure."""
        argv = [str(PG_BIN / tool), *args]
        if os.geteuid() == 0:
            argv = ["runuser", "-u", SERVER_USER, "--", *argv]
        proc = subprocess.run(argv, capture_output=True, text=True, cwd=self.workdir or "/", timeout=120,
                              check=False)
        if proc.returncode != 0:
            raise subprocess.CalledProcessError(proc.returncode, argv, proc.stdout, proc.stderr + self._log_tail())
        return proc.stdout

    def _log_tail(self, lines: int = 20) -> str:
        text = self.log_text()
        return ("\n--- postgres.log ---\n" + "\n".join(text.splitlines()[-lines:])) if text else ""

