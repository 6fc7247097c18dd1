"""A session's versions as the adapters show them (HistoryView), from one view of its state."""

from __future__ import annotations

from bot.domain import SessionState, Turn, shown_instruction
from bot.results import HistoryView, VersionInfo
from bot.storage.blobs import BlobStore


def history_view(state: SessionState, blobs: BlobStore, notice: str | None = None) -> HistoryView:
    s = state.session
    head = state.head
    return HistoryView(
        session_id=s.id, head=head.version if head else None, model=s.model,
        aspect_ratio=s.aspect_ratio, image_size=s.image_size, notice=notice,
        versions=[_version_info(state, blobs, t) for t in state.versions],
    )


def _version_info(state: SessionState, blobs: BlobStore, t: Turn) -> VersionInfo:
    assert t.version is not None and t.image_blob is not None
    approvers = state.approvers_of(t.id)
    return VersionInfo(
        version=t.version, parent=state.parent_version(t),
        instruction=shown_instruction(t, state.parent_version(t)),
        author=t.author, kind=t.kind.value, approved=bool(approvers), approved_by=approvers,
        image_path=blobs.local_file(t.image_blob), mime=t.image_mime or "image/jpeg",
        model=t.model, aspect_ratio=t.aspect_ratio, image_size=t.image_size,
        created_at=t.created_at, finished_at=t.finished_at, text=t.text_reply,
    )
