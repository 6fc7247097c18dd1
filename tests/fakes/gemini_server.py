"""A fake of Google's Gemini `generateContent` REST API that enforces what the real one enforces.

Served by a real aiohttp server on 127.0.0.1 (random port)::

    async with FakeGemini() as fake:
        url = f"{fake.base_url}/v1beta/models/gemini-3-pro-image:generateContent"
        fake.script.append(Behaviour.rate_limited("0.2s"))   # next request gets a 429

Order of checks for generateContent (first failure wins, every request is recorded):
 1. API key (`x-goog-api-key` header, else `?key=`), then the model id (404 for unknown/retired);
 2. body is a JSON object;  3. proto-JSON field names/types (gemini_rules.REQUEST);
 4. contents/roles;  5. inline images (MIME type, standard base64, Pillow can decode them);
 5b. fileData parts: a live ACTIVE file this fake holds, same MIME type (gemini_files.py), else
    the real 403 "You do not have permission to access the File <id> or it may not exist.";
 6. imageConfig per model;  7. model turns on Gemini 3 models: verbatim replays of `issued` only;
 8. input token estimate within the model's limit (gemini_rules.count_tokens).
Step 7 compares parsed JSON: key order and snake_case spellings don't matter; anything else
(dropped thought parts, re-encoded images, url-safe signatures, dummy signatures) does.
Only then is a `script` entry consumed (so a scripted 429 never hides an invalid request);
an empty script means a normal success.

Signatures are as large as real ones (gemini_recorded.SIGNATURE_CHARS: 0.6 MB a part on 3.1
Flash, 1.1 MB on 3 Pro, 2.9 MB on an image-only 3 Pro answer), deterministic pseudo-random
base64, so a request replaying history weighs what it weighs against Google.
`Behaviour.recorded` answers with a recorded body verbatim (gemini_recorded.recorded_body) and
holds its model turn to the same verbatim-replay rule as the fake's own answers.
`hold` (an asyncio.Event) keeps every answer back until it is set; `in_flight` and
`max_in_flight` count generateContent calls answered at once.

The Files API (upload, get, delete; expiry on a movable clock) is gemini_files.FakeFiles, reached
as `files_api`; `files`, `uploads` and `expire_files()` are shortcuts to it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiohttp import web
from PIL import Image, ImageDraw

from tests.fakes import gemini_rules as rules
from tests.fakes.gemini_files import FakeFiles, StoredFile
from tests.fakes.gemini_recorded import PartKind, signature, signature_chars
from tests.fakes.gemini_rules import GeminiError

_HELP = "https://ai.google.dev/gemini-api/docs/rate-limits"
_SERVER_ERRORS = {
    500: ("INTERNAL", "An internal error has occurred. Please retry or report in "
          "https://developers.generativeai.google/guide/troubleshooting"),
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
    504: ("DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
}


@dataclass
class RecordedRequest:
    model: str
    body: dict[str, Any]  # parsed JSON as sent ({} when it was not a JSON object)
    headers: dict[str, str]  # header names lower-cased
    status: int  # what the fake answered (499 if the client went away first)
    raw: bytes
    query: dict[str, str] = field(default_factory=dict)  # the URL's query string (a ?key= shows here)


@dataclass(frozen=True)
class Behaviour:
    """One scripted answer. Build with the class methods, not directly."""

    kind: str
    status: int = 200
    reason: str = ""
    message: str | None = None
    text: str = ""
    seconds: float = 0.0
    per_day: bool = False
    retry_delay: str | None = None
    header: str | None = None
    body: bytes = b""
    content_type: str = "application/json"

    @classmethod
    def rate_limited(
        cls, retry_delay: str | None = "0.2s", per_day: bool = False, header: str | None = None
    ) -> Behaviour:
        """429 RESOURCE_EXHAUSTED with Help, QuotaFailure and (if retry_delay) RetryInfo details;
        `header` is an optional Retry-After value."""
        return cls("rate_limited", 429, retry_delay=retry_delay, per_day=per_day, header=header)

    @classmethod
    def server_error(cls, status: int) -> Behaviour:
        """500 INTERNAL, 503 UNAVAILABLE or 504 DEADLINE_EXCEEDED."""
        if status not in _SERVER_ERRORS:
            raise ValueError(f"server_error supports {sorted(_SERVER_ERRORS)}, not {status}")
        return cls("server_error", status)

    @classmethod
    def slow(cls, seconds: float) -> Behaviour:
        """Sleep `seconds`, then answer normally."""
        return cls("slow", seconds=seconds)

    @classmethod
    def blocked_prompt(cls, reason: str = "PROHIBITED_CONTENT") -> Behaviour:
        """200, no candidates, promptFeedback.blockReason."""
        return cls("blocked_prompt", reason=reason)

    @classmethod
    def finish(cls, reason: str, message: str | None = None) -> Behaviour:
        """200, content {"role": "model"} (no parts), finishReason, optional finishMessage."""
        return cls("finish", reason=reason, message=message)

    @classmethod
    def text_only(cls, text: str) -> Behaviour:
        """200, STOP, a single text part carrying a thoughtSignature."""
        return cls("text_only", text=text)

    @classmethod
    def too_large(cls, count: int = 1050890, limit: int = 65536) -> Behaviour:
        """400 INVALID_ARGUMENT "The input token count (N) exceeds the maximum ... (M)."."""
        message = rules.MSG_TOO_MANY_TOKENS.format(count=count, limit=limit)
        return cls("too_large", 400, message=message)

    @classmethod
    def raw(cls, status: int, body: bytes, content_type: str = "application/json") -> Behaviour:
        """Exactly this status, body and Content-Type."""
        return cls("raw", status, body=body, content_type=content_type)

    @classmethod
    def recorded(cls, body: bytes, status: int = 200) -> Behaviour:
        """Exactly these bytes (a real answer); a 200's candidates[0].content becomes an issued
        model turn, which later requests must replay verbatim."""
        return cls("recorded", status, body=body)

    @classmethod
    def empty_candidates(cls) -> Behaviour:
        """200 with "candidates": [] and usageMetadata."""
        return cls("empty_candidates")


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, text=json.dumps(body), content_type="application/json", headers=headers
    )


class FakeGemini:
    def __init__(self, api_key: str = "test-key", *, image_scale: float = 0.125) -> None:
        self.api_key = api_key
        self.image_scale = image_scale
        self._signatures_made = 0  # seeds the next signature: the same answers every run
        # When set, the next final image is exactly these bytes (mime type, data): e.g. one
        # larger than a chat platform's upload limit.
        self.next_image: tuple[str, bytes] | None = None
        self.base_url = ""
        self.requests: list[RecordedRequest] = []
        self.count_requests: list[RecordedRequest] = []  # countTokens calls, as sent
        # Input tokens per image beyond the documented figure, in countTokens, usage and the
        # input limit: the real tokenizer, which no estimate from the docs predicts exactly.
        self.extra_tokens_per_image = 0
        self.files_api = FakeFiles(self._auth)
        self.script: list[Behaviour] = []
        self.ledger = rules.Issued()  # the model turns answered, which replays must match
        # generateContent calls being answered right now, and the most there ever were at once:
        # what a cap on concurrent model calls is checked against.
        self.in_flight = 0
        self.max_in_flight = 0
        # When an Event, every generateContent answer waits until it is set (after the checks,
        # like Behaviour.slow): a test decides when the model "finishes". None: answer at once.
        self.hold: asyncio.Event | None = None
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()

    # ---- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        app = web.Application(client_max_size=200 * 1024 * 1024)
        app.router.add_get("/v1beta/models", self._list_models)
        app.router.add_get("/v1beta/models/{model}", self._get_model)
        app.router.add_post("/v1beta/models/{model_action}", self._post)
        self.files_api.add_routes(app.router)
        self._stopping = asyncio.Event()
        self._runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=1.0, handler_cancellation=True
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"
        self.files_api.base_url = self.base_url

    @property
    def issued(self) -> list[dict[str, Any]]:
        """Every model content answered (copies), in order."""
        return self.ledger.contents

    @property
    def files(self) -> dict[str, StoredFile]:
        """Uploaded files by id (expired and deleted ones too)."""
        return self.files_api.files

    @property
    def uploads(self) -> int:
        """How many uploads were finalized."""
        return self.files_api.uploads

    def expire_files(self, *ids: str) -> None:
        """Expire these files (ids or names), or all of them: later uses get the real 403."""
        self.files_api.expire(*ids)

    async def stop(self) -> None:
        self._stopping.set()  # wake up Behaviour.slow sleepers
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeGemini:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # ---- routes -------------------------------------------------------------------------------
    def _auth(self, request: web.Request) -> None:
        key = request.headers.get("x-goog-api-key", request.query.get("key"))
        if key is None:
            raise GeminiError(403, rules.MSG_NO_KEY, "PERMISSION_DENIED", [{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "CONSUMER_INVALID", "domain": "googleapis.com",
            }])
        if key != self.api_key:
            raise GeminiError(400, rules.MSG_BAD_KEY, "INVALID_ARGUMENT", [
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                 "domain": "googleapis.com",
                 "metadata": {"service": "generativelanguage.googleapis.com"}},
                {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US",
                 "message": rules.MSG_BAD_KEY},
            ])

    @staticmethod
    def _model_info(model: str) -> dict[str, Any]:
        return {
            "name": f"models/{model}", "version": "001", "displayName": model,
            "inputTokenLimit": rules.INPUT_LIMIT[model], "outputTokenLimit": 32768,
            "supportedGenerationMethods": ["generateContent", "countTokens"],
        }

    async def _list_models(self, request: web.Request) -> web.Response:
        try:
            self._auth(request)
        except GeminiError as err:
            return _json(err.code, err.body())
        return _json(200, {"models": [self._model_info(m) for m in rules.KNOWN_MODELS]})

    async def _get_model(self, request: web.Request) -> web.Response:
        model = request.match_info["model"]
        try:
            self._auth(request)
            if model not in rules.KNOWN_MODELS:
                raise GeminiError(404, f"models/{model} is not found for API version v1beta.",
                                  "NOT_FOUND")
        except GeminiError as err:
            return _json(err.code, err.body())
        return _json(200, self._model_info(model))

    async def _post(self, request: web.Request) -> web.StreamResponse:
        model, _, action = request.match_info["model_action"].rpartition(":")
        raw = await request.read()
        if action == "countTokens":
            headers = {k.lower(): v for k, v in request.headers.items()}
            record = RecordedRequest(model, {}, headers, 0, raw, dict(request.query))
            self.count_requests.append(record)
            try:
                response = self._count_tokens(request, model, raw, record)
            except GeminiError as err:
                response = _json(err.code, err.body())
            record.status = response.status
            return response
        if action != "generateContent":
            return _json(404, GeminiError(404, "Method not found.", "NOT_FOUND").body())
        headers = {k.lower(): v for k, v in request.headers.items()}
        record = RecordedRequest(model, {}, headers, 0, raw, dict(request.query))
        self.requests.append(record)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            response = await self._generate(request, model, raw, record)
        except GeminiError as err:
            response = _json(err.code, err.body())
        except asyncio.CancelledError:
            record.status = 499  # client closed the connection (e.g. its timeout fired)
            raise
        finally:
            self.in_flight -= 1
        record.status = response.status
        return response

    def _parse_body(self, request: web.Request, model: str, raw: bytes, record: RecordedRequest,
                    schema: rules.Schema) -> dict[str, Any]:
        """Key, model, JSON, then the schema's field names and types; the parsed JSON object is
        recorded as sent even when a later check refuses it."""
        self._auth(request)
        if model not in rules.KNOWN_MODELS:
            raise GeminiError(404, rules.MSG_NOT_FOUND.format(model=model), "NOT_FOUND")
        try:
            parsed = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            snippet = raw[:40].decode("utf-8", "replace")
            raise rules.bad_request(rules.MSG_BAD_JSON.format(snippet=snippet)) from None
        if isinstance(parsed, dict):
            record.body = parsed
        return rules.parse_message(schema, parsed)

    def _count_tokens(
        self, request: web.Request, model: str, raw: bytes, record: RecordedRequest
    ) -> web.Response:
        body = self._parse_body(request, model, raw, record, rules.COUNT_REQUEST)
        nested = body.get("generateContentRequest")
        if nested is not None and nested.get("model") != f"models/{model}":
            raise rules.bad_request(  # the nested form names its model (research section 6)
                "* CountTokensRequest.generate_content_request.model: unexpected model name format\n")
        contents = (nested or body).get("contents", [])
        self.files_api.check_parts(contents)
        text, image = self._count(model, contents)
        return _json(200, {"totalTokens": text + image,
                           "promptTokensDetails": rules.token_details(text, image)})

    def _count(self, model: str, contents: list[dict[str, Any]]) -> tuple[int, int]:
        text, image = rules.count_tokens(model, contents)
        images = image // rules.IMAGE_INPUT_TOKENS[model]
        return text, image + images * self.extra_tokens_per_image

    async def _generate(
        self, request: web.Request, model: str, raw: bytes, record: RecordedRequest
    ) -> web.Response:
        body = self._parse_body(request, model, raw, record, rules.REQUEST)
        contents: list[dict[str, Any]] = body.get("contents", [])
        rules.check_contents(contents)
        rules.check_images(contents)
        file_bytes = self.files_api.check_parts(contents)
        gen_config = body.get("generationConfig", {})
        ratio, size = rules.check_image_config(model, gen_config.get("imageConfig", {}))
        if model in rules.GEMINI3:
            rules.check_model_turns(contents, self.ledger)
        text_tokens, image_tokens = self._count(model, contents)
        if text_tokens + image_tokens > rules.INPUT_LIMIT[model]:
            raise rules.bad_request(rules.MSG_TOO_MANY_TOKENS.format(
                count=text_tokens + image_tokens, limit=rules.INPUT_LIMIT[model]))

        turns = sum(1 for c in contents if c.get("role", "user") == "user")
        ctx = _Context(model, contents, turns, ratio, size, text_tokens, image_tokens, file_bytes)
        behaviour = self.script.pop(0) if self.script else Behaviour("success")
        if self.hold is not None:
            await self._wait_for_release(self.hold)
        if behaviour.kind == "slow":
            try:
                await asyncio.wait_for(self._stopping.wait(), behaviour.seconds)
            except TimeoutError:
                pass
        modalities = [m.upper() for m in gen_config.get("responseModalities", ["TEXT", "IMAGE"])]
        return self._answer(behaviour, ctx, modalities)

    async def _wait_for_release(self, hold: asyncio.Event) -> None:
        # Stopping the server also releases held requests, so a failed test cannot hang here.
        stopping = asyncio.ensure_future(self._stopping.wait())
        released = asyncio.ensure_future(hold.wait())
        try:
            await asyncio.wait({stopping, released}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            released.cancel()

    # ---- answers ------------------------------------------------------------------------------
    def _answer(self, b: Behaviour, ctx: _Context, modalities: list[str]) -> web.Response:
        headers = {"x-fake-turns": str(ctx.turns)}
        if b.kind in ("raw", "recorded"):
            if b.kind == "recorded" and b.status == 200:
                self._remember_recorded(b.body)
            return web.Response(status=b.status, body=b.body, headers={
                **headers, "Content-Type": b.content_type})
        if b.kind == "rate_limited":
            if b.header is not None:
                headers["Retry-After"] = b.header
            return _json(429, _rate_limit_body(ctx.model, b), headers)
        if b.kind == "server_error":
            status_name, message = _SERVER_ERRORS[b.status]
            return _json(b.status, GeminiError(b.status, message, status_name).body(), headers)
        if b.kind == "too_large":
            return _json(400, rules.bad_request(b.message or "").body(), headers)
        body: dict[str, Any] = {}
        if b.kind == "blocked_prompt":
            body["promptFeedback"] = {"blockReason": b.reason}
        elif b.kind == "empty_candidates":
            body["candidates"] = []
        else:
            candidate = self._candidate(b, ctx, modalities)
            body["candidates"] = [candidate]
        body["usageMetadata"] = ctx.usage(body.get("candidates", []))
        body["modelVersion"] = ctx.model
        body["responseId"] = base64.urlsafe_b64encode(os.urandom(15)).decode()
        return _json(200, body, headers)

    def _candidate(self, b: Behaviour, ctx: _Context, modalities: list[str]) -> dict[str, Any]:
        candidate: dict[str, Any] = {
            "content": {"role": "model"}, "finishReason": "STOP", "index": 0}
        if b.kind == "finish":
            candidate["finishReason"] = b.reason
            if b.message is not None:
                candidate["finishMessage"] = b.message
        elif b.kind == "text_only" or "IMAGE" not in modalities:
            text = b.text or f"I can't draw that right now (turn {ctx.turns})."
            candidate["content"]["parts"] = [self._sign({"text": text}, ctx, "text")]
        else:
            candidate["content"]["parts"] = self._image_parts(ctx, "TEXT" in modalities)
        self.ledger.add(candidate["content"])
        return candidate

    def _sign(self, part: dict[str, Any], ctx: _Context, kind: PartKind) -> dict[str, Any]:
        if ctx.model in rules.GEMINI3:
            self._signatures_made += 1
            part["thoughtSignature"] = signature(signature_chars(ctx.model, kind),
                                                 f"{ctx.model}/{self._signatures_made}/{kind}")
        return part

    def _remember_recorded(self, body: bytes) -> None:
        try:
            content = json.loads(body)["candidates"][0]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            return  # a block, an error or a cut-off body: nothing to replay
        if content.get("parts"):
            self.ledger.add(content)

    def _image_parts(self, ctx: _Context, with_text: bool) -> list[dict[str, Any]]:
        # Gemini 3 models answer JPEG, after an interim thought (a text and a sketch, unsigned).
        final = {"inlineData": {"mimeType": "image/jpeg", "data": self._render(ctx, "JPEG")}}
        if self.next_image is not None:
            mime, data = self.next_image
            self.next_image = None
            final = {"inlineData": {"mimeType": mime, "data": base64.b64encode(data).decode()}}
        sketch = self._render(ctx, "PNG", sketch=True)
        parts: list[dict[str, Any]] = [
            {"text": f"**Planning turn {ctx.turns}**\n\nComposing the edit.", "thought": True},
            {"inlineData": {"mimeType": "image/png", "data": sketch}, "thought": True}]
        if with_text:
            parts.append(self._sign({"text": f"Here is the edited image (turn {ctx.turns})."},
                                    ctx, "text"))
        parts.append(self._sign(final, ctx, "image" if with_text else "image_only"))
        return parts

    def _render(self, ctx: _Context, fmt: str, sketch: bool = False) -> str:
        """Deterministic image: colour from the last user text, the user-turn count drawn on it."""
        size = (16, 16) if sketch else rules.output_pixels(
            ctx.model, ctx.output_ratio(), ctx.size, self.image_scale)
        colour = tuple(hashlib.sha256(ctx.last_user_text().encode()).digest()[:3])
        image = Image.new("RGB", size, (128, 128, 128) if sketch else colour)
        if not sketch:
            ink = (0, 0, 0) if sum(colour) > 384 else (255, 255, 255)
            ImageDraw.Draw(image).text((2, 2), str(ctx.turns), fill=ink)
        out = io.BytesIO()
        image.save(out, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
        return base64.b64encode(out.getvalue()).decode()


@dataclass
class _Context:
    model: str
    contents: list[dict[str, Any]]
    turns: int
    ratio: str | None
    size: str
    text_tokens: int
    image_tokens: int
    file_bytes: dict[str, bytes] = field(default_factory=dict)  # fileData URI -> the stored image

    def last_user_text(self) -> str:
        users = [c for c in self.contents if c.get("role", "user") == "user"]
        return "\n".join(p["text"] for p in users[-1]["parts"] if "text" in p)

    def output_ratio(self) -> str:
        """Requested aspectRatio, else the last input image's (nearest allowed), else 1:1."""
        if self.ratio:
            return self.ratio
        for content in reversed(self.contents):
            for part in reversed(content["parts"]):
                blob = part.get("inlineData") or part.get("fileData")
                if blob and not part.get("thought"):
                    data = blob.get("data") or base64.b64encode(
                        self.file_bytes[blob["fileUri"]]).decode()
                    w, h = rules.decode_image(data, blob.get("mimeType", ""))
                    return rules.nearest_ratio(self.model, w, h)
        return "1:1"

    def usage(self, candidates: list[dict[str, Any]]) -> dict[str, Any]:
        out_text = out_images = thoughts = 0
        for candidate in candidates:
            for part in candidate["content"].get("parts", []):
                if part.get("thought"):
                    thoughts += len(part.get("text", "")) // 4 + 200
                elif "inlineData" in part:
                    out_images += rules.IMAGE_OUTPUT_TOKENS[self.model][self.size]
                else:
                    out_text += len(part.get("text", "")) // 4
        if self.model in rules.GEMINI3 and not thoughts:
            thoughts = 240  # thinking is always on (and billed) on Gemini 3 image models
        prompt = self.text_tokens + self.image_tokens
        usage: dict[str, Any] = {
            "promptTokenCount": prompt, "candidatesTokenCount": out_text + out_images,
            "totalTokenCount": prompt + out_text + out_images + thoughts,
            "promptTokensDetails": rules.token_details(self.text_tokens, self.image_tokens),
        }
        if thoughts:
            usage["thoughtsTokenCount"] = thoughts
        if out_images:
            usage["candidatesTokensDetails"] = [{"modality": "IMAGE", "tokenCount": out_images}]
        return usage


def _rate_limit_body(model: str, b: Behaviour) -> dict[str, Any]:
    quota = ("GenerateRequestsPerDayPerProjectPerModel" if b.per_day
             else "GenerateRequestsPerMinutePerProjectPerModel")
    metric = "generativelanguage.googleapis.com/generate_content_paid_tier_requests"
    message = (
        "You exceeded your current quota, please check your plan and billing details. For more "
        f"information on this error, head to: {_HELP}. To monitor your current usage, head to: "
        f"https://ai.dev/usage?tab=rate-limit. \n* Quota exceeded for metric: {metric}, "
        f"limit: 10, model: {model}"
    )
    if b.retry_delay:
        message += f"\nPlease retry in {b.retry_delay}."
    details: list[dict[str, Any]] = [
        {"@type": "type.googleapis.com/google.rpc.Help",
         "links": [{"description": "Learn more about Gemini API quotas", "url": _HELP}]},
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{
            "quotaMetric": metric, "quotaId": quota,
            "quotaDimensions": {"model": model, "location": "global"}, "quotaValue": "10"}]},
    ]
    if b.retry_delay:
        details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo",
                        "retryDelay": b.retry_delay})
    return GeminiError(429, message, "RESOURCE_EXHAUSTED", details).body()
