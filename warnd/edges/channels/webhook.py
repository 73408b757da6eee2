"""The generic ``webhook`` channel: contracts §5, a JSON POST to an operator's SMS/voice gateway.

2xx is accepted; 429, 5xx, timeouts and connection errors are ``TransientError`` (retried by
``delivery``); any other status is ``PermanentError``. With ``secret_file``/``secret_env`` the
request is signed like inbound hooks (contracts §6) so that the gateway can verify warnd.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Self

import aiohttp

from warnd.config.exposure import read_secret, secret_ref
from warnd.core.clock import Clock, wall_now
from warnd.core.duration import parse_duration
from warnd.core.errors import ConfigError, PermanentError, TransientError
from warnd.edges.channels import Outbound, register, unknown_options
from warnd.edges.channels.config import ChannelConfig
from warnd.edges.signature import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

_OPTIONS = ("url", "timeout", "secret_file", "secret_env")
DEFAULT_TIMEOUT = timedelta(seconds=10)
_PLAIN_HEADERS = {"Content-Type": "application/json; charset=utf-8"}
# json.dumps(..., ensure_ascii=False, separators=(",", ":")) without a new encoder per message
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _timeout(cfg: ChannelConfig) -> float:
    """Seconds; fractions allowed (``"0.5"`` or ``0.5``) besides durations like ``10s``."""
    raw = cfg.options.get("timeout")
    if raw is None:
        return DEFAULT_TIMEOUT.total_seconds()
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        seconds = float(raw)
    elif isinstance(raw, str) and re.fullmatch(r"\d+(\.\d+)?s?", raw.strip()):
        seconds = float(raw.strip().rstrip("s"))
    else:
        try:
            seconds = parse_duration(raw).total_seconds()
        except ValueError:
            seconds = -1.0
    if not 0 < seconds <= 600:
        raise ConfigError(
            "应为 0s 到 10m 之间的时长 must be a duration up to 10m (e.g. 10s)",
            source=cfg.source,
            field=cfg.key("timeout"),
            value=raw,
        )
    return seconds


@register("webhook")
class WebhookChannel:
    """POSTs each message as JSON; one aiohttp session per channel, opened on first use."""

    __slots__ = ("_clock", "_secret", "_session", "kinds", "name", "timeout", "url")

    def __init__(
        self,
        name: str,
        kinds: frozenset[str],
        *,
        url: str,
        timeout: float,
        secret: bytes | None,
        clock: Clock,
    ) -> None:
        self.name = name
        self.kinds = kinds
        self.url = url
        self.timeout = timeout
        self._secret = secret
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def check(cls, cfg: ChannelConfig) -> None:
        unknown_options(cfg, _OPTIONS)
        url = cfg.options.get("url")
        if not isinstance(url, str) or not re.match(r"^https?://[^/\s]+", url.strip()):
            raise ConfigError(
                "webhook 需要 http:// 或 https:// 地址 (url)",
                source=cfg.source,
                field=cfg.key("url"),
                value=url,
            )
        _timeout(cfg)
        if "secret_file" in cfg.options or "secret_env" in cfg.options:
            secret_ref(cfg.options, f"channels.{cfg.name}.")

    @classmethod
    def from_config(cls, cfg: ChannelConfig, *, clock: Clock) -> Self:
        secret = None
        if "secret_file" in cfg.options or "secret_env" in cfg.options:
            file, env = secret_ref(cfg.options, f"channels.{cfg.name}.")
            secret = read_secret(file, env, field=cfg.key("secret"), source=cfg.source)
        return cls(
            cfg.name,
            frozenset(cfg.kinds),
            url=str(cfg.options["url"]).strip(),
            timeout=_timeout(cfg),
            secret=secret,
            clock=clock,
        )

    def _headers(self, body: bytes) -> dict[str, str]:
        if self._secret is None:
            return _PLAIN_HEADERS  # aiohttp copies headers; this dict is never changed
        headers = dict(_PLAIN_HEADERS)
        timestamp = int(wall_now(self._clock).timestamp())
        headers[TIMESTAMP_HEADER] = str(timestamp)
        headers[SIGNATURE_HEADER] = sign(self._secret, timestamp, body)
        return headers

    async def send(self, msg: Outbound) -> None:
        body = _encode(msg.body()).encode()
        if self._session is None or self._session.closed:
            timeout = aiohttp.ClientTimeout(total=self.timeout)
            self._session = aiohttp.ClientSession(timeout=timeout)
        try:
            async with self._session.post(
                self.url, data=body, headers=self._headers(body), allow_redirects=False
            ) as resp:
                status = resp.status
                if 200 <= status < 300:
                    return
                detail = (await resp.text(errors="replace"))[:200]
        except TimeoutError:
            raise TransientError(f"{self.name}: gateway timed out after {self.timeout}s") from None
        except aiohttp.ClientError as exc:
            raise TransientError(f"{self.name}: {type(exc).__name__}: {exc}") from None
        message = f"{self.name}: gateway answered HTTP {status}: {' '.join(detail.split())}"
        if status == 429 or status >= 500:
            raise TransientError(message, status=status)
        raise PermanentError(message, status=status)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
