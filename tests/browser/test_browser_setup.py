"""Finding the browser: on PATH under any of its usual names, and a skip that says what is missing
and how to install it. These run everywhere; they need no browser."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tests.browser.conftest import find_program, missing_browser


def _program(folder: Path, name: str) -> Path:
    path = folder / name
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_nothing_on_path_names_both_programs_and_how_to_install_them(tmp_path: Path) -> None:
    reason = missing_browser(path=str(tmp_path))
    assert reason is not None
    assert "chromium, chromium-browser, google-chrome" in reason and "chromedriver" in reason
    assert "apt-get install chromium chromium-driver" in reason


def test_browser_and_driver_are_found_on_path_under_other_names(tmp_path: Path) -> None:
    browser = _program(tmp_path, "chromium-browser")  # Ubuntu's name for it
    driver = _program(tmp_path, "chromedriver")
    path = os.pathsep.join([str(tmp_path / "empty"), str(tmp_path)])
    assert find_program(("chromium", "chromium-browser"), path) == browser
    assert find_program(("chromedriver",), path) == driver
    assert missing_browser(path=path) is None


def test_a_missing_driver_alone_is_named(tmp_path: Path) -> None:
    _program(tmp_path, "google-chrome")
    reason = missing_browser(path=str(tmp_path))
    assert reason is not None and "Chromium or Chrome binary" not in reason and "chromedriver" in reason
