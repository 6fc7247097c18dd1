"""The Files API of the fake Gemini server (gemini_server.FakeGemini uses it).

Routes, all checking the API key like the rest of the fake:
  POST   /upload/v1beta/files                    resumable start: `X-Goog-Upload-Protocol: resumable`,
                                                 `X-Goog-Upload-Command: start`, the declared length
                                                 and type in `X-Goog-Upload-Header-Content-*`, JSON
                                                 `{"file": {"display_name": ...}}`; answers with the
                                                 header `X-Goog-Upload-URL` and `x-goog-upload-status:
                                                 active`.
  POST   /upload/v1beta/files?upload_id=...      the bytes: `X-Goog-Upload-Command: upload[, finalize]`
                                                 at `X-Goog-Upload-Offset`; finalize answers
                                                 `{"file": <resource>}` and `x-goog-upload-status: final`.
  GET    /v1beta/files/{id}, DELETE /v1beta/files/{id}

A file lives 48 h from its upload on this fake's clock (`now`, which `advance` moves), or until
`expire` or DELETE. `check_parts` is what generateContent and countTokens run on every `fileData`
part: the URI must name a live, ACTIVE file held here, with the same MIME type.

Knobs: `fail_uploads` (a status every resumable start answers with: 500/503/...),
`processing_polls` (new files answer PROCESSING to that many GETs, then `processing_result`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from tests.fakes import gemini_rules as rules
from tests.fakes.gemini_rules import GeminiError

FILE_TTL = timedelta(hours=48)
CHUNK_GRANULARITY = 8 * 1024 * 1024
_START_METADATA: rules.Schema = {
    "file": {"displayName": "string", "name": "string", "mimeType": "string"}
}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def rfc3339(moment: datetime) -> str:
    """Google's Timestamp JSON: UTC, microseconds, 'Z'."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=json.dumps(body), content_type="application/json",
                        headers=headers)


def missing(file_id: str) -> GeminiError:
    return GeminiError(403, rules.MSG_FILE_MISSING.format(id=file_id), "PERMISSION_DENIED")


@dataclass
class StoredFile:
    id: str
    display_name: str
    mime: str
    data: bytes
    created: datetime
    expires: datetime
    state: str = "ACTIVE"  # PROCESSING, ACTIVE or FAILED
    polls_left: int = 0  # GETs still answered PROCESSING
    deleted: bool = False

    @property
    def name(self) -> str:
        return f"files/{self.id}"

    def resource(self, base_url: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name, "displayName": self.display_name, "mimeType": self.mime,
            "sizeBytes": str(len(self.data)),  # int64 is a string in proto JSON
            "createTime": rfc3339(self.created), "updateTime": rfc3339(self.created),
            "expirationTime": rfc3339(self.expires),
            # RECALLED: the real value is the base64 of the hex digest, not of the raw digest.
            "sha256Hash": base64.b64encode(hashlib.sha256(self.data).hexdigest().encode()).decode(),
            "uri": f"{base_url}/v1beta/{self.name}", "state": self.state, "source": "UPLOADED",
        }
        if self.state == "FAILED":
            out["error"] = {"code": 3, "message": "Failed to process the file."}
        return out


@dataclass
class _Pending:
    display_name: str
    mime: str
    length: int
    received: bytearray = field(default_factory=bytearray)


@dataclass
class FileRequest:
    method: str
    path: str
    query: dict[str, str]  # a ?key= would show here
    headers: dict[str, str]  # names lower-cased
    size: int  # body bytes
    status: int = 0


class FakeFiles:
    def __init__(self, auth: Callable[[web.Request], None]) -> None:
        self._auth = auth
        self.base_url = ""
        self.files: dict[str, StoredFile] = {}  # id -> file, deleted and expired ones included
        self.uploads = 0  # finalized uploads
        self.requests: list[FileRequest] = []
        self.offset = timedelta()
        self.fail_uploads: int | None = None
        self.processing_polls = 0
        self.processing_result = "ACTIVE"
        self._pending: dict[str, _Pending] = {}

    # ---- clock and expiry -----------------------------------------------------------------
    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, delta: timedelta) -> None:
        """Move this fake's clock: files whose 48 h pass are gone."""
        self.offset += delta

    def expire(self, *ids: str) -> None:
        """Expire these files (ids or 'files/<id>' names), or every file when none is given."""
        wanted = {i.removeprefix("files/") for i in ids} if ids else set(self.files)
        for file_id in wanted:
            self.files[file_id].expires = self.now() - timedelta(microseconds=1)

    def live(self, file_id: str) -> StoredFile | None:
        file = self.files.get(file_id)
        if file is None or file.deleted or file.expires <= self.now():
            return None
        return file

    # ---- routes ---------------------------------------------------------------------------
    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/upload/v1beta/files", self._recorded(self._upload))
        router.add_get("/v1beta/files/{id}", self._recorded(self._get))
        router.add_delete("/v1beta/files/{id}", self._recorded(self._delete))

    def _recorded(self, handler: Handler) -> Handler:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            raw = await request.read()
            record = FileRequest(request.method, request.path, dict(request.query),
                                 {k.lower(): v for k, v in request.headers.items()}, len(raw))
            self.requests.append(record)
            try:
                response = await handler(request)
            except GeminiError as err:
                response = _json(err.code, err.body())
            record.status = response.status
            return response
        return wrapped

    async def _upload(self, request: web.Request) -> web.StreamResponse:
        self._auth(request)
        if "upload_id" in request.query:
            return await self._receive(request, request.query["upload_id"])
        return await self._start(request)

    async def _start(self, request: web.Request) -> web.StreamResponse:
        if self.fail_uploads is not None:
            status = {500: "INTERNAL", 503: "UNAVAILABLE"}.get(self.fail_uploads, "UNKNOWN")
            raise GeminiError(self.fail_uploads, "The service is currently unavailable.", status)
        headers = request.headers
        if headers.get("X-Goog-Upload-Protocol", "").lower() != "resumable":
            raise rules.bad_request("Only the resumable upload protocol is supported here.")
        if headers.get("X-Goog-Upload-Command", "").strip().lower() != "start":
            raise rules.bad_request("Expected X-Goog-Upload-Command: start.")
        length = headers.get("X-Goog-Upload-Header-Content-Length", "")
        if not length.isdigit():
            raise rules.bad_request("Missing or invalid X-Goog-Upload-Header-Content-Length.")
        mime = headers.get("X-Goog-Upload-Header-Content-Type", "")
        if mime not in rules.IMAGE_MIME_TYPES:  # the real API takes more types; this bot only images
            raise rules.bad_request(f"Unsupported MIME type: {mime}")
        raw = await request.read()
        try:
            parsed = json.loads(raw) if raw.strip() else {}
        except (ValueError, UnicodeDecodeError):
            raise rules.bad_request("Invalid JSON payload received.") from None
        metadata = rules.parse_message(_START_METADATA, parsed)
        upload_id = base64.urlsafe_b64encode(os.urandom(18)).decode()
        self._pending[upload_id] = _Pending(
            metadata.get("file", {}).get("displayName", ""), mime, int(length))
        return web.Response(status=200, headers={
            "X-Goog-Upload-URL":
                f"{self.base_url}/upload/v1beta/files?upload_id={upload_id}&upload_protocol=resumable",
            "X-Goog-Upload-Status": "active",
            "X-Goog-Upload-Chunk-Granularity": str(CHUNK_GRANULARITY),
        })

    async def _receive(self, request: web.Request, upload_id: str) -> web.StreamResponse:
        pending = self._pending.get(upload_id)
        if pending is None:
            raise GeminiError(404, "No upload session with this id.", "NOT_FOUND")
        commands = {c.strip().lower() for c in request.headers.get("X-Goog-Upload-Command", "").split(",")}
        if "upload" not in commands:
            raise rules.bad_request("Expected X-Goog-Upload-Command: upload[, finalize].")
        offset = request.headers.get("X-Goog-Upload-Offset", "")
        if offset != str(len(pending.received)):
            raise rules.bad_request(
                f"X-Goog-Upload-Offset {offset!r} is not {len(pending.received)}, the bytes received.")
        pending.received += await request.read()
        if "finalize" not in commands:
            return web.Response(status=200, headers={"X-Goog-Upload-Status": "active"})
        del self._pending[upload_id]
        if len(pending.received) != pending.length:
            raise rules.bad_request(
                f"Received {len(pending.received)} bytes, but {pending.length} were declared.")
        created = self.now()
        file = StoredFile(
            id=os.urandom(6).hex(), display_name=pending.display_name, mime=pending.mime,
            data=bytes(pending.received), created=created, expires=created + FILE_TTL,
            state="PROCESSING" if self.processing_polls else "ACTIVE",
            polls_left=self.processing_polls,
        )
        self.files[file.id] = file
        self.uploads += 1
        return _json(200, {"file": file.resource(self.base_url)}, {"X-Goog-Upload-Status": "final"})

    async def _get(self, request: web.Request) -> web.StreamResponse:
        self._auth(request)
        file_id = request.match_info["id"]
        file = self.live(file_id)
        if file is None:
            raise missing(file_id)  # REAL: GET of an unknown file answers 403, not 404
        if file.polls_left:
            file.polls_left -= 1
        elif file.state == "PROCESSING":
            file.state = self.processing_result
        return _json(200, file.resource(self.base_url))

    async def _delete(self, request: web.Request) -> web.StreamResponse:
        self._auth(request)
        file_id = request.match_info["id"]
        file = self.live(file_id)
        if file is None:
            raise missing(file_id)
        file.deleted = True
        return _json(200, {})

    # ---- fileData parts in generateContent / countTokens -----------------------------------
    def check_parts(self, contents: list[dict[str, Any]]) -> dict[str, bytes]:
        """Every fileData part names a live ACTIVE file held here, of its MIME type: uri -> bytes."""
        found: dict[str, bytes] = {}
        prefix = f"{self.base_url}/v1beta/files/"
        for content in contents:
            for part in content.get("parts", []):
                ref = part.get("fileData")
                if ref is None:
                    continue
                uri = str(ref.get("fileUri", ""))
                file_id = uri.rsplit("/", 1)[-1]
                file = self.live(file_id) if uri.startswith(prefix) else None
                if file is None:
                    raise missing(file_id)
                if file.state != "ACTIVE":
                    raise GeminiError(400, rules.MSG_FILE_NOT_ACTIVE.format(id=file_id),
                                      "FAILED_PRECONDITION")
                if ref.get("mimeType") != file.mime:
                    raise rules.bad_request(
                        f"The mime type {ref.get('mimeType')!r} does not match the File {file_id} "
                        f"({file.mime}).")
                rules.decode_image(base64.b64encode(file.data).decode(), file.mime)
                found[uri] = file.data
        return found
