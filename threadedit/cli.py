"""`threadedit`: the session operations from a shell. Each call is a new process; state lives in
the data directory. The argument and `--json` shapes are a contract scripts depend on.

Exit status: 0 done, 2 bad input or a refused operation (nothing was sent), 3 the model made
no image (blocked or failed; the session is unchanged).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import re
import sys
import uuid
from collections.abc import Callable, Coroutine
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

from bot import catalog
from bot.allocator import tune_allocator
from bot.app import App, open_app, turn_pipeline
from bot.config import ConfigError, Settings, load_settings
from bot.domain import OperationRefused, SessionKey, Turn
from bot.ids import parse_id
from bot.images import ImageRejected
from bot.results import Attachment, HistoryView, TurnResult
from bot.storage.db import StoreUnavailable
from bot.storage.usage import UsageLedger

EXIT_BAD_INPUT = 2
EXIT_NO_IMAGE = 3
DESCRIPTION = (
    "Edit images in conversation with Gemini from a shell: each instruction makes a new version "
    "of a session's image, which you can undo, revert, retry, approve and export. Each call is a "
    "new process; sessions live in the data directory (THREADEDIT_DATA_DIR).")
EXIT_STATUS = ("Exit status: 0 done, 2 bad input or a refused operation (nothing was sent), 3 the "
               "model made no image (blocked or failed; the session is unchanged).")


class CliError(Exception):
    """Bad input found by the CLI itself; one sentence."""


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return "cli"


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as one sentence under the usage of the command that was meant
    (not the whole top-level usage)."""

    commands: dict[str, argparse.ArgumentParser]

    def parse_args(self, args: Any = None, namespace: Any = None) -> Any:  # type: ignore[override]
        ns, extras = self.parse_known_args(args, namespace)
        if extras:  # argparse reports these on the top-level parser; say them on the command's
            self.commands[ns.command].error(f"unrecognized arguments: {' '.join(extras)}")
        return ns

    def error(self, message: str) -> NoReturn:
        if self.prog == "threadedit":  # no command, or not one of ours
            commands = ", ".join(self.commands)
            said = message.split(": invalid choice: ")[-1].split(" (choose from")[0]
            sentence = (f"{said} is not a threadedit command" if "invalid choice" in message
                        else "say which command to run")
            self.exit(2, f"threadedit: {sentence}; the commands are {commands} "
                         "(threadedit --help says what each does).\n")
        # An argument's own error already names it ("'x' is not a session number ...").
        message = re.sub(r"^argument [^:]+: ", "", message).rstrip(".")
        self.exit(2, f"{self.format_usage()}{self.prog}: {message}.\n")


def _parser() -> _Parser:
    p = _Parser(prog="threadedit", description=DESCRIPTION, epilog=EXIT_STATUS)
    # Subparsers are made of the parent's class, so every command's errors read the same way.
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p.commands = {}

    def command(name: str, text: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        p.commands[name] = c
        return c

    def json_flag(c: argparse.ArgumentParser, what: str) -> None:
        c.add_argument("--json", action="store_true", help=f"print {what} as one JSON object")

    e = command("edit", "start a session or add an instruction to one")
    e.add_argument("instruction", help="what to make or change, in words")
    e.add_argument("--session", type=_session_id, metavar="SESSION",
                   help="the session to continue (default: start a new one)")
    e.add_argument("--ref", action="append", default=[], type=Path, metavar="PATH",
                   help="a reference image to send with the instruction (repeat for several)")
    e.add_argument("--aspect", metavar="RATIO", help="aspect ratio such as 16:9; kept by the session")
    e.add_argument("--size", help="image size (512, 1K, 2K or 4K, as the model allows); kept by the session")
    e.add_argument("--model", help="flash, pro or a Gemini image model id; kept by the session")
    e.add_argument("--by", default=None, metavar="NAME", help="author name (default: your user name)")
    json_flag(e, "the result")

    for name, text in (("retry", "make the last instruction again"),
                       ("undo", "step the head back to its parent")):
        c = command(name, text)
        c.add_argument("session", type=_session_id, help="the session number")
        json_flag(c, "the result" if name == "retry" else "the history")

    r = command("revert", "make any version the head")
    r.add_argument("session", type=_session_id, help="the session number")
    r.add_argument("version", type=_version, help="the version to make the head, such as 3 or v3")
    json_flag(r, "the history")

    a = command("approve", "approve a version (default: the head)")
    a.add_argument("session", type=_session_id, help="the session number")
    a.add_argument("version", type=_version, nargs="?",
                   help="the version, such as 3 or v3 (default: the head)")
    a.add_argument("--by", default=None, metavar="NAME", help="who approves (default: your user name)")
    json_flag(a, "the history")

    h = command("history", "list a session's versions")
    h.add_argument("session", type=_session_id, help="the session number")
    json_flag(h, "the history")

    x = command("export", "write every version's image and manifest.json")
    x.add_argument("session", type=_session_id, help="the session number")
    x.add_argument("dir", type=Path, help="the folder to write into")

    r = command("run", "start every configured chat adapter")
    r.add_argument("--no-worker", dest="work", action="store_false",
                   help="receive and record only: leave the model calls to `threadedit worker` "
                        "processes on the same store")
    command("worker", "run queued turns of every platform from the store and post them "
                      "(Slack Web API, Discord REST); receives nothing")

    u = command("usage", "spend by workspace, user and session")
    u.add_argument("--since", type=_day, default=None, metavar="YYYY-MM-DD",
                   help="first UTC day to count (default: 30 days ago)")
    json_flag(u, "the report")

    pg = command("playground", "serve the local web playground and the gallery")
    pg.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    pg.add_argument("--port", type=_port, default=8765,
                    help="port to listen on (default 8765; 0: any free port)")

    st = command("store", "move the store to another database (see: threadedit store copy --help)")
    st_sub = st.add_subparsers(dest="store_command", required=True, metavar="ACTION",
                               help="what to do with the store")
    cp = st_sub.add_parser(
        "copy", help="copy every row of this data directory's store into PostgreSQL",
        description="Copy every session, turn, version, approval, audit entry, charge, post, event and "
                    "setting of a store into a PostgreSQL store, then check the copy. It can be run "
                    "again: it copies only what is new. Images (blobs/) are not copied.")
    cp.add_argument("--to", required=True, metavar="URL",
                    help="the PostgreSQL store: postgresql+psycopg://user:password@host:5432/database")
    cp.add_argument("--from", dest="source", metavar="URL",
                    help="the store to copy (default: THREADEDIT_DATA_DIR/threadedit.sqlite3)")
    return p


def _shown(text: str) -> str:
    """What was typed, quoted, and cut short: a 5,000-digit id is not echoed whole."""
    return repr(text if len(text) <= 24 else text[:20] + "...")


def _session_id(text: str) -> int:
    value = parse_id(text.strip())
    if value is None or value < 1:
        raise argparse.ArgumentTypeError(f"{_shown(text)} is not a session number such as 12")
    return value


def _version(text: str) -> int:
    value = parse_id(text.strip().lower().removeprefix("v"))
    if value is None or value < 1:
        raise argparse.ArgumentTypeError(f"{_shown(text)} is not a version number such as 3 or v3")
    return value


def _port(text: str) -> int:
    value = parse_id(text.strip())
    if value is None or value > 65535:
        raise argparse.ArgumentTypeError(f"{_shown(text)} is not a port number from 0 to 65535")
    return value


def _day(text: str) -> str:
    try:
        return date.fromisoformat(text.strip()).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date such as 2026-11-01") from None


def _print_usage(report: dict[str, list[dict[str, Any]]], since: str, as_json: bool) -> int:
    if as_json:
        print(json.dumps({"since": since, **report}, ensure_ascii=False))
        return 0
    print(f"Spend since {since} in USD (a call still running counts at its estimate):")
    labels = {"workspaces": ("workspace",), "users": ("workspace", "user"),
              "sessions": ("workspace", "session_id")}
    for group, rows in report.items():
        print(f"By {group[:-1]}:")
        if not rows:
            print("  nothing yet")
        for row in rows:
            who = " ".join([row["platform"], *(str(row[c]) for c in labels[group])])
            print(f"  {who:<40} ${row['usd']:>9.4f}  {row['calls']} calls, {row['images']} images")
    return 0


def _read_refs(paths: list[Path]) -> list[Attachment]:
    refs = []
    for path in paths:
        try:
            refs.append(Attachment(path.read_bytes(), path.name))
        except OSError as exc:
            raise CliError(f"Cannot read reference {path}: {exc.strerror or exc}.") from None
    return refs


def _print_turn(result: TurnResult, as_json: bool, offline: bool) -> int:
    if as_json:
        print(json.dumps(result.as_cli_json(), ensure_ascii=False))
    elif result.status == "ok":
        print(f"v{result.version} of session {result.session_id}: {result.image_path}")
        if result.text:
            print(result.text)
    elif result.status == "text":
        who = catalog.answered_by(result.model, offline)
        print(f"Session {result.session_id}: no new version; {who} answered in words: {result.text}")
    else:
        print(f"Session {result.session_id}: {result.message}", file=sys.stderr)
    return 0 if result.status in ("ok", "text") else EXIT_NO_IMAGE


def _print_history(view: HistoryView, as_json: bool) -> int:
    if as_json:
        print(json.dumps(view.as_cli_json(), ensure_ascii=False))
        return 0
    if view.notice:
        print(view.notice)
    print(f"Session {view.session_id} · {view.model} · aspect {view.aspect_ratio or 'auto'}"
          f" · size {view.image_size or 'default'}")
    if not view.versions:
        print("No versions yet.")
    for v in view.versions:
        mark = "*" if v.version == view.head else " "
        parent = f"from v{v.parent}" if v.parent else "root"
        approved = f"  approved by {', '.join(v.approved_by)}" if v.approved else ""
        print(f"{mark} v{v.version:<3} {parent:<8} {v.author}: {v.instruction}{approved}")
        print(f"        {v.image_path}")
    return 0


# Platforms whose outcomes are read from the store, not posted: the CLI may run their turns. A
# Slack or Discord session's turn is left to the process serving that platform, which posts it.
READ_FROM_THE_STORE = frozenset({"cli", "playground"})


async def _run_queued(app: App, turn: Turn) -> TurnResult:
    """Run the turn through the store's queue, as every process does: after the session's earlier
    turns, never while another process (a playground, a worker) holds it, and by whichever takes
    it first; this process takes only this session's turns, and only if nothing must be posted."""
    session = await app.reads.session(turn.session_id)
    if session.key.platform not in READ_FROM_THE_STORE:
        print(f"Session {session.id} is a {session.key.platform} thread: the instruction is queued "
              f"for the process serving {session.key.platform}, which posts the result there. "
              "Waiting for it (Ctrl-C stops waiting; the instruction stays queued).",
              file=sys.stderr, flush=True)
    pipeline = turn_pipeline(app, session_id=turn.session_id, platforms=READ_FROM_THE_STORE)
    try:
        return await pipeline.submit(turn)
    finally:
        await pipeline.aclose()


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    cmd = args.command
    refs = _read_refs(args.ref) if cmd == "edit" else []
    async with open_app(settings) as app:
        svc = app.service
        who = getattr(args, "by", None) or _user()
        if cmd in ("edit", "retry"):
            if cmd == "retry":
                turn = await svc.submit_retry(args.session, who)
            else:
                target: int | SessionKey = (
                    args.session if args.session is not None
                    else SessionKey("cli", "local", "cli", uuid.uuid4().hex)
                )
                turn = await svc.submit_edit(target, who, args.instruction, refs, model=args.model,
                                             aspect=args.aspect, size=args.size)
            code = _print_turn(await _run_queued(app, turn), args.json, app.engine.offline)
            if code == 0 and settings.engine_notice:  # said only when the engine made the answer
                print(settings.engine_notice, file=sys.stderr)
            return code
        ops: dict[str, Callable[[App], Coroutine[Any, Any, HistoryView]]] = {
            "undo": lambda a: a.service.undo(args.session, who),
            "revert": lambda a: a.service.revert(args.session, who, args.version),
            "approve": lambda a: a.service.approve(args.session, who, args.version),
            "history": lambda a: a.service.history(args.session),
        }
        if cmd in ops:
            view = await ops[cmd](app)
            # The paths printed are files on this machine: with an S3 image store, fetch the
            # ones this machine has not cached yet (a version's file is named by its key).
            for v in view.versions:
                await app.blobs.local_path(v.image_path.name)
            return _print_history(view, args.json)
        if cmd == "usage":
            since = args.since or (datetime.now(UTC).date() - timedelta(days=30)).isoformat()
            return _print_usage(await UsageLedger(app.store).report(since), since, args.json)
        if cmd == "export":
            # absolute, not resolve: a link named as the target is the export's to refuse
            written = await svc.export(args.session, args.dir.absolute())
            print(f"Exported session {args.session} to {written}")
            return 0
    raise AssertionError(cmd)


def _run_adapters(settings: Settings, work: bool) -> int:
    # The chat adapters live outside the core; the core never imports a platform library,
    # so they are loaded only for this command.
    from adapters.runner import run

    return asyncio.run(run(settings, work=work))


def _run_worker(settings: Settings) -> int:
    from adapters.worker import work

    return asyncio.run(work(settings))


def _run_playground(settings: Settings, host: str, port: int) -> int:
    # A web server is an adapter too: its module (and aiohttp, jinja2) load for this command only.
    from adapters.playground.server import serve

    return asyncio.run(serve(settings, host, port))


def _store_copy(args: argparse.Namespace, settings: Settings) -> int:
    from bot.storage.copy import CopyRefused, blob_folder, copy_store
    from bot.storage.engine import MigrationError, sqlite_url

    source = args.source or sqlite_url(settings.db_path)
    try:
        report = asyncio.run(copy_store(source, args.to))
    except (CopyRefused, MigrationError) as exc:
        raise CliError(str(exc)) from None
    print(f"Copied {report.source} to {report.target}:")
    for t in report.tables:
        print(f"  {t.name:<15} {t.rows:>7} rows: {t.copied} copied, {t.updated} updated, "
              f"{t.skipped} already there, {t.deleted} deleted")
    print(f"Checked: each table has as many rows in both stores, and all {report.rows_compared} rows "
          f"are equal value for value ({report.sessions_replayed} sessions with their turns and "
          "approvals replayed).")
    blobs = blob_folder(source)
    print(f"Images are not in the database and were not copied: they stay in {blobs or 'the blob store'}, "
          "which every threadedit process on this machine can share.")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
        logging.basicConfig(level=settings.log_level if settings.log_level != "INFO" else "WARNING",
                            format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
        if args.command == "store":  # needs no model engine
            return _store_copy(args, settings)
        settings.require_engine_ready()
        if args.command in ("run", "playground", "worker"):
            tune_allocator()  # long-running: keep resident memory near what is in use
        if args.command == "run":
            return _run_adapters(settings, args.work)
        if args.command == "worker":
            return _run_worker(settings)
        if args.command == "playground":
            return _run_playground(settings, args.host, args.port)
        return asyncio.run(_run(args, settings))
    except (ConfigError, CliError, StoreUnavailable) as exc:
        print(str(exc), file=sys.stderr)
    except (OperationRefused, ImageRejected) as exc:
        print(exc.message, file=sys.stderr)
    return EXIT_BAD_INPUT
