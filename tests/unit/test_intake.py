"""The pure validation of what clients send: JSON, event bodies, headers and query strings."""

from __future__ import annotations

import json
from typing import Any

import pytest
from starlette.datastructures import QueryParams

from actors.states import EventStatus
from gateway import intake
from gateway.problems import Problem

KNOWN = {"demo.echo", "order.created"}


def problem(call: Any, *args: Any) -> Problem:
    with pytest.raises(Problem) as raised:
        call(*args)
    return raised.value


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


# --- parse_json ------------------------------------------------------------------------


def test_a_json_object_is_parsed() -> None:
    body = '{"type": "demo.echo", "payload": {"name": "Zoë", "n": [1, 2.5, null, true]}}'

    assert intake.parse_json(body.encode()) == {
        "type": "demo.echo",
        "payload": {"name": "Zoë", "n": [1, 2.5, None, True]},
    }


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b" \r\n\t ", id="only-white-space"),
        pytest.param(b'{"type": "demo.echo"', id="truncated"),
        pytest.param(b"{'type': 'demo.echo'}", id="single-quotes"),
        pytest.param(b'{"a": 1} {"b": 2}', id="two-documents"),
        pytest.param(b'{"a": 1}garbage', id="trailing-garbage"),
        pytest.param(b'{"a": "\xff\xfe"}', id="invalid-utf-8"),
        pytest.param(b'{"a": "\xed\xa0\x80"}', id="utf-8-encoded-surrogate"),
        pytest.param('{"a": 1}'.encode("utf-16"), id="utf-16"),
        pytest.param(b'\xef\xbb\xbf{"a": 1}', id="utf-8-byte-order-mark"),
        pytest.param(b'{"a": NaN}', id="NaN"),
        pytest.param(b'{"a": Infinity}', id="Infinity"),
        pytest.param(b'{"a": -Infinity}', id="minus-Infinity"),
        pytest.param(b'{"a": 1e400}', id="float-overflowing-to-infinity"),
        pytest.param(b'{"a": "x\\u0000y"}', id="escaped-NUL"),
        pytest.param(b'{"a": "x\x00y"}', id="raw-NUL"),
        pytest.param(b'{"a\\u0000": 1}', id="NUL-in-a-key"),
        pytest.param(b'{"a": "\\ud800"}', id="lone-high-surrogate"),
        pytest.param(b'{"a": "\\udc00x"}', id="lone-low-surrogate"),
        pytest.param(b'{"a": ' + b"9" * 5000 + b"}", id="5000-digit-integer"),
        pytest.param(nested(100_000), id="100000-deep"),
        pytest.param(nested(intake.MAX_DEPTH + 1), id="one-level-too-deep"),
    ],
)
def test_a_body_that_is_not_storable_json_is_a_400(body: bytes) -> None:
    error = problem(intake.parse_json, body)

    assert error.status == 400
    assert error.slug == "invalid-json"


def test_json_nested_exactly_to_the_limit_is_accepted() -> None:
    assert intake.parse_json(nested(intake.MAX_DEPTH)) is not None


def test_an_escaped_surrogate_pair_is_accepted_as_one_character() -> None:
    assert intake.parse_json(b'{"a": "\\ud83d\\ude00"}') == {"a": "\U0001f600"}


# --- event_body --------------------------------------------------------------------------


def test_an_event_body_yields_its_type_and_payload() -> None:
    value = {"type": "order.created", "payload": {"id": 7}}

    assert intake.event_body(value, KNOWN) == ("order.created", {"id": 7})


@pytest.mark.parametrize(
    "value",
    [
        pytest.param([{"type": "demo.echo", "payload": {}}], id="array"),
        pytest.param("demo.echo", id="string"),
        pytest.param(None, id="null"),
        pytest.param({"payload": {}}, id="missing-type"),
        pytest.param({"type": None, "payload": {}}, id="null-type"),
        pytest.param({"type": 7, "payload": {}}, id="numeric-type"),
        pytest.param({"type": "", "payload": {}}, id="empty-type"),
        pytest.param({"type": "demo echo", "payload": {}}, id="type-with-space"),
        pytest.param({"type": "x" * 201, "payload": {}}, id="type-too-long"),
        pytest.param({"type": "demo.echo"}, id="missing-payload"),
        pytest.param({"type": "demo.echo", "payload": None}, id="null-payload"),
        pytest.param({"type": "demo.echo", "payload": [1]}, id="array-payload"),
        pytest.param({"type": "demo.echo", "payload": "x"}, id="string-payload"),
        pytest.param({"type": "demo.unknown", "payload": {}}, id="unregistered-type"),
    ],
)
def test_an_invalid_event_body_is_a_422(value: Any) -> None:
    assert problem(intake.event_body, value, KNOWN).status == 422


def test_extra_top_level_fields_are_named_in_the_422() -> None:
    value = {"type": "demo.echo", "payload": {}, "client_id": "x", "seq": 1}

    error = problem(intake.event_body, value, KNOWN)

    assert error.status == 422
    assert error.extra["fields"] == ["client_id", "seq"]


def test_an_unregistered_type_has_its_own_problem_type() -> None:
    error = problem(intake.event_body, {"type": "demo.unknown", "payload": {}}, KNOWN)

    assert error.slug == "unknown-event-type"
    assert "demo.unknown" in error.detail


# --- idempotency_key ---------------------------------------------------------------------


def test_no_idempotency_key_header_means_no_key() -> None:
    assert intake.idempotency_key(None) is None


@pytest.mark.parametrize("key", ["k", "x" * 255, "order-42/attempt:1", "!~", "two words"])
def test_a_printable_ascii_idempotency_key_is_accepted(key: str) -> None:
    assert intake.idempotency_key(key) == key


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("", id="empty"),
        pytest.param("x" * 256, id="256-characters"),
        pytest.param("tab\there", id="tab"),
        pytest.param("del\x7f", id="DEL"),
        pytest.param("clé", id="non-ASCII"),
        pytest.param("line\nbreak", id="newline"),
    ],
)
def test_a_bad_idempotency_key_is_a_400(key: str) -> None:
    error = problem(intake.idempotency_key, key)

    assert (error.status, error.slug) == (400, "invalid-idempotency-key")


# --- require_json ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "Application/JSON",
        "application/json; charset=utf-8",
        'application/json; charset="UTF-8"',
        "application/json;charset=utf8",
        "application/cloudevents+json",
    ],
)
def test_json_content_types_are_accepted(content_type: str) -> None:
    intake.require_json(content_type)


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "",
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/jsonx",
        "text/json+json",
        "application/json; charset=utf-16",
        "application/json; charset=latin-1",
    ],
)
def test_other_content_types_are_a_415(content_type: str | None) -> None:
    assert problem(intake.require_json, content_type).status == 415


# --- request_hash ------------------------------------------------------------------------


def test_the_request_hash_ignores_key_order_and_white_space() -> None:
    first = json.loads('{"a": 1, "b": {"x": [1, 2], "y": "z"}}')
    second = json.loads('{ "b" : { "y" : "z", "x" : [ 1 , 2 ] },\n "a" : 1 }')

    assert intake.request_hash("demo.echo", first) == intake.request_hash("demo.echo", second)


@pytest.mark.parametrize(
    ("other_type", "other_payload"),
    [
        pytest.param("demo.sleep", {"a": 1}, id="type"),
        pytest.param("demo.echo", {"a": 2}, id="value"),
        pytest.param("demo.echo", {"a": 1, "b": None}, id="extra-field"),
        pytest.param("demo.echo", {"a": [1]}, id="shape"),
    ],
)
def test_the_request_hash_differs_when_the_request_differs(
    other_type: str, other_payload: dict[str, Any]
) -> None:
    original = intake.request_hash("demo.echo", {"a": 1})

    assert intake.request_hash(other_type, other_payload) != original


# --- query helpers -------------------------------------------------------------------------


def test_a_missing_integer_parameter_takes_its_default() -> None:
    assert intake.query_int(QueryParams(""), "limit", 100, intake.PAGE_LIMIT) == 100


@pytest.mark.parametrize(("raw", "value"), [("1", 1), ("1000", 1000), ("250", 250)])
def test_an_integer_parameter_within_bounds_is_accepted(raw: str, value: int) -> None:
    assert intake.query_int(QueryParams({"limit": raw}), "limit", 100, intake.PAGE_LIMIT) == value


@pytest.mark.parametrize("raw", ["0", "1001", "-1", "abc", "", "1.5", "1e3", "9" * 30])
def test_an_integer_parameter_out_of_bounds_or_not_a_number_is_a_400(raw: str) -> None:
    error = problem(intake.query_int, QueryParams({"limit": raw}), "limit", 100, intake.PAGE_LIMIT)

    assert (error.status, error.slug) == (400, "invalid-query")


def test_a_choice_parameter_is_one_of_its_choices_or_absent() -> None:
    assert intake.query_choice(QueryParams("status=dead"), "status", tuple(EventStatus)) == "dead"
    assert intake.query_choice(QueryParams(""), "status", tuple(EventStatus)) is None


@pytest.mark.parametrize("raw", ["bogus", "", "DEAD", "dead "])
def test_a_choice_parameter_outside_its_choices_is_a_400(raw: str) -> None:
    error = problem(intake.query_choice, QueryParams({"status": raw}), "status", tuple(EventStatus))

    assert error.status == 400


def test_known_parameters_each_given_once_are_accepted() -> None:
    intake.only_params(QueryParams("status=dead&limit=5"), ("status", "after_seq", "limit"))


@pytest.mark.parametrize("query", ["colour=red", "limit=5&limit=6", "Limit=5"])
def test_unknown_or_repeated_parameters_are_a_400(query: str) -> None:
    error = problem(intake.only_params, QueryParams(query), ("status", "after_seq", "limit"))

    assert error.status == 400
