"""bot/local_engine.py: Gemini-shaped requests built by hand, results checked on decoded pixels."""

from __future__ import annotations

import base64
import io
from typing import Any

import pytest
from PIL import Image, ImageChops, ImageOps, ImageStat

from bot.engine import Engine, EngineError
from bot.local_engine import UNKNOWN_TEXT, VOCABULARY, LocalEngine

MODEL = "gemini-3.1-flash-image-preview"


def b64(img: Image.Image, fmt: str = "PNG") -> str:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return base64.b64encode(buf.getvalue()).decode()


def image_part(img: Image.Image, **extra: Any) -> dict[str, Any]:
    return {"inlineData": {"mimeType": "image/png", "data": b64(img)}, **extra}


def user(text: str, *images: Image.Image) -> dict[str, Any]:
    return {"role": "user", "parts": [{"text": text}, *(image_part(i) for i in images)]}


def body(*contents: dict[str, Any], aspect: str | None = None, size: str | None = None
         ) -> dict[str, Any]:
    config: dict[str, Any] = {"responseModalities": ["TEXT", "IMAGE"]}
    image_config = {k: v for k, v in (("aspectRatio", aspect), ("imageSize", size)) if v}
    if image_config:
        config["imageConfig"] = image_config
    return {"contents": list(contents), "generationConfig": config}


def photo(width: int = 400, height: int = 300) -> Image.Image:
    """A colourful test picture: a horizontal gradient in red/green, blue fixed."""
    ramp = Image.linear_gradient("L").rotate(90, expand=True).resize((width, height))
    return Image.merge("RGB", (ramp, Image.new("L", (width, height), 120),
                               ramp.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))


async def ask(request: dict[str, Any]) -> dict[str, Any]:
    engine = LocalEngine()
    try:
        return await engine.generate(MODEL, request)
    finally:
        await engine.aclose()


def parts_of(response: dict[str, Any]) -> list[dict[str, Any]]:
    (candidate,) = response["candidates"]
    assert candidate["finishReason"] == "STOP" and candidate["index"] == 0
    assert candidate["content"]["role"] == "model"
    return candidate["content"]["parts"]


def output(response: dict[str, Any]) -> tuple[str, Image.Image]:
    text_part, image = parts_of(response)
    assert image["inlineData"]["mimeType"] == "image/jpeg"
    img = Image.open(io.BytesIO(base64.b64decode(image["inlineData"]["data"])))
    assert img.format == "JPEG"
    img.load()
    return text_part["text"], img


def test_local_engine_satisfies_the_engine_protocol() -> None:
    engine: Engine = LocalEngine()
    assert engine.name == "local"


async def test_response_is_gemini_shaped_with_signatures() -> None:
    response = await ask(body(user("make it brighter", photo())))
    assert response["modelVersion"] == "local"
    assert response["usageMetadata"] == {
        "promptTokenCount": 0, "candidatesTokenCount": 0, "totalTokenCount": 0,
    }
    text_part, image = parts_of(response)
    for part in (text_part, image):
        assert len(base64.b64decode(part["thoughtSignature"], validate=True)) == 32
    assert text_part["thoughtSignature"] != image["thoughtSignature"]
    assert text_part["text"] == "Brightened it."


async def test_grayscale_makes_every_pixel_neutral() -> None:
    text, img = output(await ask(body(user("Make it black and white", photo()))))
    assert text == "Converted to black and white."
    red, green, blue = img.convert("RGB").split()
    assert ImageChops.difference(red, green).getextrema() == (0, 0)
    assert ImageChops.difference(green, blue).getextrema() == (0, 0)


async def test_rotate_90_swaps_the_sides() -> None:
    text, img = output(await ask(body(user("rotate 90", photo(400, 300)))))
    assert img.size == (300, 400)
    assert "rotated 90° clockwise" in text.lower()


async def test_crop_to_16_9() -> None:
    text, img = output(await ask(body(user("crop to 16:9", photo(400, 400)))))
    assert img.width == 400 and abs(img.height - 400 * 9 / 16) <= 1
    assert text == "Cropped to 16:9."


async def test_make_it_red_raises_mean_red() -> None:
    original = photo()
    _, img = output(await ask(body(user("make it red", original))))
    before, after = ImageStat.Stat(original).mean, ImageStat.Stat(img).mean
    assert after[0] > before[0] + 20
    assert after[2] < before[2]


async def test_several_operations_apply_in_order_of_appearance() -> None:
    text, img = output(await ask(body(user("make the walls sage green and rotate 90", photo()))))
    assert text == "Tinted sage green, rotated 90° clockwise."
    assert img.size == (300, 400)


async def test_first_turn_without_an_image_paints_a_canvas() -> None:
    response = await ask(body(user("a navy to orange sky"), aspect="16:9", size="1K"))
    text, img = output(response)
    assert img.size == (1024, 576)
    assert "1024×576" in text and "navy to orange" in text
    top, bottom = img.getpixel((5, 2)), img.getpixel((5, 573))
    assert isinstance(top, tuple) and isinstance(bottom, tuple)
    assert top[2] > top[0] and bottom[0] > bottom[2]  # navy at the top, orange at the bottom


async def test_canvas_defaults_to_square_1k() -> None:
    _, img = output(await ask(body(user("hello"))))
    assert img.size == (1024, 1024)


async def test_unknown_instruction_gives_a_text_only_answer() -> None:
    parts = parts_of(await ask(body(user("put a party hat on the cat", photo()))))
    assert len(parts) == 1
    (part,) = parts
    assert "inlineData" not in part and part["thoughtSignature"]
    assert part["text"] == UNKNOWN_TEXT
    assert "offline engine only understands" in part["text"]
    assert "GEMINI_API_KEY" in part["text"] and "\n" not in part["text"]
    assert "rotate 90" in part["text"] and "crop to 16:9" in part["text"]


async def test_combine_with_a_reference_is_wider() -> None:
    reference = Image.new("RGB", (200, 300), (0, 0, 255))
    text, img = output(await ask(body(user("put them side by side", photo(400, 300), reference))))
    assert img.size == (600, 300)
    assert "side by side" in text
    assert img.getpixel((550, 150))[2] > 200  # type: ignore[index]


async def test_attachment_is_combined_with_the_current_version() -> None:
    first = user("make it darker", photo(400, 300))
    previous = {"role": "model", "parts": [
        {"text": "Darkened it.", "thoughtSignature": "c2ln"},
        image_part(Image.new("RGB", (400, 300), (255, 0, 0)), thoughtSignature="c2lnMg=="),
    ]}
    attachment = Image.new("RGB", (300, 300), (0, 255, 0))
    _, img = output(await ask(body(first, previous, user("combine with this", attachment))))
    assert img.size == (700, 300)
    left, right = img.getpixel((50, 150)), img.getpixel((650, 150))
    assert left[0] > 200 and right[1] > 200  # type: ignore[index]


async def test_edits_the_latest_model_image_and_skips_thought_images() -> None:
    blue = Image.new("RGB", (320, 240), (20, 40, 220))
    previous = {"role": "model", "parts": [
        image_part(Image.new("RGB", (50, 50), (0, 255, 0)), thought=True),
        {"text": "Here it is.", "thoughtSignature": "c2ln"},
        image_part(blue, thoughtSignature="c2lnMg=="),
        image_part(Image.new("RGB", (60, 60), (0, 255, 0)), thought=True),
    ]}
    _, img = output(await ask(body(user("draw", photo()), previous, user("invert it"))))
    assert img.size == (320, 240)
    r, g, b = img.getpixel((100, 100))  # type: ignore[misc]
    assert r > 200 and g > 180 and b < 60


async def test_image_config_is_honoured_on_edits() -> None:
    _, img = output(await ask(body(user("sharpen", photo(400, 300)), aspect="1:1", size="512")))
    assert img.size == (512, 512)


async def test_explicit_size_in_the_instruction() -> None:
    text, img = output(await ask(body(user("make it 2K", photo(400, 300)))))
    assert img.size == (2048, 1536)
    assert text == "Resized to 2048×1536."


async def test_caption_draws_a_band_at_the_bottom() -> None:
    original = Image.new("RGB", (400, 300), (250, 250, 250))
    text, img = output(await ask(body(user('caption "Hello world"', original))))
    assert text == 'Added the caption "Hello world".'
    assert ImageStat.Stat(img.crop((0, 270, 400, 300))).mean[0] < 200
    assert ImageStat.Stat(img.crop((0, 0, 400, 100))).mean[0] > 240


async def test_combine_without_a_second_image_explains_itself() -> None:
    parts = parts_of(await ask(body(user("side by side", photo()))))
    assert len(parts) == 1
    assert "second image" in parts[0]["text"]


@pytest.mark.parametrize("example", [e for phrase, _ in VOCABULARY for e in phrase.split(" / ")])
async def test_every_vocabulary_example_is_understood(example: str) -> None:
    reference = Image.new("RGB", (100, 100), (0, 0, 0))
    response = await ask(body(user(example, photo(200, 150), reference)))
    text, _ = output(response)
    assert text and text[0].isupper()


async def test_bad_requests_raise_engine_error() -> None:
    with pytest.raises(EngineError) as info:
        await ask({"contents": []})
    assert info.value.code == "bad_request"
    broken = {"role": "user", "parts": [
        {"text": "rotate 90"}, {"inlineData": {"mimeType": "image/png", "data": "bm90IGFuIGltYWdl"}},
    ]}
    with pytest.raises(EngineError) as info:
        await ask(body(broken))
    assert info.value.code == "bad_request"


async def test_border_in_a_named_colour_keeps_the_size() -> None:
    text, img = output(await ask(body(user("add a #ff0000 border", Image.new("RGB", (200, 100))))))
    assert text == "Added a #ff0000 border." and img.size == (200, 100)
    edge, centre = img.getpixel((1, 50)), img.getpixel((100, 50))
    assert edge[0] > 200 and centre[0] < 30  # type: ignore[index]


async def test_a_re_anchored_request_edits_the_head_and_applies_only_the_new_instruction() -> None:
    # bot/context.py's anchor: a summary of earlier instructions, the head image, the new one.
    head = photo()
    anchor = {"role": "user", "parts": [
        {"text": "Earlier turns were condensed. They were, oldest first:\n- invert it\n- sepia"},
        image_part(head), {"text": "black and white"}]}
    text, img = output(await ask(body(anchor)))
    assert img.size == head.size
    grey = ImageOps.grayscale(head).convert("RGB")
    assert img.getpixel((10, 150)) == pytest.approx(grey.getpixel((10, 150)), abs=8)
    assert "invert" not in text.lower() and "sepia" not in text.lower()
