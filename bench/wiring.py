"""The real application, in the benchmark's process, pointed at the fake model.

`open_app(settings)` builds exactly what the CLI and the adapters run (store, blobs, engine,
EditService and whatever context policy it is configured with), so a change to the service's
wiring shows up here without touching the benchmarks. Settings come from keyword arguments only
(`_env_file=None`: a developer's .env must not change the figures); THREADEDIT_CONTEXT_* and other
variables set in the shell still apply, and are printed with the results.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from bench.processes import FakeModel, app_env
from bot.app import App, open_app
from bot.config import Settings, load_settings

# Edits a person might type in a long thread; cycled through, numbered so no two are equal.
INSTRUCTIONS = (
    "make the sky a warmer orange, like late golden hour",
    "add a small red bicycle leaning on the left wall",
    "remove the people in the background",
    "make the walls sage green and keep the lighting",
    "add soft fog over the water",
    "crop tighter on the doorway and straighten the horizon",
    "change the season to early winter with a little snow on the roofs",
    "make the neon sign say OPEN in blue",
    "turn the street lamps on",
    "add reflections of the lights on the wet pavement",
    "make the photo look like it was shot on 35mm film",
    "replace the car with a vintage green scooter",
)


def instruction(n: int) -> str:
    return f"{INSTRUCTIONS[(n - 1) % len(INSTRUCTIONS)]} (edit {n})"


def settings_for(data_dir: Path, fake: FakeModel, **extra: str) -> Settings:
    return load_settings(_env_file=None, **app_env(data_dir, fake, **extra))


@asynccontextmanager
async def bench_app(data_dir: Path, fake: FakeModel, **extra: str) -> AsyncIterator[App]:
    async with open_app(settings_for(data_dir, fake, **extra)) as app:
        yield app


def context_settings(settings: Settings) -> dict[str, Any]:
    """The bounded-context settings, where this version of the bot has them."""
    names = ("context_max_tokens", "context_max_mb")
    return {n: getattr(settings, n) for n in names if hasattr(settings, n)}
