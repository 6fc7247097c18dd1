"""The one interface every image engine implements: Gemini over HTTP, or the offline stand-in.

Both speak Gemini's wire format (a `generateContent` request body in, a response body out) so
that what is stored and replayed is the same whichever engine produced it.
"""

from __future__ import annotations

from typing import Any, Protocol


class EngineError(Exception):
    """A call that produced no response to interpret. `message` is a sentence for the user.

    `code` is stable and machine-readable (CLI `reason`, logs, tests):
    rate_limited, quota_exhausted, unavailable, timeout, network, bad_request, auth,
    model_not_found, context_too_large, file_missing, bad_response.
    """

    def __init__(self, code: str, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


class Engine(Protocol):
    """What the service needs of an engine, capabilities included, so that no caller has to ask
    which engine it holds (by name or by probing for attributes)."""

    name: str
    # True for a stand-in that makes pictures without a model: it costs nothing (spend limits do
    # not apply), its words are not a model's, and it has no Files API to upload to.
    offline: bool
    # True when generate and count_tokens also take an EncodedBody (bot/gemini/encode.py), whose
    # images are read from the blob store as the request is sent; else they get a plain dict.
    accepts_encoded: bool

    async def generate(self, model: str, body: Any) -> dict[str, Any]:
        """Send one `generateContent` request body; return the parsed response body.

        Raises EngineError when no usable response came back (after any retries).
        """
        ...

    async def count_tokens(self, model: str, body: Any) -> int | None:
        """Input tokens the body would cost, as the API counts them; None when this engine
        cannot count (the planner's estimate is then all there is). Raises EngineError."""
        ...

    async def aclose(self) -> None: ...
