"""The controls on every version, and the Retry on a line that made no version: buttons that mean
the same thing everywhere. Which reactions stand for them is each platform's own
(`ChatBackend.reactions`)."""

from __future__ import annotations

from enum import StrEnum

from bot import catalog


class Control(StrEnum):
    UNDO = "undo"  # on the head: undo; on an older version: revert to it
    RETRY = "retry"
    UPSCALE = "4k"
    APPROVE = "approve"
    WITHDRAW = "withdraw"  # removing the approval reaction
    # The Retry on a line that made no version (a failure, a block, an answer in words): its
    # button carries the turn's id where a version's carries the version's number.
    RETRY_TURN = "rerun"


BUTTONS: list[tuple[Control, str]] = [
    (Control.UNDO, "Undo"),
    (Control.RETRY, "Retry"),
    (Control.UPSCALE, "4K"),
    (Control.APPROVE, "Approve"),
]

# A version already rendered at this size gets no 4K button: it would pay for the same image.
def offers(control: Control, model: str, image_size: str | None) -> bool:
    """Whether a version made by `model` at `image_size` offers this control: 4K only where it
    makes something new."""
    return control is not Control.UPSCALE or catalog.renders_larger(model, image_size)


def buttons_for(session_id: int, version: int, model: str,
                image_size: str | None) -> list[tuple[str, str]]:
    """(label, value) of each button under a version."""
    return [(label, button_value(session_id, version, c)) for c, label in BUTTONS
            if offers(c, model, image_size)]


def retry_buttons(session_id: int, turn_id: int) -> list[tuple[str, str]]:
    """(label, value) of the button on a turn's line when it made no version: Retry that turn."""
    return [("Retry", button_value(session_id, turn_id, Control.RETRY_TURN))]


def button_value(session_id: int, version: int, control: Control) -> str:
    """What a button carries, so it works after a restart with nothing cached. `version` is the
    turn's id for RETRY_TURN (a line that made no version has no number)."""
    return f"te:{control.value}:{session_id}:{version}"


# SQLite's integers are 64-bit: a larger id in a forged value could not even be looked up.
_MAX_ID = 2**63 - 1


def _number(text: str) -> int | None:
    # ASCII digits only: int() also takes other scripts' digits, and isdigit() takes "²".
    if not (text.isascii() and text.isdecimal()) or len(text) > 19:
        return None
    n = int(text)
    return n if n <= _MAX_ID else None


def parse_button_value(value: str) -> tuple[Control, int, int] | None:
    parts = value.split(":")
    if len(parts) != 4 or parts[0] != "te":
        return None
    try:
        control = Control(parts[1])
    except ValueError:
        return None
    session_id, version = _number(parts[2]), _number(parts[3])
    if session_id is None or version is None:
        return None
    return control, session_id, version
