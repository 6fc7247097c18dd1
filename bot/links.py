"""Signed, expiring gallery links: what the chat adapters post and the public playground checks.

A link names one session and an expiry time; its signature is an HMAC-SHA256 of both under a
secret that never leaves the server. Anyone holding a valid link sees that session's gallery
(page, images, zip) until it expires, and nothing else. Platform-free: no web framework here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlencode

from bot.config import ConfigError, Settings

SECRET_FILE = "link-secret"
MIN_SECRET_CHARS = 16


class LinkCheck(StrEnum):
    VALID = "valid"
    MISSING = "missing"  # no exp or sig at all: an unsigned address
    INVALID = "invalid"  # malformed or a signature that does not match (tampered, wrong session)
    EXPIRED = "expired"  # genuine, but past its expiry time


def gallery_path(session_id: int) -> str:
    """The gallery's path on the playground server (its route `/s/{sid}/gallery`)."""
    return f"/s/{session_id}/gallery"


def _signature(session_id: int, exp: int, secret: bytes) -> str:
    # The purpose is part of the message, so a signature can never be replayed for another use.
    mac = hmac.new(secret, f"gallery:{session_id}:{exp}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode("ascii").rstrip("=")


def link_query(session_id: int, secret: bytes, ttl_seconds: float, now: float) -> dict[str, str]:
    exp = int(now + ttl_seconds)
    return {"exp": str(exp), "sig": _signature(session_id, exp, secret)}


def sign_gallery_link(
    public_url: str, session_id: int, secret: bytes, ttl_seconds: float, now: float
) -> str:
    """The full address of a session's gallery, valid for `ttl_seconds` from `now`."""
    query = urlencode(link_query(session_id, secret, ttl_seconds, now))
    return f"{public_url.rstrip('/')}{gallery_path(session_id)}?{query}"


def verify(session_id: int, exp: str | None, sig: str | None, secret: bytes, now: float) -> LinkCheck:
    """Check a link's `exp` and `sig` query values for this session.

    The signature is checked before the time, so a link whose expiry was edited reads as
    invalid, not expired, and an expired genuine link can say so plainly.
    """
    if not exp and not sig:
        return LinkCheck.MISSING
    # isascii: str.isdigit() also says yes to "²", which int() refuses.
    if not exp or not sig or not (exp.isascii() and exp.isdigit()) or len(exp) > 12 or len(sig) > 64:
        return LinkCheck.INVALID
    expected = _signature(session_id, int(exp), secret)
    if not hmac.compare_digest(expected.encode("ascii"), sig.encode("ascii", "replace")):
        return LinkCheck.INVALID
    return LinkCheck.VALID if now < int(exp) else LinkCheck.EXPIRED


def load_link_secret(settings: Settings) -> bytes:
    """THREADEDIT_LINK_SECRET, or a random secret made once and kept (0600) in the data dir.

    Every process sharing the data directory (the playground, `threadedit run`) reads the same
    file, so a link posted by a chat adapter verifies on the playground server.
    """
    if settings.link_secret is not None:
        value = settings.link_secret.get_secret_value().strip()
        if len(value) < MIN_SECRET_CHARS:
            raise ConfigError(f"THREADEDIT_LINK_SECRET must be at least {MIN_SECRET_CHARS} "
                              "characters; a random 32-byte hex string is best.")
        return value.encode()
    return _stored_secret(settings.data_dir / SECRET_FILE)


def _stored_secret(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        # Written in full to a private temporary file, then linked into place: link() fails if
        # the name exists, so two processes starting at once agree on one complete secret.
        tmp = path.with_name(f".{SECRET_FILE}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(os.urandom(32).hex() + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    value = path.read_text().strip()
    if len(value) < MIN_SECRET_CHARS:
        raise ConfigError(f"{path} does not hold a usable link secret; delete it and a new one "
                          "will be made (links already posted stop working).")
    return value.encode()


def gallery_link(settings: Settings, session_id: int, now: float | None = None) -> str | None:
    """What a chat adapter posts: a signed gallery link, or None when no public URL is set."""
    if settings.public_url is None:
        return None
    return sign_gallery_link(settings.public_url, session_id, load_link_secret(settings),
                             settings.link_ttl_hours * 3600, time.time() if now is None else now)
