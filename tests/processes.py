"""threadedit's long-running commands as an operator starts them: real processes, each read
through the line that says it is up, and stopped the way a service manager stops them."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def start_run(cwd: Path, env: dict[str, str], *args: str) -> tuple[asyncio.subprocess.Process, str]:
    """Start `threadedit run` (or `threadedit ARGS`: `run --no-worker`, `worker`); return the
    process and the first line it writes to stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "threadedit", *(args or ("run",)), cwd=cwd, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stderr is not None
    line = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
    return proc, line


async def start_playground(cwd: Path, env: dict[str, str], *args: str,
                           ) -> tuple[asyncio.subprocess.Process, str]:
    """Start `threadedit playground`; return the process and its first stdout line (the
    address), or an empty line when it ended before serving."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "threadedit", "playground", *args, cwd=cwd, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
    return proc, line


async def stop(proc: asyncio.subprocess.Process) -> tuple[int, str]:
    """SIGTERM, as systemd and docker stop send it; return the exit status and all the output
    the process wrote after what the caller already read."""
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, (out + err).decode()


async def run_to_end(cwd: Path, env: dict[str, str], *args: str,
                     timeout: float = 30) -> tuple[int, str, str]:  # noqa: ASYNC109
    """Run `python -m threadedit ARGS` until it ends on its own; return status, stdout and stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "threadedit", *args, cwd=cwd, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"`threadedit {' '.join(args)}` did not end within {timeout} s") from None
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()
