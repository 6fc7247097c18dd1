"""Shared fixtures: a private data directory, a fake Gemini API on 127.0.0.1, a wired service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.gemini.client import GeminiEngine
from bot.storage.blobs import BlobStore
from bot.storage.repository import SessionStore
from tests.fakes.gemini_server import FakeGemini
from tests.fakes.slack_server import FakeSlack

# A throwaway PostgreSQL (tests/postgres.py); `test_database` puts every test on a new PostgreSQL
# database when THREADEDIT_TEST_DATABASE=postgresql, else on its data directory's SQLite file.
from tests.postgres import pg_cluster, pg_url, store_url, test_database  # noqa: F401

API_KEY = "test-key-5a2b7c"


async def _no_sleep(_: float) -> None:
    return None


@pytest.fixture
async def gemini() -> AsyncIterator[FakeGemini]:
    async with FakeGemini(api_key=API_KEY) as server:
        yield server


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
async def store(data_dir: Path) -> AsyncIterator[SessionStore]:
    s = await SessionStore.open(store_url(data_dir))
    yield s
    await s.close()


@pytest.fixture
def blobs(data_dir: Path) -> BlobStore:
    return BlobStore(data_dir / "blobs")


def make_engine(gemini: FakeGemini, **kw: object) -> GeminiEngine:
    kw.setdefault("sleep", _no_sleep)
    return GeminiEngine(API_KEY, gemini.base_url, **kw)  # type: ignore[arg-type]


@pytest.fixture
async def service(
    store: SessionStore, blobs: BlobStore, gemini: FakeGemini
) -> AsyncIterator[object]:
    from bot.service import EditService, SessionDefaults

    engine = make_engine(gemini, timeout=5.0)
    yield EditService(store, blobs, engine, defaults=SessionDefaults(image_size="1K"))
    await engine.aclose()


@pytest.fixture(autouse=True)
def no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    # slack_sdk's clients read proxy variables and ignore NO_PROXY, so loopback fakes would break.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    from tests.slack_harness import TOKEN

    async with FakeSlack(bot_token=TOKEN, bot_user_id="UBOT", team_id="T1") as fake:
        yield fake


@pytest.fixture
async def bot(slack: FakeSlack, gemini: FakeGemini, data_dir: Path) -> AsyncIterator[Any]:
    from tests.slack_harness import Harness

    h = await Harness(slack, gemini, data_dir, approvers="UDIR,UANA").start()
    yield h
    await h.stop()
