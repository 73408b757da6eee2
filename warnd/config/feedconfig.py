"""The feeds part of the config file: ``[[feeds]]`` of every type, and ``[feed_alarms]``.

Validated once by ``warnd.config.policy.load_config`` (which hands this module its loader, so that
errors name the file, line, dotted key and value like every other table). What each key means
is in docs/feeds.md and the commented examples of config/warnd.toml.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from warnd.config.exposure import read_hosts
from warnd.config.tomllines import line_of
from warnd.core.division import DIRECTORY_LEVELS, normalise
from warnd.core.errors import ConfigError

if TYPE_CHECKING:  # the loader lives in warnd.config.policy, which imports this module
    from warnd.config.policy import _Loader

TYPES = ("folder", "http", "qweather", "nmc")
ROLES = ("dispatch", "check")
ISSUER_LEVELS = ("province", "prefecture", *DIRECTORY_LEVELS)
AUTH_KINDS = ("jwt", "api_key")
_COMMON = ("name", "type", "role", "interval", "timeout", "priority", "stale_after", "areas")
_KEYS: dict[str, tuple[str, ...]] = {
    "folder": (*_COMMON, "path"),
    "http": (*_COMMON, "url", "prefilter", "grace", "issuer_levels", "allow_hosts"),
    "nmc": (*_COMMON, "url", "grace", "issuer_levels"),
    "qweather": (
        *_COMMON,
        "host",
        "points",
        "lang",
        "auth",
        "kid",
        "project",
        "key_file",
        "key_credential",
        "key_env",
        "token_ttl",
    ),
}
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_ENV = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True, slots=True)
class PointConfig:
    """A QWeather point: the place asked about and the division code it stands for."""

    code: str
    lat: float
    lon: float
    name: str | None = None


@dataclass(frozen=True, slots=True)
class QWeatherAuth:
    """How QWeather requests are signed. Secrets are read when the feed is built, never here."""

    kind: str  # "jwt" | "api_key"
    kid: str | None = None  # JWT: the credential id (header ``kid``)
    project: str | None = None  # JWT: the project id (payload ``sub``)
    key_file: Path | None = None  # JWT: Ed25519 PEM; api_key: the key
    key_env: str | None = None  # api_key only
    token_ttl: timedelta = timedelta(minutes=15)


@dataclass(frozen=True, slots=True)
class FeedConfig:
    """One source. ``role = "check"`` sources never dispatch (cross-check lists)."""

    name: str
    path: Path | None
    url: str | None
    interval: timedelta
    timeout: timedelta = timedelta(seconds=30)
    type: str = "folder"
    role: str = "dispatch"
    priority: int = 100
    stale_after: timedelta | None = None
    areas: tuple[str, ...] = ()  # division code prefixes; empty: the contacts directory's
    prefilter: bool = True  # http: skip CMA entries of other areas before downloading
    grace: timedelta = timedelta(minutes=10)  # check: how long a warning may be missing
    issuer_levels: tuple[str, ...] = ("county", "township", "village")  # check
    host: str | None = None  # qweather: the account's API host
    points: tuple[PointConfig, ...] = ()
    lang: str = "zh"
    auth: QWeatherAuth | None = None
    #: http: hosts (names, addresses or networks) whose links may be fetched although they are
    #: internal (loopback, private, link-local); the feed's own host always may (docs/hardening.md)
    allow_hosts: tuple[str, ...] = ()

    @property
    def dispatching(self) -> bool:
        return self.role == "dispatch"


@dataclass(frozen=True, slots=True)
class FeedAlarmConfig:
    """Where the alarms of the watch go: a channel and, for person channels, numbers."""

    channel: str
    to: tuple[str, ...] = ()
    source: str | None = field(default=None, compare=False)


def default_stale_after(interval: timedelta) -> timedelta:
    """Ten polls, and at least ten minutes."""
    return max(timedelta(minutes=10), 10 * interval)


def load_feeds(loader: _Loader, doc: Mapping[str, Any]) -> tuple[FeedConfig, ...]:
    feeds: list[FeedConfig] = []
    for i, item in enumerate(loader.array(dict(doc), "feeds")):
        cfg = _feed(loader, item, f"feeds[{i}].", i)
        if any(f.name == cfg.name for f in feeds):
            raise loader.error(f"feeds[{i}].name", "来源名称重复 duplicate feed name", cfg.name)
        feeds.append(cfg)
    return tuple(feeds)


def _feed(loader: _Loader, item: dict[str, Any], prefix: str, index: int) -> FeedConfig:
    name = loader.string(item, "name", prefix)
    kind = item.get("type")
    if kind is None:
        if ("path" in item) == ("url" in item):
            where = prefix.rstrip(".")
            raise loader.error(where, "须且只能有一个 needs exactly one of path, url (or a type)")
        kind = "folder" if "path" in item else "http"
    if kind not in TYPES:
        raise loader.error(prefix + "type", f"应为 must be one of {', '.join(TYPES)}", kind)
    loader.keys(item, _KEYS[kind], prefix)
    role = loader.string(item, "role", prefix, "check" if kind == "nmc" else "dispatch")
    if role not in ROLES or (kind == "nmc" and role != "check"):
        allowed = "check" if kind == "nmc" else ", ".join(ROLES)
        raise loader.error(prefix + "role", f"应为 must be {allowed}", role)
    if role == "check" and kind in ("folder", "qweather"):
        raise loader.error(prefix + "role", "只有 http/nmc 列表可作核对 only http, nmc", role)
    path = Path(loader.string(item, "path", prefix)) if kind == "folder" else None
    url = loader.http_url(item, "url", prefix) if kind in ("http", "nmc") else None
    default = timedelta(seconds=10 if kind == "folder" else 300 if kind == "qweather" else 60)
    interval = loader.duration(item, "interval", prefix, default)
    stale: timedelta | None = default_stale_after(interval) if role == "dispatch" else None
    if item.get("stale_after") == "off":
        stale = None
    elif "stale_after" in item:
        stale = loader.duration(item, "stale_after", prefix, timedelta(0))
    levels = item.get("issuer_levels", ["county", "township", "village"])
    cfg = FeedConfig(
        name=name,
        path=path,
        url=url,
        interval=interval,
        timeout=loader.duration(item, "timeout", prefix, timedelta(seconds=30)),
        type=kind,
        role=role,
        priority=loader.integer(item, "priority", prefix, 100 + index, 10_000),
        stale_after=stale,
        areas=_areas(loader, item.get("areas", []), prefix + "areas"),
        prefilter=_bool(loader, item, "prefilter", prefix, True),
        grace=loader.duration(item, "grace", prefix, timedelta(minutes=10)),
        issuer_levels=loader.choices(levels, ISSUER_LEVELS, prefix + "issuer_levels"),
        allow_hosts=read_hosts(loader, item, "allow_hosts", prefix),
    )
    if kind != "qweather":
        return cfg
    return _qweather(loader, item, prefix, cfg)


def _bool(loader: _Loader, item: Mapping[str, Any], key: str, prefix: str, default: bool) -> bool:
    value = item.get(key, default)
    if not isinstance(value, bool):
        raise loader.error(prefix + key, "应为 true 或 false must be true or false", value)
    return value


def _areas(loader: _Loader, value: Any, key: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise loader.error(key, "应为区划代码列表 must be a list of division codes", value)
    for i, code in enumerate(value):
        if not isinstance(code, str) or normalise(code) is None:
            message = "应为区划代码（2、4、6、9 或 12 位）must be a division code or prefix"
            raise loader.error(f"{key}[{i}]", message, code)
    return tuple(value)


def _qweather(loader: _Loader, item: dict[str, Any], prefix: str, cfg: FeedConfig) -> FeedConfig:
    host = loader.http_url(item, "host", prefix)
    raw_points = item.get("points")
    if not isinstance(raw_points, list) or not raw_points:
        message = "至少需要一个点 needs points = [{ code, lat, lon }, ...]"
        raise loader.error(prefix + "points", message)
    try:
        points = tuple(_point(loader, p, f"{prefix}points[{i}].") for i, p in enumerate(raw_points))
    except ConfigError as exc:  # a key inside an inline table: point at the `points` line
        if exc.line is not None:
            raise
        line = line_of(loader.text, prefix + "points")
        raise ConfigError(
            exc.message, source=exc.source, line=line, field=exc.field, value=exc.value
        ) from None
    lang = loader.string(item, "lang", prefix, "zh")
    kind = loader.string(item, "auth", prefix, "jwt")
    if kind not in AUTH_KINDS:
        raise loader.error(prefix + "auth", f"应为 must be one of {', '.join(AUTH_KINDS)}", kind)
    key_file = _key_file(loader, item, prefix)
    key_env = item.get("key_env")
    if key_env is not None and (kind != "api_key" or not _ENV.fullmatch(str(key_env))):
        message = "仅用于 api_key，应为环境变量名 (api_key only; a variable name)"
        raise loader.error(prefix + "key_env", message, key_env)
    if (key_file is None) == (key_env is None):
        need = "key_file, key_credential" + (", key_env" if kind == "api_key" else "")
        raise loader.error(prefix + "auth", f"须且只能有一个 needs exactly one of {need}", kind)
    kid = project = None
    if kind == "jwt":
        kid = loader.string(item, "kid", prefix)
        project = loader.string(item, "project", prefix)
        for key, value in (("kid", kid), ("project", project)):
            if not _ID.fullmatch(value):
                raise loader.error(
                    prefix + key, "应为控制台显示的 ID (as shown by the console)", value
                )
    ttl = loader.duration(item, "token_ttl", prefix, timedelta(minutes=15))
    if ttl > timedelta(hours=24) or ttl < timedelta(minutes=2):
        raise loader.error(
            prefix + "token_ttl", "应在 2m 到 24h 之间 must be 2m..24h", item["token_ttl"]
        )
    auth = QWeatherAuth(kind, kid, project, key_file, key_env, ttl)
    return replace(cfg, host=host.rstrip("/"), points=points, lang=lang, auth=auth)


def _key_file(loader: _Loader, item: Mapping[str, Any], prefix: str) -> Path | None:
    """``key_file = PATH`` or ``key_credential = NAME`` (under ``$CREDENTIALS_DIRECTORY``)."""
    if "key_file" in item and "key_credential" in item:
        raise loader.error(prefix + "key_credential", "与 key_file 二选一 not both")
    if "key_file" in item:
        return Path(loader.string(item, "key_file", prefix))
    if "key_credential" in item:
        name = loader.string(item, "key_credential", prefix)
        if "/" in name:
            raise loader.error(prefix + "key_credential", "应为凭据名 a credential name", name)
        base = os.environ.get("CREDENTIALS_DIRECTORY", "/run/credentials/warnd.service")
        return Path(base) / name
    return None


def _point(loader: _Loader, raw: Any, prefix: str) -> PointConfig:
    if not isinstance(raw, dict):
        raise loader.error(prefix.rstrip("."), "应为表 must be a table { code, lat, lon }", raw)
    loader.keys(raw, ("code", "lat", "lon", "name"), prefix)
    code = normalise(str(raw.get("code", "")))
    if code is None or len(code) < 6 or (code.endswith("00") and len(code) == 6):
        message = "应为县、乡镇或村的区划代码 must be a county/township/village code"
        raise loader.error(prefix + "code", message, raw.get("code"))
    coords = []
    for key, limit in (("lat", 90.0), ("lon", 180.0)):
        value = raw.get(key)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise loader.error(prefix + key, "应为数字 must be a number", value)
        if not -limit <= float(value) <= limit:
            raise loader.error(prefix + key, f"超出范围 must be within ±{limit:g}", value)
        coords.append(float(value))
    name = raw.get("name")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise loader.error(prefix + "name", "应为非空字符串 must be a non-empty string", name)
    return PointConfig(code, coords[0], coords[1], name.strip() if name else None)


def load_feed_alarms(
    loader: _Loader, doc: Mapping[str, Any], channels: Mapping[str, Any]
) -> FeedAlarmConfig | None:
    """``[feed_alarms] channel = NAME, to = [numbers]``: the duty office's alarm route."""
    if "feed_alarms" not in doc:
        return None
    raw = loader.table(dict(doc), "feed_alarms", ("channel", "to"))
    channel = loader.string(raw, "channel", "feed_alarms.")
    if channel not in channels:
        known = ", ".join(channels) or "none"
        raise loader.error(
            "feed_alarms.channel", f"没有这个渠道 no such channel (known: {known})", channel
        )
    to = raw.get("to", [])
    if not isinstance(to, list) or not all(isinstance(t, str) and t.strip() for t in to):
        raise loader.error("feed_alarms.to", "应为号码列表 must be a list of numbers", to)
    from warnd.core.phone import normalise as phone

    numbers = []
    for i, value in enumerate(to):
        number = phone(value)
        if number is None:
            raise loader.error(f"feed_alarms.to[{i}]", "号码无效 not a phone number", value)
        numbers.append(number)
    return FeedAlarmConfig(channel, tuple(numbers), loader.source)


__all__ = [
    "ConfigError",
    "FeedAlarmConfig",
    "FeedConfig",
    "PointConfig",
    "QWeatherAuth",
    "default_stale_after",
    "load_feed_alarms",
    "load_feeds",
]
