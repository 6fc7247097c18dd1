"""UploadedFiles: which blob is on Gemini's Files API under which URI, until when (SQLite)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from bot.gemini.files import UploadedFile
from bot.storage.db import utcnow
from bot.storage.repository import SessionStore

_CHUNK = 500  # well under SQLite's limit on parameters in one statement


class UploadedFiles:
    def __init__(self, store: SessionStore) -> None:
        self.store = store

    async def get(self, blob_key: str) -> UploadedFile | None:
        async with self.store.db.execute(
            "SELECT name, uri, mime, expires_at FROM uploaded_files WHERE blob_key=?", (blob_key,)
        ) as cur:
            row = await cur.fetchone()
        if row is None:
            return None
        expires = datetime.fromisoformat(row[3])
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)
        return UploadedFile(name=row[0], uri=row[1], mime=row[2], expires_at=expires)

    async def put(self, blob_key: str, file: UploadedFile) -> None:
        """Remember an upload, replacing the blob's previous one."""
        expires = file.expires_at.astimezone(UTC).isoformat(timespec="microseconds")
        async with self.store.transaction() as db:
            await db.execute(
                "INSERT INTO uploaded_files (blob_key, name, uri, mime, expires_at, uploaded_at)"
                " VALUES (?,?,?,?,?,?) ON CONFLICT(blob_key) DO UPDATE SET name=excluded.name,"
                " uri=excluded.uri, mime=excluded.mime, expires_at=excluded.expires_at,"
                " uploaded_at=excluded.uploaded_at",
                (blob_key, file.name, file.uri, file.mime, expires, utcnow()),
            )

    async def forget_uris(self, uris: Iterable[str]) -> int:
        """Drop the rows of these URIs; how many went."""
        wanted = list(dict.fromkeys(uris))
        gone = 0
        if not wanted:
            return 0
        async with self.store.transaction() as db:
            for i in range(0, len(wanted), _CHUNK):
                chunk = wanted[i:i + _CHUNK]
                cur = await db.execute(
                    f"DELETE FROM uploaded_files WHERE uri IN ({','.join('?' * len(chunk))})", chunk)
                gone += cur.rowcount
        return gone
