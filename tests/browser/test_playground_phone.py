"""The playground and the gallery on a 390 px phone, measured in a real Chromium emulating one:
nothing runs off the side, the header reads in full, the controls and "Download zip" are on
screen, and the notes in the thread say what they are (a words-only answer is not a failure, a
success note goes away, a 4K render is not shown as something the user typed).

Screenshots go to the test's temporary directory, and to docs/screenshots/ when
UPDATE_SCREENSHOTS=1.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

from PIL import Image

from tests.browser.conftest import PHONE, Server
from tests.browser.pages import Page

# Every element matching the selector that is shown must lie inside the window's width, and the
# page itself must be no wider than the window (a phone would otherwise scroll sideways).
OFF_SIDE = """
const width = window.innerWidth, out = [];
const page = document.documentElement.scrollWidth;
if (page > width) out.push(`the page is ${page} px wide in a ${width} px window`);
for (const el of document.querySelectorAll(arguments[0])) {
  const box = el.getBoundingClientRect();
  if (box.width === 0 && box.height === 0) continue;  // not shown
  if (box.left < -0.5 || box.right > width + 0.5) {
    const name = `${el.tagName.toLowerCase()}.${el.className}`;
    out.push(`${name} spans ${Math.round(box.left)} to ${Math.round(box.right)}`);
  }
}
return out;
"""
CHECKED = ".topbar > *, h1, .meta, .btn, img, input, textarea, .version-card, .node, .words-note"
TRUNCATED = "const el = document.querySelector(arguments[0]); return el.scrollWidth > el.clientWidth;"
LINES = """
const el = document.querySelector(arguments[0]);
return Math.round(el.getBoundingClientRect().height / parseFloat(getComputedStyle(el).lineHeight));
"""
IN_VIEW = """
const box = document.querySelector(arguments[0]).getBoundingClientRect();
return box.width > 0 && box.left >= 0 && box.top >= 0
  && box.right <= window.innerWidth && box.bottom <= window.innerHeight;
"""
# Records every state the alert line goes through, so a note that came and went is still seen.
WATCH_ALERT = """
const box = document.getElementById("alert");
window.__alerts = [];
new MutationObserver(() => window.__alerts.push({hidden: box.hidden, kind: box.dataset.kind || "",
  text: box.textContent, cls: box.className}))
  .observe(box, {attributes: true, childList: true, subtree: true, characterData: true});
"""
# The colours a failure is shown in, read from a real .failure element of this stylesheet.
FAILURE_COLOURS = """
const probe = document.createElement("p");
probe.className = "failure";
document.body.append(probe);
const style = getComputedStyle(probe), colours = [style.color, style.backgroundColor];
probe.remove();
return colours;
"""
DROP = """
const bytes = Uint8Array.from(atob(arguments[0]), (c) => c.charCodeAt(0));
const dt = new DataTransfer();
for (let i = 0; i < arguments[1]; i++) dt.items.add(new File([bytes], `ref${i}.png`, {type: "image/png"}));
const target = document.getElementById("composer");
for (const type of ["dragenter", "dragover", "drop"]) {
  target.dispatchEvent(new DragEvent(type, {dataTransfer: dt, bubbles: true, cancelable: true}));
}
"""
LOADED = "return Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"


def _fits(page: Page) -> None:
    assert page.d.execute_script("return window.innerWidth") == PHONE[0]
    assert page.d.execute_script(OFF_SIDE, CHECKED) == []


def _reads_in_full(page: Page, css: str, max_lines: int) -> None:
    assert not page.d.execute_script(TRUNCATED, css), f"{css} is cut off"
    lines = page.d.execute_script(LINES, css)
    assert 1 <= lines <= max_lines, f"{css} takes {lines} lines"


def _png() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 90, 40)).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _alerts(page: Page) -> list[dict[str, Any]]:
    return page.d.execute_script("return window.__alerts")


def test_thread_and_gallery_work_on_a_390px_phone(playground: Server, phone: Any, tmp_path: Path) -> None:
    page = Page(phone, playground.url)
    phone.get(playground.url)
    page.find(".welcome")
    _fits(page)
    _reads_in_full(page, ".brand", 1)
    assert "threadedit" in page.find(".brand").text

    page.send("a lighthouse at dusk in navy and orange")
    page.version(1)
    page.click("details.settings > summary")  # the settings menu opens inside the screen
    page.until(lambda d: page.find(".settings-form select[name=model]").is_displayed(), "the settings")
    assert phone.execute_script(OFF_SIDE, ".settings-form, .settings-form select, .settings-form .btn") == []
    page.click("details.settings > summary")
    page.send("make it warmer")
    page.version(2)

    # Words only: a neutral note named after the engine that answered, not a red "Gemini said".
    page.send("what is this?")
    note = page.find(".outcome-words .words-note")
    assert "The offline engine answered in words; no new version." in note.text
    assert "Gemini said" not in page.find(".outcome-words").text
    assert not page.present(".failure")
    style = phone.execute_script(
        "const s = getComputedStyle(arguments[0]); return [s.color, s.backgroundColor];", note)
    failure = phone.execute_script(FAILURE_COLOURS)
    assert style[0] != failure[0] and style[1] != failure[1], (style, failure)

    # A success note fades by itself (the page is told to keep it briefly, to keep this quick) ...
    phone.execute_script(WATCH_ALERT + 'document.body.dataset.noticeMs = "300";')
    page.click('.version-card[data-version="2"] button[data-control="approve"]')
    page.until(lambda d: any(not a["hidden"] and a["kind"] == "notice" and "approved" in a["text"]
                             for a in _alerts(page)), "the approval note")
    page.until(lambda d: d.execute_script("return document.getElementById('alert').hidden"),
               "the approval note to go away by itself")
    shown = next(a for a in _alerts(page) if not a["hidden"])
    assert shown["cls"] == "alert notice"  # green, not the failure style

    # ... and goes at the next action even when it would stay long.
    phone.execute_script('document.body.dataset.noticeMs = "600000";')
    page.click('.version-card[data-version="1"] button[data-control="approve"]')
    page.until(lambda d: "v1 approved" in page.find("#alert").text and page.find("#alert").is_displayed(),
               "the second approval note")
    page.click('.version-card[data-version="2"] button[data-control="4k"]')
    page.until(lambda d: not page.find("#alert").is_displayed(), "the note to go at the next action")

    # The 4K turn reads as what was asked, and a version already at 4K offers no 4K.
    page.version(3)
    request = page.find(".msg.user:has(+ .msg.bot [data-version='3']) .text")
    assert request.text == "4K render of v2"
    assert "Render this same image" not in page.find("#conversation").text
    assert page.present('.version-card[data-version="2"] button[data-control="4k"]')
    assert not page.present('.version-card[data-version="3"] button[data-control="4k"]')

    # A branch, so that the gallery has one to show: back to v2, then a new instruction.
    page.click('.version-card[data-version="3"] button[data-control="undo"]')
    page.find('.version-card.is-head[data-version="2"]')
    page.send("sepia")
    page.version(4)
    page.until(lambda d: not page.present(".progress"), "no turn in progress")
    page.until(lambda d: d.execute_script(LOADED), "images")
    page.until(lambda d: d.execute_script(
        "const c = document.getElementById('conversation');"
        "return c.scrollHeight - c.scrollTop - c.clientHeight < 2"), "the newest message in view")

    # The thread on a phone: header in full, the newest version's controls and Send reachable.
    _fits(page)
    _reads_in_full(page, ".brand", 1)
    _reads_in_full(page, ".session-head h1", 3)
    _reads_in_full(page, ".session-head .meta", 3)
    assert phone.execute_script(IN_VIEW, "#send")
    assert phone.execute_script(IN_VIEW, ".session-head a.btn")  # Gallery
    assert phone.execute_script(IN_VIEW, '.version-card[data-version="4"] button[data-control="approve"]')
    page.shot(tmp_path, "thread-phone.png")

    # A failure stays: still there after a success note would have gone, until dismissed.
    phone.execute_script('document.body.dataset.noticeMs = "300"; window.__failedAt = performance.now();')
    phone.execute_script(DROP, _png(), 11)  # one more image than a message takes
    page.until(lambda d: "Attach at most 10 images" in page.find("#alert").text, "the refusal")
    page.until(lambda d: d.execute_script("return performance.now() - window.__failedAt > 1000"),
               "longer than a note stays")
    assert page.find("#alert").is_displayed()
    page.click("#alert .alert-close")
    page.until(lambda d: not page.find("#alert").is_displayed(), "the refusal dismissed")

    # The session list is a drawer on a phone.
    assert not page.find("#sidebar").is_displayed()
    page.click("#sessions-toggle")
    page.until(lambda d: page.find("#sidebar").is_displayed(), "the session drawer")
    assert phone.execute_script(IN_VIEW, '.session-link[data-session-id="1"]')
    from selenium.webdriver.common.actions.action_builder import ActionBuilder

    tap = ActionBuilder(phone)
    tap.pointer_action.move_to_location(PHONE[0] - 20, PHONE[1] // 2).click()  # beside the drawer
    tap.perform()
    page.until(lambda d: not page.find("#sidebar").is_displayed(), "the drawer closed")
    assert page.find("#sessions-toggle").get_attribute("aria-expanded") == "false"

    # The gallery, as an art director opens it from a link.
    phone.get(f"{playground.url}/s/1/gallery")
    page.find(".tree")
    page.until(lambda d: d.execute_script(LOADED), "thumbnails")
    _fits(page)
    _reads_in_full(page, ".brand", 1)
    _reads_in_full(page, ".gallery-head h1", 3)
    _reads_in_full(page, ".gallery-head .meta", 3)
    assert phone.execute_script(IN_VIEW, ".actions a[download]"), "Download zip is off screen"
    assert page.find(".actions a[download]").text == "Download zip"
    assert page.present('ol.branch[data-branch-of="2"] .node[data-version="3"]')
    assert page.find('.node[data-version="3"] .node-text').text == "4K render of v2"
    page.shot(tmp_path, "gallery-phone.png")

    page.click('.node[data-version="1"] input[name=v]')
    page.click('.node[data-version="4"] input[name=v]')
    page.click("#compare-button")
    page.find(".compare-item")
    page.until(lambda d: d.execute_script(LOADED), "the compared images")
    _fits(page)
    assert page.d.execute_script(OFF_SIDE, ".compare-item img, .compare-head .btn") == []
