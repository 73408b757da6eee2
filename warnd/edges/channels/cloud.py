"""What the provider channels share: option checks, secrets, one HTTP client, template values,
error classes and the channel's common half (``CloudChannel``: endpoints, callbacks, closing).

Cloud providers only send texts from templates registered (and reviewed) in their console, so a
channel maps warnd's message onto the template's variables: ``sms_params = {content = "text"}``
(Aliyun, named variables) or ``sms_params = ["text"]`` (Tencent, positional). The values a
variable can take are the names in ``FIELDS``. Secrets come only from ``*_file`` / ``*_env``
options (systemd credentials or the environment), never from the config file itself.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import aiohttp

from warnd.config.exposure import read_secret
from warnd.core.clock import Clock
from warnd.core.errors import ConfigError, PermanentError, TransientError
from warnd.core.notice import DRILL_MARK
from warnd.edges.channels import Callbacks, Outbound
from warnd.edges.channels.config import ChannelConfig

DEFAULT_TIMEOUT = 10.0
PURPOSE_ZH = {"call": "叫应", "update": "更新", "lift": "解除"}
#: what a template variable can be filled with
FIELDS = (
    "text",  # the full text (SMS); for voice the spoken form, see ``spoken``
    "spoken",  # the text without links and SMS reply instructions, ending in 请按1确认
    "reply_code",
    "link",
    "warning",
    "contact",
    "id",
    "drill_mark",  # 【演练】 on drills, else empty
    "purpose",  # 叫应 / 更新 / 解除
)
_LINK_CLAUSE = re.compile(r"，或打开 \S+ 确认")
_REPLY_CLAUSE = re.compile(r"请回复1或\d+确认收到")
_URL = re.compile(r"https?://\S+")


def spoken(text: str) -> str:
    """The text read out on a call: no URL, and the SMS reply instruction becomes 请按1确认."""
    out = _LINK_CLAUSE.sub("", text)
    out = _REPLY_CLAUSE.sub("收到请按1确认", out)
    return " ".join(_URL.sub("", out).split())


def field_value(msg: Outbound, name: str, *, voice: bool) -> str:
    """The value of one template variable for ``msg`` (``name`` is one of ``FIELDS``)."""
    if name == "text":
        return spoken(msg.text) if voice else msg.text
    if name == "spoken":
        return spoken(msg.text)
    if name == "drill_mark":
        return DRILL_MARK if msg.drill else ""
    if name == "purpose":
        return PURPOSE_ZH.get(msg.purpose, msg.purpose)
    value = {"reply_code": msg.reply_code, "link": msg.link, "warning": msg.warning}.get(name)
    if name in ("contact", "id"):
        value = getattr(msg, name)
    return value or ""


def national(e164: str) -> str | None:
    """A mainland number without ``+86`` (what Aliyun and the robots' @-lists want), else None."""
    return e164[3:] if e164.startswith("+86") and e164[3:].isdigit() else None


# ---- option checks (ConfigError naming channels.NAME.option) ------------------------------


def _error(cfg: ChannelConfig, key: str, message: str, value: object = None) -> ConfigError:
    return ConfigError(message, source=cfg.source, field=cfg.key(key), value=value)


def voice_sms_kinds(cfg: ChannelConfig, vendor: str) -> None:
    """The cloud voice/SMS providers carry voice and sms, nothing else."""
    bad = [k for k in cfg.kinds if k not in ("voice", "sms")]
    if bad:
        raise _error(cfg, "kinds", f"{vendor} 只能承载 voice 和 sms (kinds)", bad[0])


def text_option(cfg: ChannelConfig, key: str, default: str | None = None) -> str:
    """A required (or defaulted) non-empty string."""
    value = cfg.options.get(key, default)
    if value is None:
        raise _error(cfg, key, "缺少必填项 missing (required)")
    if not isinstance(value, str) or not value.strip():
        raise _error(cfg, key, "应为非空字符串 must be a non-empty string", value)
    return value.strip()


def maybe_text(cfg: ChannelConfig, key: str) -> str | None:
    return text_option(cfg, key) if key in cfg.options else None


def int_option(cfg: ChannelConfig, key: str, default: int, lo: int, hi: int) -> int:
    value = cfg.options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise _error(cfg, key, f"应为整数 must be a whole number {lo}..{hi}", value)
    return value


def bool_option(cfg: ChannelConfig, key: str, default: bool) -> bool:
    value = cfg.options.get(key, default)
    if not isinstance(value, bool):
        raise _error(cfg, key, "应为 true 或 false", value)
    return value


def url_option(cfg: ChannelConfig, key: str, default: str) -> str:
    """An http(s) base URL without a trailing slash (tests point it at a loopback fake)."""
    value = text_option(cfg, key, default)
    if not re.match(r"^https?://[^/\s]+(/\S*)?$", value):
        raise _error(cfg, key, "应为 http(s) 地址 must be an http(s):// URL", value)
    return value.rstrip("/")


def timeout_option(cfg: ChannelConfig) -> float:
    """Seconds (a number or ``"10s"``), 0 < t <= 120."""
    raw = cfg.options.get("timeout", DEFAULT_TIMEOUT)
    seconds = -1.0
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        seconds = float(raw)
    elif isinstance(raw, str) and re.fullmatch(r"\d+(\.\d+)?s?", raw.strip()):
        seconds = float(raw.strip().rstrip("s"))
    if not 0 < seconds <= 120:
        raise _error(cfg, "timeout", "应为 0 到 120 秒 must be 0..120 seconds (e.g. 10s)", raw)
    return seconds


def strings_option(
    cfg: ChannelConfig, key: str, default: tuple[str, ...], allowed: tuple[str, ...] | None = None
) -> tuple[str, ...]:
    value = cfg.options.get(key, list(default))
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise _error(cfg, key, "应为字符串列表 must be a list of strings", value)
    if allowed is not None:
        for v in value:
            if v not in allowed:
                raise _error(cfg, key, f"应为 must be one of {', '.join(allowed)}", v)
    return tuple(v.strip() for v in value)


def params_map(cfg: ChannelConfig, key: str, default: Mapping[str, str]) -> dict[str, str]:
    """Named template variables → FIELDS (Aliyun: ``{content = "text", code = "reply_code"}``)."""
    value = cfg.options.get(key, dict(default))
    if not isinstance(value, dict) or not value:
        raise _error(cfg, key, '应为表 must be a table like {content = "text"}', value)
    for name, source in value.items():
        if source not in FIELDS:
            message = f"应为 must be one of {', '.join(FIELDS)}"
            raise ConfigError(
                message, source=cfg.source, field=f"{cfg.key(key)}.{name}", value=source
            )
    return {str(k): str(v) for k, v in value.items()}


def params_list(cfg: ChannelConfig, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """Positional template variables → FIELDS (Tencent: ``["text"]``)."""
    return strings_option(cfg, key, default, FIELDS)


def secret_option(cfg: ChannelConfig, stem: str, *, required: bool = True) -> bool:
    """Check ``<stem>_file`` / ``<stem>_env`` (exactly one); False when absent and optional."""
    has_file, has_env = f"{stem}_file" in cfg.options, f"{stem}_env" in cfg.options
    if has_file and has_env:
        raise _error(cfg, stem, f"须且只能有一个 needs exactly one of {stem}_file, {stem}_env")
    if not (has_file or has_env):
        if required:
            message = f"缺少 missing {stem}_file 或 {stem}_env（密钥不能写在配置文件里）"
            raise _error(cfg, stem, message)
        return False
    key = f"{stem}_file" if has_file else f"{stem}_env"
    value = cfg.options[key]
    if not isinstance(value, str) or not value.strip():
        raise _error(cfg, key, "应为非空字符串 must be a non-empty string", value)
    if has_env and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
        raise _error(cfg, key, "不是环境变量名 not a variable name", value)
    return True


def read_secret_option(cfg: ChannelConfig, stem: str) -> str:
    """Read ``<stem>_file`` / ``<stem>_env`` now (at daemon start); ConfigError when empty."""
    file = cfg.options.get(f"{stem}_file")
    env = cfg.options.get(f"{stem}_env")
    raw = read_secret(
        Path(str(file).strip()) if file is not None else None,
        str(env) if env is not None else None,
        field=cfg.key(stem),
        source=cfg.source,
    )
    return raw.decode("utf-8")


def id_option(cfg: ChannelConfig, stem: str) -> None:
    """An account id that is not secret: ``<stem>`` literally, or ``<stem>_env`` / ``_file``."""
    if stem in cfg.options:
        text_option(cfg, stem)
        if f"{stem}_env" in cfg.options or f"{stem}_file" in cfg.options:
            raise _error(cfg, stem, f"{stem} 与 {stem}_env/{stem}_file 只能写一个")
        return
    secret_option(cfg, stem)


def read_id_option(cfg: ChannelConfig, stem: str) -> str:
    if stem in cfg.options:
        return text_option(cfg, stem)
    return read_secret_option(cfg, stem)


def callback_token(cfg: ChannelConfig) -> str | None:
    """The secret path segment of this channel's callback URLs (None: no callbacks)."""
    if "callback_token_file" not in cfg.options and "callback_token_env" not in cfg.options:
        return None
    token = read_secret_option(cfg, "callback_token")
    if not re.fullmatch(r"[A-Za-z0-9._~-]{16,128}", token):
        raise _error(
            cfg,
            "callback_token",
            "回调令牌应为 16–128 个字母数字 must be 16-128 URL-safe characters",
        )
    return token


# ---- HTTP -----------------------------------------------------------------------------------


class Http:
    """One aiohttp session per channel, opened on first use; network trouble is transient."""

    def __init__(self, name: str, timeout: float) -> None:
        self.name = name
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def request(
        self, method: str, url: str, *, data: bytes | None, headers: Mapping[str, str]
    ) -> tuple[int, str]:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        try:
            async with self._session.request(
                method, url, data=data, headers=dict(headers), allow_redirects=False
            ) as resp:
                return resp.status, await resp.text(errors="replace")
        except TimeoutError:
            raise TransientError(f"{self.name}: timed out after {self.timeout}s") from None
        except aiohttp.ClientError as exc:
            raise TransientError(f"{self.name}: {type(exc).__name__}: {exc}") from None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def short(text: str, limit: int = 200) -> str:
    """A provider's answer, on one line, for an error message."""
    return " ".join(text.split())[:limit]


def json_object(text: str) -> dict[str, Any]:
    """A provider's JSON answer, or an empty dict when it is not JSON."""
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


# ---- what the provider channels (aliyun, tencent) have in common ---------------------------


def classify(
    status: int, code: str, message: str, *, transient: bool, permanent: frozenset[str]
) -> TransientError | PermanentError:
    """An error answer as the exception ``deliver`` acts on: transient when the provider's code
    says so (``transient``), or for a 5xx whose code is not known to be permanent."""
    text = f"HTTP {status} {code}: {message}".strip()
    if transient or (code not in permanent and status >= 500):
        return TransientError(text, status=status)
    return PermanentError(text, status=status)


def named(name: str, action: str, exc: TransientError | PermanentError) -> Exception:
    """The same error, its message prefixed with the channel and the provider's action."""
    return type(exc)(f"{name}: {action}: {exc}", status=exc.status)


def check_common(cfg: ChannelConfig, defaults: tuple[str, str, str]) -> None:
    """The options every provider channel has: kinds, callback token, region, endpoints,
    timeout. ``defaults``: (region, SMS endpoint, voice endpoint)."""
    region, sms, voice = defaults
    voice_sms_kinds(cfg, cfg.type)
    secret_option(cfg, "callback_token", required=False)
    text_option(cfg, "region", region)
    for key, default in (("sms_endpoint", sms), ("voice_endpoint", voice)):
        url_option(cfg, key, default)
    if "endpoint" in cfg.options:
        url_option(cfg, "endpoint", "")
    timeout_option(cfg)


class CloudChannel:
    """The half of a provider channel that is not its API: name, kinds, region, endpoints
    (``endpoint`` overrides both), one HTTP client, its callbacks (warnd.edges.vendors serves them).
    A subclass sets ``provider`` and ``defaults`` (region, SMS endpoint, voice endpoint)."""

    provider: ClassVar[str]
    defaults: ClassVar[tuple[str, str, str]]

    def __init__(self, cfg: ChannelConfig, *, token: str | None, clock: Clock) -> None:
        region, sms, voice = self.defaults
        self.name = cfg.name
        self.kinds = frozenset(cfg.kinds)
        self._clock = clock
        self._token = token
        self.region = text_option(cfg, "region", region)
        base = url_option(cfg, "endpoint", "") if "endpoint" in cfg.options else None
        self.sms_endpoint = base or url_option(cfg, "sms_endpoint", sms)
        self.voice_endpoint = base or url_option(cfg, "voice_endpoint", voice)
        self._http = Http(cfg.name, timeout_option(cfg))

    def callbacks(self) -> Callbacks | None:
        """Where the provider calls back (None: no ``callback_token``, no callbacks)."""
        if self._token is None:
            return None
        return Callbacks(self.provider, self.name, self._token)

    async def aclose(self) -> None:
        await self._http.aclose()
