"""toll_fraud's pure logic: destination classes, business hours, the rate deck, the
high-risk prefix file and the policy's errors."""

from __future__ import annotations

import os
import textwrap
from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

import pytest

from sipshield.checks.toll_fraud.business_hours import within
from sipshield.checks.toll_fraud.destinations import Destination, classify
from sipshield.checks.toll_fraud.high_risk import HighRiskPrefixes, PrefixFileError
from sipshield.checks.toll_fraud.rate_deck import RateDeck
from sipshield.core.policy import PolicyError, parse_policy

WEEKDAYS = frozenset({"mon", "tue", "wed", "thu", "fri"})


@pytest.mark.parametrize(
    "dialled, klass, number",
    [
        # UK premium rate (09), in each way a UK caller may dial it.
        ("+449098790100", "premium", "+449098790100"),
        ("09098790100", "premium", "+449098790100"),
        ("00449098790100", "premium", "+449098790100"),
        ("08001234567", "toll_free", "+448001234567"),
        ("02071234567", "national", "+442071234567"),
        ("+447400123456", "national", "+447400123456"),  # a UK mobile, from the UK
        ("+33142685300", "international", "+33142685300"),
        ("0033142685300", "international", "+33142685300"),
        # A premium-rate number abroad is premium: the riskier class wins.
        ("+19005551234", "premium", "+19005551234"),
        # Not a number anyone can be billed for: parsed but invalid, or not parsed.
        ("+8816000000", "unknown", "+8816000000"),
        ("+999486001", "unknown", "+999486001"),
    ],
)
def test_a_number_gets_the_class_of_its_type_relative_to_the_home_region(dialled, klass, number):
    assert classify(dialled, "GB") == Destination(klass, number)


def test_international_is_relative_to_the_home_region():
    assert classify("+442071234567", "FR").klass == "international"
    assert classify("0142685300", "FR") == Destination("national", "+33142685300")


def test_a_high_risk_prefix_outranks_every_type():
    assert classify("+33142685300", "GB", ("+3314",)).klass == "high_risk"
    assert classify("+8816000000", "GB", ("+8816",)).klass == "high_risk"  # invalid, still risky
    assert classify("+33142685300", "GB", ("+3315",)).klass == "international"


def test_a_destination_range_keeps_the_plus_and_counts_digits():
    assert Destination("premium", "+449098790100").prefix(7) == "+4490987"
    assert Destination("unknown", "0900").prefix(7) == "0900"


def _at(text: str, zone: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).timestamp()


def test_business_hours_are_read_in_the_account_time_zone():
    london, tokyo = ZoneInfo("Europe/London"), ZoneInfo("Asia/Tokyo")
    monday_10_london = _at("2026-11-30T10:00", "Europe/London")
    assert within(monday_10_london, london, WEEKDAYS, time(8), time(18))
    # The same moment is 19:00 in Tokyo: after hours there.
    assert not within(monday_10_london, tokyo, WEEKDAYS, time(8), time(18))
    assert not within(_at("2026-11-30T03:00", "Europe/London"), london, WEEKDAYS, time(8), time(18))
    assert not within(_at("2026-11-29T10:00", "Europe/London"), london, WEEKDAYS, time(8), time(18))
    # The end is excluded.
    assert not within(_at("2026-11-30T18:00", "Europe/London"), london, WEEKDAYS, time(8), time(18))


def test_business_hours_may_span_midnight_from_the_day_they_begin():
    utc = ZoneInfo("UTC")
    friday_night = datetime(2026, 12, 4, 23, 0, tzinfo=UTC).timestamp()
    saturday_small_hours = datetime(2026, 12, 5, 2, 0, tzinfo=UTC).timestamp()
    sunday_small_hours = datetime(2026, 12, 6, 2, 0, tzinfo=UTC).timestamp()
    assert within(friday_night, utc, WEEKDAYS, time(22), time(6))
    assert within(saturday_small_hours, utc, WEEKDAYS, time(22), time(6))  # Friday's shift
    assert not within(sunday_small_hours, utc, WEEKDAYS, time(22), time(6))


def test_the_rate_deck_prices_by_the_longest_prefix():
    deck = RateDeck({"+44": 0.02, "+44909": 1.5, "+882": 3.0})
    assert deck.per_minute("+449098790100") == 1.5
    assert deck.per_minute("+442071234567") == 0.02
    assert deck.per_minute("+33142685300") == 0.0
    assert not RateDeck({})


def test_the_high_risk_file_is_re_read_when_it_changes(tmp_path):
    path = tmp_path / "high-risk.txt"
    path.write_text("# IRSF ranges\n+882\n+8816  # satellite\n")
    now = [0.0]
    prefixes = HighRiskPrefixes(path, clock=lambda: now[0])
    assert prefixes.prefixes == ("+882", "+8816")
    path.write_text("+881\n")
    os.utime(path, ns=(1, 10**18))
    assert prefixes.prefixes == ("+882", "+8816")  # not looked at again yet
    now[0] = 2.0
    assert prefixes.prefixes == ("+881",)
    # A broken file keeps what was loaded before.
    path.write_text("+881\nabc\n")
    os.utime(path, ns=(1, 2 * 10**18))
    now[0] = 4.0
    assert prefixes.prefixes == ("+881",)


def test_a_bad_prefix_file_names_its_line(tmp_path):
    path = tmp_path / "high-risk.txt"
    path.write_text("+882\n\n0044\n")
    with pytest.raises(PrefixFileError, match=r"high-risk.txt:3: '0044' is not an E.164 prefix"):
        HighRiskPrefixes(path)


POLICY = """\
domain: example.net
peers:
  pbx: {address: 10.0.0.5:5060}
modules:
  - name: toll_fraud
"""


def errors_of(entry: str) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        parse_policy(POLICY + textwrap.indent(textwrap.dedent(entry), "    "), "p.yaml")
    return caught.value.errors


def test_policy_errors_name_the_field():
    assert errors_of("time_zone: Europe/Londres\n") == [
        "p.yaml:6: modules[0].time_zone: Value error, unknown time zone 'Europe/Londres' "
        "(an IANA name like Europe/London)"
    ]
    assert errors_of("home_region: XX\n") == [
        "p.yaml:6: modules[0].home_region: Value error, unknown region 'XX' "
        "(an ISO 3166 code like GB)"
    ]
    (error,) = errors_of("limits: {premium: {concurrent: -1}}\n")
    assert error.startswith("p.yaml:6: modules[0].limits.premium.concurrent: Input should be")
    (error,) = errors_of("limits: {expensive: {concurrent: 1}}\n")
    assert error.startswith("p.yaml:6: modules[0].limits.expensive.[key]: Input should be")
    (error,) = errors_of('spend: {rate_deck: {"44909": 1.5}}\n')
    assert "'44909' is not an E.164 prefix like +44909" in error
    (error,) = errors_of("refuse: {code: 404}\n")
    assert error.startswith("p.yaml:6: modules[0].refuse.code: Input should be 403 or 503")
    (error,) = errors_of("high_risk_file: /nonexistent/high-risk.txt\n")
    assert "modules[0].high_risk_file: Value error, /nonexistent/high-risk.txt:" in error


def test_account_settings_override_the_module_limits_class_by_class():
    policy = parse_policy(
        POLICY
        + textwrap.indent(
            "limits: {national: {concurrent: 5}}\n"
            "accounts:\n"
            "  CallCentre@example.net:\n"
            "    {time_zone: Asia/Tokyo, limits: {national: {concurrent: 100}}}\n",
            "    ",
        )
    )
    config = policy.modules[0]
    assert config.limits_of("callcentre@example.net")["national"].concurrent == 100
    assert config.limits_of("alice@example.net")["national"].concurrent == 5
    # Classes the policy does not name keep their defaults.
    assert config.limits_of("alice@example.net")["premium"].after_hours == "refuse"
    assert config.zone_of("callcentre@example.net") == ZoneInfo("Asia/Tokyo")
    assert config.zone_of("alice@example.net") == ZoneInfo("UTC")
