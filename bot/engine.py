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
    name: str

    async def generate(self, model: str, body: dict[str, Any]) -> dict[str, Any]:
        """Send one `generateContent` request body; return the parsed response body.

        Raises EngineError when no usable response came back (after any retries).
        """
        ...

    async def aclose(self) -> None: ...
