"""The core's neutral text, rendered by each backend: exact wire text for formatting, mentions,
links and hostile words typed by a user (or written by the model). Fast: no processes, no I/O."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from adapters.discord.backend import REACTIONS as DISCORD_REACTIONS
from adapters.discord.backend import allowed_mentions, discord_markdown
from adapters.playground.views import html
from adapters.slack.backend import REACTIONS as SLACK_REACTIONS
from adapters.slack.backend import mrkdwn
from bot.chat import presenter
from bot.chat.controls import Control
from bot.chat.text import Code, Link, Mention, Plain, Strong, Text
from bot.results import HistoryView, TurnResult

Z = "\u200b"  # zero-width space
HOSTILE = "*bold* _x_ <!channel> <@U123> @everyone **x** `code` <script>"


def result(instruction: str, author: str = "U1", version: int = 2, parent: int | None = 1,
           **kw: object) -> TurnResult:
    fields: dict = {"status": "ok", **kw}
    return TurnResult(session_id=1, turn_id=1, instruction=instruction, author=author,
                      model="gemini-3.1-flash-image-preview", aspect_ratio=None, image_size=None,
                      version=version, parent_version=parent, **fields)


# Slack ------------------------------------------------------------------------------------------

def test_slack_renders_bold_mention_link_and_code():
    text = Text.of(Strong("v1"), " · asked by ", Mention("U07ABC"), " ",
                   Link("https://example.com/a?b=1&c=2", "the gallery"), " ", Code("aspect 16:9"))
    assert mrkdwn(text) == ("*v1* · asked by <@U07ABC> "
                            "<https://example.com/a?b=1&amp;c=2|the gallery> `aspect 16:9`")
    assert mrkdwn(text, bold=False).startswith("v1 · asked by <@U07ABC>")


def test_slack_shows_hostile_words_as_words():
    assert mrkdwn(Text.of(HOSTILE)) == (
        f"{Z}*{Z}bold{Z}*{Z} {Z}_{Z}x{Z}_{Z} &lt;!channel&gt; &lt;@U123&gt; @everyone "
        f"{Z}*{Z}{Z}*{Z}x{Z}*{Z}{Z}*{Z} {Z}`{Z}code{Z}`{Z} &lt;script&gt;")
    # Inside bold, too: the bold is ours, what it holds is not.
    assert mrkdwn(Text.of(Strong("a & <b>"))) == "*a &amp; &lt;b&gt;*"


def test_slack_caption_keeps_its_bold_label_and_escapes_the_instruction():
    caption = presenter.caption(result("make it *pop* & <!here>", author="UANA"))
    assert mrkdwn(caption) == (f"*v2 (from v1)* · make it {Z}*{Z}pop{Z}*{Z} &amp; &lt;!here&gt; · "
                               "asked by <@UANA>")


# Discord ----------------------------------------------------------------------------------------

def test_discord_renders_bold_mention_link_and_code():
    text = Text.of(Strong("v1"), " · asked by ", Mention("123456789012345678"), " ",
                   Link("https://example.com/a (1)", "the gallery"), " ", Code("aspect 16:9"))
    assert discord_markdown(text) == ("**v1** · asked by <@123456789012345678> "
                                      "[the gallery](https://example.com/a%20%281%29) `aspect 16:9`")


def test_discord_shows_hostile_words_as_words():
    assert discord_markdown(Text.of(HOSTILE)) == (
        r"\*bold\* \_x\_ \<!channel> \<@U123> " f"@{Z}everyone " r"\*\*x\*\* \`code\` \<script>")
    typed = Text.of("# big\n> quote\n-# small ||spoiler|| [x](https://evil.example) <@&3000> @here")
    assert discord_markdown(typed) == (
        "\\# big\n\\> quote\n\\-# small \\|\\|spoiler\\|\\| \\[x](https://evil.example) "
        f"\\<@&3000> @{Z}here")


def test_discord_notifies_only_the_people_the_text_mentions():
    text = Text.of(Mention("111111111111111111"), " <@222222222222222222> @everyone")
    allowed = allowed_mentions(text).to_dict()
    assert allowed["parse"] == [] and allowed["users"] == [111111111111111111]
    assert allowed_mentions(Text.of("no one")).to_dict()["users"] == []


def test_discord_caption_bold_is_discord_bold():
    caption = presenter.caption(result("add a **ship**", author="42", version=1, parent=None))
    assert discord_markdown(caption) == r"**v1** · add a \*\*ship\*\* · asked by <@42>"


# Playground -------------------------------------------------------------------------------------

def test_playground_renders_html_with_every_word_escaped():
    text = Text.of(Strong("v1 <b>"), " ", HOSTILE, " ", Mention("Dana <AD>"), " ",
                   Code("<i>"), " ", Link("javascript:alert(1)", "x"), " ", Link("/s/1", "<y>"))
    assert str(html(text)) == (
        "<strong>v1 &lt;b&gt;</strong> *bold* _x_ &lt;!channel&gt; &lt;@U123&gt; @everyone **x** "
        "`code` &lt;script&gt; Dana &lt;AD&gt; <code>&lt;i&gt;</code> x "
        '<a href="/s/1" rel="noopener noreferrer">&lt;y&gt;</a>')


# The core ---------------------------------------------------------------------------------------

def test_presenter_lines_are_neutral_text_with_people_as_mentions():
    view = HistoryView(session_id=1, head=1, model="gemini-3.1-flash-image-preview",
                       aspect_ratio=None, image_size=None, versions=[], notice="v1 approved by U9.")
    assert presenter.approval_line(view, 1, "U9") == Text((Plain("✅ v1 approved by "), Mention("U9"),
                                                          Plain(".")))
    withdrew = HistoryView(**{**view.__dict__, "notice": "U9 withdrew the approval of v1."})
    assert presenter.approval_line(withdrew, 1, "U9") == Text.of(
        Mention("U9"), " withdrew the approval of v1.")
    assert presenter.addressed("U9", "No.") == Text.of(Mention("U9"), " No.")
    assert Code("history") in presenter.help_text(False).spans
    # Words the model wrote are plain words, whatever they look like.
    words = presenter.no_version_line(result("x", status="text", text="*I* <@U1>"))
    assert len(words.spans) == 1 and words.plain().endswith("answered in words: *I* <@U1>")


def test_reactions_are_each_platforms_own():
    assert SLACK_REACTIONS == {"leftwards_arrow_with_hook": Control.UNDO, "repeat": Control.RETRY,
                               "white_check_mark": Control.APPROVE}
    assert DISCORD_REACTIONS["\u21a9\ufe0f"] is Control.UNDO
    assert DISCORD_REACTIONS["\U0001f501"] is Control.RETRY
    assert DISCORD_REACTIONS["\u2705"] is Control.APPROVE
    assert not set(SLACK_REACTIONS) & set(DISCORD_REACTIONS)


PLATFORM_WORDS = ("slack", "discord", "mrkdwn", "<@", "**")


def _code_strings(path: Path) -> list[str]:
    """The string literals of a module that are not docstrings: what its code can say or send."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    return [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)
            and isinstance(node.value, str) and id(node) not in docstrings]


@pytest.mark.parametrize("module", sorted(Path("bot/chat").glob("*.py")), ids=lambda p: p.name)
def test_the_chat_core_writes_no_platform_syntax(module: Path):
    for literal in _code_strings(module):
        for word in PLATFORM_WORDS:
            assert word not in literal.lower(), f"{module}: {literal!r}"


def test_the_chat_core_imports_no_platform():
    for module in Path("bot/chat").glob("*.py"):
        imports = [n for n in ast.walk(ast.parse(module.read_text()))
                   if isinstance(n, ast.Import | ast.ImportFrom)]
        names = [a.name for n in imports if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in imports if isinstance(n, ast.ImportFrom)]
        assert not [n for n in names if n.split(".")[0] in ("discord", "slack_bolt", "slack_sdk",
                                                           "adapters")], module
