"""A stored history event in the shape of the drill report's events (contracts §4).

``warnd drill simulate`` and ``warnd drill replay`` both write their run's events this way.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, tzinfo
from typing import Any, Protocol


class EventRecord(Protocol):
    """What the builder reads from a stored event (``warnd.store.tables.Event`` has it)."""

    @property
    def at(self) -> datetime | None: ...
    @property
    def type(self) -> str: ...
    @property
    def warning_key(self) -> str | None: ...
    @property
    def contact_id(self) -> str | None: ...
    @property
    def division(self) -> str | None: ...
    @property
    def level(self) -> str | None: ...
    @property
    def data(self) -> Mapping[str, Any] | None: ...


def event_json(e: EventRecord, tz: tzinfo) -> dict[str, Any]:
    """``{"at", "type", "warning", "contact_id", "division", "level", ...its data}``."""
    item: dict[str, Any] = {
        "at": e.at.astimezone(tz).isoformat() if e.at is not None else None,
        "type": e.type,
        "warning": e.warning_key,
        "contact_id": e.contact_id,
        "division": e.division,
        "level": e.level,
    }
    item.update(e.data or {})
    return item
