"""Child processes of a benchmark: the fake model and `threadedit playground`, and their memory.

Every child is started here, stopped here by its own pid (SIGTERM, then SIGKILL after a few
seconds), and writes its stderr to a log file in the run's work directory, whose tail is shown
if it fails to start.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.fake_model import API_KEY

REPO = Path(__file__).resolve().parents[1]
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy")


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a child: no proxies (everything is on 127.0.0.1), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS}
    env.update(extra)
    return env


class ChildFailed(RuntimeError):
    pass


def _tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


async def _first_line(proc: asyncio.subprocess.Process, log: Path, what: str,
                      within: float = 60.0) -> str:
    assert proc.stdout is not None
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), within)).decode().strip()
    except TimeoutError:
        line = ""
    if not line:
        await stop(proc)
        raise ChildFailed(f"{what} did not start; its log ends:\n{_tail(log)}")
    return line


async def stop(proc: asyncio.subprocess.Process, grace: float = 10.0) -> None:
    if proc.returncode is not None:
        return
    proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), grace)
    except TimeoutError:
        proc.kill()
        await proc.wait()


@dataclass
class FakeModel:
    proc: asyncio.subprocess.Process
    base_url: str
    control_url: str
    api_key: str = API_KEY

    async def _call(self, method: str, path: str) -> dict[str, Any]:
        async with httpx.AsyncClient(trust_env=False, timeout=30) as client:
            r = await client.request(method, self.control_url + path)
            r.raise_for_status()
            return dict(r.json())

    async def stats(self, since: int = 0) -> dict[str, Any]:
        return await self._call("GET", f"/stats?since={since}")

    async def release(self) -> None:
        await self._call("POST", "/release")

    async def reset(self) -> None:
        await self._call("POST", "/reset")


@asynccontextmanager
async def fake_model(work: Path, *, latency: float | None, trust_history: bool = False,
                     preload: str = "2048x2048") -> AsyncIterator[FakeModel]:
    """The fake model in its own process; `latency=None` holds answers until `release()`."""
    log = work / f"fake-model-{time.monotonic_ns()}.log"
    cmd = [sys.executable, "-m", "bench.fake_model", "--photos", str(work / "photos"),
           "--latency", "hold" if latency is None else str(latency), "--preload", preload]
    if trust_history:
        cmd.append("--trust-history")
    with log.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            *cmd, cwd=REPO, env=clean_env(), stdout=asyncio.subprocess.PIPE, stderr=err)
    try:
        info = json.loads(await _first_line(proc, log, "The fake model"))
        yield FakeModel(proc, info["base_url"], info["control_url"])
    finally:
        await stop(proc)


def app_env(data_dir: Path, fake: FakeModel, **extra: str) -> dict[str, str]:
    """THREADEDIT_* and GEMINI_* settings for a benchmark: Gemini 3.1 Flash Image at 2K, 1:1,
    pointed at the fake, spend limits off (benchmarks make hundreds of turns in minutes)."""
    return {
        "THREADEDIT_DATA_DIR": str(data_dir), "GEMINI_API_KEY": fake.api_key,
        "GEMINI_BASE_URL": fake.base_url, "THREADEDIT_ENGINE": "gemini",
        "THREADEDIT_MODEL": "gemini-3.1-flash-image", "THREADEDIT_IMAGE_SIZE": "2K",
        "THREADEDIT_ASPECT_RATIO": "1:1", "THREADEDIT_USER_TURNS_PER_HOUR": "0",
        "THREADEDIT_DAILY_BUDGET_USD": "0", "THREADEDIT_LOG_LEVEL": "WARNING", **extra,
    }


@dataclass
class Playground:
    proc: asyncio.subprocess.Process
    url: str
    spawned_at: float  # perf_counter() just before the spawn

    def memory_kb(self) -> dict[str, int]:
        return rss_kb(self.proc.pid)


@asynccontextmanager
async def playground(work: Path, env: dict[str, str]) -> AsyncIterator[Playground]:
    """`threadedit playground --port 0` as an operator runs it, from a directory with no .env;
    yields once it has printed its address (not yet necessarily answering: see wait_ready)."""
    log = work / f"playground-{time.monotonic_ns()}.log"
    with log.open("wb") as err:
        spawned = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "threadedit", "playground", "--port", "0", cwd=work,
            env=clean_env(**env), stdout=asyncio.subprocess.PIPE, stderr=err)
    try:
        line = await _first_line(proc, log, "threadedit playground")
        url = line.rsplit(" ", 1)[-1]
        if not url.startswith("http://"):
            raise ChildFailed(f"threadedit playground said {line!r}; its log ends:\n{_tail(log)}")
        yield Playground(proc, url, spawned)
    finally:
        await stop(proc)


async def wait_ready(url: str, within: float = 60.0) -> float:
    """perf_counter() when GET `url` first answered 200."""
    deadline = time.perf_counter() + within
    async with httpx.AsyncClient(trust_env=False, timeout=within) as client:
        while True:
            try:
                if (await client.get(url)).status_code == 200:
                    return time.perf_counter()
            except httpx.TransportError:
                pass
            if time.perf_counter() > deadline:
                raise ChildFailed(f"{url} did not answer 200 within {within:.0f} s")
            await asyncio.sleep(0.005)


def rss_kb(pid: int) -> dict[str, int]:
    """VmRSS (resident now) and VmHWM (the most it has ever been resident), in kB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            out[name] = int(value.split()[0])
    return out
