"""Bounded context: every request to Gemini stays within a token and byte budget.

Gemini is stateless, so a thread's requests grow by an image or two per turn: at 2K that is
over a megabyte and a thousand input tokens a turn, until the API refuses the request (the
model's input limit, about 20 MB of inline data) and, long before that, until each turn costs
more than the image it makes. The planner estimates each request before it is sent. When it
would pass the budget, the request is *re-anchored*: it carries one self-contained user turn
holding the current head image as a reference, a short text of what was asked so far and the
new instruction. That turn starts a new segment of the version path; later turns replay from
it, so request size is flat however long the thread grows.

Nothing in the stored history is rewritten. A re-anchored turn keeps the user turn it sent
(`Turn.anchor_content`) beside its original one, so undo and revert to a version before the
anchor replay that version's own path, and a retry of an anchored turn is planned afresh.

Estimates follow ../shared/research/gemini-api.md section 5: Gemini 3 Pro Image counts 560
input tokens per image, 2.5 Flash Image 258 per 768 px tile (one tile up to 384 px), and 3.1
Flash Image has no published figure, so it is counted as 1120 (its 1K output), erring large.
Text is a token per four characters.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from bot import catalog
from bot.domain import Turn, TurnKind
from bot.gemini.contents import build_contents
from bot.storage.blobs import BLOB_PREFIX, SIGNATURE_KEYS, BlobStore, inline_data

Content = dict[str, Any]

# Research section 4: inline data was once capped at 20 MB a request; newer docs say 100 MB.
# The smaller is the hard ceiling: no request is sent above it.
HARD_MAX_BYTES = 20_000_000
SUMMARY_MAX_CHARS = 1500
_INSTRUCTION_MAX_CHARS = 160


@dataclass(frozen=True)
class ContextBudget:
    """When to re-anchor. The token budget is also held to half the model's input limit, so a
    model with a small window (2.5 Flash Image: 32,768) re-anchors sooner."""

    max_tokens: int = 32_000
    max_bytes: int = 18_000_000
    # Ask the API's countTokens (free, one more round trip) when the estimate is past half the
    # budget, instead of trusting the estimate alone.
    count_tokens: bool = False
    # The API's own ceiling, not a preference: nothing above it is sent (lowered in tests).
    hard_max_bytes: int = HARD_MAX_BYTES

    def tokens_for(self, model: str) -> int:
        return min(self.max_tokens, catalog.spec_for(model).input_token_limit // 2)


@dataclass(frozen=True)
class RequestSize:
    tokens: int
    bytes: int

    def over(self, tokens: int, max_bytes: int) -> bool:
        return self.tokens > tokens or self.bytes > max_bytes


@dataclass(frozen=True)
class PlannedRequest:
    """The contents of one request, still in stored (packed) form, and what they will weigh."""

    contents: list[Content]
    size: RequestSize
    anchor: Content | None = None  # the self-contained first user turn, when re-anchored

    @property
    def anchored(self) -> bool:
        return self.anchor is not None


def image_tokens(model: str, width: int, height: int) -> int:
    if model == catalog.PRO:
        return 560
    if model == catalog.FLASH_25:
        if width <= 384 and height <= 384:
            return 258
        return math.ceil(width / 768) * math.ceil(height / 768) * 258
    return 1120


class ContextPlanner:
    def __init__(self, blobs: BlobStore, budget: ContextBudget = ContextBudget()) -> None:
        self.blobs = blobs
        self.budget = budget
        # Blobs never change, so their size and pixel dimensions are read once.
        self._facts: dict[str, tuple[int, int, int]] = {}

    # Weighing

    def _blob_facts(self, key: str) -> tuple[int, int, int]:
        facts = self._facts.get(key)
        if facts is None:
            path = self.blobs.path(key)
            try:
                with Image.open(path) as image:
                    width, height = image.size
            except Exception:  # noqa: BLE001 - an undecodable blob still has a size to count
                width = height = 1024
            facts = (path.stat().st_size, width, height)
            if len(self._facts) > 50_000:
                self._facts.clear()
            self._facts[key] = facts
        return facts

    def measure(self, model: str, contents: Sequence[Content]) -> RequestSize:
        """Tokens and bytes of a request made of these packed contents (without its small
        generationConfig). Bytes are exact for the JSON as sent: each blob reference is
        replaced by the base64 of its bytes."""
        tokens = 0
        extra_bytes = 0
        for content in contents:
            for part in content.get("parts") or []:
                for key in SIGNATURE_KEYS:  # a signature in the blob store: its base64's length
                    ref = part.get(key) if isinstance(part, dict) else None
                    if isinstance(ref, str) and ref.startswith(BLOB_PREFIX):
                        size = self.blobs.path(ref[len(BLOB_PREFIX):]).stat().st_size
                        extra_bytes += 4 * math.ceil(size / 3) - len(ref)
                text = part.get("text") if isinstance(part, dict) else None
                if isinstance(text, str):
                    tokens += math.ceil(len(text) / 4)
                    continue
                inline = inline_data(part) if isinstance(part, dict) else None
                if inline is not None:
                    data = inline.get("data")
                    if isinstance(data, str) and data.startswith(BLOB_PREFIX):
                        size, width, height = self._blob_facts(data[len(BLOB_PREFIX):])
                        extra_bytes += 4 * math.ceil(size / 3) - len(data)
                    else:
                        width = height = 1024
                    tokens += image_tokens(model, width, height)
                elif isinstance(part, dict) and ("fileData" in part or "file_data" in part):
                    tokens += image_tokens(model, 1024, 1024)
        packed = len(json.dumps(list(contents), separators=(",", ":")).encode())
        return RequestSize(tokens, packed + extra_bytes)

    # Planning

    def plan(self, model: str, path: Sequence[Turn], new_user: Content, *,
             force_anchor: bool = False) -> PlannedRequest:
        """The request for a new turn on the version path `path` (root first, the head last)."""
        contents = segment_contents(path, new_user)
        size = self.measure(model, contents)
        if not path or not (force_anchor or size.over(self.budget.tokens_for(model),
                                                      self.budget.max_bytes)):
            return PlannedRequest(contents, size)
        return self.anchored(model, path, new_user)

    def anchored(self, model: str, path: Sequence[Turn], new_user: Content) -> PlannedRequest:
        anchor = anchor_content(path, new_user)
        return PlannedRequest([anchor], self.measure(model, [anchor]), anchor)

    def hard_limit_sentence(self, model: str, size: RequestSize) -> str | None:
        """Why a request cannot be sent at all, or None when it can."""
        limit = catalog.spec_for(model).input_token_limit
        if size.tokens > limit:
            return (f"This turn needs about {size.tokens:,} input tokens, more than the model's "
                    f"limit of {limit:,}; attach fewer reference images.")
        if size.bytes > self.budget.hard_max_bytes:
            return (f"This turn's request would be {size.bytes / 1e6:.1f} MB, over the "
                    f"{self.budget.hard_max_bytes / 1e6:g} MB a request to Gemini may carry; "
                    "attach fewer or smaller reference images.")
        return None


def segment_contents(path: Sequence[Turn], new_user: Content) -> list[Content]:
    """user, model, ..., user: the path from its last anchor (or the root) to the head, then the
    new user turn. An anchored turn stands for everything before it."""
    start = 0
    for i, turn in enumerate(path):
        if turn.anchor_content is not None:
            start = i
    segment = path[start:]
    history = [(t.user_content, t.model_content or {"role": "model", "parts": []}) for t in segment]
    if segment and segment[0].anchor_content is not None:
        history[0] = (segment[0].anchor_content, history[0][1])
    return build_contents(history, new_user)


def anchor_content(path: Sequence[Turn], new_user: Content) -> Content:
    """One user turn that stands for the whole path: what was asked, the head image (as a
    reference: an image in a user turn, never a model turn), then the new instruction and its
    own reference images."""
    head = path[-1]
    assert head.image_blob is not None
    summary = {"text": decisions_text(path)}
    image = {"inlineData": {"mimeType": head.image_mime or "image/jpeg",
                            "data": BLOB_PREFIX + head.image_blob}}
    return {"role": "user", "parts": [summary, image, *(new_user.get("parts") or [])]}


def decisions_text(path: Sequence[Turn]) -> str:
    """The instructions that made the head, oldest first, within SUMMARY_MAX_CHARS: the first
    (what the picture is) and as many of the latest as fit."""
    head = path[-1]
    asks = [_short(t.instruction) for t in path if t.kind is not TurnKind.UPSCALE]
    lead = (f"Earlier turns of this conversation were condensed to keep the request small. The "
            f"image below is the current version (v{head.version}); keep everything the earlier "
            "instructions established. They were, oldest first:\n")
    lines = [f"- {a}" for a in asks]
    kept = lines[:1]
    tail: list[str] = []
    room = SUMMARY_MAX_CHARS - len(lead) - sum(len(x) + 1 for x in kept) - 40
    for line in reversed(lines[1:]):
        if room - len(line) - 1 < 0:
            break
        tail.insert(0, line)
        room -= len(line) + 1
    skipped = len(lines) - len(kept) - len(tail)
    if skipped:
        kept.append(f"- (… {skipped} more …)")
    return lead + "\n".join(kept + tail) + "\nThe new instruction follows the image."


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _INSTRUCTION_MAX_CHARS else text[:_INSTRUCTION_MAX_CHARS - 1] + "…"
