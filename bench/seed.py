"""A data directory with many stored sessions, written through the store's own methods.

Each session is a playground session (so the playground may edit it) with a chain of versions,
each version a model answer shaped like Gemini 3's (a thought text, a thought sketch, a signed
text, the signed final image) whose image is one of the 2K photo variants. The blob store is
content-addressed, so a thousand sessions share four image files on disk while every version
still reads a full 1 MB image when it is replayed. No model made these answers, so a fake model
serving such a directory runs with `--trust-history` (it cannot recognise its own signatures).

Each answer's text and image carry signatures of the real size, 0.6 MB each as Gemini 3.1 Flash
signs them (tests/fakes/gemini_recorded.py), one pair per photo variant: the store keeps large
signatures as blobs too, so they are shared on disk like the images, and read in full on replay.
"""

from __future__ import annotations

import base64
import io
import uuid
from pathlib import Path
from typing import Any

from PIL import Image

from bench import photos
from bench.wiring import instruction
from bot import catalog
from bot.app import open_app
from bot.config import load_settings
from bot.domain import SessionKey, TurnKind, TurnState
from bot.gemini.contents import user_content
from bot.local_engine import LocalEngine
from bot.storage.blobs import BlobStore, pack_content
from tests.fakes.gemini_recorded import signature, signature_chars

SIZE = (2048, 2048)


def _sketch() -> str:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), (128, 128, 128)).save(out, "PNG")
    return base64.b64encode(out.getvalue()).decode()


def _templates(photo_dir: Path, blobs: BlobStore) -> list[dict[str, Any]]:
    """One packed model content per photo variant (packing hashes and stores the image once)."""
    sketch = _sketch()
    out = []
    for n, data in enumerate(photos.load(photo_dir, SIZE)):
        content = {"role": "model", "parts": [
            {"text": "**Planning the edit**\n\nComposing the change.", "thought": True},
            {"inlineData": {"mimeType": "image/png", "data": sketch}, "thought": True},
            {"text": "Here is the edited image.",
             "thoughtSignature": signature(signature_chars(catalog.FLASH, "text"), f"seed/{n}/t")},
            {"inlineData": {"mimeType": "image/jpeg", "data": base64.b64encode(data).decode()},
             "thoughtSignature": signature(signature_chars(catalog.FLASH, "image"), f"seed/{n}/i")},
        ]}
        out.append(pack_content(content, blobs))
    return out


async def seed(data_dir: Path, photo_dir: Path, sessions: int, versions: int) -> list[int]:
    """Store `sessions` sessions of `versions` versions each; their ids are also written to
    session-ids.txt in the data directory."""
    settings = load_settings(_env_file=None, THREADEDIT_DATA_DIR=str(data_dir),
                             THREADEDIT_ENGINE="local")
    ids = []
    async with open_app(settings, engine=LocalEngine()) as app:
        store, blobs = app.store, app.blobs
        templates = _templates(photo_dir, blobs)
        image_of = [t["parts"][3]["inlineData"]["data"].removeprefix("blob:") for t in templates]
        usage = {"promptTokenCount": 1200, "candidatesTokenCount": 1680, "totalTokenCount": 3120}
        for s in range(sessions):
            key = SessionKey("playground", "local", "local", uuid.uuid4().hex)
            session = await store.create_session(key, "bench", catalog.FLASH, "1:1", "2K")
            await store.audit(session.id, "bench", "start", "ok", key=key.__dict__)
            parent = None
            for v in range(1, versions + 1):
                text = instruction(v)
                turn = await store.add_turn(
                    session, kind=TurnKind.EDIT, instruction=text, author="bench",
                    user_content=pack_content(user_content(text), blobs),
                    parent_turn_id=parent, model=catalog.FLASH, aspect="1:1", size="2K")
                await store.audit(session.id, "bench", "edit", "ok", turn=turn.id, references=0)
                await store.mark_running(turn.id, parent)
                n = (s + v) % len(templates)
                await store.finish_turn(turn, TurnState.DONE, model_content=templates[n],
                                        image_blob=image_of[n], image_mime="image/jpeg",
                                        text_reply="Here is the edited image.", usage=usage)
                parent = turn.id
            ids.append(session.id)
    (data_dir / "session-ids.txt").write_text("\n".join(map(str, ids)) + "\n")
    return ids
