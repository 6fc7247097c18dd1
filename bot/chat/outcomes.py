"""ThreadOutcomes: a turn's progress line and its outcome, in its thread, for every platform.

ChatCore (bot/chat/core.py) records turns and posts their first line; this half keeps that line
up to date while the turn runs and then shows the outcome: a version post with its buttons, or a
line that made no version with a Retry button of its own (bot/chat/controls.py `retry_buttons`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from bot.chat import presenter
from bot.chat.backend import ChatBackend, VersionPost
from bot.chat.controls import buttons_for, retry_buttons
from bot.chat.text import Text
from bot.deliveries import PROGRESS, VERSION, Deliveries
from bot.domain import FINISHED, Session, Turn
from bot.reads import SessionReads
from bot.results import TurnResult
from bot.service import EditService

# A worker that took a turn another process recorded looks this long for the progress post that
# process makes (it usually exists: posting takes milliseconds, a claim follows the commit).
PROGRESS_POST_WAITS = (0.1, 0.2, 0.4, 0.8, 1.5)


class ThreadOutcomes:
    def __init__(self, service: EditService, backend: ChatBackend, *, deliveries: Deliveries,
                 reads: SessionReads, progress_interval: float, offline: bool,
                 gallery_link: Callable[[int], str | None] | None) -> None:
        self.service = service
        self.backend = backend
        self.platform = backend.platform
        self.deliveries = deliveries
        self.reads = reads
        self.progress_interval = progress_interval
        self.offline = offline
        self.gallery_link = gallery_link
        self._tickers: dict[int, asyncio.Task[None]] = {}
        self._progress_posted: dict[int, asyncio.Event] = {}

    def aclose(self) -> None:
        for task in self._tickers.values():
            task.cancel()

    # The progress line this process posts for a turn it recorded

    def posting(self, turn_id: int) -> asyncio.Event:
        """This process is about to post the turn's progress line: a worker here that starts the
        turn meanwhile waits for the event before it ticks the line."""
        posted = self._progress_posted[turn_id] = asyncio.Event()
        return posted

    def posted(self, turn_id: int, *, runs_here: bool) -> None:
        posted = self._progress_posted.get(turn_id)
        if posted is not None:
            posted.set()
        if not runs_here:  # the fleet's workers run it: nothing here waits for this
            self._progress_posted.pop(turn_id, None)

    async def catch_up(self, session: Session, turn: Turn, message_id: str) -> None:
        """A worker in another process may have finished the turn before this process recorded
        its progress line (the platform was slow to take the post): that worker could not find
        the line to update, so the line is brought to the outcome here."""
        now = await self.reads.turn(turn.id)
        if now is None or now.state not in FINISHED:
            return  # whoever finishes it will find the line
        buttons: list[tuple[str, str]] = []
        if now.version is not None:  # the line needs the number only: no image to fetch
            text = presenter.ready_line(now.version)
        else:
            text, buttons = self.no_version_line(await self.service.result_of(turn.id))
        with contextlib.suppress(Exception):  # progress is best effort
            await self.backend.update_text(session.key, message_id, text, buttons=buttons)

    def no_version_line(self, result: TurnResult) -> tuple[Text, list[tuple[str, str]]]:
        """What a turn that made no version says in its thread, and its Retry button: the person
        reads the line where the turn was asked, so that is where trying again is offered."""
        text = presenter.addressed(result.author, presenter.no_version_line(result, self.offline))
        return text, retry_buttons(result.session_id, result.turn_id)

    # TurnListener: progress and results

    async def turn_started(self, turn: Turn) -> None:
        # The pipeline runs this beside the model call, not inside its slot: waiting here for
        # the platform to take the progress post delays only this thread's progress line.
        started = time.monotonic()
        # Read before the model call can have made the version (it runs meanwhile).
        spot = await self.reads.queue_spot(turn)
        session, version = spot.session, spot.next_version
        posted = self._progress_posted.get(turn.id)
        if posted is not None:
            await posted.wait()
            message_id = await self.deliveries.progress_post(turn.id)
        else:  # recorded by another process (an ingress replica), which may still be posting it
            message_id = await self._progress_post_of(turn.id)
        if message_id is None:
            return

        async def tick() -> None:
            while True:
                text = presenter.progress_line(version, turn.model, turn.aspect_ratio,
                                               turn.image_size, time.monotonic() - started)
                with contextlib.suppress(Exception):  # progress is best effort, never fatal
                    await self.backend.update_text(session.key, message_id, text)
                with contextlib.suppress(Exception):
                    await self.backend.show_working(session.key)
                await asyncio.sleep(self.progress_interval)

        self._tickers[turn.id] = asyncio.create_task(tick())

    async def _progress_post_of(self, turn_id: int) -> str | None:
        for wait in PROGRESS_POST_WAITS:
            message_id = await self.deliveries.progress_post(turn_id)
            if message_id is not None:
                return message_id
            await asyncio.sleep(wait)
        return await self.deliveries.progress_post(turn_id)

    async def turn_finished(self, result: TurnResult) -> None:
        ticker = self._tickers.pop(result.turn_id, None)
        if ticker:
            # Let a progress edit already under way finish first, so it cannot land after
            # (and hide) the outcome below.
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)
        posts = await self.deliveries.turn_posts(result.turn_id)
        if self._progress_posted.pop(result.turn_id, None) is None and posts.progress is None:
            # Recorded by another process, which may still be posting its line: find it, so the
            # outcome replaces the line instead of leaving it at "Working" above the version.
            if await self._progress_post_of(result.turn_id) is not None:
                posts = await self.deliveries.turn_posts(result.turn_id)
        key, progress_id = posts.key, posts.progress
        if result.status != "ok":
            text, buttons = self.no_version_line(result)
            if progress_id:
                await self.backend.update_text(key, progress_id, text, buttons=buttons)
            else:
                # Recorded as the turn's line, so a 🔁 reaction on it finds the turn it retries.
                line_id = await self.backend.post_text(key, text, buttons=buttons)
                await self.deliveries.record_post(self.platform, self.backend.post_channel(key),
                                                  line_id, posts.session_id, result.turn_id, PROGRESS)
            await self.deliveries.mark_delivered(result.turn_id)
            return
        assert result.version is not None and result.image_path is not None
        if posts.version:
            await self.deliveries.mark_delivered(result.turn_id)
            return  # already posted (a resumed turn): post exactly once
        post = VersionPost(
            session_id=result.session_id, version=result.version, image_path=result.image_path,
            mime=result.mime or "image/jpeg",
            caption=presenter.caption(result),
            alt_text=f"v{result.version}: {result.instruction[:900]}",
            buttons=buttons_for(result.session_id, result.version, result.model, result.image_size),
            gallery_url=self.gallery_link(result.session_id) if self.gallery_link else None,
        )
        message_id = await self.backend.post_version(key, post)
        await self.deliveries.record_post(self.platform, self.backend.post_channel(key), message_id,
                                          posts.session_id, result.turn_id, VERSION)
        await self.deliveries.mark_delivered(result.turn_id)
        if progress_id:
            with contextlib.suppress(Exception):
                await self.backend.update_text(key, progress_id, presenter.ready_line(result.version))
