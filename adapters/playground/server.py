"""`threadedit playground`: the local web app on the shared core, served until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

from aiohttp import web

from bot.app import open_app
from bot.config import Settings

from . import gallery, thread
from .access import guard, is_loopback
from .core import IMMUTABLE, PLAYGROUND, Playground

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


def build_web_app(pg: Playground) -> web.Application:
    # client_max_size caps every request body; past it aiohttp raises HTTPRequestEntityTooLarge,
    # which the guard turns into a sentence.
    app = web.Application(middlewares=[guard], client_max_size=pg.limits.max_body_bytes)
    app[PLAYGROUND] = pg
    thread.add_routes(app)
    gallery.add_routes(app)
    app.router.add_get("/static/{name}", static, name="static")
    return app


async def static(request: web.Request) -> web.Response:
    pg = request.app[PLAYGROUND]
    asset = pg.assets.get(request.match_info["name"])
    if asset is None:
        raise web.HTTPNotFound()
    data, content_type, digest = asset
    # Pages link to /static/NAME?v=HASH, so a changed file is a new address.
    cache = IMMUTABLE if request.query.get("v") == digest else "no-cache"
    return web.Response(body=data, content_type=content_type, charset="utf-8",
                        headers={"Cache-Control": cache})


def _url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


async def serve(settings: Settings, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> int:
    async with open_app(settings) as app:
        pg = Playground(app)
        runner = web.AppRunner(build_web_app(pg), access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            await runner.cleanup()
            await pg.aclose()
            print(f"Cannot listen on {host}:{port} ({exc.strerror or exc}); choose another "
                  "address with --host or --port.", file=sys.stderr)
            return 2
        bound = port or int(runner.addresses[0][1])  # --port 0: the port the system picked
        # Handlers before the address is printed: a SIGTERM sent as soon as it is up stops it
        # cleanly (exit 0), not by the default action.
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        print(f"threadedit playground: {_url(host, bound)}", flush=True)
        for note in _notices(settings, host, pg):
            print(note, file=sys.stderr, flush=True)
        await pg.start()
        await stop.wait()
        # Stop taking requests first, then the pipeline: a turn cut off here keeps its state in
        # the database and its lease is given back, so the next process that takes playground
        # turns (a worker, or this one started again) runs it.
        await runner.cleanup()
        await pg.aclose()
    return 0


def _notices(settings: Settings, host: str, pg: Playground) -> list[str]:
    notes = [settings.engine_notice] if settings.engine_notice else []
    if pg.public:
        notes.append(f"THREADEDIT_PUBLIC_URL is set ({settings.public_url}): this server shows "
                     "only signed gallery links; the playground pages answer 403.")
    elif not is_loopback(host):
        notes.append(f"Listening on {host} without THREADEDIT_PUBLIC_URL: anyone who can reach "
                     "this port can read and edit every session.")
    return notes
