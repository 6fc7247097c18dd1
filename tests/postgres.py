"""A throwaway PostgreSQL cluster for the tests: Debian's server binaries, a fresh data directory
in a temporary folder, trust authentication on 127.0.0.1 only, a free port, fsync off.

`initdb` refuses to run as root, so as root the cluster runs as the `postgres` user (runuser).
Without the binaries the PostgreSQL tests skip, except under CI, where they fail.
"""

from __future__ import annotations

import atexit
import itertools
import os
import shlex
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import free_port

SUPERUSER = "postgres"
_START_TIMEOUT_SECONDS = 60


def find_bin_dir() -> Path | None:
    """The newest /usr/lib/postgresql/<n>/bin holding initdb and pg_ctl, else the PATH's."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                   key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def require_postgres() -> Path:
    """The server binaries' directory, or skip (fail under CI) saying why there is none."""
    bin_dir = find_bin_dir()
    if bin_dir is None or not (bin_dir / "pg_ctl").exists():
        message = ("PostgreSQL tests need the server binaries (initdb, pg_ctl: apt-get install "
                   "postgresql); none found in /usr/lib/postgresql/*/bin or on PATH")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.fail("running as root, the PostgreSQL tests need runuser to start the server as "
                    "the postgres user")
    return bin_dir


def _reachable_by_others(path: Path) -> bool:
    return all(p.stat().st_mode & stat.S_IXOTH for p in (path, *path.parents))


def _temp_parent() -> str | None:
    """Where to make the cluster's folder: as root, a place the postgres user can reach (root's
    own temporary directory is often private); otherwise the usual temporary directory."""
    if os.geteuid() != 0:
        return None
    for candidate in (tempfile.gettempdir(), "/var/tmp", "/dev/shm"):
        if Path(candidate).is_dir() and _reachable_by_others(Path(candidate)):
            return candidate
    pytest.fail("running as root, no temporary directory is reachable by the postgres user")


class Cluster:
    """One postmaster; `new_database()` gives each test its own database in it."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="threadedit-pg-", dir=_temp_parent()))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = 0
        self._names = itertools.count(1)
        self._as_postgres = os.geteuid() == 0
        self._started = False
        self._watchdog: subprocess.Popen[bytes] | None = None

    def _command(self, *args: str) -> list[str]:
        cmd = [str(self.bin_dir / args[0]), *args[1:]]
        return ["runuser", "-u", "postgres", "--", *cmd] if self._as_postgres else cmd

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(self._command(*args), capture_output=True, text=True,
                              timeout=_START_TIMEOUT_SECONDS)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stderr.strip()} {log}")
        return done

    def start(self) -> Cluster:
        if self._as_postgres:
            shutil.chown(self.root, "postgres")
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8",
                  "--locale=C", "--no-sync", "--no-instructions")
        atexit.register(self.stop)  # also when the run is interrupted (Ctrl-C)
        for attempt in range(3):  # a free port may be taken between choosing and binding
            self.port = free_port()
            options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} "
                       "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                       "-c max_connections=200")
            try:
                # -w: return once the server accepts connections (an observable end, no sleep).
                self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options,
                          "-w", "-t", str(_START_TIMEOUT_SECONDS), "start")
                self._started = True
                self._watch()
                return self
            except RuntimeError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _watch(self) -> None:
        """A watchdog that stops the server if this process dies without cleaning up (SIGKILL,
        SIGTERM): a stray postmaster would otherwise outlive the test run on a shared machine."""
        stop = " ".join(shlex.quote(a) for a in self._command(
            "pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop"))
        script = (f"while kill -0 {os.getpid()} 2>/dev/null; do sleep 1; done; "
                  f"{stop} >/dev/null 2>&1; rm -rf {shlex.quote(str(self.root))}")
        self._watchdog = subprocess.Popen(["sh", "-c", script], start_new_session=True,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        if self._watchdog is not None:
            self._watchdog.kill()
            self._watchdog.wait()
            self._watchdog = None
        if self._started:
            self._started = False
            try:
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres", driver: str = "psycopg") -> str:
        return f"postgresql+{driver}://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def new_database(self, template: str = "template1") -> str:
        """Create an empty database (a copy of `template`) and return its SQLAlchemy URL."""
        import psycopg

        name = f"t{os.getpid()}_{next(self._names)}"
        with psycopg.connect(host="127.0.0.1", port=self.port, user=SUPERUSER, dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return self.url(name)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """One PostgreSQL server for the whole test session, always stopped at its end."""
    cluster = Cluster(require_postgres())
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(pg_cluster: Cluster) -> str:
    """A new, empty database of its own for each test."""
    return pg_cluster.new_database()
