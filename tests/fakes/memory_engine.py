"""A scripted engine for fast tests: bot.engine.Engine answering from a queue, no network, no Pillow.

Each call takes the next answer from `script` (an image, words only, a blocked prompt, or an
EngineError to raise) and, when the script is empty, makes an image. Answers are shaped like
Gemini's responses (bot/gemini/response.py reads them as it reads the real ones). Images are
tiny PNGs written with zlib, each call's different, so every version is its own blob.
Every request body is kept in `requests`, to check what the model was sent.

The wire-level engine is tested against tests/fakes/gemini_server.py; this one is for what the
service does with each kind of answer.
"""

from __future__ import annotations

import base64
import hashlib
import struct
import zlib
from dataclasses import dataclass
from typing import Any

from bot.engine import EngineError


def tiny_png(seed: int) -> bytes:
    """A valid 2x2 PNG whose colour depends on `seed`."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    pixel = bytes([(seed * 53) % 256, (seed * 97) % 256, (seed * 193) % 256])
    raw = (b"\x00" + pixel * 2) * 2
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


@dataclass(frozen=True)
class Answer:
    kind: str  # "image", "words", "blocked"
    text: str = ""

    @classmethod
    def image(cls, text: str = "Here it is.") -> Answer:
        return cls("image", text)

    @classmethod
    def words(cls, text: str = "I can only describe that.") -> Answer:
        return cls("words", text)

    @classmethod
    def blocked(cls, reason: str = "SAFETY") -> Answer:
        return cls("blocked", reason)


class ScriptedEngine:
    name = "scripted"
    accepts_encoded = False

    def __init__(self, *script: Answer | EngineError, offline: bool = False,
                 prompt_tokens: int = 100) -> None:
        self.offline = offline  # False: priced like Gemini, so spend limits apply
        self.script: list[Answer | EngineError] = list(script)
        self.prompt_tokens = prompt_tokens
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.closed = False

    async def generate(self, model: str, body: Any) -> dict[str, Any]:
        self.requests.append((model, body))
        answer = self.script.pop(0) if self.script else Answer.image()
        if isinstance(answer, EngineError):
            raise answer
        usage = {"promptTokenCount": self.prompt_tokens, "candidatesTokenCount": 10,
                 "totalTokenCount": self.prompt_tokens + 10}
        if answer.kind == "blocked":
            return {"promptFeedback": {"blockReason": answer.text}, "usageMetadata": usage}
        parts: list[dict[str, Any]] = [{"text": answer.text}]
        if answer.kind == "image":
            data = tiny_png(len(self.requests))
            parts.append({"inlineData": {"mimeType": "image/png", "data": base64.b64encode(data).decode()},
                          "thoughtSignature": base64.b64encode(hashlib.sha256(data).digest()).decode()})
        return {"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP",
                                "index": 0}], "usageMetadata": usage, "modelVersion": "scripted"}

    async def count_tokens(self, model: str, body: Any) -> int | None:
        return None

    async def aclose(self) -> None:
        self.closed = True

    def user_texts(self, call: int = -1) -> list[str]:
        """The user turns' texts of one request (the last by default), in order."""
        contents = self.requests[call][1]["contents"]
        return [p["text"] for c in contents if c["role"] == "user" for p in c["parts"] if "text" in p]
