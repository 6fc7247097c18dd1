"""What the service layer hands back to adapters: plain data, ready to show."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

TurnStatus = Literal["queued", "running", "ok", "text", "blocked", "failed"]


@dataclass(frozen=True)
class Attachment:
    """An image a user attached, as bytes, before any checking."""

    data: bytes
    filename: str | None = None


@dataclass
class TurnResult:
    session_id: int
    turn_id: int
    status: TurnStatus
    instruction: str
    author: str
    model: str
    aspect_ratio: str | None
    image_size: str | None
    version: int | None = None
    parent_version: int | None = None
    image_path: Path | None = None
    mime: str | None = None
    text: str | None = None
    reason: str | None = None
    message: str | None = None
    # The request was re-anchored: the model saw a summary and the parent image, not the
    # whole conversation (bot/context.py). Shown, so a drift in style has an explanation.
    condensed: bool = False

    def as_cli_json(self) -> dict[str, Any]:
        if self.status == "ok":
            return {"session": self.session_id, "status": "ok", "version": self.version,
                    "image": str(self.image_path), "text": self.text, "condensed": self.condensed}
        if self.status == "text":
            return {"session": self.session_id, "status": "text", "text": self.text}
        return {"session": self.session_id, "status": self.status, "reason": self.reason,
                "message": self.message}


@dataclass
class VersionInfo:
    version: int
    parent: int | None
    instruction: str
    author: str
    kind: str
    approved: bool
    approved_by: list[str]
    image_path: Path
    mime: str
    model: str
    aspect_ratio: str | None
    image_size: str | None
    created_at: str
    finished_at: str | None
    text: str | None = None


@dataclass
class HistoryView:
    session_id: int
    head: int | None
    model: str
    aspect_ratio: str | None
    image_size: str | None
    versions: list[VersionInfo] = field(default_factory=list)
    notice: str | None = None  # a sentence saying what the operation just did

    def as_cli_json(self) -> dict[str, Any]:
        return {
            "session": self.session_id,
            "head": self.head,
            "versions": [
                {"version": v.version, "parent": v.parent, "instruction": v.instruction,
                 "approved": v.approved, "image": str(v.image_path)}
                for v in self.versions
            ],
        }

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for v in d["versions"]:
            v["image_path"] = str(v["image_path"])
        return d
