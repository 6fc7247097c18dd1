"""What every benchmark is given: where to work, where to write, and how big a run to make."""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from bench import photos


@dataclass
class Run:
    work: Path  # a private temporary directory for this run: data dirs, logs, rendered photos
    out: Path  # where PNG charts and results.json go
    quick: bool
    store: str = "sqlite"  # turn_time's store: sqlite (the data directory's file) or postgresql
    first_answer_only: bool = False  # fleet: only the first-visible-answer rows
    _seeded: dict[tuple[int, int], Path] = field(default_factory=dict)

    def fresh_dir(self, name: str) -> Path:
        """A new, empty directory under the work directory."""
        n = 1
        while (self.work / f"{name}-{n}").exists():
            n += 1
        path = self.work / f"{name}-{n}"
        path.mkdir(parents=True)
        return path

    def chart(self, name: str) -> Path:
        return self.out / f"{name}.png"

    async def photos_ready(self, size: tuple[int, int] = (2048, 2048)) -> None:
        """Render the photo variants once per run, before any fake model needs them."""
        await asyncio.to_thread(photos.ensure, self.work / "photos", size)

    async def seeded_copy(self, sessions: int, versions: int) -> tuple[Path, list[int]]:
        """A data directory holding `sessions` stored sessions: seeded once per run, copied per use
        (the copy is what the caller changes)."""
        from bench.seed import seed

        key = (sessions, versions)
        if key not in self._seeded:
            template = self.fresh_dir(f"seeded-{sessions}x{versions}")
            await seed(template / "data", self.work / "photos", sessions, versions)
            self._seeded[key] = template
        copy = self.fresh_dir("data")
        await asyncio.to_thread(shutil.copytree, self._seeded[key] / "data", copy / "data")
        ids = (copy / "data" / "session-ids.txt").read_text().split()
        return copy / "data", [int(i) for i in ids]
