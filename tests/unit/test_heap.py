"""What start-up made is frozen out of the collector's full scans."""

from __future__ import annotations

import gc

from actors.heap import freeze_startup_objects


def test_startup_objects_are_frozen_and_later_ones_are_not() -> None:
    try:
        freeze_startup_objects()
        frozen = gc.get_freeze_count()
        later = [object() for _ in range(10)]  # noqa: F841 - allocated after the freeze

        assert frozen > 1000  # modules, classes and functions loaded so far
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()
