"""Reference images through Gemini's Files API instead of inline base64 on every turn.

`GeminiFiles` uploads bytes with the two-step resumable protocol and waits until the file is
ACTIVE. `ReferenceFiles` rewrites a request's packed contents so that each user image (a
`blob:<key>` reference, see bot/storage/blobs.py) becomes a `fileData` URI, uploading each blob
once per 48 h lifetime and remembering the upload in the store (bot/storage/uploads.py). Model
contents are never touched: they are replayed verbatim, thought signatures and inline images
included. A failed upload leaves the image inline, so the request still works, only larger.

The API key travels in the `x-goog-api-key` header only, never in a URL or a log line, and is
sent only to the configured API origin (an upload URL elsewhere is refused).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import httpx

from bot.storage.blobs import BLOB_PREFIX, BlobStore

log = logging.getLogger(__name__)

FILE_TTL = timedelta(hours=48)  # how long the Files API keeps a file (research section 4)
UPLOAD_PAUSE = timedelta(minutes=5)
_NAME = re.compile(r"files/[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class UploadedFile:
    name: str  # "files/<id>"
    uri: str  # what a fileData part names
    mime: str
    expires_at: datetime  # UTC, aware


class UploadRecords(Protocol):
    """Where uploads are remembered between requests and restarts. The store implements it
    (bot/storage/uploads.py) and is handed in, so this side never imports the store."""

    async def get(self, blob_key: str) -> UploadedFile | None: ...

    async def put(self, blob_key: str, file: UploadedFile) -> None: ...

    async def forget_uris(self, uris: Iterable[str]) -> int: ...


class FileUploadError(Exception):
    """An upload that produced no usable file. The message names no secret."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port


def _google_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    err = body.get("error") if isinstance(body, dict) else None
    return str(err.get("message") or "")[:200] if isinstance(err, dict) else ""


def _expiry(resource: dict[str, Any]) -> datetime:
    text = resource.get("expirationTime")
    try:
        moment = datetime.fromisoformat(str(text))
    except ValueError:
        return _utcnow() + FILE_TTL
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class GeminiFiles:
    def __init__(
        self,
        api_key: str,
        base_url: str = "https://generativelanguage.googleapis.com",
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 60.0,
        poll_interval: float = 0.5,
        max_polls: int = 10,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.poll_interval = poll_interval
        self.max_polls = max_polls
        self._sleep = sleep
        self._http = httpx.AsyncClient(
            headers={"x-goog-api-key": api_key},
            timeout=httpx.Timeout(timeout, connect=15.0),
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def upload(self, data: bytes, mime: str, display_name: str) -> UploadedFile:
        """Upload, wait until ACTIVE; FileUploadError for any failure (HTTP, network, FAILED)."""
        try:
            return await self._upload(data, mime, display_name)
        except httpx.HTTPError as exc:
            raise FileUploadError(
                f"could not reach the Gemini Files API ({type(exc).__name__})") from None
        except (ValueError, TypeError, KeyError, AttributeError) as exc:  # a malformed answer
            raise FileUploadError(f"unexpected answer from the Gemini Files API ({exc})") from None

    async def _upload(self, data: bytes, mime: str, display_name: str) -> UploadedFile:
        start = await self._http.post(
            f"{self.base_url}/upload/v1beta/files",
            headers={
                "X-Goog-Upload-Protocol": "resumable",
                "X-Goog-Upload-Command": "start",
                "X-Goog-Upload-Header-Content-Length": str(len(data)),
                "X-Goog-Upload-Header-Content-Type": mime,
            },
            json={"file": {"display_name": display_name}},
        )
        self._check(start, "start")
        upload_url = start.headers.get("x-goog-upload-url")
        if not upload_url:
            raise FileUploadError("the Files API gave no upload URL")
        if _origin(httpx.URL(upload_url)) != _origin(httpx.URL(self.base_url)):
            raise FileUploadError("the Files API gave an upload URL on another host; not sending the key")
        done = await self._http.post(
            upload_url,
            headers={"X-Goog-Upload-Command": "upload, finalize", "X-Goog-Upload-Offset": "0"},
            content=data,
        )
        self._check(done, "upload")
        status = done.headers.get("x-goog-upload-status", "final").lower()
        if status != "final":
            raise FileUploadError(f"the upload did not finish (status {status!r})")
        resource = done.json()["file"]
        resource = await self._wait_active(resource)
        return UploadedFile(
            name=str(resource["name"]), uri=str(resource["uri"]),
            mime=str(resource.get("mimeType") or mime), expires_at=_expiry(resource),
        )

    @staticmethod
    def _check(response: httpx.Response, step: str) -> None:
        if response.status_code != 200:
            said = _google_message(response)
            raise FileUploadError(f"the Files API answered HTTP {response.status_code} at {step}"
                                  + (f": {said}" if said else ""))

    async def _wait_active(self, resource: dict[str, Any]) -> dict[str, Any]:
        name = str(resource.get("name", ""))
        if not _NAME.fullmatch(name):
            raise FileUploadError(f"the Files API named the file {name[:60]!r}")
        polls = 0
        while resource.get("state") == "PROCESSING":
            if polls >= self.max_polls:
                raise FileUploadError(f"{name} was still PROCESSING after {polls} checks")
            polls += 1
            await self._sleep(self.poll_interval)
            response = await self._http.get(f"{self.base_url}/v1beta/{name}")
            self._check(response, "status check")
            resource = response.json()
        state = resource.get("state", "ACTIVE")
        if state != "ACTIVE":
            raise FileUploadError(f"{name} is {state}")
        return resource


def _image_ref(part: Any) -> tuple[str, str, str] | None:
    """(inline field name, blob key, mime) of a packed image part, else None."""
    if not isinstance(part, dict):
        return None
    for field in ("inlineData", "inline_data"):
        inline = part.get(field)
        if isinstance(inline, dict):
            data = inline.get("data")
            if not (isinstance(data, str) and data.startswith(BLOB_PREFIX)):
                return None
            mime = str(inline.get("mimeType", inline.get("mime_type", "")))
            return field, data[len(BLOB_PREFIX):], mime
    return None


def file_uris(contents: Iterable[dict[str, Any]]) -> list[str]:
    """The fileData URIs a request's contents name, in order, each once."""
    found: list[str] = []
    for content in contents:
        for part in content.get("parts") or []:
            ref = part.get("fileData", part.get("file_data")) if isinstance(part, dict) else None
            uri = ref.get("fileUri", ref.get("file_uri")) if isinstance(ref, dict) else None
            if isinstance(uri, str) and uri not in found:
                found.append(uri)
    return found


class ReferenceFiles:
    def __init__(
        self,
        files: GeminiFiles,
        uploads: UploadRecords,
        blobs: BlobStore,
        *,
        margin: timedelta = timedelta(hours=1),
        now: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.files = files
        self.uploads = uploads
        self.blobs = blobs
        self.margin = margin
        self.now = now
        self._inflight: dict[str, asyncio.Task[UploadedFile | None]] = {}
        # After a failed upload, images go inline for a while instead of each turn waiting on
        # a Files API that is down.
        self._paused_until: datetime | None = None

    async def swap_user_images(self, contents: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """A copy of packed contents with each user image replaced by a fileData part.

        Model contents come back unchanged. An image whose upload failed stays inline (packed)."""
        seen: dict[str, UploadedFile | None] = {}  # blob key -> its file in this request
        out: list[dict[str, Any]] = []
        for content in contents:
            content = copy.deepcopy(content)
            if content.get("role") != "model" and isinstance(content.get("parts"), list):
                content["parts"] = [await self._swap(part, seen) for part in content["parts"]]
            out.append(content)
        return out

    async def _swap(self, part: Any, seen: dict[str, UploadedFile | None]) -> Any:
        ref = _image_ref(part)
        if ref is None:
            return part
        field, key, mime = ref
        if key not in seen:
            seen[key] = await self._file_for(key, mime)
        file = seen[key]
        if file is None:
            return part
        swapped: dict[str, Any] = {}
        for name, value in part.items():  # same place, same neighbours (a signature, say)
            if name == field:
                swapped["fileData"] = {"mimeType": file.mime, "fileUri": file.uri}
            else:
                swapped[name] = value
        return swapped

    async def _file_for(self, key: str, mime: str) -> UploadedFile | None:
        cached = await self.uploads.get(key)
        if cached is not None and cached.expires_at - self.margin > self.now():
            return cached
        if self._paused_until is not None and self.now() < self._paused_until:
            return None
        # Requests running at once that share a blob share its one upload.
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(self._upload(key, mime))
            self._inflight[key] = task
            task.add_done_callback(lambda _: self._inflight.pop(key, None))
        return await asyncio.shield(task)

    async def _upload(self, key: str, mime: str) -> UploadedFile | None:
        try:
            data = await asyncio.to_thread(self.blobs.get, key)
            file = await self.files.upload(data, mime, display_name=key)
        except (FileUploadError, OSError, ValueError) as exc:
            log.warning("reference image %s stays inline: %s; uploads pause for %s", key[:16], exc,
                        UPLOAD_PAUSE)
            self._paused_until = self.now() + UPLOAD_PAUSE
            return None
        try:
            await self.uploads.put(key, file)
        # Whatever the store's engine raises: the file works for this request, and the next one
        # uploads again, so a record that could not be written costs an upload, never the turn.
        except Exception as exc:
            log.warning("could not remember the upload of %s: %s", key[:16], exc)
        return file

    async def forget(self, uris: Iterable[str]) -> None:
        """Drop the cache rows of these URIs (after Gemini said the files are gone)."""
        await self.uploads.forget_uris(list(uris))
