"""The fleet benchmark's parts: a throwaway PostgreSQL server, `threadedit worker` and
`threadedit run --no-worker` processes on it, and a fake Slack that notes when each thread got
its first post from the bot.

Every child is started here, read through the first line it writes to stderr (the line that says
it is up), its further output copied to a log file in the run's work directory, and stopped by
its own pid (SIGTERM; SIGKILL for the one the benchmark kills on purpose).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.processes import PROXY_VARS, ChildFailed, FakeModel, app_env
from tests.fakes.slack_server import FakeSlack

# Variables of the bench's own shell that would change what a child does (a developer's Slack
# token, another database): a child gets only what the benchmark gives it.
_OWN_PREFIXES = ("THREADEDIT_", "GEMINI_", "SLACK_", "DISCORD_", "AWS_")


def child_env(data_dir: Path, fake: FakeModel, database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in PROXY_VARS and not k.startswith(_OWN_PREFIXES)}
    env.update(app_env(data_dir, fake, **{**extra, "THREADEDIT_DATABASE_URL": database_url}))
    return env


@asynccontextmanager
async def postgres() -> AsyncIterator[Any]:
    """A throwaway PostgreSQL server started as the tests start theirs (tests/postgres.py:
    initdb in a temporary folder, 127.0.0.1 only, fsync off), or None when Debian's server
    binaries are not installed (the PostgreSQL parts then say "blocked")."""
    from tests.postgres import Cluster, find_bin_dir

    bin_dir = find_bin_dir()
    if bin_dir is None or not (bin_dir / "pg_ctl").exists():
        yield None
        return
    cluster = await asyncio.to_thread(lambda: Cluster(bin_dir).start())
    try:
        yield cluster
    finally:
        await asyncio.to_thread(cluster.stop)


@dataclass
class Child:
    name: str
    proc: asyncio.subprocess.Process
    first_line: str
    log: Path
    _copy: asyncio.Task[None]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL, as an out-of-memory killer or a pulled plug ends a process: no clean-up."""
        if self.proc.returncode is None:
            self.proc.kill()

    async def stop(self, grace: float = 15.0) -> int:
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), grace)
            except TimeoutError:
                self.proc.kill()
        code = await self.proc.wait()
        with suppress(asyncio.CancelledError):
            await self._copy
        return code

    def cpu_seconds(self) -> float:
        """User + system CPU time this process has used so far (0 once it has ended)."""
        return process_cpu_seconds(self.pid)

    def tracebacks(self) -> bool:
        return "Traceback" in self.log.read_text(errors="replace")


async def _copy_rest(stream: asyncio.StreamReader, log: Path) -> None:
    with log.open("ab") as out:
        while chunk := await stream.read(65536):
            out.write(chunk)
            out.flush()


async def start_threadedit(work: Path, env: dict[str, str], *args: str, expect: str,
                           within: float = 60.0) -> Child:
    """`python -m threadedit ARGS` from a directory with no .env; returns once its first stderr
    line has come and contains `expect`."""
    name = " ".join(args)
    log = work / f"{args[0]}-{time.monotonic_ns()}.log"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "threadedit", *args, cwd=work, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    assert proc.stderr is not None
    try:
        line = (await asyncio.wait_for(proc.stderr.readline(), within)).decode()
    except TimeoutError:
        line = ""
    log.write_text(line)
    child = Child(name, proc, line.strip(), log, asyncio.create_task(_copy_rest(proc.stderr, log)))
    if expect not in line:
        await child.stop()
        raise ChildFailed(f"`threadedit {name}` did not start (wanted {expect!r}); its output ends:\n"
                          + "\n".join(log.read_text(errors="replace").splitlines()[-15:]))
    return child


async def start_many(work: Path, env: dict[str, str], count: int, *args: str, expect: str,
                     extra: list[dict[str, str]] | None = None) -> list[Child]:
    started = await asyncio.gather(
        *(start_threadedit(work, {**env, **(extra[i] if extra else {})}, *args, expect=expect)
          for i in range(count)), return_exceptions=True)
    children = [c for c in started if isinstance(c, Child)]
    failed = [c for c in started if not isinstance(c, Child)]
    if failed:
        await stop_all(children)
        raise failed[0]
    return children


async def stop_all(children: list[Child]) -> list[int]:
    return list(await asyncio.gather(*(c.stop() for c in children)))


class TimedSlack(FakeSlack):
    """The tests' fake Slack, noting when (time.monotonic) the bot first posted in each thread."""

    def __init__(self, bot_token: str) -> None:
        super().__init__(bot_token)
        self.first_post: dict[str, float] = {}
        self.posted = asyncio.Event()  # set on every first post in a thread

    async def _post_message(self, args: dict[str, Any]) -> dict[str, Any]:
        answer = await super()._post_message(args)
        thread = str(args.get("thread_ts") or answer["ts"])
        if thread not in self.first_post:
            self.first_post[thread] = time.monotonic()
            self.posted.set()
        return answer


def process_cpu_seconds(pid: int) -> float:
    try:
        # After the command, which is in parentheses and may hold spaces: utime and stime are the
        # 12th and 13th fields (the 14th and 15th of the whole line).
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine since boot, from /proc/stat."""
    fields = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


class CpuMeter:
    """How busy the whole machine's CPUs were since this was made (every process, other people's
    included): near 100% means a figure measured the machine's cores rather than threadedit."""

    def __init__(self) -> None:
        self._busy, self._total = _cpu_jiffies()

    def busy(self) -> float:
        busy, total = _cpu_jiffies()
        return (busy - self._busy) / max(1, total - self._total)
