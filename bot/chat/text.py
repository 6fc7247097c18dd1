"""Neutral text: what the core says, as a sequence of spans each chat backend renders its own way.

Spans rather than a small markup language of our own: a markup needs a parser, and every piece of
user text (an instruction, the model's words, a name) would have to be escaped for it before being
spliced in; forget that once and a user's `*` or `<` becomes formatting. Here text from anywhere is
only ever a `Plain` span: data by construction. Each backend turns spans into its own syntax and
escapes plain text for that syntax in one place (Slack mrkdwn, Discord markdown, the playground's
HTML), so the core never writes, and never needs to know, any platform's markup.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Plain:
    """Words shown exactly as they are, whatever characters they hold."""

    text: str


@dataclass(frozen=True)
class Strong:
    """Words shown in bold (still never interpreted as markup)."""

    text: str


@dataclass(frozen=True)
class Code:
    """Something to type, shown as inline code (a command)."""

    text: str


@dataclass(frozen=True)
class Mention:
    """A person, by the platform's user id: a mention where the platform has them, else the id."""

    user: str


@dataclass(frozen=True)
class Link:
    url: str
    label: str


Span = Plain | Strong | Code | Mention | Link


@dataclass(frozen=True)
class Text:
    spans: tuple[Span, ...] = ()

    @classmethod
    def of(cls, *parts: str | Span | Text) -> Text:
        """A text from pieces: a str is plain words, a Text contributes its spans. Neighbouring
        plain words become one span, so equal texts compare equal however they were built."""
        spans: list[Span] = []
        for part in parts:
            for span in part.spans if isinstance(part, Text) else [Plain(part) if isinstance(part, str)
                                                                    else part]:
                if isinstance(span, Plain) and not span.text:
                    continue
                if isinstance(span, Plain) and spans and isinstance(spans[-1], Plain):
                    spans[-1] = Plain(spans[-1].text + span.text)
                else:
                    spans.append(span)
        return cls(tuple(spans))

    def __bool__(self) -> bool:
        return bool(self.spans)

    def plain(self, name: Callable[[str], str] = str) -> str:
        """The words without any formatting; `name` shows a mentioned user (default: the id).
        For logs, tests and places that show text as text."""
        out: list[str] = []
        for span in self.spans:
            if isinstance(span, Mention):
                out.append(name(span.user))
            elif isinstance(span, Link):
                out.append(span.label)
            else:
                out.append(span.text)
        return "".join(out)

    def mentions(self) -> list[str]:
        """The user ids this text mentions, in order: the only people a post may notify."""
        return [s.user for s in self.spans if isinstance(s, Mention)]


def join(separator: str, texts: Iterable[str | Span | Text]) -> Text:
    parts: list[str | Span | Text] = []
    for i, t in enumerate(texts):
        if i:
            parts.append(separator)
        parts.append(t)
    return Text.of(*parts)
