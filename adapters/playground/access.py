"""Who may reach what, and refusals as sentences.

Either mode answers only to the machine's own names and addresses (hosts.py). Local mode (the
default): everything, but never from another website's page. Public mode (THREADEDIT_PUBLIC_URL
set): only a session's gallery, its images and its zip, each behind a valid signed link; every
other address is refused.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from bot.domain import OperationRefused, UnknownSession
from bot.images import ImageRejected
from bot.links import LinkCheck, verify

from .core import MB, PLAYGROUND, Playground
from .hosts import host_allowed
from .ids import parse_id

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# The routes a signed gallery link opens; all take the session id as {sid}.
GALLERY_ROUTES = frozenset({"gallery", "version_image", "version_thumb", "export"})
OPEN_ROUTES = frozenset({"static"})  # stylesheet and script: nothing about any session
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

NOT_PUBLIC = ("This threadedit server only shows signed gallery links; open the link exactly as it "
              "was posted in your thread.")
LINK_INVALID = ("This gallery link is not valid: it may have been changed or cut short. Open it "
                "exactly as it was posted, or ask for a new one in the thread.")
WRONG_HOST = ("This playground answers only to this machine's own names and addresses; open it "
              "at one of them, or add this name to THREADEDIT_ALLOWED_HOSTS.")
CROSS_SITE = "Requests from other websites are refused; use the playground page itself."

_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    "X-Content-Type-Options": "nosniff",
    # Signed links carry their signature in the query; never hand it to another site.
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def _expired(hours: float) -> str:
    return (f"This gallery link has expired (links last {hours:g} hours); ask for a new one in "
            "the thread.")


def too_large(limit: int) -> str:
    return (f"That message is larger than the playground takes ({limit // MB} MB in all); attach "
            "fewer or smaller images.")


def _gate_public(request: web.Request, pg: Playground) -> str | None:
    """The sentence refusing this request in public mode, or None to let it through."""
    name = request.match_info.route.name
    if name in OPEN_ROUTES:
        return None
    if name not in GALLERY_ROUTES or request.method not in SAFE_METHODS:
        return NOT_PUBLIC
    q = request.query
    sid = parse_id(request.match_info["sid"])  # the route took ASCII digits only
    # An id too large to exist was never signed; -1 never is either, so its link reads as invalid.
    check = verify(-1 if sid is None else sid, q.get("exp"), q.get("sig"), pg.secret, time.time())
    if check is LinkCheck.VALID:
        return None
    if check is LinkCheck.EXPIRED:
        return _expired(pg.link_ttl_hours)
    return NOT_PUBLIC if check is LinkCheck.MISSING else LINK_INVALID


def _gate_local(request: web.Request, pg: Playground) -> str | None:
    if request.method not in SAFE_METHODS:
        # A form on any website can post here; the browser says where it came from.
        origin = request.headers.get("Origin")
        if origin is not None and origin != f"{request.scheme}://{request.host}":
            return CROSS_SITE
        if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
            return CROSS_SITE
    return None


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    pg = request.app[PLAYGROUND]
    refused: str | None = None
    if not host_allowed(request.host, pg.host_names):
        refused = WRONG_HOST
    else:
        refused = _gate_public(request, pg) if pg.public else _gate_local(request, pg)
    if refused is not None:
        response: web.StreamResponse = pg.refusal(request, 403, refused)
    else:
        response = await _sentences(request, handler, pg)
    if not response.prepared:
        response.headers.update(_HEADERS)
        if pg.public:  # a shared link is for the people it was posted to, not for search engines
            response.headers["X-Robots-Tag"] = "noindex, nofollow"
    return response


async def _sentences(request: web.Request, handler: Handler, pg: Playground) -> web.StreamResponse:
    """Refusals from the core, and aiohttp's own errors, as one sentence instead of a bare page."""
    try:
        return await handler(request)
    except UnknownSession as exc:
        return pg.refusal(request, 404, exc.message)
    except (OperationRefused, ImageRejected) as exc:
        return pg.refusal(request, 400, exc.message)
    except web.HTTPRequestEntityTooLarge:
        return pg.refusal(request, 413, too_large(pg.limits.max_body_bytes))
    except web.HTTPNotFound as exc:
        own = exc.text if exc.text and not exc.text.startswith("404") else None
        return pg.refusal(request, 404, own or "There is nothing at this address.")
    except web.HTTPMethodNotAllowed:
        return pg.refusal(request, 405, "That address does not take this kind of request.")


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
