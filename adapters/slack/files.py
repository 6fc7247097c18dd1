"""Fetching Slack attachments (`url_private`) with the bot token, and only from Slack.

The bot token is a workspace-wide credential: it is sent only to the configured file origins
(default https://files.slack.com), never to a URL anyone could put in a message, and redirects
are not followed, so it cannot be carried elsewhere.

A file shared from a Slack Connect channel (another organisation's) arrives in the event as a
stub, `{"id", "mode": "file_access", "file_access": "check_file_info", "created": 0, ...}`, with
no URL: the file object comes from `files.info`, and is then downloaded like any other.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.chat.backend import AttachmentError, IncomingFile

MAX_DOWNLOAD_BYTES = 30 * 1024 * 1024
GONE = frozenset({"file_not_found", "file_deleted"})
DENIED = frozenset({"access_denied", "no_permission", "not_in_channel", "ekm_access_denied"})


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


class SlackFiles:
    def __init__(self, token: str, allowed_origins: frozenset[str],
                 http: httpx.AsyncClient | None = None, client: AsyncWebClient | None = None) -> None:
        self._token = token
        self._client = client  # files.info, for Slack Connect stubs
        self.allowed_origins = frozenset(o.lower() for o in allowed_origins)
        self._http = http or httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=10.0),
                                               follow_redirects=False)

    async def aclose(self) -> None:
        await self._http.aclose()

    def incoming(self, file: dict[str, Any]) -> IncomingFile:
        return IncomingFile(file.get("name"), file.get("size"), lambda: self.fetch(file))

    async def fetch(self, file: dict[str, Any]) -> bytes:
        if file.get("file_access") == "check_file_info":
            file = await self.file_info(file)
        name = file.get("name") or "the attachment"
        url = str(file.get("url_private_download") or file.get("url_private") or "")
        if not url or origin_of(url) not in self.allowed_origins:
            raise AttachmentError(
                f"I did not fetch {name}: it is not on Slack's file server, and I only send "
                "my Slack token there.")
        size = file.get("size")
        if isinstance(size, int) and size > MAX_DOWNLOAD_BYTES:
            raise AttachmentError(f"{name} is {size / 2**20:.0f} MB; the limit is "
                                  f"{MAX_DOWNLOAD_BYTES // 2**20} MB.")
        try:
            async with self._http.stream(
                "GET", url, headers={"Authorization": f"Bearer {self._token}"}
            ) as r:
                if r.is_redirect or r.status_code != 200:
                    raise AttachmentError(self._setup_problem(name, f"HTTP {r.status_code}"))
                # Slack answers a token without files:read with its sign-in page; an HTML file
                # someone shared is theirs, and the core's image check refuses it in words.
                declared_html = "html" in str(file.get("mimetype") or file.get("filetype") or "")
                if "text/html" in r.headers.get("content-type", "") and not declared_html:
                    raise AttachmentError(self._setup_problem(name, "a sign-in page"))
                chunks, total = [], 0
                async for chunk in r.aiter_bytes():
                    total += len(chunk)
                    if total > MAX_DOWNLOAD_BYTES:
                        raise AttachmentError(f"{name} is over the {MAX_DOWNLOAD_BYTES // 2**20}"
                                              " MB limit.")
                    chunks.append(chunk)
        except httpx.HTTPError as exc:
            raise AttachmentError(f"I could not download {name} from Slack "
                                  f"({type(exc).__name__}); try attaching it again.") from None
        data = b"".join(chunks)
        if not declared_html and data[:15].lstrip().lower().startswith((b"<!doctype", b"<html")):
            raise AttachmentError(self._setup_problem(name, "a sign-in page"))
        return data

    async def file_info(self, stub: dict[str, Any]) -> dict[str, Any]:
        """The file object behind a Slack Connect stub, or a sentence saying why there is none."""
        file_id = str(stub.get("id") or "")
        what = "the file shared from the other organisation"
        if self._client is None or not file_id:
            raise AttachmentError(f"I could not get {what}: Slack sent no way to look it up.")
        try:
            response = await self._client.files_info(file=file_id)
        except SlackApiError as exc:
            error = str(exc.response.get("error") or f"HTTP {exc.response.status_code}")
            if error in GONE:
                raise AttachmentError(f"I could not get {what}: Slack says it no longer exists "
                                      f"({error}). Attach it again, please.") from None
            if error in DENIED:
                raise AttachmentError(
                    f"I could not get {what}: Slack denied the app access to it ({error}). Its "
                    "owners may not share files with apps; download it and attach it here "
                    "instead.") from None
            if error == "missing_scope":
                raise AttachmentError(f"I could not get {what}: the app lacks the files:read "
                                      "scope (add it and reinstall the app).") from None
            raise AttachmentError(f"I could not get {what} from Slack ({error}); try attaching "
                                  "it again.") from None
        except Exception as exc:  # the network: one sentence, the turn carries on
            raise AttachmentError(f"I could not get {what} from Slack ({type(exc).__name__}); "
                                  "try attaching it again.") from None
        info = response.get("file")
        if not isinstance(info, dict) or info.get("file_access") == "check_file_info":
            raise AttachmentError(f"I could not get {what}: Slack gave no download for it.")
        return info

    @staticmethod
    def _setup_problem(name: str, got: str) -> str:
        return (f"Slack sent {got} instead of {name}. This is a set-up problem: the app needs "
                "the files:read scope (add it and reinstall the app).")
