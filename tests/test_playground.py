"""The playground over HTTP: the thread view, uploads, the gallery, thumbnails and the command.
A real SQLite data directory and the offline engine; turns are awaited through the pipeline (or an
engine gate), never with sleeps."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import signal
import socket
import sys
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from PIL import Image

from adapters.playground import access
from adapters.playground.core import Limits
from bot.app import open_app
from bot.config import load_settings
from bot.domain import SessionKey, Turn
from tests.playground_harness import HTML, JSON, GatedEngine, Harness, png, running, tree

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
async def h(data_dir: Path) -> AsyncIterator[Harness]:
    async with running(data_dir) as harness:
        yield harness


async def test_a_session_starts_with_a_reference_and_shows_v1(h: Harness) -> None:
    home = await h.text("/")
    assert 'id="composer"' in home and "Offline engine" in home and "No sessions yet." in home
    assert "There is nothing at this address." in await h.text("/nowhere", 404)
    assert "does not take this kind of request" in await h.text("/messages", 405)
    r = await h.message("add a gold border", [("logo.png", png())])
    answer = await r.json()
    assert r.status == 200 and answer["url"] == f"/s/{answer['session']}"
    await h.pg.pipeline.join()
    sid = answer["session"]
    session = await h.app.store.get_session(sid)
    assert (session.key.platform, session.key.workspace, session.key.channel) == ("playground", "local",
                                                                                 "local")
    page = await h.text(f"/s/{sid}")
    assert 'class="version-card is-head" id="v1" data-version="1"' in page
    assert "add a gold border · asked by ana" in page and 'data-control="approve"' in page
    ref = await h.client.get(f"/s/{sid}/turns/{answer['turn']}/refs/0")
    assert ref.status == 200 and ref.headers["Content-Type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(await ref.read())).size) <= 320
    assert (await h.client.get(f"/s/{sid}/turns/{answer['turn']}/refs/1")).status == 404
    state = await (await h.client.get(f"/s/{sid}/state")).json()
    fragment = await h.text(f"/s/{sid}/fragment")
    assert state["busy"] is False and f'data-stamp="{state["stamp"]}"' in fragment
    assert "add a gold border" in await h.text("/sessions/fragment")
    await h.control(sid, "approve", 1)
    assert (await (await h.client.get(f"/s/{sid}/state")).json())["stamp"] != state["stamp"]


async def test_progress_and_queue_show_while_a_turn_runs(data_dir: Path) -> None:
    engine = GatedEngine()
    async with running(data_dir, engine=engine) as h:
        r = await h.message("a lighthouse at dusk in navy and orange", author="ben")
        sid = (await r.json())["session"]
        await engine.entered.wait()  # the turn is running now, held inside the engine
        second = await h.message("make it sepia", session=sid)
        assert second.status == 200
        fragment = await h.text(f"/s/{sid}/fragment")
        assert "Working on v1 · Nano Banana 2 · auto aspect · 1K · " in fragment
        assert re.search(r'class="progress" data-since="\d+\.\d+"', fragment)
        assert "Queued behind 1 instruction in this thread." in fragment
        state = await (await h.client.get(f"/s/{sid}/state")).json()
        assert state["busy"] is True and state["poll_ms"] == Limits().poll_busy_ms
        engine.release.set()
        await h.pg.pipeline.join()
        fragment = await h.text(f"/s/{sid}/fragment")
        assert 'data-version="2"' in fragment and "Working on" not in fragment
        assert (await (await h.client.get(f"/s/{sid}/state")).json())["poll_ms"] == Limits().poll_idle_ms


async def test_undo_retry_4k_approve_withdraw_and_settings(h: Harness) -> None:
    sid = await h.start("a lighthouse at dusk in navy and orange")
    assert (await h.message("make it sepia", session=sid)).status == 200
    await h.pg.pipeline.join()

    async def ok(control: str, version: int | None = None, author: str = "ana") -> str | None:
        r = await h.control(sid, control, version, author)
        assert r.status == 200, await r.text()
        return (await r.json())["notice"]

    assert await ok("undo", 2) == "Back to v1."
    r = await h.control(sid, "undo", 1)
    assert r.status == 400
    assert (await r.json())["error"] == "v1 is the first version; there is nothing before it to go back to."
    assert await ok("undo", 2) == "Back to v2; the next instruction edits it."  # an older one: revert
    assert await ok("retry", 2) is None
    assert await ok("4k", 2) is None
    view = await h.app.service.history(sid)
    by = {v.version: v for v in view.versions}
    assert (by[3].parent, by[3].kind, by[4].parent, by[4].image_size, view.head) == (1, "retry", 2, "4K", 4)
    assert max(Image.open(by[4].image_path).size) == 4096
    assert await ok("approve", 2, "ben") == "v2 approved by ben."
    assert await ok("approve", 2, "ben") == "v2 is already approved by ben."
    assert (await h.app.service.history(sid)).versions[1].approved_by == ["ben"]
    assert await ok("withdraw", 2, "ben") == "ben withdrew the approval of v2."
    thread = await h.text(f"/s/{sid}/fragment")
    for said in ("Back to v1.", "v2 approved by ben.", "ben withdrew the approval of v2.", "v4 (from v2)"):
        assert said in thread

    r = await h.client.post(f"/s/{sid}/settings", data={"aspect": "16:9", "size": "2K", "model": "",
                                                         "author": "ana"}, headers=JSON)
    assert (await r.json())["notice"] == "Settings: Nano Banana 2 · 16:9 · 2K"
    session = await h.app.store.get_session(sid)
    assert (session.aspect_ratio, session.image_size) == ("16:9", "2K")
    r = await h.client.post(f"/s/{sid}/settings", data={"aspect": "7:5"}, headers=JSON)
    assert r.status == 400 and "does not take aspect ratio 7:5" in (await r.json())["error"]
    assert "Settings: Nano Banana 2 · 16:9 · 2K" in await h.text(f"/s/{sid}/fragment")

    # Without the page's script: plain form posts answer with a redirect back to the thread.
    r = await h.control(sid, "approve", 1, headers=HTML)
    assert r.status == 303 and r.headers["Location"] == f"/s/{sid}#v1"
    r = await h.control(sid, "explode", 1)
    assert r.status == 400 and (await r.json())["error"] == "That is not a control this page knows."


async def test_bad_uploads_are_refused_with_a_sentence_and_change_nothing(data_dir: Path) -> None:
    async with running(data_dir, limits=Limits(max_body_bytes=1024 * 1024)) as h:
        sid = await h.start("a lighthouse at dusk in navy and orange")
        big = Image.effect_noise((400, 400), 60).convert("RGB")
        buf = io.BytesIO()
        big.save(buf, "PNG")
        cases = [
            ([("scan.png", b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n%%EOF")], 400,
             '"scan.png" looks like a PDF, not an image; please send a PNG or JPEG.'),
            ([("cut.png", buf.getvalue()[: len(buf.getvalue()) * 2 // 3])], 400,
             '"cut.png" seems to be cut off or damaged; please send it again.'),
            ([("huge.png", os.urandom(2 * 1024 * 1024))], 413, access.too_large(1024 * 1024)),
            ([(f"r{i}.png", png()) for i in range(11)], 400, "Attach at most 10 images to one message."),
        ]
        for files, status, sentence in cases:
            for target in (sid, None):
                r = await h.message("make it sepia", files, session=target)
                assert (r.status, (await r.json())["error"]) == (status, sentence)
        r = await h.message("  ", session=sid)
        assert (await r.json())["error"] == "Say what to make or change."
        r = await h.message("make it sepia", cases[0][0], session=sid, headers=HTML)
        assert r.status == 400 and "&#34;scan.png&#34; looks like a PDF" in await r.text()
        state = await h.app.store.load_state(sid)
        assert len(state.turns) == 1 and state.head is not None and state.head.version == 1
        assert len(await h.app.store.list_sessions()) == 1
        assert 'data-version="1"' in await h.text(f"/s/{sid}")


async def test_gallery_tree_compare_images_and_zip(h: Harness) -> None:
    sid = await h.start("a lighthouse at dusk in navy and orange")
    await h.message("make it sepia", session=sid)
    await h.pg.pipeline.join()
    await h.control(sid, "undo", 2)
    await h.message("black and white", session=sid)
    await h.pg.pipeline.join()
    await h.control(sid, "approve", 2, author="Dana <AD>")

    page = await h.text(f"/s/{sid}/gallery")
    # v3 continues the line to the head; v2 is a branch from v1.
    assert tree(page).nodes == {1: ("", False, None), 3: ("1", True, None), 2: ("1", False, "1")}
    assert "Approved</span> by <strong>Dana &lt;AD&gt;</strong>" in page
    assert "<AD>" not in page

    compared = tree(await h.text(f"/s/{sid}/gallery?v=3&v=1"))
    assert compared.compare == ["3", "1"]
    assert "Pick exactly two versions to compare." in await h.text(f"/s/{sid}/gallery?v=1")
    assert "This session has no v9 (versions: v1, v2, v3)." in await h.text(f"/s/{sid}/gallery?v=1&v=9")

    view = await h.app.service.history(sid)
    r = await h.client.get(f"/s/{sid}/v/2/image")
    assert await r.read() == view.versions[1].image_path.read_bytes()
    assert r.headers["Content-Type"] == "image/jpeg" and "immutable" in r.headers["Cache-Control"]
    r = await h.client.get(f"/s/{sid}/v/9/image", headers=JSON)
    assert (r.status, (await r.json())["error"]) == (404, "This session has no v9 (versions: v1, v2, v3).")
    r = await h.client.get("/s/99/gallery", headers=JSON)
    assert (r.status, (await r.json())["error"]) == (404, "There is no session 99.")

    r = await h.client.get(f"/s/{sid}/export.zip")
    assert r.headers["Content-Type"] == "application/zip"
    assert r.headers["Content-Disposition"] == f'attachment; filename="threadedit-session-{sid}.zip"'
    with zipfile.ZipFile(io.BytesIO(await r.read())) as z:
        folder = f"threadedit-session-{sid}"
        assert sorted(z.namelist()) == [f"{folder}/{n}" for n in
                                        ("manifest.json", "v1.jpg", "v2.jpg", "v3.jpg")]
        for v in view.versions:
            assert z.read(f"{folder}/v{v.version}.jpg") == v.image_path.read_bytes()
        manifest = json.loads(z.read(f"{folder}/manifest.json"))
    assert manifest["head"] == 3 and manifest["versions"][1]["approvals"][0]["by"] == "Dana <AD>"
    assert [v["parent"] for v in manifest["versions"]] == [None, 1, 1]


async def test_thumbnails_are_made_once_and_cached(h: Harness, data_dir: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    sid = await h.start("a lighthouse at dusk in navy and orange")
    from adapters.playground import thumbs

    made: list[int] = []
    real = thumbs.images.thumbnail

    def counting(data: bytes, max_side: int = 320) -> bytes:
        made.append(max_side)
        return real(data, max_side)

    monkeypatch.setattr(thumbs.images, "thumbnail", counting)
    key = (await h.app.store.load_state(sid)).versions[0].image_blob or ""
    digest = key.split(".")[0]
    cached = data_dir / "thumbs" / digest[:2] / f"{digest}-320.jpg"
    r = await h.client.get(f"/s/{sid}/v/1/thumb/sm")
    first = await r.read()
    assert r.status == 200 and r.headers["Cache-Control"] == "private, max-age=31536000, immutable"
    assert cached.read_bytes() == first and made == [320]
    stamp = cached.stat().st_mtime_ns
    again = await h.client.get(f"/s/{sid}/v/1/thumb/sm")
    assert await again.read() == first and made == [320] and cached.stat().st_mtime_ns == stamp
    # Concurrent first requests for a new size share one generation.
    answers = await asyncio.gather(*(h.client.get(f"/s/{sid}/v/1/thumb/md") for _ in range(4)))
    assert {a.status for a in answers} == {200} and made == [320, 1024]
    assert (await h.client.get(f"/s/{sid}/v/1/thumb/xl")).status == 404


async def test_only_the_playgrounds_unfinished_turns_are_resumed(data_dir: Path) -> None:
    settings = load_settings(THREADEDIT_DATA_DIR=str(data_dir), THREADEDIT_ENGINE="local")
    key = SessionKey("playground", "local", "local", "a")
    async with open_app(settings) as app:
        mine = await app.service.submit_edit(key, "ana", "a lighthouse at dusk in navy and orange")
        theirs = await app.service.submit_edit(SessionKey("slack", "T", "C", "1.0"), "U1", "a red poster")
    async with running(data_dir) as h:  # takes the queued turn at start, as `threadedit playground` does
        assert (await _finished(h, mine.id)).version == 1
        assert (await h.app.store.get_turn(theirs.id)).state.value == "queued"
    async with open_app(settings) as app:  # recorded while no playground runs
        old = await app.service.submit_edit(key, "ana", "make it sepia")
    async with running(data_dir, resume_max_age=0) as h:  # as if that turn were over an hour old
        stale = await _finished(h, old.id)
        assert stale.state.value == "failed" and stale.reason == "interrupted"
        assert (await h.app.store.get_turn(theirs.id)).state.value == "queued"
        assert "was interrupted by a restart, or waited in the queue, for too long" in await h.text(
            f"/s/{old.session_id}/fragment")


async def _finished(h: Harness, turn_id: int) -> Turn:
    for _ in range(300):
        turn = await h.app.store.get_turn(turn_id)
        if turn.state.value not in ("queued", "running"):
            return turn
        await asyncio.sleep(0.1)
    raise AssertionError(f"turn {turn_id} did not finish within 30 s")


async def test_the_playground_command_serves_until_sigint(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEMINI_", "THREADEDIT_"))}
    env.update(PYTHONPATH=str(ROOT), THREADEDIT_DATA_DIR=str(tmp_path / "data"))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "threadedit", "playground", "--port", "0", cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
    found = re.fullmatch(r"threadedit playground: (http://127\.0\.0\.1:(\d+))\n", line)
    assert found, line
    async with aiohttp.ClientSession() as http, http.get(found.group(1) + "/") as r:
        assert r.status == 200 and "Start an edit session" in await r.text()
    proc.send_signal(signal.SIGINT)
    assert await asyncio.wait_for(proc.wait(), 30) == 0
    assert "offline local engine" in (await proc.stderr.read()).decode()

    with socket.socket() as taken:  # a port in use is a sentence, not a traceback
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        busy = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "threadedit", "playground", "--port", port, cwd=tmp_path, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(busy.communicate(), 30)
    assert busy.returncode == 2 and f"Cannot listen on 127.0.0.1:{port}" in err.decode()
    assert b"Traceback" not in err


async def test_a_caption_shows_typed_markup_as_words(h: Harness) -> None:
    r = await h.message("add a gold border <script>x</script> *bold* _x_ `code` <@U123>",
                        author="Eve <b>")
    await h.pg.pipeline.join()
    page = await h.text(f"/s/{(await r.json())['session']}")
    # The version label is the page's own bold; what was typed is shown exactly, escaped.
    assert '<strong class="vlabel">v1</strong>' in page
    assert ('<span class="caption">add a gold border &lt;script&gt;x&lt;/script&gt; *bold* _x_ '
            '`code` &lt;@U123&gt; · asked by Eve &lt;b&gt;</span>') in page
    assert "<script>x" not in page and "<b>" not in page
