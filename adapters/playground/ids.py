"""Reading the ids and version numbers people put in addresses and forms.

`str.isdigit()` says yes to "²" and to other scripts' digits, which `int()` then refuses or reads
as a different number, and a 5,000-digit id is past what `int()` converts at all: each was a 500.
Only plain ASCII digits are a number here, and a number past SQLite's INTEGER (signed 64-bit)
names no row, so it is "not found" before it ever reaches the database.
"""

from __future__ import annotations

from aiohttp import web

from bot import ids

MAX_ID = ids.SQLITE_MAX_INTEGER


def parse_id(text: str) -> int | None:
    """The number `text` spells, or None when it is plain digits too large to name any row.

    Raises ValueError unless `text` (spaces around it aside) is one or more ASCII digits: a
    malformed number is the asker's mistake (400), a number naming nothing is "not found" (404).
    """
    text = text.strip()
    if not ids.is_number(text):
        raise ValueError(f"not a number: {text[:40]!r}")
    return ids.parse_id(text)


def path_id(request: web.Request, name: str, what: str = "thing") -> int:
    """An id from the route (matched by `[0-9]+`: `\\d` takes other scripts' digits too); one
    too large to exist answers 404."""
    value = parse_id(request.match_info[name])
    if value is None:
        raise web.HTTPNotFound(text=f"There is no such {what}.")
    return value


def version_number(text: str) -> int | None:
    """A version as people type it ("3" or "v3"); None when left empty.

    Raises ValueError, whose text is the sentence to show, when it is not a version number.
    A number too large to exist is returned as MAX_ID + 1, which no version has, so the caller
    answers with the same sentence as for any other version the session lacks.
    """
    raw = text.strip().lower().removeprefix("v")
    if not raw:
        return None
    try:
        value = parse_id(raw)
    except ValueError:
        raise ValueError("That is not a version number such as 3 or v3.") from None
    return MAX_ID + 1 if value is None else value
