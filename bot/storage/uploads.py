"""UploadedFiles: which blob is on Gemini's Files API under which URI, until when; each call one
transaction on the store (bot/storage/records.py holds the statements)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from bot.gemini.files import UploadedFile
from bot.storage.repository import SessionStore


class UploadedFiles:
    def __init__(self, store: SessionStore) -> None:
        self.store = store

    async def get(self, blob_key: str) -> UploadedFile | None:
        row = await self.store.read(lambda uow: uow.uploads.get(blob_key))
        if row is None:
            return None
        expires = datetime.fromisoformat(row["expires_at"])
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)
        return UploadedFile(name=row["name"], uri=row["uri"], mime=row["mime"], expires_at=expires)

    async def put(self, blob_key: str, file: UploadedFile) -> None:
        """Remember an upload, replacing the blob's previous one."""
        expires = file.expires_at.astimezone(UTC).isoformat(timespec="microseconds")
        await self.store.transact(lambda uow: uow.uploads.put(blob_key, file.name, file.uri, file.mime,
                                                              expires))

    async def forget_uris(self, uris: Iterable[str]) -> int:
        """Drop the rows of these URIs; how many went."""
        wanted = list(uris)
        if not wanted:
            return 0
        return await self.store.transact(lambda uow: uow.uploads.forget_uris(wanted))
