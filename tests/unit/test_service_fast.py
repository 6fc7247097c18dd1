"""EditService on the in-memory store and the scripted engine: every operation, in milliseconds."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bot.access import AccessPolicy
from bot.domain import OperationRefused, SessionKey, TurnState
from bot.engine import EngineError
from bot.results import TurnResult
from bot.service import EditService
from bot.spending import SpendLimits
from tests.fakes.memory_engine import Answer, ScriptedEngine
from tests.fakes.memory_store import MemoryStore

KEY = SessionKey("slack", "T1", "C1", "1700000000.000100")


async def edit(service: EditService, text: str, author: str = "ana") -> TurnResult:
    turn = await service.submit_edit(KEY, author, text)
    return await service.run_turn(turn.id)


async def session_id(service: EditService) -> int:
    found = await service.find_session(KEY)
    assert found is not None
    return found.id


async def test_each_edit_makes_the_next_version_on_the_last(service: EditService,
                                                            engine: ScriptedEngine) -> None:
    v1 = await edit(service, "a lighthouse at dusk")
    v2 = await edit(service, "add a boat", author="bo")
    assert (v1.status, v1.version, v1.parent_version) == ("ok", 1, None)
    assert (v2.version, v2.parent_version, v2.author) == (2, 1, "bo")
    assert v2.image_path is not None and v2.image_path.exists()
    # The model saw the whole path: v1's instruction, its answer, then the new instruction.
    assert engine.user_texts() == ["a lighthouse at dusk", "add a boat"]
    assert [c["role"] for c in engine.requests[-1][1]["contents"]] == ["user", "model", "user"]


async def test_a_retry_is_a_sibling_of_the_version_it_repeats(service: EditService) -> None:
    await edit(service, "a lighthouse")
    await edit(service, "add a boat")
    sid = await session_id(service)
    retry = await service.submit_retry(sid, "bo", version=2)
    result = await service.run_turn(retry.id)
    assert (result.version, result.parent_version, result.instruction) == (3, 1, "add a boat")
    assert (await service.history(sid)).head == 3


async def test_4k_renders_a_child_once_and_refuses_a_version_already_that_large(service: EditService) -> None:
    await edit(service, "a lighthouse")
    sid = await session_id(service)
    big = await service.run_turn((await service.submit_upscale(sid, "ana", version=1)).id)
    assert (big.version, big.parent_version, big.image_size) == (2, 1, "4K")
    assert big.instruction == "4K render of v1"
    with pytest.raises(OperationRefused) as refused:
        await service.submit_upscale(sid, "ana", version=2)
    assert refused.value.code == "already_largest"


async def test_undo_steps_back_and_stops_at_the_first_version(service: EditService) -> None:
    await edit(service, "a lighthouse")
    await edit(service, "add a boat")
    sid = await session_id(service)
    view = await service.undo(sid, "ana")
    assert (view.head, view.notice) == (1, "Back to v1.")
    with pytest.raises(OperationRefused) as refused:
        await service.undo(sid, "ana")
    assert refused.value.code == "at_root"


async def test_revert_makes_the_next_edit_branch_from_the_old_version(service: EditService,
                                                                      engine: ScriptedEngine) -> None:
    await edit(service, "a lighthouse")
    await edit(service, "add a boat")
    await edit(service, "at night")
    sid = await session_id(service)
    assert (await service.revert(sid, "ana", 1)).head == 1
    branch = await edit(service, "in winter")
    assert (branch.version, branch.parent_version) == (4, 1)
    assert engine.user_texts() == ["a lighthouse", "in winter"]  # v2 and v3 are not on its path
    with pytest.raises(OperationRefused) as refused:
        await service.revert(sid, "ana", 9)
    assert refused.value.code == "unknown_version"


async def test_approvals_follow_the_policy_and_are_audited(service: EditService, store: MemoryStore) -> None:
    guarded = service.with_policy(AccessPolicy(approvers=frozenset({"dana"})))
    await edit(guarded, "a lighthouse")
    sid = await session_id(guarded)
    with pytest.raises(OperationRefused) as refused:
        await guarded.approve(sid, "bo")
    assert refused.value.code == "not_permitted"
    assert (await guarded.approve(sid, "dana")).versions[0].approved_by == ["dana"]
    again = await guarded.approve(sid, "dana", 1)
    assert again.notice == "v1 is already approved by dana."
    withdrawn = await guarded.withdraw_approval(sid, "dana")
    assert withdrawn.versions[0].approved is False and "withdrew" in (withdrawn.notice or "")
    assert (await guarded.withdraw_approval(sid, "dana")).notice == "v1 had no approval from dana."
    audit = [(a["actor"], a["action"], a["outcome"]) for a in await store.audit_log(sid)]
    assert ("bo", "approve", "refused") in audit and ("dana", "approve", "ok") in audit


async def test_settings_are_checked_against_the_model_and_the_policy(service: EditService) -> None:
    await edit(service, "a lighthouse")
    sid = await session_id(service)
    with pytest.raises(OperationRefused) as bad:
        await service.change_settings(sid, "ana", aspect="7:3")
    assert bad.value.code == "bad_setting"
    changed = await service.change_settings(sid, "ana", aspect="16:9", size="2K")
    assert (changed.aspect_ratio, changed.image_size) == ("16:9", "2K")
    locked = service.with_policy(AccessPolicy(settings_changers=frozenset({"dana"})))
    with pytest.raises(OperationRefused) as refused:
        await locked.change_settings(sid, "ana", size="4K")
    assert refused.value.code == "not_permitted"
    assert (await service.store.get_session(sid)).image_size == "2K"


async def test_refused_instructions_leave_no_trace(service: EditService, store: MemoryStore) -> None:
    for text, code in [("   ", "empty_instruction"), ("x" * 4001, "instruction_too_long")]:
        with pytest.raises(OperationRefused) as refused:
            await service.submit_edit(KEY, "ana", text)
        assert refused.value.code == code
    with pytest.raises(OperationRefused):
        await service.submit_edit(KEY, "ana", "a lighthouse", aspect="7:3")
    assert store.rows("sessions") == [] and store.rows("turns") == []


async def test_the_hourly_limit_refuses_before_anything_is_queued(store: MemoryStore,
                                                                  service: EditService) -> None:
    limited = EditService(store, service.blobs, service.engine,
                          spend_limits=SpendLimits(user_turns_per_hour=2))
    await limited.submit_edit(KEY, "ana", "a lighthouse")
    await limited.submit_edit(KEY, "ana", "add a boat")
    with pytest.raises(OperationRefused) as refused:
        await limited.submit_edit(KEY, "ana", "at night")
    assert refused.value.code == "rate_limited" and "2 turns in the last hour" in refused.value.message
    await limited.submit_edit(KEY, "bo", "at night")  # another person's turns are their own
    assert len(store.rows("turns")) == 3


async def test_the_daily_budget_refuses_a_turn_and_charges_only_images(store: MemoryStore,
                                                                       service: EditService) -> None:
    # A 1K image is priced $0.067: a budget of $0.12 pays for one, and a refund frees its part.
    engine = ScriptedEngine(Answer.blocked(), Answer.image())
    budgeted = EditService(store, service.blobs, engine,
                           spend_limits=SpendLimits(workspace_daily_usd=0.12))
    blocked = await budgeted.run_turn((await budgeted.submit_edit(KEY, "ana", "something else")).id)
    ok = await budgeted.run_turn((await budgeted.submit_edit(KEY, "ana", "a lighthouse")).id)
    assert (blocked.status, ok.status) == ("blocked", "ok")
    assert [r["state"] for r in store.rows("usage")] == ["refunded", "charged"]
    # A second image would pass $0.12 today: the turn fails at its reservation, nothing is sent.
    sent = len(engine.requests)
    third = await budgeted.run_turn((await budgeted.submit_edit(KEY, "ana", "add a boat")).id)
    assert (third.status, third.reason) == ("failed", "budget") and len(engine.requests) == sent
    assert "budget of $0.12" in (third.message or "")


async def test_blocked_and_words_only_turns_are_never_replayed(service: EditService,
                                                               engine: ScriptedEngine) -> None:
    await edit(service, "a lighthouse")
    engine.script += [Answer.blocked("PROHIBITED_CONTENT"), Answer.words("What colour?")]
    blocked = await edit(service, "something forbidden")
    words = await edit(service, "make it nicer")
    assert (blocked.status, words.status, words.text) == ("blocked", "text", "What colour?")
    assert blocked.version is None and words.version is None
    final = await edit(service, "add a boat")
    assert final.version == 2 and final.parent_version == 1
    assert engine.user_texts() == ["a lighthouse", "add a boat"]


async def test_a_failed_call_keeps_history_and_a_retry_asks_again(service: EditService,
                                                                  engine: ScriptedEngine) -> None:
    await edit(service, "a lighthouse")
    engine.script.append(EngineError("unavailable", "Gemini is overloaded; try again shortly."))
    failed = await edit(service, "add a boat")
    assert (failed.status, failed.reason, failed.version) == ("failed", "unavailable", None)
    sid = await session_id(service)
    retried = await service.run_turn((await service.submit_retry(sid, "ana")).id)
    assert (retried.status, retried.version, retried.parent_version) == ("ok", 2, 1)
    assert retried.instruction == "add a boat"


async def test_a_turn_is_run_once_and_a_finished_one_only_reported(service: EditService,
                                                                   engine: ScriptedEngine) -> None:
    turn = await service.submit_edit(KEY, "ana", "a lighthouse")
    first = await service.run_turn(turn.id)
    again = await service.run_turn(turn.id)  # a duplicate delivery, a resumed turn
    assert replace(again) == first and len(engine.requests) == 1
    assert (await service.store.get_turn(turn.id)).state is TurnState.DONE
