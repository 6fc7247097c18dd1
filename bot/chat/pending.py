"""Instructions that arrived while the store did not answer: kept, then handled once it answers.

Slack has acknowledged an event before the core handles it (it will not send it again), and
Discord's gateway never redelivers, so an instruction whose recording met `StoreUnavailable`
(the store down past its own retries) would be lost. Instead it is kept here, in this process's
memory, in the order received, and handled again from where it stopped as soon as the store
answers: with its original event id, so the store's event claims still make one turn of it
whichever replica handles a redelivery. A kept instruction whose event claim was already made
goes on from after the claim (`then`); one whose turn was recorded is done (`recorded`): running
its handling again would make a second turn.

Bounded: at most MAX_KEPT instructions, each for at most MAX_AGE_SECONDS; one past either bound,
or still kept when the process stops, is given up with one log line and a sentence in its
thread asking to send it again.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import contextvars
import itertools
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bot.chat import presenter
from bot.chat.backend import ChatBackend, IncomingMessage
from bot.chat.text import Text
from bot.domain import SessionKey
from bot.errors import StoreUnavailable

log = logging.getLogger(__name__)

MAX_AGE_SECONDS = 600.0  # a person who asked ten minutes ago has likely asked again or left
MAX_KEPT = 1000  # per process: a few hundred bytes each, plus the platform's retries of them
LOOK_AGAIN_SECONDS = 1.0  # between tries of the oldest (each try also waits out the store's retries)
KNOWN_SESSIONS = 10_000  # threads this process saw holding a session: a plain reply there is told
TELL_AT_STOP_SECONDS = 10.0  # a stop waits this long at most for the "send it again" sentences

Step = Callable[[], Awaitable[None]]
Tell = Callable[[Text], Awaitable[None]]


@dataclass(eq=False)
class Kept:
    """One instruction: what is left of its handling, and how to tell its author about it."""

    number: int  # the order it arrived in, in this process
    what: str  # for the log: "a message", "a retry button", ...
    identity: str  # the platform's id for it: two deliveries of one instruction are kept once
    step: Step  # what is left to do: the whole handling, or what follows its event claim
    tell: Tell | None  # says a sentence to its author where they will look; None: nowhere known
    received: float = field(default_factory=time.monotonic)
    recorded: bool = False  # its turn (or change) is in the store: nothing is left to keep
    # Set once its author was told it is kept: its queued line must not come before that.
    told: asyncio.Event = field(default_factory=asyncio.Event)


_current: contextvars.ContextVar[Kept | None] = contextvars.ContextVar("threadedit_kept", default=None)


class PendingInstructions:
    def __init__(self, *, max_age: float = MAX_AGE_SECONDS, max_kept: int = MAX_KEPT,
                 look_again: float = LOOK_AGAIN_SECONDS) -> None:
        self.max_age = max_age
        self.max_kept = max_kept
        self.look_again = look_again
        self._kept: list[Kept] = []  # in the order received
        self._numbers = itertools.count(1)
        self._sessions: OrderedDict[SessionKey, None] = OrderedDict()
        self._drain: asyncio.Task[None] | None = None
        self._closed = False

    def __len__(self) -> int:
        return len(self._kept)

    # What the core says while it handles an instruction

    async def run(self, step: Step, *, what: str, identity: str | None, tell: Tell | None) -> None:
        """Handle an instruction now; if the store does not answer, keep it for later. `identity`
        is the platform's id of it (None: it has none, and each delivery counts)."""
        number = next(self._numbers)
        kept = Kept(number, what, identity or f"#{number}", step, tell)
        if self._kept:
            # The store did not answer the last try: behind those kept already, in order (the
            # oldest's next try tells when it answers again).
            await self._keep(kept, None)
            return
        stopped = await self._attempt(kept)
        if stopped is not None:
            await self._keep(kept, stopped)

    @staticmethod
    def then(step: Step, tell: Tell | None = None) -> None:
        """The instruction being handled got this far (its event is claimed): if the store stops
        answering now, it goes on with `step`, not from the start (the claim would refuse it)."""
        kept = _current.get()
        if kept is not None:
            kept.step = step
            kept.tell = tell or kept.tell

    @staticmethod
    def recorded() -> None:
        """The instruction being handled is in the store: done, whatever fails after this."""
        kept = _current.get()
        if kept is not None:
            kept.recorded = True

    def session_seen(self, key: SessionKey) -> None:
        """A thread known to hold a session: a reply there during an outage is told it was kept."""
        self._sessions[key] = None
        self._sessions.move_to_end(key)
        if len(self._sessions) > KNOWN_SESSIONS:
            self._sessions.popitem(last=False)

    def is_session(self, key: SessionKey) -> bool:
        return key in self._sessions

    async def aclose(self) -> None:
        """A stop: what is still kept is given up, each with a line and, when possible, a sentence."""
        self._closed = True
        if self._drain is not None:
            self._drain.cancel()
            await asyncio.gather(self._drain, return_exceptions=True)
        given_up, self._kept = [k for k in self._kept if not k.recorded], []
        for kept in given_up:
            log.warning("%s from before the store stopped answering was not recorded: the process "
                        "is stopping", _said(kept))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(TELL_AT_STOP_SECONDS):
                for kept in given_up:
                    await _tell(kept, presenter.NOT_KEPT_STOPPED)

    # Keeping and trying again

    async def _attempt(self, kept: Kept) -> StoreUnavailable | None:
        """Run what is left of it; the error when the store did not answer (and it is not done)."""
        token = _current.set(kept)
        try:
            await kept.step()
        except StoreUnavailable as exc:
            if not kept.recorded:
                return exc
            log.warning("%s was recorded, then the store stopped answering; its turn runs from the "
                        "queue", _said(kept))
        finally:
            _current.reset(token)
        return None

    async def _keep(self, kept: Kept, exc: StoreUnavailable | None) -> None:
        if any(k.identity == kept.identity for k in self._kept):
            return  # another delivery of one kept already (Slack's `message` twin of a mention)
        if self._closed or len(self._kept) >= self.max_kept:
            why = "the process is stopping" if self._closed else f"{self.max_kept} are kept already"
            log.warning("%s could not be recorded: the store is not answering and %s", _said(kept), why)
            await _tell(kept, presenter.NOT_KEPT_STOPPED if self._closed else presenter.NOT_KEPT_FULL)
            return
        bisect.insort(self._kept, kept, key=lambda k: k.number)
        cause = f" ({exc})" if exc is not None else ""
        log.warning("%s is kept until the store answers%s; %d kept", _said(kept), cause, len(self._kept))
        if self._drain is None or self._drain.done():
            self._drain = asyncio.create_task(self._try_kept(), name="kept-instructions")
        try:
            await _tell(kept, presenter.KEPT)  # a slow platform delays this one's next try only
        finally:
            kept.told.set()

    async def _try_kept(self) -> None:
        """Try the oldest kept instruction until the store answers, then the next, in order."""
        while self._kept:
            await self._give_up_old()
            if not self._kept:
                return
            oldest = self._kept[0]
            await oldest.told.wait()
            try:
                stopped = await self._attempt(oldest)
            except Exception as exc:  # the platform or a bug: this one ends, the others go on
                log.warning("%s could not be handled after the store answered again (%s)",
                            _said(oldest), type(exc).__name__)
                stopped = None
            if stopped is None:
                self._kept.remove(oldest)
                if not self._kept:
                    log.warning("the store answers again: every kept instruction was handled")
                continue
            await asyncio.sleep(self.look_again)

    async def _give_up_old(self) -> None:
        now = time.monotonic()
        while self._kept and now - self._kept[0].received > self.max_age:
            kept = self._kept.pop(0)
            log.warning("%s could not be recorded: the store did not answer for %.0f s", _said(kept),
                        self.max_age)
            await _tell(kept, presenter.NOT_KEPT_TOO_LONG)


def teller(backend: ChatBackend, key: SessionKey, user: str, opening: IncomingMessage | None = None) -> Tell:
    """How to tell `user` in `key`'s thread that their instruction is kept (or was given up); a
    message that starts a session in a thread of its own has that thread opened first."""
    async def tell(text: Text) -> None:
        if opening is not None and opening.needs_thread and not await backend.open_thread(opening):
            return  # the backend said why where they wrote; the replay tries the thread again
        await backend.post_text(key, presenter.addressed(user, text))
    return tell


def _said(kept: Kept) -> str:
    return f"{kept.what.capitalize()} ({kept.identity})"


async def _tell(kept: Kept, text: Text) -> None:
    if kept.tell is None:
        return
    try:
        await kept.tell(text)
    except Exception as exc:  # the platform may be unreachable too: the log line stands alone
        log.warning("could not tell the author of %s (%s)", kept.identity, type(exc).__name__)
