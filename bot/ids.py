"""Ids typed by people (CLI arguments, URL parts): session, version and turn numbers.

A store id is a SQLite INTEGER, a signed 64-bit number. Text that is not plain ASCII digits
(`str.isdigit()` also accepts `²` and other scripts' digits, which `int()` then refuses or reads
differently), or a number SQLite cannot hold, names nothing: the caller answers "no such id"
instead of meeting OverflowError or ValueError deep in the storage layer.
"""

from __future__ import annotations

import re

SQLITE_MAX_INTEGER = 2**63 - 1
# At most 19 digits (len(str(2**63 - 1))): longer text is refused before int() reads it, so a
# 5,000-digit id costs nothing and never meets Python's limit on int-from-string conversion.
_DIGITS = re.compile(r"[0-9]{1,19}")
_ASCII_DIGITS = re.compile(r"[0-9]+")


def is_number(text: str) -> bool:
    """True when `text` is plain ASCII digits, of any length (however large the number)."""
    return _ASCII_DIGITS.fullmatch(text) is not None


def parse_id(text: str) -> int | None:
    """The whole number `text` spells in ASCII digits, or None when it is not one or does not fit
    a SQLite INTEGER. No sign, no spaces, no prefix: callers strip what they allow (such as `v`).
    Leading zeros are allowed and do not count towards the length."""
    if is_number(text):
        text = text.lstrip("0") or "0"
    if not _DIGITS.fullmatch(text):
        return None
    value = int(text)
    return value if value <= SQLITE_MAX_INTEGER else None
