"""Metrics in Kamailio's ``xhttp_prom`` module, served on the metrics listener.

kamailio.cfg declares the metrics (``prom_counter``, ``prom_gauge``,
``prom_histogram``, the same as :data:`sipshield.core.metrics.METRICS`) and a
TCP listener named :data:`METRICS_SOCKET`, only when ``METRICS`` is defined.
Each update is one KSR call into shared memory that every process of the
node sees; Kamailio renders the text format on ``GET /metrics``.

HTTP reaches Kamailio on any TCP listener (xhttp handles what is not SIP), so
a scrape is answered only on the metrics listener, and SIP arriving there is
never routed (:func:`on_metrics_listener`).
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("sipshield.edge.prom_metrics")

# The name kamailio.cfg gives the metrics listener (listen=... name "...").
METRICS_SOCKET = "sipshield_metrics"
METRICS_PATH = "/metrics"


def prom_loaded(ksr: Any) -> bool:
    """Whether the configuration loads xhttp_prom (it does when METRICS is defined)."""
    return getattr(ksr, "xhttp_prom", None) is not None


def _number(value: float) -> str:
    # xhttp_prom parses gauge and histogram values from strings.
    return repr(float(value))


class XhttpPromBackend:
    """:class:`sipshield.core.metrics.MetricsBackend` on ``KSR.xhttp_prom``."""

    def __init__(self, ksr: Any) -> None:
        prom = ksr.xhttp_prom
        # KEMI has one function per number of labels (0 to 3).
        self._inc = (
            prom.counter_inc_l0,
            prom.counter_inc_l1,
            prom.counter_inc_l2,
            prom.counter_inc_l3,
        )
        self._set = (prom.gauge_set_l0, prom.gauge_set_l1, prom.gauge_set_l2, prom.gauge_set_l3)
        self._observe = (
            prom.histogram_observe_l0,
            prom.histogram_observe_l1,
            prom.histogram_observe_l2,
            prom.histogram_observe_l3,
        )

    def counter_inc(self, name: str, amount: int, *labels: str) -> None:
        self._inc[len(labels)](name, amount, *labels)

    def gauge_set(self, name: str, value: float, *labels: str) -> None:
        self._set[len(labels)](name, _number(value), *labels)

    def histogram_observe(self, name: str, value: float, *labels: str) -> None:
        self._observe[len(labels)](name, _number(value), *labels)


def on_metrics_listener(ksr: Any) -> bool:
    """Whether the current message arrived on the metrics listener."""
    return ksr.pv.get("$Rn") == METRICS_SOCKET


def serve_scrape(ksr: Any) -> None:
    """Answer the HTTP request being handled (xhttp's event): metrics, or 404.

    Only a GET of /metrics on the metrics listener is answered with the
    metrics; HTTP sent to a SIP listener learns nothing.
    """
    if on_metrics_listener(ksr) and ksr.xhttp_prom.check_uri() > 0:
        ksr.xhttp_prom.dispatch()
        return
    ksr.xhttp.xhttp_reply(404, "Not Found", "text/plain", "")
