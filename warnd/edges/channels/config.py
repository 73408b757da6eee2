"""A ``[channels.<name>]`` table as a value (contracts §7): what every channel type is built from.

A leaf module (it imports no other part of warnd but durations): the channel types, the rate
limiter and ``warnd.config.policy`` all read it, and ``warnd.edges.channels.load_channels`` makes
the values while the config file is loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType
from typing import Any

from warnd.core.duration import format_duration, parse_duration

KINDS: tuple[str, ...] = ("sms", "voice", "email", "im")
DEFAULT_KINDS: tuple[str, ...] = ("voice", "sms")
_RATE_UNITS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600}
_RATE_UNITS |= {"hour": 3600, "d": 86400, "day": 86400}


@dataclass(frozen=True, slots=True)
class RateLimit:
    """``count`` messages per ``per``: carriers throttle bulk sending."""

    count: int
    per: timedelta

    @property
    def per_second(self) -> float:
        return self.count / self.per.total_seconds()

    def __str__(self) -> str:
        return f"{self.count}/{format_duration(self.per)}"


@dataclass(frozen=True, slots=True)
class ChannelConfig:
    """One outbound channel; ``options`` are the type-specific keys (checked by the type)."""

    name: str
    type: str
    kinds: tuple[str, ...] = DEFAULT_KINDS
    rate: RateLimit | None = None
    concurrency: int = 10
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    source: str | None = field(default=None, compare=False)

    def key(self, option: str) -> str:
        """The dotted key of one of this channel's options, for error messages."""
        return f"channels.{self.name}.{option}"


def parse_rate(text: object) -> RateLimit:
    """``50/s``, ``600/m``, ``10/min``, ``100/10s`` → RateLimit; ValueError otherwise."""
    if not isinstance(text, str) or text.count("/") != 1:
        raise ValueError("not a rate like 50/s, 600/m or 10/min")
    count_text, per_text = (part.strip().lower() for part in text.split("/"))
    if not count_text.isdigit() or int(count_text) < 1:
        raise ValueError("the count before / must be a whole number ≥ 1")
    if per_text in _RATE_UNITS:
        per = timedelta(seconds=_RATE_UNITS[per_text])
    else:
        per = parse_duration(per_text)
    if per <= timedelta(0):
        raise ValueError("the period after / must be longer than 0s")
    return RateLimit(int(count_text), per)
