"""Thumbnails made once per (image, size) and kept on disk beside the blob store.

Blobs are content-addressed, so a thumbnail named after the blob's hash and the size can never
go stale: it is written once and served as immutable from then on.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path
from typing import Protocol

from bot import images

# Long side in pixels: "sm" for the tree and reference chips, "md" for the thread and compare.
SIZES = {"sm": 320, "md": 1024}


class ImageBytes(Protocol):
    """Where images are read by key (the app's blob store)."""

    def get(self, key: str) -> bytes: ...


class Thumbnails:
    def __init__(self, root: Path, blobs: ImageBytes) -> None:
        self.root = root
        self.blobs = blobs
        self._pending: dict[Path, asyncio.Future[None]] = {}

    def path_for(self, blob_key: str, size: str) -> Path:
        digest = blob_key.split(".", 1)[0]
        if not digest.isalnum():
            raise ValueError(f"not a blob key: {blob_key!r}")
        return self.root / digest[:2] / f"{digest}-{SIZES[size]}.jpg"

    async def get(self, blob_key: str, size: str) -> Path:
        """The thumbnail's path, making it first if this is the first request for it."""
        path = self.path_for(blob_key, size)
        if path.exists():
            return path
        # Concurrent first requests for one thumbnail share a single generation.
        fut = self._pending.get(path)
        if fut is None:
            fut = asyncio.ensure_future(asyncio.to_thread(self._make, blob_key, SIZES[size], path))
            self._pending[path] = fut
            fut.add_done_callback(lambda _f: self._pending.pop(path, None))
        await asyncio.shield(fut)
        return path

    def _make(self, blob_key: str, side: int, path: Path) -> None:
        data = images.thumbnail(self.blobs.get(blob_key), side)
        # Private as the data directory is: thumbnails show every image (mode, less the umask).
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
