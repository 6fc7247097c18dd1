"""Exporting a session: every version's original image bytes and a manifest.json."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from bot.domain import SessionState, Turn
from bot.storage.blobs import BlobStore

MANIFEST_VERSION = 1


def _image_name(turn: Turn) -> str:
    ext = (turn.image_blob or ".bin").rsplit(".", 1)[-1]
    return f"v{turn.version}.{ext}"


def build_manifest(state: SessionState, audit: list[dict[str, Any]]) -> dict[str, Any]:
    s = state.session
    head = state.head
    versions = []
    for t in state.versions:
        versions.append({
            "version": t.version,
            "parent": state.parent_version(t),
            "kind": t.kind.value,
            "instruction": t.instruction,
            "author": t.author,
            "asked_at": t.created_at,
            "finished_at": t.finished_at,
            "model": t.model,
            "aspect_ratio": t.aspect_ratio,
            "image_size": t.image_size,
            "image": _image_name(t),
            "mime": t.image_mime,
            "sha256": (t.image_blob or "").split(".")[0],
            "text": t.text_reply,
            # The request was re-anchored: the model saw the decisions so far and the parent
            # image, not the whole conversation (bot/context.py).
            "condensed_history": t.anchor_content is not None,
            "approvals": [
                {"by": a.approved_by, "at": a.approved_at, "withdrawn_by": a.withdrawn_by,
                 "withdrawn_at": a.withdrawn_at}
                for a in state.approvals if a.turn_id == t.id
            ],
            "approved": bool(state.approvers_of(t.id)),
        })
    others = [
        {"state": t.state.value, "instruction": t.instruction, "author": t.author,
         "asked_at": t.created_at, "reason": t.reason, "message": t.message,
         "text": t.text_reply, "parent": state.parent_version(t)}
        for t in state.turns if not t.is_version
    ]
    return {
        "manifest_version": MANIFEST_VERSION,
        "session": s.id,
        "platform": s.key.platform,
        "workspace": s.key.workspace,
        "channel": s.key.channel,
        "thread": s.key.thread,
        "started_by": s.started_by,
        "created_at": s.created_at,
        "settings": {"model": s.model, "aspect_ratio": s.aspect_ratio, "image_size": s.image_size},
        "head": head.version if head else None,
        "versions": versions,
        "other_turns": others,
        "audit": audit,
    }


def write_export(
    state: SessionState, blobs: BlobStore, audit: list[dict[str, Any]], directory: Path
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for t in state.versions:
        assert t.image_blob is not None
        shutil.copyfile(blobs.path(t.image_blob), directory / _image_name(t))
    manifest = directory / "manifest.json"
    manifest.write_text(json.dumps(build_manifest(state, audit), indent=2, ensure_ascii=False))
    return manifest
