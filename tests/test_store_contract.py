"""The in-memory store (tests/fakes/memory_store.py) against the real one: the contract that keeps
the fast unit tests honest.

Every real repository method must exist on the fake with the same signature; every scenario
below runs on a real SQLite store and on the in-memory one and must answer the same; and the
scenarios together must call every real repository method. So adding a repository method (or
changing one) fails here until the fake, and a scenario for it, follow.
"""

from __future__ import annotations

import inspect
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from bot.domain import SessionKey, TurnKind, TurnState, UnknownSession
from bot.storage.repositories import Repository
from bot.storage.repository import SessionStore
from bot.storage.schema import turns
from bot.storage.uow import Store, UnitOfWork
from tests.fakes.memory_store import MemoryStore, MemoryUnitOfWork
from tests.fakes.memory_tables import MemoryDatabase
from tests.test_store_uow import without_stamps

A = SessionKey("slack", "T1", "C1", "1700000000.000100")
B = SessionKey("discord", "G1", "C2", "thread-2")
# Timestamps differ between any two runs: compared only by the order they give.
_STAMPS = {"created_at", "updated_at", "started_at", "finished_at", "approved_at", "withdrawn_at",
           "at", "received_at", "settled_at", "uploaded_at", "delivered_at"}


def _repositories(uow: object) -> dict[str, object]:
    return {name: value for name, value in vars(uow).items()
            if not name.startswith("_") and name not in ("conn", "db")}


def _methods(cls: type) -> dict[str, inspect.Signature]:
    return {name: inspect.signature(fn) for name, fn in inspect.getmembers(cls, inspect.isfunction)
            if not name.startswith("_")}


REAL = _repositories(UnitOfWork(None))  # type: ignore[arg-type]  # repositories only keep it
FAKE = _repositories(MemoryUnitOfWork(MemoryDatabase()))


def test_the_fake_unit_of_work_has_every_repository_of_the_real_one() -> None:
    assert set(FAKE) == set(REAL)
    assert all(isinstance(r, Repository) for r in REAL.values())


@pytest.mark.parametrize("name", sorted(REAL))
def test_each_real_repository_method_is_on_the_fake_with_the_same_signature(name: str) -> None:
    real, fake = _methods(type(REAL[name])), _methods(type(FAKE[name]))
    missing = sorted(set(real) - set(fake))
    assert not missing, f"add {missing} to {type(FAKE[name]).__name__} in tests/fakes/memory_store.py"
    for method, signature in real.items():
        assert str(fake[method]) == str(signature), f"{name}.{method}"


def test_the_fake_store_inherits_every_session_store_method() -> None:
    """Only how a transaction runs is the fake's own; every SessionStore method is the real one."""
    own = {name for name in vars(MemoryStore) if not name.startswith("__")}
    assert own <= {"transact", "read", "open", "close", "rows"}
    assert set(_methods(Store)) <= {*_methods(MemoryStore)} and issubclass(MemoryStore, SessionStore)


# The scenarios. Each one runs in transactions through `tx`, which records the repository
# methods called, and returns what the repositories answered.

Calls = set[tuple[str, str]]


class _Recording:
    def __init__(self, target: object, name: str, calls: Calls) -> None:
        self._target, self._name, self._calls = target, name, calls

    def __getattr__(self, method: str) -> Any:
        self._calls.add((self._name, method))
        return getattr(self._target, method)


class Runner:
    def __init__(self, store: SessionStore) -> None:
        self.store = store
        self.calls: Calls = set()

    def _wrap(self, uow: Any) -> Any:
        return SimpleNamespace(**{name: _Recording(repo, name, self.calls)
                                  for name, repo in _repositories(uow).items()})

    async def tx(self, op: Callable[[Any], Awaitable[Any]]) -> Any:
        return await self.store.transact(lambda uow: op(self._wrap(uow)))

    async def read(self, op: Callable[[Any], Awaitable[Any]]) -> Any:
        return await self.store.read(lambda uow: op(self._wrap(uow)))

    async def refused(self, op: Callable[[Any], Awaitable[Any]]) -> str:
        """The kind of error the store gave, or "ok"."""
        try:
            await self.tx(op)
        except IntegrityError:
            return "IntegrityError"
        except (UnknownSession, KeyError) as exc:
            return type(exc).__name__
        return "ok"


async def _session_with_turns(u: Any, key: SessionKey = A, n: int = 2) -> tuple[Any, list[Any]]:
    s = await u.sessions.create(key, "ana", "m1", None, "1K")
    made = []
    for i in range(n):
        made.append(await u.turns.add(s, kind=TurnKind.EDIT, instruction=f"step {i} ✓", author="ana",
                                      user_content={"parts": [{"text": f"step {i}"}]},
                                      parent_turn_id=None, model="m1", aspect=None, size="1K"))
    return s, made


async def sessions_scenario(r: Runner) -> Any:
    first = await r.tx(lambda u: u.sessions.create(A, "ana", "m1", None, "1K"))
    again = await r.tx(lambda u: u.sessions.create(A, "bo", "m2", "16:9", "2K"))
    other = await r.tx(lambda u: u.sessions.create(B, "bo", "m2", "16:9", "2K"))
    await r.tx(lambda u: u.sessions.update_settings(first.id, model="m3", aspect="1:1", size="4K"))
    await r.tx(lambda u: u.sessions.touch(first.id, "2030-01-01T00:00:00.000+00:00"))
    listed = [s.id for s in await r.read(lambda u: u.sessions.list())]
    await r.tx(lambda u: u.sessions.touch(other.id, "2031-01-01T00:00:00.000+00:00"))
    return {"same": again == first, "found": await r.read(lambda u: u.sessions.find(A)),
            "none": await r.read(lambda u: u.sessions.find(SessionKey("x", "y", "z", "w"))),
            "got": await r.read(lambda u: u.sessions.get(other.id, for_update=True)),
            "listed": listed, "relisted": [s.id for s in await r.read(lambda u: u.sessions.list())],
            "limited": len(await r.read(lambda u: u.sessions.list(1))),
            "unknown": await r.refused(lambda u: u.sessions.get(999)),
            "no_head_turn": await r.refused(lambda u: u.sessions.set_head(first.id, 999))}


async def turns_scenario(r: Runner) -> Any:
    s, (t1, t2) = await r.tx(_session_with_turns)
    _, (t3,) = await r.tx(lambda u: _session_with_turns(u, B, 1))
    await r.tx(lambda u: u.turns.mark_running(t1.id, None))
    waiting = await r.read(lambda u: u.turns.unfinished_before(s.id, t2.id))
    done = await r.tx(lambda u: u.turns.finish(t1, TurnState.DONE, model_content={"parts": [{"t": "é"}]},
                                               image_blob="ab.jpg", image_mime="image/jpeg",
                                               text_reply="there", usage={"n": 1},
                                               anchor_content={"a": [1, 2]}))
    blocked = await r.tx(lambda u: u.turns.finish(t2, TurnState.BLOCKED, reason="SAFETY", message="no"))
    await r.tx(lambda u: u.posts.record("slack", "C1", "p1", s.id, t1.id, "progress"))
    undelivered = [t.id for t in await r.read(lambda u: u.turns.undelivered("slack"))]
    unshown = [await r.read(lambda u: u.queue.unshown(["slack", "discord"])),  # t1, nobody's
               await r.read(lambda u: u.queue.unshown(["discord"])),
               await r.tx(lambda u: u.queue.take_unshown(t1.id, "w1", "w0")),  # not w0's: refused
               await r.tx(lambda u: u.queue.take_unshown(t1.id, "w1", None)),
               await r.tx(lambda u: u.queue.take_unshown(t1.id, "w2", None)),  # w1 has it now
               await r.read(lambda u: u.queue.unshown(["slack"]))]
    await r.tx(lambda u: u.turns.mark_delivered(t1.id))
    return {"done": done, "blocked": blocked, "waiting": waiting, "undelivered": undelivered,
            "unshown": unshown, "unshown_after": await r.read(lambda u: u.queue.unshown(["slack"])),
            "undelivered_after": await r.read(lambda u: u.turns.undelivered("slack")),
            "next": await r.read(lambda u: u.turns.next_version(s.id)),
            "head": (await r.read(lambda u: u.sessions.get(s.id))).head_turn_id,
            "of_session": await r.read(lambda u: u.turns.of_session(s.id)),
            "unfinished": [t.id for t in await r.read(lambda u: u.turns.unfinished())],
            "unfinished_slack": await r.read(lambda u: u.turns.unfinished("slack")),
            "by_author": (await r.read(lambda u: u.turns.count_by_author_since(
                "slack", "T1", "ana", "2000-01-01")))[0],
            "by_nobody": await r.read(lambda u: u.turns.count_by_author_since("slack", "T1", "zed", "2000")),
            "get": await r.read(lambda u: u.turns.get(t3.id)),
            "missing": await r.refused(lambda u: u.turns.get(999))}


async def approvals_and_audit_scenario(r: Runner) -> Any:
    s, (t1, _) = await r.tx(_session_with_turns)
    await r.tx(lambda u: u.approvals.add(s.id, t1.id, "dana"))
    twice = await r.tx(lambda u: u.approvals.add(s.id, t1.id, "dana"))  # False: already approving
    await r.tx(lambda u: u.approvals.add(s.id, t1.id, "eve"))
    withdrawn = [await r.tx(lambda u: u.approvals.withdraw(t1.id, "dana", "boss")),
                 await r.tx(lambda u: u.approvals.withdraw(t1.id, "dana", "boss"))]
    await r.tx(lambda u: u.audit.record(s.id, "ana", "edit", "ok", version=1, note="ü"))
    await r.tx(lambda u: u.audit.record(s.id, "bo", "approve", "refused"))
    await r.tx(lambda u: u.audit.record(None, "x", "message", "refused"))
    return {"approvals": await r.read(lambda u: u.approvals.of_session(s.id)), "withdrawn": withdrawn,
            "twice": twice, "audit": await r.read(lambda u: u.audit.of_session(s.id)),
            "bad_outcome": await r.refused(lambda u: u.audit.record(s.id, "x", "edit", "maybe")),
            "no_turn": await r.refused(lambda u: u.approvals.add(s.id, 999, "dana"))}


async def events_posts_state_scenario(r: Runner) -> Any:
    s, (t1, _) = await r.tx(_session_with_turns)
    claims = [await r.tx(lambda u: u.events.claim("slack", "e1")),
              await r.tx(lambda u: u.events.claim("slack", "e1")),
              await r.tx(lambda u: u.events.claim("discord", "e1"))]
    await r.tx(lambda u: u.events.release("slack", "e1"))
    await r.tx(lambda u: u.events.release("slack", "never"))
    claims.append(await r.tx(lambda u: u.events.claim("slack", "e1")))
    claims += [await r.read(lambda u: u.events.seen("slack", "e1")),
               await r.read(lambda u: u.events.seen("slack", "e2"))]
    await r.tx(lambda u: u.posts.record("slack", "C1", "m1", s.id, t1.id, "progress"))
    await r.tx(lambda u: u.posts.record("slack", "C1", "m1", s.id, t1.id, "version"))  # same message
    await r.tx(lambda u: u.posts.record("slack", "C1", "m2", s.id, t1.id, "version"))
    await r.tx(lambda u: u.posts.record("slack", "C1", "m3", s.id, t1.id, "version"))
    await r.tx(lambda u: u.app_state.set("cursor", "1"))
    await r.tx(lambda u: u.app_state.set("cursor", "2"))
    return {"claims": claims, "post": await r.read(lambda u: u.posts.find("slack", "C1", "m1")),
            "no_post": await r.read(lambda u: u.posts.find("slack", "C1", "x")),
            "of_turn": await r.read(lambda u: u.posts.of_turn(t1.id, "version")),
            "none_of_turn": await r.read(lambda u: u.posts.of_turn(t1.id, "text")),
            "state": await r.read(lambda u: u.app_state.get("cursor")),
            "no_state": await r.read(lambda u: u.app_state.get("nope")),
            "bad_kind": await r.refused(lambda u: u.posts.record("slack", "C1", "m9", s.id, t1.id, "x")),
            "no_session": await r.refused(lambda u: u.posts.record("slack", "C1", "m9", 999, None, "text"))}


def _usage(s: Any, t: Any, usd: float, user: str = "ana", day: str = "2026-01-02") -> dict[str, Any]:
    return {"turn_id": t.id, "session_id": s.id, "platform": s.key.platform, "workspace": s.key.workspace,
            "user": user, "model": "m1", "image_size": "1K", "reserved_usd": usd, "day": day}


async def usage_and_uploads_scenario(r: Runner) -> Any:
    s, (t1, t2) = await r.tx(_session_with_turns)
    s_b, (t3,) = await r.tx(lambda u: _session_with_turns(u, B, 1))
    await r.tx(lambda u: u.usage.reserve(**_usage(s, t1, 0.25)))
    await r.tx(lambda u: u.usage.reserve(**_usage(s, t2, 0.125, user="bo")))
    await r.tx(lambda u: u.usage.reserve(**_usage(s_b, t3, 0.5, day="2025-12-31")))
    spent = await r.read(lambda u: u.usage.spent_on("slack", "T1", "2026-01-02"))
    await r.tx(lambda u: u.usage.settle(t1.id, "charged", 0.0625))
    await r.tx(lambda u: u.usage.settle(t2.id, "refunded", 0.0))
    await r.tx(lambda u: u.usage.settle(t2.id, "charged", 9.0))  # settled already: nothing
    await r.tx(lambda u: u.uploads.put("k1.jpg", "files/1", "https://f/1", "image/jpeg", "2030-01-01"))
    await r.tx(lambda u: u.uploads.put("k1.jpg", "files/2", "https://f/2", "image/png", "2030-01-02"))
    await r.tx(lambda u: u.uploads.put("k2.jpg", "files/3", "https://f/3", "image/jpeg", "2030-01-03"))
    await r.tx(lambda u: u.uploads.put("k3.jpg", "files/4", "https://f/4", "image/jpeg", "2030-01-03"))
    gone = await r.tx(lambda u: u.uploads.forget_uris(["https://f/3", "https://f/3", "https://f/1",
                                                       "https://f/4"]))
    upload = await r.read(lambda u: u.uploads.get("k1.jpg"))
    spent_after = await r.read(lambda u: u.usage.spent_on("slack", "T1", "2026-01-02"))
    return {"spent": spent, "spent_after": spent_after,
            "has": [await r.read(lambda u, t=t: u.usage.has(t.id)) for t in (t1, t2, t3)],
            "twice": await r.refused(lambda u: u.usage.reserve(**_usage(s, t1, 1.0))),
            "no_workspace": await r.refused(lambda u: u.usage.reserve(
                **{k: v for k, v in _usage(s, t3, 1.0).items() if k != "workspace"})),
            "rows": await r.read(lambda u: u.usage.rows()),
            "totals": {by: await r.read(lambda u, by=by: u.usage.totals("2026-01-01", by))
                       for by in [("platform", "workspace"), ("platform", "workspace", "user"),
                                  ("session_id",)]},
            "all_days": await r.read(lambda u: u.usage.totals("2000-01-01", ("platform",))),
            "upload": dict(upload) if upload else None, "gone": gone,
            "no_upload": await r.read(lambda u: u.uploads.get("k2.jpg"))}


NOW, LATER, MUCH_LATER = ("2030-01-01T00:00:00.000+00:00", "2030-01-01T00:00:30.000+00:00",
                          "2030-01-01T00:01:00.000+00:00")


async def queue_scenario(r: Runner) -> Any:
    s, (t1, t2) = await r.tx(_session_with_turns)
    _, (t3,) = await r.tx(lambda u: _session_with_turns(u, B, 1))
    first = await r.read(lambda u: u.queue.takeable(NOW, None, None, 10))  # t1 and t3: one per session
    only_b = await r.read(lambda u: u.queue.takeable(NOW, ["discord"], None, 10))
    one = await r.read(lambda u: u.queue.takeable(NOW, None, None, 1))
    await r.tx(lambda u: u.queue.take([t1.id], "w1", LATER))
    await r.tx(lambda u: u.queue.take([t3.id], "w3", LATER))
    owners = await r.read(lambda u: u.queue.live_owners(NOW))  # w1 and w3
    ended = [await r.tx(lambda u: u.queue.end_leases_of(["w3", "w9"])),  # t3
             await r.tx(lambda u: u.queue.end_leases_of(["w3"])),  # nothing left to end
             await r.read(lambda u: u.queue.live_owners(NOW))]  # w1
    held = await r.read(lambda u: u.queue.held(NOW))
    expiry = [await r.read(lambda u: u.queue.next_expiry(NOW)),
              await r.read(lambda u: u.queue.next_expiry(LATER))]
    while_held = await r.read(lambda u: u.queue.takeable(NOW, None, s.id, 10))
    after_expiry = await r.read(lambda u: u.queue.takeable(MUCH_LATER, ["slack"], None, 10))
    renewed = [await r.tx(lambda u: u.queue.renew([t1.id, t3.id], "w1", MUCH_LATER)),
               await r.tx(lambda u: u.queue.renew([t1.id], "w2", MUCH_LATER))]
    owner = await r.read(lambda u: u.queue.owner(t1.id))
    released = [await r.tx(lambda u: u.queue.release([t1.id], "w2")),
                await r.tx(lambda u: u.queue.release([t1.id], "w1"))]
    await r.tx(lambda u: u.turns.finish(t1, TurnState.DONE, image_blob="x.jpg"))
    return {"first": first, "only_b": only_b, "one": one, "owners": owners, "ended": ended,
            "held": held, "expiry": expiry,
            "while_held": while_held,
            "after_expiry": after_expiry, "renewed": renewed, "owner": owner, "released": released,
            "owner_after": await r.read(lambda u: u.queue.owner(t1.id)),
            "counted": await r.read(lambda u: u.queue.count_takeable(NOW, None, None)),
            "next": await r.read(lambda u: u.queue.takeable(NOW, ["slack"], None, 10)),
            "finished": await r.read(lambda u: u.queue.finished_among([t1.id, t2.id, 999])),
            "held_after": await r.read(lambda u: u.queue.held(NOW))}


async def rollback_scenario(r: Runner) -> Any:
    async def half_way(u: Any) -> None:
        s, (t1, _) = await _session_with_turns(u)
        await u.turns.finish(t1, TurnState.DONE, image_blob="x.jpg")
        await u.audit.record(s.id, "ana", "edit", "ok")
        await u.events.claim("slack", "e1")
        await u.app_state.set("cursor", "9")
        raise RuntimeError("the disk is full")

    with pytest.raises(RuntimeError, match="disk is full"):
        await r.tx(half_way)
    return {"sessions": await r.read(lambda u: u.sessions.list()),
            "claim": await r.tx(lambda u: u.events.claim("slack", "e1")),
            "state": await r.read(lambda u: u.app_state.get("cursor")),
            # ids numbered after a rollback: SQLite reuses them (max + 1), and so does the fake
            "session_id": (await r.tx(lambda u: u.sessions.create(A, "ana", "m", None, None))).id}


SCENARIOS = [sessions_scenario, turns_scenario, approvals_and_audit_scenario,
             events_posts_state_scenario, usage_and_uploads_scenario, queue_scenario, rollback_scenario]


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite file migrated once; each scenario gets a copy."""
    import asyncio

    path = tmp_path_factory.mktemp("contract") / "template.sqlite3"

    async def make() -> None:
        await (await SessionStore.open(path)).close()

    asyncio.run(make())
    return path


@pytest.fixture
async def sqlite_store(migrated: Path, tmp_path: Path) -> AsyncIterator[SessionStore]:
    path = tmp_path / "threadedit.sqlite3"
    shutil.copy(migrated, path)
    store = await SessionStore.open(path)
    yield store
    await store.close()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
async def test_each_scenario_answers_the_same_on_sqlite_and_in_memory(scenario: Any,
                                                                      sqlite_store: SessionStore) -> None:
    on_sqlite = without_stamps(await scenario(Runner(sqlite_store)), _STAMPS)
    in_memory = without_stamps(await scenario(Runner(MemoryStore())), _STAMPS)
    assert in_memory == on_sqlite


async def test_the_scenarios_call_every_repository_method() -> None:
    calls: Calls = set()
    for scenario in SCENARIOS:
        runner = Runner(MemoryStore())
        await scenario(runner)
        calls |= runner.calls
    wanted = {(name, method) for name, repo in REAL.items() for method in _methods(type(repo))}
    assert sorted(wanted - calls) == [], "add a scenario for these to tests/test_store_contract.py"


async def test_a_version_number_is_unique_per_session_in_both(sqlite_store: SessionStore) -> None:
    """Two turns of one session can never hold the same version: the schema's constraint, which
    no repository method can break on its own, so it is tried below the repositories."""
    for store in (sqlite_store, MemoryStore()):
        s, (t1, t2) = await store.transact(_session_with_turns)
        await store.transact(lambda u, t1=t1: u.turns.finish(t1, TurnState.DONE, image_blob="a.jpg"))

        async def same_version(u: Any, t2: Any = t2, store: Any = store) -> None:
            if isinstance(store, MemoryStore):
                u.db["turns"].update(u.db, lambda r: r["id"] == t2.id, version=1)
            else:
                await u.conn.execute(update(turns).where(turns.c.id == t2.id).values(version=1))

        with pytest.raises(IntegrityError):
            await store.transact(same_version)
        assert (await store.get_turn(t2.id)).version is None


async def test_the_fake_refuses_what_the_real_store_refuses() -> None:
    store = MemoryStore()

    async def nested(u: Any) -> None:
        await store.audit(None, "ana", "edit", "ok")  # a second transaction inside the first

    with pytest.raises(RuntimeError, match="inside a transaction"):
        await store.transact(nested)
    with pytest.raises(RuntimeError, match="inside store.read"):
        await store.read(lambda u: u.audit.record(None, "ana", "edit", "ok"))
    with pytest.raises(RuntimeError, match="no database connection"):
        await store.read(lambda u: u.conn.execute("SELECT 1"))
    assert store.rows("audit_log") == [] and store.rollbacks == 1
