"""Self-tests of the fake Gemini server (tests/fakes/gemini_server.py), driven with httpx."""

from __future__ import annotations

import asyncio
import base64
import copy
import io
import re
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.fakes import gemini_recorded
from tests.fakes import gemini_rules as rules
from tests.fakes.gemini_recorded import recorded_body
from tests.fakes.gemini_server import Behaviour, FakeGemini

PRO, FLASH31, LITE = rules.PRO, rules.FLASH31, rules.FLASH_LITE
Json = dict[str, Any]


@pytest.fixture
async def fake() -> AsyncIterator[FakeGemini]:
    async with FakeGemini() as server:
        yield server


@pytest.fixture
async def client(fake: FakeGemini) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"x-goog-api-key": "test-key"}
    async with httpx.AsyncClient(base_url=fake.base_url, headers=headers, timeout=10) as c:
        yield c


def image_b64(size: tuple[int, int] = (32, 32), fmt: str = "PNG", colour: str = "red") -> str:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, fmt)
    return base64.b64encode(out.getvalue()).decode()


def user(text: str, *images: str, mime: str = "image/png") -> Json:
    parts: list[Json] = [{"text": text}]
    parts += [{"inlineData": {"mimeType": mime, "data": data}} for data in images]
    return {"role": "user", "parts": parts}


async def gen(
    client: httpx.AsyncClient, body: Json | bytes, model: str = PRO, **kw: Any
) -> httpx.Response:
    url = f"/v1beta/models/{model}:generateContent"
    if isinstance(body, bytes):
        return await client.post(url, content=body, **kw)
    return await client.post(url, json=body, **kw)


def error(response: httpx.Response) -> Json:
    return response.json()["error"]


def assert_error(response: httpx.Response, code: int, message: str, status: str) -> None:
    assert response.status_code == code, response.text
    assert error(response) == {**error(response), "code": code, "message": message,
                               "status": status}


def decode(part: Json) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(part["inlineData"]["data"])))


async def first_turn(client: httpx.AsyncClient, model: str = PRO) -> tuple[Json, Json]:
    """(request body, issued model content) of a successful first turn."""
    body = {"contents": [user("a cat", image_b64())]}
    response = await gen(client, body, model)
    assert response.status_code == 200, response.text
    return body, response.json()["candidates"][0]["content"]


def second_turn(body: Json, model_content: Json) -> Json:
    return {"contents": [*body["contents"], model_content, user("make it blue")]}


# ---- success ------------------------------------------------------------------------------------
async def test_success_shape_gemini3(fake: FakeGemini, client: httpx.AsyncClient) -> None:
    response = await gen(client, {"contents": [user("a cat")]})
    assert response.status_code == 200
    assert response.headers["x-fake-turns"] == "1"
    data = response.json()
    candidate = data["candidates"][0]
    assert candidate["finishReason"] == "STOP" and candidate["index"] == 0
    thought_text, thought_image, text, final = candidate["content"]["parts"]
    assert thought_text["thought"] is True and "thoughtSignature" not in thought_text
    assert thought_image["thought"] is True and "thoughtSignature" not in thought_image
    assert thought_image["inlineData"]["mimeType"] == "image/png"
    assert text["text"].startswith("Here is") and text["thoughtSignature"]
    assert final["inlineData"]["mimeType"] == "image/jpeg"
    assert decode(final).format == "JPEG" and decode(final).size == (128, 128)
    # Real sizes: 3 Pro signs its text and its image with about 1.1 MB each (recording g02).
    assert [len(text["thoughtSignature"]), len(final["thoughtSignature"])] == [1_100_216, 1_098_588]
    for sig in (text["thoughtSignature"], final["thoughtSignature"]):
        assert "+" in sig and "/" in sig and sig.endswith("=")
        base64.b64decode(sig, validate=True)
    usage = data["usageMetadata"]
    assert {"promptTokenCount", "candidatesTokenCount", "thoughtsTokenCount", "totalTokenCount",
            "promptTokensDetails"} <= usage.keys()
    assert data["modelVersion"] == PRO and data["responseId"]
    assert fake.issued == [candidate["content"]]
    assert fake.issued[0] is not candidate["content"]
    [record] = fake.requests
    assert (record.model, record.status) == (PRO, 200)
    assert record.headers["x-goog-api-key"] == "test-key"
    assert record.body == {"contents": [user("a cat")]} and record.raw.startswith(b"{")


@pytest.mark.parametrize(("model", "modalities", "sizes"), [
    (PRO, ["IMAGE"], [2_909_844]),  # recording g04: an image-only 3 Pro answer
    (FLASH31, ["TEXT", "IMAGE"], [597_616, 597_616]),  # recording g11's image signature
    (LITE, ["IMAGE"], [597_616]),
])
async def test_signatures_have_the_recorded_sizes(
    client: httpx.AsyncClient, model: str, modalities: list[str], sizes: list[int]
) -> None:
    body = {"contents": [user("x")], "generationConfig": {"responseModalities": modalities}}
    parts = (await gen(client, body, model)).json()["candidates"][0]["content"]["parts"]
    assert [len(p["thoughtSignature"]) for p in parts if "thoughtSignature" in p] == sizes


def test_signature_sizes_are_the_recorded_ones() -> None:
    def lengths(name: str) -> list[int]:
        text = next(gemini_recorded.FIXTURES.glob(f"{name}_*")).read_text()
        return [int(n) for n in re.findall(r"thoughtSignature: (\d+) base64|signature; length=(\d+)",
                                           text) for n in n if n]

    pro = gemini_recorded.SIGNATURE_CHARS[PRO]
    assert lengths("g02") == [pro["text"], pro["image"]]
    assert lengths("g04") == [pro["image_only"]]
    assert lengths("g11") == [gemini_recorded.SIGNATURE_CHARS[FLASH31]["image_only"]]


async def test_signatures_are_the_same_every_run() -> None:
    async def signatures(fake: FakeGemini) -> list[str]:
        async with httpx.AsyncClient(base_url=fake.base_url, timeout=10,
                                     headers={"x-goog-api-key": "test-key"}) as c:
            response = await gen(c, {"contents": [user("a cat")]})
        return [p["thoughtSignature"] for p in response.json()["candidates"][0]["content"]["parts"]
                if "thoughtSignature" in p]

    async with FakeGemini() as one, FakeGemini() as two:
        first, again = await signatures(one), await signatures(two)
    assert first == again and first[0] != first[1]


async def test_response_modalities(client: httpx.AsyncClient) -> None:
    cfg = {"generationConfig": {"responseModalities": ["image"]}}
    parts = (await gen(client, {"contents": [user("x")], **cfg})).json()["candidates"][0][
        "content"]["parts"]
    assert "thoughtSignature" in parts[-1] and "inlineData" in parts[-1]
    assert not any("text" in p and not p.get("thought") for p in parts)
    cfg = {"generationConfig": {"responseModalities": ["TEXT"]}}
    parts = (await gen(client, {"contents": [user("x")], **cfg})).json()["candidates"][0][
        "content"]["parts"]
    assert len(parts) == 1 and "text" in parts[0] and "thoughtSignature" in parts[0]
    cfg = {"generationConfig": {"responseModalities": ["VIDEO"]}}
    response = await gen(client, {"contents": [user("x")], **cfg})
    assert response.status_code == 400
    assert "generation_config.response_modalities[0]" in error(response)["message"]


async def test_image_is_deterministic_per_request(client: httpx.AsyncClient) -> None:
    async def final_image(text: str) -> bytes:
        response = await gen(client, {"contents": [user(text)]})
        return base64.b64decode(response.json()["candidates"][0]["content"]["parts"][-1][
            "inlineData"]["data"])

    assert await final_image("red hat") == await final_image("red hat")
    assert await final_image("red hat") != await final_image("blue hat")


@pytest.mark.parametrize(
    ("model", "image_config", "size"),
    [
        (PRO, {}, (128, 128)),
        (PRO, {"aspectRatio": "16:9", "imageSize": "2K"}, (344, 192)),
        (PRO, {"imageSize": "4K"}, (512, 512)),
        (FLASH31, {"aspectRatio": "1:8"}, (48, 384)),
        (FLASH31, {"imageSize": "512"}, (64, 64)),
        (LITE, {"aspectRatio": "21:9"}, (198, 84)),
    ],
)
async def test_output_size_follows_image_config(
    client: httpx.AsyncClient, model: str, image_config: Json, size: tuple[int, int]
) -> None:
    body = {"contents": [user("x")], "generationConfig": {"imageConfig": image_config}}
    response = await gen(client, body, model)
    assert response.status_code == 200, response.text
    assert decode(response.json()["candidates"][0]["content"]["parts"][-1]).size == size


async def test_default_aspect_follows_last_input_image(client: httpx.AsyncClient) -> None:
    body = {"contents": [user("x", image_b64((30, 30)), image_b64((160, 90)))]}
    response = await gen(client, body)
    assert decode(response.json()["candidates"][0]["content"]["parts"][-1]).size == (172, 96)


async def test_min_side_16px() -> None:
    async with FakeGemini(image_scale=0.001) as fake, httpx.AsyncClient() as c:
        response = await c.post(f"{fake.base_url}/v1beta/models/{PRO}:generateContent",
                                 headers={"x-goog-api-key": "test-key"},
                                 json={"contents": [user("x")]})
        assert decode(response.json()["candidates"][0]["content"]["parts"][-1]).size == (16, 16)


# ---- 1. auth, model ids -------------------------------------------------------------------------
async def test_wrong_key_is_400(fake: FakeGemini, client: httpx.AsyncClient) -> None:
    response = await gen(client, {"contents": [user("x")]}, headers={"x-goog-api-key": "nope"})
    assert_error(response, 400, rules.MSG_BAD_KEY, "INVALID_ARGUMENT")
    assert error(response)["details"][0]["reason"] == "API_KEY_INVALID"
    assert fake.requests[0].status == 400


async def test_missing_key_is_403(fake: FakeGemini) -> None:
    async with httpx.AsyncClient(base_url=fake.base_url) as bare:
        response = await gen(bare, {"contents": [user("x")]})
        assert_error(response, 403, rules.MSG_NO_KEY, "PERMISSION_DENIED")
        assert (await gen(bare, {"contents": [user("x")]}, params={"key": "test-key"})).is_success
    assert [r.status for r in fake.requests] == [403, 200]


@pytest.mark.parametrize(
    "model", ["gemini-3-pro-image-preview", "gemini-3.1-flash-image-preview", "gemini-pro",
              rules.FLASH25]
)
async def test_unknown_or_retired_model_is_404(client: httpx.AsyncClient, model: str) -> None:
    response = await gen(client, {"contents": [user("x")]}, model)
    assert_error(response, 404, rules.MSG_NOT_FOUND.format(model=model), "NOT_FOUND")
    assert "models/gemini" in error(response)["message"]


async def test_list_and_get_models(client: httpx.AsyncClient) -> None:
    names = [m["name"] for m in (await client.get("/v1beta/models")).json()["models"]]
    assert sorted(names) == sorted(f"models/{m}" for m in rules.KNOWN_MODELS)
    assert (await client.get(f"/v1beta/models/{PRO}")).json()["inputTokenLimit"] == 65536
    assert (await client.get("/v1beta/models/gemini-3-pro-image-preview")).status_code == 404


# ---- 2. JSON ------------------------------------------------------------------------------------
async def test_invalid_json(fake: FakeGemini, client: httpx.AsyncClient) -> None:
    response = await gen(client, b'{"contents": [')
    assert response.status_code == 400
    assert error(response)["message"].startswith("Invalid JSON payload received.")
    assert fake.requests[0].raw == b'{"contents": [' and fake.requests[0].status == 400
    response = await gen(client, b"[1]")
    assert error(response)["message"].endswith("Root element must be a message.")


# ---- 3. proto-JSON field names ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"contents": [user("x")], "foo": 1},
         'Invalid JSON payload received. Unknown name "foo": Cannot find field.'),
        ({"contents": [{"role": "user", "parts": [{"text": "x", "foo": 1}]}]},
         "Invalid JSON payload received. Unknown name \"foo\" at 'contents[0].parts[0]': "
         "Cannot find field."),
        ({"contents": [{"role": "user", "parts": [{"inlineData": {"mimeType": "image/png",
                                                                  "data": image_b64(),
                                                                  "width": 3}}]}]},
         "Invalid JSON payload received. Unknown name \"width\" at "
         "'contents[0].parts[0].inline_data': Cannot find field."),
        ({"contents": [user("x")], "generationConfig": {"responseMimeType": "image/png"}},
         "Invalid JSON payload received. Unknown name \"responseMimeType\" at "
         "'generation_config': Cannot find field."),
        ({"contents": [user("x")], "generationConfig": {"imageConfig": {"outputMimeType": "x"}}},
         "Invalid JSON payload received. Unknown name \"outputMimeType\" at "
         "'generation_config.image_config': Cannot find field."),
    ],
)
async def test_unknown_fields_rejected(client: httpx.AsyncClient, body: Json, message: str) -> None:
    assert_error(await gen(client, body), 400, message, "INVALID_ARGUMENT")


async def test_snake_case_accepted(client: httpx.AsyncClient) -> None:
    body = {
        "contents": [{"role": "user", "parts": [
            {"text": "x"}, {"inline_data": {"mime_type": "image/png", "data": image_b64()}}]}],
        "generation_config": {"response_modalities": ["TEXT", "IMAGE"],
                              "image_config": {"aspect_ratio": "3:2", "image_size": "1K"}},
    }
    response = await gen(client, body)
    assert response.status_code == 200, response.text


async def test_both_spellings_and_oneof_rejected(client: httpx.AsyncClient) -> None:
    blob = {"mimeType": "image/png", "data": image_b64()}
    part = {"inlineData": blob, "inline_data": blob}
    response = await gen(client, {"contents": [{"role": "user", "parts": [part]}]})
    assert response.status_code == 400
    assert "oneof field 'data' is already set" in error(response)["message"]
    part = {"inlineData": {**blob, "mime_type": "image/png"}}
    response = await gen(client, {"contents": [{"role": "user", "parts": [part]}]})
    assert response.status_code == 400 and "Duplicate field" in error(response)["message"]
    part = {"text": "x", "inlineData": blob}
    response = await gen(client, {"contents": [{"role": "user", "parts": [part]}]})
    assert error(response)["message"] == (
        "Invalid value at 'contents[0].parts[0]' (oneof), oneof field 'data' is already set. "
        "Cannot overwrite with 'inline_data'")


async def test_wrong_types_rejected(client: httpx.AsyncClient) -> None:
    response = await gen(client, {"contents": [{"role": "user", "parts": [{"text": 5}]}]})
    message = "Invalid value at 'contents[0].parts[0].text' (TYPE_STRING), 5"
    assert error(response)["message"] == message
    response = await gen(client, {"contents": [{"role": ["user"], "parts": [{"text": "x"}]}]})
    assert "Proto field is not repeating" in error(response)["message"]


# ---- 4. contents and roles ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("contents", "message"),
    [
        ([], rules.MSG_NO_CONTENTS),
        ([{"role": "user", "parts": []}],
         "* GenerateContentRequest.contents[0].parts: contents.parts must not be empty.\n"),
        ([{"role": "user", "parts": [{"thought": True}]}],
         "* GenerateContentRequest.contents[0].parts[0].data: required oneof field 'data' must "
         "have one initialized field\n"),
        ([user("x"), {"role": "assistant", "parts": [{"text": "y"}]}, user("z")], rules.MSG_ROLE),
        ([{"role": "model", "parts": [{"text": "y"}]}, user("z")], rules.MSG_FIRST_USER),
        ([user("x"), user("z")], rules.MSG_ALTERNATE),
        ([user("x"), {"role": "model", "parts": [{"text": "y"}]}], rules.MSG_LAST_USER),
    ],
)
async def test_contents_rules(
    client: httpx.AsyncClient, contents: list[Json], message: str
) -> None:
    assert_error(await gen(client, {"contents": contents}), 400, message, "INVALID_ARGUMENT")


async def test_single_turn_without_role_ok(client: httpx.AsyncClient) -> None:
    assert (await gen(client, {"contents": [{"parts": [{"text": "x"}]}]})).status_code == 200


# ---- 5. images ----------------------------------------------------------------------------------
async def test_unsupported_mime(client: httpx.AsyncClient) -> None:
    body = {"contents": [user("x", image_b64(fmt="GIF"), mime="image/gif")]}
    response = await gen(client, body)
    assert_error(response, 400, "Unsupported MIME type: image/gif", "INVALID_ARGUMENT")


async def test_supported_formats(client: httpx.AsyncClient) -> None:
    for fmt, mime in (("WEBP", "image/webp"), ("JPEG", "image/jpeg"), ("PNG", "image/png")):
        response = await gen(client, {"contents": [user("x", image_b64(fmt=fmt), mime=mime)]})
        assert response.status_code == 200, (mime, response.text)


async def test_bad_base64_and_undecodable_images(client: httpx.AsyncClient) -> None:
    response = await gen(client, {"contents": [user("x", "not base64!")]})
    assert response.status_code == 400
    assert "(TYPE_BYTES), " in error(response)["message"]
    assert "Base64 decoding failed" in error(response)["message"]
    urlsafe = next(d for d in (image_b64(colour=f"#{n:06x}") for n in range(0, 2**24, 9973))
                   if "+" in d or "/" in d).replace("+", "-").replace("/", "_")
    assert (await gen(client, {"contents": [user("x", urlsafe)]})).status_code == 400
    unpadded = image_b64().rstrip("=")  # this PNG's base64 ends in "=="
    assert (await gen(client, {"contents": [user("x", unpadded)]})).status_code == 400
    junk = base64.b64encode(b"definitely not an image").decode()
    assert_error(await gen(client, {"contents": [user("x", junk)]}), 400, rules.MSG_BAD_IMAGE,
                 "INVALID_ARGUMENT")


# ---- 6. imageConfig -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("model", "image_config", "ok"),
    [
        (PRO, {"imageSize": "2k"}, False),
        (PRO, {"imageSize": "1k"}, False),
        (PRO, {"imageSize": "512"}, False),
        (PRO, {"imageSize": "0.5K"}, False),
        (FLASH31, {"imageSize": "512"}, True),
        (FLASH31, {"aspectRatio": "1:8"}, True),
        (PRO, {"aspectRatio": "1:8"}, False),
        (LITE, {"aspectRatio": "4:1"}, False),
        (LITE, {"imageSize": "2K"}, False),
        (LITE, {"imageSize": "1K", "aspectRatio": "9:16"}, True),
        (PRO, {"aspectRatio": "16:10"}, False),
    ],
)
async def test_image_config(
    client: httpx.AsyncClient, model: str, image_config: Json, ok: bool
) -> None:
    body = {"contents": [user("x")], "generationConfig": {"imageConfig": image_config}}
    response = await gen(client, body, model)
    if ok:
        assert response.status_code == 200, response.text
    else:
        assert_error(response, 400, rules.MSG_INVALID_ARGUMENT, "INVALID_ARGUMENT")


# ---- 7. model turns and thought signatures ------------------------------------------------------
async def test_verbatim_replay_accepted(fake: FakeGemini, client: httpx.AsyncClient) -> None:
    body, content = await first_turn(client)
    response = await gen(client, second_turn(body, content))
    assert response.status_code == 200, response.text
    assert response.headers["x-fake-turns"] == "2"
    assert len(fake.issued) == 2
    shuffled = {"parts": [dict(reversed(p.items())) for p in content["parts"]], "role": "model"}
    assert (await gen(client, second_turn(body, shuffled))).status_code == 200


async def test_replay_in_snake_case_accepted(client: httpx.AsyncClient) -> None:
    body, content = await first_turn(client)
    snake = {"role": "model", "parts": [
        {rules.snake(k): ({rules.snake(a): b for a, b in v.items()} if isinstance(v, dict) else v)
         for k, v in part.items()} for part in content["parts"]]}
    assert "thought_signature" in snake["parts"][-1] and "inline_data" in snake["parts"][-1]
    assert (await gen(client, second_turn(body, snake))).status_code == 200


def _other_b64_char(c: str) -> str:
    return "A" if c != "A" else "B"


async def test_changed_signature_rejected(client: httpx.AsyncClient) -> None:
    body, content = await first_turn(client)
    for index in (2, 3):
        bad = copy.deepcopy(content)
        sig = bad["parts"][index]["thoughtSignature"]
        bad["parts"][index]["thoughtSignature"] = sig[:10] + _other_b64_char(sig[10]) + sig[11:]
        assert_error(await gen(client, second_turn(body, bad)), 400,
                     rules.MSG_BAD_SIG.format(i=1), "INVALID_ARGUMENT")
    bad = copy.deepcopy(content)  # a client that re-encoded the signature url-safe
    bad["parts"][3]["thoughtSignature"] = (
        bad["parts"][3]["thoughtSignature"].replace("+", "-").replace("/", "_"))
    assert error(await gen(client, second_turn(body, bad)))["message"] == rules.MSG_BAD_SIG.format(
        i=1)
    for dummy in ("skip_thought_signature_validator", "context_engineering_is_the_way_to_go"):
        bad["parts"][3]["thoughtSignature"] = dummy
        assert (await gen(client, second_turn(body, bad))).status_code == 400


async def test_changed_image_rejected(client: httpx.AsyncClient) -> None:
    body, content = await first_turn(client)
    bad = copy.deepcopy(content)
    bad["parts"][3]["inlineData"]["data"] = image_b64((128, 128), "JPEG", "green")
    assert_error(await gen(client, second_turn(body, bad)), 400, rules.MSG_BAD_SIG.format(i=1),
                 "INVALID_ARGUMENT")
    bad = copy.deepcopy(content)  # same image, re-encoded as PNG by a "helpful" client
    bad["parts"][3]["inlineData"] = {"mimeType": "image/png", "data": image_b64((128, 128))}
    assert error(await gen(client, second_turn(body, bad)))["message"] == rules.MSG_BAD_SIG.format(
        i=1)


async def test_missing_image_signature(client: httpx.AsyncClient) -> None:
    body, content = await first_turn(client)
    bad = copy.deepcopy(content)
    del bad["parts"][3]["thoughtSignature"]
    message = "Image part is missing a thought_signature in content position 2, part position 4."
    assert_error(await gen(client, second_turn(body, bad)), 400, message, "INVALID_ARGUMENT")


async def test_missing_text_signature(client: httpx.AsyncClient) -> None:
    body, content = await first_turn(client)
    bad = copy.deepcopy(content)
    del bad["parts"][2]["thoughtSignature"]
    assert_error(await gen(client, second_turn(body, bad)), 400,
                 "Text part is missing a thought_signature in content position 2, part position 3.",
                 "INVALID_ARGUMENT")


async def test_fake_model_turn_with_user_image(client: httpx.AsyncClient) -> None:
    fake_turn = {"role": "model", "parts": [{"inlineData": {"mimeType": "image/png",
                                                            "data": image_b64()}}]}
    body = {"contents": [user("x"), fake_turn, user("edit it")]}
    assert error(await gen(client, body))["message"] == (
        "Image part is missing a thought_signature in content position 2, part position 1.")


async def test_dropped_or_edited_parts_rejected(client: httpx.AsyncClient) -> None:
    body, content = await first_turn(client)
    dropped = {"role": "model", "parts": [p for p in content["parts"] if not p.get("thought")]}
    assert error(await gen(client, second_turn(body, dropped)))["message"] == (
        rules.MSG_BAD_SIG.format(i=1))
    edited = copy.deepcopy(content)
    edited["parts"][0]["text"] = "I thought differently"
    assert (await gen(client, second_turn(body, edited))).status_code == 400


async def test_signature_errors_report_later_content_index(client: httpx.AsyncClient) -> None:
    body, content = await first_turn(client)
    body2 = second_turn(body, content)
    content2 = (await gen(client, body2)).json()["candidates"][0]["content"]
    bad = copy.deepcopy(content2)
    bad["parts"][3]["thoughtSignature"] = content["parts"][3]["thoughtSignature"]
    contents = [*body2["contents"], bad, user("again")]
    assert error(await gen(client, {"contents": contents}))["message"] == (
        rules.MSG_BAD_SIG.format(i=3))
    del bad["parts"][3]["thoughtSignature"]
    assert error(await gen(client, {"contents": contents}))["message"].endswith(
        "content position 4, part position 4.")


async def test_recorded_answer_is_sent_verbatim_and_must_be_replayed_verbatim(
    fake: FakeGemini, client: httpx.AsyncClient
) -> None:
    recorded = recorded_body("g02")
    fake.script.append(Behaviour.recorded(recorded))
    body = {"contents": [user("a story")]}
    response = await gen(client, body)
    assert response.content == recorded and len(recorded) == 3_336_384  # the recording's size
    content = response.json()["candidates"][0]["content"]
    assert (await gen(client, second_turn(body, content))).status_code == 200
    bad = copy.deepcopy(content)
    sig = bad["parts"][1]["thoughtSignature"]
    bad["parts"][1]["thoughtSignature"] = sig[:10] + _other_b64_char(sig[10]) + sig[11:]
    assert error(await gen(client, second_turn(body, bad)))["message"] == rules.MSG_BAD_SIG.format(
        i=1)


async def test_recorded_unsigned_answer_cannot_be_replayed_to_gemini3(
    fake: FakeGemini, client: httpx.AsyncClient
) -> None:
    fake.script.append(Behaviour.recorded(recorded_body("g08")))  # a 2.5 answer: no signatures
    body = {"contents": [user("x")]}
    content = (await gen(client, body)).json()["candidates"][0]["content"]
    assert content["parts"][0] == {"text": "`"}
    assert error(await gen(client, second_turn(body, content)))["message"] == (
        "Text part is missing a thought_signature in content position 2, part position 1.")


# ---- 8. token limit and countTokens -------------------------------------------------------------
async def test_natural_token_limit(client: httpx.AsyncClient) -> None:
    response = await gen(client, {"contents": [user("x" * (4 * 65537))]})
    assert_error(response, 400, rules.MSG_TOO_MANY_TOKENS.format(count=65537, limit=65536),
                 "INVALID_ARGUMENT")


async def test_count_tokens(fake: FakeGemini, client: httpx.AsyncClient) -> None:
    contents = [user("x" * 40, image_b64())]
    url = f"/v1beta/models/{PRO}:countTokens"
    flat = (await client.post(url, json={"contents": contents})).json()
    assert flat == {"totalTokens": 570, "promptTokensDetails": [
        {"modality": "TEXT", "tokenCount": 10}, {"modality": "IMAGE", "tokenCount": 560}]}
    nested = {"generateContentRequest": {"model": f"models/{PRO}", "contents": contents,
                                         "generationConfig": {"imageConfig": {}}}}
    assert (await client.post(url, json=nested)).json() == flat
    flash = await client.post(f"/v1beta/models/{FLASH31}:countTokens", json={"contents": contents})
    assert flash.json()["totalTokens"] == 1130
    assert (await client.post(url, json={"content": contents})).status_code == 400
    assert fake.requests == []  # countTokens is not a generateContent request


# ---- Behaviours ---------------------------------------------------------------------------------
async def test_rate_limited(fake: FakeGemini, client: httpx.AsyncClient) -> None:
    fake.script.append(Behaviour.rate_limited())
    response = await gen(client, {"contents": [user("x")]})
    assert response.status_code == 429 and "retry-after" not in response.headers
    err = error(response)
    assert (err["code"], err["status"]) == (429, "RESOURCE_EXHAUSTED")
    details = {d["@type"].rsplit(".", 1)[-1]: d for d in err["details"]}
    assert details["RetryInfo"]["retryDelay"] == "0.2s"
    assert "PerDay" not in details["QuotaFailure"]["violations"][0]["quotaId"]
    assert "Please retry in 0.2s." in err["message"]
    assert (await gen(client, {"contents": [user("x")]})).status_code == 200
    assert [r.status for r in fake.requests] == [429, 200]


async def test_rate_limited_per_day(fake: FakeGemini, client: httpx.AsyncClient) -> None:
    fake.script.append(Behaviour.rate_limited("30s", per_day=True, header="7"))
    response = await gen(client, {"contents": [user("x")]})
    assert response.headers["retry-after"] == "7"
    details = {d["@type"].rsplit(".", 1)[-1]: d for d in error(response)["details"]}
    assert "PerDay" in details["QuotaFailure"]["violations"][0]["quotaId"]
    assert details["RetryInfo"]["retryDelay"] == "30s"


@pytest.mark.parametrize(
    ("status", "name"), [(500, "INTERNAL"), (503, "UNAVAILABLE"), (504, "DEADLINE_EXCEEDED")]
)
async def test_server_error(
    fake: FakeGemini, client: httpx.AsyncClient, status: int, name: str
) -> None:
    fake.script.append(Behaviour.server_error(status))
    err = error(await gen(client, {"contents": [user("x")]}))
    assert (err["code"], err["status"]) == (status, name) and err["message"]
    with pytest.raises(ValueError):
        Behaviour.server_error(502)


async def test_slow_then_normal(fake: FakeGemini, client: httpx.AsyncClient) -> None:
    fake.script.append(Behaviour.slow(0.3))
    started = asyncio.get_running_loop().time()
    assert (await gen(client, {"contents": [user("x")]})).status_code == 200
    assert asyncio.get_running_loop().time() - started >= 0.3


async def test_slow_client_timeout(fake: FakeGemini, client: httpx.AsyncClient) -> None:
    fake.script.append(Behaviour.slow(5))
    with pytest.raises(httpx.ReadTimeout):
        await gen(client, {"contents": [user("x")]}, timeout=0.2)
    for _ in range(50):
        if fake.requests[0].status:
            break
        await asyncio.sleep(0.02)
    assert fake.requests[0].status == 499


async def test_stop_wakes_slow_requests() -> None:
    fake = FakeGemini()
    await fake.start()
    fake.script.append(Behaviour.slow(30))
    async with httpx.AsyncClient(headers={"x-goog-api-key": "test-key"}) as c:
        task = asyncio.create_task(c.post(f"{fake.base_url}/v1beta/models/{PRO}:generateContent",
                                          json={"contents": [user("x")]}))
        await asyncio.sleep(0.2)
        started = asyncio.get_running_loop().time()
        await fake.stop()
        assert asyncio.get_running_loop().time() - started < 5
        await asyncio.gather(task, return_exceptions=True)


async def test_blocked_prompt(fake: FakeGemini, client: httpx.AsyncClient) -> None:
    fake.script.append(Behaviour.blocked_prompt())
    data = (await gen(client, {"contents": [user("x")]})).json()
    assert "candidates" not in data
    assert data["promptFeedback"] == {"blockReason": "PROHIBITED_CONTENT"}
    assert "usageMetadata" in data and fake.issued == []


async def test_finish_without_parts(fake: FakeGemini, client: httpx.AsyncClient) -> None:
    fake.script += [Behaviour.finish("IMAGE_SAFETY", "Blocked. Support code: 1."),
                    Behaviour.finish("NO_IMAGE")]
    candidate = (await gen(client, {"contents": [user("x")]})).json()["candidates"][0]
    assert candidate["content"] == {"role": "model"}
    assert (candidate["finishReason"], candidate["finishMessage"]) == (
        "IMAGE_SAFETY", "Blocked. Support code: 1.")
    candidate = (await gen(client, {"contents": [user("x")]})).json()["candidates"][0]
    assert candidate["finishReason"] == "NO_IMAGE" and "finishMessage" not in candidate


async def test_text_only(fake: FakeGemini, client: httpx.AsyncClient) -> None:
    fake.script.append(Behaviour.text_only("Which hat?"))
    body = {"contents": [user("x")]}
    content = (await gen(client, body)).json()["candidates"][0]["content"]
    [part] = content["parts"]
    assert part["text"] == "Which hat?" and part["thoughtSignature"]
    assert fake.issued == [content]
    assert (await gen(client, second_turn(body, content))).status_code == 200
    del content["parts"][0]["thoughtSignature"]
    assert error(await gen(client, second_turn(body, content)))["message"] == (
        "Text part is missing a thought_signature in content position 2, part position 1.")


async def test_too_large(fake: FakeGemini, client: httpx.AsyncClient) -> None:
    fake.script.append(Behaviour.too_large())
    assert_error(await gen(client, {"contents": [user("x")]}), 400,
                 "The input token count (1050890) exceeds the maximum number of tokens allowed "
                 "(65536).", "INVALID_ARGUMENT")


async def test_raw(fake: FakeGemini, client: httpx.AsyncClient) -> None:
    fake.script.append(Behaviour.raw(502, b"<html>Bad Gateway</html>", "text/html"))
    fake.script.append(Behaviour.raw(200, b'{"candidates": [{"con'))
    response = await gen(client, {"contents": [user("x")]})
    assert (response.status_code, response.content) == (502, b"<html>Bad Gateway</html>")
    assert response.headers["content-type"].startswith("text/html")
    response = await gen(client, {"contents": [user("x")]})
    assert (response.status_code, response.content) == (200, b'{"candidates": [{"con')
    assert [r.status for r in fake.requests] == [502, 200]


async def test_empty_candidates(fake: FakeGemini, client: httpx.AsyncClient) -> None:
    fake.script.append(Behaviour.empty_candidates())
    data = (await gen(client, {"contents": [user("x")]})).json()
    assert data["candidates"] == [] and "promptTokenCount" in data["usageMetadata"]


async def test_invalid_request_does_not_consume_script(
    fake: FakeGemini, client: httpx.AsyncClient
) -> None:
    fake.script.append(Behaviour.server_error(503))
    assert (await gen(client, {"contents": []})).status_code == 400
    assert (await gen(client, {"contents": [user("x")]})).status_code == 503
    assert (await gen(client, {"contents": [user("x")]})).status_code == 200
    assert [r.status for r in fake.requests] == [400, 503, 200]


# ---- Files API (gemini_files.py) ----------------------------------------------------------------
def png_bytes(size: tuple[int, int] = (40, 20), colour: str = "blue") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "PNG")
    return out.getvalue()


async def start_upload(client: httpx.AsyncClient, length: int, mime: str = "image/png",
                       **headers: str) -> httpx.Response:
    return await client.post("/upload/v1beta/files", json={"file": {"display_name": "cat"}}, headers={
        "X-Goog-Upload-Protocol": "resumable", "X-Goog-Upload-Command": "start",
        "X-Goog-Upload-Header-Content-Length": str(length),
        "X-Goog-Upload-Header-Content-Type": mime, **headers})


async def upload_file(client: httpx.AsyncClient, data: bytes, mime: str = "image/png") -> Json:
    start = await start_upload(client, len(data), mime)
    assert start.status_code == 200, start.text
    done = await client.post(start.headers["x-goog-upload-url"], content=data, headers={
        "X-Goog-Upload-Command": "upload, finalize", "X-Goog-Upload-Offset": "0"})
    assert done.status_code == 200, done.text
    assert done.headers["x-goog-upload-status"] == "final"
    return done.json()["file"]


def file_part(resource: Json, mime: str | None = None) -> Json:
    return {"fileData": {"mimeType": mime or resource["mimeType"], "fileUri": resource["uri"]}}


async def test_files_start_upload_get_delete(fake: FakeGemini, client: httpx.AsyncClient) -> None:
    data = png_bytes()
    start = await start_upload(client, len(data))
    assert start.headers["x-goog-upload-status"] == "active"
    url = httpx.URL(start.headers["x-goog-upload-url"])
    assert (url.host, url.port, url.path) == ("127.0.0.1", httpx.URL(fake.base_url).port,
                                              "/upload/v1beta/files")
    assert "upload_id" in url.params and "key" not in url.params
    done = await client.post(url, content=data, headers={
        "X-Goog-Upload-Command": "upload, finalize", "X-Goog-Upload-Offset": "0"})
    resource = done.json()["file"]
    file_id = resource["name"].removeprefix("files/")
    assert resource["uri"] == f"{fake.base_url}/v1beta/files/{file_id}"
    assert (resource["mimeType"], resource["sizeBytes"], resource["state"], resource["displayName"]) \
        == ("image/png", str(len(data)), "ACTIVE", "cat")
    created = datetime.fromisoformat(resource["createTime"])
    assert resource["expirationTime"].endswith("Z") and resource["createTime"].endswith("Z")
    assert datetime.fromisoformat(resource["expirationTime"]) - created == timedelta(hours=48)
    assert resource["sha256Hash"] and fake.uploads == 1 and fake.files[file_id].data == data
    assert (await client.get(f"/v1beta/files/{file_id}")).json() == resource
    assert (await client.delete(f"/v1beta/files/{file_id}")).status_code == 200
    gone = await client.get(f"/v1beta/files/{file_id}")
    assert_error(gone, 403, rules.MSG_FILE_MISSING.format(id=file_id), "PERMISSION_DENIED")
    assert_error(await client.get("/v1beta/files/nope"), 403,
                 rules.MSG_FILE_MISSING.format(id="nope"), "PERMISSION_DENIED")
    assert (await client.delete(f"/v1beta/files/{file_id}")).status_code == 403
    assert [(r.method, r.status) for r in fake.files_api.requests] == [
        ("POST", 200), ("POST", 200), ("GET", 200), ("DELETE", 200), ("GET", 403), ("GET", 403),
        ("DELETE", 403)]


async def test_files_chunked_upload_and_offsets(fake: FakeGemini, client: httpx.AsyncClient) -> None:
    data = png_bytes()
    url = (await start_upload(client, len(data))).headers["x-goog-upload-url"]
    first = await client.post(url, content=data[:10], headers={
        "X-Goog-Upload-Command": "upload", "X-Goog-Upload-Offset": "0"})
    assert first.headers["x-goog-upload-status"] == "active" and fake.uploads == 0
    wrong = await client.post(url, content=data[10:], headers={
        "X-Goog-Upload-Command": "upload, finalize", "X-Goog-Upload-Offset": "0"})
    assert wrong.status_code == 400 and "Offset" in error(wrong)["message"]
    done = await client.post(url, content=data[10:], headers={
        "X-Goog-Upload-Command": "upload, finalize", "X-Goog-Upload-Offset": "10"})
    assert done.status_code == 200 and fake.uploads == 1
    assert next(iter(fake.files.values())).data == data


async def test_files_bad_length_mime_and_protocol(fake: FakeGemini, client: httpx.AsyncClient) -> None:
    data = png_bytes()
    url = (await start_upload(client, len(data) + 1)).headers["x-goog-upload-url"]
    short = await client.post(url, content=data, headers={
        "X-Goog-Upload-Command": "upload, finalize", "X-Goog-Upload-Offset": "0"})
    assert short.status_code == 400 and "were declared" in error(short)["message"]
    assert fake.uploads == 0 and fake.files == {}
    gif = await start_upload(client, 10, "image/gif")
    assert_error(gif, 400, "Unsupported MIME type: image/gif", "INVALID_ARGUMENT")
    assert (await start_upload(client, 10, **{"X-Goog-Upload-Protocol": "multipart"})).status_code \
        == 400
    no_length = await start_upload(client, 10, **{"X-Goog-Upload-Header-Content-Length": "ten"})
    assert no_length.status_code == 400
    unknown = await client.post("/upload/v1beta/files?upload_id=nope", content=b"x", headers={
        "X-Goog-Upload-Command": "upload, finalize", "X-Goog-Upload-Offset": "0"})
    assert unknown.status_code == 404


async def test_files_wrong_or_missing_key(fake: FakeGemini, client: httpx.AsyncClient) -> None:
    response = await start_upload(client, 10, **{"x-goog-api-key": "nope"})
    assert_error(response, 400, rules.MSG_BAD_KEY, "INVALID_ARGUMENT")
    resource = await upload_file(client, png_bytes())
    async with httpx.AsyncClient(base_url=fake.base_url) as bare:
        response = await bare.get(f"/v1beta/{resource['name']}")
        assert_error(response, 403, rules.MSG_NO_KEY, "PERMISSION_DENIED")
        assert (await bare.delete(f"/v1beta/{resource['name']}")).status_code == 403
    assert fake.files_api.requests[0].headers["x-goog-api-key"] == "nope"


async def test_files_processing_then_active_or_failed(fake: FakeGemini, client: httpx.AsyncClient) -> None:
    fake.files_api.processing_polls = 2
    resource = await upload_file(client, png_bytes())
    assert resource["state"] == "PROCESSING"
    states = [(await client.get(f"/v1beta/{resource['name']}")).json()["state"] for _ in range(4)]
    assert states == ["PROCESSING", "PROCESSING", "ACTIVE", "ACTIVE"]
    fake.files_api.processing_polls, fake.files_api.processing_result = 1, "FAILED"
    failed = await upload_file(client, png_bytes(colour="red"))
    states = [(await client.get(f"/v1beta/{failed['name']}")).json()["state"] for _ in range(2)]
    assert states == ["PROCESSING", "FAILED"]


async def test_files_fail_uploads_knob(fake: FakeGemini, client: httpx.AsyncClient) -> None:
    fake.files_api.fail_uploads = 503
    response = await start_upload(client, 10)
    assert response.status_code == 503 and error(response)["status"] == "UNAVAILABLE"
    assert "x-goog-upload-url" not in response.headers and fake.uploads == 0


async def test_generate_with_file_data(fake: FakeGemini, client: httpx.AsyncClient) -> None:
    resource = await upload_file(client, png_bytes((64, 16)))
    body = {"contents": [{"role": "user", "parts": [{"text": "a hat"}, file_part(resource)]}]}
    response = await gen(client, body, FLASH31)
    assert response.status_code == 200, response.text
    assert decode(response.json()["candidates"][0]["content"]["parts"][-1]).size == (256, 64)  # 4:1
    snake = {"contents": [{"role": "user", "parts": [{"text": "a hat"}, {"file_data": {
        "mime_type": "image/png", "file_uri": resource["uri"]}}]}]}
    assert (await gen(client, snake, FLASH31)).status_code == 200


async def test_generate_rejects_missing_expired_or_mismatched_files(
    fake: FakeGemini, client: httpx.AsyncClient
) -> None:
    resource = await upload_file(client, png_bytes())
    file_id = resource["name"].removeprefix("files/")

    def body(part: Json) -> Json:
        return {"contents": [{"role": "user", "parts": [{"text": "x"}, part]}]}

    wrong_mime = await gen(client, body(file_part(resource, "image/jpeg")))
    assert wrong_mime.status_code == 400 and "does not match" in error(wrong_mime)["message"]
    elsewhere = file_part({"mimeType": "image/png",
                           "uri": f"https://generativelanguage.googleapis.com/v1beta/{resource['name']}"})
    assert_error(await gen(client, body(elsewhere)), 403,
                 rules.MSG_FILE_MISSING.format(id=file_id), "PERMISSION_DENIED")
    fake.files_api.advance(timedelta(hours=47, minutes=59))
    assert (await gen(client, body(file_part(resource)))).status_code == 200
    fake.files_api.advance(timedelta(minutes=1))
    for response in (await gen(client, body(file_part(resource))),
                     await client.get(f"/v1beta/{resource['name']}")):
        assert_error(response, 403, rules.MSG_FILE_MISSING.format(id=file_id), "PERMISSION_DENIED")
    fresh = await upload_file(client, png_bytes(colour="green"))
    assert (await gen(client, body(file_part(fresh)))).status_code == 200
    fake.expire_files(fresh["name"])
    assert (await gen(client, body(file_part(fresh)))).status_code == 403


async def test_generate_rejects_file_not_active(fake: FakeGemini, client: httpx.AsyncClient) -> None:
    fake.files_api.processing_polls = 1
    resource = await upload_file(client, png_bytes())
    response = await gen(client, {"contents": [{"role": "user", "parts": [file_part(resource)]}]})
    file_id = resource["name"].removeprefix("files/")
    assert_error(response, 400, rules.MSG_FILE_NOT_ACTIVE.format(id=file_id), "FAILED_PRECONDITION")


async def test_undecodable_uploaded_image(fake: FakeGemini, client: httpx.AsyncClient) -> None:
    resource = await upload_file(client, b"not a png at all")
    response = await gen(client, {"contents": [{"role": "user", "parts": [file_part(resource)]}]})
    assert_error(response, 400, rules.MSG_BAD_IMAGE, "INVALID_ARGUMENT")


async def test_count_tokens_with_file_data(fake: FakeGemini, client: httpx.AsyncClient) -> None:
    resource = await upload_file(client, png_bytes())
    contents = [{"role": "user", "parts": [{"text": "x" * 40}, file_part(resource)]}]
    url = f"/v1beta/models/{PRO}:countTokens"
    nested = {"generateContentRequest": {"model": f"models/{PRO}", "contents": contents}}
    assert (await client.post(url, json=nested)).json()["totalTokens"] == 570
    assert fake.count_requests[-1].body == nested and fake.count_requests[-1].status == 200
    no_model = {"generateContentRequest": {"contents": contents}}
    assert (await client.post(url, json=no_model)).status_code == 400
    fake.expire_files()
    file_id = resource["name"].removeprefix("files/")
    assert_error(await client.post(url, json=nested), 403,
                 rules.MSG_FILE_MISSING.format(id=file_id), "PERMISSION_DENIED")
