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


CHAT_AND_ADAPTERS = [*sorted((ROOT / "bot" / "chat").glob("*.py")),
                     *sorted((ROOT / "adapters").rglob("*.py"))]


def test_adapters_and_the_chat_core_never_import_the_store() -> None:
    # Not even the blob store: the service layer says which images a turn has (bot/reads.py) and
    # the app hands the playground its images to read; rows, transactions and engines stay below.
    assert offenders(CHAT_AND_ADAPTERS, ("bot.storage",)) == {}


# The service layer and what wires, reports on or copies the store; everything else asks them.
STORE_HOLDERS = ("bot/storage/", "bot/service", "bot/turn_runner.py", "bot/deliveries.py", "bot/reads.py",
                 "bot/app.py", "bot/spending.py", "bot/export.py")


def store_reach_ins(path: Path) -> list[int]:
    """Lines where a module names an attribute `store` (`service.store`, `self.store = ...`)."""
    tree = ast.parse(path.read_text(), str(path))
    return sorted({n.lineno for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "store"})


def reach_ins(paths: list[Path]) -> dict[str, list[int]]:
    found = {str(p.relative_to(ROOT)): store_reach_ins(p) for p in paths}
    return {path: lines for path, lines in found.items() if lines}


def test_only_the_service_layer_reaches_the_store() -> None:
    modules = [p for p in (*sorted((ROOT / "bot").rglob("*.py")), *sorted((ROOT / "adapters").rglob("*.py")))
               if not str(p.relative_to(ROOT)).startswith(STORE_HOLDERS)]
    assert reach_ins(modules) == {}
