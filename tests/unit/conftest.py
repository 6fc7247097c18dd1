"""Fast unit tests: the service and the chat core on in-memory fakes at their ports (the store,
the engine, the chat backend), no HTTP server, no database file, no subprocess. The wire tests
beside them (tests/test_*.py) hold the real adapters to the real protocols; these hold the
behaviour, in milliseconds. The fixtures here replace the root conftest's of the same name."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.service import EditService, SessionDefaults
from bot.storage.blobs import BlobStore
from tests.fakes.memory_engine import ScriptedEngine
from tests.fakes.memory_store import MemoryStore


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def engine() -> ScriptedEngine:
    return ScriptedEngine()


@pytest.fixture
def blobs(tmp_path: Path) -> BlobStore:
    # Real files (the context planner reads image sizes from them), tiny ones.
    return BlobStore(tmp_path / "blobs")


@pytest.fixture
def service(store: MemoryStore, blobs: BlobStore, engine: ScriptedEngine) -> EditService:
    return EditService(store, blobs, engine, defaults=SessionDefaults(image_size="1K"))
