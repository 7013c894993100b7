"""Merging the metrics of several processes into one exposition, labelled by process."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from seriatim.cli import parser
from seriatim.federation import merge

GATEWAY = """# HELP seriatim_attempts_total Handler attempts, by result.
# TYPE seriatim_attempts_total counter
seriatim_attempts_total{result="ok"} 3.0
# HELP seriatim_mailboxes_active Mailboxes active in this process.
# TYPE seriatim_mailboxes_active gauge
seriatim_mailboxes_active 0.0
"""
WORKER = """# HELP seriatim_attempts_total Handler attempts, by result.
# TYPE seriatim_attempts_total counter
seriatim_attempts_total{result="ok"} 5.0
seriatim_attempts_total{result="failed"} 1.0
"""


def test_each_sample_is_labelled_with_its_process_under_one_family() -> None:
    text = merge({"gateway": GATEWAY, "worker-1": WORKER}).decode()

    assert text.count("# TYPE seriatim_attempts_total counter") == 1
    families = {family.name: family for family in text_string_to_metric_families(text)}
    attempts = {
        (s.labels["process"], s.labels["result"]): s.value
        for s in families["seriatim_attempts"].samples
    }
    assert attempts == {
        ("gateway", "ok"): 3.0,
        ("worker-1", "ok"): 5.0,
        ("worker-1", "failed"): 1.0,
    }
    [active] = families["seriatim_mailboxes_active"].samples
    assert active.labels == {"process": "gateway"}


def test_no_process_gives_an_empty_exposition() -> None:
    assert merge({}) == b""


def test_seriatim_up_serves_all_metrics_on_9464_unless_told_otherwise() -> None:
    assert parser().parse_args(["up"]).metrics_port == 9464
    assert parser().parse_args(["up", "--metrics-port", "0"]).metrics_port == 0
