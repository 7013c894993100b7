"""Property-based tests of every parser on the pre-authentication path, on its own (no
services): whatever the input, each returns or raises a 4xx Problem, and nothing else escapes
(issue 18). The same class is checked over raw HTTP in `test_preauth_wire_properties.py`."""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Callable
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st
from joserfc.jwk import ECKey

from actors.settings import Settings
from gateway import intake
from gateway.auth import bearer_token, client_credentials, token_form
from gateway.hooks import delivery_headers
from gateway.pointers import has_unicode_digits, resolve, valid_pointer
from gateway.problems import Problem
from gateway.signatures import verify
from gateway.tokens import Principal, TokenService

PROPERTY = settings(max_examples=500, deadline=None, database=None)

#: What a header value is once Starlette has decoded it: latin-1, so any of 256 characters.
HEADER = st.text(st.characters(min_codepoint=0, max_codepoint=255), max_size=200)
DIGITS = st.characters(categories=["Nd", "No"])
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=20,
)


def refused_below_500(parse: Callable[[], Any]) -> Any:
    """Run `parse`; a Problem it raises must be a 4xx. Any other exception fails the test."""
    try:
        return parse()
    except Problem as problem:
        refused = problem
    assert 400 <= refused.status < 500, refused.detail
    return refused


@PROPERTY
@given(header=HEADER | st.text("0123456789", min_size=4000, max_size=6000) | st.text(DIGITS))
@example(header="0" * 4998 + "100")
@example(header="²")
def test_content_length_is_a_size_or_a_400(header: str) -> None:
    """On main `read_body` called `int()` on anything `isdigit()` took: 4,301 digits and
    more, and digits such as '²', raised ValueError (a 500)."""
    size = refused_below_500(lambda: intake.content_length(header))

    if isinstance(size, int):
        assert header.isascii()
        assert size == int(header)


@PROPERTY
@given(
    headers=st.dictionaries(
        st.sampled_from(["webhook-id", "webhook-timestamp", "webhook-signature", "x"]), HEADER
    )
)
def test_webhook_headers_parse_or_are_a_4xx(headers: dict[str, str]) -> None:
    """On main this parser raised nothing but Problems either (it is now a function of its
    own, so that the property holds it)."""
    refused_below_500(lambda: delivery_headers(headers))


@PROPERTY
@given(
    signatures=HEADER
    | st.lists(HEADER, max_size=10).map(lambda ps: " ".join("v1," + p for p in ps)),
    webhook_id=HEADER,
    timestamp=HEADER,
    body=st.binary(max_size=100),
)
@example(signatures="v1,\x80", webhook_id="msg_1", timestamp="1700000000", body=b"{}")
def test_a_webhook_signature_header_verifies_or_not_and_never_raises(
    signatures: str, webhook_id: str, timestamp: str, body: bytes
) -> None:
    """On main a non-ASCII signature raised ValueError out of base64 (a 500 before the
    signature was known to be wrong)."""
    assert verify([b"k" * 32], webhook_id, timestamp, signatures, body) in (True, False)


@PROPERTY
@given(body=st.binary(max_size=300) | st.text(max_size=200).map(str.encode))
def test_a_token_form_parses_or_is_a_400(body: bytes) -> None:
    """On main the form parser raised nothing but its own 400s either; it is held here."""
    fields = refused_below_500(lambda: token_form(body))

    if isinstance(fields, dict):
        assert all(isinstance(v, str) for v in fields.values())


@PROPERTY
@given(
    header=st.none() | HEADER | st.builds(lambda v: "Basic " + v, HEADER),
    fields=st.dictionaries(st.sampled_from(["client_id", "client_secret"]), st.text(max_size=40)),
)
@example(header="Basic \xff\xfe", fields={})
def test_client_credentials_are_read_or_none_and_never_raise(
    header: str | None, fields: dict[str, str]
) -> None:
    """On main a Basic header of non-ASCII characters raised ValueError out of base64."""
    found = client_credentials(header, fields)

    assert found is None or isinstance(found[1], str)


TOKENS = TokenService(Settings(), [ECKey.generate_key("P-256", private=True, auto_kid=True)])
NESTED = base64.urlsafe_b64encode(b"[" * 6000).rstrip(b"=").decode() + ".e30.sig"


def b64(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


@PROPERTY
@given(
    header=HEADER
    | st.builds(lambda v: "Bearer " + v, HEADER)
    | st.builds(lambda h, c, s: f"Bearer {b64(h)}.{b64(c)}.{s}", JSON, JSON, st.text(max_size=20))
)
@example(header="Bearer " + NESTED)
def test_a_bearer_header_gives_a_caller_a_401_or_nothing(header: str) -> None:
    """On main a JWT header nested thousands deep raised RecursionError while its `kid` was
    read (a 500 for any request that carried it)."""
    token = bearer_token(header)

    if token is not None and TOKENS.knows_key_of(token):
        caller = refused_below_500(lambda: TOKENS.verify(token))
        assert isinstance(caller, Principal) or caller.status == 401


POINTER = st.lists(st.text(max_size=4) | st.text(DIGITS, min_size=1, max_size=2)).map(
    lambda tokens: "".join("/" + t for t in tokens)
)


@PROPERTY
@given(document=JSON, pointer=POINTER)
@example(document={"items": ["a"]}, pointer="/items/²")
@example(document={"items": ["a"]}, pointer="/items/1²")
def test_a_json_pointer_finds_a_value_or_raises_lookup_error(document: Any, pointer: str) -> None:
    """On main a pointer holding '²' raised ValueError on a list (a 500 on every delivery)."""
    with contextlib.suppress(LookupError):
        resolve(document, pointer)


@PROPERTY
@given(pointer=st.text(max_size=30) | POINTER)
def test_a_pointer_that_may_be_set_has_only_ascii_digits(pointer: str) -> None:
    """On main `/items/²` was a valid pointer, and so could be stored."""
    settable = valid_pointer(pointer) and not has_unicode_digits(pointer)

    assert not settable or all(c.isascii() or not c.isdigit() for c in pointer)


@PROPERTY
@given(content_type=st.none() | HEADER, key=st.none() | HEADER)
def test_content_type_and_idempotency_key_parse_or_are_a_4xx(
    content_type: str | None, key: str | None
) -> None:
    refused_below_500(lambda: intake.require_json(content_type))
    refused_below_500(lambda: intake.idempotency_key(key))
