"""The README's promise, in a real browser: open the playground, start a session with a reference
image, watch v1 appear without a reload, undo, approve, and see the version tree in the gallery.

Every wait is an explicit condition on the page, never a fixed sleep. Screenshots go to the test's
temporary directory, and to docs/screenshots/ when UPDATE_SCREENSHOTS=1 (so that ordinary runs
leave the working tree alone).
"""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from tests.browser.conftest import Server
from tests.browser.pages import Page


def _reference(path: Path) -> Path:
    """A small harbour-at-dusk picture, so the screenshots show something worth looking at."""
    w, h = 960, 640
    img = Image.new("RGB", (w, h))
    draw = ImageDraw.Draw(img)
    for y in range(h):
        t = y / h
        draw.line([(0, y), (w, y)], fill=(int(40 + 200 * t), int(60 + 90 * t), int(140 - 40 * t)))
    draw.ellipse([600, 300, 760, 460], fill=(255, 196, 120))
    draw.rectangle([0, 470, w, h], fill=(28, 44, 84))
    for i in range(0, w, 24):
        draw.line([(i, 500 + 6 * math.sin(i / 30)), (i + 14, 500 + 6 * math.sin(i / 30))],
                  fill=(255, 196, 120), width=2)
    draw.polygon([(120, 470), (180, 300), (240, 470)], fill=(18, 26, 48))
    draw.rectangle([170, 250, 190, 300], fill=(240, 240, 230))
    img.save(path, "PNG")
    return path


def _small_png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (48, 48), (230, 170, 40)).save(buf, "PNG")
    return buf.getvalue()


DROP = """
const bytes = Uint8Array.from(atob(arguments[0]), (c) => c.charCodeAt(0));
const dt = new DataTransfer();
for (const name of arguments[1]) dt.items.add(new File([bytes], name, {type: "image/png"}));
const target = document.getElementById("composer");
for (const type of ["dragenter", "dragover", "drop"]) {
  target.dispatchEvent(new DragEvent(type, {dataTransfer: dt, bubbles: true, cancelable: true}));
}
"""


def test_thread_and_gallery_in_a_real_browser(playground: Server, browser: Any, tmp_path: Path) -> None:
    page = Page(browser, playground.url)
    browser.get(playground.url)
    name = page.find("#author")
    name.clear()
    name.send_keys("Ana")  # remembered in localStorage, sent as the author of every action
    page.send("a lighthouse at dusk in navy and orange")  # a first session, from words alone
    page.version(1)
    page.click('a.btn[href="/"]')  # New session
    page.find(".welcome")
    assert page.find("#author").get_attribute("value") == "Ana"
    assert "a lighthouse at dusk" in page.find("#sessions").text
    # Anything that reloads the page would lose this.
    browser.execute_script("window.__sameDocument = 'yes'")

    # Start a session: an instruction and a reference attached through the file picker, then two
    # more dropped on the composer (a real drop event carrying files), one of them taken back out.
    page.find("#files").send_keys(str(_reference(tmp_path / "harbour.png")))
    page.find('#attachments img[alt="harbour.png"]')
    browser.execute_script(DROP, base64.b64encode(_small_png()).decode(), ["logo.png", "extra.png"])
    page.click('#attachments button[aria-label="Remove extra.png"]')
    names = [el.text for el in page.until(
        lambda d: len(d.find_elements("css selector", "#attachments .name")) == 2
        and d.find_elements("css selector", "#attachments .name"), "two attachments")]
    assert names == ["harbour.png", "logo.png"]
    page.send('add a gold border and caption "Harbour at dusk"')
    page.version(1)
    assert browser.execute_script("return window.__sameDocument") == "yes"
    assert browser.current_url.rstrip("/").endswith("/s/2")
    assert len(browser.find_elements("css selector", ".msg.user .refs img")) == 2  # shown in the thread
    assert "asked by Ana" in page.find('.version-card[data-version="1"] figcaption').text

    page.send("make it warmer")
    page.version(2)
    page.send("black and white")
    page.version(3)

    # Undo on the head steps back to v2; the thread says so.
    page.click('.version-card[data-version="3"] button[data-control="undo"]')
    page.find('.version-card.is-head[data-version="2"]')
    page.until(lambda d: "Back to v2." in page.find("#conversation").text, "the undo notice")

    page.click('.version-card[data-version="2"] button[data-control="approve"]')
    badge = page.find('.version-card[data-version="2"] .badge.approved')
    assert badge.text == "Approved by Ana"

    # The next instruction edits v2, so the tree branches there.
    page.send("sepia")
    page.version(4)
    page.until(lambda d: not page.present(".progress"), "no turn in progress")
    assert browser.execute_script("return window.__sameDocument") == "yes"
    assert "v4 (from v2)" in page.find('.version-card[data-version="4"] figcaption').text
    page.until(lambda d: d.execute_script(
        "return Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"), "images")
    page.shot(tmp_path, "thread.png")

    page.click('.session-head a[href="/s/2/gallery"]')
    page.find(".tree")
    head = page.find('.node.is-head[data-version="4"]')
    assert "from v2" in head.text
    branch = page.find('ol.branch[data-branch-of="2"] .node[data-version="3"]')
    assert "black and white" in branch.text
    approved = page.find('.node[data-version="2"] .approval')
    assert "Approved by Ana" in approved.text
    page.until(lambda d: d.execute_script(
        "return Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"), "thumbnails")
    page.shot(tmp_path, "gallery.png")

    # Two versions side by side.
    page.click('.node[data-version="1"] input[name=v]')
    page.click('.node[data-version="4"] input[name=v]')
    page.click("#compare-button")
    shown = [el.get_attribute("data-version") for el in
             page.until(lambda d: d.find_elements("css selector", ".compare-item"), "the comparison")]
    assert shown == ["1", "4"]
