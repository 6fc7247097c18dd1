"""What a file is, from its first bytes: the image formats we read and the non-images people
send by mistake (a PDF, a web page saved as .png), so a refusal can say what it was."""

from __future__ import annotations

import struct

DESCRIPTIONS = {  # what non-images look like, for the refusal sentence
    "application/pdf": "a PDF", "application/postscript": "a PostScript file",
    "application/zip": "a ZIP archive or Office document", "application/gzip": "an archive",
    "image/svg+xml": "an SVG drawing", "text/html": "a web page (HTML)",
    "application/xml": "an XML file", "text/plain": "a text file", "video/mp4": "a video",
    "video/quicktime": "a video",
}
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1",
                b"msf1"}


def sniff_mime(data: bytes) -> str | None:
    """The type the magic bytes say, image or not (e.g. application/pdf, text/html); else None."""
    head = data[:32]
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "image/tiff"
    if head.startswith(b"BM") and len(data) >= 26:
        if struct.unpack("<I", data[14:18])[0] in (12, 40, 52, 56, 64, 108, 124):
            return "image/bmp"
    if head.startswith(b"\x00\x00\x01\x00") and len(data) >= 22:
        return "image/x-icon"
    if head[4:8] == b"ftyp":
        brands = data[8:64]
        if head[8:12] in (b"avif", b"avis") or (head[8:12] == b"mif1" and b"avif" in brands):
            return "image/avif"
        if head[8:12] in _HEIF_BRANDS:
            return "image/heic"
        return "video/quicktime" if head[8:10] == b"qt" else "video/mp4"
    if head.startswith(b"%PDF"):
        return "application/pdf"
    if head.startswith(b"%!PS"):
        return "application/postscript"
    if head.startswith(b"PK\x03\x04"):
        return "application/zip"
    if head.startswith(b"\x1f\x8b"):
        return "application/gzip"
    return _sniff_text(data[:4096])


def _sniff_text(head: bytes) -> str | None:
    if not head or b"\x00" in head:
        return None
    text = head.decode("utf-8", errors="replace")
    if text.count("\ufffd") > len(text) // 100 + 1:
        return None
    lowered = text.lstrip("\ufeff \t\r\n").lower()
    if lowered.startswith("<svg") or (lowered.startswith("<?xml") and "<svg" in lowered):
        return "image/svg+xml"
    if lowered.startswith(("<!doctype html", "<html", "<head", "<body")):
        return "text/html"
    if lowered.startswith("<?xml"):
        return "application/xml"
    printable = sum(ch.isprintable() or ch in "\r\n\t" for ch in text)
    return "text/plain" if printable >= 0.95 * len(text) else None
