"""The words and numbers every chat adapter shows, so Slack, Discord and the playground say the
same thing. Lines are neutral `Text` (see bot.chat.text): each backend renders them in its own
syntax, and whatever came from a person or the model is a plain span, never markup.
"""

from __future__ import annotations

from bot import catalog
from bot.chat.text import Code, Mention, Strong, Text, join
from bot.local_engine import VOCABULARY
from bot.results import HistoryView, TurnResult

CHANNEL_NOT_ALLOWED = Text.of("I am not enabled in this channel; ask an admin to add it.")
# A click whose button names a session that does not live where the click came from (a forged
# or copied value): nothing is done, and the clicker is told why.
NOT_THIS_THREAD = Text.of("That button does not belong to this thread, so I did nothing.")
# An instruction that arrived while the database did not answer (bot/chat/pending.py): kept, and
# when it cannot be kept any longer, given up with a way forward.
KEPT = Text.of("The database is not answering; your instruction is kept and will run when it is back.")
NOT_KEPT_TOO_LONG = Text.of("The database did not answer in time, so your instruction could not be "
                            "recorded; send it again.")
NOT_KEPT_FULL = Text.of("The database is not answering and too many instructions are waiting for it, "
                        "so yours could not be recorded; send it again later.")
NOT_KEPT_STOPPED = Text.of("I was stopped before the database answered, so your instruction could not "
                           "be recorded; send it again.")


def addressed(user: str, line: str | Text) -> Text:
    """A line said to one person in the thread: their mention, then the line."""
    return Text.of(Mention(user), " ", line)


def approval_line(view: HistoryView, version: int, actor: str) -> Text:
    """The service's notice names people by id; in a thread the actor is a mention."""
    notice = view.notice or ""
    head, by, tail = notice.partition(f"by {actor}")
    if by:
        line = Text.of(head, "by ", Mention(actor), tail)
    elif notice.startswith(f"{actor} withdrew"):
        line = Text.of(Mention(actor), notice.removeprefix(actor))
    else:
        line = Text.of(notice)
    return Text.of("✅ ", line) if notice.startswith(f"v{version} approved") else line


def undo_line(view: HistoryView, actor: str) -> Text:
    return Text.of(view.notice or "", " (", Mention(actor), ")")


def settings_changed(model: str, aspect: str | None, size: str | None) -> Text:
    return Text.of("Settings: ", settings_line(model, aspect, size))


def elapsed(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 60}:{s % 60:02d}"


def settings_line(model: str, aspect: str | None, size: str | None) -> str:
    """A fragment of plain words (model · aspect · size), for lines and pages alike."""
    return " · ".join([catalog.label_for(model), aspect or "auto aspect", size or "1K"])


def progress_line(version: int, model: str, aspect: str | None, size: str | None,
                  seconds: float | None) -> Text:
    """`seconds=None` leaves the elapsed time off, for a page that keeps it ticking itself."""
    line = f"Working on v{version} · {settings_line(model, aspect, size)}"
    return Text.of(line if seconds is None else f"{line} · {elapsed(seconds)}")


def queued_line(position: int) -> Text:
    ahead = "1 instruction" if position == 1 else f"{position} instructions"
    return Text.of(f"Queued behind {ahead} in this thread.")


def waiting_line(version: int) -> Text:
    return Text.of(f"v{version} is waiting for a free slot; busy right now.")


def ready_line(version: int) -> Text:
    return Text.of(f"v{version} is ready.")


def version_label(result: TurnResult) -> str:
    """v3, or v3 (from v1): the bold start of a caption."""
    label = f"v{result.version}"
    return f"{label} (from v{result.parent_version})" if result.parent_version else label


def caption_details(result: TurnResult) -> Text:
    """What follows the label: the instruction (clipped), who asked, and whether the history the
    model saw was condensed."""
    what = result.instruction if len(result.instruction) <= 200 else result.instruction[:199] + "…"
    condensed = " · earlier turns condensed" if result.condensed else ""
    return Text.of(f"{what} · asked by ", Mention(result.author), condensed)


def caption(result: TurnResult) -> Text:
    return Text.of(Strong(version_label(result)), " · ", caption_details(result))


def no_version_line(result: TurnResult, offline: bool = False) -> Text:
    if result.status == "text":
        who = catalog.answered_by(result.model, offline)
        return Text.of(f"No new version; {who} answered in words: ", result.text or "")
    return Text.of(result.message or "That did not work; the session is unchanged.")


def history_text(view: HistoryView) -> Text:
    if not view.versions:
        return Text.of("No versions yet.")
    lines = [f"Versions ({settings_line(view.model, view.aspect_ratio, view.image_size)}):"]
    for v in view.versions:
        head = " ← head" if v.version == view.head else ""
        parent = f" (from v{v.parent})" if v.parent else ""
        approved = f" ✅ {', '.join(v.approved_by)}" if v.approved else ""
        # People are named by id, not mentioned: asking for the history must notify nobody.
        lines.append(f"v{v.version}{parent}: {v.instruction} — {v.author}{approved}{head}")
    return Text.of("\n".join(lines))


def _commands(*names: str) -> Text:
    return join(", ", (Code(n) for n in names))


def help_text(offline: bool) -> Text:
    lines: list[Text | str] = [
        "Reply in this thread to edit the latest version; attach images to use them as references.",
        "Buttons or reactions on a version: ↩️ undo (on an older version: go back to it), "
        "🔁 retry, ✅ approve (remove it to withdraw), 4K renders it larger. An instruction that "
        "made no version has its own Retry (button or 🔁) on the line that says so.",
        Text.of("Commands: ", _commands("aspect 16:9", "size 2K", "model pro"), " (or ",
                _commands("flash", "lite"), "), ", _commands("history", "help"), "."),
    ]
    if offline:
        words = ", ".join(example for example, _ in VOCABULARY)
        lines.append(f"This bot runs the offline engine (not AI); it understands: {words}.")
    return join("\n", lines)
