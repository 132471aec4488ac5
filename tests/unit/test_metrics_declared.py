"""kamailio.cfg declares to xhttp_prom exactly the metrics sipshield.core.metrics names.

A metric updated from Python but not declared in the configuration is
refused by xhttp_prom at run time (logged, never shown); one declared with
other labels or buckets shows different series than docs/metrics.md says.
"""

import re

import pytest

from sipshield.core.metrics import METHOD_CLASSES, METRICS, method_class, scope_kind
from tests.conftest import REPO

DECLARATION = re.compile(r'^modparam\("xhttp_prom", "prom_(\w+)", "([^"]*)"\)', re.MULTILINE)


def declared() -> dict[str, tuple[str, tuple[str, ...], tuple[float, ...]]]:
    cfg = (REPO / "kamailio-cfg" / "kamailio.cfg").read_text()
    found = {}
    for kind, spec in DECLARATION.findall(cfg):
        fields = dict(part.strip().split("=", 1) for part in spec.split(";") if part.strip())
        labels = tuple(fields["label"].split(":")) if "label" in fields else ()
        buckets = (
            tuple(float(b) for b in fields["buckets"].split(":")) if "buckets" in fields else ()
        )
        found[fields["name"]] = (kind, labels, buckets)
    return found


def test_the_configuration_declares_every_metric_as_specified():
    assert declared() == {spec.name: (spec.kind, spec.labels, spec.buckets) for spec in METRICS}


def test_no_metric_has_more_labels_than_xhttp_prom_takes():
    assert all(len(spec.labels) <= 3 for spec in METRICS)


@pytest.mark.parametrize(
    ("method", "expected"),
    [("INVITE", "invite"), ("REGISTER", "register"), ("invite", "other"), ("FOO", "other")],
)
def test_method_classes_stay_bounded(method, expected):
    assert method_class(method) == expected
    assert len({method_class(m) for m in METHOD_CLASSES}) == len(METHOD_CLASSES)


def test_a_ban_scope_kind_carries_no_address():
    assert scope_kind("ip:192.0.2.1") == "ip"
    assert scope_kind("user:192.0.2.1:alice") == "user"
    assert scope_kind("account:alice") == "account"
