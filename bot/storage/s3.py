"""Blobs in an S3-compatible bucket, shared by every machine, with a local read-through cache.

The bucket is the source of truth. `put` writes there first, so a key is never recorded in the
store before its bytes are durable where every machine can read them; then it keeps a copy in
the cache folder. `path(key)` is "make sure there is a local copy, then its path": bytes are
downloaded once per machine and checked against their sha256 (the key) before they are kept.
Content never changes under a key, so the cache is never stale; it is not bounded either (a
folder of immutable copies, safe to delete while threadedit is stopped).

obstore, not boto3 or aioboto3: one small wheel with no Python dependencies (no botocore pins
next to our own), sync calls that fit this interface (blob writes already run off the event
loop in threads, and readers want a file path), and it reads the standard AWS_* variables.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import obstore
from obstore.exceptions import BaseError, PermissionDeniedError, UnauthenticatedError
from obstore.store import S3Store

from bot.storage.blobs import BlobCorrupt, BlobStore, BlobStoreUnavailable, blob_key, write_file

log = logging.getLogger(__name__)
T = TypeVar("T")

# Limits we chose: a refused connection fails within about a second (3 quick retries), a silent
# host within CONNECT_TIMEOUT times the retries, at most RETRY_TIMEOUT in all; one request (a
# 4 MB image on a slow link) may take up to REQUEST_TIMEOUT.
CONNECT_TIMEOUT = timedelta(seconds=5)
REQUEST_TIMEOUT = timedelta(seconds=120)
RETRY_TIMEOUT = timedelta(seconds=15)
MAX_RETRIES = 3
# Written by `check()` at start: proves the bucket exists, is reachable and takes our writes.
PROBE_OBJECT = "threadedit-store-check"


def parse_s3_url(url: str) -> tuple[str, str]:
    """`s3://bucket/prefix` as (bucket, prefix without slashes at either end)."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
        raise ValueError("must be a folder or s3://bucket/prefix")
    return parts.netloc, parts.path.strip("/")


class S3BlobStore(BlobStore):
    def __init__(self, url: str, cache: Path, *, endpoint: str | None = None, region: str | None = None,
                 access_key_id: str | None = None, secret_access_key: str | None = None) -> None:
        super().__init__(cache)
        self.bucket, self.prefix = parse_s3_url(url)
        host = urlsplit(endpoint).netloc.rsplit("@", 1)[-1] if endpoint else (
            f"s3.{region}.amazonaws.com" if region else "s3.amazonaws.com")
        self.where = f"{host} (bucket {self.bucket})"  # what the sentences name; never a credential
        config: dict[str, str] = {}
        for name, value in (("endpoint", endpoint), ("region", region), ("access_key_id", access_key_id),
                            ("secret_access_key", secret_access_key)):
            if value:
                config[name] = value
        try:
            self._store = self._open(config, endpoint)
        except BaseError as exc:  # settings it cannot use, such as a key id without its secret
            fault = f"The image store at {self.where} cannot be used as set ({_first_line(exc)})"
            raise BlobStoreUnavailable(f"{fault}; check the AWS_* settings.", fault) from None
        # Keys this process knows are in the bucket (it wrote or read them): not written again.
        self._durable: set[str] = set()

    def _open(self, config: dict[str, str], endpoint: str | None) -> S3Store:
        return S3Store(
            self.bucket, prefix=self.prefix or None, config=config,  # type: ignore[arg-type]
            # Plain http only when the endpoint says so (a local MinIO or moto, a private network).
            client_options={"allow_http": bool(endpoint and endpoint.startswith("http://")),
                            "connect_timeout": CONNECT_TIMEOUT, "timeout": REQUEST_TIMEOUT},
            retry_config={"max_retries": MAX_RETRIES, "retry_timeout": RETRY_TIMEOUT,
                          "backoff": {"init_backoff": timedelta(milliseconds=100),
                                      "max_backoff": timedelta(seconds=2), "base": 2}})

    @staticmethod
    def object_name(key: str) -> str:
        """The key's object under the prefix: the local folder's layout, so an existing
        `blobs/` folder can be copied into the bucket as it is (`aws s3 sync`)."""
        if "/" in key or key.startswith("."):
            raise ValueError(f"not a blob key: {key!r}")
        return f"{key[:2]}/{key}"

    def put(self, data: bytes, mime: str) -> str:
        key = blob_key(data, mime)
        if key not in self._durable:
            # The bucket first: a key is referenced only once every machine can read its bytes.
            self._call("write", lambda: obstore.put(self._store, self.object_name(key), data))
            self._durable.add(key)
        local = self.local_file(key)
        if not local.exists():
            write_file(local, data, durable=False)  # a cache: losing it loses nothing
        return key

    def path(self, key: str) -> Path:
        local = self.local_file(key)
        if not local.exists():
            write_file(local, self._download(key), durable=False)
        return local

    async def check(self) -> None:
        """At start: one small write, so a missing bucket, refused credentials or an unreachable
        endpoint is one sentence before anything is received."""
        import asyncio

        try:
            await asyncio.to_thread(self._call, "write",
                                    lambda: obstore.put(self._store, PROBE_OBJECT, b"threadedit\n"))
        except BlobStoreUnavailable as exc:
            raise BlobStoreUnavailable(f"{exc.fault}; check THREADEDIT_BLOB_STORE and AWS_ENDPOINT_URL.",
                                       exc.fault) from None

    def _download(self, key: str) -> bytes:
        try:
            data = self._call("read", lambda: bytes(obstore.get(self._store, self.object_name(key)).bytes()))
        except FileNotFoundError:
            raise FileNotFoundError(
                f"image {key} is in neither the local cache nor the image store at {self.where}") from None
        if hashlib.sha256(data).hexdigest() != key.split(".", 1)[0]:
            log.warning("image %s from %s does not match its sha256; refused", key, self.where)
            raise BlobCorrupt(f"The image store at {self.where} returned damaged bytes for an image of "
                              "this session, so they were refused; the session's history is intact.")
        self._durable.add(key)
        return data

    def _call(self, action: str, op: Callable[[], T]) -> T:
        """Run one request; its failure as one sentence (details, never a credential, in the log)."""
        try:
            return op()
        except FileNotFoundError as exc:
            if action == "read":
                raise
            fault = f"The image store at {self.where} has no such bucket"  # a write answered 404
            detail: BaseException = exc
        except (PermissionDeniedError, UnauthenticatedError) as exc:
            fault = (f"The image store at {self.where} refused our credentials (AWS_ACCESS_KEY_ID and "
                     "AWS_SECRET_ACCESS_KEY)")
            detail = exc
        except (BaseError, OSError) as exc:  # connection refused, timed out, a 5xx after retries
            fault = f"The image store at {self.where} is unreachable"
            detail = exc
        # INFO: the sentence is what the user or operator sees (in the thread, or on stderr at start).
        log.info("image store %s failed a %s: %s", self.where, action, _first_line(detail))
        what = "saved" if action == "write" else "read"
        raise BlobStoreUnavailable(f"{fault}, so the image could not be {what}; the session's history is "
                                   "intact, so you can retry when it is back.", fault)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
