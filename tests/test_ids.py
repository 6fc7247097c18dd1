"""parse_id: the one reading of an id typed by a person (CLI arguments, URL parts)."""

from __future__ import annotations

import pytest

from bot.ids import SQLITE_MAX_INTEGER, parse_id


@pytest.mark.parametrize(("text", "value"), [
    ("1", 1), ("42", 42), ("007", 7), ("0", 0),
    (str(SQLITE_MAX_INTEGER), SQLITE_MAX_INTEGER),
    ("0" * 18 + "1", 1),
])
def test_ascii_digits_that_fit_sqlite_are_ids(text: str, value: int) -> None:
    assert parse_id(text) == value


@pytest.mark.parametrize("text", [
    "", " 1", "1 ", "1\n", "+1", "-1", "1.0", "1e3", "0x10", "v1", "1_000",
    "²", "1²", "٣", "１２", "𝟙",  # str.isdigit() or int() accept these; an id is ASCII only
    str(SQLITE_MAX_INTEGER + 1), "99999999999999999999", "9" * 5000,
])
def test_anything_else_is_no_id(text: str) -> None:
    assert parse_id(text) is None


def test_a_huge_id_is_refused_without_reading_it_as_a_number() -> None:
    # int() refuses strings past 4,300 digits with ValueError; parse_id must not get that far.
    assert parse_id("1" * 100_000) is None
