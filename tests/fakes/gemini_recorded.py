"""Real Gemini answers, at their real sizes, without committing megabytes.

Gemini 3 image models sign the parts they return with `thoughtSignature`s of 0.6 to 2.9 MB of
base64 (more than the image itself), and a client must send each one back unchanged on every
later turn. The fake Gemini makes signatures of the recorded lengths (`signature`, table
`SIGNATURE_CHARS`) so requests weigh what real ones weigh.

The recorded answers in tests/fixtures/gemini/ (sources in tests/fixtures/SOURCES.md) are the
recorded files with each multi-megabyte string replaced by a marker that keeps its length:
  "<removed thoughtSignature: 1100216 base64 chars, 0 '='>"
  "<removed image/jpeg 1408x768: 1136480 base64 chars>"
`recorded_body` puts back, in place of each marker, a deterministic pseudo-random signature of
that length, or an image of that type, size and exact byte length; every other byte of the
recording is kept as it was.
"""

from __future__ import annotations

import base64
import io
import random
import re
import zlib
from pathlib import Path
from typing import Literal

from PIL import Image, ImageDraw

from tests.fakes import gemini_rules as rules

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "gemini"
PartKind = Literal["text", "image", "image_only"]

# Characters of base64 per signed part, as recorded (tests/fixtures/SOURCES.md):
# - 3 Pro Image answering text and image, both parts signed: g02 (text 1,100,216; image 1,098,588);
# - 3 Pro Image answering an image alone: g04 (2,909,844, the largest seen);
# - 3.1 Flash Image answering an image alone: g11 (597,616; vercel/ai kept the length only).
# No recording shows a 3.1 Flash text part or the Lite model: like g02, the text part is taken to
# weigh what the image part does, and Lite what 3.1 Flash does.
_FLASH = {"text": 597_616, "image": 597_616, "image_only": 597_616}
SIGNATURE_CHARS: dict[str, dict[PartKind, int]] = {
    rules.PRO: {"text": 1_100_216, "image": 1_098_588, "image_only": 2_909_844},
    rules.FLASH31: _FLASH,
    rules.FLASH_LITE: _FLASH,
}


def signature_chars(model: str, kind: PartKind) -> int:
    return SIGNATURE_CHARS.get(model, _FLASH)[kind]


def signature(chars: int, seed: str, padding: int | None = None) -> str:
    """Standard base64 of `chars` characters (a multiple of 4), the same for the same seed.

    `padding` is the number of '=' at the end (0 to 2); by default 1, as most recorded ones have.
    """
    if chars % 4:
        raise ValueError(f"base64 comes in fours, not {chars} characters")
    pad = 1 if padding is None else padding
    raw = random.Random(seed).randbytes(chars // 4 * 3 - pad)
    return base64.b64encode(raw).decode()


# ---- recorded answers ----------------------------------------------------------------------------
_SIGNATURE = re.compile(r"<removed thoughtSignature: (\d+) base64 chars, (\d) '='>")
_IMAGE = re.compile(r"<removed (image/(?:jpeg|png)) (\d+)x(\d+): (\d+) base64 chars>")


def recorded_body(name: str) -> bytes:
    """The bytes Gemini sent in the recorded answer `name` ("g02": the file starting "g02_" that
    is not a request), markers rebuilt; two loads give identical bytes."""
    [path] = [p for p in FIXTURES.iterdir()
              if p.name.startswith(name + "_") and not p.name.startswith(name + "_request")]
    text = path.read_text(encoding="utf-8")
    count = 0

    def rebuild_signature(m: re.Match[str]) -> str:
        nonlocal count
        count += 1
        return signature(int(m.group(1)), f"{name}/signature/{count}", int(m.group(2)))

    def rebuild_image(m: re.Match[str]) -> str:
        mime, width, height, chars = m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4))
        raw = image_of_length(mime, (width, height), base64_length_to_bytes(chars), seed=name)
        return base64.b64encode(raw).decode()

    return _IMAGE.sub(rebuild_image, _SIGNATURE.sub(rebuild_signature, text)).encode("utf-8")


def base64_length_to_bytes(chars: int) -> int:
    """Bytes whose base64 is exactly `chars` characters long, without padding."""
    return chars // 4 * 3


def image_of_length(mime: str, size: tuple[int, int], nbytes: int, seed: str) -> bytes:
    """A decodable image of this type and pixel size, padded to exactly `nbytes` bytes."""
    rng = random.Random(seed)
    image = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x, y = rng.randrange(size[0]), rng.randrange(size[1])
        draw.ellipse((x, y, x + size[0] // 6, y + size[1] // 6),
                     fill=tuple(rng.randrange(256) for _ in range(3)))
    out = io.BytesIO()
    if mime == "image/png":
        image.save(out, "PNG")
        return _pad_png(out.getvalue(), nbytes)
    image.save(out, "JPEG", quality=80)
    return _pad_jpeg(out.getvalue(), nbytes)


def _pad_jpeg(data: bytes, nbytes: int) -> bytes:
    """Comment segments (FF FE, up to 65,535 bytes each with their length) after the SOI marker."""
    need = nbytes - len(data)
    if need < 0:
        raise ValueError(f"the image is already {len(data)} bytes, more than {nbytes}")
    segments = []
    while need >= 4:
        size = min(need, 65_537)
        if 0 < need - size < 4:  # leave room for a last whole segment
            size -= 4
        segments.append(b"\xff\xfe" + (size - 2).to_bytes(2, "big") + b"\0" * (size - 4))
        need -= size
    if need:
        raise ValueError(f"cannot pad a JPEG of {len(data)} bytes to {nbytes}")
    return data[:2] + b"".join(segments) + data[2:]


def _pad_png(data: bytes, nbytes: int) -> bytes:
    """One private ancillary chunk (`prVt`) before IEND: 12 bytes of frame plus the padding."""
    need = nbytes - len(data)
    if need and need < 12:
        raise ValueError(f"cannot pad a PNG of {len(data)} bytes by {need}")
    if not need:
        return data
    body = b"\0" * (need - 12)
    chunk = (len(body).to_bytes(4, "big") + b"prVt" + body
             + zlib.crc32(b"prVt" + body).to_bytes(4, "big"))
    return data[:-12] + chunk + data[-12:]
