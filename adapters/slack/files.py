"""Fetching Slack attachments (`url_private`) with the bot token, and only from Slack.

The bot token is a workspace-wide credential: it is sent only to the configured file origins
(default https://files.slack.com), never to a URL anyone could put in a message, and redirects
are not followed, so it cannot be carried elsewhere.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx

from bot.chat.backend import AttachmentError, IncomingFile

MAX_DOWNLOAD_BYTES = 30 * 1024 * 1024


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


class SlackFiles:
    def __init__(self, token: str, allowed_origins: frozenset[str],
                 http: httpx.AsyncClient | None = None) -> None:
        self._token = token
        self.allowed_origins = frozenset(o.lower() for o in allowed_origins)
        self._http = http or httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=10.0),
                                               follow_redirects=False)

    async def aclose(self) -> None:
        await self._http.aclose()

    def incoming(self, file: dict[str, Any]) -> IncomingFile:
        return IncomingFile(file.get("name"), file.get("size"), lambda: self.fetch(file))

    async def fetch(self, file: dict[str, Any]) -> bytes:
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

    @staticmethod
    def _setup_problem(name: str, got: str) -> str:
        return (f"Slack sent {got} instead of {name}. This is a set-up problem: the app needs "
                "the files:read scope (add it and reinstall the app).")
