"""The playground's shared state: the core App, its turn pipeline, templates, assets and limits."""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import jinja2
from aiohttp import web

from bot.app import App, turn_pipeline
from bot.domain import Turn
from bot.links import load_link_secret
from bot.results import TurnResult
from bot.service import MAX_REFERENCES

from . import hosts
from .thumbs import Thumbnails

log = logging.getLogger(__name__)

PLATFORM = "playground"
MB = 1024 * 1024
STATIC_TYPES = {".css": "text/css", ".js": "text/javascript"}
IMMUTABLE = "private, max-age=31536000, immutable"


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 50 * MB  # one message: instruction and every attached image
    max_files: int = MAX_REFERENCES  # images per message, the core's own cap
    poll_busy_ms: int = 1000  # how often an open thread asks for news while a turn runs
    poll_idle_ms: int = 5000  # ... and otherwise (another tab, the CLI or a chat may change it)
    sessions_listed: int = 100  # most recently updated sessions in the sidebar
    author_chars: int = 40


def wants_json(request: web.Request) -> bool:
    return "application/json" in request.headers.get("Accept", "")


class Playground:
    """One per server: what every handler needs, reached as `request.app[PLAYGROUND]`."""

    def __init__(self, app: App, *, limits: Limits = Limits()) -> None:
        self.app = app
        self.service = app.service
        self.reads = app.reads
        self.blobs = app.blobs
        self.limits = limits
        # On every address it listens on: answering other Host names would let any web page
        # drive the playground through DNS rebinding (see hosts.py).
        self.host_names = hosts.allowed_names(app.settings.allowed_hosts, app.settings.public_url)
        self.offline = app.engine.offline
        self.pipeline = turn_pipeline(app, listeners={PLATFORM: self})
        self.thumbs = Thumbnails(app.settings.data_dir / "thumbs", app.blobs)
        self.public_url = app.settings.public_url
        self.secret = load_link_secret(app.settings) if self.public_url else b""
        self.link_ttl_hours = app.settings.link_ttl_hours
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("adapters.playground", "templates"),
            # Every value that reaches a page is escaped unless a template says otherwise.
            autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
            lstrip_blocks=True)
        self.assets = _load_assets()
        self.templates.globals.update(static=self.static_url, offline=self.offline,
                                      public=self.public, limits=limits)

    @property
    def public(self) -> bool:
        return self.public_url is not None

    def static_url(self, name: str) -> str:
        return f"/static/{name}?v={self.assets[name][2]}"

    async def start(self) -> None:
        """Take the playground's turns from the queue (those a stop left unfinished first; older
        than THREADEDIT_RESUME_MAX_AGE_SECONDS: reported failed). Slack's and Discord's are taken,
        and posted, by processes that can post them. Nothing else to catch up on: the page reads
        every outcome from the database."""
        self.pipeline.start()

    async def aclose(self) -> None:
        await self.pipeline.aclose()

    # TurnListener: the page polls the database, so there is nothing to push; log for operators.

    async def turn_started(self, turn: Turn) -> None:
        log.debug("turn %s of session %s started", turn.id, turn.session_id)

    async def turn_finished(self, result: TurnResult) -> None:
        log.info("turn %s of session %s finished: %s", result.turn_id, result.session_id,
                 result.status)

    # Rendering

    def render(self, template: str, **context: Any) -> str:
        return self.templates.get_template(template).render(**context)

    def page(self, template: str, *, status: int = 200, **context: Any) -> web.Response:
        return web.Response(text=self.render(template, **context), status=status,
                            content_type="text/html", charset="utf-8")

    def refusal(self, request: web.Request, status: int, sentence: str) -> web.Response:
        """A refusal as one plain sentence, in whatever form the caller reads."""
        if wants_json(request):
            return web.json_response({"error": sentence}, status=status)
        if "text/html" in request.headers.get("Accept", ""):
            return self.page("error.html", status=status, sentence=sentence)
        return web.Response(text=sentence + "\n", status=status, content_type="text/plain",
                            charset="utf-8")

    def author(self, value: object) -> str:
        """The name a person typed (remembered by their browser), made safe to store and show."""
        text = re.sub(r"[\x00-\x1f\x7f]+", " ", value if isinstance(value, str) else "")
        text = " ".join(text.split())[: self.limits.author_chars]
        return text or "you"


def _load_assets() -> dict[str, tuple[bytes, str, str]]:
    """name -> (bytes, content type, short hash): versioned URLs let browsers cache them forever."""
    assets = {}
    for entry in (resources.files("adapters.playground") / "static").iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if suffix in STATIC_TYPES:
            data = entry.read_bytes()
            assets[entry.name] = (data, STATIC_TYPES[suffix], hashlib.sha256(data).hexdigest()[:10])
    return assets


PLAYGROUND: web.AppKey[Playground] = web.AppKey("playground", Playground)
