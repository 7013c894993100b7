"""JSON pointers (RFC 6901): where a webhook body holds its event type."""

from __future__ import annotations

import re
from typing import Any

_POINTER = re.compile(r"(/([^~/]|~[01])*)*")


def valid_pointer(pointer: Any) -> bool:
    return isinstance(pointer, str) and len(pointer) <= 200 and bool(_POINTER.fullmatch(pointer))


def has_unicode_digits(pointer: str) -> bool:
    """True when the pointer holds digits other than ASCII 0-9 (`/items/²`): they look like
    array indexes and are not, so a pointer holding them is refused when it is set."""
    return any(c.isdigit() and not c.isascii() for c in pointer)


def resolve(document: Any, pointer: str) -> Any:
    """The value at an RFC 6901 JSON pointer; raises LookupError when there is none."""
    value = document
    for token in pointer.split("/")[1:]:
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(value, dict) and token in value:
            value = value[token]
        elif isinstance(value, list) and _index(token):
            value = value[int(token)]
        else:
            raise LookupError(token)
    return value


def _index(token: str) -> bool:
    """An RFC 6901 array index: ASCII digits, no leading zero (`²` and `٣` are not)."""
    return token.isascii() and token.isdigit() and (token == "0" or token[0] != "0")
