"""ChatCore: what happens in a chat thread, for every platform.

Adapters turn platform events into `on_message`, `on_reaction` and `on_button` calls; ChatCore
deduplicates them, runs commands, submits turns to the pipeline, keeps a progress message up to
date while a turn runs, and posts each result through the platform's ChatBackend.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from bot.chat import presenter
from bot.chat.backend import AttachmentError, ChatBackend, IncomingMessage, Origin, VersionPost
from bot.chat.commands import ThreadCommand, parse_thread_command
from bot.chat.controls import Control, buttons_for, parse_button_value
from bot.chat.pending import PendingInstructions, teller
from bot.chat.text import Text
from bot.deliveries import PROGRESS, VERSION, Deliveries
from bot.domain import FINISHED, OperationRefused, Session, SessionKey, Turn, UnknownSession
from bot.images import ImageRejected
from bot.pipeline import TurnPipeline
from bot.reads import SessionReads
from bot.results import Attachment, TurnResult
from bot.service import EditService

log = logging.getLogger(__name__)

# Refusals only the person who asked needs to read: a permission, or a stale 4K button.
PRIVATE_REFUSALS = frozenset({"not_permitted", "already_largest"})
# A worker that took a turn another process recorded looks this long for the progress post that
# process makes (it usually exists: posting takes milliseconds, a claim follows the commit).
PROGRESS_POST_WAITS = (0.1, 0.2, 0.4, 0.8, 1.5)


class ChatCore:
    def __init__(
        self,
        service: EditService,
        backend: ChatBackend,
        *,
        deliveries: Deliveries,
        reads: SessionReads,
        max_concurrency: int = 4,
        allowed_channels: frozenset[str] | None = None,
        progress_interval: float = 5.0,
        offline: bool = False,
        gallery_link: Callable[[int], str | None] | None = None,
        lease_seconds: float = 30.0,
        max_age_seconds: float = 3600.0,
        work: bool = True,
    ) -> None:
        self.service = service
        self.deliveries = deliveries
        self.reads = reads
        self.backend = backend
        self.platform = backend.platform
        self.allowed_channels = allowed_channels
        self.progress_interval = progress_interval
        self.offline = offline
        self.gallery_link = gallery_link
        # This platform's turns, run here (`work`), or only recorded here for the fleet's workers.
        self.pipeline = TurnPipeline(service, max_concurrency=max_concurrency,
                                     listeners={self.platform: self}, lease_seconds=lease_seconds,
                                     max_age_seconds=max_age_seconds, work=work)
        # Instructions the store could not take (down past its retries): kept, in order, and
        # handled once it answers (bot/chat/pending.py).
        self.pending = PendingInstructions()
        self._tickers: dict[int, asyncio.Task[None]] = {}
        self._progress_posted: dict[int, asyncio.Event] = {}
        # Called with the platform's id of each delivery (an event, a click, a reaction) once
        # the adapter has handled it to its end, whatever the outcome: an observable end that
        # tests and diagnostics can wait on, instead of waiting a while and hoping.
        self.delivery_observers: list[Callable[[str], None]] = []

    async def start(self) -> None:
        """Show outcomes a stop (or a worker's death) left unshown, then take this platform's
        turns from the queue (those a stop left unfinished first: they are the oldest), unless
        the fleet's workers run them."""
        if self.pipeline.work:
            await self.pipeline.show_unshown()
        self.pipeline.start()

    def delivery_finished(self, delivery: str) -> None:
        for observe in self.delivery_observers:
            observe(delivery)

    async def aclose(self) -> None:
        await self.pending.aclose()
        for task in self._tickers.values():
            task.cancel()
        await self.pipeline.aclose()

    # Messages

    async def channel_refusal(self, key: SessionKey, user: str) -> Text | None:
        """None when the bot works in this channel; else the sentence for the user (audited)."""
        if self.allowed_channels is None or key.channel in self.allowed_channels:
            return None
        await self.deliveries.refused(None, user, "message", channel=key.channel,
                                      why="channel not allowed")
        return presenter.CHANNEL_NOT_ALLOWED

    async def on_message(self, msg: IncomingMessage) -> None:
        # Told where the person looks: a mention, or a reply in a thread known to hold a session.
        told = msg.mentioned or self.pending.is_session(msg.key)
        await self.pending.run(lambda: self._message(msg), what="a message",
                               identity=f"msg:{msg.key.channel}:{msg.message_id}",
                               tell=teller(self.backend, msg.key, msg.author, msg) if told else None)

    async def _message(self, msg: IncomingMessage) -> None:
        key = msg.key
        if self.allowed_channels is not None and key.channel not in self.allowed_channels:
            if msg.mentioned and (refusal := await self.channel_refusal(key, msg.author)):
                await self.backend.post_ephemeral(key, msg.author, refusal)
            return
        # Most messages in a busy server belong to no session: find that out with one read
        # before writing anything (the same read says whether this message was handled already).
        event = f"msg:{key.channel}:{msg.message_id}"
        session, seen = await self.deliveries.session_and_event(self.platform, key, event)
        if session is None and not msg.mentioned:
            return
        if session is not None:
            self.pending.session_seen(key)
        # A message is handled once, whichever way it arrives (a retry, a replay after a
        # reconnect, or Slack's app_mention and message events for the same mention). An edit's
        # event is claimed with its turn, after its files were fetched: a failure before that
        # leaves it unclaimed, so the platform's retry of it works.
        if seen:
            return
        command = parse_thread_command(msg.text) if session else None
        if session and command:
            if await self.deliveries.claim_event(self.platform, event):
                self.pending.then(lambda: self._command(session, msg, command))
                await self._command(session, msg, command)
            return
        if session is None and msg.needs_thread and not await self.backend.open_thread(msg):
            await self.deliveries.claim_event(self.platform, event)
            return
        try:
            try:
                attachments = [Attachment(await f.fetch(), f.name) for f in msg.files]
            except AttachmentError:
                if not await self.deliveries.claim_event(self.platform, event):
                    return  # another delivery of it was handled meanwhile
                raise
            turn = await self.service.submit_message(self.platform, event, key, msg.author, msg.text,
                                                     attachments)
        except (AttachmentError, OperationRefused, ImageRejected) as exc:
            await self.backend.post_text(key, presenter.addressed(msg.author, exc.message))
            return
        if turn is not None:
            await self._submit(turn)

    async def _command(self, session: Session, msg: IncomingMessage, cmd: ThreadCommand) -> None:
        key = msg.key
        try:
            if cmd.name == "help":
                await self.backend.post_text(key, presenter.help_text(self.offline))
            elif cmd.name == "history":
                view = await self.service.history(session.id)
                await self.backend.post_text(key, presenter.history_text(view))
            else:
                s = await self.service.change_settings(session.id, msg.author, roles=msg.roles,
                                                       **{cmd.name: cmd.value})
                await self.backend.post_text(
                    key, presenter.settings_changed(s.model, s.aspect_ratio, s.image_size))
        except OperationRefused as exc:
            await self._refuse(key, msg.author, exc)

    async def _refuse(self, key: SessionKey, user: str, exc: OperationRefused) -> None:
        if exc.code in PRIVATE_REFUSALS:
            await self.backend.post_ephemeral(key, user, Text.of(exc.message))
        else:
            await self.backend.post_text(key, presenter.addressed(user, exc.message))

    async def _submit(self, turn: Turn) -> None:
        # Recorded: a store that stops answering from here on must not make the turn again.
        self.pending.recorded()
        spot = await self.reads.queue_spot(turn, cap=self.pipeline.cap)
        session, waiting, version, slots_busy = spot.session, spot.waiting, spot.next_version, spot.slots_busy
        self.pending.session_seen(session.key)
        # The turn is in the queue already (the service recorded it): wake this process's worker
        # before posting. The turn starts its progress ticker only once that post exists.
        posted = self._progress_posted[turn.id] = asyncio.Event()
        self.pipeline.submit(turn)
        try:
            if waiting:
                text = presenter.queued_line(waiting)
            elif slots_busy:
                text = presenter.waiting_line(version)
            else:
                text = presenter.progress_line(version, turn.model, turn.aspect_ratio,
                                               turn.image_size, 0)
            message_id = await self.backend.post_text(session.key, text)
            await self.deliveries.record_post(self.platform, self.backend.post_channel(session.key),
                                              message_id, session.id, turn.id, PROGRESS)
        finally:
            posted.set()
            if not self.pipeline.work:  # the fleet's workers run it: nothing here waits for this
                self._progress_posted.pop(turn.id, None)
        await self._catch_up(session, turn, message_id)

    async def _catch_up(self, session: Session, turn: Turn, message_id: str) -> None:
        """A worker in another process may have finished the turn before this process recorded
        its progress line (the platform was slow to take the post): that worker could not find
        the line to update, so the line is brought to the outcome here."""
        now = await self.reads.turn(turn.id)
        if now is None or now.state not in FINISHED:
            return  # whoever finishes it will find the line
        if now.version is not None:  # the line needs the number only: no image to fetch
            text = presenter.ready_line(now.version)
        else:
            result = await self.service.result_of(turn.id)
            text = presenter.addressed(result.author, presenter.no_version_line(result, self.offline))
        with contextlib.suppress(Exception):  # progress is best effort
            await self.backend.update_text(session.key, message_id, text)

    # Reactions and buttons

    async def on_reaction(self, channel: str, message_id: str, emoji: str, actor: str,
                          added: bool, event_key: str | None = None,
                          roles: frozenset[str] = frozenset()) -> None:
        control = self.backend.reactions.get(emoji)
        if control is None:
            return
        sign = "+" if added else "-"
        await self.pending.run(  # untold if kept: which thread it is in, only the store knows
            lambda: self._reaction(channel, message_id, emoji, control, actor, added, event_key, roles),
            what=f"a reaction ({control.value})", tell=None,
            identity=event_key or f"react:{channel}:{message_id}:{actor}:{emoji}:{sign}")

    async def _reaction(self, channel: str, message_id: str, emoji: str, control: Control, actor: str,
                        added: bool, event_key: str | None, roles: frozenset[str]) -> None:
        # Most reactions are on other people's messages: one read, and nothing written, for them.
        # A reaction can only name a version by being on its post: the post says where it is.
        post = await self.deliveries.version_post(self.platform, channel, message_id)
        if post is None:
            return
        counts = added or control is Control.APPROVE  # taking back any other reaction does nothing
        if event_key is None:
            # The platform gives reactions no event id (Discord): each person's reaction is a
            # toggle, so a replayed add or remove does nothing and a real one always counts.
            # Claimed together with forgetting its opposite, so the two never disagree.
            base = f"react:{channel}:{message_id}:{actor}:{emoji}"
            claim, release = (f"{base}:+", f"{base}:-") if added else (f"{base}:-", f"{base}:+")
            fresh = await self.deliveries.toggle_event(self.platform, claim, release)
        else:
            fresh = counts and await self.deliveries.claim_event(self.platform, event_key)
        if not (fresh and counts):
            return
        control = control if added else Control.WITHDRAW
        self.pending.then(lambda: self._control_here(post.session, post.version, control, actor, roles),
                          teller(self.backend, post.session.key, actor))
        await self._control_here(post.session, post.version, control, actor, roles)

    async def on_button(self, value: str, actor: str, origin: Origin,
                        roles: frozenset[str] = frozenset(), event_key: str | None = None) -> None:
        parsed = parse_button_value(value)
        if parsed is None:
            return
        here = SessionKey(self.platform, origin.workspace, origin.channel, origin.thread)
        await self.pending.run(lambda: self._button(parsed, actor, origin, roles, event_key),
                               what=f"a button ({parsed[0].value})", identity=event_key,
                               tell=teller(self.backend, here, actor))

    async def _button(self, parsed: tuple[Control, int, int], actor: str, origin: Origin,
                      roles: frozenset[str], event_key: str | None) -> None:
        if event_key is not None and not await self.deliveries.claim_event(self.platform, event_key):
            return  # the same click delivered again
        self.pending.then(lambda: self._button(parsed, actor, origin, roles, None))  # claimed
        control, session_id, version = parsed
        session = await self._session_here(session_id, origin)
        if session is None:
            # A button's value is only as trustworthy as whoever sent it: one naming a session
            # of another thread, channel, workspace or platform changes, charges and posts nothing.
            await self.deliveries.refused(None, actor, control.value, session=session_id,
                                          version=version, workspace=origin.workspace,
                                          channel=origin.channel, thread=origin.thread,
                                          why="button from another thread")
            here = SessionKey(self.platform, origin.workspace, origin.channel, origin.thread)
            await self._tell(here, actor, presenter.NOT_THIS_THREAD)
            return
        await self._control_here(session, version, control, actor, roles)

    async def _control_here(self, session: Session, version: int, control: Control, actor: str,
                            roles: frozenset[str]) -> None:
        if not await self._refused_channel(session, actor, control):
            await self.apply_control(session, version, control, actor, roles)

    async def _session_here(self, session_id: int, origin: Origin) -> Session | None:
        """The session, if it lives where the click came from; else None."""
        try:
            session = await self.reads.session(session_id)
        except UnknownSession:
            return None
        key = session.key
        here = (key.platform == self.platform and key.workspace == origin.workspace
                and self.backend.post_channel(key) == origin.channel and key.thread == origin.thread)
        return session if here else None

    async def _refused_channel(self, session: Session, actor: str, control: Control) -> bool:
        """Clicks and reactions obey the allowed channels as messages do (the list may have
        changed since the session began): refused, audited and explained to the person."""
        if self.allowed_channels is None or session.key.channel in self.allowed_channels:
            return False
        await self.deliveries.refused(session.id, actor, control.value,
                                      channel=session.key.channel, why="channel not allowed")
        await self._tell(session.key, actor, presenter.CHANNEL_NOT_ALLOWED)
        return True

    async def _tell(self, key: SessionKey, user: str, text: Text) -> None:
        # A refusal is a courtesy: a place we cannot post to must not turn it into a failure.
        try:
            await self.backend.post_ephemeral(key, user, text)
        except Exception:
            log.warning("could not tell %s on %s why a control was refused", user, self.platform)

    async def apply_control(self, session: Session, version: int, control: Control,
                            actor: str, roles: frozenset[str] = frozenset()) -> None:
        session_id, key, svc = session.id, session.key, self.service
        try:
            if control is Control.UNDO:
                view = await svc.step_back(session_id, actor, version)
                await self.backend.post_text(key, presenter.undo_line(view, actor))
            elif control is Control.RETRY:
                await self._submit(await svc.submit_retry(session_id, actor, version))
            elif control is Control.UPSCALE:
                await self._submit(await svc.submit_upscale(session_id, actor, version))
            elif control is Control.APPROVE:
                view = await svc.approve(session_id, actor, version, roles=roles)
                await self.backend.post_text(key, presenter.approval_line(view, version, actor))
            elif control is Control.WITHDRAW:
                view = await svc.withdraw_approval(session_id, actor, version, roles=roles)
                await self.backend.post_text(key, presenter.approval_line(view, version, actor))
        except OperationRefused as exc:
            await self._refuse(key, actor, exc)

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
            text = presenter.addressed(result.author, presenter.no_version_line(result, self.offline))
            if progress_id:
                await self.backend.update_text(key, progress_id, text)
            else:
                await self.backend.post_text(key, text)
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
