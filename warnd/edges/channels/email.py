"""The ``email`` channel: messages as e-mail over SMTP with STARTTLS (or implicit TLS).

Contacts carry phone numbers only (contracts §1), so addresses come from a small CSV
(``addresses_file``: ``contact_id,email``) and/or a fixed ``to`` list (e.g. the duty office's
mailbox, which then gets every message this channel carries). An e-mail never acknowledges: the
body points to the confirmation link and the SMS reply. Sending uses the standard library's
``smtplib`` in a worker thread; a server without STARTTLS is refused rather than used in clear.

4xx SMTP answers, timeouts and dropped connections are transient; 5xx answers, refused
recipients, failed logins and certificate errors are permanent (the next channel takes over).
"""

from __future__ import annotations

import asyncio
import csv
import io
import re
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Self

from warnd.core.clock import Clock
from warnd.core.errors import ConfigError, PermanentError, TransientError
from warnd.core.notice import DRILL_MARK
from warnd.edges.channels import Outbound, register, unknown_options
from warnd.edges.channels import cloud as c
from warnd.edges.channels.config import ChannelConfig

_OPTIONS = (
    "host",
    "port",
    "security",
    "username",
    "password_file",
    "password_env",
    "from",
    "to",
    "addresses_file",
    "ca_file",
    "timeout",
)
_ADDRESS = re.compile(r"^[^@\s<>,;]+@[^@\s<>,;]+\.[^@\s<>,;]+$")
SECURITY = ("starttls", "tls")
FOOTER = "（本邮件由预警叫应系统发送。邮件送达或已读不算确认，请按短信或电话提示确认。）"


def load_addresses(path: Path, *, source: str | None, field: str) -> dict[str, str]:
    """``contact_id,email`` rows (UTF-8, BOM accepted) → {contact_id: address}."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "不是 UTF-8 not UTF-8"
        message = f"无法读取 cannot read {path}: {reason}"
        raise ConfigError(message, source=source, field=field) from None
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or [h.strip().lower() for h in rows[0][:2]] != ["contact_id", "email"]:
        raise ConfigError(
            f"{path}:1: 表头应为 header must be contact_id,email", source=source, field=field
        )
    out: dict[str, str] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        cells = [*row, "", ""]
        cid, address = cells[0].strip(), cells[1].strip()
        if not cid or not _ADDRESS.match(address):
            message = f"{path}:{line}: 邮箱地址无效 bad address"
            raise ConfigError(message, source=source, field=field, value=address)
        out[cid] = address
    return out


def subject_of(msg: Outbound) -> str:
    """The first sentence of the text (it already starts with 【演练】 on drills)."""
    first = msg.text.split("。", 1)[0].strip() or "预警叫应"
    if msg.drill and not first.startswith(DRILL_MARK):
        first = DRILL_MARK + first
    return first[:120]


@register("email")
class EmailChannel:
    def __init__(
        self,
        cfg: ChannelConfig,
        *,
        password: str | None,
        addresses: dict[str, str],
        clock: Clock,
    ) -> None:
        self.name = cfg.name
        self.kinds = frozenset(cfg.kinds)
        self._clock = clock
        self.host = c.text_option(cfg, "host")
        self.security = c.text_option(cfg, "security", "starttls")
        self.port = c.int_option(cfg, "port", 465 if self.security == "tls" else 587, 1, 65535)
        self.username = c.maybe_text(cfg, "username")
        self._password = password
        self.sender = c.text_option(cfg, "from")
        self.fixed = c.strings_option(cfg, "to", ())
        self.addresses = addresses
        ca = c.maybe_text(cfg, "ca_file")
        self.ca_file = Path(ca) if ca else None
        self.timeout = c.timeout_option(cfg)

    @classmethod
    def check(cls, cfg: ChannelConfig) -> None:
        unknown_options(cfg, _OPTIONS)
        if tuple(cfg.kinds) != ("email",):
            raise ConfigError(
                'email 渠道 kinds 应为 ["email"]',
                source=cfg.source,
                field=cfg.key("kinds"),
                value=list(cfg.kinds),
            )
        c.text_option(cfg, "host")
        security = c.text_option(cfg, "security", "starttls")
        if security not in SECURITY:
            raise ConfigError(
                "应为 starttls 或 tls（不允许明文 plain SMTP is refused）",
                source=cfg.source,
                field=cfg.key("security"),
                value=security,
            )
        c.int_option(cfg, "port", 587, 1, 65535)
        for key in ("from", *(() if "to" in cfg.options else ("addresses_file",))):
            value = c.text_option(cfg, key)
            if key == "from" and not _ADDRESS.match(value.split("<")[-1].rstrip(">").strip()):
                raise ConfigError(
                    "邮箱地址无效", source=cfg.source, field=cfg.key(key), value=value
                )
        for address in c.strings_option(cfg, "to", ()):
            if not _ADDRESS.match(address):
                raise ConfigError(
                    "邮箱地址无效", source=cfg.source, field=cfg.key("to"), value=address
                )
        if c.maybe_text(cfg, "username") is not None:
            c.secret_option(cfg, "password")
        c.maybe_text(cfg, "ca_file")
        c.timeout_option(cfg)

    @classmethod
    def from_config(cls, cfg: ChannelConfig, *, clock: Clock) -> Self:
        password = None
        if "username" in cfg.options:
            password = c.read_secret_option(cfg, "password")
        addresses: dict[str, str] = {}
        if "addresses_file" in cfg.options:
            path = Path(c.text_option(cfg, "addresses_file"))
            addresses = load_addresses(path, source=cfg.source, field=cfg.key("addresses_file"))
        return cls(cfg, password=password, addresses=addresses, clock=clock)

    def recipients(self, msg: Outbound) -> list[str]:
        own = self.addresses.get(msg.contact)
        return ([own] if own else []) + [a for a in self.fixed if a != own]

    def compose(self, msg: Outbound, recipients: list[str]) -> EmailMessage:
        mail = EmailMessage()
        mail["Subject"] = subject_of(msg)
        mail["From"] = self.sender
        mail["To"] = ", ".join(recipients)
        mail["Date"] = format_datetime(self._clock.now())
        mail["Message-ID"] = make_msgid(idstring=msg.id, domain="warnd")
        mail["X-Warnd-Message-Id"] = msg.id
        mail["X-Warnd-Warning"] = msg.warning
        body = msg.text
        if msg.link and msg.link not in body:
            body += f"\n\n确认链接：{msg.link}"
        mail.set_content(f"{body}\n\n{FOOTER}\n")
        return mail

    def _deliver(self, mail: EmailMessage, recipients: list[str]) -> None:
        """Blocking: one SMTP session per message (run in a worker thread)."""
        context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        smtp: smtplib.SMTP
        if self.security == "tls":
            smtp = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=context)
        else:
            smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        try:
            smtp.ehlo()
            if self.security == "starttls":
                if not smtp.has_extn("starttls"):
                    raise PermanentError(
                        f"{self.name}: server offers no STARTTLS; not sending in clear"
                    )
                smtp.starttls(context=context)
                smtp.ehlo()
            if self.username is not None and self._password is not None:
                smtp.login(self.username, self._password)
            smtp.send_message(mail, from_addr=_bare(self.sender), to_addrs=recipients)
        finally:
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                smtp.close()

    async def send(self, msg: Outbound) -> None:
        recipients = self.recipients(msg)
        if not recipients:
            raise PermanentError(f"{self.name}: no e-mail address for {msg.contact}")
        mail = self.compose(msg, recipients)
        try:
            await asyncio.to_thread(self._deliver, mail, recipients)
        except (PermanentError, TransientError):
            raise
        except smtplib.SMTPRecipientsRefused as exc:
            codes = sorted({code for code, _ in exc.recipients.values()})
            text = f"{self.name}: recipients refused (SMTP {codes}): {sorted(exc.recipients)}"
            if all(400 <= code < 500 for code in codes):  # greylisting, mailbox busy
                raise TransientError(text) from None
            raise PermanentError(text) from None
        except smtplib.SMTPResponseException as exc:
            text = f"{self.name}: SMTP {exc.smtp_code} {_decode(exc.smtp_error)}"
            if 400 <= exc.smtp_code < 500:
                raise TransientError(text) from None
            raise PermanentError(text) from None
        except (smtplib.SMTPNotSupportedError, ssl.SSLCertVerificationError) as exc:
            raise PermanentError(f"{self.name}: {type(exc).__name__}: {exc}") from None
        except (smtplib.SMTPException, OSError) as exc:  # disconnects, timeouts, refused
            raise TransientError(f"{self.name}: {type(exc).__name__}: {exc}") from None

    async def aclose(self) -> None:
        """Nothing to release: one SMTP session per message."""


def _bare(address: str) -> str:
    """``应急局 <duty@example.cn>`` → ``duty@example.cn``."""
    return address.split("<")[-1].rstrip(">").strip()


def _decode(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
