"""The playground under test: aiohttp's test server and client over a real data directory and the
offline engine, plus helpers to post what the page posts and to read the gallery's tree."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image

from adapters.playground.core import Limits, Playground
from adapters.playground.server import build_web_app
from bot.app import App, open_app
from bot.config import load_settings
from bot.local_engine import LocalEngine

JSON = {"Accept": "application/json"}
HTML = {"Accept": "text/html"}


def png(color: tuple[int, int, int] = (0, 90, 200), size: tuple[int, int] = (64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


class GatedEngine(LocalEngine):
    """The offline engine, held at the door until the test lets the turn through."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def generate(self, model: str, body: dict[str, Any]) -> dict[str, Any]:
        self.entered.set()
        await self.release.wait()
        return await super().generate(model, body)


@dataclass
class Harness:
    pg: Playground
    client: TestClient
    app: App

    async def message(self, instruction: str, files: Sequence[tuple[str, bytes]] = (),
                      session: int | None = None, author: str = "ana",
                      headers: dict[str, str] = JSON) -> aiohttp.ClientResponse:
        form = aiohttp.FormData()
        form.add_field("instruction", instruction)
        form.add_field("author", author)
        for name, data in files:
            form.add_field("files", data, filename=name, content_type="image/png")
        url = f"/s/{session}/messages" if session else "/messages"
        return await self.client.post(url, data=form, headers=headers, allow_redirects=False)

    async def start(self, instruction: str, files: Sequence[tuple[str, bytes]] = ()) -> int:
        r = await self.message(instruction, files)
        assert r.status == 200, await r.text()
        await self.pg.pipeline.join()
        return int((await r.json())["session"])

    async def control(self, sid: int, control: str, version: int | None = None,
                      author: str = "ana", headers: dict[str, str] = JSON) -> aiohttp.ClientResponse:
        data = {"control": control, "author": author, **({"version": str(version)} if version else {})}
        r = await self.client.post(f"/s/{sid}/control", data=data, headers=headers, allow_redirects=False)
        await self.pg.pipeline.join()
        return r

    async def text(self, path: str, status: int = 200, headers: dict[str, str] = HTML) -> str:
        r = await self.client.get(path, headers=headers)
        assert r.status == status, (path, r.status, await r.text())
        return await r.text()


@asynccontextmanager
async def running(data_dir: Path, *, engine: Any = None, limits: Limits | None = None,
                  resume_max_age: float | None = None, **env: str) -> AsyncIterator[Harness]:
    if resume_max_age is not None:
        env["THREADEDIT_RESUME_MAX_AGE_SECONDS"] = str(resume_max_age)
    settings = load_settings(THREADEDIT_DATA_DIR=str(data_dir), THREADEDIT_ENGINE="local", **env)
    async with open_app(settings, engine=engine or LocalEngine()) as app:
        pg = Playground(app, limits=limits or Limits())
        await pg.start()
        async with TestClient(TestServer(build_web_app(pg), host="127.0.0.1")) as client:
            yield Harness(pg, client, app)
        await pg.aclose()


class TreeParser(HTMLParser):
    """Each gallery node: its parent, whether it is the head, and the branch it sits in."""

    def __init__(self) -> None:
        super().__init__()
        self.lists: list[str | None] = []
        self.nodes: dict[int, tuple[str, bool, str | None]] = {}
        self.compare: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if tag == "ol":
            self.lists.append(a.get("data-branch-of"))
        elif tag == "article" and "node" in classes:
            self.nodes[int(a["data-version"] or 0)] = (a["data-parent"] or "", "is-head" in classes,
                                                      self.lists[-1])
        elif tag == "figure" and "compare-item" in classes:
            self.compare.append(a["data-version"] or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "ol":
            self.lists.pop()


def tree(html: str) -> TreeParser:
    parser = TreeParser()
    parser.feed(html)
    return parser
