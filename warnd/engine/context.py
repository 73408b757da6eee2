"""What every engine manager shares: the store, the directory, the rules and the clock."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from warnd.config.policy import Policy
from warnd.core.chain.ladder import Rules
from warnd.core.clock import Clock
from warnd.core.directory import Directory
from warnd.engine.people import DirectoryPeople
from warnd.store import Store


@dataclass
class Context:
    store: Store
    directory: Directory
    policy: Policy
    clock: Clock
    tz: ZoneInfo = field(default_factory=lambda: ZoneInfo("Asia/Shanghai"))
    public_url: str | None = None  # base of confirmation links; None: no links
    #: who claims messages (``outbox.claimed_by``): the store's instance unless told
    instance: str = ""
    #: the engine's group-commit handlers, one per kind and context (``Writer.batch``)
    handlers: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.instance:
            self.instance = self.store.instance

    @property
    def rules(self) -> Rules:
        return Rules(self.policy.ack.window, self.policy.ack.attempts, tuple(self.policy.ladder))

    @property
    def people(self) -> DirectoryPeople:
        return DirectoryPeople(self.directory)

    def now(self) -> datetime:
        return self.clock.now()

    def set_directory(self, directory: Directory) -> None:
        self.directory = directory
