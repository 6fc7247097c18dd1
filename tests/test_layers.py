"""The layers of DESIGN.md section 6, checked on the source: each module imports only what is below it.
Read with `ast` (every import statement, TYPE_CHECKING blocks and function bodies included), so a
cycle hidden behind `if TYPE_CHECKING:` or a late import counts as well."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imports_of(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def offenders(files: list[Path], forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    bad = {}
    for path in files:
        hits = sorted(m for m in imports_of(path) if any(m == f or m.startswith(f + ".") for f in forbidden))
        if hits:
            bad[str(path.relative_to(ROOT))] = hits
    return bad


def test_engines_are_handed_what_they_need_and_never_import_the_store() -> None:
    engines = [*sorted((ROOT / "bot" / "gemini").glob("*.py")), ROOT / "bot" / "local_engine.py"]
    store = ("bot.storage.repository", "bot.storage.uploads", "bot.storage.usage", "bot.storage.db",
             "bot.storage.engine", "bot.storage.schema", "bot.service", "bot.pipeline")
    assert offenders(engines, store) == {}


def test_the_domain_imports_nothing_of_ours() -> None:
    assert offenders([ROOT / "bot" / "domain.py"], ("bot", "adapters")) == {}


def test_the_core_imports_no_platform_and_no_adapter() -> None:
    core = sorted((ROOT / "bot").rglob("*.py"))
    assert offenders(core, ("slack_bolt", "slack_sdk", "discord", "adapters", "threadedit")) == {}


def test_adapters_never_import_the_entry_points() -> None:
    assert offenders(sorted((ROOT / "adapters").rglob("*.py")), ("threadedit",)) == {}
