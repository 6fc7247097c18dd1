"""The gallery's version tree for a long, bushy history: every version shown, branches nested only
a few levels deep, and no recursion that a long session can exhaust."""

from __future__ import annotations

import math
from pathlib import Path

from bot.domain import SessionKey
from tests.playground_harness import TreeParser, running

ROUNDS = 250  # edit, then retry that edit: each round leaves the line it was on


class DepthParser(TreeParser):
    """The tree, and how deep its branches nest."""

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        super().handle_starttag(tag, attrs)
        self.depth = max(self.depth, len(self.lists))


async def test_a_gallery_of_250_edit_then_retry_branches_shows_every_version(data_dir: Path) -> None:
    async with running(data_dir) as h:
        svc = h.app.service
        first = await svc.submit_edit(SessionKey("playground", "local", "local", "t"), "ana", "a poster")
        run = h.pg.pipeline.submit  # the running playground takes every turn from the queue
        await run(first)
        sid = first.session_id
        for _ in range(ROUNDS):
            for submit in (lambda: svc.submit_edit(sid, "ana", "brighter"),
                           lambda: svc.submit_retry(sid, "ana")):  # retries the edit just made
                result = await run(await submit())
                assert result.status == "ok", result
        # With the head back on v1 no child is on the head's path: each round's retry opened a
        # branch under the one before, 250 deep, and the gallery was a RecursionError (500).
        await svc.revert(sid, "ana", 1)
        r = await h.client.get(f"/s/{sid}/gallery", headers={"Accept": "text/html"})
        assert r.status == 200, (await r.text())[:300]
        parsed = DepthParser()
        parsed.feed(await r.text())
        count = 1 + 2 * ROUNDS
        assert sorted(parsed.nodes) == list(range(1, count + 1))
        assert parsed.nodes[1] == ("", True, None)
        # Each version's own parent is still what the page says.
        state = await h.app.store.load_state(sid)
        assert all(parsed.nodes[v.version or 0][0] == str(state.parent_version(v) or "")
                   for v in state.versions)
        assert parsed.depth <= 1 + math.log2(count), parsed.depth

        # Back on the newest version the line follows the head: one column, branches one deep.
        await svc.revert(sid, "ana", count)
        parsed = DepthParser()
        parsed.feed(await h.text(f"/s/{sid}/gallery"))
        assert len(parsed.nodes) == count and parsed.depth == 2
