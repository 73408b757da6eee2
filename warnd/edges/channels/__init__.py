"""Outbound channels: one small Protocol, one module per channel type, a registry.

Adding a channel type is one new module in this package that decorates its class with
``@register("type-name")``; every module here is imported when the registry is first used, so
nothing else needs editing. A channel class provides ``check(cfg)`` (validate the options,
raise ConfigError naming ``channels.<name>.<key>``, no I/O) and ``from_config(cfg, clock=...)``.
Channels raise ``TransientError`` / ``PermanentError`` (warnd.core.errors) from ``send``;
``warnd.edges.channels.delivery`` turns those into retries and a ``DeliveryResult``.

A channel may do more than send: ``WithRoutes`` (it takes its provider's callbacks on routes of
its own) and ``Observer`` (it watches every sent batch: the duty-group digests). The daemon
asks ``isinstance(channel, WithRoutes)``; nothing else needs to know which type does what.

The ``[channels.*]`` tables are read here too (``load_channels``, called by
``warnd.config.policy.load_config``), so the config loader knows no channel type and no channel
module imports the config loader: the values live in the leaf ``warnd.edges.channels.config``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, Self, TypeVar, runtime_checkable

from warnd.core.clock import Clock
from warnd.core.errors import ConfigError
from warnd.edges.channels.config import DEFAULT_KINDS, KINDS, ChannelConfig, parse_rate

if TYPE_CHECKING:
    from warnd.config.policy import _Loader
    from warnd.core.directory import Directory

PURPOSES = ("call", "update", "lift")


@dataclass(frozen=True, slots=True)
class Outbound:
    """One outbound message (contracts §5). ``id`` stays the same when the message is retried."""

    id: str
    to: str
    kind: str
    purpose: str  # "call" | "update" | "lift"
    text: str
    warning: str
    contact: str
    drill: bool = False
    reply_code: str | None = None
    link: str | None = None

    def body(self) -> dict[str, Any]:
        """The JSON body of contracts §5 (+ ``drill``; ``reply_code``/``link`` when set)."""
        out: dict[str, Any] = {
            "id": self.id,
            "to": self.to,
            "kind": self.kind,
            "purpose": self.purpose,
            "text": self.text,
            "warning": self.warning,
            "contact": self.contact,
            "drill": self.drill,
        }
        if self.reply_code is not None:
            out["reply_code"] = self.reply_code
        if self.link is not None:
            out["link"] = self.link
        return out


class Sent(NamedTuple):
    """What a provider said when it took a message: its own reference for it (a CallId),
    which its callbacks name the message by. The dispatcher hands it to whoever records it
    (the daemon: a ``submitted`` receipt, warnd.edges.vendors); a channel records nothing itself."""

    provider: str  # the receipts' provider name ("tencent")
    ref: str


class Channel(Protocol):
    """What the dispatcher needs from a channel."""

    name: str
    kinds: frozenset[str]

    async def send(self, msg: Outbound) -> Sent | None:
        """Hand one message over; raise TransientError / PermanentError on failure. Returns
        the provider's reference when its callbacks need one to find the message, else None."""
        ...

    async def aclose(self) -> None:
        """Release connections; the channel is not used afterwards."""
        ...


class ChannelType(Channel, Protocol):
    """A registered channel class: a Channel that can validate and build itself from config."""

    @classmethod
    def check(cls, cfg: ChannelConfig) -> None:
        """Validate ``cfg.options`` without I/O; ConfigError naming ``cfg.key(option)``."""
        ...

    @classmethod
    def from_config(cls, cfg: ChannelConfig, *, clock: Clock) -> Self:
        """Build the channel (may read secret files: this runs when the daemon starts)."""
        ...


class Seen(Protocol):
    """What an ``Observer`` reads from a sent message (warnd.engine.outbox.Attempt has it)."""

    @property
    def purpose(self) -> str: ...
    @property
    def text(self) -> str: ...
    @property
    def warning(self) -> str: ...
    @property
    def contact(self) -> str: ...
    @property
    def to(self) -> str: ...
    @property
    def attempt(self) -> int | None: ...
    @property
    def rung(self) -> str | None: ...


class Callbacks(NamedTuple):
    """Where a channel's provider calls back: warnd.edges.vendors serves ``provider``'s callback
    routes under ``/hooks/vendor/<channel>/<token>``."""

    provider: str
    channel: str
    token: str


@runtime_checkable
class WithRoutes(Protocol):
    """A channel whose provider calls back (receipts, key presses, replies) on routes of its
    own; the daemon asks warnd.edges.vendors for them (a channel imports no engine or vendor
    code)."""

    def callbacks(self) -> Callbacks | None:
        """Its callback routes' provider, channel name and secret token (None: no callbacks)."""
        ...


@runtime_checkable
class Observer(Protocol):
    """A channel that is shown every batch the sender sent (the duty-group digests)."""

    async def observe(self, batch: Sequence[Seen], directory: Directory | None) -> int:
        """Look at a sent batch; returns how many posts went out. Never raises."""
        ...


T = TypeVar("T", bound=ChannelType)
_REGISTRY: dict[str, type[ChannelType]] = {}
_discovered = False


def register(type_name: str) -> Callable[[type[T]], type[T]]:
    """Class decorator: make ``type_name`` usable as ``type = "..."`` in ``[channels.*]``."""

    def decorate(cls: type[T]) -> type[T]:
        existing = _REGISTRY.get(type_name)
        if existing is not None and existing is not cls:
            raise ValueError(f"channel type {type_name!r} registered twice")
        _REGISTRY[type_name] = cls
        return cls

    return decorate


def _discover() -> None:
    """Import every module of this package once, so that each registers its types."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    import importlib  # here: a command that loads a config without channels never needs them
    import pkgutil

    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


def registered_types() -> tuple[str, ...]:
    """The channel type names that ``type = "..."`` accepts."""
    _discover()
    return tuple(sorted(_REGISTRY))


def _lookup(cfg: ChannelConfig) -> type[ChannelType]:
    _discover()
    cls = _REGISTRY.get(cfg.type)
    if cls is None:
        known = ", ".join(sorted(_REGISTRY))
        raise ConfigError(
            f"未知的渠道类型 unknown channel type (known: {known})",
            source=cfg.source,
            field=cfg.key("type"),
            value=cfg.type,
        )
    return cls


def check_channel(cfg: ChannelConfig) -> None:
    """Validate a channel's type and options without building it (used by ``load_config``)."""
    try:
        _lookup(cfg).check(cfg)
    except ConfigError as exc:
        raise _placed(exc, cfg) from None


def build_channel(cfg: ChannelConfig, *, clock: Clock) -> Channel:
    """Build the channel ``cfg`` describes; ConfigError for bad options or a missing secret."""
    cls = _lookup(cfg)
    try:
        cls.check(cfg)
        return cls.from_config(cfg, clock=clock)
    except ConfigError as exc:
        raise _placed(exc, cfg) from None


def _placed(exc: ConfigError, cfg: ChannelConfig) -> ConfigError:
    """Name the config file in an error raised by a shared helper that did not know it."""
    if exc.source is not None:
        return exc
    field = exc.field or f"channels.{cfg.name}"
    return ConfigError(exc.message, source=cfg.source, field=field, value=exc.value)


def unknown_options(cfg: ChannelConfig, allowed: tuple[str, ...]) -> None:
    """Shared by channel types: refuse option keys they do not know (``x_*`` excepted)."""
    for key in cfg.options:
        if key not in allowed and not key.startswith("x_"):
            known = ", ".join(("type", "kinds", "rate", "concurrency", *allowed))
            raise ConfigError(
                f"未知的键 unknown key (known: {known})",
                source=cfg.source,
                field=cfg.key(key),
            )


def load_channels(loader: _Loader, doc: Mapping[str, Any]) -> Mapping[str, ChannelConfig]:
    """``[channels.<name>]`` tables → ChannelConfig values, each checked by its type.

    ``loader`` is ``warnd.config.policy``'s: its errors name the file, line and dotted key.
    """
    out: dict[str, ChannelConfig] = {}
    for name, item in loader.table(doc, "channels").items():
        prefix = f"channels.{name}."
        if not isinstance(item, dict):
            raise loader.error(f"channels.{name}", "应为表 must be a table", item)
        kinds = loader.choices(item.get("kinds", list(DEFAULT_KINDS)), KINDS, prefix + "kinds")
        if not kinds:
            raise loader.error(prefix + "kinds", "至少需要一种 kind needs at least one kind")
        rate = None
        if "rate" in item:
            try:
                rate = parse_rate(item["rate"])
            except ValueError as exc:
                message = "速率 " + str(exc).split(":")[0]
                raise loader.error(prefix + "rate", message, item["rate"]) from None
        known = ("type", "kinds", "rate", "concurrency")
        cfg = ChannelConfig(
            name=name,
            type=loader.string(item, "type", prefix),
            kinds=kinds,
            rate=rate,
            concurrency=loader.integer(item, "concurrency", prefix, 10, 1000),
            options=MappingProxyType({k: v for k, v in item.items() if k not in known}),
            source=loader.source,
        )
        try:
            check_channel(cfg)
        except ConfigError as exc:
            raise loader.relocated(exc, f"channels.{name}") from None
        out[name] = cfg
    return MappingProxyType(out)
