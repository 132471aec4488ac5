"""The policy's ``toll_fraud`` entry, validated by pydantic (docs/toll-fraud.md explains each)."""

from __future__ import annotations

from datetime import time
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from sipshield.checks.toll_fraud.business_hours import DAYS
from sipshield.checks.toll_fraud.destinations import DestinationClass
from sipshield.checks.toll_fraud.high_risk import PrefixFileError, read_prefix_file
from sipshield.core.module import ModuleConfig


def _zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (an IANA name like Europe/London)") from None
    return name


def _e164_prefix(value: str) -> str:
    if not (value.startswith("+") and value[1:].isdigit() and len(value) <= 16):
        raise ValueError(f"{value!r} is not an E.164 prefix like +44909")
    return value


TimeZoneName = Annotated[str, AfterValidator(_zone)]
E164Prefix = Annotated[str, AfterValidator(_e164_prefix)]
Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
Limit = Annotated[int, Field(ge=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClassLimits(_Strict):
    """Limits on one destination class, per account; a limit left out is no limit."""

    concurrent: Limit | None = None
    per_minute: Limit | None = None
    destinations_per_hour: Limit | None = None
    after_hours: Literal["allow", "refuse"] = "allow"


DEFAULT_LIMITS: dict[DestinationClass, ClassLimits] = {
    "high_risk": ClassLimits(
        concurrent=1, per_minute=2, destinations_per_hour=3, after_hours="refuse"
    ),
    "premium": ClassLimits(
        concurrent=2, per_minute=5, destinations_per_hour=10, after_hours="refuse"
    ),
    "shared_cost": ClassLimits(concurrent=5, per_minute=10, destinations_per_hour=30),
    "international": ClassLimits(concurrent=5, per_minute=10, destinations_per_hour=30),
    "unknown": ClassLimits(concurrent=5, per_minute=10, destinations_per_hour=20),
    "national": ClassLimits(concurrent=20, per_minute=60),
    "internet": ClassLimits(concurrent=20, per_minute=60),
    "toll_free": ClassLimits(),
}


class BusinessHours(_Strict):
    days: frozenset[Day] = frozenset(DAYS[:5])
    start: time = time(8, 0)
    end: time = time(18, 0)


class AccountSettings(_Strict):
    """One account's own settings: its time zone, limits and spend ceiling."""

    time_zone: TimeZoneName | None = None
    # Per class, replacing the module's limits for that class.
    limits: dict[DestinationClass, ClassLimits] = Field(default_factory=dict)
    spend_ceiling_per_hour: float | None = Field(default=None, ge=0)


class Velocity(_Strict):
    """Test calls before a fraud run: short calls to many numbers of one range."""

    enabled: bool = True
    # Where test calls go before a run; not national numbers, which call
    # centres and diallers call briefly by the hundred.
    classes: frozenset[DestinationClass] = frozenset(
        {"high_risk", "premium", "shared_cost", "international", "unknown"}
    )
    # The range is the number's first digits (after "+").
    prefix_digits: int = Field(default=7, ge=1, le=15)
    short_call_s: int = Field(default=15, ge=1)
    distinct_numbers: int = Field(default=5, ge=2)
    window_s: int = Field(default=3600, ge=60)
    block_ttl_s: int = Field(default=86400, ge=60)
    # True blocks the range for every account, not only the one that probed it.
    everyone: bool = False


class Spend(_Strict):
    # Price per minute by E.164 prefix (the longest wins); numbers in no prefix cost 0.
    rate_deck: dict[E164Prefix, Annotated[float, Field(ge=0)]] = Field(default_factory=dict)
    # Per account per clock hour, calls in progress included; None: no ceiling.
    ceiling_per_hour: float | None = Field(default=None, ge=0)
    # Also end the account's calls in progress once the ceiling is passed
    # (Kamailio's dialog module sends the BYEs), checked once a second.
    end_calls: bool = False


class Refusal(_Strict):
    code: Literal[403, 503] = 403
    phrase: str = Field(default="Call Barred", pattern=r"^[\x20-\x7e]{1,80}$")


class TollFraudConfig(ModuleConfig):
    name: Literal["toll_fraud"] = "toll_fraud"
    # Who pays: the PBX's P-Asserted-Identity (user@host), the digest user
    # the request carries, or the From URI (user@host).
    account: Literal["asserted_identity", "auth_user", "from"] = "asserted_identity"
    # Where national numbers ("0909...") and the home country are.
    home_region: str = "GB"
    time_zone: TimeZoneName = "UTC"
    business_hours: BusinessHours = BusinessHours()
    # Per destination class; a class given here replaces its default limits.
    limits: dict[DestinationClass, ClassLimits] = Field(default_factory=dict)
    accounts: dict[str, AccountSettings] = Field(default_factory=dict)
    # One E.164 prefix per line; re-read when it changes.
    high_risk_file: Path | None = None
    velocity: Velocity = Velocity()
    spend: Spend = Spend()
    # What passing a limit does: alert (an event, the call goes on), refuse
    # (the reply below), block (refuse, and ban the account for block_ttl_s).
    action: Literal["alert", "refuse", "block"] = "refuse"
    refuse: Refusal = Refusal()
    block_ttl_s: int = Field(default=3600, ge=60)
    # A call whose end was never seen stops counting after this.
    max_call_s: int = Field(default=4 * 3600, ge=60)

    @field_validator("home_region")
    @classmethod
    def _region(cls, value: str) -> str:
        if phonenumbers.country_code_for_region(value.upper()) == 0:
            raise ValueError(f"unknown region {value!r} (an ISO 3166 code like GB)")
        return value.upper()

    @field_validator("high_risk_file")
    @classmethod
    def _readable(cls, value: Path | None) -> Path | None:
        if value is not None:
            try:
                read_prefix_file(value)
            except PrefixFileError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("accounts")
    @classmethod
    def _lower_case(cls, value: dict[str, AccountSettings]) -> dict[str, AccountSettings]:
        return {account.lower(): settings for account, settings in value.items()}

    def limits_of(self, account: str) -> dict[DestinationClass, ClassLimits]:
        own = self.accounts.get(account)
        return DEFAULT_LIMITS | self.limits | (own.limits if own else {})

    def zone_of(self, account: str) -> ZoneInfo:
        own = self.accounts.get(account)
        return ZoneInfo(own.time_zone if own and own.time_zone else self.time_zone)

    def ceiling_of(self, account: str) -> float | None:
        own = self.accounts.get(account)
        if own is not None and own.spend_ceiling_per_hour is not None:
            return own.spend_ceiling_per_hour
        return self.spend.ceiling_per_hour
