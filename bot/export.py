"""Exporting a session: every version's original image bytes and a manifest.json.

Into a folder (`v1.jpg`, `v2.png`, ..., `manifest.json`), or into a zip file when the target's
name ends in `.zip` (the same files under one folder named after the zip). The export is built
aside first (a temporary folder inside the target folder, or a temporary file beside the zip)
and moved into place only once every file is written: a missing image or a full disk leaves the
target as it was. Nothing here follows a symbolic link inside the target: files are created with
O_EXCL | O_NOFOLLOW in a folder of our own, and renamed over whatever had their name, so a link
named `v1.jpg` is replaced, never written through. A folder that already holds anything other
than an earlier export of the same session is refused, as is such a zip file. Every failure is
an OperationRefused with one sentence, raised before the target changes.

Blocking file I/O: call it from a thread when on an event loop.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from bot.domain import OperationRefused, SessionState, Turn
from bot.storage.blobs import BlobStore

MANIFEST_VERSION = 1
MANIFEST = "manifest.json"
TMP_PREFIX = ".threadedit-export-"  # our own unfinished work inside or beside the target
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
_READ_NOFOLLOW = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK  # a FIFO named manifest.json never blocks
_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY
_MAX_MANIFEST_BYTES = 64 * 1024 * 1024  # reading an earlier export's manifest to see whose it is


def _image_name(turn: Turn) -> str:
    ext = (turn.image_blob or ".bin").rsplit(".", 1)[-1]
    return f"v{turn.version}.{ext}"


def build_manifest(state: SessionState, audit: list[dict[str, Any]]) -> dict[str, Any]:
    s = state.session
    head = state.head
    versions = []
    for t in state.versions:
        versions.append({
            "version": t.version,
            "parent": state.parent_version(t),
            "kind": t.kind.value,
            "instruction": t.instruction,
            "author": t.author,
            "asked_at": t.created_at,
            "finished_at": t.finished_at,
            "model": t.model,
            "aspect_ratio": t.aspect_ratio,
            "image_size": t.image_size,
            "image": _image_name(t),
            "mime": t.image_mime,
            "sha256": (t.image_blob or "").split(".")[0],
            "text": t.text_reply,
            # The request was re-anchored: the model saw the decisions so far and the parent
            # image, not the whole conversation (bot/context.py).
            "condensed_history": t.anchor_content is not None,
            "approvals": [
                {"by": a.approved_by, "at": a.approved_at, "withdrawn_by": a.withdrawn_by,
                 "withdrawn_at": a.withdrawn_at}
                for a in state.approvals if a.turn_id == t.id
            ],
            "approved": bool(state.approvers_of(t.id)),
        })
    others = [
        {"state": t.state.value, "instruction": t.instruction, "author": t.author,
         "asked_at": t.created_at, "reason": t.reason, "message": t.message,
         "text": t.text_reply, "parent": state.parent_version(t)}
        for t in state.turns if not t.is_version
    ]
    return {
        "manifest_version": MANIFEST_VERSION,
        "session": s.id,
        "platform": s.key.platform,
        "workspace": s.key.workspace,
        "channel": s.key.channel,
        "thread": s.key.thread,
        "started_by": s.started_by,
        "created_at": s.created_at,
        "settings": {"model": s.model, "aspect_ratio": s.aspect_ratio, "image_size": s.image_size},
        "head": head.version if head else None,
        "versions": versions,
        "other_turns": others,
        "audit": audit,
    }


def write_export(
    state: SessionState, blobs: BlobStore, audit: list[dict[str, Any]], target: Path
) -> Path:
    """Export the session to `target` (a folder, or a zip file when it ends in .zip); the path
    written. Raises OperationRefused with one sentence, leaving the target unchanged."""
    manifest = json.dumps(build_manifest(state, audit), indent=2, ensure_ascii=False).encode()
    try:
        if target.suffix.lower() == ".zip":
            _write_zip(state, blobs, manifest, target)
        else:
            _write_folder(state, blobs, manifest, target)
    except OSError as exc:
        raise OperationRefused(f"Cannot export to {target}: {_why(exc)}.", "export_failed") from None
    return target


# --- into a folder -------------------------------------------------------------------------------
def _write_folder(state: SessionState, blobs: BlobStore, manifest: bytes, folder: Path) -> None:
    names = [_image_name(t) for t in state.versions] + [MANIFEST]
    made = _make_folder(folder)
    try:
        dir_fd = os.open(folder, _DIRECTORY)
    except OSError:
        _forget(folder, made)
        raise
    try:
        _check_folder(dir_fd, folder, state.session.id, names)
        tmp = tempfile.mkdtemp(prefix=TMP_PREFIX, dir=folder)  # ours alone: mode 0700, new name
        try:
            tmp_fd = os.open(os.path.basename(tmp), _DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
            try:
                for turn in state.versions:
                    with _new_file(_image_name(turn), tmp_fd) as out:
                        _copy_blob(blobs, turn, out)
                with _new_file(MANIFEST, tmp_fd) as out:
                    out.write(manifest)
                # rename replaces a link of that name rather than following it; manifest last,
                # so a folder with a manifest holds every image it lists.
                for name in names:
                    os.rename(name, name, src_dir_fd=tmp_fd, dst_dir_fd=dir_fd)
            finally:
                os.close(tmp_fd)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        _forget(folder, made)
        raise
    finally:
        os.close(dir_fd)


def _make_folder(folder: Path) -> bool:
    """Create the folder if need be; True when this export made it (and so may remove it)."""
    try:
        st = folder.stat()
    except FileNotFoundError:
        folder.mkdir(parents=True)
        return True
    if not stat.S_ISDIR(st.st_mode):
        raise OperationRefused(f"{folder} is a file, not a folder; export into a folder, or to a "
                               "name ending in .zip to get a zip file.", "export_target")
    return False


def _forget(folder: Path, made: bool) -> None:
    if made:
        with contextlib.suppress(OSError):
            folder.rmdir()


def _check_folder(dir_fd: int, folder: Path, session_id: int, names: list[str]) -> None:
    """Refuse a folder holding anything but an earlier export of this session."""
    entries = [e for e in os.listdir(dir_fd) if not e.startswith(TMP_PREFIX)]
    if not entries:
        return
    owner = _manifest_session(lambda: os.open(MANIFEST, _READ_NOFOLLOW, dir_fd=dir_fd))
    if owner != session_id:
        raise _not_ours(folder, "folder", session_id, owner)
    for name in names:  # a folder in a file's place would stop the move half-way
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
                raise OperationRefused(f"{folder / name} is a folder, where the export writes a file; "
                                       "export into an empty or new folder.", "export_target")


def _manifest_session(opener: Any) -> int | None:
    """The session an earlier export's manifest names, or None when it is not one."""
    try:
        fd = opener()
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return None
            data = json.loads(f.read(_MAX_MANIFEST_BYTES))
    except (OSError, ValueError):
        return None
    return _session_of(data)


def _session_of(data: object) -> int | None:
    if isinstance(data, dict) and "manifest_version" in data and type(data.get("session")) is int:
        return int(data["session"])
    return None


def _not_ours(target: Path, kind: str, session_id: int, owner: int | None) -> OperationRefused:
    holds = (f"holds the export of session {owner}" if owner is not None
             else "is not empty" if kind == "folder" else "already exists")
    return OperationRefused(f"{target} {holds}; export session {session_id} into an empty or new "
                            f"{'folder' if kind == 'folder' else 'file name'}.", "export_target")


@contextlib.contextmanager
def _new_file(name: str, dir_fd: int) -> Iterator[BinaryIO]:
    fd = os.open(name, _NEW_FILE, 0o644, dir_fd=dir_fd)
    with os.fdopen(fd, "wb") as out:
        yield out


def _copy_blob(blobs: BlobStore, turn: Turn, out: BinaryIO) -> None:
    assert turn.image_blob is not None
    try:
        with blobs.path(turn.image_blob).open("rb") as src:
            shutil.copyfileobj(src, out)
    except FileNotFoundError:
        raise _missing(turn) from None


def _missing(turn: Turn) -> OperationRefused:
    return OperationRefused(f"The image of v{turn.version} is missing from the data directory's "
                            "blob store, so nothing was exported.", "export_missing_image")


# --- into a zip file -----------------------------------------------------------------------------
def _write_zip(state: SessionState, blobs: BlobStore, manifest: bytes, target: Path) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # a file where the folder would be: say what is wrong with it
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR)) from None
    _check_zip_target(target, state.session.id)
    folder = target.name[: -len(".zip")] or "export"
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=".zip", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f, zipfile.ZipFile(f, "w") as z:
            z.writestr(f"{folder}/{MANIFEST}", manifest, compress_type=zipfile.ZIP_DEFLATED)
            for turn in state.versions:
                assert turn.image_blob is not None
                source = blobs.path(turn.image_blob)
                if not source.is_file():
                    raise _missing(turn)
                # Images are already compressed; deflating them again only costs time.
                z.write(source, f"{folder}/{_image_name(turn)}", compress_type=zipfile.ZIP_STORED)
        os.chmod(tmp, 0o644)  # as a file the user saved, not mkstemp's 0600
        os.replace(tmp, target)  # replaces a link of that name, never writes through it
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _check_zip_target(target: Path, session_id: int) -> None:
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        raise OperationRefused(f"{target} is a folder; give a new file name ending in .zip, or "
                               "a folder name without .zip.", "export_target")

    def session_in_zip() -> int | None:
        if not stat.S_ISREG(st.st_mode):  # a link, a device: never an earlier export
            return None
        try:
            with zipfile.ZipFile(target) as z:
                name = next((n for n in z.namelist() if n.rsplit("/", 1)[-1] == MANIFEST), None)
                if name is None or z.getinfo(name).file_size > _MAX_MANIFEST_BYTES:
                    return None
                return _session_of(json.loads(z.read(name)))
        except (OSError, ValueError, zipfile.BadZipFile):
            return None

    owner = session_in_zip()
    if owner != session_id:
        raise _not_ours(target, "zip", session_id, owner)


def _why(exc: OSError) -> str:
    reason = exc.strerror or str(exc) or type(exc).__name__
    return reason[0].lower() + reason[1:] if reason else "it failed"
