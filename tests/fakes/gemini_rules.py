"""Request rules of the fake Gemini API (see gemini_server.py), kept apart to stay readable.

Error texts: REAL = quoted in /work/shared/research/gemini-api.md from Google responses;
RECALLED = Google's wording as remembered from real responses, not in that doc (unverified);
unmarked = plausible imitation.
"""

from __future__ import annotations

import base64
import binascii
import copy
import io
import json
import re
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

PRO, FLASH31, FLASH_LITE = (
    "gemini-3-pro-image", "gemini-3.1-flash-image", "gemini-3.1-flash-lite-image")
FLASH25 = "gemini-2.5-flash-image"  # shut down on 2026-10-02: answered 404 like the preview ids
KNOWN_MODELS = (FLASH31, PRO, FLASH_LITE)
GEMINI3 = frozenset(KNOWN_MODELS)
INPUT_LIMIT = {PRO: 65536, FLASH31: 131072, FLASH_LITE: 65536}
# countTokens estimate (documented): text = len(text) // 4 per text part; each image a flat amount
# (3.1 Flash and Lite publish none: their 1K output's 1120, as the bot's planner assumes).
IMAGE_INPUT_TOKENS = {PRO: 560, FLASH31: 1120, FLASH_LITE: 1120}
# Output tokens per generated image, by imageSize.
IMAGE_OUTPUT_TOKENS = {
    PRO: {"1K": 1120, "2K": 1120, "4K": 2000},
    FLASH31: {"512": 747, "1K": 1120, "2K": 1680, "4K": 2520},
    FLASH_LITE: {"1K": 1120},
}
IMAGE_SIZES = {PRO: ("1K", "2K", "4K"), FLASH31: ("512", "1K", "2K", "4K"), FLASH_LITE: ("1K",)}
_BASE_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
ASPECT_RATIOS = {
    PRO: _BASE_RATIOS,
    # Lite: the Gemini API's card lists these 10; Vertex adds the four extreme ones (research).
    FLASH_LITE: _BASE_RATIOS,
    FLASH31: _BASE_RATIOS + ("1:4", "4:1", "1:8", "8:1"),
}
# 1K pixel sizes of Gemini 3 image models; "512"/2K/4K are x0.5/x2/x4 (matches the research tables).
PIXELS_1K_G3 = {
    "1:1": (1024, 1024), "2:3": (848, 1264), "3:2": (1264, 848), "3:4": (896, 1200),
    "4:3": (1200, 896), "4:5": (928, 1152), "5:4": (1152, 928), "9:16": (768, 1376),
    "16:9": (1376, 768), "21:9": (1584, 672), "1:4": (512, 2048), "4:1": (2048, 512),
    "1:8": (384, 3072), "8:1": (3072, 384),
}
SIZE_FACTOR = {"512": 0.5, "1K": 1.0, "2K": 2.0, "4K": 4.0}
IMAGE_MIME_TYPES = ("image/png", "image/jpeg", "image/webp", "image/heic", "image/heif")

# ---- error texts (markers: see the module docstring) ----
MSG_BAD_KEY = "API key not valid. Please pass a valid API key."  # RECALLED
MSG_NO_KEY = (  # RECALLED
    "Method doesn't allow unregistered callers (callers without established identity). "
    "Please use API Key or other form of API consumer identity to call this API."
)
MSG_NOT_FOUND = (  # RECALLED
    "models/{model} is not found for API version v1beta, or is not supported for "
    "generateContent. Call ListModels to see the list of available models and their "
    "supported methods."
)
MSG_BAD_JSON = "Invalid JSON payload received. Unexpected token.\n{snippet}\n^"  # RECALLED shape
MSG_NO_CONTENTS = "* GenerateContentRequest.contents: contents is not specified\n"  # RECALLED
MSG_ROLE = "Please use a valid role: user, model."  # RECALLED
MSG_FIRST_USER = "Please ensure that the first content has role user."
MSG_ALTERNATE = (  # RECALLED
    "Please ensure that multiturn requests alternate between user and model."
)
MSG_LAST_USER = (  # RECALLED
    "Please ensure that multiturn requests ends with a user role or a function response."
)
MSG_INVALID_ARGUMENT = "Request contains an invalid argument."  # RECALLED (research: "no detail")
MSG_BAD_IMAGE = (  # REAL start, RECALLED rest
    "Unable to process input image. Please retry or report in "
    "https://developers.generativeai.google/guide/troubleshooting"
)
MSG_TOO_MANY_TOKENS = (  # REAL
    "The input token count ({count}) exceeds the maximum number of tokens allowed ({limit})."
)
_POSITION = "in content position {i}, part position {j}."  # REAL; 1-based positions
MSG_IMAGE_SIG = "Image part is missing a thought_signature " + _POSITION  # REAL
MSG_TEXT_SIG = "Text part is missing a thought_signature " + _POSITION  # REAL
MSG_BAD_SIG = (  # REAL; 0-based index
    "Unable to submit request because it has an invalid thought signature for content at index {i}."
)
# Files API. REAL: 403 with this message for a fileData URI (generateContent, countTokens) or a
# GET/DELETE naming a file that is unknown, expired (48 h) or deleted; the id is the bare one,
# without "files/" (google-gemini/deprecated-generative-ai-python#365 on countTokens, #692 on
# generateContent, deprecated-generative-ai-js#236 on GET files/{id}); the Python SDK raised
# PermissionDenied for it, i.e. status PERMISSION_DENIED.
MSG_FILE_MISSING = "You do not have permission to access the File {id} or it may not exist."
# RECALLED: a file still PROCESSING (or FAILED) used in a request; 400 FAILED_PRECONDITION.
MSG_FILE_NOT_ACTIVE = "The File {id} is not in an ACTIVE state and usage is not allowed."
# The documented dummy signatures ("context_engineering_is_the_way_to_go",
# "skip_thought_signature_validator") are refused like any signature this server did not issue:
# whether they work on image parts is UNVERIFIED, and our client must not rely on them.


@dataclass
class GeminiError(Exception):
    """One Google-style error answer: {"error": {"code", "message", "status", "details"?}}."""

    code: int
    message: str
    status: str = "INVALID_ARGUMENT"
    details: list[dict[str, Any]] = field(default_factory=list)

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message, "status": self.status}
        if self.details:
            error["details"] = self.details
        return {"error": error}


def bad_request(message: str) -> GeminiError:
    return GeminiError(400, message)


# ---- 3. proto-JSON parsing: unknown names, both spellings, types, oneof -------------------------
# A schema maps camelCase field name -> type; a type is a scalar tag, a nested schema (message),
# or a 1-tuple (element type,) for repeated fields.  "any" fields are not looked into.
Schema = dict[str, Any]
BLOB: Schema = {"mimeType": "string", "data": "bytes"}
FILE_DATA: Schema = {"mimeType": "string", "fileUri": "string"}
PART: Schema = {
    "text": "string", "inlineData": BLOB, "fileData": FILE_DATA,
    "thought": "bool", "thoughtSignature": "string",
}
PART_ONEOF = ("text", "inlineData", "fileData")
CONTENT: Schema = {"role": "string", "parts": (PART,)}
GENERATION_CONFIG: Schema = {
    "responseModalities": ("modality",),
    "imageConfig": {"aspectRatio": "string", "imageSize": "string"},
    "thinkingConfig": {
        "thinkingLevel": "string", "thinkingBudget": "int", "includeThoughts": "bool"
    },
    "candidateCount": "int", "temperature": "number", "topP": "number", "topK": "int",
    "maxOutputTokens": "int", "seed": "int",
}
REQUEST: Schema = {
    "contents": (CONTENT,), "generationConfig": GENERATION_CONFIG, "tools": "any",
    "toolConfig": "any", "safetySettings": "any", "systemInstruction": CONTENT,
    "cachedContent": "string",
}
COUNT_REQUEST: Schema = {
    "contents": (CONTENT,), "generateContentRequest": {**REQUEST, "model": "string"}
}
_PROTO_TYPE = {
    "string": "TYPE_STRING", "bytes": "TYPE_BYTES", "bool": "TYPE_BOOL", "int": "TYPE_INT32",
    "number": "TYPE_FLOAT",
    "modality": "type.googleapis.com/google.ai.generativelanguage.v1beta.GenerationConfig.Modality",
}


def snake(name: str) -> str:
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), name)


def _invalid_value(path: str, kind: str, value: Any) -> GeminiError:
    return bad_request(f"Invalid value at '{path}' ({kind}), {json.dumps(value)}")


def _scalar(tag: str, value: Any, path: str) -> Any:
    ok = {
        "string": isinstance(value, str), "bytes": isinstance(value, str),
        "bool": isinstance(value, bool),
        "int": (isinstance(value, int) and not isinstance(value, bool))
        or (isinstance(value, str) and value.lstrip("-").isdigit()),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
        "modality": isinstance(value, str) and value.upper() in ("TEXT", "IMAGE"),
        "any": True,
    }[tag]
    if not ok:
        raise _invalid_value(path, _PROTO_TYPE[tag], value)
    if tag == "bytes":
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise _invalid_value(
                path, "TYPE_BYTES", f"Base64 decoding failed for \"{value[:40]}\""
            ) from None
    return value


def _value(kind: Any, value: Any, path: str) -> Any:
    if isinstance(kind, tuple):
        if not isinstance(value, list):
            raise _invalid_value(path, "list", value)
        return [_value(kind[0], item, f"{path}[{n}]") for n, item in enumerate(value)]
    if isinstance(value, list) and kind != "any":
        name = path.rsplit(".", 1)[-1]
        parent = path.rsplit(".", 1)[0] if "." in path else ""
        where = f" at '{parent}'" if parent else ""
        raise bad_request(
            f'Invalid JSON payload received. Unknown name "{name}"{where}: '
            "Proto field is not repeating, cannot start list."
        )
    if isinstance(kind, dict):
        return parse_message(kind, value, path)
    return _scalar(kind, value, path)


def parse_message(schema: Schema, obj: Any, path: str = "") -> dict[str, Any]:
    """Check obj against schema like Google's proto-JSON parser; return it with camelCase keys."""
    if not isinstance(obj, dict):
        if not path:
            raise bad_request("Invalid JSON payload received. Root element must be a message.")
        raise _invalid_value(path, "message", obj)
    lookup = {**{snake(k): k for k in schema}, **{k: k for k in schema}}
    where = f" at '{path}'" if path else ""
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = lookup.get(key)
        if name is None:
            raise bad_request(
                f'Invalid JSON payload received. Unknown name "{key}"{where}: Cannot find field.'
            )
        if name in out:
            if schema is PART and name in PART_ONEOF:
                raise _oneof_error(path, key)
            raise bad_request(
                f'Invalid JSON payload received. Duplicate field "{snake(name)}"{where}: '
                f'given as both "{name}" and "{snake(name)}".'
            )
        if schema is PART and name in PART_ONEOF and any(f in out for f in PART_ONEOF):
            raise _oneof_error(path, key)
        if value is None:  # proto3 JSON: null means "default"
            continue
        child = f"{path}.{snake(name)}" if path else snake(name)
        out[name] = _value(schema[name], value, child)
    return out


def _oneof_error(path: str, key: str) -> GeminiError:
    return bad_request(
        f"Invalid value at '{path}' (oneof), oneof field 'data' is already set. "
        f"Cannot overwrite with '{snake(key)}'"
    )


# ---- 4. contents and roles ---------------------------------------------------------------------
def check_contents(contents: list[dict[str, Any]]) -> None:
    if not contents:
        raise bad_request(MSG_NO_CONTENTS)
    for i, content in enumerate(contents):
        parts = content.get("parts") or []
        if not parts:
            raise bad_request(
                f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty.\n"
            )
        for j, part in enumerate(parts):
            if not any(f in part for f in PART_ONEOF):
                raise bad_request(
                    f"* GenerateContentRequest.contents[{i}].parts[{j}].data: required oneof "
                    "field 'data' must have one initialized field\n"
                )
    roles = [c.get("role", "") for c in contents]
    if roles == [""]:
        roles = ["user"]  # single-turn requests may omit the role
    if any(r not in ("user", "model") for r in roles):
        raise bad_request(MSG_ROLE)
    if roles[0] != "user":
        raise bad_request(MSG_FIRST_USER)
    if any(a == b for a, b in zip(roles, roles[1:], strict=False)):
        raise bad_request(MSG_ALTERNATE)
    if roles[-1] != "user":
        raise bad_request(MSG_LAST_USER)


# ---- 5. images ---------------------------------------------------------------------------------
def check_images(contents: list[dict[str, Any]]) -> None:
    for content in contents:
        for part in content["parts"]:
            blob = part.get("inlineData") or part.get("fileData")
            if blob is None:
                continue
            mime = blob.get("mimeType", "")
            if mime not in IMAGE_MIME_TYPES:
                raise bad_request(f"Unsupported MIME type: {mime}")
            if "data" in blob:
                decode_image(blob["data"], mime)


def decode_image(data_b64: str, mime: str) -> tuple[int, int]:
    """(width, height) of an inline image, or the 'Unable to process input image' error."""
    raw = base64.b64decode(data_b64)
    if mime in ("image/heic", "image/heif"):  # no HEIF codec in Pillow: want an ISO-BMFF ftyp box
        if raw[4:8] != b"ftyp":
            raise bad_request(MSG_BAD_IMAGE)
        return (1024, 1024)
    try:
        with Image.open(io.BytesIO(raw)) as image:
            image.load()
            return image.size
    except Exception:  # noqa: BLE001 - any decoder failure is "unable to process"
        raise bad_request(MSG_BAD_IMAGE) from None


# ---- 6. imageConfig ----------------------------------------------------------------------------
def check_image_config(model: str, config: dict[str, Any]) -> tuple[str | None, str]:
    """Validate imageConfig; return (aspectRatio or None, imageSize)."""
    size = config.get("imageSize")
    if size is not None and size not in IMAGE_SIZES[model]:
        raise bad_request(MSG_INVALID_ARGUMENT)
    ratio = config.get("aspectRatio")
    if ratio is not None and ratio not in ASPECT_RATIOS[model]:
        raise bad_request(MSG_INVALID_ARGUMENT)
    return ratio, size or "1K"


def nearest_ratio(model: str, width: int, height: int) -> str:
    def distance(ratio: str) -> float:
        w, h = (int(n) for n in ratio.split(":"))
        return abs(w / h - width / height)

    return min(ASPECT_RATIOS[model], key=distance)


def output_pixels(model: str, ratio: str, size: str, scale: float) -> tuple[int, int]:
    w, h = PIXELS_1K_G3[ratio]
    factor = SIZE_FACTOR[size] * scale
    return max(16, round(w * factor)), max(16, round(h * factor))


# ---- 7. model turns: thought signatures --------------------------------------------------------
class Issued:
    """The model contents this server answered with, and every part that carried a signature:
    what a later request's model turns must replay verbatim (compared as parsed JSON)."""

    def __init__(self) -> None:
        self.contents: list[dict[str, Any]] = []
        self._parts: dict[str, dict[str, Any]] = {}  # signature -> the exact part that carried it

    def add(self, content: dict[str, Any]) -> None:
        self.contents.append(copy.deepcopy(content))
        for part in content.get("parts", []):
            if "thoughtSignature" in part:
                self._parts[part["thoughtSignature"]] = copy.deepcopy(part)

    def has_content(self, content: dict[str, Any]) -> bool:
        return content in self.contents

    def has_part(self, signature: str, part: dict[str, Any]) -> bool:
        return self._parts.get(signature) == part


def check_model_turns(contents: list[dict[str, Any]], issued: Issued) -> None:
    """Gemini 3 strict validation: every model content must be one this server issued, verbatim."""
    for i, content in enumerate(contents):
        if content.get("role") != "model":
            continue
        parts = content["parts"]
        first_non_thought = next((j for j, p in enumerate(parts) if not p.get("thought")), None)
        for j, part in enumerate(parts):
            if part.get("thought") or "thoughtSignature" in part:
                continue
            if "inlineData" in part or "fileData" in part:
                raise bad_request(MSG_IMAGE_SIG.format(i=i + 1, j=j + 1))
            if "text" in part and j == first_non_thought:
                raise bad_request(MSG_TEXT_SIG.format(i=i + 1, j=j + 1))
        for part in parts:
            sig = part.get("thoughtSignature")
            if sig is not None and not issued.has_part(sig, part):
                raise bad_request(MSG_BAD_SIG.format(i=i))
        if not issued.has_content(content):
            raise bad_request(MSG_BAD_SIG.format(i=i))


# ---- token estimate ----------------------------------------------------------------------------
def count_tokens(model: str, contents: list[dict[str, Any]]) -> tuple[int, int]:
    """(text tokens, image tokens): len(text)//4 per text part, IMAGE_INPUT_TOKENS per image."""
    text = image = 0
    for content in contents:
        for part in content.get("parts", []):
            text += len(part.get("text", "")) // 4
            if "inlineData" in part or "fileData" in part:
                image += IMAGE_INPUT_TOKENS[model]
    return text, image


def token_details(text: int, image: int) -> list[dict[str, Any]]:
    details = [{"modality": "TEXT", "tokenCount": text}]
    if image:
        details.append({"modality": "IMAGE", "tokenCount": image})
    return details
