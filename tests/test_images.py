"""bot/images.py: every case is generated with Pillow here; no binary fixtures."""

from __future__ import annotations

import io
import random
import struct
import zlib

import pytest
from PIL import Image

from bot.images import (
    CheckedImage,
    ImageLimits,
    ImageRejected,
    check_image,
    reencode_to_fit,
    sniff_mime,
    thumbnail,
)


def encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def decode(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload)) + kind + payload
        + struct.pack(">I", zlib.crc32(kind + payload))
    )


def noisy(width: int, height: int, seed: int = 1) -> Image.Image:
    return Image.frombytes("RGB", (width, height), random.Random(seed).randbytes(width * height * 3))


def gradient(width: int, height: int) -> Image.Image:
    return Image.linear_gradient("L").resize((width, height)).convert("RGB")


def rejected(data: bytes, **kwargs: object) -> ImageRejected:
    with pytest.raises(ImageRejected) as info:
        check_image(data, **kwargs)  # type: ignore[arg-type]
    message = info.value.message
    assert message == str(info.value)
    assert "Traceback" not in message and "Error" not in message and "\n" not in message
    assert message.endswith(".")
    return info.value


# --- refusals -------------------------------------------------------------------------------


def test_zero_bytes_is_empty() -> None:
    err = rejected(b"", filename="cat.png")
    assert err.code == "empty"
    assert '"cat.png"' in err.message


def test_over_the_byte_cap_is_too_large_before_decoding() -> None:
    limits = ImageLimits(max_input_bytes=1024 * 1024)
    err = rejected(b"\x89PNG\r\n\x1a\n" + b"\x00" * (1024 * 1024 + 10), limits=limits)
    assert err.code == "too_large"
    assert "1.0 MB" in err.message and "1 MB limit" in err.message


def test_pdf_is_not_an_image_and_says_so() -> None:
    err = rejected(b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n", filename="scan.png")
    assert err.code == "not_an_image"
    assert "looks like a PDF, not an image" in err.message
    assert '"scan.png"' in err.message


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10"/>', "SVG"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'><rect width='5' height='5'/></svg>", "SVG"),
        (b"<!DOCTYPE html><html><body>Not found</body></html>", "web page"),
        (b"just some notes I meant to paste\n", "text file"),
    ],
)
def test_svg_html_and_text_named_png_are_not_images(payload: bytes, kind: str) -> None:
    err = rejected(payload, filename="photo.png")
    assert err.code == "not_an_image"
    assert kind in err.message


def test_unrecognisable_bytes_are_not_an_image() -> None:
    err = rejected(bytes(range(256)) * 4)
    assert err.code == "not_an_image"
    assert err.message.startswith("The image is not an image that can be read")


def test_truncated_png() -> None:
    data = encode(noisy(200, 200), "PNG")
    err = rejected(data[: len(data) // 2], filename="half.png")
    assert err.code == "truncated"
    assert "cut off or damaged" in err.message


def test_truncated_jpeg() -> None:
    data = encode(noisy(300, 300), "JPEG", quality=90)
    assert rejected(data[: len(data) // 2]).code == "truncated"


def test_png_signature_only_is_truncated() -> None:
    assert rejected(b"\x89PNG\r\n\x1a\n\x00\x00").code == "truncated"


def test_decompression_bomb_from_a_hand_written_ihdr() -> None:
    ihdr = struct.pack(">IIBBBBB", 50_000, 50_000, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1000)
    data = (
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )
    err = rejected(data, filename="bomb.png")
    assert err.code == "too_many_pixels"
    assert "40 megapixels" in err.message


def test_pixel_limit_is_decided_from_the_header() -> None:
    # A real, tiny, single-colour PNG whose pixel count exceeds a (lowered) limit.
    data = encode(Image.new("L", (3000, 3000), 7), "PNG", optimize=True)
    assert len(data) < 100_000
    err = rejected(data, limits=ImageLimits(max_pixels=1_000_000))
    assert err.code == "too_many_pixels"
    assert "3000×3000" in err.message


def test_heic_without_pillow_heif_is_unsupported() -> None:
    pytest.importorskip("PIL")
    try:
        import pillow_heif  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("pillow_heif is installed")
    data = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64
    err = rejected(data, filename="IMG_0001.HEIC")
    assert err.code == "unsupported"
    assert "PNG or JPEG" in err.message


# --- conversions ----------------------------------------------------------------------------


def test_unchanged_jpeg_is_returned_byte_for_byte() -> None:
    data = encode(gradient(640, 480), "JPEG", quality=85)
    result = check_image(data, filename="ok.jpg")
    assert result == CheckedImage(data, "image/jpeg", 640, 480, None)
    assert result.data is data


def test_unchanged_png_with_alpha_is_returned_byte_for_byte() -> None:
    data = encode(Image.new("RGBA", (50, 40), (10, 20, 30, 128)), "PNG")
    result = check_image(data)
    assert (result.data, result.mime, result.note) == (data, "image/png", None)


def test_animated_gif_gives_first_frame_as_png_with_a_note() -> None:
    frames = [Image.new("RGB", (40, 30), (255, 0, 0)), Image.new("RGB", (40, 30), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 2
    result = check_image(data, filename="anim.gif")
    assert result.mime == "image/png"
    assert result.note == "Used the first frame of the animated GIF."
    first = decode(result.data)
    assert first.format == "PNG" and first.size == (40, 30)
    assert first.convert("RGB").getpixel((5, 5)) == (255, 0, 0)


def test_still_gif_becomes_png_without_a_note() -> None:
    data = encode(Image.new("RGB", (20, 20), (0, 128, 0)), "GIF")
    result = check_image(data)
    assert (result.mime, result.note) == ("image/png", None)
    assert decode(result.data).convert("RGB").getpixel((3, 3)) == (0, 128, 0)


def test_animated_webp_gives_first_frame() -> None:
    frames = [Image.new("RGB", (32, 32), (0, 200, 0)), Image.new("RGB", (32, 32), (200, 0, 0))]
    data = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    result = check_image(data)
    assert result.mime == "image/png"
    assert result.note is not None and "animated WebP" in result.note
    assert decode(result.data).convert("RGB").getpixel((16, 16)) == (0, 200, 0)


def test_cmyk_jpeg_becomes_rgb_jpeg() -> None:
    data = encode(Image.new("CMYK", (64, 48), (0, 255, 255, 0)), "JPEG", quality=95)
    assert decode(data).mode == "CMYK"
    result = check_image(data)
    out = decode(result.data)
    assert (result.mime, out.format, out.mode, out.size) == ("image/jpeg", "JPEG", "RGB", (64, 48))
    red, green, blue = out.getpixel((30, 20))  # type: ignore[misc]
    assert red > 200 and green < 60 and blue < 60


def test_16_bit_png_becomes_8_bit_png() -> None:
    data = encode(Image.new("I;16", (30, 20), 40_000), "PNG")
    assert decode(data).mode == "I;16"
    result = check_image(data)
    out = decode(result.data)
    assert (result.mime, out.mode) == ("image/png", "L")
    assert out.getpixel((1, 1)) == 155  # 40000 / 257, not clipped to 255


def test_16_bit_rgb_png_is_rewritten_as_8_bit() -> None:
    raw = b"".join(b"\x00" + b"\xff\xff\x80\x00\x00\x00" * 4 for _ in range(3))
    ihdr = struct.pack(">IIBBBBB", 4, 3, 16, 2, 0, 0, 0)
    data = (
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(raw))
        + png_chunk(b"IEND", b"")
    )
    result = check_image(data)
    assert result.data != data
    assert result.data[24] == 8  # IHDR bit depth
    assert decode(result.data).getpixel((0, 0)) == (255, 128, 0)


def test_exif_rotated_jpeg_is_turned_upright() -> None:
    img = gradient(200, 100)
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(img, "JPEG", exif=exif.tobytes())
    result = check_image(data)
    assert (result.width, result.height) == (100, 200)
    out = decode(result.data)
    assert out.size == (100, 200)
    assert out.getexif().get(0x0112) in (None, 1)


def test_oversize_side_is_scaled_down_with_a_note() -> None:
    data = encode(gradient(5000, 1000), "PNG")
    result = check_image(data, filename="wide.png")
    assert (result.width, result.height) == (4096, 819)
    assert decode(result.data).size == (4096, 819)
    assert result.note == "Scaled it down from 5000×1000 to 4096×819 pixels."


def test_too_big_output_is_reencoded_as_jpeg() -> None:
    data = encode(noisy(600, 600), "PNG")
    limits = ImageLimits(max_output_bytes=150_000)
    result = check_image(data, limits=limits)
    assert result.mime == "image/jpeg"
    assert len(result.data) <= 150_000
    assert result.note is not None and "JPEG" in result.note
    assert decode(result.data).format == "JPEG"


def test_bmp_becomes_png() -> None:
    data = encode(Image.new("RGB", (10, 10), (1, 2, 3)), "BMP")
    assert sniff_mime(data) == "image/bmp"
    result = check_image(data)
    assert result.mime == "image/png"
    assert decode(result.data).getpixel((0, 0)) == (1, 2, 3)


# --- reencode_to_fit, thumbnail, sniff_mime -------------------------------------------------


def test_reencode_to_fit_noisy_png_under_300_kb() -> None:
    data = encode(noisy(2000, 2000), "PNG")
    assert len(data) > 10_000_000
    result = reencode_to_fit(data, 300_000)
    assert result.mime == "image/jpeg" and len(result.data) <= 300_000
    out = decode(result.data)
    assert out.format == "JPEG"
    assert out.size == (result.width, result.height)
    assert out.width < 2000 and out.width == out.height
    assert result.note is not None and "JPEG" in result.note


def test_reencode_to_fit_returns_input_when_it_fits() -> None:
    data = encode(gradient(100, 100), "PNG")
    result = reencode_to_fit(data, 10 * 1024 * 1024)
    assert result == CheckedImage(data, "image/png", 100, 100, None)


def test_thumbnail_is_a_small_jpeg() -> None:
    thumb = decode(thumbnail(encode(Image.new("RGBA", (1000, 500), (0, 0, 0, 0)), "PNG")))
    assert thumb.format == "JPEG" and thumb.size == (320, 160)
    assert thumb.getpixel((10, 10)) == (255, 255, 255)  # transparency on white
    assert decode(thumbnail(encode(gradient(900, 1800), "JPEG"), 100)).size == (50, 100)


@pytest.mark.parametrize(
    ("data", "mime"),
    [
        (encode(Image.new("RGB", (2, 2)), "PNG"), "image/png"),
        (encode(Image.new("RGB", (2, 2)), "JPEG"), "image/jpeg"),
        (encode(Image.new("RGB", (2, 2)), "GIF"), "image/gif"),
        (encode(Image.new("RGB", (2, 2)), "WEBP"), "image/webp"),
        (encode(Image.new("RGB", (2, 2)), "TIFF"), "image/tiff"),
        (b"%PDF-1.7\n", "application/pdf"),
        (b"<html><body></body></html>", "text/html"),
        (b"\x00\x01\x02\x03\xfe\xff", None),
    ],
)
def test_sniff_mime(data: bytes, mime: str | None) -> None:
    assert sniff_mime(data) == mime
