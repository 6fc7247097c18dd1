"""Reading a `generateContent` response: the final image, or why there is none, in plain words."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any, Literal

Status = Literal["image", "text", "blocked", "failed"]

# What each reason means for the person who asked, in their words, not the API's.
_BLOCK_WORDS = {
    "SAFETY": "it was flagged by Gemini's safety filters",
    "IMAGE_SAFETY": "the picture it would make was flagged by Gemini's safety filters",
    "PROHIBITED_CONTENT": "it asks for content Gemini does not allow",
    "IMAGE_PROHIBITED_CONTENT": "the picture would contain content Gemini does not allow",
    "BLOCKLIST": "it contains terms Gemini blocks",
    "SPII": "it would reveal sensitive personal information",
    "RECITATION": "the result would copy existing material too closely",
    "IMAGE_RECITATION": "the picture would copy an existing image too closely",
    "OTHER": "Gemini declined it without giving a reason",
    "IMAGE_OTHER": "Gemini declined to make the picture without giving a reason",
    "JAILBREAK": "it was read as an attempt to get around Gemini's rules",
    "MODEL_ARMOR": "it was stopped by the gateway's content filter",
}
_NO_IMAGE_WORDS = {
    "NO_IMAGE": "Gemini answered without making an image. Try saying more concretely what to change.",
    "MAX_TOKENS": "Gemini ran out of room before finishing the image. Try a shorter instruction.",
    "MISSING_THOUGHT_SIGNATURE": "Gemini rejected the session history (a signature was missing).",
    "MALFORMED_RESPONSE": "Gemini's answer was malformed. Retrying usually helps.",
}


@dataclass
class Outcome:
    status: Status
    content: dict[str, Any] | None = None  # candidates[0].content, for history (status "image")
    image: bytes | None = None
    mime: str | None = None
    text: str | None = None
    reason: str | None = None
    message: str | None = None
    usage: dict[str, Any] | None = None


def _reply_text(parts: list[dict[str, Any]]) -> str | None:
    """The model's words beside its image. A part without a letter or digit is dropped: real
    edits come back with a lone "`" beside the image (recording g08), which is no message."""
    texts = [p["text"].strip() for p in parts
             if isinstance(p.get("text"), str) and not p.get("thought")
             and any(ch.isalnum() for ch in p["text"])]
    return "\n".join(texts) or None


def final_image(parts: list[dict[str, Any]]) -> tuple[bytes, str] | None:
    """The last image part that is not a thought: interim thought images are never the result."""
    for part in reversed(parts):
        inline = part.get("inlineData") or part.get("inline_data")
        if part.get("thought") or not isinstance(inline, dict):
            continue
        mime = str(inline.get("mimeType") or inline.get("mime_type") or "")
        if not mime.startswith("image/"):
            continue
        try:
            return base64.b64decode(inline.get("data", ""), validate=True), mime
        except (binascii.Error, ValueError):
            return None
    return None


def _blocked(reason: str, finish_message: str | None, *, prompt: bool) -> Outcome:
    why = _BLOCK_WORDS.get(reason, f"Gemini stopped with reason {reason}")
    subject = "Gemini refused this instruction" if prompt else "Gemini made no image"
    message = f"{subject}: {why}. Nothing was added to the history; try rewording it."
    if finish_message:
        message += f" (Gemini said: {finish_message.strip()[:300]})"
    return Outcome("blocked", reason=reason, message=message)


def interpret_response(body: dict[str, Any]) -> Outcome:
    usage = body.get("usageMetadata")
    feedback = body.get("promptFeedback") or {}
    candidates = body.get("candidates") or []
    if not candidates:
        if feedback.get("blockReason"):
            out = _blocked(str(feedback["blockReason"]), feedback.get("blockReasonMessage"), prompt=True)
        else:
            out = Outcome("failed", reason="empty",
                          message="Gemini sent back an empty answer. Nothing changed; try again.")
        out.usage = usage
        return out
    cand = candidates[0]
    content = cand.get("content") or {}
    parts = [p for p in content.get("parts") or [] if isinstance(p, dict)]
    finish = str(cand.get("finishReason") or "")
    text = _reply_text(parts)
    image = final_image(parts)
    if image is not None:
        return Outcome("image", content=content, image=image[0], mime=image[1], text=text,
                       usage=usage, reason=finish or None)
    if finish in _NO_IMAGE_WORDS:
        message = _NO_IMAGE_WORDS[finish]
        if text:
            message += f" Gemini said: {text[:500]}"
        return Outcome("blocked" if finish == "NO_IMAGE" else "failed", text=text, reason=finish,
                       message=message, usage=usage)
    if finish and finish not in ("STOP", "FINISH_REASON_UNSPECIFIED"):
        out = _blocked(finish, cand.get("finishMessage"), prompt=False)
        out.usage, out.text = usage, text
        return out
    if text:
        return Outcome("text", text=text, reason="text_only", usage=usage,
                       message="Gemini answered in words only; no new version was made.")
    return Outcome("failed", reason="empty", usage=usage,
                   message="Gemini sent back an answer with no image and no text. Try again.")
