"""Driving a page of the playground in a real browser: every wait is an explicit condition on the
page, never a fixed sleep. Shared by the desktop and the phone tests."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.browser.conftest import ROOT

WAIT = 20  # seconds an expected change may take before the test fails (it takes well under 2)


class Page:
    def __init__(self, driver: Any, base: str) -> None:
        from selenium.webdriver.support.ui import WebDriverWait

        self.d, self.base = driver, base
        self.wait = WebDriverWait(driver, WAIT, poll_frequency=0.05)

    def until(self, condition: Callable[[Any], Any], what: str) -> Any:
        return self.wait.until(condition, message=f"waited {WAIT}s for {what}")

    def find(self, css: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.until(lambda d: d.find_element(By.CSS_SELECTOR, css), css)

    def present(self, css: str) -> bool:
        from selenium.webdriver.common.by import By

        return bool(self.d.find_elements(By.CSS_SELECTOR, css))

    def click(self, css: str) -> None:
        """Click, trying again if the thread swapped the element out from under us."""
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.common.by import By

        def attempt(d: Any) -> bool:
            try:
                d.find_element(By.CSS_SELECTOR, css).click()
                return True
            except StaleElementReferenceException:
                return False

        self.until(attempt, f"a clickable {css}")

    def send(self, text: str) -> None:
        box = self.find("#instruction")
        box.clear()
        box.send_keys(text)
        self.click("#send")

    def version(self, number: int) -> None:
        self.find(f'.version-card[data-version="{number}"]')

    def shot(self, path: Path, name: str) -> None:
        self.d.save_screenshot(str(path / name))
        if os.environ.get("UPDATE_SCREENSHOTS") == "1":
            shutil.copyfile(path / name, ROOT / "docs" / "screenshots" / name)
