"""One /metrics for every process of `seriatim up`: each child's metrics, scraped when the
endpoint is scraped, with a `process` label (gateway, worker-1, …) on every sample."""

from __future__ import annotations

import asyncio
import logging
import urllib.request
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger(__name__)

SCRAPE_TIMEOUT = 3.0


def merge(texts: dict[str, str]) -> bytes:
    """The Prometheus text of several processes as one, each sample labelled `process`."""
    families: dict[str, Metric] = {}
    for process, text in texts.items():
        for family in text_string_to_metric_families(text):
            merged = families.setdefault(
                family.name, Metric(family.name, family.documentation, family.type, family.unit)
            )
            for sample in family.samples:
                labels = {**sample.labels, "process": process}
                merged.samples.append(sample._replace(labels=labels))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(families.values()))
    return generate_latest(registry)


class _Fixed:
    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT) as response:
        return str(response.read().decode("utf-8"))


async def scrape(targets: dict[str, str]) -> bytes:
    """Scrape every target (process name -> URL) now; an unreachable one is left out."""
    names = list(targets)
    results = await asyncio.gather(
        *(asyncio.to_thread(_get, targets[name]) for name in names), return_exceptions=True
    )
    texts = {}
    for name, result in zip(names, results, strict=True):
        if isinstance(result, BaseException):
            log.debug("metrics of %s unavailable: %s", name, result)
        else:
            texts[name] = result
    return merge(texts)
