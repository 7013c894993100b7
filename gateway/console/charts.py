"""Throughput and failures per minute, drawn as bars from the journal: the geometry is made
here and drawn by the `_chart.html` template as inline SVG (no script, nothing to load)."""

from __future__ import annotations

import dataclasses
import datetime

MINUTES = 60
WIDTH, HEIGHT = 600, 120


@dataclasses.dataclass(frozen=True, slots=True)
class Bar:
    x: float
    width: float
    ok_y: float
    ok_height: float
    dead_y: float
    dead_height: float
    label: str


@dataclasses.dataclass(frozen=True, slots=True)
class Chart:
    bars: list[Bar]
    peak: int
    succeeded: int
    dead: int
    width: int = WIDTH
    height: int = HEIGHT


def chart(
    counts: dict[datetime.datetime, tuple[int, int]], now: datetime.datetime | None = None
) -> Chart:
    """Bars for the last MINUTES minutes (oldest left), dead stacked on succeeded."""
    now = (now or datetime.datetime.now(datetime.UTC)).replace(second=0, microsecond=0)
    minutes = [now - datetime.timedelta(minutes=n) for n in range(MINUTES - 1, -1, -1)]
    totals = [counts.get(m, (0, 0)) for m in minutes]
    peak = max((ok + dead for ok, dead in totals), default=0)
    step = WIDTH / MINUTES
    bars = []
    for n, (minute, (ok, dead)) in enumerate(zip(minutes, totals, strict=True)):
        ok_h = HEIGHT * ok / peak if peak else 0.0
        dead_h = HEIGHT * dead / peak if peak else 0.0
        bars.append(
            Bar(
                x=round(n * step, 2),
                width=round(step - 1, 2),
                ok_y=round(HEIGHT - ok_h, 2),
                ok_height=round(ok_h, 2),
                dead_y=round(HEIGHT - ok_h - dead_h, 2),
                dead_height=round(dead_h, 2),
                label=f"{minute:%H:%M} UTC: {ok} succeeded, {dead} dead",
            )
        )
    return Chart(bars, peak, sum(t[0] for t in totals), sum(t[1] for t in totals))
