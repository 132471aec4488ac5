"""Reading the SBC's /metrics in tests, with prometheus_client's own parser."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from tests.integration.lab_fixture import RunningLab

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(lab: RunningLab) -> Samples:
    with urllib.request.urlopen(lab.info["metrics"], timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(before: Samples, after: Samples) -> dict[str, float]:
    """Every series whose value changed, as ``name{label=value,...}`` -> change."""
    changes = {}
    for key in before.keys() | after.keys():
        change = after.get(key, 0.0) - before.get(key, 0.0)
        if change:
            name, labels = key
            changes[name + "{" + ",".join(f"{k}={v}" for k, v in sorted(labels)) + "}"] = change
    return changes


def wait_for(lab: RunningLab, done: Callable[[Samples], bool], timeout: float = 10.0) -> Samples:
    """The first scrape for which ``done`` holds (or the last one, after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(lab)
        if done(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.1)


def grown(before: Samples, by: float, name: str, **labels: str) -> Callable[[Samples], bool]:
    return lambda now: value(now, name, **labels) - value(before, name, **labels) >= by


def counters_only(changes: dict[str, float]) -> dict[str, float]:
    """The counters among the changes (gauges and histogram sums move on their own)."""
    return {
        series: change
        for series, change in changes.items()
        if series.split("{")[0].endswith(("_total", "_count"))
        and not series.startswith("sipshield_pipeline_seconds")
        and not series.startswith("sipshield_rtpengine_rtt_seconds")
    }
