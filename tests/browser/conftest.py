"""A real headless Chromium (Debian's chromium and chromium-driver) against a real
`threadedit playground` process. Nothing is downloaded at run time: Selenium is given both paths,
so Selenium Manager never starts. Without the browser the tests skip, saying which program is
missing and how to install it (and the run's summary repeats it); under CI they fail instead."""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Debian and Ubuntu name the browser differently, and Google's build has names of its own.
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
DRIVER_NAMES = ("chromedriver",)
# Debian's chromium-driver puts chromedriver here, which may not be on a minimal PATH.
DEBIAN_DIRS = (Path("/usr/bin"), Path("/usr/lib/chromium"))
INSTALL = ("install it with `sudo apt-get install chromium chromium-driver` (Debian/Ubuntu) "
           "or put Chrome or Chromium and its matching chromedriver on PATH")
WINDOW = (1280, 900)  # screenshots are taken at this size
PHONE = (390, 844)  # an iPhone 12 to 15 in CSS pixels
_skipped: list[str] = []


def find_program(names: tuple[str, ...], path: str | None = None) -> Path | None:
    """The first of these programs on PATH (or on `path`), then in Debian's own folders."""
    for name in names:
        found = shutil.which(name, path=path)
        if found:
            return Path(found)
    if path is None:
        for folder in DEBIAN_DIRS:
            for name in names:
                if (folder / name).is_file() and os.access(folder / name, os.X_OK):
                    return folder / name
    return None


def missing_browser(path: str | None = None) -> str | None:
    """Why the browser tests cannot run here, as one sentence, or None when they can."""
    missing = []
    if find_program(BROWSER_NAMES, path) is None:
        missing.append(f"a Chromium or Chrome binary (looked for {', '.join(BROWSER_NAMES)} on PATH)")
    if find_program(DRIVER_NAMES, path) is None:
        missing.append("chromedriver (looked on PATH and in /usr/lib/chromium)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (pip install -e '.[test]')")
    if not missing:
        return None
    return f"browser tests skipped: missing {' and '.join(missing)}; {INSTALL}."


def _require_browser() -> tuple[Path, Path]:
    reason = missing_browser()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason)
        if reason not in _skipped:
            _skipped.append(reason)
        pytest.skip(reason)
    browser, driver = find_program(BROWSER_NAMES), find_program(DRIVER_NAMES)
    assert browser is not None and driver is not None
    return browser, driver


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """A skip is easy to miss in `-q` output; say once, at the end, why these did not run."""
    for reason in _skipped:
        terminalreporter.write_line(reason, yellow=True)


class Server:
    def __init__(self, proc: subprocess.Popen[str], url: str, data_dir: Path) -> None:
        self.proc, self.url, self.data_dir = proc, url, data_dir


@pytest.fixture
def playground(tmp_path: Path) -> Iterator[Server]:
    _require_browser()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GEMINI_", "THREADEDIT_", "SLACK_", "DISCORD_"))}
    env.update(PYTHONPATH=str(ROOT), THREADEDIT_DATA_DIR=str(tmp_path / "data"),
               THREADEDIT_ENGINE="local")
    # cwd is the temporary directory so that no developer's .env is read.
    proc = subprocess.Popen([sys.executable, "-m", "threadedit", "playground", "--port", "0"], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    line = proc.stdout.readline() if ready else ""
    found = re.search(r"http://\S+", line)
    if not found:
        proc.kill()
        err = proc.stderr.read() if proc.stderr else ""
        raise AssertionError(f"the playground did not start: {line!r} {err}")
    server = Server(proc, found.group(0), tmp_path / "data")
    yield server
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0, proc.stderr.read() if proc.stderr else code


def _chromium(tmp_path: Path, size: tuple[int, int], *, mobile: bool, scale: int) -> Any:
    chromium, chromedriver = _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(chromium)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--hide-scrollbars", f"--window-size={size[0]},{size[1]}",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(chromedriver)), options=options)
    # --window-size counts the window, not the page; this fixes the page itself at `size`. As a
    # phone (`mobile`), the page gets a phone's viewport rules: a page wider than the screen
    # widens the layout viewport instead of hiding the excess, which the phone tests measure.
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": size[0], "height": size[1], "deviceScaleFactor": scale, "mobile": mobile})
    if mobile:
        driver.execute_cdp_cmd("Emulation.setTouchEmulationEnabled", {"enabled": True, "maxTouchPoints": 5})
    return driver


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    driver = _chromium(tmp_path, WINDOW, mobile=False, scale=1)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def phone(tmp_path: Path) -> Iterator[Any]:
    """Chromium as a 390 px wide phone at 2x, as art directors open gallery links."""
    driver = _chromium(tmp_path, PHONE, mobile=True, scale=2)
    try:
        yield driver
    finally:
        driver.quit()
