"""What warnd exposes to the world, as configured: the listener and its limits, the monitor
listener (``/healthz``, ``/metrics``), the hooks' secret, and secrets in general.

Part of the config file (contracts §7); ``warnd.config.policy`` reads the file and re-exports these.
Why each limit exists and what it answers: docs/hardening.md.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

from warnd.core.errors import ConfigError

#: the hooks' HMAC secret: at least 32 bytes (a 3-byte secret falls to a guess in seconds)
MIN_SECRET_BYTES = 32
#: the content of ``config/hook-secret.example``, public in the repository: accepted only by
#: ``warnd serve --demo`` (the quick start), never by a real deployment
EXAMPLE_SECRET = b"EXAMPLE-ONLY-not-a-secret-replace-me-before-production"
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HOST_NAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_-]{1,63})*\.?"
)
_Table = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ListenConfig:
    """The HTTP listener; ``public_url`` is what confirmation links in messages point at.

    The limits answer connection floods: connections per listener and per client address, how
    long a connection may take to send a request's headers (and stay idle between requests),
    and its body. ``trusted_proxies``: peers whose ``X-Forwarded-For`` names the client (a
    reverse proxy in front of warnd); they are not held to the per-address cap.
    """

    host: str = "127.0.0.1"
    port: int = 8620
    public_url: str = "http://127.0.0.1:8620"
    max_connections: int = 1024
    max_connections_per_address: int = 64
    header_timeout: timedelta = timedelta(seconds=10)
    body_timeout: timedelta = timedelta(seconds=10)
    trusted_proxies: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class MonitorConfig:
    """Where ``/healthz`` and ``/metrics`` listen: apart from the hooks, loopback by default.

    The default port is the listener's plus one (8621); 0 when the listener's is 0 (tests).
    """

    host: str = "127.0.0.1"
    port: int = 8621


def read_secret(
    file: Path | None,
    env: str | None,
    *,
    field: str,
    source: str | None,
    min_bytes: int = 0,
) -> bytes:
    """Read a secret when it is needed (never at load); surrounding whitespace is dropped.

    Every secret read is registered with ``logs.conceal``: no log line carries it whole.
    """
    if file is not None:
        key, shown, problem = f"{field}_file", str(file), "密钥文件为空 secret file is empty"
        try:
            value = file.read_bytes().strip()
        except OSError as exc:
            value, problem = b"", f"无法读取密钥文件 cannot read secret file: {exc.strerror}"
    else:
        key, shown, problem = f"{field}_env", env or "", "环境变量未设置或为空 unset or empty"
        value = os.environ.get(env or "", "").strip().encode()
    if not value:
        raise ConfigError(problem, source=source, field=key, value=shown)
    from warnd.edges import logs  # lazy: most commands read no secret and never log

    logs.conceal(value)
    if len(value) < min_bytes:
        raise ConfigError(
            f"密钥太短 secret too short: {len(value)} bytes, at least {min_bytes}"
            " (e.g. `head -c 32 /dev/urandom | base64`)",
            source=source,
            field=key,
            value=shown,
        )
    return value


@dataclass(frozen=True, slots=True)
class HooksConfig:
    """Where the inbound-hook HMAC secret lives (contracts §6); the config never holds it."""

    secret_file: Path | None = None
    secret_env: str | None = None
    max_age: timedelta = timedelta(minutes=5)
    source: str | None = field(default=None, compare=False)

    def secret(self, *, demo: bool = False) -> bytes:
        """Read the shared secret now; ConfigError when it is missing, short or the example.

        The repository's example secret is public: only demo mode (``warnd serve --demo``,
        the quick start on loopback) accepts it.
        """
        file, env = self.secret_file, self.secret_env
        value = read_secret(
            file, env, field="hooks.secret", source=self.source, min_bytes=MIN_SECRET_BYTES
        )
        if value == EXAMPLE_SECRET and not demo:
            raise ConfigError(
                "这是仓库中公开的示例密钥，只能用于演示 (warnd serve --demo)"
                " the public example secret of the repository: demo mode only;"
                " generate your own (docs/deployment.md)",
                source=self.source,
                field="hooks.secret_file" if file is not None else "hooks.secret_env",
                value=str(file) if file is not None else env,
            )
        return value


def secret_ref(options: _Table, prefix: str) -> tuple[Path | None, str | None]:
    """Exactly one of ``secret_file`` / ``secret_env`` (hooks, and channels that sign)."""
    if ("secret_file" in options) == ("secret_env" in options):
        message = "须且只能有一个 needs exactly one of secret_file, secret_env"
        raise ConfigError(message, field=prefix.rstrip("."))
    key = "secret_file" if "secret_file" in options else "secret_env"
    value = options[key]
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(
            "应为非空字符串 must be a non-empty string", field=prefix + key, value=value
        )
    if key == "secret_env" and not _ENV_NAME.fullmatch(value):
        raise ConfigError("不是环境变量名 not a variable name", field=prefix + key, value=value)
    return (Path(value.strip()), None) if key == "secret_file" else (None, value)


# ---- reading the tables (``warnd.config.policy``'s loader does the generic checks) ---------


class Reader(Protocol):
    """The generic checks of ``warnd.config.policy``'s loader, each naming file, line and key."""

    def error(self, key: str, message: str, value: object = None) -> ConfigError: ...
    def table(
        self, doc: _Table, key: str, allowed: Sequence[str] | None = None
    ) -> dict[str, Any]: ...
    def string(self, table: _Table, key: str, prefix: str, default: str = "") -> str: ...
    def integer(self, table: _Table, key: str, prefix: str, default: int, hi: int) -> int: ...
    def duration(self, table: _Table, key: str, prefix: str, default: timedelta) -> timedelta: ...
    def http_url(self, table: _Table, key: str, prefix: str) -> str: ...


def read_listen(r: Reader, doc: _Table) -> ListenConfig:
    limits = ("max_connections", "max_connections_per_address")
    timeouts = ("header_timeout", "body_timeout")
    known = ("host", "port", "public_url", *limits, *timeouts, "trusted_proxies")
    raw = r.table(doc, "listen", known)
    host = r.string(raw, "host", "listen.", "127.0.0.1")
    port = r.integer(raw, "port", "listen.", 8620, 65535)
    public = f"http://{f'[{host}]' if ':' in host else host}:{port}"
    if "public_url" in raw:
        public = r.http_url(raw, "public_url", "listen.")
    d = ListenConfig()
    proxies = raw.get("trusted_proxies", [])
    if not isinstance(proxies, list):
        raise r.error("listen.trusted_proxies", "应为地址列表 must be a list", proxies)
    for i, value in enumerate(proxies):
        try:
            ipaddress.ip_address(value)
        except (ValueError, TypeError):
            key = f"listen.trusted_proxies[{i}]"
            raise r.error(key, "不是 IP 地址 not an IP address", value) from None
    return ListenConfig(
        host,
        port,
        public.rstrip("/"),
        max_connections=r.integer(raw, limits[0], "listen.", d.max_connections, 100_000),
        max_connections_per_address=r.integer(
            raw, limits[1], "listen.", d.max_connections_per_address, 100_000
        ),
        header_timeout=r.duration(raw, timeouts[0], "listen.", d.header_timeout),
        body_timeout=r.duration(raw, timeouts[1], "listen.", d.body_timeout),
        trusted_proxies=tuple(proxies),
    )


def read_monitor(r: Reader, doc: _Table, listen: ListenConfig) -> MonitorConfig:
    raw = r.table(doc, "monitor", ("host", "port"))
    host = r.string(raw, "host", "monitor.", "127.0.0.1")
    default = 0 if listen.port == 0 else listen.port + 1
    if "port" not in raw and default > 65535:
        raise r.error("monitor.port", "缺少必填项 missing (listen.port is 65535)")
    port = r.integer(raw, "port", "monitor.", default, 65535)
    if port and (host, port) == (listen.host, listen.port):
        raise r.error("monitor.port", "与 [listen] 相同 same as [listen]", port)
    return MonitorConfig(host, port)


def read_hosts(r: Reader, table: _Table, key: str, prefix: str) -> tuple[str, ...]:
    """A list of host names, IP addresses or networks (``10.1.2.0/24``)."""
    values = table.get(key, [])
    if not isinstance(values, list):
        raise r.error(prefix + key, "应为列表 must be a list of hosts", values)
    for i, value in enumerate(values):
        if not isinstance(value, str) or not value.strip():
            raise r.error(f"{prefix}{key}[{i}]", "应为主机名 must be a host", value)
        try:
            ipaddress.ip_network(value.strip(), strict=False)
            continue
        except ValueError:
            pass
        if not _HOST_NAME.fullmatch(value.strip()):
            message = "不是主机名、地址或网段 not a host name, address or network"
            raise r.error(f"{prefix}{key}[{i}]", message, value)
    return tuple(v.strip() for v in values)
