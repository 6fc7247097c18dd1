"""THREADEDIT_BLOB_STORE=s3://bucket/prefix against a real local S3 endpoint: moto's server mode on
a free 127.0.0.1 port. Two S3BlobStore objects with their own cache folders on one bucket stand
for two machines."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from adapters.playground.thumbs import Thumbnails
from bot.app import open_app, open_blob_store
from bot.config import ConfigError, load_settings
from bot.domain import SessionKey
from bot.local_engine import LocalEngine
from bot.storage.blobs import BlobCorrupt
from bot.storage.db import StoreUnavailable
from bot.storage.s3 import S3BlobStore
from bot.storage.usage import UsageLedger
from tests.processes import free_port, run_to_end

ROOT = Path(__file__).resolve().parents[1]
BUCKET = "threadedit-images"
SECRET = "moto-secret-never-shown"
KEY = SessionKey("cli", "local", "cli", "s3")


@dataclass
class S3:
    server: ThreadedMotoServer
    port: int

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> Any:
        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id="moto",
                            aws_secret_access_key=SECRET, region_name="us-east-1")

    def store(self, cache: Path, prefix: str = "team/blobs") -> S3BlobStore:
        return S3BlobStore(f"s3://{BUCKET}/{prefix}", cache, endpoint=self.endpoint, region="us-east-1",
                           access_key_id="moto", secret_access_key=SECRET)

    def env(self, prefix: str = "team/blobs") -> dict[str, str]:
        return {"THREADEDIT_BLOB_STORE": f"s3://{BUCKET}/{prefix}", "AWS_ENDPOINT_URL": self.endpoint,
                "AWS_ACCESS_KEY_ID": "moto", "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_REGION": "us-east-1"}

    def stop(self) -> None:
        self.server.stop()

    def start(self) -> None:
        # moto keeps its buckets in this process, so a server started again serves them again.
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()


@pytest.fixture
def s3() -> Iterator[S3]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    s3 = S3(server, port)
    s3.client().create_bucket(Bucket=BUCKET)
    try:
        yield s3
    finally:
        try:
            s3.stop()
        except Exception:  # noqa: BLE001 - a test stopped it already
            pass


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_round_trip_put_get_path(s3: S3, tmp_path: Path) -> None:
    blobs = s3.store(tmp_path / "cache")
    data = os.urandom(300_000)
    key = blobs.put(data, "image/png")
    assert key == f"{sha(data)}.png"
    # Durable in the bucket, in the local folder's layout, under the prefix.
    body = s3.client().get_object(Bucket=BUCKET, Key=f"team/blobs/{key[:2]}/{key}")["Body"].read()
    assert body == data
    assert blobs.get(key) == data and blobs.path(key).read_bytes() == data
    # A lost cache file is read back from the bucket.
    blobs.path(key).unlink()
    assert blobs.path(key).read_bytes() == data
    with pytest.raises(FileNotFoundError, match="neither the local cache nor the image store"):
        blobs.path(f"{sha(b'never stored')}.png")


def test_what_one_machine_writes_the_other_reads(s3: S3, tmp_path: Path) -> None:
    machine_a, machine_b = s3.store(tmp_path / "a"), s3.store(tmp_path / "b")
    data = os.urandom(1_500_000)
    key = machine_a.put(data, "image/jpeg")
    assert not (tmp_path / "b" / key[:2] / key).exists()
    path = machine_b.path(key)
    assert path.is_relative_to(tmp_path / "b")
    assert path.read_bytes() == data and sha(path.read_bytes()) == key.split(".")[0]
    assert machine_b.b64(key) == machine_a.b64(key)


def test_a_corrupted_download_is_refused(s3: S3, tmp_path: Path) -> None:
    machine_a, machine_b = s3.store(tmp_path / "a"), s3.store(tmp_path / "b")
    key = machine_a.put(b"the real image", "image/png")
    s3.client().put_object(Bucket=BUCKET, Key=f"team/blobs/{key[:2]}/{key}", Body=b"something else")
    with pytest.raises(BlobCorrupt, match="returned damaged bytes"):
        machine_b.path(key)
    assert not machine_b.local_file(key).exists()  # nothing damaged was kept
    assert machine_a.get(key) == b"the real image"  # the writer's own copy stays


def test_a_write_to_a_stopped_endpoint_is_one_sentence(s3: S3, tmp_path: Path) -> None:
    blobs = s3.store(tmp_path / "cache")
    s3.stop()
    with pytest.raises(Exception) as caught:
        blobs.put(b"new image", "image/png")
    assert type(caught.value).__name__ == "BlobStoreUnavailable"
    message = str(caught.value)
    assert message.startswith(f"The image store at 127.0.0.1:{s3.port} (bucket {BUCKET}) is unreachable")
    assert SECRET not in message and "\n" not in message
    assert not list((tmp_path / "cache").rglob("*.png"))  # never cached before it is durable


def settings_for(s3: S3, data_dir: Path, **more: str) -> Any:
    env = {f"THREADEDIT_{k}": v for k, v in
           {"DATA_DIR": str(data_dir), "ENGINE": "local", "DAILY_BUDGET_USD": "0"}.items()}
    return load_settings(**{**env, **s3.env(), **more})


async def test_export_and_thumbnails_from_an_s3_store(s3: S3, tmp_path: Path) -> None:
    async with open_app(settings_for(s3, tmp_path / "one"), engine=LocalEngine()) as app:
        turn = await app.service.submit_edit(KEY, "ana", "a red poster")
        result = await app.service.run_turn(turn.id)
        assert result.status == "ok" and result.image_path is not None
        made = result.image_path.read_bytes()
        key = result.image_path.name
    # Another machine: its own data directory and an empty cache, the same bucket and database.
    other = settings_for(s3, tmp_path / "two", THREADEDIT_DATABASE_URL=app.settings.database_url)
    async with open_app(other, engine=LocalEngine()) as app2:
        assert not app2.blobs.local_file(key).exists()
        out = await app2.service.export(result.session_id, tmp_path / "export")
        exported = [p for p in out.iterdir() if p.suffix in (".png", ".jpg")]
        assert [p.read_bytes() for p in exported] == [made]
        thumbs = Thumbnails(tmp_path / "two" / "thumbs", app2.blobs)
        thumb = await thumbs.get(key, "sm")
        assert thumb.read_bytes()[:3] == b"\xff\xd8\xff"  # a JPEG made from the downloaded image


class StopsTheStoreEngine(LocalEngine):
    """The offline engine, priced like a real one, that stops the S3 endpoint once it answered:
    the endpoint goes down between the model's answer and the image's write."""

    offline = False

    def __init__(self, s3: S3) -> None:
        super().__init__()
        self.s3 = s3
        self.stop_next = False

    async def generate(self, *args: Any, **kwargs: Any) -> Any:
        answer = await super().generate(*args, **kwargs)
        if self.stop_next:
            self.stop_next = False
            await asyncio.to_thread(self.s3.stop)
        return answer


async def test_the_endpoint_down_during_a_turn_fails_it_cleanly_and_retryably(s3: S3,
                                                                              tmp_path: Path) -> None:
    engine = StopsTheStoreEngine(s3)
    async with open_app(settings_for(s3, tmp_path / "data"), engine=engine) as app:
        first = await app.service.submit_edit(KEY, "ana", "a red poster")
        assert (await app.service.run_turn(first.id)).status == "ok"
        engine.stop_next = True
        turn = await app.service.submit_edit(first.session_id, "ana", "make it sepia")
        result = await app.service.run_turn(turn.id)
        assert result.status == "failed" and result.reason == "blob_store_unavailable"
        assert result.message is not None and result.message.startswith(
            f"The image store at 127.0.0.1:{s3.port} (bucket {BUCKET}) is unreachable")
        assert "history is intact" in result.message and SECRET not in result.message
        history = await app.service.history(first.session_id)
        assert [v.version for v in history.versions] == [1] and history.head == 1
        # The model was paid for the image that could not be kept: the budget counts it.
        usage = {row["turn_id"]: row["state"] for row in await UsageLedger(app.store).rows()}
        assert usage == {first.id: "charged", turn.id: "charged"}
        # Back up: the same instruction, retried, makes v2.
        await asyncio.to_thread(s3.start)
        again = await app.service.submit_retry(first.session_id, "ana")
        assert again.instruction == "make it sepia"
        retried = await app.service.run_turn(again.id)
        assert retried.status == "ok" and retried.version == 2


def cli_env(tmp: Path, s3_env: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEMINI_", "THREADEDIT_", "AWS_"))}
    env.update(PYTHONPATH=str(ROOT), THREADEDIT_DATA_DIR=str(tmp / "data"), THREADEDIT_ENGINE="local",
               **s3_env)
    return env


async def test_the_cli_edits_with_its_images_in_the_bucket(s3: S3, tmp_path: Path) -> None:
    code, out, err = await run_to_end(tmp_path, cli_env(tmp_path, s3.env()), "edit", "a boat")
    assert code == 0, err
    image = Path(out.splitlines()[0].rsplit(": ", 1)[1])  # "v1 of session 1: PATH"
    key = image.name
    body = s3.client().get_object(Bucket=BUCKET, Key=f"team/blobs/{key[:2]}/{key}")["Body"].read()
    assert body == image.read_bytes() and sha(body) == key.split(".")[0]


async def test_an_unreachable_store_at_start_is_one_sentence_and_exit_2(s3: S3, tmp_path: Path) -> None:
    env = s3.env()
    env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    code, out, err = await run_to_end(tmp_path, cli_env(tmp_path, env), "edit", "a boat")
    assert code == 2 and out == ""
    assert err.startswith("The image store at 127.0.0.1:") and "is unreachable" in err, err
    assert err.count("\n") == 1 and SECRET not in err and "Traceback" not in err
    env = s3.env(prefix="x")
    env["THREADEDIT_BLOB_STORE"] = "s3://no-such-bucket/x"
    code, _, err = await run_to_end(tmp_path, cli_env(tmp_path, env), "edit", "a boat")
    assert code == 2 and err.startswith(f"The image store at 127.0.0.1:{s3.port} (bucket no-such-bucket) "
                                        "has no such bucket"), err


@pytest.mark.parametrize("name, value, says", [
    ("THREADEDIT_BLOB_STORE", "gs://bucket/x", "THREADEDIT_BLOB_STORE must be a folder or s3://bucket/prefix"),
    ("THREADEDIT_BLOB_STORE", "s3:///x", "THREADEDIT_BLOB_STORE must be a folder or s3://bucket/prefix"),
    ("AWS_ENDPOINT_URL", "127.0.0.1:9000", "AWS_ENDPOINT_URL must be the S3 endpoint's address"),
])
def test_bad_blob_settings_are_one_sentence(tmp_path: Path, name: str, value: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(THREADEDIT_DATA_DIR=str(tmp_path), **{name: value})
    assert str(caught.value).startswith(says)


def test_a_local_folder_store_and_the_default(tmp_path: Path) -> None:
    assert load_settings(THREADEDIT_DATA_DIR=str(tmp_path)).blob_dir == tmp_path / "blobs"
    folder = load_settings(THREADEDIT_DATA_DIR=str(tmp_path), THREADEDIT_BLOB_STORE=str(tmp_path / "imgs"))
    assert folder.blob_dir == tmp_path / "imgs" and not folder.blob_is_s3



async def test_a_turn_on_a_machine_that_cannot_read_the_parent_image_fails_cleanly(s3: S3,
                                                                                  tmp_path: Path) -> None:
    async with open_app(settings_for(s3, tmp_path / "one"), engine=LocalEngine()) as app:
        first = await app.service.submit_edit(KEY, "ana", "a red poster")
        assert (await app.service.run_turn(first.id)).status == "ok"
    other = settings_for(s3, tmp_path / "two", THREADEDIT_DATABASE_URL=app.settings.database_url)
    async with open_app(other, engine=LocalEngine()) as app2:
        await asyncio.to_thread(s3.stop)  # machine two has never seen v1, and now cannot fetch it
        turn = await app2.service.submit_edit(first.session_id, "ana", "make it sepia")
        result = await app2.service.run_turn(turn.id)
        assert result.status == "failed" and result.message is not None
        assert result.message.startswith(f"The image store at 127.0.0.1:{s3.port} (bucket {BUCKET}) is "
                                         "unreachable, so the image could not be read"), result.message
        await asyncio.to_thread(s3.start)
        again = await app2.service.submit_retry(first.session_id, "ana")
        assert (await app2.service.run_turn(again.id)).version == 2


async def test_a_key_id_without_its_secret_is_one_sentence(s3: S3, tmp_path: Path) -> None:
    settings = settings_for(s3, tmp_path, AWS_SECRET_ACCESS_KEY="")
    with pytest.raises(StoreUnavailable) as caught:
        await open_blob_store(settings)
    assert str(caught.value) == (
        f"The image store at 127.0.0.1:{s3.port} (bucket {BUCKET}) cannot be used as set "
        "(Generic S3 error: Missing SecretAccessKey); check the AWS_* settings.")
