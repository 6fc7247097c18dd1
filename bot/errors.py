"""Errors every layer may need to recognise, defined below all of them: the chat core tells a
store that does not answer apart from other failures without importing the store."""

from __future__ import annotations


class StoreUnavailable(Exception):
    """The data directory or the database cannot be used. The message is one sentence naming
    the path and what to do; nothing was changed."""
