"""Building `generateContent` request bodies from a session's history.

Every model turn is replayed exactly as it was received (all parts, every thoughtSignature,
the image bytes); user images go in user turns only.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

from bot import catalog

Content = dict[str, Any]


def user_content(instruction: str, images: Sequence[tuple[bytes, str]] = ()) -> Content:
    """A user turn: the instruction, then each reference image inline."""
    parts: list[dict[str, Any]] = [{"text": instruction}]
    for data, mime in images:
        parts.append({"inlineData": {"mimeType": mime, "data": base64.b64encode(data).decode()}})
    return {"role": "user", "parts": parts}


def build_contents(history: Sequence[tuple[Content, Content]], new_user: Content) -> list[Content]:
    """user, model, user, model, ..., user: the root-to-head path, then the new instruction."""
    contents: list[Content] = []
    for user, model in history:
        contents.append(user)
        contents.append(model)
    contents.append(new_user)
    return contents


def generation_config(model: str, aspect: str | None, size: str | None) -> dict[str, Any]:
    """Validated against the model's lists before anything is sent (raises SettingRejected)."""
    image_config: dict[str, str] = {}
    aspect = catalog.check_aspect(model, aspect)
    size = catalog.check_size(model, size)
    if aspect:
        image_config["aspectRatio"] = aspect
    if size:
        image_config["imageSize"] = size
    config: dict[str, Any] = {"responseModalities": ["TEXT", "IMAGE"]}
    if image_config:
        config["imageConfig"] = image_config
    return config


def build_request(
    history: Sequence[tuple[Content, Content]],
    new_user: Content,
    *,
    model: str,
    aspect: str | None,
    size: str | None,
) -> dict[str, Any]:
    return {
        "contents": build_contents(history, new_user),
        "generationConfig": generation_config(model, aspect, size),
    }
