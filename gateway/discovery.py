"""RFC 8414 authorization server metadata: where clients find the token endpoint and the keys.

The endpoints are absolute URLs under the issuer when `SERIATIM_JWT_ISSUER` is an http(s) URL
(the public address behind a proxy), else under the address the request came to. `issuer` is
always `SERIATIM_JWT_ISSUER`, the `iss` of every token, so a resource server can match the two.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.services import services_of

PATH = "/.well-known/oauth-authorization-server"


def metadata(issuer: str, base_url: str) -> dict[str, Any]:
    """The metadata document of a gateway reached at `base_url` (no trailing slash)."""
    base = issuer.rstrip("/") if issuer.startswith(("https://", "http://")) else base_url
    return {
        "issuer": issuer,
        "token_endpoint": f"{base}/v1/token",
        "jwks_uri": f"{base}/.well-known/jwks.json",
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "scopes_supported": ["events:write", "events:read", "admin"],
        # No authorization endpoint: no response type is supported (RFC 8414 requires the key)
        "response_types_supported": [],
    }


async def authorization_server(request: Request) -> Response:
    """GET /.well-known/oauth-authorization-server."""
    base_url = str(request.base_url).rstrip("/")
    document = metadata(services_of(request).settings.jwt_issuer, base_url)
    return JSONResponse(document, headers={"Cache-Control": "public, max-age=300"})
