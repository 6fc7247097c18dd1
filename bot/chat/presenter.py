"""The words and numbers every chat adapter shows, so Slack and Discord say the same thing."""

from __future__ import annotations

from bot import catalog
from bot.local_engine import VOCABULARY
from bot.results import HistoryView, TurnResult

CHANNEL_NOT_ALLOWED = "I am not enabled in this channel; ask an admin to add it."
# A click whose button names a session that does not live where the click came from (a forged
# or copied value): nothing is done, and the clicker is told why.
NOT_THIS_THREAD = "That button does not belong to a version in this thread, so I did nothing."


def approval_line(view: HistoryView, version: int, actor: str, actor_label: str) -> str:
    """The service's notice names people by id; in a thread they are shown as the platform shows them."""
    notice = (view.notice or "").replace(f"by {actor}", f"by {actor_label}")
    notice = notice.replace(f"{actor} withdrew", f"{actor_label} withdrew")
    return f"✅ {notice}" if notice.startswith(f"v{version} approved") else notice


def elapsed(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 60}:{s % 60:02d}"


def settings_line(model: str, aspect: str | None, size: str | None) -> str:
    return " · ".join([catalog.label_for(model), aspect or "auto aspect", size or "1K"])


def progress_line(version: int, model: str, aspect: str | None, size: str | None,
                  seconds: float) -> str:
    return f"Working on v{version} · {settings_line(model, aspect, size)} · {elapsed(seconds)}"


def queued_line(position: int) -> str:
    ahead = "1 instruction" if position == 1 else f"{position} instructions"
    return f"Queued behind {ahead} in this thread."


def waiting_line(version: int) -> str:
    return f"v{version} is waiting for a free slot; busy right now."


def caption(result: TurnResult, author_label: str) -> str:
    what = result.instruction if len(result.instruction) <= 200 else result.instruction[:199] + "…"
    base = f"v{result.version}"
    if result.parent_version:
        base += f" (from v{result.parent_version})"
    condensed = " · earlier turns condensed" if result.condensed else ""
    return f"*{base}* · {what} · asked by {author_label}{condensed}"


def no_version_line(result: TurnResult, offline: bool = False) -> str:
    if result.status == "text":
        who = catalog.answered_by(result.model, offline)
        return f"No new version; {who} answered in words: {result.text}"
    return result.message or "That did not work; the session is unchanged."


def history_text(view: HistoryView) -> str:
    if not view.versions:
        return "No versions yet."
    lines = [f"Versions ({settings_line(view.model, view.aspect_ratio, view.image_size)}):"]
    for v in view.versions:
        head = " ← head" if v.version == view.head else ""
        parent = f" (from v{v.parent})" if v.parent else ""
        approved = f" ✅ {', '.join(v.approved_by)}" if v.approved else ""
        lines.append(f"v{v.version}{parent}: {v.instruction} — {v.author}{approved}{head}")
    return "\n".join(lines)


def help_text(offline: bool) -> str:
    lines = [
        "Reply in this thread to edit the latest version; attach images to use them as references.",
        "Buttons or reactions on a version: ↩️ undo (on an older version: go back to it), "
        "🔁 retry, ✅ approve (remove it to withdraw), 4K renders it larger.",
        "Commands: `aspect 16:9`, `size 2K`, `model pro` (or `flash`, `lite`), `history`, `help`.",
    ]
    if offline:
        words = ", ".join(example for example, _ in VOCABULARY)
        lines.append(f"This bot runs the offline engine (not AI); it understands: {words}.")
    return "\n".join(lines)
