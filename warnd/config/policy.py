"""The config file (contracts §2 and §7), validated once into frozen typed values.

Everything a running warnd decides from configuration comes from ``Config``; nothing else reads
the TOML. Every bad value raises ``ConfigError`` naming the file, the line when it can be found,
the dotted key (``stages[2].lead``, ``channels.gateway.rate``) and the value. Unknown keys are
errors (they are usually typos) except in ``[x_*]`` tables and ``x_*`` keys, which are reserved
for local extensions. Relative paths stay relative to the working directory.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from warnd.config.exposure import (
    LOOPBACK_HOSTS,
    HooksConfig,
    ListenConfig,
    MonitorConfig,
    read_listen,
    read_monitor,
)
from warnd.config.exposure import read_secret as read_secret  # channels read theirs through policy
from warnd.config.exposure import secret_ref as secret_ref
from warnd.config.feedconfig import FeedAlarmConfig, load_feed_alarms, load_feeds
from warnd.config.feedconfig import (
    FeedConfig as FeedConfig,  # where it lived before: still importable
)
from warnd.config.tomllines import line_of
from warnd.core.chain import rungs
from warnd.core.division import DIRECTORY_LEVELS, Level
from warnd.core.duration import parse_duration
from warnd.core.errors import ConfigError
from warnd.desk.wall.config import WallConfig, wall_table
from warnd.edges.channels import load_channels
from warnd.edges.channels.config import DEFAULT_KINDS as DEFAULT_KINDS  # where they lived before:
from warnd.edges.channels.config import KINDS as KINDS  # still importable from here
from warnd.edges.channels.config import ChannelConfig as ChannelConfig
from warnd.edges.channels.config import RateLimit as RateLimit
from warnd.edges.channels.config import parse_rate as parse_rate

#: contracts §4: where the config is looked for when ``--config`` is not given
DEFAULT_CONFIG_PATHS: tuple[Path, ...] = (Path("config/warnd.toml"), Path("/etc/warnd/warnd.toml"))
SEVERITIES: tuple[str, ...] = ("Minor", "Moderate", "Severe", "Extreme")
#: contracts §2: the ladder when ``[escalation]`` does not name one (the rungs:
#: warnd.core.chain.rungs)
DEFAULT_LADDER: tuple[str, ...] = ("backup", "superior", "duty")
_SECRET_WORDS = ("secret", "password", "token", "key")
_Table = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class StagePolicy:
    """One step of the 631 timetable: warn ``level`` divisions ``lead`` before onset."""

    level: Level
    lead: timedelta


@dataclass(frozen=True, slots=True)
class AckPolicy:
    """How long one attempt waits for an answer, and how many attempts before escalating."""

    window: timedelta = timedelta(minutes=5)
    attempts: int = 3
    #: contracts §8: a person's attempts on several warnings due within this span go out as
    #: one message (0: off)
    bundle: timedelta = timedelta(0)


@dataclass(frozen=True, slots=True)
class Policy:
    """The chain policy of contracts §2/§3: stages, call-back rules, ladder, trigger."""

    stages: tuple[StagePolicy, ...]
    ack: AckPolicy
    ladder: tuple[str, ...]
    min_severity: str

    @classmethod
    def default(cls) -> Policy:
        """The 631 defaults: county 6h, township 3h, village 1h; 5m x 3; full ladder; Moderate."""
        return cls(
            stages=(
                StagePolicy("county", timedelta(hours=6)),
                StagePolicy("township", timedelta(hours=3)),
                StagePolicy("village", timedelta(hours=1)),
            ),
            ack=AckPolicy(),
            ladder=DEFAULT_LADDER,
            min_severity="Moderate",
        )


@dataclass(frozen=True, slots=True)
class Config:
    """A validated config file. The daemon tables are optional: see ``require_daemon``."""

    path: Path
    timezone: str = "Asia/Shanghai"
    tz: ZoneInfo = field(default_factory=lambda: ZoneInfo("Asia/Shanghai"))
    store_url: str = "sqlite:///var/lib/warnd/warnd.db"
    #: how often an instance on PostgreSQL heartbeats (None: a quarter of the window, ≤ 10 s)
    store_heartbeat: timedelta | None = None
    contacts_path: Path | None = None
    policy: Policy = field(default_factory=Policy.default)
    listen: ListenConfig = field(default_factory=ListenConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    hooks: HooksConfig | None = None
    feeds: tuple[FeedConfig, ...] = ()  # warnd.config.feedconfig: every source type
    channels: Mapping[str, ChannelConfig] = field(default_factory=lambda: MappingProxyType({}))
    wall: WallConfig | None = None  # the duty room's status wall (warnd.desk.wall.config)
    feed_alarms: FeedAlarmConfig | None = None
    #: demo mode (``warnd serve --demo``, never from the file): the example hook secret is
    #: accepted, and only on a loopback listener
    demo: bool = False

    def require_daemon(self) -> None:
        """Raise ConfigError naming what ``warnd serve`` lacks; read the hooks secret once."""
        needs = {"feeds": "[[feeds]]", "channels": "[channels.<name>]", "hooks": "[hooks]"}
        missing = [k for k in needs if not getattr(self, k)]
        if missing:
            what = ", ".join(needs[k] for k in missing)
            raise ConfigError(
                f"warnd serve 还需要 needs {what}", source=str(self.path), field=missing[0]
            )
        assert self.hooks is not None
        if self.demo and self.listen.host not in LOOPBACK_HOSTS:
            raise ConfigError(
                "演示模式只监听本机 --demo listens on loopback only",
                source=str(self.path),
                field="listen.host",
                value=self.listen.host,
            )
        self.hooks.secret(demo=self.demo)

    def channels_for(self, kind: str) -> tuple[ChannelConfig, ...]:
        """Channels that carry ``kind``, in config order (the fallback order)."""
        return tuple(c for c in self.channels.values() if kind in c.kinds)


def find_config(explicit: str | None, *, candidates: Sequence[Path] = DEFAULT_CONFIG_PATHS) -> Path:
    """Contracts §4: ``--config PATH``, else ``config/warnd.toml`` (cwd), else /etc/warnd."""
    tried = [Path(explicit)] if explicit is not None else list(candidates)
    for path in tried:
        if path.is_file():
            return path
    names = ", ".join(str(p) for p in tried)
    raise ConfigError(f"找不到配置文件 no config file (tried {names})", field="--config")


def load_config(path: str | Path) -> Config:
    """Read and validate a config file once; ConfigError on anything wrong."""
    p = Path(path)
    source = str(p)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError("不是 UTF-8 编码 not UTF-8 text", source=source) from None
    except OSError as exc:
        raise ConfigError(f"无法读取 cannot read: {exc.strerror}", source=source) from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        where = re.search(r"\(at line (\d+), column \d+\)", message)
        line = int(where.group(1)) if where else max(1, text.count("\n") + 1)
        message = re.sub(r"\s*\(at [^)]*\)\s*$", "", message)
        raise ConfigError(f"TOML 语法错误 {message}", source=source, line=line) from None
    return _Loader(source, text).config(p, doc)


def _is_secret_key(key: str) -> bool:
    low = key.lower()
    return any(low == w or low.endswith(("_" + w, "-" + w)) for w in _SECRET_WORDS)


class _Loader:
    """Turns the parsed TOML document into a Config, naming every problem precisely."""

    def __init__(self, source: str, text: str) -> None:
        self.source = source
        self.text = text

    def error(self, key: str, message: str, value: object = None) -> ConfigError:
        line = line_of(self.text, key)
        return ConfigError(message, source=self.source, line=line, field=key, value=value)

    def relocated(self, exc: ConfigError, default_key: str) -> ConfigError:
        """A ConfigError raised without a file (by a helper or a channel type), placed."""
        return self.error(exc.field or default_key, exc.message, exc.value)

    # -- generic checks ---------------------------------------------------------------------

    def refuse_secrets(self, node: object, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                dotted = f"{prefix}.{key}" if prefix else key
                if _is_secret_key(key) and not isinstance(value, dict):
                    message = "密钥不能写在配置文件里，请改用 secret_file 或 secret_env"
                    raise self.error(dotted, message)
                self.refuse_secrets(value, dotted)
        elif isinstance(node, list):
            for i, item in enumerate(node):
                self.refuse_secrets(item, f"{prefix}[{i}]")

    def table(self, doc: _Table, key: str, allowed: Sequence[str] | None = None) -> dict[str, Any]:
        """``doc[key]`` as a table (empty when absent), its keys checked against ``allowed``."""
        value = doc.get(key, {})
        if not isinstance(value, dict):
            raise self.error(key, "应为表 must be a table", value)
        if allowed is not None:
            self.keys(value, allowed, key + ".")
        return value

    def array(self, doc: _Table, key: str) -> list[dict[str, Any]]:
        value = doc.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self.error(key, f"应为表数组 must be an array of tables ([[{key}]])")
        return value

    def keys(self, table: _Table, allowed: Sequence[str], prefix: str) -> None:
        for key in table:
            if key in allowed or key.startswith("x_"):
                continue
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f" (known: {', '.join(allowed)})"
            raise self.error(f"{prefix}{key}", "未知的键 unknown key" + hint)

    def string(self, table: _Table, key: str, prefix: str, default: str = "") -> str:
        if key not in table and not default:
            raise self.error(prefix + key, "缺少必填项 missing (required)")
        value = table.get(key, default)
        if not isinstance(value, str) or not value.strip():
            raise self.error(prefix + key, "应为非空字符串 must be a non-empty string", value)
        return value.strip()

    def integer(self, table: _Table, key: str, prefix: str, default: int, hi: int) -> int:
        value = table.get(key, default)
        lo = 0 if key == "port" else 1
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise self.error(prefix + key, f"应为整数 must be a whole number {lo}..{hi}", value)
        return value

    def duration(self, table: _Table, key: str, prefix: str, default: timedelta) -> timedelta:
        """A duration of at least one second (``parse_duration`` counts whole seconds)."""
        if key not in table:
            return default
        try:
            parsed = parse_duration(table[key])
        except ValueError as exc:
            raise self.error(prefix + key, "时长 " + str(exc).split(":")[0], table[key]) from None
        if parsed < timedelta(seconds=1):
            raise self.error(prefix + key, "至少 1s must be at least 1s", table[key])
        return parsed

    def choices(self, values: object, allowed: Sequence[str], key: str) -> tuple[str, ...]:
        """A list of distinct members of ``allowed``, order kept."""
        if not isinstance(values, list):
            raise self.error(key, f"应为列表 must be a list of {', '.join(allowed)}", values)
        for i, value in enumerate(values):
            if value not in allowed:
                raise self.error(f"{key}[{i}]", f"应为 must be one of {', '.join(allowed)}", value)
            if value in values[:i]:
                raise self.error(f"{key}[{i}]", "重复 repeated", value)
        return tuple(values)

    def http_url(self, table: _Table, key: str, prefix: str) -> str:
        value = self.string(table, key, prefix)
        if not re.match(r"^https?://[^/\s]+", value):
            raise self.error(prefix + key, "应为 http(s) 地址 must be an http(s):// URL", value)
        return value

    # -- the tables -------------------------------------------------------------------------

    def config(self, path: Path, doc: dict[str, Any]) -> Config:
        self.refuse_secrets(doc, "")
        top = ("timezone", "store", "contacts", "stages", "ack", "escalation", "trigger")
        keys = ("listen", "monitor", "hooks", "feeds", "channels", "wall", "feed_alarms")
        self.keys(doc, (*top, *keys), "")
        timezone = self.string(doc, "timezone", "", "Asia/Shanghai")
        try:
            tz = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise self.error("timezone", "未知时区 unknown time zone", timezone) from None
        store = self.table(doc, "store", ("url", "heartbeat"))
        store_url = self.string(store, "url", "store.", "sqlite:///var/lib/warnd/warnd.db")
        if not store_url.startswith(("sqlite:///", "postgresql://")):
            message = "应以 sqlite:/// 或 postgresql:// 开头 (must start with)"
            raise self.error("store.url", message, store_url)
        heartbeat = (
            self.duration(store, "heartbeat", "store.", timedelta(0))
            if "heartbeat" in store
            else None
        )
        policy = self.policy(doc)
        if heartbeat is not None and 2 * heartbeat > policy.ack.window:
            message = (
                "两次心跳须不长于应答窗口 two heartbeats must not outlast ack.window"
                f" ({policy.ack.window.total_seconds():g}s): a dead instance's messages would"
                " be resent after their call's next attempt"
            )
            raise self.error("store.heartbeat", message, store["heartbeat"])
        contacts = self.table(doc, "contacts", ("path",))
        contacts_path = Path(self.string(contacts, "path", "contacts.")) if contacts else None
        channels = load_channels(self, doc)
        listen = read_listen(self, doc)
        return Config(
            path=path,
            timezone=timezone,
            tz=tz,
            store_url=store_url,
            store_heartbeat=heartbeat,
            contacts_path=contacts_path,
            policy=policy,
            listen=listen,
            monitor=read_monitor(self, doc, listen),
            hooks=self.hooks(doc),
            feeds=load_feeds(self, doc),
            channels=channels,
            wall=wall_table(self, doc),
            feed_alarms=load_feed_alarms(self, doc, channels),
        )

    def policy(self, doc: dict[str, Any]) -> Policy:
        default = Policy.default()
        stages = default.stages
        if "stages" in doc:
            raw = self.array(doc, "stages")
            if not raw:
                raise self.error("stages", "至少需要一个阶段 needs at least one stage")
            stages = tuple(self.stage(s, f"stages[{i}].") for i, s in enumerate(raw))
            for i, stage in enumerate(stages):
                if stage.level in (s.level for s in stages[:i]):
                    raise self.error(f"stages[{i}].level", "同一级别两次 twice", stage.level)
        ack = self.table(doc, "ack", ("window", "attempts", "bundle"))
        window = self.duration(ack, "window", "ack.", default.ack.window)
        attempts = self.integer(ack, "attempts", "ack.", default.ack.attempts, 20)
        bundle = self.bundle(ack, window)
        escalation = self.table(doc, "escalation", ("ladder",))
        raw_ladder = escalation.get("ladder", list(default.ladder))
        ladder = self.choices(raw_ladder, rungs.ladder_names(), "escalation.ladder")
        trigger = self.table(doc, "trigger", ("min_severity",))
        severity = self.string(trigger, "min_severity", "trigger.", default.min_severity)
        by_lower = {s.lower(): s for s in SEVERITIES}
        if severity.lower() not in by_lower:
            message = f"应为 must be one of {', '.join(SEVERITIES)}"
            raise self.error("trigger.min_severity", message, severity)
        return Policy(
            stages, AckPolicy(window, attempts, bundle), ladder, by_lower[severity.lower()]
        )

    def bundle(self, ack: _Table, window: timedelta) -> timedelta:
        """``ack.bundle``: "0s" (off) or a span shorter than the window (contracts §8)."""
        if "bundle" not in ack:
            return timedelta(0)
        raw = ack["bundle"]
        try:
            span = parse_duration(raw)
        except ValueError as exc:
            raise self.error("ack.bundle", "时长 " + str(exc).split(":")[0], raw) from None
        if span >= window:
            message = (
                "须短于应答窗口 must be shorter than ack.window"
                f" ({window.total_seconds():g}s): a bundled attempt would pass its own next one"
            )
            raise self.error("ack.bundle", message, raw)
        return span

    def stage(self, raw: dict[str, Any], prefix: str) -> StagePolicy:
        self.keys(raw, ("level", "lead"), prefix)
        if "level" not in raw or "lead" not in raw:
            raise self.error(prefix.rstrip("."), "需要 level 和 lead needs both level and lead")
        level = raw["level"]
        if level not in DIRECTORY_LEVELS:
            message = f"应为 must be one of {', '.join(DIRECTORY_LEVELS)}"
            raise self.error(prefix + "level", message, level)
        return StagePolicy(cast(Level, level), self.duration(raw, "lead", prefix, timedelta(0)))

    def hooks(self, doc: dict[str, Any]) -> HooksConfig | None:
        if "hooks" not in doc:
            return None
        raw = self.table(doc, "hooks", ("secret_file", "secret_env", "max_age"))
        try:
            file, env = secret_ref(raw, "hooks.")
        except ConfigError as exc:
            raise self.relocated(exc, "hooks") from None
        max_age = self.duration(raw, "max_age", "hooks.", timedelta(minutes=5))
        return HooksConfig(file, env, max_age, self.source)
