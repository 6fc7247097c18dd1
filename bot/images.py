"""Checking and converting the images users give us: bytes in, bytes out, no other I/O.

Every decision is made by really decoding with Pillow, never from a file name or a declared
type. `check_image` either returns something safe to send to Gemini (PNG, JPEG or WebP within
our limits) or raises `ImageRejected` with a stable `code` and one plain sentence for the user.
"""

from __future__ import annotations

import contextlib
import io
import math
import re
import struct
import threading
import warnings
from dataclasses import dataclass

from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from bot.sniff import DESCRIPTIONS, sniff_mime

__all__ = ["CheckedImage", "ImageLimits", "ImageRejected", "check_image", "reencode_to_fit",
           "sniff_mime", "thumbnail"]

_MB = 1024 * 1024
_JPEG_QUALITY = 92  # re-encoding a user's JPEG (rotation, CMYK, downscale)
_FIT_QUALITIES = (90, 85, 80, 75, 70, 65, 60)
_FIT_SCALE_QUALITY = 75  # quality used while scaling down to fit
_MIN_FIT_SIDE = 16

# Formats we let Pillow try; obscure decoders are not exposed to user uploads.
_WANTED_FORMATS = ("PNG", "JPEG", "MPO", "GIF", "WEBP", "BMP", "TIFF", "ICO", "HEIF", "AVIF")
_KEEP_FORMATS = {
    "PNG": "image/png", "JPEG": "image/jpeg", "MPO": "image/jpeg", "WEBP": "image/webp",
}
_ANIMATED_NAMES = {"GIF": "GIF", "PNG": "PNG", "WEBP": "WebP"}
_DAMAGED_KINDS = {
    "image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp", "image/tiff", "image/x-icon",
}
_HEIF_KINDS = {"image/heic", "image/avif"}
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, TypeError)


@dataclass(frozen=True)
class ImageLimits:
    max_input_bytes: int = 30 * _MB  # refuse before decoding
    max_pixels: int = 40_000_000  # decompression-bomb guard, decided from the header
    max_side: int = 4096  # larger images are downscaled (aspect kept)
    max_output_bytes: int = 7 * _MB  # per-image inline limit we keep to


@dataclass(frozen=True)
class CheckedImage:
    data: bytes
    mime: str
    width: int
    height: int
    note: str | None = None  # a plain sentence when we changed something the user should know


class ImageRejected(ValueError):
    """`code`: empty, too_large, not_an_image, truncated, too_many_pixels, unsupported."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# One large decode at a time in the whole process: a 40-megapixel image takes about 300 MB to
# decode and scale, and ten of them checked side by side (one message, several uploads, several
# threads) would take ten times that. Small images, the usual case, never wait.
LARGE_DECODE_PIXELS = 8_000_000
_large_decode = threading.Lock()


def _decode_slot(im: Image.Image) -> contextlib.AbstractContextManager[object]:
    return _large_decode if im.width * im.height >= LARGE_DECODE_PIXELS else contextlib.nullcontext()


# --- public API ------------------------------------------------------------------------------
def check_image(
    data: bytes, *, filename: str | None = None, limits: ImageLimits = ImageLimits()
) -> CheckedImage:
    """Check one user image and return it ready to send, or raise ImageRejected."""
    who = _who(filename)
    if not data:
        raise ImageRejected("empty", f"{who} is empty (0 bytes).")
    if len(data) > limits.max_input_bytes:
        raise ImageRejected(
            "too_large",
            f"{who} is {_mb(len(data))}, over the {_mb(limits.max_input_bytes)} limit.",
        )
    kind = sniff_mime(data)
    _refuse_non_images(kind, who)
    with _open(data, who, kind, limits.max_pixels) as im, _decode_slot(im):
        return _normalise(data, im, who, limits)


def reencode_to_fit(data: bytes, max_bytes: int) -> CheckedImage:
    """Make an image fit an upload cap: JPEG, lowering quality, then scaling down.

    Returns the input unchanged (same bytes) when it already fits.
    """
    who = "The image"
    limits = ImageLimits()
    with _open(data, who, sniff_mime(data), limits.max_pixels) as im, _decode_slot(im):
        if len(data) <= max_bytes:
            mime = _KEEP_FORMATS.get(im.format or "") or Image.MIME.get(im.format or "", "")
            return CheckedImage(data, mime or "application/octet-stream", im.width, im.height)
        img, _animated = _decode(im, who, limits)
        out, size, quality = _fit_jpeg(img, max_bytes)
    note = f"Re-encoded as JPEG (quality {quality}) to fit under {_mb(max_bytes)}"
    if size != img.size:
        note += f", scaled to {size[0]}×{size[1]}"
    return CheckedImage(out, "image/jpeg", size[0], size[1], note + ".")


def thumbnail(data: bytes, max_side: int = 320) -> bytes:
    """A small JPEG preview (EXIF rotation applied, transparency on white)."""
    who = "The image"
    with _open(data, who, sniff_mime(data), ImageLimits().max_pixels) as im, _decode_slot(im):
        if im.format == "JPEG":
            im.draft(None, (max_side, max_side))
        img, _animated = _decode(im, who, ImageLimits())
        small = _flatten(img)
        if small is img:
            small = small.copy()
        # reducing_gap: a box reduction by a whole factor first, then Lanczos on what is left
        small.thumbnail((max_side, max_side), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return _encode(small, "JPEG", quality=85)


# --- opening and decoding --------------------------------------------------------------------
def _refuse_non_images(kind: str | None, who: str) -> None:
    native = kind == "image/avif" and "AVIF" in _open_formats()  # Pillow >= 11.2 reads AVIF
    if kind in _HEIF_KINDS and not native and not _heif_available():
        name = "a HEIC photo" if kind == "image/heic" else "an AVIF image"
        raise ImageRejected(
            "unsupported", f"{who} is {name}, which can't be read here; please send a PNG or JPEG."
        )
    if kind is not None and kind in DESCRIPTIONS:
        raise ImageRejected(
            "not_an_image",
            f"{who} looks like {DESCRIPTIONS[kind]}, not an image; please send a PNG or JPEG.",
        )


def _open(data: bytes, who: str, kind: str | None, max_pixels: int) -> ImageFile.ImageFile:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=_open_formats())
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = None
        if data[12:16] == b"IHDR":  # PNG: report the dimensions the header claims
            size = (int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big"))
        pixels = int(found.group(1)) if found else None
        raise _too_many(who, size, pixels, max_pixels) from None
    except (UnidentifiedImageError, *_DECODE_ERRORS):
        raise _unreadable(who, kind) from None
    width, height = im.size
    if width < 1 or height < 1:
        raise _unreadable(who, kind)
    if width * height > max_pixels:
        raise _too_many(who, (width, height), width * height, max_pixels)
    return im


def _decode(im: ImageFile.ImageFile, who: str, limits: ImageLimits) -> tuple[Image.Image, bool]:
    """Fully load the first frame, apply EXIF rotation and make the mode 8-bit and savable."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            animated = im.format != "MPO" and bool(getattr(im, "is_animated", False))
            if animated:
                im.seek(0)
            im.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _too_many(who, im.size, im.width * im.height, limits.max_pixels) from None
    except _DECODE_ERRORS:
        raise ImageRejected(
            "truncated", f"{who} seems to be cut off or damaged; please send it again."
        ) from None
    img: Image.Image = im
    if im.getexif().get(0x0112) in range(2, 9):  # EXIF Orientation
        img = ImageOps.exif_transpose(img)
    if img.mode == "CMYK":
        img = img.convert("RGB")
    elif img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        img = _to_8bit(img)
    elif img.mode not in ("1", "L", "LA", "P", "RGB", "RGBA"):
        img = img.convert("RGBA" if "A" in img.getbands() else "RGB")
    return img, animated


def _normalise(data: bytes, im: ImageFile.ImageFile, who: str, limits: ImageLimits) -> CheckedImage:
    fmt = im.format or ""
    sixteen_bit = fmt == "PNG" and any(";16" in str(tile.args) for tile in im.tile)
    original_mode = im.mode
    declared = im.size  # as stored, before any EXIF rotation
    if fmt == "JPEG" and max(declared) > 2 * limits.max_side:
        # Decode at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling), never below the size we
        # keep: a 12000-pixel-wide photo then never exists at full size in memory.
        im.draft(im.mode, _fit(declared, limits.max_side))
    img, animated = _decode(im, who, limits)
    changed = (
        img is not im or animated or sixteen_bit or fmt not in _KEEP_FORMATS
        or img.mode != original_mode
    )
    notes: list[str] = []
    if animated and fmt in _ANIMATED_NAMES:
        notes.append(f"Used the first frame of the animated {_ANIMATED_NAMES[fmt]}.")
    elif animated:
        notes.append(f"Used the first image of the {fmt} file.")
    # The size the user sent, turned as it is shown (img may be draft-scaled already).
    turned = img.size != im.size  # decoding changes nothing else about the size
    width, height = declared[::-1] if turned else declared
    if max(width, height) > limits.max_side:
        size = _fit((width, height), limits.max_side)
        img = _scale_down(img, size)
        im.close()  # the full-size pixels: not needed while the small copy is encoded
        notes.append(f"Scaled it down from {width}×{height} to {size[0]}×{size[1]} pixels.")
        changed = True
    if not changed and len(data) <= limits.max_output_bytes:
        return CheckedImage(data, _KEEP_FORMATS[fmt], width, height, None)

    icc = img.info.get("icc_profile") if original_mode != "CMYK" else None
    out_format = _output_format(fmt, img, animated)
    out = _encode(img, out_format, quality=_JPEG_QUALITY, icc=icc)
    if len(out) > limits.max_output_bytes:
        out, fitted, _quality = _fit_jpeg(img, limits.max_output_bytes)
        out_format = "JPEG"
        note = f"Saved it as a JPEG to keep it under {_mb(limits.max_output_bytes)}"
        if fitted != img.size:
            note += f", at {fitted[0]}×{fitted[1]} pixels"
        notes.append(note + ".")
        img_size = fitted
    else:
        img_size = img.size
    mime = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}[out_format]
    return CheckedImage(out, mime, img_size[0], img_size[1], " ".join(notes) or None)


# --- encoding --------------------------------------------------------------------------------
_STRIP_ROWS = 256


def _scale_down(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Lanczos to `size`, a band of rows at a time: what one resize gives, to within one level
    of rounding on a band's first row.

    One resize of a 40-megapixel image holds a third image between its two passes (the new
    width at the old height, 80 MB here); a band needs only its own rows. Each band's filter
    still reads the source rows beyond the band (Pillow clips a box's filter to the image, not
    to the box), so there are no seams.
    """
    if img.mode in ("1", "P"):
        img = img.convert("RGBA" if _has_alpha(img) else "RGB")
    out = Image.new(img.mode, size)
    step = img.height / size[1]
    for top in range(0, size[1], _STRIP_ROWS):
        bottom = min(size[1], top + _STRIP_ROWS)
        band = img.resize((size[0], bottom - top), Image.Resampling.LANCZOS,
                          box=(0, top * step, img.width, bottom * step))
        out.paste(band, (0, top))
    return out


def _fit(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """`size` scaled down (aspect kept) so its longer side is max_side."""
    scale = max_side / max(size)
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def _output_format(fmt: str, img: Image.Image, animated: bool) -> str:
    if animated or _has_alpha(img):
        return "PNG"
    if fmt in ("JPEG", "MPO", "WEBP", "HEIF", "AVIF"):  # photos stay lossy
        return "JPEG"
    return "PNG"


def _encode(img: Image.Image, fmt: str, *, quality: int = 90, icc: object = None) -> bytes:
    buf = io.BytesIO()
    extra: dict[str, object] = {"icc_profile": icc} if isinstance(icc, bytes) else {}
    if fmt == "JPEG":
        if img.mode not in ("L", "RGB"):
            img = _flatten(img)
        img.save(buf, "JPEG", quality=quality, **extra)
    else:
        img.save(buf, fmt, **extra)
    return buf.getvalue()


def _fit_jpeg(img: Image.Image, max_bytes: int) -> tuple[bytes, tuple[int, int], int]:
    """JPEG under max_bytes: quality 90 down to 60, then scale down. Returns (bytes, size, q)."""
    base = _flatten(img)
    out = b""
    for quality in _FIT_QUALITIES:
        out = _encode(base, "JPEG", quality=quality)
        if len(out) <= max_bytes:
            return out, base.size, quality
    current = base.size
    while True:
        ratio = min(0.9, max(0.25, math.sqrt(max_bytes / len(out)) * 0.9))
        size = (max(1, int(current[0] * ratio)), max(1, int(current[1] * ratio)))
        if max(current) <= _MIN_FIT_SIDE:
            raise ImageRejected(
                "too_large", f"The image can't be made smaller than {_mb(max_bytes)}."
            )
        current = size
        out = _encode(base.resize(size, Image.Resampling.LANCZOS), "JPEG",
                      quality=_FIT_SCALE_QUALITY)
        if len(out) <= max_bytes:
            return out, size, _FIT_SCALE_QUALITY


def _flatten(img: Image.Image) -> Image.Image:
    """RGB (or L) with any transparency composited onto white."""
    if _has_alpha(img):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img if img.mode in ("L", "RGB") else img.convert("RGB")


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        img.mode == "P" and "transparency" in img.info
    )


def _to_8bit(img: Image.Image) -> Image.Image:
    if img.mode.startswith("I;16"):
        return img.point(lambda v: v / 257).convert("L")
    low, high = img.getextrema()
    assert isinstance(low, (int, float)) and isinstance(high, (int, float))
    if 0 <= low and high <= 255:
        return img.convert("L")
    if 0 <= low and high <= 65535 and img.mode == "I":
        return img.point(lambda v: v / 257).convert("L")
    span = (high - low) or 1
    return img.convert("F").point(lambda v: (v - low) * 255 / span).convert("L")


# --- small helpers ---------------------------------------------------------------------------
_heif_lock = threading.Lock()
_heif_state: list[bool] = []  # empty until we tried to import pillow_heif


def _heif_available() -> bool:
    with _heif_lock:
        if not _heif_state:
            try:
                import pillow_heif  # type: ignore[import-not-found]  # optional dependency
            except ImportError:
                _heif_state.append(False)
            else:
                pillow_heif.register_heif_opener()
                _heif_state.append(True)
        return _heif_state[0]


def _open_formats() -> tuple[str, ...]:
    Image.init()
    return tuple(name for name in _WANTED_FORMATS if name in Image.OPEN)


def _unreadable(who: str, kind: str | None) -> ImageRejected:
    if kind in _DAMAGED_KINDS:
        return ImageRejected(
            "truncated", f"{who} seems to be cut off or damaged; please send it again."
        )
    if kind is not None and kind.startswith("image/"):
        return ImageRejected(
            "unsupported", f"{who} is in an image format that can't be read here; "
            "please send it as PNG or JPEG."
        )
    return ImageRejected(
        "not_an_image", f"{who} is not an image that can be read; please send a PNG or JPEG."
    )


def _too_many(
    who: str, size: tuple[int, int] | None, pixels: int | None, max_pixels: int
) -> ImageRejected:
    if size is not None:
        what = f"is {size[0]}×{size[1]} pixels"
    elif pixels is not None:
        what = f"has {pixels / 1e6:,.0f} megapixels"
    else:
        what = "has too many pixels"
    return ImageRejected(
        "too_many_pixels",
        f"{who} {what}, too big to open; the limit is {max_pixels / 1e6:g} megapixels.",
    )


def _who(filename: str | None) -> str:
    if filename:
        clean = re.sub(r"[\x00-\x1f\x7f]", "", filename).strip()[:80]
        if clean:
            return f'"{clean}"'
    return "The image"


def _mb(size: int) -> str:
    return f"{size / _MB:.1f} MB" if size % _MB else f"{size // _MB} MB"
