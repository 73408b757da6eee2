"""The ``log`` channel: writes each message down instead of sending it.

With ``path`` it appends one JSON line per message (parents created on first use); without, it
logs through structlog. Used by the bundled example config, drills and dry runs: it never fails
except when the file cannot be written (``PermanentError``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Self

import structlog

from warnd.core.clock import Clock
from warnd.core.errors import ConfigError, PermanentError
from warnd.edges.channels import Outbound, register, unknown_options
from warnd.edges.channels.config import ChannelConfig

_log = structlog.get_logger("warnd.channels.log")


@register("log")
class LogChannel:
    """Appends JSON lines ``{"at", "channel", ...contracts §5 body}`` to ``path``."""

    __slots__ = ("_clock", "_ready", "kinds", "name", "path")

    def __init__(self, name: str, kinds: frozenset[str], *, path: Path | None, clock: Clock):
        self.name = name
        self.kinds = kinds
        self.path = path
        self._clock = clock
        self._ready = False

    @classmethod
    def check(cls, cfg: ChannelConfig) -> None:
        unknown_options(cfg, ("path",))
        path = cfg.options.get("path")
        if path is not None and (not isinstance(path, str) or not path.strip()):
            raise ConfigError(
                "应为文件路径 must be a file path (leave it out to log via the daemon log)",
                source=cfg.source,
                field=cfg.key("path"),
                value=path,
            )

    @classmethod
    def from_config(cls, cfg: ChannelConfig, *, clock: Clock) -> Self:
        raw = cfg.options.get("path")
        path = Path(str(raw).strip()) if raw is not None else None
        return cls(cfg.name, frozenset(cfg.kinds), path=path, clock=clock)

    async def send(self, msg: Outbound) -> None:
        record = {"at": self._clock.now().isoformat(), "channel": self.name, **msg.body()}
        if self.path is None:
            _log.info("outbound", **record)
            return
        line = json.dumps(record, ensure_ascii=False) + "\n"
        try:
            if not self._ready:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._ready = True
            # One small append per message: O_APPEND keeps concurrent lines whole.
            with self.path.open("a", encoding="utf-8") as out:
                out.write(line)
        except OSError as exc:
            raise PermanentError(f"{self.name}: cannot write {self.path}: {exc.strerror}") from None

    async def aclose(self) -> None:
        """Nothing to release: the file is opened per message."""
