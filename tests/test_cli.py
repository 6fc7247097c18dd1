"""The CLI contract, run as real processes (each call a new one) against the fake Gemini API."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import API_KEY
from tests.fakes.gemini_server import Behaviour, FakeGemini
from tests.postgres import process_env

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def json(self) -> dict:
        return json.loads(self.out)


class Cli:
    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.tmp, self.env = tmp, env

    async def __call__(self, *args: str, **extra_env: str) -> Run:
        env = {**self.env, **extra_env}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "threadedit", *args, cwd=self.tmp, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode is not None
        return Run(proc.returncode, out.decode(), err.decode())


def _env(tmp: Path, **kw: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GEMINI_", "THREADEDIT_", "SLACK_", "DISCORD_"))}
    # With THREADEDIT_TEST_DATABASE=postgresql, the child uses this test's database too.
    env.update(PYTHONPATH=str(ROOT), THREADEDIT_DATA_DIR=str(tmp / "data"), **process_env(), **kw)
    return env


@pytest.fixture
def cli(tmp_path: Path, gemini: FakeGemini) -> Cli:
    return Cli(tmp_path, _env(tmp_path, GEMINI_API_KEY=API_KEY, GEMINI_BASE_URL=gemini.base_url,
                              GEMINI_RETRY_BUDGET_SECONDS="5"))


def _png(path: Path, color=(0, 90, 200), size=(64, 48)) -> Path:
    Image.new("RGB", size, color).save(path, "PNG")
    return path


async def test_edit_undo_revert_retry_approve_history_export(cli: Cli, gemini, tmp_path):
    r = await cli("edit", "--aspect", "16:9", "--size", "2K", "--json", "a coffee poster")
    assert r.code == 0, r.err
    first = r.json
    assert set(first) == {"session", "status", "version", "image", "text", "condensed"}
    assert first["condensed"] is False
    assert (first["status"], first["version"]) == ("ok", 1)
    assert Path(first["image"]).is_absolute()
    issued = gemini.issued[0]["parts"][-1]["inlineData"]["data"]
    assert Path(first["image"]).read_bytes() == base64.b64decode(issued)
    sid = str(first["session"])

    ref = _png(tmp_path / "logo.png")
    r = await cli("edit", "--session", sid, "--ref", str(ref), "--json", "add this logo")
    assert (r.code, r.json["version"]) == (0, 2)
    last = gemini.requests[-1].body["contents"][-1]
    assert last["parts"][1]["inlineData"]["data"] == base64.b64encode(ref.read_bytes()).decode()
    # The session kept --aspect and --size from the first call.
    assert gemini.requests[-1].body["generationConfig"]["imageConfig"] == {
        "aspectRatio": "16:9", "imageSize": "2K"}

    r = await cli("undo", sid, "--json")
    assert r.code == 0 and r.json["head"] == 1
    assert [v["version"] for v in r.json["versions"]] == [1, 2]
    assert r.json["versions"][1] == {"version": 2, "parent": 1, "instruction": "add this logo",
                                     "approved": False, "image": r.json["versions"][1]["image"]}

    r = await cli("retry", sid, "--json")  # the head is v1 now: a sibling of v1
    assert (r.json["status"], r.json["version"]) == ("ok", 3)
    assert len(gemini.requests[-1].body["contents"]) == 1

    r = await cli("revert", sid, "v2", "--json")
    assert r.json["head"] == 2
    r = await cli("approve", sid, "--by", "director", "--json")
    assert [v["approved"] for v in r.json["versions"]] == [False, True, False]

    r = await cli("history", sid, "--json")
    assert set(r.json) == {"session", "head", "versions"} and r.json["head"] == 2
    r = await cli("history", sid)
    assert "* v2" in r.out and "approved by director" in r.out

    out = tmp_path / "export"
    r = await cli("export", sid, str(out))
    assert r.code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert [v["image"] for v in manifest["versions"]] == ["v1.jpg", "v2.jpg", "v3.jpg"]
    assert manifest["versions"][1]["approvals"][0]["by"] == "director"
    assert manifest["versions"][2]["parent"] is None and manifest["head"] == 2
    assert manifest["settings"] == {"model": "gemini-3.1-flash-image", "aspect_ratio": "16:9",
                                    "image_size": "2K"}
    assert (out / "v1.jpg").read_bytes() == Path(first["image"]).read_bytes()
    assert API_KEY not in (out / "manifest.json").read_text()


async def test_text_blocked_and_failed_answers(cli: Cli, gemini):
    gemini.script.append(Behaviour.text_only("Which poster do you mean?"))
    r = await cli("edit", "--json", "the poster")
    assert (r.code, r.json) == (0, {"session": 1, "status": "text",
                                    "text": "Which poster do you mean?"})
    gemini.script.append(Behaviour.blocked_prompt("PROHIBITED_CONTENT"))
    r = await cli("edit", "--session", "1", "--json", "something prohibited")
    assert r.code == 3
    assert r.json["status"] == "blocked" and r.json["reason"] == "PROHIBITED_CONTENT"
    assert r.json["message"].endswith(".") and "Traceback" not in r.err
    gemini.script.append(Behaviour.rate_limited("1s", per_day=True))
    r = await cli("edit", "--session", "1", "--json", "a poster")
    assert (r.code, r.json["status"], r.json["reason"]) == (3, "failed", "quota_exhausted")
    r = await cli("history", "1", "--json")
    assert r.json == {"session": 1, "head": None, "versions": []}


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["edit", "--aspect", "7:3", "x"], {}, "does not take aspect ratio 7:3"),
        (["edit", "--size", "2k", "--model", "pro", "--aspect", "1:8", "x"], {}, "1:8"),
        (["edit", "--size", "512", "--model", "pro", "x"], {}, "does not take size 512"),
        (["edit", "--session", "42", "x"], {}, "There is no session 42."),
        (["undo", "42"], {}, "There is no session 42."),
        (["edit", "--ref", "REF_PDF", "x"], {}, "PDF"),
        (["edit", "--ref", "missing.png", "x"], {}, "Cannot read reference missing.png"),
        (["edit", "x"], {"GEMINI_API_KEY": "", "THREADEDIT_ENGINE": "gemini"}, "GEMINI_API_KEY"),
        (["edit", "x"], {"THREADEDIT_ENGINE": "dalle"}, "THREADEDIT_ENGINE"),
        (["edit", "x"], {"GEMINI_BASE_URL": "ftp://x"}, "GEMINI_BASE_URL"),
        (["edit", "x"], {"THREADEDIT_MAX_CONCURRENCY": "lots"}, "THREADEDIT_MAX_CONCURRENCY"),
    ],
)
async def test_bad_input_is_one_sentence_and_sends_nothing(cli: Cli, gemini, tmp_path, args, env,
                                                           needle):
    (tmp_path / "fake.pdf").write_bytes(b"%PDF-1.7\n1 0 obj << >> endobj\n")
    args = [str(tmp_path / "fake.pdf") if a == "REF_PDF" else a for a in args]
    r = await cli(*args, **env)
    assert r.code == 2, (r.out, r.err)
    assert needle in r.err and "Traceback" not in r.err
    assert len(r.err.strip().splitlines()) == 1
    assert gemini.requests == []


async def test_offline_engine_through_the_same_cli(tmp_path: Path):
    cli = Cli(tmp_path, _env(tmp_path))  # no key: the local engine, said in one line
    r = await cli("edit", "--aspect", "16:9", "--json", "a poster in navy and orange")
    assert r.code == 0, r.err
    assert "offline local engine" in r.err
    img = Image.open(r.json["image"])
    assert img.format == "JPEG" and abs(img.width / img.height - 16 / 9) < 0.01
    r = await cli("edit", "--session", "1", "--json", "make it black and white")
    assert r.json["version"] == 2
    px = Image.open(r.json["image"]).convert("RGB").resize((8, 8)).tobytes()
    assert all(max(px[i:i + 3]) - min(px[i:i + 3]) <= 8 for i in range(0, len(px), 3))
    r = await cli("edit", "--session", "1", "--json", "do a backflip")
    assert r.json["status"] == "text" and "only understands" in r.json["text"]
    r = await cli("undo", "1", "--json")
    assert r.json["head"] == 1


async def test_five_turn_seed_scenario_through_the_cli(cli: Cli, gemini):
    from tests.test_service import FIVE_TURNS

    (text, size), rest = FIVE_TURNS[0], FIVE_TURNS[1:]
    r = await cli("edit", "--aspect", "16:9", "--size", size, "--json", text)
    sid = str(r.json["session"])
    for text, size in rest:
        r = await cli("edit", "--session", sid, "--size", size, "--json", text)
        assert r.code == 0 and r.json["status"] == "ok", r.err
    assert r.json["version"] == 5
    for i, req in enumerate(gemini.requests):
        assert req.status == 200
        contents = req.body["contents"]
        assert len(contents) == 2 * i + 1
        assert [contents[2 * j + 1] for j in range(i)] == gemini.issued[:i]
        assert req.body["generationConfig"]["imageConfig"] == {
            "aspectRatio": "16:9", "imageSize": FIVE_TURNS[i][1]}
    r = await cli("history", sid, "--json")
    assert [(v["version"], v["parent"]) for v in r.json["versions"]] == [
        (1, None), (2, 1), (3, 2), (4, 3), (5, 4)]


HUGE = "9" * 5000
# Every command that takes a SESSION or VERSION, with an id it cannot be: past SQLite's INTEGER,
# superscript digits (str.isdigit() says yes), 5,000 digits, a sign.
ODD_IDS = [
    (["history", "99999999999999999999"], "'99999999999999999999' is not a session number"),
    (["history", "\u00b2"], "'\u00b2' is not a session number"),
    (["history", HUGE], "'99999999999999999999...' is not a session number"),
    (["undo", "\u00b2"], "is not a session number"),
    (["retry", HUGE], "is not a session number"),
    (["export", "99999999999999999999", "out"], "is not a session number"),
    (["approve", "-1"], "is not a session number"),
    (["approve", "1", "v99999999999999999999"], "'v99999999999999999999' is not a version number"),
    (["revert", "1", "\u00b9"], "'\u00b9' is not a version number"),
    (["revert", "1", HUGE], "is not a version number"),
    (["edit", "--session", "99999999999999999999", "x"], "is not a session number"),
    (["edit", "--session", "\u00b3", "x"], "is not a session number"),
]


@pytest.mark.parametrize(("args", "needle"), ODD_IDS, ids=lambda v: str(v)[:30])
async def test_odd_ids_are_one_sentence_under_the_commands_usage(cli: Cli, gemini, args, needle):
    r = await cli(*args)
    assert r.code == 2 and "Traceback" not in r.err, r.err
    lines = r.err.strip().splitlines()
    usage, sentence = lines[0], lines[-1]
    assert usage.startswith(f"usage: threadedit {args[0]} "), r.err
    assert sentence.startswith(f"threadedit {args[0]}: ") and needle in sentence, r.err
    assert sentence.endswith(".") and len(sentence) < 200
    assert gemini.requests == []


async def test_the_largest_id_sqlite_holds_is_a_session_that_does_not_exist(cli: Cli):
    r = await cli("history", str(2**63 - 1))
    assert (r.code, r.err.strip()) == (2, f"There is no session {2**63 - 1}.")


@pytest.mark.parametrize(("args", "lines"), [
    (["history", "1", "--bogus"], ["usage: threadedit history [-h] [--json] session",
                                   "threadedit history: unrecognized arguments: --bogus."]),
    (["revert", "1"], ["usage: threadedit revert [-h] [--json] session version",
                       "threadedit revert: the following arguments are required: version."]),
    (["playground", "--port", "http"], [
        "usage: threadedit playground [-h] [--host HOST] [--port PORT]",
        "threadedit playground: 'http' is not a port number from 0 to 65535."]),
    ([], ["threadedit: say which command to run; the commands are edit, retry, undo, revert, approve, "
          "history, export, run, worker, usage, playground, store (threadedit --help says what each does)."]),
    (["histroy", "1"], ["threadedit: 'histroy' is not a threadedit command; the commands are edit, retry, "
                        "undo, revert, approve, history, export, run, worker, usage, playground, store "
                        "(threadedit --help says what each does)."]),
])
async def test_argument_errors_show_the_commands_own_usage_and_one_sentence(cli: Cli, args, lines):
    r = await cli(*args)
    assert (r.code, r.out, r.err.splitlines()) == (2, "", lines)


async def test_help_says_what_threadedit_is_in_whole_sentences(cli: Cli):
    from threadedit.cli import DESCRIPTION, EXIT_STATUS

    r = await cli("--help")
    assert r.code == 0
    text = " ".join(r.out.split())
    assert DESCRIPTION in text and EXIT_STATUS in text
    assert DESCRIPTION.endswith("(THREADEDIT_DATA_DIR).") and EXIT_STATUS.endswith("unchanged).")


def test_every_argument_of_every_command_has_help() -> None:
    import argparse

    from threadedit.cli import _parser

    commands = _parser().commands
    assert set(commands) == {"edit", "retry", "undo", "revert", "approve", "history", "export", "run",
                             "worker", "usage", "playground", "store"}
    nested = {f"{name} {sub}": p for name, c in commands.items() for a in c._actions
              if isinstance(a, argparse._SubParsersAction) for sub, p in a.choices.items()}
    assert set(nested) == {"store copy"}
    missing = [f"{name} {a.dest}" for name, c in {**commands, **nested}.items() for a in c._actions
               if not isinstance(a, argparse._HelpAction) and not (a.help or "").strip()]
    assert missing == []


async def test_the_offline_note_is_said_once_and_only_when_the_engine_answered(tmp_path: Path):
    cli = Cli(tmp_path, _env(tmp_path))  # no key: the offline engine
    note = "No GEMINI_API_KEY is set, so threadedit uses the offline local engine"
    for args in (["edit", "--aspect", "7:3", "x"], ["edit", "--session", "42", "x"], ["retry", "1"],
                 ["history", "1"], ["edit", "--session", "\u00b2", "x"]):
        r = await cli(*args)
        assert r.code == 2 and note not in r.err, (args, r.err)
    r = await cli("edit", "--json", "a poster in navy")
    assert r.code == 0 and r.err.count(note) == 1 and note not in r.out
    r = await cli("edit", "--session", "1", "make it black and white")
    assert r.code == 0 and r.err.count(note) == 1
    r = await cli("retry", "1")
    assert r.code == 0 and r.err.count(note) == 1
    for args in (["history", "1"], ["undo", "1"], ["revert", "1", "1"], ["approve", "1"],
                 ["export", "1", str(tmp_path / "out")], ["usage"]):
        r = await cli(*args)
        assert r.code == 0 and note not in r.out + r.err, (args, r.err)
