"""Where a call goes, as a class of cost and risk, from the dialled number.

The number is read the way the caller's home network reads it: national
forms ("09098790100") and the international prefix of the home region
("00...") are resolved against ``home_region``.  The number type comes from
``phonenumbers`` (Google's libphonenumber metadata, kept up to date by its
maintainers), not from hand-kept tables; an operator's list of high-risk
prefixes (:mod:`.high_risk`) comes on top.

A call has one class, the riskiest that applies: a premium-rate number
abroad is ``premium``, not ``international``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, get_args

import phonenumbers
from phonenumbers import PhoneNumberType

DestinationClass = Literal[
    "high_risk",
    "premium",
    "shared_cost",
    "international",
    "national",
    "toll_free",
    "unknown",
    "internet",
]
CLASSES: tuple[DestinationClass, ...] = get_args(DestinationClass)
BY_TYPE: dict[int, DestinationClass] = {
    PhoneNumberType.PREMIUM_RATE: "premium",
    PhoneNumberType.SHARED_COST: "shared_cost",
    PhoneNumberType.TOLL_FREE: "toll_free",
}


@dataclass(frozen=True)
class Destination:
    klass: DestinationClass
    # The number in E.164 ("+449098790100"), or as dialled when it does not
    # parse, or the address (user@host) of an internet call.
    number: str

    def prefix(self, digits: int) -> str:
        """The first ``digits`` digits of the number, "+" kept: the range it belongs to."""
        plus = 1 if self.number.startswith("+") else 0
        return self.number[: plus + digits]


# Parsing and typing a number costs tens of microseconds; the same numbers are
# called again and again.  Bounded, as the numbers are the caller's to choose.
@lru_cache(maxsize=4096)
def classify(dialled: str, home_region: str, high_risk: tuple[str, ...] = ()) -> Destination:
    """The class of a call to ``dialled`` (a Request-URI user of digits, maybe after "+")."""
    try:
        parsed = phonenumbers.parse(dialled, home_region)
    except phonenumbers.NumberParseException:
        return Destination("unknown", dialled)
    e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    if any(e164.startswith(prefix) for prefix in high_risk):
        return Destination("high_risk", e164)
    if not phonenumbers.is_valid_number(parsed):
        return Destination("unknown", e164)
    by_type = BY_TYPE.get(phonenumbers.number_type(parsed))
    if by_type in ("premium", "shared_cost"):
        return Destination(by_type, e164)
    home_code = phonenumbers.country_code_for_region(home_region)
    if parsed.country_code != home_code:
        return Destination("international", e164)
    return Destination(by_type or "national", e164)
