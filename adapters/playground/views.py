"""What the pages show, built from a SessionState: conversation items, the version tree, summaries.

Only plain data here; the templates turn it into HTML (autoescaped). Wording comes from
`bot.chat.presenter` so the playground says what Slack and Discord say.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from markupsafe import Markup, escape

from bot import catalog, domain
from bot.chat import presenter
from bot.chat.text import Code, Link, Mention, Plain, Strong, Text
from bot.domain import SessionState, Turn, TurnState, path_to
from bot.reads import reference_images
from bot.results import TurnResult

PLATFORM_LABELS = {"playground": "Playground", "slack": "Slack", "discord": "Discord", "cli": "CLI"}
TITLE_CHARS = 70
PENDING = (TurnState.QUEUED, TurnState.RUNNING)


def html(text: Text) -> Markup:
    """The neutral text as HTML: every word escaped, people shown by name (the playground's
    authors are names; a chat session's are the platform's ids)."""
    out: list[Markup] = []
    for span in text.spans:
        match span:
            case Plain(words):
                out.append(escape(words))
            case Strong(words):
                out.append(Markup("<strong>%s</strong>") % words)
            case Code(words):
                out.append(Markup("<code>%s</code>") % words)
            case Mention(user):
                out.append(escape(user))
            case Link(url, label):
                safe = url.startswith(("https://", "http://", "/"))
                out.append(Markup('<a href="%s" rel="noopener noreferrer">%s</a>') % (url, label)
                           if safe else escape(label))
    return Markup("").join(out)


def epoch(iso: str | None) -> float | None:
    return datetime.fromisoformat(iso).timestamp() if iso else None


def platform_label(platform: str) -> str:
    return PLATFORM_LABELS.get(platform, platform.capitalize())


def title_of(state: SessionState) -> str:
    first = next((t for t in state.turns), None)
    if first is None:
        return f"Session {state.session.id}"
    text = " ".join(first.instruction.split())
    return text if len(text) <= TITLE_CHARS else text[: TITLE_CHARS - 1] + "…"


class Urls:
    """Every address a page links to. In public mode each carries the link's exp and sig."""

    def __init__(self, session_id: int, query: str = "") -> None:
        self.sid = session_id
        self.query = query  # "exp=...&sig=..." or ""

    def _q(self, path: str, extra: str = "") -> str:
        parts = "&".join(p for p in (extra, self.query) if p)
        return f"{path}?{parts}" if parts else path

    def thread(self) -> str:
        return f"/s/{self.sid}"

    def gallery(self, compare: tuple[int, int] | None = None) -> str:
        extra = f"v={compare[0]}&v={compare[1]}" if compare else ""
        return self._q(f"/s/{self.sid}/gallery", extra)

    def image(self, version: int) -> str:
        return self._q(f"/s/{self.sid}/v/{version}/image")

    def thumb(self, version: int, size: str) -> str:
        return self._q(f"/s/{self.sid}/v/{version}/thumb/{size}")

    def export(self) -> str:
        return self._q(f"/s/{self.sid}/export.zip")

    def reference(self, turn_id: int, index: int) -> str:
        return f"/s/{self.sid}/turns/{turn_id}/refs/{index}"


@dataclass
class VersionView:
    number: int
    parent: int | None
    instruction: str
    author: str
    kind: str
    created_at: str
    finished_at: str | None
    model: str
    settings: str
    text: str | None
    label: str  # v3, or v3 (from v1)
    caption: Markup  # what follows the label: the instruction, who asked, ...
    is_head: bool
    approvals: list[tuple[str, str]]  # (who, when), active ones only
    image_size: str = "1K"
    can_upscale: bool = False  # the 4K control: not on a version already at 4K


@dataclass
class TurnItem:
    turn: Turn
    references: list[str]
    outcome: str  # "version", "pending" or "failed"
    version: VersionView | None = None
    line: str | Markup = ""  # the progress, queue or failure sentence, or the model's words
    since: float | None = None  # epoch seconds the live timer counts from
    kind: str = "turn"
    said_by: str = ""  # who answered in words only: the engine that ran the turn
    asked: str = ""  # what the person asked, as the thread shows it (see shown_instruction)


@dataclass
class EventItem:
    text: str
    actor: str
    at: str
    action: str
    kind: str = "event"


@dataclass
class SessionSummary:
    id: int
    title: str
    platform: str
    versions: int
    updated_at: str
    busy: bool


@dataclass
class Node:
    version: VersionView
    branches: list[list[Node]] = field(default_factory=list)


def summary(state: SessionState) -> SessionSummary:
    s = state.session
    return SessionSummary(s.id, title_of(state), platform_label(s.key.platform), len(state.versions),
                          s.updated_at, any(t.state in PENDING for t in state.turns))


def result_of(turn: Turn, state: SessionState) -> TurnResult:
    """The TurnResult the service would give, built from the state already loaded."""
    status = {TurnState.DONE: "ok"}.get(turn.state, turn.state.value)
    return TurnResult(
        session_id=turn.session_id, turn_id=turn.id, status=status,  # type: ignore[arg-type]
        instruction=turn.instruction, author=turn.author, model=turn.model,
        aspect_ratio=turn.aspect_ratio, image_size=turn.image_size, version=turn.version,
        parent_version=state.parent_version(turn), mime=turn.image_mime, text=turn.text_reply,
        reason=turn.reason, message=turn.message)


def shown_instruction(state: SessionState, turn: Turn) -> str:
    return domain.shown_instruction(turn, state.parent_version(turn))


def can_upscale(state: SessionState, turn: Turn) -> bool:
    """Offer 4K only where it makes something new, by the session's model (the one a 4K render uses)."""
    return catalog.renders_larger(state.session.model, turn.image_size)


def engine_name(turn: Turn, offline: bool) -> str:
    return catalog.answered_by(turn.model, offline)


def version_view(state: SessionState, turn: Turn) -> VersionView:
    assert turn.version is not None
    approvals = [(a.approved_by, a.approved_at) for a in state.approvals
                 if a.turn_id == turn.id and a.active]
    asked = shown_instruction(state, turn)
    result = dataclasses.replace(result_of(turn, state), instruction=asked)
    return VersionView(
        number=turn.version, parent=state.parent_version(turn), instruction=asked,
        author=turn.author, kind=turn.kind.value, created_at=turn.created_at,
        finished_at=turn.finished_at, model=turn.model,
        settings=presenter.settings_line(turn.model, turn.aspect_ratio, turn.image_size),
        text=turn.text_reply,
        # The page shows the label in an element of its own, with the badges after it.
        label=presenter.version_label(result), caption=html(presenter.caption_details(result)),
        is_head=state.session.head_turn_id == turn.id, approvals=approvals,
        image_size=turn.image_size or "1K", can_upscale=can_upscale(state, turn))


def _pending_line(state: SessionState, turn: Turn) -> tuple[Markup, float | None]:
    ahead = sum(1 for t in state.turns if t.id < turn.id and t.state in PENDING)
    if turn.state is TurnState.QUEUED and ahead:
        return html(presenter.queued_line(ahead)), epoch(turn.created_at)
    next_version = max((t.version or 0 for t in state.turns), default=0) + 1
    # The page keeps the elapsed time ticking itself, so the sentence stops before it.
    line = presenter.progress_line(next_version, turn.model, turn.aspect_ratio, turn.image_size, None)
    return html(line), epoch(turn.started_at or turn.created_at)


_EVENT_WORDS = {
    "undo": lambda d, who: f"Back to v{d.get('to_version')}.",
    "revert": lambda d, who: f"Back to v{d.get('to_version')}; the next instruction edits it.",
    "approve": lambda d, who: f"v{d.get('version')} approved by {who}.",
    "withdraw": lambda d, who: f"{who} withdrew the approval of v{d.get('version')}.",
    "settings": lambda d, who: "Settings: " + presenter.settings_line(
        d.get("model") or "", d.get("aspect_ratio"), d.get("image_size")),
}


def conversation(state: SessionState, audit: list[dict[str, Any]], urls: Urls,
                 offline: bool = False) -> list[Any]:
    """The thread as it happened: each turn with its outcome, and what people did in between.
    `offline`: the offline engine runs the turns, so words-only answers are said to be its own."""
    items: list[tuple[str, int, Any]] = []
    for turn in state.turns:
        refs = [urls.reference(turn.id, i) for i in range(len(reference_images(turn)))]
        if turn.is_version:
            item = TurnItem(turn, refs, "version", version=version_view(state, turn))
        elif turn.state in PENDING:
            line, since = _pending_line(state, turn)
            item = TurnItem(turn, refs, "pending", line=line, since=since)
        elif turn.state is TurnState.TEXT:
            # An answer, not a failure: the model (or the offline engine) explains itself.
            item = TurnItem(turn, refs, "words", line=turn.text_reply or "",
                            said_by=engine_name(turn, offline))
        else:
            item = TurnItem(turn, refs, "failed",
                            line=html(presenter.no_version_line(result_of(turn, state))))
        item.asked = shown_instruction(state, turn)
        items.append((turn.created_at, len(items), item))
    for entry in audit:
        words = _EVENT_WORDS.get(entry["action"])
        if words is None or entry["outcome"] != "ok":
            continue
        text = words(entry["detail"], entry["actor"])
        items.append((entry["at"], len(items),
                      EventItem(text, entry["actor"], entry["at"], entry["action"])))
    return [item for _, _, item in sorted(items, key=lambda x: (x[0], x[1]))]


def stamp(state: SessionState, audit_len: int) -> str:
    """Changes whenever anything the thread view shows changes; the page polls for it."""
    s = state.session
    seen = (s.head_turn_id, s.model, s.aspect_ratio, s.image_size, audit_len,
            [(t.id, t.state.value, t.version) for t in state.turns],
            [(a.turn_id, a.approved_by, a.withdrawn_at) for a in state.approvals])
    return hashlib.sha256(repr(seen).encode()).hexdigest()[:16]


def version_tree(state: SessionState) -> list[list[Node]]:
    """The versions as chains: a node's continuation stays on its line and every other child
    opens a branch nested under it. A long linear session therefore reads top to bottom instead
    of drifting right one step per version.

    The continuation is the child leading to the head when there is one, else the child with
    the most versions under it (the first such on a tie). Every branch then holds fewer than half
    the versions of the line it leaves, so branches nest at most log2(versions) deep: the page
    stays readable and the template's recursive macro stays far from Python's recursion limit
    whatever the history (250 edit-then-retry rounds nested 250 deep before). Built with explicit
    stacks, not recursion, for the same reason.
    """
    versions = state.versions
    views = {t.id: version_view(state, t) for t in versions}
    on_head_path = {t.id for t in path_to(state.by_id, state.session.head_turn_id)}
    children: dict[int | None, list[Turn]] = {}
    for t in versions:
        parent = t.parent_turn_id if t.parent_turn_id in views else None
        children.setdefault(parent, []).append(t)

    # Versions under each version (itself included): parents first in `order`, so its reverse
    # meets every child before its parent.
    order: list[Turn] = []
    stack = list(children.get(None, []))
    while stack:
        turn = stack.pop()
        order.append(turn)
        stack.extend(children.get(turn.id, []))
    size: dict[int, int] = {}
    for turn in reversed(order):
        size[turn.id] = 1 + sum(size[k.id] for k in children.get(turn.id, []))

    def continuation(kids: list[Turn]) -> Turn | None:
        on_path = next((k for k in kids if k.id in on_head_path), None)
        return on_path or max(kids, key=lambda k: size[k.id], default=None)

    roots: list[list[Node]] = []
    work: list[tuple[Turn, list[Node]]] = []
    for root in children.get(None, []):
        roots.append([])
        work.append((root, roots[-1]))
    while work:
        current, nodes = work.pop()
        line: Turn | None = current
        while line is not None:
            node = Node(views[line.id])
            nodes.append(node)
            kids = children.get(line.id, [])
            main = continuation(kids)
            for kid in kids:
                if kid is not main:
                    node.branches.append([])
                    work.append((kid, node.branches[-1]))
            line = main
    return roots
