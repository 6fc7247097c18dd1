"""A real headless Chromium (Debian's chromium and chromium-driver) against a real
`threadedit playground` process. Nothing is downloaded at run time: Selenium is given both paths,
so Selenium Manager never starts. Without the browser the tests skip, except under CI."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WINDOW = (1280, 900)  # screenshots are taken at this size


def _require_browser() -> None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (pip install -e '.[test]')")
    if missing:
        message = f"browser tests need {', '.join(missing)} (apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


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
    proc = subprocess.Popen([sys.executable, "-m", "bot", "playground", "--port", "0"], cwd=tmp_path,
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


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--hide-scrollbars", f"--window-size={WINDOW[0]},{WINDOW[1]}",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    # --window-size counts the window, not the page; this fixes the page itself at WINDOW.
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": WINDOW[0], "height": WINDOW[1], "deviceScaleFactor": 1, "mobile": False})
    try:
        yield driver
    finally:
        driver.quit()
