"""Odd ids in the playground's addresses and forms: an id that names nothing is a 404, a value
that is not a number is a 400, each with one sentence, never a 500."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adapters.playground import access
from adapters.playground.ids import MAX_ID, parse_id
from bot.domain import SessionKey
from tests.playground_harness import JSON, Harness, png, running

TOO_BIG = "99999999999999999999"  # 20 digits: past SQLite's signed 64-bit INTEGER
HUGE = "9" * 5000  # past what int() converts from text at all
ODD = ("²", "٣", "3²", "0x1", "-1", "1e3", "")  # a superscript, Arabic-Indic digits, ...


@pytest.fixture
async def h(data_dir: Path) -> AsyncIterator[Harness]:
    async with running(data_dir) as harness:
        yield harness


def test_parse_id_takes_ascii_digits_within_sqlite_integer() -> None:
    assert parse_id("42") == 42 and parse_id(" 007 ") == 7 and parse_id(str(MAX_ID)) == MAX_ID
    assert parse_id(str(MAX_ID + 1)) is None and parse_id(TOO_BIG) is None and parse_id(HUGE) is None
    assert parse_id("0" * 5000 + "5") == 5
    for text in ODD:
        with pytest.raises(ValueError):
            parse_id(text)


async def _one_sentence(h: Harness, method: str, path: str, status: int, **kw: object) -> str:
    r = await h.client.request(method, path, headers=JSON, allow_redirects=False, **kw)  # type: ignore[arg-type]
    body = await r.json()
    assert r.status == status, (path[:80], r.status, body)
    sentence = body["error"]
    assert sentence.endswith(".") and "\n" not in sentence and len(sentence) < 200, sentence
    return str(sentence)


async def test_an_id_that_names_nothing_is_404_on_every_route(h: Harness) -> None:
    sid = await h.start("a red poster", [("ref.png", png())])
    gets = ["/s/{s}", "/s/{s}/fragment", "/s/{s}/state", "/s/{s}/gallery", "/s/{s}/export.zip",
            "/s/{s}/v/1/image", "/s/{s}/v/1/thumb/sm", "/s/{s}/turns/1/refs/0",
            "/s/{sid}/v/{n}/image", "/s/{sid}/v/{n}/thumb/md", "/s/{sid}/turns/{n}/refs/0",
            "/s/{sid}/turns/1/refs/{n}"]
    posts = ["/s/{s}/messages", "/s/{s}/control", "/s/{s}/settings"]
    for bad in (TOO_BIG, HUGE, str(MAX_ID)):
        for template in gets:
            await _one_sentence(h, "GET", template.format(s=bad, sid=sid, n=bad), 404)
        for template in posts:
            await _one_sentence(h, "POST", template.format(s=bad), 404,
                                data={"instruction": "x", "control": "undo", "version": "1"})
    # Digits of other scripts are not an address at all (before, `\d` took them).
    for path in ("/s/٣/gallery", "/s/²", "/s/1/v/²/image", "/s/1/turns/١/refs/0"):
        await _one_sentence(h, "GET", path, 404)
    # The session itself is intact and still answers.
    assert (await h.client.get(f"/s/{sid}/gallery")).status == 200


async def test_malformed_numbers_in_forms_and_queries_are_400(h: Harness) -> None:
    sid = await h.start("a red poster")
    for odd in ODD[:-1]:
        said = await _one_sentence(h, "POST", f"/s/{sid}/control", 400,
                                   data={"control": "approve", "version": odd})
        assert said == "That is not a version number such as 3 or v3."
        said = await _one_sentence(h, "GET", f"/s/{sid}/gallery?v={odd}&v=1", 400)
        assert said == "That is not a version number such as 3 or v3."
        said = await _one_sentence(h, "GET", f"/sessions/fragment?current={odd}", 400)
        assert said == "The current session must be a number such as 12."
    # A version number too large to exist reads as any version the session lacks.
    for big in (TOO_BIG, HUGE):
        said = await _one_sentence(h, "POST", f"/s/{sid}/control", 400,
                                   data={"control": "approve", "version": big})
        assert said.startswith("This session has no v") and said.endswith("(versions: v1).")
        page = await h.text(f"/s/{sid}/gallery?v=1&v={big}")
        assert "This session has no v" in page
        assert (await h.client.get(f"/sessions/fragment?current={big}")).status == 200
    assert (await h.app.store.load_state(sid)).approvals == []


async def test_odd_expiry_in_a_public_link_is_refused_not_an_error(data_dir: Path) -> None:
    async with running(data_dir, THREADEDIT_PUBLIC_URL="https://edit.example.com",
                       THREADEDIT_LINK_SECRET="s" * 32) as h:
        turn = await h.app.service.submit_edit(SessionKey("slack", "T1", "C1", "1.0"), "U1", "a mug")
        await h.app.service.run_turn(turn.id)
        sid = turn.session_id
        for exp in ("²²²²", "١٢٣", TOO_BIG, "9" * 3000):  # with a HUGE path, within the 8 KB line
            for path in (f"/s/{sid}/gallery", f"/s/{TOO_BIG}/gallery", f"/s/{HUGE}/v/1/image"):
                r = await h.client.get(f"{path}?exp={exp}&sig=abc")
                assert (r.status, await r.text()) == (403, access.LINK_INVALID + "\n")
