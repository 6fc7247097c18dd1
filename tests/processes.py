"""`threadedit run` as an operator starts it: a real process, read through its first line."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def start_run(cwd: Path, env: dict[str, str]) -> tuple[asyncio.subprocess.Process, str]:
    """Start `threadedit run`; return the process and the first line it writes to stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "run", cwd=cwd, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stderr is not None
    line = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
    return proc, line
