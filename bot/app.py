"""Wiring: settings in, a ready EditService (store, blobs, engine) out."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

from pydantic import SecretStr

from bot.access import AccessPolicy
from bot.chat.backend import ChatBackend
from bot.chat.core import ChatCore
from bot.config import Settings
from bot.context import ContextBudget
from bot.deliveries import Deliveries
from bot.engine import Engine
from bot.links import gallery_link
from bot.pipeline import TurnListener, TurnPipeline
from bot.reads import SessionReads
from bot.service import EditService, SessionDefaults
from bot.spending import SpendLimits
from bot.storage.blobs import BlobStore, BlobStoreError
from bot.storage.db import StoreUnavailable, make_private_dir
from bot.storage.repository import SessionStore

if TYPE_CHECKING:
    from bot.gemini.files import ReferenceFiles


def make_engine(settings: Settings) -> Engine:
    settings.require_engine_ready()
    if settings.engine_name == "gemini":
        from bot.gemini.client import GeminiEngine

        assert settings.gemini_api_key is not None
        return GeminiEngine(
            settings.gemini_api_key.get_secret_value(),
            settings.gemini_base_url,
            timeout=settings.gemini_timeout_seconds,
            retry_budget=settings.gemini_retry_budget_seconds,
        )
    from bot.local_engine import LocalEngine

    return LocalEngine()


@dataclass
class App:
    settings: Settings
    store: SessionStore
    blobs: BlobStore
    engine: Engine
    service: EditService
    # The service operations adapters use besides the edit service's (posts and inbound events;
    # reads for pages and progress lines): made from the store, so adapters never hold it.
    deliveries: Deliveries = field(init=False)
    reads: SessionReads = field(init=False)

    def __post_init__(self) -> None:
        self.deliveries = Deliveries(self.store)
        self.reads = SessionReads(self.store)


def make_chat_core(app: App, backend: ChatBackend, policy: AccessPolicy, *,
                   allowed_channels: frozenset[str] | None, progress_interval: float,
                   work: bool = True) -> ChatCore:
    """A chat adapter's core: the app's store, engine and limits under the adapter's own access
    policy, its turns run under the fleet's cap (THREADEDIT_MAX_CONCURRENCY) by this process
    (`work`) or by the fleet's workers."""
    settings = app.settings
    return ChatCore(
        app.service.with_policy(policy), backend, deliveries=app.deliveries, reads=app.reads,
        max_concurrency=settings.max_concurrency,
        allowed_channels=allowed_channels, progress_interval=progress_interval,
        offline=app.engine.offline, gallery_link=partial(gallery_link, settings),
        lease_seconds=settings.lease_seconds, max_age_seconds=settings.resume_max_age_seconds,
        work=work)


def turn_pipeline(app: App, *, listeners: Mapping[str, TurnListener] | None = None,
                  platforms: Collection[str] | None = None,
                  session_id: int | None = None) -> TurnPipeline:
    """This process's worker on the store's turn queue, under the settings' fleet-wide cap
    (THREADEDIT_MAX_CONCURRENCY), lease and age limit; the arguments say which turns it takes."""
    s = app.settings
    return TurnPipeline(app.service, listeners=listeners, platforms=platforms, session_id=session_id,
                        max_concurrency=s.max_concurrency, lease_seconds=s.lease_seconds,
                        max_age_seconds=s.resume_max_age_seconds)


@asynccontextmanager
async def open_app(settings: Settings, engine: Engine | None = None) -> AsyncIterator[App]:
    # Whatever was opened is closed if a later step fails: an open database connection (for
    # SQLite, its thread) would keep the process alive after the error was reported.
    async with AsyncExitStack() as opened:
        engine = engine or make_engine(settings)
        opened.push_async_callback(engine.aclose)
        store = await SessionStore.open(settings.database_url)  # THREADEDIT_DATABASE_URL
        opened.push_async_callback(store.close)
        # The data directory holds the images whichever database holds the rest: private, and a
        # sentence, not an OSError, if it cannot be made.
        make_private_dir(settings.data_dir)
        make_private_dir(settings.blob_dir)
        app = _wire(settings, engine, store, await open_blob_store(settings))
        if app.service.files is not None:
            opened.push_async_callback(app.service.files.files.aclose)
        yield app


async def open_blob_store(settings: Settings) -> BlobStore:
    """The images' store (THREADEDIT_BLOB_STORE): a local folder, or an S3 bucket with the
    local folder as its cache, checked at start so an unreachable one is one sentence, exit 2."""
    if not settings.blob_is_s3:
        return BlobStore(settings.blob_dir)
    from bot.storage.s3 import S3BlobStore

    def secret(value: SecretStr | None) -> str | None:
        return value.get_secret_value() if value is not None else None

    try:
        blobs = S3BlobStore(settings.blob_store, settings.blob_dir, endpoint=settings.aws_endpoint_url,
                            region=settings.aws_region, access_key_id=secret(settings.aws_access_key_id),
                            secret_access_key=secret(settings.aws_secret_access_key))
        await blobs.check()
    except BlobStoreError as exc:
        raise StoreUnavailable(exc.message) from None
    return blobs


def _wire(settings: Settings, engine: Engine, store: SessionStore, blobs: BlobStore) -> App:
    defaults = SessionDefaults(settings.model, settings.aspect_ratio, settings.image_size)
    limits = SpendLimits(user_turns_per_hour=settings.user_turns_per_hour or None,
                         workspace_daily_usd=settings.daily_budget_usd or None)
    context = ContextBudget(max_tokens=settings.context_max_tokens,
                            max_bytes=int(settings.context_max_mb * 1_000_000),
                            count_tokens=settings.gemini_count_tokens)
    files = reference_files(settings, engine, store, blobs)
    service = EditService(store, blobs, engine, defaults=defaults, spend_limits=limits,
                          context=context, files=files)
    return App(settings, store, blobs, engine, service)


def reference_files(settings: Settings, engine: Engine, store: SessionStore,
                    blobs: BlobStore) -> ReferenceFiles | None:
    """The Files API for reference images, when asked for and the engine is Gemini's (the
    offline engine has no files to upload to)."""
    if not settings.gemini_files_api or engine.offline or settings.gemini_api_key is None:
        return None
    from bot.gemini.files import GeminiFiles, ReferenceFiles
    from bot.storage.uploads import UploadedFiles

    uploader = GeminiFiles(settings.gemini_api_key.get_secret_value(), settings.gemini_base_url)
    return ReferenceFiles(uploader, UploadedFiles(store), blobs)
