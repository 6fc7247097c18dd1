"""The test suite's fake Gemini, made realistic for benchmarks, served from its own process.

`python -m bench.fake_model --latency 0|SECONDS|hold --photos DIR` prints one JSON line
(`base_url`, `control_url`) and serves until SIGTERM. Differences from tests/fakes' FakeGemini,
which it subclasses (every request is still checked exactly as the tests check it):

- final images are photo-like JPEGs of the requested pixel size (2048x2048 at 2K 1:1, about
  1 MB; see photos.py), a few pre-rendered variants in turn, instead of flat squares;
- the model's latency is configurable: the answer leaves `latency` seconds after the request
  arrived, the fake's reading and checking included (a real model's time covers its own parsing);
  `hold` keeps every answer back until POST /release on the control address;
- a separate process, so its checking (JSON parsing, decoding every inline image) never runs
  on the bot's CPU or event loop, and its handling time is recorded per request
  (`server_s`: from the body having been read to the answer being built) so a benchmark can
  subtract it;
- decoding an inline image is memoised per distinct base64 string: the same bytes are replayed
  on every turn and need checking once per process, not 60 times;
- answers carry signatures of the real size (0.6 MB a part on 3.1 Flash; see
  tests/fakes/gemini_recorded.py), as the tests' fake does; what it issued is remembered as
  digests (`DigestIssued`), since 300 answers' signatures would hold hundreds of megabytes;
- `--trust-history` turns off the Gemini 3 rule that model turns must be verbatim copies of
  answers this process issued, for data directories seeded without a model (memory, startup).

The control address (GET /stats?since=N, POST /release, POST /reset) is a second server, so
the API surface the bot sees is exactly FakeGemini's.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import functools
import hashlib
import json
import signal
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from bench import photos
from tests.fakes import gemini_rules as rules
from tests.fakes.gemini_rules import GeminiError
from tests.fakes.gemini_server import FakeGemini, RecordedRequest, _Context

API_KEY = "bench-key"
ARRIVED: web.RequestKey[tuple[float, float]] = web.RequestKey("bench_arrived", tuple)


def _digest(value: Any) -> bytes:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).digest()


class DigestIssued(rules.Issued):
    """The same checks as rules.Issued, holding a digest of each answer instead of the answer."""

    def __init__(self) -> None:
        super().__init__()
        self._content_digests: set[bytes] = set()
        self._part_digests: dict[bytes, bytes] = {}

    def add(self, content: dict[str, Any]) -> None:
        self._content_digests.add(_digest(content))
        for part in content.get("parts", []):
            if "thoughtSignature" in part:
                self._part_digests[_digest(part["thoughtSignature"])] = _digest(part)

    def has_content(self, content: dict[str, Any]) -> bool:
        return _digest(content) in self._content_digests

    def has_part(self, signature: str, part: dict[str, Any]) -> bool:
        return self._part_digests.get(_digest(signature)) == _digest(part)


class BenchGemini(FakeGemini):
    def __init__(self, api_key: str = API_KEY, *, latency: float | None = 0.0,
                 photo_dir: Path) -> None:
        super().__init__(api_key, image_scale=1.0)
        self.ledger = DigestIssued()
        self.latency = latency  # None: hold every answer until released
        self.photo_dir = photo_dir
        self.released = asyncio.Event()
        self.stats: list[dict[str, Any]] = []
        self._photos: dict[tuple[int, int], list[str]] = {}
        self._served = 0

    def preload(self, size: tuple[int, int]) -> None:
        self._photos[size] = [base64.b64encode(b).decode() for b in
                              photos.load(self.photo_dir, size)]

    def _render(self, ctx: _Context, fmt: str, sketch: bool = False) -> str:
        if sketch:  # the 16x16 thought image, as the tests' fake draws it
            return super()._render(ctx, fmt, sketch=True)
        size = rules.output_pixels(ctx.model, ctx.output_ratio(), ctx.size, 1.0)
        if size not in self._photos:
            self.preload(size)
        self._served += 1
        variants = self._photos[size]
        return variants[self._served % len(variants)]  # the same str objects: no copies kept

    async def _post(self, request: web.Request) -> web.StreamResponse:
        # The latency runs from here, before the body is read: a burst of requests is read and
        # checked one at a time on this single thread, which a real model would not make wait.
        request[ARRIVED] = (time.time(), time.perf_counter())
        return await super()._post(request)

    async def _generate(self, request: web.Request, model: str, raw: bytes,
                        record: RecordedRequest) -> web.Response:
        arrived, arrived_perf = request.get(ARRIVED) or (time.time(), time.perf_counter())
        entry: dict[str, Any] = {"i": len(self.stats), "t_start": arrived, "bytes": len(raw)}
        self.stats.append(entry)
        t0 = time.perf_counter()
        try:
            response = await super()._generate(request, model, raw, record)
            entry["status"] = response.status
        except GeminiError as err:
            entry["status"] = err.code
            raise
        finally:
            entry["server_s"] = time.perf_counter() - t0
            entry.update(_measure(model, record.body))
            # What was sent is measured; keeping 60 requests of 10 MB each would not fit.
            record.raw, record.body = b"", {}
            entry["t_end"] = time.time()
        await self._model_time(time.perf_counter() - arrived_perf)
        entry["t_end"] = time.time()
        return response

    async def _model_time(self, spent: float) -> None:
        if self.latency is None:
            await self._wait_for_release(self.released)
        elif self.latency > spent:
            await asyncio.sleep(self.latency - spent)

    # ---- control ------------------------------------------------------------------------------
    def control_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/stats", self._stats)
        app.router.add_post("/release", self._release)
        app.router.add_post("/reset", self._reset)
        return app

    async def _stats(self, request: web.Request) -> web.Response:
        since = int(request.query.get("since", "0"))
        return web.json_response({
            "count": len(self.stats), "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight, "cpu_s": time.process_time(),
            "requests": self.stats[since:]})

    async def _release(self, request: web.Request) -> web.Response:
        self.released.set()
        return web.json_response({"released": True})

    async def _reset(self, request: web.Request) -> web.Response:
        self.stats.clear()
        self.requests.clear()
        self.max_in_flight = self.in_flight
        return web.json_response({"reset": True})


def _measure(model: str, body: Any) -> dict[str, Any]:
    """Images and estimated input tokens of a request, by the fake's own rule (count_tokens)."""
    contents = body.get("contents") if isinstance(body, dict) else None
    try:
        text, image = rules.count_tokens(model, contents if isinstance(contents, list) else [])
        images = sum(1 for c in contents or [] for p in c.get("parts", [])
                     if "inlineData" in p or "fileData" in p)
    except (AttributeError, KeyError, TypeError):
        text = image = images = 0
    return {"text_tokens": text, "image_tokens": image, "images": images, "label": _label(contents)}


def _label(contents: Any) -> str:
    """The start of the last user text: which turn a request was (instructions are numbered)."""
    try:
        texts = [p["text"] for p in contents[-1]["parts"] if "text" in p]
    except (IndexError, KeyError, TypeError):
        return ""
    return (texts[-1] if texts else "")[:120]


def _memoise_decoding() -> None:
    decode = rules.decode_image

    @functools.lru_cache(maxsize=32)
    def cached(data_b64: str, mime: str) -> tuple[int, int]:
        return decode(data_b64, mime)

    rules.decode_image = cached


async def serve(args: argparse.Namespace) -> None:
    _memoise_decoding()
    if args.trust_history:
        rules.check_model_turns = lambda *a, **k: None
    latency = None if args.latency == "hold" else float(args.latency)
    fake = BenchGemini(args.api_key, latency=latency, photo_dir=args.photos)
    for size in args.preload:
        w, h = (int(n) for n in size.split("x"))
        fake.preload((w, h))
    await fake.start()
    runner = web.AppRunner(fake.control_app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    control = f"http://127.0.0.1:{runner.addresses[0][1]}"
    print(json.dumps({"base_url": fake.base_url, "control_url": control}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
    await fake.stop()


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.fake_model", description=__doc__.split("\n")[0])
    p.add_argument("--latency", default="0", help="seconds per answer, or 'hold'")
    p.add_argument("--photos", type=Path, required=True, help="directory of rendered JPEGs")
    p.add_argument("--preload", action="append", default=[], metavar="WxH")
    p.add_argument("--api-key", default=API_KEY)
    p.add_argument("--trust-history", action="store_true")
    asyncio.run(serve(p.parse_args()))


if __name__ == "__main__":
    main()
