"""The batch intake's body, `{"events": [{"type", "payload", "idempotency_key"?}, ...]}`: checked
item by item with pure functions, every bad item named by its index; raises Problem 422."""

from __future__ import annotations

import dataclasses
from collections.abc import Container
from typing import Any

from actors.store import BatchRequest, dump_json
from gateway import intake
from gateway.problems import Problem

_ITEM_FIELDS = ("type", "payload", "idempotency_key")


@dataclasses.dataclass(frozen=True, slots=True)
class BatchItem:
    """One checked item: its type, its payload as the JSON text stored, its key and the
    fingerprint its key is bound to."""

    type: str
    payload: str
    key: str | None
    fingerprint: bytes

    @property
    def size(self) -> int:
        """Bytes of the payload as stored (what a storage quota counts)."""
        return len(self.payload.encode("utf-8"))

    def request(self) -> BatchRequest:
        return BatchRequest(self.type, self.payload, self.key, self.fingerprint)


def batch_items(
    value: Any, known_types: Container[str], *, max_items: int, max_item_bytes: int
) -> list[BatchItem]:
    """The items of a POST /v1/events/batch body, in the order given. Raises Problem 422 when
    the body is not `{"events": [...]}` with 1 to `max_items` items, naming every bad item
    (`errors: [{"index", "detail"}]`), or when two items share a key with different bodies."""
    if not isinstance(value, dict):
        raise Problem(
            422, "invalid-batch", 'the body must be a JSON object {"events": [{...}, ...]}'
        )
    unknown = sorted(set(value) - {"events"})
    if unknown:
        raise Problem(
            422,
            "invalid-batch",
            f"unknown field(s): {', '.join(unknown)}; only 'events' is accepted",
            fields=unknown,
        )
    events = value.get("events")
    if not isinstance(events, list):
        raise Problem(422, "invalid-batch", "'events' must be a list of events")
    if not events:
        raise Problem(422, "invalid-batch", f"'events' is empty; send 1 to {max_items} events")
    if len(events) > max_items:
        raise Problem(
            422,
            "batch-too-large",
            f"'events' has {len(events)} items, more than the {max_items} a batch may have "
            "(SERIATIM_MAX_BATCH)",
            max_items=max_items,
        )
    items: list[BatchItem] = []
    errors: list[dict[str, Any]] = []
    for index, raw in enumerate(events):
        try:
            items.append(_item(raw, known_types, max_item_bytes))
        except Problem as problem:
            errors.append({"index": index, "detail": problem.detail})
    if errors:
        raise Problem(
            422,
            "invalid-batch",
            f"{len(errors)} of the {len(events)} events are invalid; none was accepted",
            errors=errors,
        )
    _keys_agree(items)
    return items


def _item(raw: Any, known_types: Container[str], max_item_bytes: int) -> BatchItem:
    if not isinstance(raw, dict):
        raise Problem(
            422,
            "invalid-event",
            'an event must be a JSON object {"type": "...", "payload": {...}, '
            '"idempotency_key": "..."}',
        )
    unknown = sorted(set(raw) - set(_ITEM_FIELDS))
    if unknown:
        raise Problem(
            422,
            "invalid-event",
            f"unknown field(s): {', '.join(unknown)}; only 'type', 'payload' and "
            "'idempotency_key' are accepted",
        )
    type_, payload = intake.event_body(
        {name: raw[name] for name in ("type", "payload") if name in raw}, known_types
    )
    key = raw.get("idempotency_key")
    if key is not None and not (isinstance(key, str) and intake.KEY.fullmatch(key)):
        raise Problem(
            422, "invalid-event", "'idempotency_key' must be 1-255 printable ASCII characters"
        )
    try:
        text = dump_json(payload)
    except ValueError as error:
        raise Problem(422, "invalid-event", f"the payload cannot be stored: {error}") from None
    size = len(text.encode("utf-8"))
    if size > max_item_bytes:
        raise Problem(
            422,
            "invalid-event",
            f"the payload is {size} bytes, more than the {max_item_bytes} an event may have "
            "(SERIATIM_MAX_BODY_BYTES)",
        )
    return BatchItem(type_, text, key, intake.request_hash(type_, payload))


def _keys_agree(items: list[BatchItem]) -> None:
    """422 naming every item whose key an earlier item of the batch used with another body
    (the same key with the same body is one event, answered twice)."""
    first: dict[str, tuple[int, bytes]] = {}
    errors: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        if item.key is None:
            continue
        earlier = first.setdefault(item.key, (index, item.fingerprint))
        if earlier[1] != item.fingerprint:
            errors.append(
                {
                    "index": index,
                    "detail": f"idempotency_key {item.key!r} is used by item {earlier[0]} "
                    "with a different body",
                }
            )
    if errors:
        raise Problem(
            422,
            "idempotency-key-reused",
            "items of this batch share an idempotency_key with different bodies; none was accepted",
            errors=errors,
        )
