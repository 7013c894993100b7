"""Handlers for the console's browser tests, loaded through SERIATIM_HANDLERS."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from actors import Event, handler


@handler("console.poison")
def poison(event: Event) -> dict[str, Any]:
    """Fails while the file named by `payload["switch"]` exists (the test removes it to
    cure the event before redriving it), with an error holding HTML. A plain function: it
    runs in a thread, so its file check does not block the event loop."""
    if Path(str(event.payload["switch"])).exists():
        raise RuntimeError("poisoned <b>payload</b> <script>window.__pwned = 1</script>")
    return {"cured": True}
