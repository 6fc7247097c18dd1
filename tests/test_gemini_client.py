"""GeminiEngine against the fake Gemini API: retries, budgets and every error explained."""

from __future__ import annotations

import pytest

from bot.engine import EngineError
from bot.gemini.client import GeminiEngine
from bot.gemini.contents import build_request, user_content
from bot.gemini.response import interpret_response
from tests.conftest import API_KEY
from tests.fakes.gemini_server import Behaviour, FakeGemini

MODEL = "gemini-3.1-flash-image"


class SleepRecorder:
    def __init__(self) -> None:
        self.sleeps: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.sleeps.append(seconds)


def _body(text: str = "a red bicycle") -> dict:
    return build_request([], user_content(text), model=MODEL, aspect="16:9", size="1K")


@pytest.fixture
async def engine_and_sleeps(gemini: FakeGemini):
    sleeps = SleepRecorder()
    engine = GeminiEngine(API_KEY, gemini.base_url, timeout=5.0, retry_budget=120, sleep=sleeps)
    yield engine, sleeps
    await engine.aclose()


async def test_success_sends_key_in_header_and_returns_final_jpeg(gemini, engine_and_sleeps):
    engine, _ = engine_and_sleeps
    outcome = interpret_response(await engine.generate(MODEL, _body()))
    assert outcome.status == "image" and outcome.mime == "image/jpeg"
    assert outcome.image is not None and outcome.image[:3] == b"\xff\xd8\xff"
    req = gemini.requests[0]
    assert req.headers["x-goog-api-key"] == API_KEY
    assert API_KEY not in req.raw.decode()
    # The interim thought image (a PNG) is never the result.
    thought = [p for p in gemini.issued[0]["parts"] if p.get("thought") and "inlineData" in p]
    assert thought and outcome.image != thought[0]["inlineData"]["data"]


async def test_429_waits_for_retry_info_then_succeeds(gemini, engine_and_sleeps):
    engine, sleeps = engine_and_sleeps
    gemini.script += [Behaviour.rate_limited("7s"), Behaviour.rate_limited("0.5s", header="9")]
    body = await engine.generate(MODEL, _body())
    assert interpret_response(body).status == "image"
    assert sleeps.sleeps == [7.0, 0.5]  # RetryInfo wins over Retry-After
    assert [r.status for r in gemini.requests] == [429, 429, 200]


async def test_retry_after_header_is_used_without_retry_info(gemini, engine_and_sleeps):
    engine, sleeps = engine_and_sleeps
    gemini.script.append(Behaviour.rate_limited(retry_delay=None, header="3"))
    await engine.generate(MODEL, _body())
    assert sleeps.sleeps == [3.0]


async def test_per_day_quota_is_not_retried(gemini, engine_and_sleeps):
    engine, sleeps = engine_and_sleeps
    gemini.script.append(Behaviour.rate_limited("30s", per_day=True))
    with pytest.raises(EngineError) as err:
        await engine.generate(MODEL, _body())
    assert err.value.code == "quota_exhausted" and "midnight Pacific" in err.value.message
    assert len(gemini.requests) == 1 and sleeps.sleeps == []


@pytest.mark.parametrize("status", [500, 503, 504])
async def test_server_errors_back_off_and_recover(gemini, engine_and_sleeps, status):
    engine, sleeps = engine_and_sleeps
    gemini.script += [Behaviour.server_error(status)] * 2
    assert interpret_response(await engine.generate(MODEL, _body())).status == "image"
    assert len(sleeps.sleeps) == 2 and all(0 < s <= 31 for s in sleeps.sleeps)


async def test_retries_stop_inside_the_time_budget(gemini):
    sleeps = SleepRecorder()
    engine = GeminiEngine(API_KEY, gemini.base_url, retry_budget=10, sleep=sleeps)
    gemini.script += [Behaviour.rate_limited("6s")] * 5
    with pytest.raises(EngineError) as err:
        await engine.generate(MODEL, _body())
    await engine.aclose()
    assert err.value.code == "rate_limited"
    assert "Gave up after" in err.value.message and "retry later" in err.value.message
    assert sum(sleeps.sleeps) <= 10


async def test_timeout_is_retried_then_explained(gemini):
    engine = GeminiEngine(API_KEY, gemini.base_url, timeout=0.3, max_attempts=2,
                          sleep=SleepRecorder())
    gemini.script += [Behaviour.slow(1.0), Behaviour.slow(1.0)]
    with pytest.raises(EngineError) as err:
        await engine.generate(MODEL, _body())
    await engine.aclose()
    assert err.value.code == "timeout" and "did not answer in time" in err.value.message


async def test_truncated_body_is_retried(gemini, engine_and_sleeps):
    engine, _ = engine_and_sleeps
    gemini.script.append(Behaviour.raw(200, b'{"candidates": [{"content": {"par'))
    assert interpret_response(await engine.generate(MODEL, _body())).status == "image"


async def test_retired_model_is_explained_not_retried(gemini, engine_and_sleeps):
    engine, sleeps = engine_and_sleeps
    with pytest.raises(EngineError) as err:
        await engine.generate("gemini-3-pro-image-preview", _body())
    assert err.value.code == "model_not_found" and "retired" in err.value.message
    assert sleeps.sleeps == []


async def test_wrong_key_is_explained_without_echoing_it(gemini):
    engine = GeminiEngine("wrong-key-123", gemini.base_url, sleep=SleepRecorder())
    with pytest.raises(EngineError) as err:
        await engine.generate(MODEL, _body())
    await engine.aclose()
    assert err.value.code == "auth" and "wrong-key-123" not in err.value.message


async def test_over_limit_answer_is_classified(gemini, engine_and_sleeps):
    engine, _ = engine_and_sleeps
    gemini.script.append(Behaviour.too_large())
    with pytest.raises(EngineError) as err:
        await engine.generate(MODEL, _body())
    assert err.value.code == "context_too_large"


async def test_unreachable_server_is_a_network_error():
    engine = GeminiEngine(API_KEY, "http://127.0.0.1:9", max_attempts=2, sleep=SleepRecorder())
    with pytest.raises(EngineError) as err:
        await engine.generate(MODEL, _body())
    await engine.aclose()
    assert err.value.code == "network"


@pytest.mark.parametrize(
    ("behaviour", "status", "reason"),
    [
        (Behaviour.blocked_prompt("PROHIBITED_CONTENT"), "blocked", "PROHIBITED_CONTENT"),
        (Behaviour.finish("IMAGE_SAFETY", "unsafe"), "blocked", "IMAGE_SAFETY"),
        (Behaviour.finish("NO_IMAGE"), "blocked", "NO_IMAGE"),
        (Behaviour.finish("IMAGE_RECITATION"), "blocked", "IMAGE_RECITATION"),
        (Behaviour.text_only("Which bicycle do you mean?"), "text", "text_only"),
        (Behaviour.empty_candidates(), "failed", "empty"),
    ],
)
async def test_no_image_answers_become_plain_words(gemini, engine_and_sleeps, behaviour, status,
                                                   reason):
    engine, _ = engine_and_sleeps
    gemini.script.append(behaviour)
    outcome = interpret_response(await engine.generate(MODEL, _body()))
    assert (outcome.status, outcome.reason) == (status, reason)
    assert outcome.image is None and outcome.message
    assert "_" not in outcome.message.split("(")[0] or status == "text"
