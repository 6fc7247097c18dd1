"""EditService: the operations every adapter calls. Platform-free; storage and engine injected.

Turns are recorded as queued before anything slow happens; `run_turn` then does the model
call. Adapters (and the pipeline) decide when to run them.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from bot import catalog
from bot.access import AccessPolicy
from bot.context import ContextBudget, ContextPlanner
from bot.domain import (
    FINISHED,
    OperationRefused,
    Session,
    SessionKey,
    SessionState,
    Turn,
    TurnKind,
    TurnState,
    path_to,
    retry_source,
    shown_instruction,
    undo_target,
)
from bot.engine import Engine, EngineError
from bot.gemini.contents import user_content
from bot.gemini.response import interpret_response
from bot.images import ImageLimits, check_image
from bot.model_call import ModelCall
from bot.results import Attachment, HistoryView, TurnResult, VersionInfo
from bot.spending import SpendGuard, SpendLimits
from bot.storage.blobs import BlobStore, BlobStoreError, pack_content
from bot.storage.repository import SessionStore
from bot.storage.usage import UsageLedger

if TYPE_CHECKING:
    from bot.gemini.files import ReferenceFiles

log = logging.getLogger(__name__)

MAX_INSTRUCTION_CHARS = 4000
MAX_REFERENCES = 10


@dataclass(frozen=True)
class SessionDefaults:
    model: str = catalog.FLASH
    aspect_ratio: str | None = None
    image_size: str | None = "1K"


def settings_after(
    current: tuple[str, str | None, str | None],
    model: str | None,
    aspect: str | None,
    size: str | None,
) -> tuple[str, str | None, str | None]:
    """(model, aspect, size) once the given changes apply, checked against the model's lists."""
    try:
        new_model = catalog.check_model(model) if model else current[0]
        return (new_model, catalog.check_aspect(new_model, aspect or current[1]),
                catalog.check_size(new_model, size or current[2]))
    except catalog.SettingRejected as exc:
        raise OperationRefused(str(exc), "bad_setting") from None


# C0 controls and DEL, but not tab and newline: NUL, BEL and terminal escapes in an instruction
# would be stored, sent to the model and echoed into threads and operators' terminals.
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def strip_controls(text: str) -> str:
    return _CONTROLS.sub("", text)


class EditService:
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
        self.spend = SpendGuard(UsageLedger(store), replace(
            self.spend_limits, priced=self.spend_limits.priced and not engine.offline))
        self.context = context
        self.files = files
        self.calls = ModelCall(engine, blobs, ContextPlanner(blobs, context), files)

    @property
    def engine(self) -> Engine:
        """The engine turns are sent to: the one the model calls hold, never a second copy."""
        return self.calls.engine

    def with_policy(self, policy: AccessPolicy) -> EditService:
        """The same service (store, engine, limits, context budget) under another access policy:
        each chat adapter has its own approvers."""
        return EditService(self.store, self.blobs, self.engine, defaults=self.defaults,
                           policy=policy, image_limits=self.image_limits,
                           spend_limits=self.spend_limits, context=self.context, files=self.files)

    # Sessions and settings

    async def session_for(self, key: SessionKey, started_by: str) -> Session:
        existing = await self.store.find_session(key)
        if existing:
            return existing
        d = self.defaults
        session = await self.store.create_session(key, started_by, d.model, d.aspect_ratio,
                                                  d.image_size)
        await self.store.audit(session.id, started_by, "start", "ok", key=key.__dict__)
        return session

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
        session = await self.store.get_session(session_id)
        if not self.policy.may_change_settings(actor, roles):
            await self.store.audit(session_id, actor, "settings", "refused")
            raise OperationRefused("Only the people allowed to change settings can do that here.",
                                   "not_permitted")
        new_model, new_aspect, new_size = settings_after(
            (session.model, session.aspect_ratio, session.image_size), model, aspect, size)
        await self.store.update_settings(session_id, model=new_model, aspect=new_aspect,
                                         size=new_size)
        await self.store.audit(session_id, actor, "settings", "ok", model=new_model,
                               aspect_ratio=new_aspect, image_size=new_size)
        return await self.store.get_session(session_id)

    # Submitting turns (recorded as queued, committed before the slow part)

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
        instruction = strip_controls(instruction).strip()
        if not instruction and not attachments:
            raise OperationRefused("Say what to make or change.", "empty_instruction")
        if len(instruction) > MAX_INSTRUCTION_CHARS:
            raise OperationRefused(
                f"That instruction is {len(instruction)} characters; keep it under "
                f"{MAX_INSTRUCTION_CHARS}.", "instruction_too_long")
        if len(attachments) > MAX_REFERENCES:
            raise OperationRefused(f"Attach at most {MAX_REFERENCES} reference images per turn.",
                                   "too_many_references")
        # Off the event loop, one after another: decoding a large image takes seconds and
        # hundreds of MB, and every other request of the process would wait for it.
        checked = await asyncio.to_thread(
            lambda: [check_image(a.data, filename=a.filename, limits=self.image_limits)
                     for a in attachments])
        if isinstance(target, SessionKey):
            session = await self.store.find_session(target)
        else:
            session = await self.store.get_session(target)
        d = self.defaults
        current = ((session.model, session.aspect_ratio, session.image_size) if session
                   else (d.model, d.aspect_ratio, d.image_size))
        new_model, new_aspect, new_size = settings_after(current, model, aspect, size)
        key = session.key if session else target
        assert isinstance(key, SessionKey)
        await self.spend.check_submit(key, author)
        if session is None:
            assert isinstance(target, SessionKey)
            session = await self.store.create_session(target, author, new_model, new_aspect,
                                                      new_size)
            await self.store.audit(session.id, author, "start", "ok", key=target.__dict__)
        elif (new_model, new_aspect, new_size) != (session.model, session.aspect_ratio,
                                                   session.image_size):
            session = await self.change_settings(session.id, author, model=new_model,
                                                 aspect=new_aspect, size=new_size)
        text = instruction or "Use the attached image as the starting point."
        content = await asyncio.to_thread(
            pack_content, user_content(text, [(c.data, c.mime) for c in checked]), self.blobs)
        turn = await self.store.add_turn(
            session, kind=TurnKind.EDIT, instruction=text, author=author, user_content=content,
            parent_turn_id=None, model=session.model, aspect=session.aspect_ratio,
            size=session.image_size,
        )
        await self.store.audit(session.id, author, "edit", "ok", turn=turn.id,
                               references=len(checked))
        return turn

    async def submit_retry(self, session_id: int, actor: str, version: int | None = None) -> Turn:
        state = await self.store.load_state(session_id)
        source = retry_source(state, version)
        s = state.session
        await self.spend.check_submit(s.key, actor)
        turn = await self.store.add_turn(
            s, kind=TurnKind.RETRY, instruction=source.instruction, author=actor,
            user_content=source.user_content, parent_turn_id=source.parent_turn_id,
            model=s.model, aspect=s.aspect_ratio, size=s.image_size,
        )
        await self.store.audit(session_id, actor, "retry", "ok", turn=turn.id,
                               of_turn=source.id, of_version=source.version)
        return turn

    async def submit_upscale(
        self, session_id: int, actor: str, version: int | None = None, size: str = "4K"
    ) -> Turn:
        state = await self.store.load_state(session_id)
        target = state.version(version) if version is not None else state.head
        if target is None:
            raise OperationRefused("There is no version to render larger yet.", "nothing")
        s = state.session
        await self.spend.check_submit(s.key, actor)
        try:
            size_ok = catalog.check_size(s.model, size)
        except catalog.SettingRejected as exc:
            raise OperationRefused(str(exc), "bad_setting") from None
        if catalog.normalise_size(target.image_size or "1K") == size_ok:
            raise OperationRefused(f"v{target.version} is already {size_ok}; there is nothing larger "
                                   "to render.", "already_largest")
        text = f"Render this same image at {size_ok} resolution. Change nothing else."
        turn = await self.store.add_turn(
            s, kind=TurnKind.UPSCALE, instruction=text, author=actor,
            user_content=pack_content(user_content(text), self.blobs),
            parent_turn_id=target.id, model=s.model, aspect=s.aspect_ratio, size=size_ok,
        )
        await self.store.audit(session_id, actor, "upscale", "ok", turn=turn.id,
                               of_version=target.version, size=size_ok)
        return turn

    # Running a turn

    async def run_turn(self, turn_id: int) -> TurnResult:
        turn = await self.store.get_turn(turn_id)
        if turn.state in FINISHED:
            return await self.result_of(turn_id)
        state = await self.store.load_state(turn.session_id)
        # An edit applies to whatever is the head when it runs: a reply sent while the
        # previous turn was generating edits that turn's result, as the user sees it.
        parent_id = state.session.head_turn_id if turn.kind is TurnKind.EDIT else turn.parent_turn_id
        await self.store.mark_running(turn.id, parent_id)
        turn.parent_turn_id = parent_id
        try:
            path = path_to(state.by_id, parent_id)
            prepared = await self.calls.prepare(turn, path)
            await self.spend.reserve(state.session, turn, prepared.size.tokens)
            try:
                response, prepared = await self.calls.send(turn, path, prepared)
                outcome = interpret_response(response)
            except Exception:  # no image: refund (a cancelled call keeps its reservation for the resume)
                await self.spend.settle(turn, False, None)
                raise
            await self.spend.settle(turn, outcome.status == "image", outcome.usage)
        except OperationRefused as exc:  # the day's budget ran out while the turn was queued
            await self.store.finish_turn(turn, TurnState.FAILED, reason=exc.code,
                                         message=exc.message)
            return await self.result_of(turn_id)
        except EngineError as exc:
            await self.store.finish_turn(turn, TurnState.FAILED, reason=exc.code,
                                         message=exc.message)
            return await self.result_of(turn_id)
        except catalog.SettingRejected as exc:
            await self.store.finish_turn(turn, TurnState.FAILED, reason="bad_setting",
                                         message=str(exc))
            return await self.result_of(turn_id)
        except Exception:
            log.exception("turn %s failed unexpectedly", turn_id)
            await self.store.finish_turn(
                turn, TurnState.FAILED, reason="internal_error",
                message="Something went wrong on our side; the session's history is intact, "
                        "so you can retry.")
            return await self.result_of(turn_id)

        if outcome.status == "image":
            assert outcome.content is not None and outcome.image is not None
            # Writing blobs fsyncs: off the event loop, so other sessions' turns go on meanwhile.
            try:
                packed = await asyncio.to_thread(pack_content, outcome.content, self.blobs)
                key = await asyncio.to_thread(self.blobs.put, outcome.image, outcome.mime or "image/jpeg")
            except BlobStoreError as exc:  # the image could not be kept: no version, retryable
                # (Its call stays charged, as settled above: the model was paid for it.)
                await self.store.finish_turn(turn, TurnState.FAILED, reason=exc.code, message=exc.message)
                return await self.result_of(turn_id)
            await self.store.finish_turn(turn, TurnState.DONE, model_content=packed,
                                         image_blob=key, image_mime=outcome.mime,
                                         text_reply=outcome.text, usage=outcome.usage,
                                         anchor_content=prepared.plan.anchor)
        else:
            state_for = {"text": TurnState.TEXT, "blocked": TurnState.BLOCKED}
            await self.store.finish_turn(
                turn, state_for.get(outcome.status, TurnState.FAILED), text_reply=outcome.text,
                reason=outcome.reason, message=outcome.message, usage=outcome.usage)
        return await self.result_of(turn_id)

    async def result_of(self, turn_id: int) -> TurnResult:
        turn = await self.store.get_turn(turn_id)
        parent_version = None
        if turn.parent_turn_id is not None:
            parent_version = (await self.store.get_turn(turn.parent_turn_id)).version
        status = {TurnState.DONE: "ok"}.get(turn.state, turn.state.value)
        return TurnResult(
            session_id=turn.session_id, turn_id=turn.id, status=status,  # type: ignore[arg-type]
            instruction=shown_instruction(turn, parent_version), author=turn.author, model=turn.model,
            aspect_ratio=turn.aspect_ratio, image_size=turn.image_size, version=turn.version,
            parent_version=parent_version,
            image_path=self.blobs.path(turn.image_blob) if turn.image_blob else None,
            mime=turn.image_mime, text=turn.text_reply, reason=turn.reason, message=turn.message,
            condensed=turn.anchor_content is not None,
        )

    # Moving the head and approving

    async def undo(self, session_id: int, actor: str) -> HistoryView:
        state = await self.store.load_state(session_id)
        target = undo_target(state)
        await self.store.set_head(session_id, target.id)
        await self.store.audit(session_id, actor, "undo", "ok", to_version=target.version)
        return await self.history(session_id, notice=f"Back to v{target.version}.")

    async def revert(self, session_id: int, actor: str, version: int) -> HistoryView:
        state = await self.store.load_state(session_id)
        target = state.version(version)
        await self.store.set_head(session_id, target.id)
        await self.store.audit(session_id, actor, "revert", "ok", to_version=version)
        return await self.history(
            session_id, notice=f"Back to v{version}; the next instruction edits it.")

    async def approve(self, session_id: int, actor: str, version: int | None = None, *,
                      roles: frozenset[str] = frozenset()) -> HistoryView:
        state = await self.store.load_state(session_id)
        target = self._approval_target(state, version)
        if not self.policy.may_approve(actor, roles):
            await self.store.audit(session_id, actor, "approve", "refused", version=target.version)
            raise OperationRefused("Only the configured approvers can approve versions.",
                                   "not_permitted")
        if actor in state.approvers_of(target.id):
            return await self.history(session_id,
                                      notice=f"v{target.version} is already approved by {actor}.")
        await self.store.add_approval(session_id, target.id, actor)
        await self.store.audit(session_id, actor, "approve", "ok", version=target.version)
        return await self.history(session_id, notice=f"v{target.version} approved by {actor}.")

    async def withdraw_approval(
        self, session_id: int, actor: str, version: int | None = None, *,
        roles: frozenset[str] = frozenset(),
    ) -> HistoryView:
        state = await self.store.load_state(session_id)
        target = self._approval_target(state, version)
        if not self.policy.may_approve(actor, roles):
            await self.store.audit(session_id, actor, "withdraw", "refused", version=target.version)
            raise OperationRefused("Only the configured approvers can withdraw approvals.",
                                   "not_permitted")
        changed = await self.store.withdraw_approval(target.id, actor, actor)
        await self.store.audit(session_id, actor, "withdraw", "ok", version=target.version)
        notice = (f"{actor} withdrew the approval of v{target.version}." if changed
                  else f"v{target.version} had no approval from {actor}.")
        return await self.history(session_id, notice=notice)

    @staticmethod
    def _approval_target(state: SessionState, version: int | None) -> Turn:
        if version is not None:
            return state.version(version)
        if state.head is None:
            raise OperationRefused("There is no version to approve yet.", "nothing")
        return state.head

    # Reading

    async def history(self, session_id: int, notice: str | None = None) -> HistoryView:
        state = await self.store.load_state(session_id)
        s = state.session
        head = state.head
        return HistoryView(
            session_id=s.id, head=head.version if head else None, model=s.model,
            aspect_ratio=s.aspect_ratio, image_size=s.image_size, notice=notice,
            versions=[self._version_info(state, t) for t in state.versions],
        )

    def _version_info(self, state: SessionState, t: Turn) -> VersionInfo:
        assert t.version is not None and t.image_blob is not None
        approvers = state.approvers_of(t.id)
        return VersionInfo(
            version=t.version, parent=state.parent_version(t),
            instruction=shown_instruction(t, state.parent_version(t)),
            author=t.author, kind=t.kind.value, approved=bool(approvers), approved_by=approvers,
            image_path=self.blobs.path(t.image_blob), mime=t.image_mime or "image/jpeg",
            model=t.model, aspect_ratio=t.aspect_ratio, image_size=t.image_size,
            created_at=t.created_at, finished_at=t.finished_at, text=t.text_reply,
        )

    async def export(self, session_id: int, target: Path) -> Path:
        """A folder, or a zip file for a name ending in .zip (bot/export.py); the path written."""
        from bot.export import write_export

        state = await self.store.load_state(session_id)
        audit = await self.store.audit_log(session_id)
        return await asyncio.to_thread(write_export, state, self.blobs, audit, target)
