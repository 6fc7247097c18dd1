"""PostgreSQL LISTEN for the turn queue: wakes a worker as soon as another process adds, finishes or
gives back a turn (bot/storage/repositories.py `announce` sends the NOTIFY on commit).

One connection per worker, outside SQLAlchemy's pool: a LISTEN belongs to a session, and a pooled
connection would hand it to other operations. A lost connection (a server restart) is made again
with backoff; the worker polls meanwhile, and is woken once on reconnecting, since notices sent
while it was away are gone. Behind PgBouncer in transaction mode LISTEN receives nothing: workers
then find work by polling alone (README, "Scaling out").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import psycopg
from sqlalchemy.engine import make_url

from bot.storage.repositories import TURNS_CHANNEL

log = logging.getLogger(__name__)

RECONNECT_FIRST_WAIT = 1.0
RECONNECT_MAX_WAIT = 30.0


def libpq_url(url: str) -> str:
    """The SQLAlchemy URL (postgresql+psycopg://...) as libpq takes it."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def listen_for_turns(url: str, wake: Callable[[], None]) -> None:
    wait = RECONNECT_FIRST_WAIT
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(
                    libpq_url(url), autocommit=True, connect_timeout=10) as conn:
                await conn.execute(f"LISTEN {TURNS_CHANNEL}")
                wait = RECONNECT_FIRST_WAIT
                wake()  # whatever was announced while this worker was not listening
                async for _notice in conn.notifies():
                    wake()
        except psycopg.Error as exc:
            # The message names host and port at most, never the password (libpq's own words).
            log.warning("not listening for queued turns (%s); polling until the database answers",
                        type(exc).__name__)
        await asyncio.sleep(wait)
        wait = min(RECONNECT_MAX_WAIT, wait * 2)
