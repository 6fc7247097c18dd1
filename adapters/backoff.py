"""Waiting for a chat platform that cannot be reached: exponential backoff, one line per retry.

A bot is often started before the network is up, or while Slack or Discord has an outage. It
should neither die nor flood its log: each failed attempt prints one sentence on stderr (what
could not be reached, what to check, when it tries again), and every wait is an ordinary
`asyncio.sleep`, so a stop (SIGTERM, Ctrl-C) cancels it at once.
"""

from __future__ import annotations

import asyncio
import random
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

import aiohttp

T = TypeVar("T")

FIRST_DELAY = 1.0  # seconds before the second attempt
MAX_DELAY = 60.0  # the delay doubles up to this
JITTER = 0.2  # each delay is shortened by up to 20%, so bots restarted together spread out

Report = Callable[[str], None]


def report(line: str) -> None:
    """One line for the operator on stderr, like `threadedit: started ...`."""
    print(f"threadedit: {line}", file=sys.stderr, flush=True)


class Backoff:
    """1 s, 2 s, 4 s ... up to 60 s, each less up to 20% at random (never more than the cap)."""

    def __init__(self, first: float = FIRST_DELAY, cap: float = MAX_DELAY, jitter: float = JITTER,
                 rng: Callable[[], float] = random.random) -> None:
        self._next, self.cap, self.jitter, self._rng = first, cap, jitter, rng

    def next_delay(self) -> float:
        nominal = self._next
        self._next = min(self._next * 2, self.cap)
        return nominal * (1 - self.jitter * self._rng())


def network_reason(exc: BaseException) -> str | None:
    """A few words on why a connection failed, or None when `exc` is not a network failure."""
    if isinstance(exc, asyncio.TimeoutError):
        return "no answer in time"
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, ConnectionRefusedError):
            return "connection refused"
        if isinstance(exc.os_error, socket.gaierror):
            return f"host not found: {exc.os_error.strerror}"
        return str(exc.os_error.strerror or exc.os_error or "could not connect")
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        return f"websocket refused with HTTP {exc.status}"
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"HTTP {exc.status}"
    if isinstance(exc, aiohttp.ClientError | OSError):
        return str(exc) or type(exc).__name__
    return None


async def until_reachable(attempt: Callable[[], Awaitable[T]],
                          transient: Callable[[Exception], str | None], *,
                          say: Report | None = None, backoff: Backoff | None = None) -> T:
    """Run `attempt` until it succeeds. A failure `transient` describes (a sentence without the
    retry part) is reported and retried after the next delay; any other failure is raised."""
    backoff, say = backoff or Backoff(), say or report
    while True:
        try:
            return await attempt()
        except Exception as exc:
            problem = transient(exc)
            if problem is None:
                raise
        delay = backoff.next_delay()
        say(f"{problem}; retrying in {delay:.1f} s.")
        await asyncio.sleep(delay)
