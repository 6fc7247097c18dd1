"""Who may reach the playground: signed, expiring gallery links in public mode, refusals of other
sites and host names, other platforms' sessions read-only, and the link signing itself."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest

from adapters.playground import access
from bot import links
from bot.config import ConfigError, load_settings
from bot.domain import SessionKey
from tests.playground_harness import JSON, Harness, running, tree

PUBLIC = "https://edit.example.com"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
async def h(data_dir: Path) -> AsyncIterator[Harness]:
    async with running(data_dir) as harness:
        yield harness


async def test_public_mode_serves_only_signed_gallery_links(data_dir: Path) -> None:
    async with running(data_dir, THREADEDIT_PUBLIC_URL=PUBLIC + "/",
                       THREADEDIT_LINK_TTL_HOURS="2") as h:
        svc = h.app.service
        turns = [await svc.submit_edit(SessionKey("slack", "T1", "C1", ts), "U1", "a red poster")
                 for ts in ("1.0", "2.0")]
        for turn in turns:
            await svc.run_turn(turn.id)
        sid, other = turns[0].session_id, turns[1].session_id
        link = links.gallery_link(h.app.settings, sid)
        assert link is not None and link.startswith(f"{PUBLIC}/s/{sid}/gallery?exp=")
        parts = urlsplit(link)
        signed = f"{parts.path}?{parts.query}"
        page = await h.text(signed)
        assert "Open thread" not in page and "this link works until" in page
        assert (await h.client.get(signed)).headers["X-Robots-Tag"] == "noindex, nofollow"
        assert re.search(r'name="sig" value="[\w-]+"', page)  # the compare form keeps the link
        assert "a red poster" in page
        sources = re.findall(r'(?:src|href)="(/s/[^"]+)"', page)
        assert sources and all("exp=" in s and "sig=" in s for s in sources)
        for src in sources:
            r = await h.client.get(src.replace("&amp;", "&"))
            assert r.status == 200, src
        assert (await h.client.get(f"{signed}&v=1&v=1")).status == 200

        secret = links.load_link_secret(h.app.settings)
        expired = links.sign_gallery_link(PUBLIC, sid, secret, 3600, time.time() - 7200)
        tampered = signed[:-3] + ("AAA" if not signed.endswith("AAA") else "BBB")
        exp = int(parts.query.split("exp=")[1].split("&")[0])
        later = signed.replace(f"exp={exp}", f"exp={exp + 60}")
        refusals = {
            f"/s/{sid}/gallery": access.NOT_PUBLIC,
            urlsplit(expired).path + "?" + urlsplit(expired).query:
                "This gallery link has expired (links last 2 hours); ask for a new one in the thread.",
            tampered: access.LINK_INVALID, later: access.LINK_INVALID,
            signed.replace(f"/s/{sid}/", f"/s/{other}/"): access.LINK_INVALID,
            f"/s/{sid}/v/1/thumb/sm": access.NOT_PUBLIC, f"/s/{sid}/export.zip": access.NOT_PUBLIC,
            "/": access.NOT_PUBLIC, f"/s/{sid}": access.NOT_PUBLIC, f"/s/{sid}/state": access.NOT_PUBLIC,
            f"/s/{sid}/fragment": access.NOT_PUBLIC, "/sessions/fragment": access.NOT_PUBLIC,
            "/nowhere": access.NOT_PUBLIC,
        }
        for path, sentence in refusals.items():
            r = await h.client.get(path)
            assert (r.status, await r.text()) == (403, sentence + "\n"), path
        for path in ("/messages", f"/s/{sid}/control", f"/s/{sid}/settings", f"/s/{sid}/messages"):
            r = await h.client.post(path, data={"instruction": "x", "control": "approve", "version": "1"})
            assert r.status == 403
        assert len((await h.app.store.load_state(sid)).turns) == 1
        r = await h.client.get(signed.replace("/gallery?", "/export.zip?"))
        assert r.status == 200 and r.headers["Content-Type"] == "application/zip"
        r = await h.client.get(h.pg.static_url("app.css"))
        assert r.status == 200 and "immutable" in r.headers["Cache-Control"]
        assert (data_dir / "link-secret").stat().st_mode & 0o777 == 0o600


def test_links_sign_verify_and_the_secret(tmp_path: Path) -> None:
    secret, now = b"0123456789abcdef0123456789abcdef", 1_800_000_000.0
    query = urlsplit(links.sign_gallery_link(PUBLIC, 7, secret, 3600, now)).query
    exp, sig = (p.split("=", 1)[1] for p in query.split("&"))
    assert links.verify(7, exp, sig, secret, now) is links.LinkCheck.VALID
    assert links.verify(7, exp, sig, secret, now + 3600) is links.LinkCheck.EXPIRED
    assert links.verify(8, exp, sig, secret, now) is links.LinkCheck.INVALID
    assert links.verify(7, exp, sig, b"another secret, sixteen+", now) is links.LinkCheck.INVALID
    assert links.verify(7, "12x", sig, secret, now) is links.LinkCheck.INVALID
    assert links.verify(7, None, None, secret, now) is links.LinkCheck.MISSING
    settings = load_settings(THREADEDIT_DATA_DIR=str(tmp_path / "d"), THREADEDIT_PUBLIC_URL="")
    assert settings.public_url is None and links.gallery_link(settings, 1) is None
    made = links.load_link_secret(settings)
    assert links.load_link_secret(settings) == made and len(made) == 64
    assert (tmp_path / "d" / "link-secret").stat().st_mode & 0o777 == 0o600
    given = load_settings(THREADEDIT_DATA_DIR=str(tmp_path / "d"), THREADEDIT_LINK_SECRET="s" * 20)
    assert links.load_link_secret(given) == b"s" * 20
    with pytest.raises(ConfigError, match="at least 16 characters"):
        links.load_link_secret(load_settings(THREADEDIT_LINK_SECRET="short"))
    for name, value in (("THREADEDIT_PUBLIC_URL", "edit.example.com"), ("THREADEDIT_LINK_TTL_HOURS", "0")):
        with pytest.raises(ConfigError, match=name):
            load_settings(**{name: value})


async def test_requests_from_other_sites_and_hosts_are_refused(h: Harness) -> None:
    for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        r = await h.client.post("/messages", data={"instruction": "a red poster"}, headers=headers)
        assert (r.status, await r.text()) == (403, access.CROSS_SITE + "\n")
    r = await h.client.get("/", headers={"Host": "rebound.example:8765"})
    assert (r.status, await r.text()) == (403, access.WRONG_HOST + "\n")
    assert await h.app.store.list_sessions() == []
    origin = str(h.client.make_url("")).rstrip("/")
    r = await h.client.post("/messages", data={"instruction": "a red poster"},
                            headers={"Origin": origin, "Sec-Fetch-Site": "same-origin", **JSON})
    assert r.status == 200
    r = await h.client.get("/")
    assert r.headers["X-Frame-Options"] == "DENY" and "script-src 'self'" in r.headers[
        "Content-Security-Policy"]


async def test_other_platforms_sessions_are_shown_read_only(h: Harness) -> None:
    turn = await h.app.service.submit_edit(SessionKey("slack", "T1", "C1", "9.0"), "U7", "a blue mug")
    await h.app.service.run_turn(turn.id)
    sid = turn.session_id
    assert "Slack" in await h.text("/") and "a blue mug" in await h.text("/")
    page = await h.text(f"/s/{sid}")
    assert 'id="composer"' not in page
    assert "This session belongs to Slack; edit it in its thread there. Its versions" in page
    assert 'data-control="undo"' not in page
    for r in (await h.message("make it sepia", session=sid), await h.control(sid, "approve", 1)):
        assert (r.status, (await r.json())["error"]) == (
            400, "This session belongs to Slack; edit it in its thread there.")
    assert tree(await h.text(f"/s/{sid}/gallery")).nodes == {1: ("", True, None)}




async def test_host_names_own_allowed_and_public_are_answered_others_refused(data_dir: Path) -> None:
    own = socket.gethostname()
    async with running(data_dir, THREADEDIT_ALLOWED_HOSTS="photos.studio.test, Alias.Test") as h:
        for host in ("localhost:8765", "127.0.0.1", "[::1]:8765", own, f"{own}:8765", "LOCALHOST.",
                     "10.1.2.3:8765", "[fe80::1]", "photos.studio.test:8765", "alias.test"):
            r = await h.client.get("/", headers={"Host": host})
            assert r.status == 200, host
        for host in ("evil.example", "evil.example:8765", "127.0.0.1.evil.example", "localhost.evil",
                     "evil.example@localhost", "studio.test", ""):
            r = await h.client.get("/", headers={"Host": host})
            assert (r.status, await r.text()) == (403, access.WRONG_HOST + "\n"), host
    async with running(data_dir, THREADEDIT_PUBLIC_URL=PUBLIC) as h:
        # The public host passes the Host check; the page then wants a signed link.
        r = await h.client.get("/", headers={"Host": "edit.example.com"})
        assert await r.text() == access.NOT_PUBLIC + "\n"
        r = await h.client.get("/", headers={"Host": "evil.example"})
        assert await r.text() == access.WRONG_HOST + "\n"


def _own_address() -> str:
    """An address of this machine other than loopback when it has one (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
            return str(s.getsockname()[0])
        except OSError:
            return "127.0.0.1"


async def test_a_server_on_every_address_still_refuses_other_host_names(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEMINI_", "THREADEDIT_"))}
    env.update(PYTHONPATH=str(ROOT), THREADEDIT_DATA_DIR=str(tmp_path / "data"))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "threadedit", "playground", "--host", "0.0.0.0", "--port", "0", cwd=tmp_path,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        found = re.fullmatch(r"threadedit playground: http://0\.0\.0\.0:(\d+)\n", line)
        assert found, line
        port = found.group(1)
        address = _own_address()
        base = f"http://{address}:{port}"
        async with aiohttp.ClientSession() as http:
            for host in ("evil.example", f"evil.example:{port}", f"rebind.{address}.nip.io:{port}"):
                async with http.get(base + "/", headers={"Host": host}) as r:
                    assert (r.status, await r.text()) == (403, access.WRONG_HOST + "\n"), host
                async with http.post(base + "/messages", data={"instruction": "x"},
                                     headers={"Host": host}) as r:
                    assert r.status == 403
            for host in (f"{address}:{port}", f"{socket.gethostname()}:{port}", f"localhost:{port}"):
                async with http.get(base + "/", headers={"Host": host}) as r:
                    assert r.status == 200 and "Start an edit session" in await r.text(), host
    finally:
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
