"""What an edit request may hold: instruction length, reference count, control characters, and
the settings a model takes. Checked before anything is stored (bot/service.py)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from bot import catalog
from bot.domain import OperationRefused
from bot.results import Attachment

MAX_INSTRUCTION_CHARS = 4000
MAX_REFERENCES = 10


@dataclass(frozen=True)
class SessionDefaults:
    model: str = catalog.FLASH
    aspect_ratio: str | None = None
    image_size: str | None = "1K"


def settings_after(
    current: tuple[str, str | None, str | None],
    model: str | None,
    aspect: str | None,
    size: str | None,
) -> tuple[str, str | None, str | None]:
    """(model, aspect, size) once the given changes apply, checked against the model's lists."""
    try:
        new_model = catalog.check_model(model) if model else current[0]
        return (new_model, catalog.check_aspect(new_model, aspect or current[1]),
                catalog.check_size(new_model, size or current[2]))
    except catalog.SettingRejected as exc:
        raise OperationRefused(str(exc), "bad_setting") from None


# C0 controls and DEL, but not tab and newline: NUL, BEL and terminal escapes in an instruction
# would be stored, sent to the model and echoed into threads and operators' terminals.
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def strip_controls(text: str) -> str:
    return _CONTROLS.sub("", text)


def checked_instruction(instruction: str, attachments: Sequence[Attachment]) -> str:
    instruction = strip_controls(instruction).strip()
    if not instruction and not attachments:
        raise OperationRefused("Say what to make or change.", "empty_instruction")
    if len(instruction) > MAX_INSTRUCTION_CHARS:
        raise OperationRefused(
            f"That instruction is {len(instruction)} characters; keep it under "
            f"{MAX_INSTRUCTION_CHARS}.", "instruction_too_long")
    if len(attachments) > MAX_REFERENCES:
        raise OperationRefused(f"Attach at most {MAX_REFERENCES} reference images per turn.",
                               "too_many_references")
    return instruction
