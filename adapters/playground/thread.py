"""The thread view: sessions as conversations, the composer, controls and settings.

Forms work without JavaScript (each POST answers with a redirect); the page's script posts the
same forms asking for JSON and swaps in fresh fragments, so nothing reloads.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from aiohttp import web

from bot import catalog
from bot.chat import presenter
from bot.chat.controls import BUTTONS, Control
from bot.domain import OperationRefused, Session, SessionKey
from bot.local_engine import VOCABULARY
from bot.reads import reference_images
from bot.results import Attachment

from . import views
from .core import IMMUTABLE, PLATFORM, PLAYGROUND, Playground, wants_json
from .ids import MAX_ID, parse_id, path_id, version_number


def _pg(request: web.Request) -> Playground:
    return request.app[PLAYGROUND]


def _sid(request: web.Request) -> int:
    return path_id(request, "sid", "session")


async def _summaries(pg: Playground) -> list[views.SessionSummary]:
    return [views.summary(state) for state in await pg.reads.recent(pg.limits.sessions_listed)]


async def _session_context(pg: Playground, session_id: int) -> dict[str, Any]:
    state, audit = await pg.reads.state_and_audit(session_id)
    urls = views.Urls(session_id)
    s = state.session
    return {
        "state": state, "session": s, "urls": urls, "title": views.title_of(state),
        "platform": views.platform_label(s.key.platform), "read_only": read_only_sentence(s),
        "editable": read_only_sentence(s) is None,
        "items": views.conversation(state, audit, urls, offline=pg.offline),
        "stamp": views.stamp(state, len(audit)),
        "busy": any(t.state in views.PENDING for t in state.turns),
        "settings_line": presenter.settings_line(s.model, s.aspect_ratio, s.image_size),
        "choices": _setting_choices(s), "buttons": BUTTONS,
        "head": state.head.version if state.head else None,
    }


def _setting_choices(s: Session) -> dict[str, list[tuple[str, str]]]:
    """(value, label) options for the settings form, from what the session's model takes."""
    spec = catalog.spec_for(s.model)
    models = list(catalog.MODELS) + ([s.model] if s.model not in catalog.MODELS else [])
    return {"models": [(m, f"{catalog.label_for(m)} ({m})") for m in models],
            "aspects": [(a, a) for a in spec.aspect_ratios],
            "sizes": [(z, z) for z in spec.image_sizes] or [("1K", "1K (fixed)")]}


# Pages and fragments

async def home(request: web.Request) -> web.Response:
    pg = _pg(request)
    return pg.page("thread.html", sessions=await _summaries(pg), current=None,
                   vocabulary=[example for example, _ in VOCABULARY])


async def session_page(request: web.Request) -> web.Response:
    pg = _pg(request)
    context = await _session_context(pg, _sid(request))
    return pg.page("thread.html", sessions=await _summaries(pg), current=_sid(request),
                   vocabulary=[], **context)


async def session_fragment(request: web.Request) -> web.Response:
    pg = _pg(request)
    html = pg.render("_session.html", **await _session_context(pg, _sid(request)))
    return web.Response(text=html, content_type="text/html", charset="utf-8",
                        headers={"Cache-Control": "no-store"})


async def sessions_fragment(request: web.Request) -> web.Response:
    pg = _pg(request)
    current = request.query.get("current", "")
    try:  # the open session, marked in the list; an id too large to exist marks none
        marked = parse_id(current) if current else None
    except ValueError:
        raise OperationRefused("The current session must be a number such as 12.",
                               "bad_id") from None
    html = pg.render("_sessions.html", sessions=await _summaries(pg), current=marked)
    return web.Response(text=html, content_type="text/html", charset="utf-8",
                        headers={"Cache-Control": "no-store"})


async def session_state(request: web.Request) -> web.Response:
    """What the open page polls: a stamp that changes whenever the thread would look different."""
    pg = _pg(request)
    state, audit = await pg.reads.state_and_audit(_sid(request))
    busy = any(t.state in views.PENDING for t in state.turns)
    return web.json_response(
        {"stamp": views.stamp(state, len(audit)), "busy": busy, "now": time.time(),
         "poll_ms": pg.limits.poll_busy_ms if busy else pg.limits.poll_idle_ms},
        headers={"Cache-Control": "no-store"})


async def reference_image(request: web.Request) -> web.StreamResponse:
    """A small preview of an image someone attached to a turn."""
    pg = _pg(request)
    turn = await pg.reads.turn(path_id(request, "tid", "turn"))
    if turn is None:
        raise web.HTTPNotFound()
    keys = reference_images(turn) if turn.session_id == _sid(request) else []
    index = path_id(request, "index", "image")
    if index >= len(keys):
        raise web.HTTPNotFound()
    path = await pg.thumbs.get(keys[index], "sm")
    return web.FileResponse(path, headers={"Cache-Control": IMMUTABLE, "Content-Type": "image/jpeg"})


# Actions

async def _read_message(request: web.Request) -> tuple[str, str, list[Attachment]]:
    pg = _pg(request)
    form = await request.post()  # raises HTTPRequestEntityTooLarge past client_max_size
    files = []
    for field in form.getall("files", []):
        if isinstance(field, web.FileField):
            data = field.file.read()
            if data or field.filename:  # a form sent with no file picked has one empty part
                files.append(Attachment(data, field.filename or None))
    if len(files) > pg.limits.max_files:
        raise OperationRefused(f"Attach at most {pg.limits.max_files} images to one message.",
                               "too_many_references")
    instruction = form.get("instruction", "")
    return (instruction if isinstance(instruction, str) else "", pg.author(form.get("author")),
            files)


async def new_session(request: web.Request) -> web.Response:
    pg = _pg(request)
    instruction, author, files = await _read_message(request)
    key = SessionKey(PLATFORM, "local", "local", uuid.uuid4().hex)
    turn = await pg.service.submit_edit(key, author, instruction, files)
    pg.pipeline.submit(turn)
    return _done(request, turn.session_id, {"turn": turn.id})


async def add_message(request: web.Request) -> web.Response:
    pg = _pg(request)
    session = await _editable(pg, _sid(request))
    instruction, author, files = await _read_message(request)
    turn = await pg.service.submit_edit(session.id, author, instruction, files)
    pg.pipeline.submit(turn)
    return _done(request, session.id, {"turn": turn.id})


async def control(request: web.Request) -> web.Response:
    """Undo, Retry, 4K, Approve (and withdraw): what the buttons on a version do in chat; and
    the Retry on a turn that made no version (control "rerun", its `turn`), as in chat."""
    pg = _pg(request)
    session = await _editable(pg, _sid(request))
    form = await request.post()
    actor = pg.author(form.get("author"))
    try:
        what = Control(str(form.get("control", "")))
    except ValueError:
        raise OperationRefused("That is not a control this page knows.", "bad_control") from None
    try:
        version = version_number(str(form.get("version", "")))
    except ValueError as exc:
        raise OperationRefused(str(exc), "bad_version") from None
    svc, notice = pg.service, None
    if what is Control.RETRY_TURN:
        pg.pipeline.submit(await svc.submit_retry(session.id, actor, turn_id=_turn_of(form)))
        return _done(request, session.id, {"notice": None})
    if version is None and what is not Control.RETRY:
        raise OperationRefused("Pick the version this applies to.", "nothing")
    if what is Control.UNDO:
        # As in chat: Undo on the head steps back; on an older version it goes back to that one.
        assert version is not None
        notice = (await svc.step_back(session.id, actor, version)).notice
    elif what is Control.RETRY:
        pg.pipeline.submit(await svc.submit_retry(session.id, actor, version))
    elif what is Control.UPSCALE:
        pg.pipeline.submit(await svc.submit_upscale(session.id, actor, version))
    elif what is Control.APPROVE:
        notice = (await svc.approve(session.id, actor, version)).notice
    else:
        notice = (await svc.withdraw_approval(session.id, actor, version)).notice
    return _done(request, session.id, {"notice": notice},
                 anchor=f"v{version}" if version else "")


def _turn_of(form: Any) -> int:
    """The turn a failure's Retry names; a number too large to exist names none (the service
    then says so, as for any turn that is not this session's)."""
    try:
        turn = parse_id(str(form.get("turn", "")))
    except ValueError:
        raise OperationRefused("That Retry names no instruction of this thread, so I did nothing.",
                               "unknown_turn") from None
    return MAX_ID + 1 if turn is None else turn


async def change_settings(request: web.Request) -> web.Response:
    pg = _pg(request)
    session = await _editable(pg, _sid(request))
    form = await request.post()

    def value(name: str) -> str | None:
        v = form.get(name)
        return v.strip() or None if isinstance(v, str) else None

    s = await pg.service.change_settings(session.id, pg.author(form.get("author")),
                                         model=value("model"), aspect=value("aspect"),
                                         size=value("size"))
    notice = "Settings: " + presenter.settings_line(s.model, s.aspect_ratio, s.image_size)
    return _done(request, session.id, {"notice": notice})


def read_only_sentence(session: Session) -> str | None:
    """Why this page cannot edit the session, or None for the playground's own sessions.

    A session of another platform is edited there: its adapter posts the results and keeps its
    turns in order, and a second writer here would do neither. The gallery shows it, read-only.
    """
    if session.key.platform == PLATFORM:
        return None
    where = views.platform_label(session.key.platform)
    how = (f"with threadedit edit --session {session.id}" if session.key.platform == "cli"
           else "in its thread there")
    return f"This session belongs to {where}; edit it {how}."


async def _editable(pg: Playground, session_id: int) -> Session:
    session = await pg.reads.session(session_id)
    refusal = read_only_sentence(session)
    if refusal is not None:
        raise OperationRefused(refusal, "read_only")
    return session


def _done(request: web.Request, session_id: int, extra: dict[str, object],
          anchor: str = "") -> web.Response:
    url = f"/s/{session_id}"
    if wants_json(request):
        return web.json_response({"session": session_id, "url": url, **extra})
    raise web.HTTPSeeOther(url + (f"#{anchor}" if anchor else ""))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", home, name="home")
    app.router.add_get("/sessions/fragment", sessions_fragment, name="sessions_fragment")
    app.router.add_post("/messages", new_session, name="new_session")
    app.router.add_get(r"/s/{sid:[0-9]+}", session_page, name="session")
    app.router.add_get(r"/s/{sid:[0-9]+}/fragment", session_fragment, name="session_fragment")
    app.router.add_get(r"/s/{sid:[0-9]+}/state", session_state, name="session_state")
    app.router.add_post(r"/s/{sid:[0-9]+}/messages", add_message, name="add_message")
    app.router.add_post(r"/s/{sid:[0-9]+}/control", control, name="control")
    app.router.add_post(r"/s/{sid:[0-9]+}/settings", change_settings, name="settings")
    app.router.add_get(r"/s/{sid:[0-9]+}/turns/{tid:[0-9]+}/refs/{index:[0-9]+}", reference_image,
                       name="reference")

