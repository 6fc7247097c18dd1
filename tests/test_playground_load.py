"""The playground keeps answering while an upload's images are checked: the checks run in a
worker thread, not on the event loop. Shown by order, not by time: the check is held inside
its thread until the other request has been answered."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from bot import service
from tests.playground_harness import png, running

SAFETY = 60  # seconds: only reached when the fix is broken, so the test fails instead of hanging


async def test_other_requests_are_answered_while_an_upload_is_checked(
        data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entered, release = threading.Event(), threading.Event()
    real = service.check_image

    def held_check(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        release.wait(SAFETY)  # on the event loop, this would hold every request of the server
        return real(*args, **kwargs)

    monkeypatch.setattr(service, "check_image", held_check)
    async with running(data_dir) as h:
        upload = asyncio.ensure_future(h.message("a poster", [("big.png", png(size=(2000, 1500)))]))
        assert await asyncio.to_thread(entered.wait, SAFETY)
        r = await h.client.get("/sessions/fragment")
        assert r.status == 200
        page = await h.client.get("/")
        assert page.status == 200
        assert not upload.done()  # both answered while the upload's check was still held
        release.set()
        response = await upload
        assert response.status == 200, await response.text()
        await h.pg.pipeline.join()
        state = await h.app.store.load_state((await response.json())["session"])
        assert [t.instruction for t in state.turns] == ["a poster"]
