"""GeminiEngine: `generateContent` over httpx, with retries inside a total time budget.

429 waits as long as the API asks (RetryInfo.retryDelay, else Retry-After); 500/502/503/504,
timeouts and broken connections back off with jitter; a per-day quota, other 4xx and a
retired model are not retried and are explained. The key goes in a header, never the URL, so
it cannot reach a log line.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    wait_exponential_jitter,
)

from bot.engine import EngineError
from bot.storage.blobs import EncodedBody

log = logging.getLogger(__name__)

RETRYABLE_STATUS = {408, 500, 502, 503, 504}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")
# A fileData URI naming a file that expired (48 h), was deleted or is not ACTIVE. The real answer
# is 403 PERMISSION_DENIED "You do not have permission to access the File <id> or it may not
# exist." (see tests/fakes/gemini_rules.MSG_FILE_MISSING); the other spellings are guards.
_FILE_MISSING = re.compile(
    r"permission to access the File\b|\bFile [\w/.-]+ (?:does not exist|was not found|"
    r"is not in an ACTIVE state)", re.IGNORECASE)
COUNT_TIMEOUT = 15.0


class RetryableEngineError(EngineError):
    def __init__(self, code: str, message: str, *, status: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(code, message, status=status)
        self.retry_after = retry_after


def _error_fields(body: Any) -> tuple[str, str, list[dict[str, Any]]]:
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        return "", "", []
    details = err.get("details") if isinstance(err.get("details"), list) else []
    return str(err.get("status") or ""), str(err.get("message") or ""), details


def _retry_delay(details: list[dict[str, Any]], header: str | None) -> float | None:
    for d in details:
        if str(d.get("@type", "")).endswith("google.rpc.RetryInfo"):
            m = _DURATION.match(str(d.get("retryDelay", "")))
            if m:
                return float(m.group(1))
    if header:
        try:
            return max(0.0, float(header))
        except ValueError:
            return None
    return None


def _per_day_quota(details: list[dict[str, Any]]) -> bool:
    for d in details:
        for v in d.get("violations") or []:
            if "PerDay" in str(v.get("quotaId", "")):
                return True
    return False


def classify(model: str, response: httpx.Response) -> EngineError:
    """Turn a non-200 answer into an error with a sentence the user can act on."""
    try:
        body = response.json()
    except ValueError:
        body = None
    _status, message, details = _error_fields(body)
    code = response.status_code
    google = f" (Gemini said: {message[:300]})" if message else ""
    # Before the auth branch: this 403 is about an uploaded file, not the API key.
    if code in (400, 403, 404) and _FILE_MISSING.search(message):
        return EngineError("file_missing", "A reference image uploaded to Gemini has expired; "
                           "sending it again.", status=code)
    if code == 429:
        if _per_day_quota(details):
            return EngineError("quota_exhausted", "The Gemini project's daily quota is used up; "
                               "it resets at midnight Pacific time." + google, status=code)
        delay = _retry_delay(details, response.headers.get("retry-after"))
        return RetryableEngineError("rate_limited", "Gemini is rate-limiting requests right now."
                                    + google, status=code, retry_after=delay)
    if code in RETRYABLE_STATUS:
        return RetryableEngineError("unavailable", f"Gemini is unavailable right now (HTTP {code}).",
                                    status=code,
                                    retry_after=_retry_delay(details, response.headers.get("retry-after")))
    if code == 413 or "input token count" in message.lower():
        return EngineError("context_too_large", "The request was too large for Gemini." + google,
                           status=code)
    if code == 404:
        return EngineError("model_not_found", f"The model {model} is not available (it may have "
                           "been retired); set THREADEDIT_MODEL to gemini-3.1-flash-image or "
                           'gemini-3-pro-image, or use "model flash" / "model pro".', status=code)
    if code in (401, 403) or "API key" in message:
        return EngineError("auth", "Gemini refused the API key; check GEMINI_API_KEY."
                           + google, status=code)
    return EngineError("bad_request", f"Gemini refused the request (HTTP {code})." + google,
                       status=code)


def _length(payload: bytes | EncodedBody) -> dict[str, str]:
    """A streamed body is sent with its length rather than chunked: some gateways refuse
    chunked uploads, and the API sees one ordinary request."""
    return {"content-length": str(len(payload))} if isinstance(payload, EncodedBody) else {}


class GeminiEngine:
    name = "gemini"
    offline = False
    # generate and count_tokens also take an EncodedBody: the request's images are read from
    # the blob store as they are sent, so a call waiting on the model holds none of them.
    accepts_encoded = True

    def __init__(
        self,
        api_key: str,
        base_url: str = "https://generativelanguage.googleapis.com",
        *,
        timeout: float = 180.0,
        retry_budget: float = 300.0,
        max_attempts: int = 6,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retry_budget = retry_budget
        self.max_attempts = max_attempts
        self._sleep = sleep
        # Generation takes 10 to 30 s and longer at 4K: a long read timeout, short connect.
        self._http = httpx.AsyncClient(
            headers={"x-goog-api-key": api_key, "content-type": "application/json"},
            timeout=httpx.Timeout(timeout, connect=15.0),
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    def _stop(self, state: RetryCallState) -> bool:
        if state.attempt_number >= self.max_attempts:
            return True
        # Time used so far counts the waits we planned even where sleep is replaced (tests),
        # and a wait that would end past the budget is not started at all.
        used = max(state.seconds_since_start or 0.0, state.idle_for)
        return used + state.upcoming_sleep > self.retry_budget

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RetryableEngineError) and exc.retry_after is not None:
            return exc.retry_after
        return wait_exponential_jitter(initial=1, max=30, jitter=1)(state)

    async def generate(self, model: str, body: dict[str, Any] | EncodedBody) -> dict[str, Any]:
        """`body` as a dict, or encoded from the blob store as it is sent (`accepts_encoded`)."""
        payload = body if isinstance(body, EncodedBody) else json.dumps(
            body, separators=(",", ":")).encode()
        kwargs: dict[str, Any] = {}
        if self._sleep is not None:
            kwargs["sleep"] = self._sleep
        retrying = AsyncRetrying(
            stop=self._stop,
            wait=self._wait,
            retry=retry_if_exception_type(RetryableEngineError),
            before_sleep=self._log_retry,
            reraise=True,
            **kwargs,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._once(model, payload)
        except RetryableEngineError as exc:
            tries = retrying.statistics.get("attempt_number", 1)
            raise EngineError(exc.code, f"{exc.message} Gave up after {tries} "
                              f"tr{'y' if tries == 1 else 'ies'}; the session is unchanged, "
                              "so you can retry later.", status=exc.status) from None
        raise AssertionError("unreachable")

    @staticmethod
    def _log_retry(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning("gemini call failed (%s), retry %d in %.1fs",
                    getattr(exc, "code", type(exc).__name__), state.attempt_number,
                    state.next_action.sleep if state.next_action else 0.0)

    async def count_tokens(self, model: str, body: dict[str, Any] | EncodedBody) -> int:
        """Input tokens of a `generateContent` body (one attempt, short timeout).

        Sends the nested form, which counts generationConfig and tools too (research section 6).
        Raises EngineError on any failure, classified like generate's.
        """
        payload: bytes | EncodedBody
        if isinstance(body, EncodedBody):  # nested without reading its images
            prefix = b'{"generateContentRequest":{"model":' + json.dumps(f"models/{model}").encode()
            payload = body.wrapped(prefix + b",", b"}")
        else:
            payload = json.dumps({"generateContentRequest": {"model": f"models/{model}", **body}},
                                 separators=(",", ":")).encode()
        url = f"{self.base_url}/v1beta/models/{model}:countTokens"
        response = await self._post(url, payload, EngineError, read_seconds=COUNT_TIMEOUT)
        if response.status_code != 200:
            err = classify(model, response)
            raise EngineError(err.code, err.message, status=err.status)
        try:
            total = response.json()["totalTokens"]
        except (ValueError, KeyError, TypeError):
            raise EngineError("bad_response", "Gemini's token count was not understood.",
                              status=200) from None
        if not isinstance(total, int) or isinstance(total, bool):
            raise EngineError("bad_response", "Gemini's token count was not a number.", status=200)
        return total

    async def _post(self, url: str, payload: bytes | EncodedBody, error: type[EngineError], *,
                    read_seconds: float | None = None) -> httpx.Response:
        """POST, with a timeout or a broken connection raised as `error` (retried by generate,
        not by count_tokens). `read_seconds` replaces the client's long generation timeout."""
        extra: dict[str, Any] = {} if read_seconds is None else {"timeout": read_seconds}
        try:
            return await self._http.post(url, content=payload, headers=_length(payload), **extra)
        except httpx.TimeoutException:
            raise error("timeout", "Gemini did not answer in time.") from None
        except httpx.TransportError as exc:
            raise error(
                "network", f"Could not reach Gemini at {self.base_url} ({type(exc).__name__})."
            ) from None

    async def _once(self, model: str, payload: bytes | EncodedBody) -> dict[str, Any]:
        url = f"{self.base_url}/v1beta/models/{model}:generateContent"
        response = await self._post(url, payload, RetryableEngineError)
        if response.status_code != 200:
            raise classify(model, response)
        try:
            body = response.json()
        except ValueError:
            # A cut-off body is a transport accident, worth another try.
            raise RetryableEngineError("bad_response", "Gemini's answer was cut off or not JSON.",
                                       status=200) from None
        if not isinstance(body, dict):
            raise RetryableEngineError("bad_response", "Gemini's answer was not a JSON object.",
                                       status=200)
        return body
