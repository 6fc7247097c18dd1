"""The controls on every version: buttons and reactions that mean the same thing everywhere."""

from __future__ import annotations

from enum import StrEnum


class Control(StrEnum):
    UNDO = "undo"  # on the head: undo; on an older version: revert to it
    RETRY = "retry"
    UPSCALE = "4k"
    APPROVE = "approve"
    WITHDRAW = "withdraw"  # removing the approval reaction


BUTTONS: list[tuple[Control, str]] = [
    (Control.UNDO, "Undo"),
    (Control.RETRY, "Retry"),
    (Control.UPSCALE, "4K"),
    (Control.APPROVE, "Approve"),
]

# Slack sends emoji names, Discord sends the characters; both map to the same controls.
REACTIONS: dict[str, Control] = {
    "leftwards_arrow_with_hook": Control.UNDO,
    "repeat": Control.RETRY,
    "white_check_mark": Control.APPROVE,
    "\u21a9\ufe0f": Control.UNDO,
    "\u21a9": Control.UNDO,
    "\U0001f501": Control.RETRY,
    "\u2705": Control.APPROVE,
}


def button_value(session_id: int, version: int, control: Control) -> str:
    """What a button carries, so it works after a restart with nothing cached."""
    return f"te:{control.value}:{session_id}:{version}"


def parse_button_value(value: str) -> tuple[Control, int, int] | None:
    parts = value.split(":")
    if len(parts) != 4 or parts[0] != "te":
        return None
    try:
        return Control(parts[1]), int(parts[2]), int(parts[3])
    except ValueError:
        return None
