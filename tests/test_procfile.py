"""deploy/Procfile as an operator starts it: `honcho start -f deploy/Procfile -c worker=2` with an
env file naming one PostgreSQL store, the fake Slack and the fake Gemini. An ingress, two workers
and the playground start; a Slack mention sent to the ingress is run by a worker and posted once
in its thread; a playground instruction is run; SIGTERM to honcho stops every process cleanly."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.conftest import API_KEY
from tests.fakes.gemini_server import FakeGemini
from tests.fakes.slack_server import FakeSlack
from tests.postgres import DATABASE_URL_ENV
from tests.processes import free_port
from tests.slack_harness import SECRET, TOKEN, eventually
from tests.test_cli import _env
from tests.test_slack_replicas import Mention, Replica, _deliver, _done, _envelope, _one_turn_each

ROOT = Path(__file__).resolve().parents[1]
PROCFILE = ROOT / "deploy" / "Procfile"
# honcho's Manager exits with 128 + the signal it was stopped by (honcho/manager.py, SIGNALS:
# SIGINT 130, SIGTERM 143) after stopping every process; a process's own status is on its
# "NAME stopped (rc=N)" line.
HONCHO_STOPPED_BY_SIGTERM = 143
# honcho sends SIGKILL to whatever has not stopped 5 s after its SIGTERM (manager.KILL_WAIT).
LINE = re.compile(r"^\d\d:\d\d:\d\d (\S+)\s*\| (.*)$")


def _free_port_pair(gap: int) -> int:
    """A base port such that base and base + gap are both free: honcho gives the Procfile's first
    line PORT=base and its third base + 200."""
    for _ in range(50):
        base = free_port()
        if base + gap > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", base + gap))
            except OSError:
                continue
        return base
    raise AssertionError("no free pair of ports")


class Honcho:
    """One `honcho start` process and every line it printed, by process name."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[tuple[str, str]] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            m = LINE.match(raw.decode(errors="replace").rstrip("\n"))
            if m:
                self.lines.append((m.group(1), m.group(2)))

    def of(self, name: str) -> list[str]:
        return [text for who, text in self.lines if who == name]

    def first(self, name: str) -> str:
        found = self.of(name)
        return found[0] if found else ""

    async def wait_for(self, cond: Callable[[], object], within: float = 30) -> None:
        try:
            await eventually(lambda: cond() or self.proc.returncode is not None, within=within)
        except AssertionError:
            raise AssertionError(self.output()) from None
        assert self.proc.returncode is None, self.output()

    def output(self) -> str:
        return "\n".join(f"{who} | {text}" for who, text in self.lines)

    async def stop(self, sig: int) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        code = await asyncio.wait_for(self.proc.wait(), 30)
        await asyncio.wait_for(self._reader, 5)
        return code


def _env_file(tmp_path: Path, slack: FakeSlack, gemini: FakeGemini, database_url: str) -> Path:
    """What an operator writes in .env for the fleet (here a file of its own, passed with -e)."""
    path = tmp_path / "fleet.env"
    path.write_text("\n".join([
        f"{DATABASE_URL_ENV}={database_url}",
        f"THREADEDIT_DATA_DIR={tmp_path / 'data'}",
        f"SLACK_BOT_TOKEN={TOKEN}", f"SLACK_SIGNING_SECRET={SECRET}", f"SLACK_API_URL={slack.api_url}",
        f"GEMINI_API_KEY={API_KEY}", f"GEMINI_BASE_URL={gemini.base_url}",
    ]) + "\n")
    return path


async def test_the_procfile_starts_the_fleet_which_runs_turns_and_stops_cleanly(
        tmp_path, slack, gemini, pg_url):
    # The venv's bin first on PATH, as `source .venv/bin/activate` does: the Procfile runs the
    # `threadedit` console script that pip installed there.
    venv_bin = Path(sys.executable).parent
    env = _env(tmp_path)
    for name in (DATABASE_URL_ENV, "THREADEDIT_DATA_DIR", "PYTHONPATH", "PORT"):
        env.pop(name, None)
    env["PATH"] = f"{venv_bin}:{env.get('PATH', '')}"
    base = _free_port_pair(200)
    env_file = _env_file(tmp_path, slack, gemini, pg_url)
    proc = await asyncio.create_subprocess_exec(
        venv_bin / "honcho", "start", "-f", str(PROCFILE), "-e", str(env_file),
        "-p", str(base), "-c", "worker=2", cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    honcho = Honcho(proc)
    roles = ("ingress.1", "worker.1", "worker.2", "playground.1")
    try:
        # Every role starts: its first line is the one that says it is up.
        await honcho.wait_for(lambda: all(honcho.of(r) for r in roles))
        assert honcho.first("ingress.1") == (
            f"threadedit: started Slack (HTTP, POST http://127.0.0.1:{base}/slack/events); "
            "no worker: `threadedit worker` processes run the turns."), honcho.output()
        for worker in ("worker.1", "worker.2"):
            assert honcho.first(worker).startswith("threadedit worker: taking turns of playground, slack"), \
                honcho.output()
        playground = f"http://127.0.0.1:{base + 200}"
        assert honcho.first("playground.1") == f"threadedit playground: {playground}", honcho.output()

        # A Slack mention sent to the ingress: one version posted in its thread, by a worker.
        mention = Mention("1700000001.000100", "1700000001.000100", "a poster of a lighthouse")
        async with httpx.AsyncClient(timeout=30) as http:
            status, _ = await _deliver(http, Replica(proc, base), _envelope(mention.event(), "EvPROCFILE"))
            assert status == 200
            await honcho.wait_for(lambda: _done(slack, mention.thread))
            await _one_turn_each(slack, gemini, pg_url, [mention])

            # A playground instruction, through the page's HTTP API, is run to a version.
            r = await http.post(f"{playground}/messages", headers={"Accept": "application/json"},
                                data={"instruction": "a lighthouse at dusk", "author": "ana"})
            assert r.status_code == 200, r.text
            sid = int(r.json()["session"])

            async def image_ready() -> bool:
                return (await http.get(f"{playground}/s/{sid}/v/1/image")).status_code == 200

            for _ in range(300):
                if await image_ready():
                    break
                assert proc.returncode is None, honcho.output()
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"the playground's v1 was not made\n{honcho.output()}")
        assert len(gemini.requests) == 2
    finally:
        code = await honcho.stop(signal.SIGTERM)
    output = honcho.output()
    assert code == HONCHO_STOPPED_BY_SIGTERM, output
    for role in roles:
        assert f"{role} stopped (rc=0)" in honcho.of("system"), output
    assert not any("SIGKILL" in line for line in honcho.of("system")), output
    assert "Traceback" not in output
    for secret in (TOKEN, SECRET, API_KEY):
        assert secret not in output
