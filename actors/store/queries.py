"""Loads the named SQL queries of `queries.sql` (the `-- name: x` convention)."""

from __future__ import annotations

import re
from importlib import resources

_NAME = re.compile(r"^-- name: ([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


def parse(text: str) -> dict[str, str]:
    """Map each `-- name:` header to the SQL below it, comments and blank edges removed."""
    parts = _NAME.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice")
        lines = [line for line in body.splitlines() if not line.lstrip().startswith("--")]
        queries[name] = "\n".join(lines).strip().rstrip(";")
    return queries


def load() -> dict[str, str]:
    """The queries shipped with this package."""
    return parse(resources.files(__package__).joinpath("queries.sql").read_text("utf-8"))


QUERIES = load()
