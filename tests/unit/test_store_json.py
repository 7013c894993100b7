"""dump_json: what a jsonb column can store, rejected before it reaches PostgreSQL; dump_error:
an error made storable instead."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from actors.store import dump_json
from actors.store.rows import dump_error


def test_nul_in_a_string_is_rejected() -> None:
    with pytest.raises(ValueError, match="NUL"):
        dump_json({"text": "a\x00b"})


def test_nul_in_a_key_is_rejected() -> None:
    with pytest.raises(ValueError, match="NUL"):
        dump_json({"k\x00": 1})


def test_nul_after_a_literal_backslash_is_rejected() -> None:
    with pytest.raises(ValueError, match="NUL"):
        dump_json(["\\\x00"])


def test_literal_backslash_u0000_text_is_accepted() -> None:
    # Given the six characters \u0000 as text, not a NUL
    text = "\\u0000"

    # When it is encoded, the JSON holds the seven characters \\u0000 (an escaped backslash)
    encoded = dump_json(text)

    # Then it is accepted and reads back as the same text
    assert encoded == '"\\\\u0000"'
    assert json.loads(encoded) == text


def test_literal_double_backslash_u0000_text_is_accepted() -> None:
    text = "\\\\u0000"

    assert json.loads(dump_json([text])) == [text]


@pytest.mark.parametrize("value", ["\ud800", "a\udfffb", {"\udc00": 1}, "\ud83d\ude00"])
def test_lone_surrogates_are_rejected(value: Any) -> None:
    with pytest.raises(ValueError, match="surrogate"):
        dump_json(value)


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_are_rejected(number: float) -> None:
    with pytest.raises(ValueError, match="JSON compliant"):
        dump_json({"x": number})


def test_ordinary_unicode_is_kept_as_is() -> None:
    value = {"名前": "héllo wörld ☃ 😀", "tab": "a\tb"}

    text = dump_json(value)

    assert "héllo wörld ☃ 😀" in text
    assert "名前" in text
    assert json.loads(text) == value


def test_output_is_compact() -> None:
    assert dump_json({"a": [1, 2], "b": None}) == '{"a":[1,2],"b":null}'


def test_unserialisable_value_raises_type_error() -> None:
    with pytest.raises(TypeError):
        dump_json({"x": object()})


@pytest.mark.parametrize(
    ("message", "stored"),
    [
        ("a\x00b", "a\ufffdb"),
        ("caf\udce9", "caf\ufffd"),  # what surrogateescape leaves for a byte that is not UTF-8
        ("\ud800 and \udfff", "\ufffd and \ufffd"),
        ("\ud83d\ude00", "😀"),  # a pair of surrogates is the character it stands for
        ("héllo ☃", "héllo ☃"),
    ],
)
def test_an_error_text_is_made_storable(message: str, stored: str) -> None:
    text = dump_error({"type": "RuntimeError", "message": message})

    assert json.loads(text) == {"type": "RuntimeError", "message": stored}


def test_an_errors_keys_and_nested_texts_are_made_storable() -> None:
    value = {"k\x00": ["\x00", {"x": "\udc80"}], "n": 1, "none": None}

    assert json.loads(dump_error(value)) == {
        "k\ufffd": ["\ufffd", {"x": "\ufffd"}],
        "n": 1,
        "none": None,
    }
