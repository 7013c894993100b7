"""Standard Webhooks signatures: signing secrets, and `v1,<base64 HMAC-SHA256 of
id.timestamp.body>` signatures checked in constant time against several secrets at once."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence

MAX_SIGNATURES = 8  # signatures in one header that are tried (a rotation needs two)
SECRET_PREFIX = "whsec_"


def new_secret() -> tuple[str, bytes]:
    """A new signing secret: its `whsec_` text (shown once) and its key bytes (stored)."""
    key = secrets.token_bytes(32)
    return SECRET_PREFIX + base64.b64encode(key).decode("ascii"), key


def sign(key: bytes, webhook_id: str, timestamp: str, body: bytes) -> str:
    """The `v1,<signature>` of a delivery, as a sender computes it."""
    content = f"{webhook_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()


def verify(
    keys: Sequence[bytes], webhook_id: str, timestamp: str, signatures: str, body: bytes
) -> bool:
    """True when any `v1` signature in the header matches any secret (constant-time compare)."""
    offered = []
    for entry in signatures.split()[:MAX_SIGNATURES]:
        version, _, encoded = entry.partition(",")
        if version != "v1":
            continue
        try:
            offered.append(base64.b64decode(encoded, validate=True))
        except ValueError:  # binascii.Error, or text that is not ASCII
            continue
    content = f"{webhook_id}.{timestamp}.".encode() + body
    matched = False
    for key in keys:
        expected = hmac.new(key, content, hashlib.sha256).digest()
        for signature in offered:
            matched |= hmac.compare_digest(expected, signature)
    return matched
