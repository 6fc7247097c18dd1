"""The version tree, the history path and what undo/retry pick: pure domain, no I/O."""

from __future__ import annotations

import pytest

from bot.domain import (
    OperationRefused,
    Session,
    SessionKey,
    SessionState,
    Turn,
    TurnKind,
    TurnState,
    path_to,
    retry_source,
    undo_target,
)


def _turn(tid: int, parent: int | None, state: TurnState = TurnState.DONE,
          version: int | None = None) -> Turn:
    return Turn(id=tid, session_id=1, parent_turn_id=parent, kind=TurnKind.EDIT,
                instruction=f"step {tid}", author="ana", user_content={}, state=state,
                model="m", aspect_ratio=None, image_size=None, created_at="t",
                version=version if version is not None else
                (tid if state is TurnState.DONE else None))


def _state(turns: list[Turn], head: int | None) -> SessionState:
    s = Session(1, SessionKey("cli", "w", "c", "t"), "m", None, None, head, "ana", "t", "t")
    return SessionState(s, turns)


def test_path_is_root_to_head_and_skips_other_branches() -> None:
    # v1 -> v2 -> v3, and v4 branched from v1 after an undo.
    turns = [_turn(1, None), _turn(2, 1), _turn(3, 2), _turn(4, 1)]
    by_id = {t.id: t for t in turns}
    assert [t.id for t in path_to(by_id, 3)] == [1, 2, 3]
    assert [t.id for t in path_to(by_id, 4)] == [1, 4]
    assert path_to(by_id, None) == []


def test_a_failed_turn_can_never_be_on_the_path() -> None:
    turns = [_turn(1, None), _turn(2, 1, TurnState.BLOCKED)]
    with pytest.raises(ValueError):
        path_to({t.id: t for t in turns}, 2)


def test_undo_goes_to_parent_and_refuses_at_the_root() -> None:
    turns = [_turn(1, None), _turn(2, 1)]
    assert undo_target(_state(turns, 2)).id == 1
    with pytest.raises(OperationRefused, match="first version"):
        undo_target(_state(turns, 1))
    with pytest.raises(OperationRefused, match="nothing to undo"):
        undo_target(_state([], None))


def test_retry_repeats_a_failed_last_instruction_else_the_head() -> None:
    turns = [_turn(1, None), _turn(2, 1), _turn(3, 2, TurnState.BLOCKED)]
    assert retry_source(_state(turns, 2)).id == 3
    # Once the head moved elsewhere, the blocked turn is no longer "the last instruction here".
    assert retry_source(_state(turns, 1)).id == 1
    assert retry_source(_state(turns[:2], 2)).id == 2
    assert retry_source(_state(turns, 2), version=1).id == 1


def test_unknown_version_names_the_ones_that_exist() -> None:
    with pytest.raises(OperationRefused, match=r"no v9 \(versions: v1, v2\)"):
        _state([_turn(1, None), _turn(2, 1)], 2).version(9)
