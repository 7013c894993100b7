"""RFC 8414 metadata: endpoints under the issuer when it is a URL, else under the request's
address, and every field authlib's RFC 8414 validators check."""

from __future__ import annotations

from authlib.oauth2.rfc8414 import AuthorizationServerMetadata

from gateway.discovery import metadata


def test_an_https_issuer_is_the_base_of_every_endpoint_and_validates_with_authlib() -> None:
    document = metadata("https://events.example.com/", "http://10.0.0.5:8000")

    assert document["issuer"] == "https://events.example.com/"
    assert document["token_endpoint"] == "https://events.example.com/v1/token"
    assert document["jwks_uri"] == "https://events.example.com/.well-known/jwks.json"
    checked = AuthorizationServerMetadata({**document, "response_types_supported": ["none"]})
    checked.validate()  # raises ValueError naming the first field RFC 8414 refuses


def test_a_plain_issuer_leaves_the_endpoints_under_the_address_of_the_request() -> None:
    document = metadata("seriatim", "http://127.0.0.1:8000")

    assert document["issuer"] == "seriatim"
    assert document["token_endpoint"] == "http://127.0.0.1:8000/v1/token"
