"""The models as they are now: a shut-down model is refused in one sentence before any call,
Nano Banana 2 Lite is offered with its own limits and price, Nano Banana 2.1 passes through."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest
from sqlalchemy import update

from bot import catalog
from bot.config import ConfigError, load_settings
from bot.domain import OperationRefused, SessionKey
from bot.service import EditService
from bot.spending import actual_usd
from bot.storage.repository import SessionStore
from bot.storage.schema import turns
from bot.storage.usage import UsageLedger
from tests.conftest import API_KEY
from tests.fakes.gemini_server import FakeGemini
from tests.test_cli import ROOT

KEY = SessionKey("discord", "G1", "C1", "T1")
RETIRED = ("Nano Banana (gemini-2.5-flash-image) was shut down by Google on 2026-10-02; switch the "
           "session to flash (Nano Banana 2, gemini-3.1-flash-image).")


async def usage_rows(store: SessionStore) -> list[tuple]:
    return [(r["turn_id"], r["state"]) for r in await UsageLedger(store).rows()]


def test_the_catalog_offers_lite_and_not_the_shut_down_model() -> None:
    assert list(catalog.MODELS) == [catalog.FLASH, catalog.PRO, catalog.FLASH_LITE]
    assert catalog.check_model("lite") == catalog.check_model("nano-banana-2-lite") == catalog.FLASH_LITE
    lite = catalog.spec_for(catalog.FLASH_LITE)
    assert (lite.label, lite.image_sizes, lite.input_token_limit) == (
        "Nano Banana 2 Lite", ("1K",), 65_536)
    assert "1:8" not in lite.aspect_ratios and "21:9" in lite.aspect_ratios
    with pytest.raises(catalog.ModelRetired) as err:
        catalog.check_model("gemini-2.5-flash-image")
    assert str(err.value) == RETIRED
    # Versions it made still show their model's name and price.
    assert catalog.label_for(catalog.FLASH_25) == "Nano Banana"


def test_nano_banana_2_1_passes_through_without_guessed_limits() -> None:
    assert catalog.check_model("gemini-nano-banana-2.1") == catalog.NANO_BANANA_21
    assert catalog.check_model("nano-banana-2.1") == catalog.NANO_BANANA_21
    spec = catalog.spec_for(catalog.NANO_BANANA_21)
    unknown = catalog.spec_for("gemini-9-image")  # what any unlisted image model gets
    assert spec.label == "Nano Banana 2.1"
    assert (spec.aspect_ratios, spec.image_sizes, spec.input_token_limit) == (
        unknown.aspect_ratios, unknown.image_sizes, unknown.input_token_limit)
    with pytest.raises(catalog.SettingRejected):
        catalog.check_model("gemini-nano-banana-3")  # not an image id, not listed: a typo


def test_threadedit_model_naming_a_shut_down_model_is_one_sentence() -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(_env_file=None, THREADEDIT_MODEL="gemini-2.5-flash-image")
    assert str(err.value) == (
        "THREADEDIT_MODEL names a model Google shut down on 2026-10-02; use flash (Nano Banana 2, "
        "gemini-3.1-flash-image) instead (got 'gemini-2.5-flash-image').")
    assert load_settings(_env_file=None, THREADEDIT_MODEL="lite").model == catalog.FLASH_LITE


async def test_cli_model_naming_a_shut_down_model_sends_nothing(gemini: FakeGemini, tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEMINI_", "THREADEDIT_"))}
    env.update(PYTHONPATH=str(ROOT), THREADEDIT_DATA_DIR=str(tmp_path / "data"),
               GEMINI_API_KEY=API_KEY, GEMINI_BASE_URL=gemini.base_url)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "threadedit", "edit", "--model", "gemini-2.5-flash-image", "a cat",
        cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert (proc.returncode, out) == (2, b"")
    assert err.decode().strip() == RETIRED
    assert gemini.requests == []


async def test_the_model_command_naming_a_shut_down_model_is_refused(service: EditService) -> None:
    turn = await service.submit_edit(KEY, "ana", "a cat")
    with pytest.raises(OperationRefused) as err:
        await service.change_settings(turn.session_id, "ana", model="gemini-2.5-flash-image")
    assert err.value.message == RETIRED
    assert (await service.store.get_session(turn.session_id)).model == catalog.FLASH


async def test_a_session_left_on_a_shut_down_model_hears_so_and_nothing_is_sent(
    service: EditService, gemini: FakeGemini, store: SessionStore
) -> None:
    queued = await service.submit_edit(KEY, "ana", "a cat")  # queued before the shutdown
    session = await store.get_session(queued.session_id)
    await store.update_settings(session.id, model=catalog.FLASH_25, aspect=None, size=None)
    stale = await store.get_turn(queued.id)
    await store.transact(lambda uow: uow.conn.execute(
        update(turns).where(turns.c.id == stale.id).values(model=catalog.FLASH_25)))

    result = await service.run_turn(queued.id)
    assert (result.status, result.message, result.version) == ("failed", RETIRED, None)
    with pytest.raises(OperationRefused) as err:  # the next instruction: refused, not queued
        await service.submit_edit(KEY, "ana", "make it blue")
    assert err.value.message == RETIRED
    assert gemini.requests == [] and await usage_rows(store) == []
    # Switching the model is how out: then it works as usual.
    await service.change_settings(session.id, "ana", model="flash")
    turn = await service.submit_edit(KEY, "ana", "make it blue")
    assert (await service.run_turn(turn.id)).status == "ok"


async def test_lite_is_sent_at_1k_and_priced_as_listed(service: EditService, gemini: FakeGemini,
                                                        store: SessionStore) -> None:
    with pytest.raises(OperationRefused) as err:
        await service.submit_edit(KEY, "ana", "a cat", model="lite", size="2K")
    assert "does not take size 2K; choose one of 1K" in err.value.message
    turn = await service.submit_edit(KEY, "ana", "a cat", model="lite")
    result = await service.run_turn(turn.id)
    assert (result.status, result.model) == ("ok", catalog.FLASH_LITE)
    request = gemini.requests[-1]
    assert request.model == "gemini-3.1-flash-lite-image"
    assert request.body["generationConfig"]["imageConfig"] == {"imageSize": "1K"}
    usage = {"promptTokenCount": 1_000_000}
    assert actual_usd(catalog.FLASH_LITE, "1K", usage) == pytest.approx(0.0336 + 0.25)
    [row] = await UsageLedger(store).rows()
    state, cost = row["state"], row["cost_usd"]
    assert state == "charged" and 0.0336 < cost < 0.034
