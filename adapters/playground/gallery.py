"""The gallery: any session's version tree, two versions side by side, images and a zip export.

These are the only pages a signed link opens in public mode, so every address they link to
carries the same `exp` and `sig` (see `views.Urls`).
"""

from __future__ import annotations

import asyncio
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlencode

from aiohttp import web

from bot.chat import presenter
from bot.domain import OperationRefused, SessionState, Turn

from . import views
from .core import IMMUTABLE, PLAYGROUND, Playground
from .ids import parse_id, path_id, version_number
from .thumbs import SIZES

CHUNK = 1024 * 1024


def _pg(request: web.Request) -> Playground:
    return request.app[PLAYGROUND]


def _sid(request: web.Request) -> int:
    return path_id(request, "sid", "session")


def _link_query(request: web.Request, pg: Playground) -> str:
    if not pg.public:
        return ""
    return urlencode({"exp": request.query.get("exp", ""), "sig": request.query.get("sig", "")})


def _compare_picks(request: web.Request, state: SessionState) -> tuple[list[Turn], str | None]:
    """The two versions asked for with ?v=2&v=5, or a sentence saying why not."""
    wanted: list[int] = []
    for raw in request.query.getall("v", []):
        try:
            number = version_number(raw)
        except ValueError as exc:
            raise OperationRefused(str(exc), "bad_version") from None
        if number is not None and number not in wanted:
            wanted.append(number)
    if not wanted:
        return [], None
    if len(wanted) != 2:
        return [], "Pick exactly two versions to compare."
    try:
        return [state.version(n) for n in wanted], None
    except OperationRefused as exc:
        return [], exc.message


async def gallery(request: web.Request) -> web.Response:
    pg = _pg(request)
    state = await pg.reads.state(_sid(request))
    s = state.session
    urls = views.Urls(s.id, _link_query(request, pg))
    picks, notice = _compare_picks(request, state)
    expires = _expiry(request.query.get("exp", "")) if pg.public else None
    return pg.page(
        "gallery.html", state=state, session=s, urls=urls, title=views.title_of(state),
        platform=views.platform_label(s.key.platform), tree=views.version_tree(state),
        compare=[views.version_view(state, t) for t in picks], notice=notice,
        head=state.head.version if state.head else None, expires=expires,
        settings_line=presenter.settings_line(s.model, s.aspect_ratio, s.image_size),
        link=dict(request.query) if pg.public else {}, count=len(state.versions))


def _expiry(exp: str) -> str | None:
    """When a signed link ends, as shown on the page (the guard has already checked it)."""
    try:
        stamp = parse_id(exp)
        return datetime.fromtimestamp(stamp, UTC).isoformat() if stamp is not None else None
    except (ValueError, OverflowError, OSError):
        return None


async def _version(request: web.Request) -> Turn:
    state = await _pg(request).reads.state(_sid(request))
    try:
        return state.version(path_id(request, "n", "version"))
    except OperationRefused as exc:
        raise web.HTTPNotFound(text=exc.message) from None


async def version_image(request: web.Request) -> web.StreamResponse:
    """The original bytes the model returned; a version's image never changes once made."""
    turn = await _version(request)
    assert turn.image_blob is not None
    ext = turn.image_blob.rsplit(".", 1)[-1]
    return web.FileResponse(await _pg(request).blobs.local_path(turn.image_blob), headers={
        "Content-Type": turn.image_mime or "image/jpeg", "Cache-Control": IMMUTABLE,
        "Content-Disposition": f'inline; filename="v{turn.version}.{ext}"'})


async def version_thumb(request: web.Request) -> web.StreamResponse:
    turn = await _version(request)
    assert turn.image_blob is not None
    path = await _pg(request).thumbs.get(turn.image_blob, request.match_info["size"])
    return web.FileResponse(path, headers={"Content-Type": "image/jpeg", "Cache-Control": IMMUTABLE})


async def export(request: web.Request) -> web.StreamResponse:
    """Every version's original image and manifest.json (the CLI's export), as one zip."""
    pg = _pg(request)
    session = await pg.reads.session(_sid(request))
    name = f"threadedit-session-{session.id}"
    with tempfile.TemporaryDirectory(prefix="threadedit-export-") as tmp:
        target = Path(tmp) / f"{name}.zip"
        await pg.service.export(session.id, target)  # written in a thread
        response = web.StreamResponse(headers={
            "Content-Type": "application/zip", "Cache-Control": "no-store",
            "Content-Disposition": f'attachment; filename="{name}.zip"'})
        f: BinaryIO = await asyncio.to_thread(target.open, "rb")
        try:
            response.content_length = await asyncio.to_thread(lambda: target.stat().st_size)
            await response.prepare(request)
            while chunk := await asyncio.to_thread(f.read, CHUNK):
                await response.write(chunk)
        finally:
            f.close()
        await response.write_eof()
    return response


def add_routes(app: web.Application) -> None:
    sizes = "|".join(SIZES)
    app.router.add_get(r"/s/{sid:[0-9]+}/gallery", gallery, name="gallery")
    app.router.add_get(r"/s/{sid:[0-9]+}/v/{n:[0-9]+}/image", version_image, name="version_image")
    app.router.add_get(rf"/s/{{sid:[0-9]+}}/v/{{n:[0-9]+}}/thumb/{{size:{sizes}}}", version_thumb,
                       name="version_thumb")
    app.router.add_get(r"/s/{sid:[0-9]+}/export.zip", export, name="export")
