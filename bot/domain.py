"""The edit-session domain: sessions, turns, the version tree and its head. No I/O here.

A version is a turn that finished with an image. Versions form a tree through
`parent_turn_id`; the head is the version the next instruction edits. The history sent to
the model is the path from the root to the head, and nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class TurnState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"  # produced an image: a version
    TEXT = "text"  # the model answered in words only
    BLOCKED = "blocked"  # refused by safety rules or the prompt filter
    FAILED = "failed"  # no answer to interpret (network, quota, bad request, crash)


FINISHED = frozenset({TurnState.DONE, TurnState.TEXT, TurnState.BLOCKED, TurnState.FAILED})


class TurnKind(StrEnum):
    EDIT = "edit"  # a new instruction on the head
    RETRY = "retry"  # the same instruction on the same parent: a sibling
    UPSCALE = "upscale"  # the same picture at a larger size: a child


class OperationRefused(Exception):
    """An operation that cannot be done as asked. The message is a sentence for the user."""

    def __init__(self, message: str, code: str = "refused") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class UnknownSession(OperationRefused):
    def __init__(self, ref: object) -> None:
        super().__init__(f"There is no session {ref}.", "unknown_session")


@dataclass(frozen=True)
class SessionKey:
    """Where a session lives: one thread of one channel of one workspace/guild."""

    platform: str
    workspace: str
    channel: str
    thread: str


@dataclass
class Session:
    id: int
    key: SessionKey
    model: str
    aspect_ratio: str | None
    image_size: str | None
    head_turn_id: int | None
    started_by: str
    created_at: str
    updated_at: str


@dataclass
class Turn:
    id: int
    session_id: int
    parent_turn_id: int | None
    kind: TurnKind
    instruction: str
    author: str
    user_content: dict[str, Any]
    state: TurnState
    model: str
    aspect_ratio: str | None
    image_size: str | None
    created_at: str
    model_content: dict[str, Any] | None = None
    version: int | None = None
    image_blob: str | None = None
    image_mime: str | None = None
    text_reply: str | None = None
    reason: str | None = None
    message: str | None = None
    usage: dict[str, Any] | None = None
    # Set when the request was re-anchored: the self-contained user turn that was sent instead
    # of the history (see bot/context.py). Such a turn starts a new segment of its path.
    anchor_content: dict[str, Any] | None = None
    started_at: str | None = None
    finished_at: str | None = None

    @property
    def is_version(self) -> bool:
        return self.state is TurnState.DONE and self.version is not None


@dataclass
class Approval:
    turn_id: int
    approved_by: str
    approved_at: str
    withdrawn_by: str | None = None
    withdrawn_at: str | None = None

    @property
    def active(self) -> bool:
        return self.withdrawn_at is None


@dataclass
class SessionState:
    """A session with all its turns and approvals: enough to answer any question about it."""

    session: Session
    turns: list[Turn]
    approvals: list[Approval] = field(default_factory=list)

    @property
    def by_id(self) -> dict[int, Turn]:
        return {t.id: t for t in self.turns}

    @property
    def versions(self) -> list[Turn]:
        return sorted((t for t in self.turns if t.is_version), key=lambda t: t.version or 0)

    @property
    def head(self) -> Turn | None:
        hid = self.session.head_turn_id
        return self.by_id.get(hid) if hid is not None else None

    def version(self, number: int) -> Turn:
        for t in self.turns:
            if t.is_version and t.version == number:
                return t
        have = ", ".join(f"v{t.version}" for t in self.versions) or "none yet"
        raise OperationRefused(f"This session has no v{number} (versions: {have}).", "unknown_version")

    def approvers_of(self, turn_id: int) -> list[str]:
        return [a.approved_by for a in self.approvals if a.turn_id == turn_id and a.active]

    def parent_version(self, turn: Turn) -> int | None:
        parent = self.by_id.get(turn.parent_turn_id) if turn.parent_turn_id else None
        return parent.version if parent else None


def shown_instruction(turn: Turn, parent_version: int | None) -> str:
    """What a person asked for, in their words. A 4K turn's instruction is the prompt the service
    wrote for the model, not something anyone typed: it is named as the request instead."""
    if turn.kind is TurnKind.UPSCALE:
        of = f" of v{parent_version}" if parent_version else ""
        return f"{turn.image_size or '4K'} render{of}"
    return turn.instruction


def path_to(turns: Mapping[int, Turn], head_id: int | None) -> list[Turn]:
    """The versions from the root to `head_id`, in order. Only versions are ever on it."""
    path: list[Turn] = []
    seen: set[int] = set()
    current = head_id
    while current is not None:
        if current in seen:
            raise ValueError(f"cycle in the version tree at turn {current}")
        seen.add(current)
        turn = turns[current]
        if not turn.is_version:
            raise ValueError(f"turn {current} is on a history path but is not a version")
        path.append(turn)
        current = turn.parent_turn_id
    path.reverse()
    return path


def undo_target(state: SessionState) -> Turn:
    head = state.head
    if head is None:
        raise OperationRefused("There is nothing to undo yet: no version has been made.", "nothing")
    if head.parent_turn_id is None:
        raise OperationRefused(
            f"v{head.version} is the first version; there is nothing before it to go back to.",
            "at_root",
        )
    return state.by_id[head.parent_turn_id]


def retry_source(state: SessionState, version: int | None = None) -> Turn:
    """Which turn a retry repeats.

    With a version: that version's turn. Without: the latest instruction asked on the current
    head if it did not make a version (a failure, a block, a words-only answer), else the
    head's own turn.
    """
    if version is not None:
        return state.version(version)
    head_id = state.session.head_turn_id
    finished = [t for t in state.turns if t.state in FINISHED]
    if finished:
        latest = max(finished, key=lambda t: t.id)
        if not latest.is_version and latest.parent_turn_id == head_id:
            return latest
    if state.head is None:
        raise OperationRefused("There is nothing to retry yet.", "nothing")
    return state.head


def failed_turn(state: SessionState, turn_id: int) -> Turn:
    """The turn a Retry on a line that made no version repeats: one of this session's turns that
    finished without a version. A forged or stale button naming anything else is refused."""
    turn = state.by_id.get(turn_id)
    if turn is None:
        raise OperationRefused("That Retry names no instruction of this thread, so I did nothing.",
                               "unknown_turn")
    if turn.state not in FINISHED:
        raise OperationRefused("That instruction has not finished yet; wait for its outcome.",
                               "not_finished")
    if turn.is_version:
        raise OperationRefused(f"That instruction made v{turn.version}; use the Retry on v{turn.version}.",
                               "made_version")
    return turn


def retry_kind_of(turn: Turn) -> TurnKind:
    """How a turn that made no version is asked again. One that reached the model repeats on the
    version it was meant for (a sibling, even if the head has moved on since: as Retry on an older
    version does); a 4K render renders that version again; an edit that never ran (a restart
    interrupted it) never had a version fixed, so it edits the head as it is now."""
    if turn.kind is TurnKind.UPSCALE:
        return TurnKind.UPSCALE
    if turn.kind is TurnKind.EDIT and turn.started_at is None:
        return TurnKind.EDIT
    return TurnKind.RETRY
