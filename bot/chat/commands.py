"""Short commands typed in a thread: `aspect 16:9`, `size 4K`, `model pro`, `history`, `help`."""

from __future__ import annotations

import re
from dataclasses import dataclass

_COMMAND = re.compile(
    r"^\s*(?:(?P<setting>aspect|size|model)\s+(?P<value>\S+)|(?P<word>history|help))\s*[.!]?\s*$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class ThreadCommand:
    name: str  # aspect, size, model, history, help
    value: str | None = None


def parse_thread_command(text: str) -> ThreadCommand | None:
    """A whole message that is exactly one command; anything longer is an edit instruction."""
    m = _COMMAND.match(text)
    if not m:
        return None
    if m.group("word"):
        return ThreadCommand(m.group("word").lower())
    return ThreadCommand(m.group("setting").lower(), m.group("value"))
