"""EditService: the operations every adapter calls. Platform-free; storage and engine injected.

Each command (submit an edit, a retry or an upscale, undo, revert, approve, withdraw, change
settings) is ONE transaction on the store: all of its writes land, or none do. Anything slow
(checking images, writing blobs) happens before it. Turns are recorded as queued; running one
(bot/turn_runner.py) does the model call. Adapters (and the pipeline) decide when to run them.

A refusal that is audited (a person not allowed to do something) commits the audit row and
then raises: the op returns the OperationRefused rather than raising it inside the transaction,
which would roll the audit back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from bot import catalog
from bot.access import AccessPolicy
from bot.context import ContextBudget, ContextPlanner
from bot.domain import (
    OperationRefused,
    Session,
    SessionKey,
    SessionState,
    Turn,
    TurnKind,
    failed_turn,
    retry_kind_of,
    retry_source,
    undo_target,
)
from bot.edit_input import (  # noqa: F401  (MAX_*: callers read them here)
    MAX_INSTRUCTION_CHARS,
    MAX_REFERENCES,
    SessionDefaults,
    checked_instruction,
    settings_after,
    strip_controls,
)
from bot.engine import Engine
from bot.gemini.contents import user_content
from bot.history import history_view
from bot.images import CheckedImage, ImageLimits, ImageRejected, check_image
from bot.leases import TurnLeases
from bot.model_call import ModelCall
from bot.results import Attachment, HistoryView, TurnResult
from bot.spending import SpendGuard, SpendLimits
from bot.storage.blobs import BlobStore, pack_content
from bot.storage.repository import SessionStore
from bot.storage.uow import UnitOfWork
from bot.turn_runner import TurnRunner

if TYPE_CHECKING:
    from bot.gemini.files import ReferenceFiles

log = logging.getLogger(__name__)
T = TypeVar("T")

Refusable = T | OperationRefused  # what an op returns: its result, or a refusal it audited


def _raise_refusal(result: Refusable[T]) -> T:
    if isinstance(result, OperationRefused):
        raise result
    return result


class EditService:
    """The commands; running turns is the TurnRunner's (bot/turn_runner.py), reached through
    `run_turn`, `result_of` and `fail_interrupted` here so callers need one object."""

    def __init__(
        self,
        store: SessionStore,
        blobs: BlobStore,
        engine: Engine,
        *,
        defaults: SessionDefaults = SessionDefaults(),
        policy: AccessPolicy = AccessPolicy(),
        image_limits: ImageLimits = ImageLimits(),
        spend_limits: SpendLimits | None = None,
        context: ContextBudget = ContextBudget(),
        files: ReferenceFiles | None = None,
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.defaults = defaults
        self.policy = policy
        self.image_limits = image_limits
        self.spend_limits = spend_limits or SpendLimits()
        self.spend = SpendGuard(replace(self.spend_limits,
                                        priced=self.spend_limits.priced and not engine.offline))
        self.context = context
        self.files = files
        calls = ModelCall(engine, blobs, ContextPlanner(blobs, context), files)
        self.runner = TurnRunner(store, blobs, calls, self.spend)
        self.leases = TurnLeases(store)  # the turn queue (bot/leases.py)

    @property
    def calls(self) -> ModelCall:
        return self.runner.calls

    @property
    def engine(self) -> Engine:
        """The engine turns are sent to: the one the model calls hold, never a second copy."""
        return self.runner.engine

    def with_policy(self, policy: AccessPolicy) -> EditService:
        """The same service (store, engine, limits, context budget) under another access policy:
        each chat adapter has its own approvers."""
        return EditService(self.store, self.blobs, self.engine, defaults=self.defaults,
                           policy=policy, image_limits=self.image_limits,
                           spend_limits=self.spend_limits, context=self.context, files=self.files)

    # Running turns (bot/turn_runner.py)

    async def run_turn(self, turn_id: int, owner: str | None = None) -> TurnResult:
        return await self.runner.run_turn(turn_id, owner)

    async def result_of(self, turn_id: int) -> TurnResult:
        return await self.runner.result_of(turn_id)

    async def fail_interrupted(self, turn_id: int, owner: str | None = None) -> TurnResult:
        return await self.runner.fail_interrupted(turn_id, owner)

    async def unfinished_turns(self, platform: str | None = None) -> list[Turn]:
        return await self.store.unfinished_turns(platform)

    # Sessions and settings

    async def session_for(self, key: SessionKey, started_by: str) -> Session:
        async def op(uow: UnitOfWork) -> Session:
            return await uow.sessions.find(key) or await self._start_session(
                uow, key, started_by, (self.defaults.model, self.defaults.aspect_ratio,
                                       self.defaults.image_size))

        return await self.store.find_session(key) or await self.store.transact(op)

    async def find_session(self, key: SessionKey) -> Session | None:
        return await self.store.find_session(key)

    async def change_settings(
        self,
        session_id: int,
        actor: str,
        *,
        model: str | None = None,
        aspect: str | None = None,
        size: str | None = None,
        roles: frozenset[str] = frozenset(),
    ) -> Session:
        async def op(uow: UnitOfWork) -> Refusable[Session]:
            session = await uow.sessions.get(session_id, for_update=True)
            refused = await self._set_settings(uow, session, actor, model, aspect, size, roles)
            return refused or await uow.sessions.get(session_id)

        return _raise_refusal(await self.store.transact(op))

    async def _set_settings(self, uow: UnitOfWork, session: Session, actor: str, model: str | None,
                            aspect: str | None, size: str | None,
                            roles: frozenset[str]) -> OperationRefused | None:
        if not self.policy.may_change_settings(actor, roles):
            await uow.audit.record(session.id, actor, "settings", "refused")
            return OperationRefused("Only the people allowed to change settings can do that here.",
                                    "not_permitted")
        new_model, new_aspect, new_size = settings_after(
            (session.model, session.aspect_ratio, session.image_size), model, aspect, size)
        await uow.sessions.update_settings(session.id, model=new_model, aspect=new_aspect, size=new_size)
        await uow.audit.record(session.id, actor, "settings", "ok", model=new_model,
                               aspect_ratio=new_aspect, image_size=new_size)
        return None

    async def _start_session(self, uow: UnitOfWork, key: SessionKey, started_by: str,
                             settings: tuple[str, str | None, str | None]) -> Session:
        session = await uow.sessions.create(key, started_by, *settings)
        await uow.audit.record(session.id, started_by, "start", "ok", key=key.__dict__)
        return session

    # Submitting turns: one transaction each, after the slow checks

    async def submit_edit(
        self,
        target: int | SessionKey,
        author: str,
        instruction: str,
        attachments: Sequence[Attachment] = (),
        *,
        model: str | None = None,
        aspect: str | None = None,
        size: str | None = None,
    ) -> Turn:
        """Record an instruction as a queued turn; a SessionKey with no session starts one.

        Everything a user can get wrong (empty or long text, bad images, settings the model
        does not take) is refused before anything is stored, so a refusal leaves no trace.
        """
        turn = await self._submit_edit(target, author, instruction, attachments, model, aspect, size)
        assert turn is not None
        return turn

    async def submit_message(self, platform: str, event_key: str, key: SessionKey, author: str,
                             text: str, attachments: Sequence[Attachment] = ()) -> Turn | None:
        """A chat message's edit: the platform event is claimed in the same transaction that
        records the turn (and starts the session), so a failure before that leaves the event
        unclaimed for the platform's retry. None when the event was handled already. A refusal
        claims the event too, so a redelivery does not repeat it."""
        return await self._submit_edit(key, author, text, attachments, None, None, None,
                                       event=(platform, event_key))

    async def _submit_edit(self, target: int | SessionKey, author: str, instruction: str,
                           attachments: Sequence[Attachment], model: str | None, aspect: str | None,
                           size: str | None, event: tuple[str, str] | None = None) -> Turn | None:
        checked: list[CheckedImage] = []
        try:
            instruction = checked_instruction(instruction, attachments)
            if attachments:
                # Off the event loop, one after another: decoding a large image takes seconds and
                # hundreds of MB, and every other request of the process would wait for it.
                checked = await asyncio.to_thread(
                    lambda: [check_image(a.data, filename=a.filename, limits=self.image_limits)
                             for a in attachments])
                # The same checks the transaction makes, before writing the images' blobs. (With
                # no image nothing is written before it: the transaction's checks are enough.)
                await self.store.read(lambda uow: self._edit_settings(uow, target, author, model,
                                                                      aspect, size))
        except (OperationRefused, ImageRejected):
            if event is not None and not await self.store.claim_event(*event):
                return None
            raise
        text = instruction or "Use the attached image as the starting point."
        request = user_content(text, [(c.data, c.mime) for c in checked])
        # Text alone writes no blob: packed here, without a trip to a thread and back.
        content = (await asyncio.to_thread(pack_content, request, self.blobs) if checked
                   else pack_content(request, self.blobs))

        async def op(uow: UnitOfWork) -> Refusable[Turn | None]:
            if event is not None and not await uow.events.claim(*event):
                return None
            try:
                session, settings = await self._edit_settings(uow, target, author, model, aspect, size)
            except OperationRefused as exc:
                return exc  # the event stays claimed: the refusal is said once
            if session is None:
                assert isinstance(target, SessionKey)
                session = await self._start_session(uow, target, author, settings)
            elif settings != (session.model, session.aspect_ratio, session.image_size):
                refused = await self._set_settings(uow, session, author, *settings, frozenset())
                if refused:
                    return refused
                session = await uow.sessions.get(session.id)
            turn = await uow.turns.add(
                session, kind=TurnKind.EDIT, instruction=text, author=author, user_content=content,
                parent_turn_id=None, model=session.model, aspect=session.aspect_ratio,
                size=session.image_size)
            await uow.audit.record(session.id, author, "edit", "ok", turn=turn.id, references=len(checked))
            return turn

        return _raise_refusal(await self.store.transact(op))

    async def _edit_settings(self, uow: UnitOfWork, target: int | SessionKey, author: str,
                             model: str | None, aspect: str | None, size: str | None,
                             ) -> tuple[Session | None, tuple[str, str | None, str | None]]:
        """The session an edit goes to (None: one is to start) and its settings with the
        requested changes; refuses settings the model does not take and a user over a limit."""
        session = await (uow.sessions.find(target) if isinstance(target, SessionKey)
                         else uow.sessions.get(target))
        d = self.defaults
        current = ((session.model, session.aspect_ratio, session.image_size) if session
                   else (d.model, d.aspect_ratio, d.image_size))
        settings = settings_after(current, model, aspect, size)
        key = session.key if session else target
        assert isinstance(key, SessionKey)
        await self.spend.check_submit(uow, key, author)
        return session, settings

    async def submit_retry(self, session_id: int, actor: str, version: int | None = None, *,
                           turn_id: int | None = None) -> Turn:
        """Ask again (bot.domain `retry_source`); with `turn_id`, the Retry on a line that made no
        version: that turn's instruction and reference images (`retry_kind_of`: on which version)."""
        async def op(uow: UnitOfWork) -> Turn:
            state = await uow.load_state(session_id)
            source = retry_source(state, version) if turn_id is None else failed_turn(state, turn_id)
            kind = TurnKind.RETRY if turn_id is None else retry_kind_of(source)
            s = state.session
            await self.spend.check_submit(uow, s.key, actor)
            turn = await uow.turns.add(
                s, kind=kind, instruction=source.instruction, author=actor,
                user_content=source.user_content,
                parent_turn_id=None if kind is TurnKind.EDIT else source.parent_turn_id,
                # A 4K render keeps its size; anything else takes the session's settings now.
                model=s.model, aspect=s.aspect_ratio,
                size=source.image_size if kind is TurnKind.UPSCALE else s.image_size)
            await uow.audit.record(session_id, actor, "retry", "ok", turn=turn.id,
                                   of_turn=source.id, of_version=source.version)
            return turn

        return await self.store.transact(op)

    async def submit_upscale(
        self, session_id: int, actor: str, version: int | None = None, size: str = "4K"
    ) -> Turn:
        # The request's text has no image: packing it writes no blob, so it may run in the op.
        async def op(uow: UnitOfWork) -> Turn:
            state = await uow.load_state(session_id)
            target = state.version(version) if version is not None else state.head
            if target is None:
                raise OperationRefused("There is no version to render larger yet.", "nothing")
            s = state.session
            await self.spend.check_submit(uow, s.key, actor)
            try:
                size_ok = catalog.check_size(s.model, size)
            except catalog.SettingRejected as exc:
                raise OperationRefused(str(exc), "bad_setting") from None
            if catalog.normalise_size(target.image_size or "1K") == size_ok:
                raise OperationRefused(f"v{target.version} is already {size_ok}; there is nothing "
                                       "larger to render.", "already_largest")
            text = f"Render this same image at {size_ok} resolution. Change nothing else."
            turn = await uow.turns.add(
                s, kind=TurnKind.UPSCALE, instruction=text, author=actor,
                user_content=pack_content(user_content(text), self.blobs),
                parent_turn_id=target.id, model=s.model, aspect=s.aspect_ratio, size=size_ok)
            await uow.audit.record(session_id, actor, "upscale", "ok", turn=turn.id,
                                   of_version=target.version, size=size_ok)
            return turn

        return await self.store.transact(op)

    # Moving the head and approving: each reads the head and moves it in one transaction

    async def step_back(self, session_id: int, actor: str, version: int) -> HistoryView:
        """The Undo control on `version`: on the head, undo to its parent; on an older version,
        go back to that one. Decided on the same view that moves the head, so a turn finishing
        meanwhile cannot make it step back from another version than the one decided on."""
        async def op(uow: UnitOfWork) -> HistoryView:
            state = await uow.load_state(session_id, for_update=True)
            if state.head is not None and state.head.version == version:
                return await self._undo_in(uow, state, actor)
            return await self._revert_in(uow, state, actor, version)

        return await self.store.transact(op)

    async def undo(self, session_id: int, actor: str) -> HistoryView:
        async def op(uow: UnitOfWork) -> HistoryView:
            return await self._undo_in(uow, await uow.load_state(session_id, for_update=True), actor)

        return await self.store.transact(op)

    async def revert(self, session_id: int, actor: str, version: int) -> HistoryView:
        async def op(uow: UnitOfWork) -> HistoryView:
            state = await uow.load_state(session_id, for_update=True)
            return await self._revert_in(uow, state, actor, version)

        return await self.store.transact(op)

    async def _undo_in(self, uow: UnitOfWork, state: SessionState, actor: str) -> HistoryView:
        target = undo_target(state)
        await uow.sessions.set_head(state.session.id, target.id)
        await uow.audit.record(state.session.id, actor, "undo", "ok", to_version=target.version)
        return await self._history_in(uow, state.session.id, f"Back to v{target.version}.")

    async def _revert_in(self, uow: UnitOfWork, state: SessionState, actor: str,
                         version: int) -> HistoryView:
        target = state.version(version)
        await uow.sessions.set_head(state.session.id, target.id)
        await uow.audit.record(state.session.id, actor, "revert", "ok", to_version=version)
        return await self._history_in(uow, state.session.id,
                                      f"Back to v{version}; the next instruction edits it.")

    async def approve(self, session_id: int, actor: str, version: int | None = None, *,
                      roles: frozenset[str] = frozenset()) -> HistoryView:
        async def op(uow: UnitOfWork) -> Refusable[HistoryView]:
            target = _approval_target(await uow.load_state(session_id), version)
            if not self.policy.may_approve(actor, roles):
                await uow.audit.record(session_id, actor, "approve", "refused", version=target.version)
                return OperationRefused("Only the configured approvers can approve versions.",
                                        "not_permitted")
            # Inserted unless an active approval by `actor` exists (a unique index decides, so
            # two clicks at once record one).
            if not await uow.approvals.add(session_id, target.id, actor):
                return await self._history_in(
                    uow, session_id, f"v{target.version} is already approved by {actor}.")
            await uow.audit.record(session_id, actor, "approve", "ok", version=target.version)
            return await self._history_in(uow, session_id, f"v{target.version} approved by {actor}.")

        return _raise_refusal(await self.store.transact(op))

    async def withdraw_approval(
        self, session_id: int, actor: str, version: int | None = None, *,
        roles: frozenset[str] = frozenset(),
    ) -> HistoryView:
        async def op(uow: UnitOfWork) -> Refusable[HistoryView]:
            target = _approval_target(await uow.load_state(session_id), version)
            if not self.policy.may_approve(actor, roles):
                await uow.audit.record(session_id, actor, "withdraw", "refused", version=target.version)
                return OperationRefused("Only the configured approvers can withdraw approvals.",
                                        "not_permitted")
            changed = await uow.approvals.withdraw(target.id, actor, actor)
            await uow.audit.record(session_id, actor, "withdraw", "ok", version=target.version)
            return await self._history_in(
                uow, session_id, f"{actor} withdrew the approval of v{target.version}." if changed
                else f"v{target.version} had no approval from {actor}.")

        return _raise_refusal(await self.store.transact(op))

    # Reading

    async def history(self, session_id: int, notice: str | None = None) -> HistoryView:
        return await self.store.read(lambda uow: self._history_in(uow, session_id, notice))

    async def _history_in(self, uow: UnitOfWork, session_id: int, notice: str | None) -> HistoryView:
        return history_view(await uow.load_state(session_id), self.blobs, notice)

    async def export(self, session_id: int, target: Path) -> Path:
        """A folder, or a zip file for a name ending in .zip (bot/export.py); the path written."""
        from bot.export import write_export

        state = await self.store.load_state(session_id)
        audit = await self.store.audit_log(session_id)
        return await asyncio.to_thread(write_export, state, self.blobs, audit, target)


def _approval_target(state: SessionState, version: int | None) -> Turn:
    if version is not None:
        return state.version(version)
    if state.head is None:
        raise OperationRefused("There is no version to approve yet.", "nothing")
    return state.head
