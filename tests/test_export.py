"""`threadedit export SESSION TARGET` as a real process: a folder or a zip, never written through a
symbolic link, never mixed with another session's export, never half-written, and every failure
one sentence with exit 2. Sessions are made in-process with the offline engine."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot import export as export_module
from bot.app import open_app
from bot.config import load_settings
from bot.domain import SessionKey
from bot.local_engine import LocalEngine
from tests.playground_harness import JSON, running

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Done:
    code: int
    out: str
    err: str


async def export(tmp: Path, *args: str) -> Done:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEMINI_", "THREADEDIT_"))}
    env.update(PYTHONPATH=str(ROOT), THREADEDIT_DATA_DIR=str(tmp / "data"), THREADEDIT_ENGINE="local")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "threadedit", "export", *args, cwd=tmp, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    done = Done(proc.returncode, out.decode(), err.decode())
    assert "Traceback" not in done.err, done.err
    if done.code:  # a failure is one sentence on stderr
        assert done.code == 2 and done.err.count("\n") == 1 and done.err.endswith(".\n"), done.err
    return done


async def make_sessions(tmp: Path) -> dict[int, list[Path]]:
    """Session 1 with two versions, session 2 with one: each session's blob paths."""
    settings = load_settings(THREADEDIT_DATA_DIR=str(tmp / "data"), THREADEDIT_ENGINE="local")
    blobs: dict[int, list[Path]] = {}
    async with open_app(settings, engine=LocalEngine()) as app:
        svc = app.service
        for thread, edits in (("a", ("a red poster", "make it sepia")), ("b", ("a blue mug",))):
            target: int | SessionKey = SessionKey("cli", "local", "cli", thread)
            for instruction in edits:
                turn = await svc.submit_edit(target, "ana", instruction)
                assert (await svc.run_turn(turn.id)).status == "ok"
                target = turn.session_id
            state = await app.store.load_state(turn.session_id)
            blobs[turn.session_id] = [app.blobs.path(t.image_blob or "") for t in state.versions]
    assert sorted(blobs) == [1, 2]
    return blobs


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if not p.is_symlink()}


@pytest.fixture
async def blobs(tmp_path: Path) -> dict[int, list[Path]]:
    return await make_sessions(tmp_path)


async def test_a_folder_export_again_and_never_through_a_link(tmp_path: Path,
                                                              blobs: dict[int, list[Path]]) -> None:
    out = tmp_path / "out"
    done = await export(tmp_path, "1", "out")
    assert (done.code, done.out) == (0, f"Exported session 1 to {out}\n")
    first = files(out)
    assert sorted(first) == ["manifest.json", "v1.jpg", "v2.jpg"]
    assert first["v2.jpg"] == blobs[1][1].read_bytes()
    manifest = json.loads(first["manifest.json"])
    assert manifest["session"] == 1 and [v["image"] for v in manifest["versions"]] == ["v1.jpg", "v2.jpg"]

    # Someone swapped v1.jpg for a link to a file of theirs: the export replaces the link.
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (out / "v1.jpg").unlink()
    (out / "v1.jpg").symlink_to(victim)
    assert (await export(tmp_path, "1", "out")).code == 0
    assert victim.read_text() == "keep me"
    assert not (out / "v1.jpg").is_symlink() and files(out) == first

    # A link named manifest.json makes it no earlier export: refused, nothing written anywhere.
    (out / "manifest.json").unlink()
    (out / "manifest.json").symlink_to(victim)
    done = await export(tmp_path, "1", "out")
    assert done.err == f"{out} is not empty; export session 1 into an empty or new folder.\n"
    assert victim.read_text() == "keep me" and (out / "manifest.json").is_symlink()
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "v1.jpg", "v2.jpg"]


async def test_another_sessions_export_or_other_files_are_refused(tmp_path: Path,
                                                                  blobs: dict[int, list[Path]]) -> None:
    assert (await export(tmp_path, "1", "out")).code == 0
    before = files(tmp_path / "out")
    done = await export(tmp_path, "2", "out")
    assert done.err == (f"{tmp_path / 'out'} holds the export of session 1; export session 2 into "
                        "an empty or new folder.\n")
    assert files(tmp_path / "out") == before
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    done = await export(tmp_path, "1", "mine")
    assert "mine is not empty; export session 1 into an empty or new folder." in done.err
    assert os.listdir(tmp_path / "mine") == ["notes.txt"]
    (tmp_path / "empty").mkdir()
    assert (await export(tmp_path, "2", "empty")).code == 0
    assert sorted(os.listdir(tmp_path / "empty")) == ["manifest.json", "v1.jpg"]


async def test_a_target_that_is_a_file_or_cannot_be_made_is_a_sentence(
        tmp_path: Path, blobs: dict[int, list[Path]]) -> None:
    (tmp_path / "afile").write_text("x")
    done = await export(tmp_path, "1", "afile")
    assert done.err == (f"{tmp_path / 'afile'} is a file, not a folder; export into a folder, or to "
                        "a name ending in .zip to get a zip file.\n")
    done = await export(tmp_path, "1", "afile/sub")
    assert done.err == f"Cannot export to {tmp_path / 'afile' / 'sub'}: not a directory.\n"
    assert (tmp_path / "afile").read_text() == "x"
    done = await export(tmp_path, "1", "afile/sub.zip")
    assert done.err == f"Cannot export to {tmp_path / 'afile' / 'sub.zip'}: not a directory.\n"


async def test_a_zip_target_writes_a_zip(tmp_path: Path, blobs: dict[int, list[Path]]) -> None:
    done = await export(tmp_path, "1", "out.zip")
    assert (done.code, done.out) == (0, f"Exported session 1 to {tmp_path / 'out.zip'}\n")
    with zipfile.ZipFile(tmp_path / "out.zip") as z:
        assert sorted(z.namelist()) == ["out/manifest.json", "out/v1.jpg", "out/v2.jpg"]
        assert z.read("out/v1.jpg") == blobs[1][0].read_bytes()
        assert json.loads(z.read("out/manifest.json"))["session"] == 1
    assert (await export(tmp_path, "1", "out.zip")).code == 0  # its own earlier export
    done = await export(tmp_path, "2", "out.zip")
    assert "out.zip holds the export of session 1; export session 2 into an empty or new file name." \
        in done.err
    victim = tmp_path / "victim.zip"
    victim.write_text("keep me")
    (tmp_path / "link.zip").symlink_to(victim)
    done = await export(tmp_path, "1", "link.zip")
    assert "link.zip already exists; export session 1 into an empty or new file name." in done.err
    assert victim.read_text() == "keep me"
    (tmp_path / "dir.zip").mkdir()
    assert "dir.zip is a folder; give a new file name ending in .zip" in (
        await export(tmp_path, "1", "dir.zip")).err
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "data", "dir.zip", "link.zip", "out.zip", "victim.zip"]


async def test_a_missing_image_is_a_sentence_and_nothing_is_half_written(
        tmp_path: Path, blobs: dict[int, list[Path]]) -> None:
    assert (await export(tmp_path, "1", "out")).code == 0
    assert (await export(tmp_path, "1", "out.zip")).code == 0
    before, zipped = files(tmp_path / "out"), (tmp_path / "out.zip").read_bytes()
    blobs[1][1].unlink()
    sentence = "The image of v2 is missing from the data directory's blob store, so nothing was exported.\n"
    for target in ("fresh", "deep/er/fresh", "out", "fresh.zip", "out.zip"):
        assert (await export(tmp_path, "1", target)).err == sentence, target
    assert not (tmp_path / "fresh").exists() and not (tmp_path / "fresh.zip").exists()
    assert files(tmp_path / "out") == before and (tmp_path / "out.zip").read_bytes() == zipped
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "deep", "out", "out.zip"]

    # The gallery's zip says the same, as a 400, and leaves no temporary file behind either.
    async with running(tmp_path / "data") as h:
        r = await h.client.get("/s/1/export.zip", headers=JSON)
        assert (r.status, (await r.json())["error"]) == (400, sentence.strip())
        r = await h.client.get("/s/2/export.zip")
        assert r.status == 200 and r.headers["Content-Type"] == "application/zip"


async def test_the_gallery_zip_is_written_off_the_event_loop(
        tmp_path: Path, blobs: dict[int, list[Path]], monkeypatch: pytest.MonkeyPatch) -> None:
    on_loop_thread: list[bool] = []
    real = export_module.write_export

    def spy(*args: Any) -> Path:
        on_loop_thread.append(threading.current_thread() is threading.main_thread())
        return real(*args)

    monkeypatch.setattr(export_module, "write_export", spy)
    async with running(tmp_path / "data") as h:
        r = await h.client.get("/s/1/export.zip")
        assert r.status == 200 and len(await r.read()) > sum(p.stat().st_size for p in blobs[1])
    assert on_loop_thread == [False]
