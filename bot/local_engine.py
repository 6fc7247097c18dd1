"""The offline engine (THREADEDIT_ENGINE=local): a Pillow stand-in for trying the workflow.

It is not AI. It speaks Gemini's wire format (a `generateContent` body in, a Gemini-shaped
response out) and really edits pixels for the small vocabulary in VOCABULARY. Anything else,
when there is an image to edit, gets a short text-only answer listing what it understands.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageColor, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

from bot.engine import EngineError
from bot.images import ImageRejected, check_image

VOCABULARY: list[tuple[str, str]] = [
    ("make it sage green", "tints the whole image toward a named colour or #rrggbb"),
    ("warmer / cooler", "shifts the colour temperature"),
    ("brighter / darker", "changes the brightness"),
    ("more contrast / less contrast", "changes the contrast"),
    ("more saturated / desaturate", "makes the colours stronger or weaker"),
    ("black and white", "converts to grayscale"),
    ("sepia", "gives an old-photo brown tone"),
    ("invert", "inverts the colours"),
    ("rotate 90 / rotate left", "rotates by 90, 180 or 270 degrees (clockwise unless left)"),
    ("flip horizontally / mirror", "flips left-right, or top-bottom when vertical"),
    ("crop to 16:9", "centre-crops to an aspect ratio (or square)"),
    ("make it 2K", "resizes the long side to 512, 1K, 2K or 4K (or resize to 800px)"),
    ('caption "Hello"', "writes the quoted text along the bottom"),
    ("blur / sharpen", "blurs or sharpens the whole image"),
    ("add a gold border", "draws a frame around the edge"),
    ("side by side / stack / paste", "combines with an attached reference image"),
]
UNKNOWN_TEXT = (
    "The offline engine only understands: "
    + "; ".join(example for example, _ in VOCABULARY)
    + ". Set GEMINI_API_KEY to use Gemini."
)

_SIZES = {"512": 512, "1K": 1024, "2K": 2048, "4K": 4096}
_MAX_SIDE = 4096
_DEFAULT_COLOURS = ((72, 85, 160), (240, 170, 130))  # dusk blue to peach
_EXTRA_COLOURS = {
    "sage green": "#9caf88", "sage": "#9caf88", "mint": "#98ff98", "mint green": "#98ff98",
    "baby blue": "#89cff0", "navy blue": "#000080", "sky blue": "#87ceeb", "burgundy": "#800020",
    "mustard": "#e1ad01", "terracotta": "#e2725b", "cream": "#fffdd0", "rose": "#ff66cc",
    "peach": "#ffcba4", "lilac": "#c8a2c8", "charcoal": "#36454f", "emerald": "#50c878",
    "golden": "#ffd700", "ruby": "#e0115f", "off white": "#faf9f6",
}
_COLOURS = {**{name: name for name in ImageColor.colormap}, **_EXTRA_COLOURS}
_LOOKUP = {name.replace(" ", ""): value for name, value in _COLOURS.items()}
_Font = ImageFont.FreeTypeFont | ImageFont.ImageFont
_PREFIXES = "light|dark|medium|pale|deep|hot|sky|sea|forest|lawn|dodger|midnight|royal|steel|slate"
_C = "#[0-9a-f]{6}|#[0-9a-f]{3}|" + "|".join(
    re.sub(rf"^({_PREFIXES})(?=[a-z])", r"\1[\\s-]?", name.replace(" ", r"[\s-]?"))
    for name in sorted(_COLOURS, key=len, reverse=True)
)
_COLOUR = re.compile(rf"(?<![\w#])(?:{_C})(?![\w-])", re.I)
_QUOTED = re.compile(r'"[^"]*"|“[^”]*”')

# (kind, pattern), in priority order: a match is dropped when it overlaps an earlier one.
# For tints and borders only the colour (group "key") counts as the span.
_RULES: list[tuple[str, re.Pattern[str]]] = [
    (kind, re.compile(pattern, re.I)) for kind, pattern in [
        ("caption", r"\b(?:caption|add(?: the| some)? text|text|write|label|title)\b[\s:\-]*"
                    r"(?:it\s+|saying\s+|that says\s+|with\s+)?(?:\"(?P<q1>[^\"]+)\"|“(?P<q2>[^”]+)”"
                    r"|'(?P<q3>[^']+)')"),
        ("border", rf"(?<![\w#])(?:(?P<key>{_C})\s+)?(?:border|frame)(?:d|s)?\b"),
        ("combine", r"\b(?:combine|side[\s-]by[\s-]side|next to each other|merge|join)\b"),
        ("stack", r"\b(?:stack(?:ed)?|one above the other|on top of each other)\b"),
        ("paste", r"\b(?:paste|overlay|inset)\b|\bput\s+(?:it|this|that|the \w+)\s+(?:onto|over"
                  r"|on top|in the corner)\b"),
        ("grayscale", r"\b(?:gr[ae]y[\s-]?scale|black[\s-]*(?:and|&|n)[\s-]*white|b\s*&\s*w"
                      r"|monochrome|remove (?:the |all )?colou?rs?)\b"),
        ("sepia", r"\b(?:sepia|vintage)\b"),
        ("invert", r"\b(?:invert(?:ed)?|negative)\b"),
        ("desaturate", r"\b(?:desaturated?|less (?:saturated?|saturation|colou?rful|vibrant)"
                       r"|muted?(?: the)? colou?rs|muted)\b"),
        ("saturate", r"\b(?:saturated?|more (?:saturated?|saturation)|(?:more )?colou?rful"
                     r"|(?:more )?vibrant|vivid|boost (?:the )?colou?rs?)\b"),
        ("warmer", r"\b(?:warmer|warm (?:it )?up|warm(?:er)? tones?|warmth)\b"),
        ("cooler", r"\b(?:cooler|colder|cool (?:it )?down|cool(?:er)? tones?)\b"),
        ("less_contrast", r"\b(?:less|lower|reduce|decrease|softer)\s+(?:the\s+)?contrast\b"),
        ("more_contrast", r"\b(?:(?:more|higher|increase|boost|add|stronger)\s+(?:the\s+)?)?"
                          r"contrast\b"),
        ("brighter", r"\b(?:brighter|brighten|lighter|lighten|increase (?:the )?brightness)\b"),
        ("darker", r"\b(?:darker|darken|dimmer|less bright|(?:reduce|decrease) (?:the )?"
                   r"brightness)\b"),
        ("blur", r"\b(?:blur(?:red|ry)?|soften|defocus)\b"),
        ("sharpen", r"\b(?:sharpen(?:ed)?|sharper|crisper)\b"),
        ("flip", r"\b(?:flip(?:ped)?|mirror(?:ed)?)\b(?:\s+(?:it|the image|the picture))?(?:\s+"
                 r"(?P<dir>horizontal(?:ly)?|vertical(?:ly)?|left[\s-]to[\s-]right"
                 r"|top[\s-]to[\s-]bottom|upside[\s-]down))?"),
        ("rotate", r"\b(?:rotated?|turn)\b(?:\s+(?:it|the image|the picture|by))*\s*"
                   r"(?:(?P<deg>-?\d{2,3})\s*(?:°|degrees?|deg)?(?:\s*(?P<ccw>counter[\s-]?"
                   r"clockwise|anti[\s-]?clockwise|ccw|to the left|left))?|(?P<side>left|right)"
                   r"|upside[\s-]down)|\brotated?\b|\bupside[\s-]down\b"),
        ("crop", r"\b(?P<a>\d{1,2})\s*:\s*(?P<b>\d{1,2})\b|\b(?:crop(?: it)?(?: to)?(?: an?)?"
                 r"|make it(?: an?)?)\s+(?P<word>square|portrait|landscape|widescreen)\b"),
        ("resize", r"\b(?:resize|scale|shrink|enlarge|upscale|downscale)\b(?:\s+(?:it|the image))?"
                   r"(?:\s+to)?\s*(?P<px>\d{2,5})\s*(?:px|pixels)?(?:\s*[x×]\s*(?P<py>\d{2,5}))?"),
        ("size", r"\b(?P<size>512|1k|2k|4k)\b"),
        ("tint", rf"\b(?:make|turn|paint|colou?r|tint|change|recolou?r|dye)\b[^.;,!?\"]{{0,40}}?"
                 rf"(?<![\w#])(?P<key>{_C})(?![\w-])|(?<![\w#])(?P<key2>{_C})\s+(?:tint|tone|hue"
                 rf"|cast|wash)\b|\bmore\s+(?P<key3>{_C})(?![\w-])"),
    ]
]
_GEOMETRY = {"crop", "combine", "stack", "rotate"}
_COMPOSITE = {"combine", "stack", "paste"}
_ASPECT_WORDS = {"square": (1, 1), "portrait": (3, 4), "landscape": (4, 3), "widescreen": (16, 9)}


class _Skip(Exception):
    """An operation that could not apply; the message says why, for the user."""


@dataclass
class _Request:
    instruction: str
    base: bytes | None  # the image to edit
    refs: list[bytes]  # extra references for side by side / stack / paste
    aspect: tuple[int, int] | None  # imageConfig.aspectRatio
    size: int | None  # imageConfig.imageSize as a long side in pixels


class LocalEngine:
    """Implements bot.engine.Engine without a network: real pixel edits, not AI."""

    name = "local"
    offline = True
    accepts_encoded = False

    async def generate(self, model: str, body: dict[str, Any]) -> dict[str, Any]:
        return await asyncio.to_thread(_run, body)

    async def count_tokens(self, model: str, body: dict[str, Any]) -> int | None:
        return None  # nothing to count against: the offline engine has no context limit

    async def aclose(self) -> None:
        return None


def _run(body: dict[str, Any]) -> dict[str, Any]:
    """Answer one generateContent body synchronously (LocalEngine runs it in a thread)."""
    request = _parse_request(body)
    ops = _parse_instruction(request.instruction)
    if request.base is None:
        img, summary = _paint_canvas(request)
        return _respond(summary, img)
    if not ops:
        return _respond(UNKNOWN_TEXT, None)
    img = _on_white(_decode(request.base))
    refs = [_decode(data) for data in request.refs] if _COMPOSITE & {k for k, _ in ops} else []
    done: list[str] = []
    skipped: list[str] = []
    for kind, match in ops:
        try:
            img, phrase = _apply(kind, match, img, refs)
            done.append(phrase)
        except _Skip as why:
            skipped.append(str(why))
    if not done:
        return _respond(" ".join(skipped), None)
    kinds = {kind for kind, _ in ops}
    img = _resize_long(img, _MAX_SIDE) if max(img.size) > _MAX_SIDE else img
    if request.aspect and not kinds & _GEOMETRY and _aspect_differs(img.size, request.aspect):
        img = _crop_to(img, request.aspect)
        done.append(f"cropped to {request.aspect[0]}:{request.aspect[1]}")
    if request.size and not kinds & {"size", "resize"} and max(img.size) != request.size:
        img = _resize_long(img, request.size)
        done.append(f"resized to {img.width}×{img.height}")
    summary = ", ".join(done)
    return _respond(summary[0].upper() + summary[1:] + ". " + " ".join(skipped), img)


def _parse_instruction(text: str) -> list[tuple[str, re.Match[str]]]:
    """The vocabulary operations in `text`, in order of appearance."""
    masked = _QUOTED.sub(lambda m: " " * len(m.group()), text)
    taken: list[tuple[int, int]] = []
    found: list[tuple[int, str, re.Match[str]]] = []
    for kind, pattern in _RULES:
        for match in pattern.finditer(text if kind == "caption" else masked):
            key = next((g for g in ("key", "key2", "key3") if match.groupdict().get(g)), None)
            start, end = match.span(key) if key and kind == "tint" else match.span()
            if any(start < b and a < end for a, b in taken):
                continue
            taken.append((start, end))
            found.append((start, kind, match))
    return [(kind, match) for _, kind, match in sorted(found, key=lambda item: item[0])]


# --- requests and responses -----------------------------------------------------------------
def _parse_request(body: dict[str, Any]) -> _Request:
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise EngineError("bad_request", "The request has no conversation to answer.")
    turns = [c for c in contents if isinstance(c, dict)]
    users = [i for i, c in enumerate(turns) if c.get("role", "user") == "user"]
    if not users:
        raise EngineError("bad_request", "The request has no user message to answer.")
    last = users[-1]
    earlier = [img for turn in turns[:last] for img in _images(turn)]
    attached = _images(turns[last])
    texts = [p["text"].strip() for p in _parts(turns[last]) if isinstance(p.get("text"), str)]
    # The last text is the instruction: a re-anchored turn starts with a summary of earlier
    # instructions (bot/context.py), which must not be applied a second time.
    instruction = next((t for t in reversed(texts) if t), "")
    if attached:
        base, refs = attached[0], attached[1:]
        wants_other = {k for k, _ in _parse_instruction(instruction)} & _COMPOSITE
        if not refs and earlier and wants_other:  # the attachment joins the current version
            base, refs = earlier[-1], attached
    else:
        base, refs = (earlier[-1] if earlier else None), []
    config = body.get("generationConfig") or body.get("generation_config") or {}
    image_config = config.get("imageConfig") or config.get("image_config") or {}
    aspect_text = str(image_config.get("aspectRatio") or image_config.get("aspect_ratio") or "")
    found = re.fullmatch(r"\s*(\d{1,2})\s*:\s*(\d{1,2})\s*", aspect_text)
    aspect = (int(found[1]), int(found[2])) if found and int(found[1]) and int(found[2]) else None
    size = _SIZES.get(str(image_config.get("imageSize") or image_config.get("image_size") or ""))
    return _Request(instruction, base, refs, aspect, size)


def _parts(turn: dict[str, Any]) -> list[dict[str, Any]]:
    parts = turn.get("parts")
    parts = parts if isinstance(parts, list) else []
    return [p for p in parts if isinstance(p, dict) and not p.get("thought")]


def _images(turn: dict[str, Any]) -> list[bytes]:
    inlines = [p.get("inlineData") or p.get("inline_data") for p in _parts(turn)]
    try:
        return [base64.b64decode(str(i.get("data") or ""), validate=True) for i in inlines
                if isinstance(i, dict) and str(i.get("mimeType") or i.get("mime_type") or
                                               "image/").startswith("image/")]
    except (binascii.Error, ValueError):
        raise EngineError("bad_request", "An image in the request is not valid base64.") from None


def _decode(data: bytes) -> Image.Image:
    try:
        checked = check_image(data)
    except ImageRejected as exc:
        raise EngineError("bad_request", exc.message) from None
    with Image.open(io.BytesIO(checked.data)) as img:
        img.load()
        return img.convert("RGBA" if "A" in img.getbands() or "transparency" in img.info else "RGB")


def _respond(summary: str, img: Image.Image | None) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"text": summary.strip(), "thoughtSignature": _sig(
        summary.strip().encode())}]
    if img is not None:
        buf = io.BytesIO()
        img.convert("RGB").save(buf, "JPEG", quality=90)
        data = base64.b64encode(buf.getvalue()).decode()
        parts.append({"inlineData": {"mimeType": "image/jpeg", "data": data},
                      "thoughtSignature": _sig(buf.getvalue())})
    candidate = {"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}
    usage = {"promptTokenCount": 0, "candidatesTokenCount": 0, "totalTokenCount": 0}
    return {"candidates": [candidate], "usageMetadata": usage, "modelVersion": "local"}


def _sig(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(b"local:" + data).digest()).decode("ascii")


# --- operations -----------------------------------------------------------------------------
_Effect = Callable[[Image.Image], Image.Image]


def _temperature(shift: float) -> _Effect:
    def effect(img: Image.Image) -> Image.Image:
        r, g, b = img.split()
        return Image.merge("RGB", (r.point(lambda v: v * (1 + shift)), g,
                                   b.point(lambda v: v * (1 - shift))))
    return effect


_EFFECTS: dict[str, tuple[_Effect, str]] = {
    "warmer": (_temperature(0.1), "made it warmer"),
    "cooler": (_temperature(-0.1), "made it cooler"),
    "brighter": (lambda im: ImageEnhance.Brightness(im).enhance(1.25), "brightened it"),
    "darker": (lambda im: ImageEnhance.Brightness(im).enhance(0.75), "darkened it"),
    "more_contrast": (lambda im: ImageEnhance.Contrast(im).enhance(1.3), "raised the contrast"),
    "less_contrast": (lambda im: ImageEnhance.Contrast(im).enhance(0.7), "lowered the contrast"),
    "saturate": (lambda im: ImageEnhance.Color(im).enhance(1.5), "boosted the colours"),
    "desaturate": (lambda im: ImageEnhance.Color(im).enhance(0.5), "muted the colours"),
    "grayscale": (lambda im: ImageOps.grayscale(im).convert("RGB"), "converted to black and white"),
    "sepia": (lambda im: ImageOps.colorize(ImageOps.grayscale(im), "#2b1d0e", "#fff1d6",
                                           mid="#a47d52"), "applied a sepia tone"),
    "invert": (ImageOps.invert, "inverted the colours"),
    "blur": (lambda im: im.filter(ImageFilter.GaussianBlur(max(2.0, max(im.size) / 300))),
             "blurred it"),
    "sharpen": (lambda im: im.filter(ImageFilter.UnsharpMask(2, 150, 3)), "sharpened it"),
}


def _apply(
    kind: str, m: re.Match[str], img: Image.Image, refs: list[Image.Image]
) -> tuple[Image.Image, str]:
    if kind in _EFFECTS:
        effect, phrase = _EFFECTS[kind]
        return effect(img), phrase
    if kind == "tint":
        name = (m["key"] or m["key2"] or m["key3"]).lower()
        tinted = ImageOps.colorize(ImageOps.grayscale(img), "black", "white", mid=_rgb(name))
        return Image.blend(img, tinted, 0.5), f"tinted {name}"
    if kind == "flip":
        if (m["dir"] or "").lower().startswith(("vert", "top", "upside")):
            return ImageOps.flip(img), "flipped vertically"
        return ImageOps.mirror(img), "flipped horizontally"
    if kind == "rotate":
        return _rotate(m, img)
    if kind == "crop":
        a, b = (int(m["a"]), int(m["b"])) if m["a"] else _ASPECT_WORDS[m["word"].lower()]
        if not (a and b and 1 / 8 <= a / b <= 8):
            raise _Skip(f"{a}:{b} is not an aspect ratio I can crop to.")
        return _crop_to(img, (a, b)), f"cropped to {a}:{b}"
    if kind in ("size", "resize"):
        return _resize(m, img)
    if kind == "caption":
        caption = (m["q1"] or m["q2"] or m["q3"]).strip()
        return _caption(img, caption), f'added the caption "{caption}"'
    if kind == "border":
        colour, framed = (m["key"] or "white").lower(), img.copy()
        ImageDraw.Draw(framed).rectangle((0, 0, img.width - 1, img.height - 1), outline=_rgb(
            colour), width=max(4, round(min(img.size) * 0.03)))
        return framed, f"added a {colour} border"
    return _composite(kind, img, refs)


def _rotate(m: re.Match[str], img: Image.Image) -> tuple[Image.Image, str]:
    degrees = int(m["deg"]) % 360 if m["deg"] else 180 if "upside" in m.group().lower() else 90
    if m["ccw"] or (m["side"] or "").lower() == "left":
        degrees = (360 - degrees) % 360
    turns = {90: (Image.Transpose.ROTATE_270, "rotated 90° clockwise"),
             180: (Image.Transpose.ROTATE_180, "rotated 180°"),
             270: (Image.Transpose.ROTATE_90, "rotated 90° counter-clockwise")}
    if degrees not in turns:
        raise _Skip("I can only rotate by 90, 180 or 270 degrees.")
    return img.transpose(turns[degrees][0]), turns[degrees][1]


def _resize(m: re.Match[str], img: Image.Image) -> tuple[Image.Image, str]:
    groups = m.groupdict()
    if groups.get("size"):
        img = _resize_long(img, _SIZES[m["size"].upper()])
    elif groups.get("py"):
        box = (min(_MAX_SIDE, int(m["px"])), min(_MAX_SIDE, int(m["py"])))
        img = ImageOps.contain(img, box, Image.Resampling.LANCZOS)
    else:
        img = _resize_long(img, int(m["px"]))
    return img, f"resized to {img.width}×{img.height}"


def _resize_long(img: Image.Image, long_side: int) -> Image.Image:
    long_side = max(16, min(_MAX_SIDE, long_side))
    scale = long_side / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img if size == img.size else img.resize(size, Image.Resampling.LANCZOS)


def _aspect_differs(size: tuple[int, int], aspect: tuple[int, int]) -> bool:
    wanted = aspect[0] / aspect[1]
    return abs(size[0] / size[1] - wanted) / wanted > 0.01


def _crop_to(img: Image.Image, aspect: tuple[int, int]) -> Image.Image:
    wanted, (width, height) = aspect[0] / aspect[1], img.size
    new_w = min(width, max(1, round(height * wanted)))
    new_h = min(height, max(1, round(width / wanted)))
    left, top = (width - new_w) // 2, (height - new_h) // 2
    return img.crop((left, top, left + new_w, top + new_h))


def _composite(kind: str, img: Image.Image, refs: list[Image.Image]) -> tuple[Image.Image, str]:
    if not refs:
        raise _Skip("Attach a second image to combine it with this one.")
    if kind == "paste":
        ref, out = refs[0].copy(), img.copy()
        ref.thumbnail((max(1, img.width // 3), max(1, img.height // 2)), Image.Resampling.LANCZOS)
        margin = max(4, round(min(img.size) * 0.03))
        out.paste(ref.convert("RGB"), (img.width - ref.width - margin, img.height - ref.height
                                       - margin), ref.getchannel("A") if ref.mode == "RGBA" else None)
        return out, "pasted the reference into the bottom-right corner"
    across = kind == "combine"
    box = (10**6, img.height) if across else (img.width, 10**6)
    tiles = [img] + [ImageOps.contain(_on_white(ref), box, Image.Resampling.LANCZOS) for ref in refs]
    out = Image.new("RGB", (sum(t.width for t in tiles), img.height) if across else (
        img.width, sum(t.height for t in tiles)), "white")
    offset = 0
    for tile in tiles:
        out.paste(tile, (offset, 0) if across else (0, offset))
        offset += tile.width if across else tile.height
    return out, "put the reference side by side with it" if across else "stacked the reference below it"


def _on_white(img: Image.Image) -> Image.Image:
    if img.mode != "RGBA":
        return img.convert("RGB")
    out = Image.new("RGB", img.size, (255, 255, 255))
    out.paste(img, mask=img.getchannel("A"))
    return out


# --- drawing --------------------------------------------------------------------------------
def _rgb(name: str) -> tuple[int, ...]:
    key = re.sub(r"[\s-]+", "", name.lower())
    value = _LOOKUP.get(key, key)
    return ImageColor.getrgb(value)[:3]


def _font(size: int) -> _Font:
    return ImageFont.load_default(size=max(10, size))


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: _Font, max_width: float) -> list[str]:
    lines: list[str] = []
    for word in text.split():
        trial = f"{lines[-1]} {word}" if lines else word
        if lines and draw.textlength(trial, font=font) <= max_width:
            lines[-1] = trial
        else:
            lines.append(word)
    return lines


def _caption(img: Image.Image, text: str) -> Image.Image:
    out = img.convert("RGBA")
    font = _font(round(min(img.width / 16, img.height / 10)))
    band = Image.new("RGBA", out.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(band)
    lines = _wrap(draw, text, font, img.width * 0.9)[:3]
    line_h = round(font.size * 1.25) if isinstance(font, ImageFont.FreeTypeFont) else 14
    top = img.height - line_h * len(lines) - line_h // 2
    draw.rectangle((0, top - line_h // 4, img.width, img.height), fill=(0, 0, 0, 140))
    for i, line in enumerate(lines):
        draw.text((img.width / 2, top + i * line_h), line, font=font, fill="white", anchor="ma")
    return Image.alpha_composite(out, band).convert("RGB")


def _paint_canvas(request: _Request) -> tuple[Image.Image, str]:
    a, b = request.aspect or (1, 1)
    long_side = request.size or 1024
    size = (long_side, max(1, round(long_side * b / a))) if a >= b else (
        max(1, round(long_side * a / b)), long_side)
    unquoted = _QUOTED.sub(lambda m: m.group()[1:-1], request.instruction)
    names = list(dict.fromkeys(m.group().lower() for m in _COLOUR.finditer(unquoted)))[:2]
    top, bottom = [_rgb(name) for name in names] if len(names) == 2 else _DEFAULT_COLOURS
    if len(names) == 1:  # one colour: from it to a lighter or darker shade of it
        top = _rgb(names[0])
        bottom = tuple(v * 3 // 5 if sum(top) > 384 else v + (255 - v) * 3 // 5 for v in top)
    mask = Image.linear_gradient("L").resize(size)
    img = Image.composite(Image.new("RGB", size, bottom), Image.new("RGB", size, top), mask)
    if words := " ".join(request.instruction.split())[:300]:
        draw = ImageDraw.Draw(img)
        font = _font(round(min(size) / 14))
        lines = "\n".join(_wrap(draw, words, font, size[0] * 0.85)[:8])
        ink, edge = ("black", "white") if sum(top) + sum(bottom) > 768 else ("white", "black")
        draw.multiline_text((size[0] / 2, size[1] / 2), lines, font=font, fill=ink, anchor="mm",
                            align="center", stroke_width=max(1, min(size) // 400), stroke_fill=edge)
    described = " to ".join(names) if names else "dusk"
    return img, (f"Painted a {size[0]}×{size[1]} {described} gradient with your words on it "
                 "(the offline engine draws, it does not imagine).")
