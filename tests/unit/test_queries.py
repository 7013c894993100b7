"""The named-query loader and the queries the journal relies on."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from actors.store import journal
from actors.store.queries import load, parse


def test_each_name_maps_to_the_sql_below_it() -> None:
    text = "-- name: first\nSELECT 1;\n\n-- name: second\nSELECT 2\nFROM t;\n"

    assert parse(text) == {"first": "SELECT 1", "second": "SELECT 2\nFROM t"}


def test_comment_lines_are_dropped() -> None:
    text = "-- name: q\n-- what it does\nSELECT a,\n    -- why b\n    b\nFROM t;\n"

    assert parse(text) == {"q": "SELECT a,\n    b\nFROM t"}


def test_trailing_semicolon_and_blank_edges_are_removed() -> None:
    assert parse("-- name: q\n\n  SELECT 1;  \n\n\n") == {"q": "SELECT 1"}


def test_text_before_the_first_name_is_ignored() -> None:
    assert parse("-- header comment\n\n-- name: q\nSELECT 1;") == {"q": "SELECT 1"}


def test_duplicate_name_raises() -> None:
    with pytest.raises(ValueError, match="'q' is defined twice"):
        parse("-- name: q\nSELECT 1;\n-- name: q\nSELECT 2;\n")


def test_name_with_a_digit_starts_its_own_query() -> None:
    text = "-- name: get\nSELECT 1;\n-- name: get_v2\nSELECT 2;\n"

    assert parse(text) == {"get": "SELECT 1", "get_v2": "SELECT 2"}


def names_used_by_the_journal() -> set[str]:
    """Query names looked up by the store's modules (journal.py, tenancy.py, …)."""
    sources = Path(journal.__file__).parent.glob("*.py")
    return {
        name
        for source in sources
        for name in re.findall(r'QUERIES\["([^"]+)"\]', source.read_text("utf-8"))
    }


def test_every_query_the_journal_runs_is_shipped() -> None:
    used = names_used_by_the_journal()

    assert used, "no QUERIES[...] lookups found in journal.py"
    assert used - load().keys() == set()


def test_every_shipped_query_is_run_by_the_journal() -> None:
    assert load().keys() - names_used_by_the_journal() == set()


def test_no_shipped_query_is_empty_or_keeps_a_trailing_semicolon() -> None:
    for name, sql in load().items():
        assert sql, name
        assert not sql.endswith(";"), name
