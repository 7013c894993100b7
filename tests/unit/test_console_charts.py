"""The console's per-minute bars: one per minute of the last hour, oldest left, dead stacked
on succeeded, scaled to the busiest minute."""

from __future__ import annotations

import datetime

from gateway.console.charts import HEIGHT, MINUTES, chart

NOW = datetime.datetime(2026, 1, 31, 12, 30, 42, tzinfo=datetime.UTC)
MINUTE = NOW.replace(second=0)


def test_bars_are_scaled_to_the_busiest_minute_and_stacked() -> None:
    drawn = chart({MINUTE: (6, 2), MINUTE - datetime.timedelta(minutes=10): (4, 0)}, now=NOW)

    assert len(drawn.bars) == MINUTES
    assert drawn.peak == 8
    assert (drawn.succeeded, drawn.dead) == (10, 2)
    last, earlier = drawn.bars[-1], drawn.bars[-11]
    assert last.ok_height == HEIGHT * 6 / 8
    assert last.dead_height == HEIGHT * 2 / 8
    assert last.dead_y + last.dead_height == last.ok_y  # dead sits on top of succeeded
    assert earlier.ok_height == HEIGHT / 2
    assert earlier.dead_height == 0
    assert last.label == "12:30 UTC: 6 succeeded, 2 dead"
    assert drawn.bars[0].x < drawn.bars[-1].x


def test_an_idle_hour_draws_no_bar_and_minutes_outside_it_are_left_out() -> None:
    drawn = chart({MINUTE - datetime.timedelta(minutes=MINUTES): (5, 5)}, now=NOW)

    assert drawn.peak == 0
    assert all(b.ok_height == b.dead_height == 0 for b in drawn.bars)
