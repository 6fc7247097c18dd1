"""ChatCore: what happens in a chat thread, for every platform.

Adapters turn platform events into `on_message`, `on_reaction` and `on_button` calls; ChatCore
deduplicates them, runs commands and submits turns to the pipeline; ThreadOutcomes
(bot/chat/outcomes.py) keeps a progress message up to date while a turn runs and posts each result
through the platform's ChatBackend.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from bot.chat import presenter
from bot.chat.backend import AttachmentError, ChatBackend, IncomingMessage, Origin
from bot.chat.commands import ThreadCommand, parse_thread_command
from bot.chat.controls import Control, parse_button_value
from bot.chat.outcomes import ThreadOutcomes
from bot.chat.pending import PendingInstructions, teller
from bot.chat.text import Text
from bot.deliveries import PROGRESS, Deliveries, PostedFailure
from bot.domain import OperationRefused, Session, SessionKey, Turn, UnknownSession
from bot.images import ImageRejected
from bot.pipeline import TurnPipeline
from bot.reads import SessionReads
from bot.results import Attachment, TurnResult
from bot.service import EditService

log = logging.getLogger(__name__)

# Refusals only the person who asked needs to read: a permission, or a stale 4K button.
PRIVATE_REFUSALS = frozenset({"not_permitted", "already_largest"})


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
        self.offline = offline
        self.outcomes = ThreadOutcomes(service, backend, deliveries=deliveries, reads=reads,
                                       progress_interval=progress_interval, offline=offline,
                                       gallery_link=gallery_link)
        # This platform's turns, run here (`work`), or only recorded here for the fleet's workers.
        self.pipeline = TurnPipeline(service, max_concurrency=max_concurrency,
                                     listeners={self.platform: self}, lease_seconds=lease_seconds,
                                     max_age_seconds=max_age_seconds, work=work)
        # Instructions the store could not take (down past its retries): kept, in order, and
        # handled once it answers (bot/chat/pending.py).
        self.pending = PendingInstructions()
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
        self.outcomes.aclose()
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
        self.outcomes.posting(turn.id)
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
            self.outcomes.posted(turn.id, runs_here=self.pipeline.work)
        await self.outcomes.catch_up(session, turn, message_id)

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
        # On a line that made no version, only Retry means something: it retries that turn.
        post = await self.deliveries.controls_post(self.platform, channel, message_id)
        if post is None:
            return
        if isinstance(post, PostedFailure):
            if control is not Control.RETRY:
                return
            control, target = Control.RETRY_TURN, post.turn_id
        else:
            target = post.version
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
        self.pending.then(lambda: self._control_here(post.session, target, control, actor, roles),
                          teller(self.backend, post.session.key, actor))
        await self._control_here(post.session, target, control, actor, roles)

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
            elif control is Control.RETRY_TURN:  # `version` is the turn that made no version
                await self._submit(await svc.submit_retry(session_id, actor, turn_id=version))
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

    # TurnListener: the progress-and-results half lives in bot/chat/outcomes.py

    async def turn_started(self, turn: Turn) -> None:
        await self.outcomes.turn_started(turn)

    async def turn_finished(self, result: TurnResult) -> None:
        await self.outcomes.turn_finished(result)
