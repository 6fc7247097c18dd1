"""A throwaway PostgreSQL cluster for the tests: Debian's server binaries, a fresh data directory
in a temporary folder, trust authentication on 127.0.0.1 only, a free port, fsync off.

`initdb` refuses to run as root, so as root the cluster runs as the `postgres` user (runuser).
Without the binaries the PostgreSQL tests skip, except under CI, where they fail.

One place chooses the database every shared fixture and harness uses: with
THREADEDIT_TEST_DATABASE=postgresql, each test gets a new PostgreSQL database (a copy of one
already migrated, so opening the store has nothing to do), given to the code under test as
THREADEDIT_DATABASE_URL; otherwise each test's data directory holds its SQLite file as today.
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
from pathlib import Path

import pytest

from tests.processes import free_port

SUPERUSER = "postgres"
_START_TIMEOUT_SECONDS = 60
TEST_DATABASE_ENV = "THREADEDIT_TEST_DATABASE"  # "postgresql": the shared fixtures use PostgreSQL
DATABASE_URL_ENV = "THREADEDIT_DATABASE_URL"
_MIGRATED_TEMPLATE = "threadedit_migrated"


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
        self._options = ""  # the server's command-line options, to start it again the same way

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
            self._options = options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} "
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

    def stop_server(self) -> None:
        """Stop the server as in a failover or an upgrade (fast: sessions are cut off); the data
        stays, and `start_server` brings it back on the same port."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def start_server(self) -> None:
        """Start the stopped server again; returns once it accepts connections."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", self._options, "-w",
                  "-t", str(_START_TIMEOUT_SECONDS), "start")

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


_shared: Cluster | None = None
_template_ready = False


def shared_cluster() -> Cluster:
    """The one PostgreSQL server of this test process, started on first use and stopped when the
    process ends (atexit, or its watchdog if the process is killed)."""
    global _shared
    if _shared is None:
        _shared = Cluster(require_postgres()).start()
    return _shared


def on_postgres() -> bool:
    """Whether this run puts the shared fixtures on PostgreSQL (THREADEDIT_TEST_DATABASE)."""
    return os.environ.get(TEST_DATABASE_ENV, "").strip().lower() in ("postgresql", "postgres", "pg")


def new_migrated_database() -> str:
    """A new database with the store's schema already in it: a copy of a template migrated
    once per run, which is much faster than migrating every test's database."""
    global _template_ready
    cluster = shared_cluster()
    if not _template_ready:
        import psycopg
        from sqlalchemy import create_engine
        from sqlalchemy.pool import NullPool

        from bot.storage.migrate import _upgrade

        with psycopg.connect(host="127.0.0.1", port=cluster.port, user=SUPERUSER, dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{_MIGRATED_TEMPLATE}"')
        engine = create_engine(cluster.url(_MIGRATED_TEMPLATE), poolclass=NullPool,
                               connect_args={"prepare_threshold": None})
        try:
            with engine.begin() as conn:
                _upgrade(conn)
        finally:
            engine.dispose()
        _template_ready = True
    return cluster.new_database(template=_MIGRATED_TEMPLATE)


def store_url(data_dir: Path) -> str | Path:
    """Where a test's store is: this test's PostgreSQL database, or the data directory's file."""
    return os.environ.get(DATABASE_URL_ENV) or data_dir / "threadedit.sqlite3"


def process_env() -> dict[str, str]:
    """What a `python -m threadedit` child needs to use this test's database (nothing on SQLite: its
    data directory says where the file is)."""
    url = os.environ.get(DATABASE_URL_ENV)
    return {DATABASE_URL_ENV: url} if url and on_postgres() else {}


@pytest.fixture(autouse=True)
def test_database(monkeypatch: pytest.MonkeyPatch) -> str | None:
    """The database of this test: on PostgreSQL a new one, named in THREADEDIT_DATABASE_URL,
    which every Settings (and so every harness and the store fixture) reads; on SQLite none is
    set, so the data directory's file is used (a developer's own URL never leaks in)."""
    monkeypatch.delenv(DATABASE_URL_ENV, raising=False)
    if not on_postgres():
        return None
    url = new_migrated_database()
    monkeypatch.setenv(DATABASE_URL_ENV, url)
    return url


@pytest.fixture(scope="session")
def pg_cluster() -> Cluster:
    """One PostgreSQL server for the whole test session (stopped when the run ends)."""
    return shared_cluster()


@pytest.fixture
def pg_url(pg_cluster: Cluster) -> str:
    """A new, empty database of its own for each test."""
    return pg_cluster.new_database()
