"""Duty-group robots (WeCom, DingTalk): informational posts that never acknowledge.

A group robot is used in two ways, neither of which touches the per-person ladder:

* **Digest** (``observe``): after each batch the sender hands the messages it just sent to every
  group channel; a channel keeps those of the purposes in ``notify`` whose person belongs to one
  of ``divisions`` (code prefixes; default all) and posts one summary per warning, purpose, rung
  and attempt — "正在叫应 12 人：…", "第2次呼叫（前次未应答）…", "预警解除…" — @-mentioning the
  persons by mobile number. A village stage of 300 persons is one post, not 300.
* **Route** (``send``): a person whose ``channels`` column names the channel (or ``im``) gets
  the message in the group with an @-mention, like any other route; kinds must be ``["im"]``, so
  the dispatcher never picks a robot for a call unless a person asked for it.

Robots throttle (WeCom and DingTalk: 20 messages a minute), so every post — digest or route —
takes a token from the channel's own ``rate`` bucket (default ``20/m``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import structlog

from warnd.core.chain import rungs
from warnd.core.clock import Clock
from warnd.core.errors import ConfigError, DeliveryError, PermanentError, TransientError
from warnd.edges.channels import Outbound, Seen, unknown_options
from warnd.edges.channels import cloud as c
from warnd.edges.channels.config import ChannelConfig, RateLimit
from warnd.edges.channels.ratelimit import Limiter

if TYPE_CHECKING:
    from warnd.core.directory import Directory

log = structlog.get_logger("warnd.channels.groups")

PURPOSES = ("call", "update", "lift")
GROUP_OPTIONS = ("notify", "divisions", "mention", "max_names", "endpoint", "timeout")
DEFAULT_RATE = RateLimit(20, timedelta(minutes=1))


def heading(purpose: str, rung: str | None, attempt: int | None) -> str:
    if purpose == "update":
        return "已发送预警更新"
    if purpose == "lift":
        return "已发送预警解除"
    found = rungs.find(rung or rungs.STAGE)
    label = found.tag if found is not None else ""
    if attempt is not None and attempt > 1:
        return f"第{attempt}次呼叫{label}（前次未应答）"
    return f"正在叫应{label}"


def digest(
    batch: Sequence[Seen], directory: Directory | None, *, max_names: int
) -> list[tuple[str, list[str]]]:
    """(text, mobiles to @) per warning, purpose, rung and attempt, in order of first appearance."""
    groups: dict[tuple[str, str, str | None, int | None], list[Seen]] = {}
    for msg in batch:
        attempt = msg.attempt if msg.purpose == "call" else None
        groups.setdefault((msg.warning, msg.purpose, msg.rung, attempt), []).append(msg)
    posts = []
    for (_warning, purpose, rung, attempt), msgs in groups.items():
        title = msgs[0].text.split("。", 1)[0]
        names, mobiles = [], []
        for msg in msgs[:max_names]:
            person = directory.contact(msg.contact) if directory is not None else None
            names.append(f"{person.division_name}{person.name}" if person else msg.contact)
            mobile = c.national(msg.to)
            if mobile is not None and mobile.startswith("1"):
                mobiles.append(mobile)
        more = f" 等共{len(msgs)}人" if len(msgs) > max_names else ""
        lines = [
            title,
            f"{heading(purpose, rung, attempt)}（{len(msgs)}人）：",
            "、".join(names) + more,
        ]
        if purpose == "call":
            lines.append("请被呼叫的责任人接听电话并按1确认；群内消息不算确认。")
        posts.append(("\n".join(lines), mobiles))
    return posts


def clip(text: str, max_bytes: int) -> str:
    """Cut ``text`` to at most ``max_bytes`` of UTF-8, never inside a character."""
    raw = text.encode()
    if len(raw) <= max_bytes:
        return text
    return raw[: max_bytes - 3].decode("utf-8", "ignore") + "…"


class GroupRobot:
    """The shared part of the WeCom and DingTalk robots; subclasses implement ``_post``."""

    def __init__(self, cfg: ChannelConfig, *, clock: Clock) -> None:
        self.name = cfg.name
        self.kinds = frozenset(cfg.kinds)
        self._clock = clock
        self.notify = frozenset(c.strings_option(cfg, "notify", PURPOSES, PURPOSES))
        self.divisions = c.strings_option(cfg, "divisions", ())
        self.mention = c.bool_option(cfg, "mention", True)
        self.max_names = c.int_option(cfg, "max_names", 30, 1, 200)
        self._limiter = Limiter(cfg.rate or DEFAULT_RATE, 1)
        self._http = c.Http(cfg.name, c.timeout_option(cfg))

    @classmethod
    def check_group(cls, cfg: ChannelConfig, extra: tuple[str, ...]) -> None:
        unknown_options(cfg, GROUP_OPTIONS + extra)
        if tuple(cfg.kinds) != ("im",):
            raise ConfigError(
                '群机器人只发通知，kinds 应为 ["im"] (group robots carry im only)',
                source=cfg.source,
                field=cfg.key("kinds"),
                value=list(cfg.kinds),
            )
        c.strings_option(cfg, "notify", PURPOSES, PURPOSES)
        for code in c.strings_option(cfg, "divisions", ()):
            if not code.isdigit() or len(code) not in (2, 4, 6, 9, 12):
                raise ConfigError(
                    "应为区划代码前缀 must be a division code (prefix)",
                    source=cfg.source,
                    field=cfg.key("divisions"),
                    value=code,
                )
        c.bool_option(cfg, "mention", True)
        c.int_option(cfg, "max_names", 30, 1, 200)
        c.timeout_option(cfg)

    def wants(self, msg: Seen, directory: Directory | None) -> bool:
        if msg.purpose not in self.notify:
            return False
        if not self.divisions:
            return True
        person = directory.contact(msg.contact) if directory is not None else None
        return person is not None and person.division_code.startswith(self.divisions)

    async def _post(self, text: str, mobiles: list[str]) -> None:
        raise NotImplementedError

    async def _limited_post(self, text: str, mobiles: list[str]) -> None:
        async with self._limiter.slot():
            await self._post(text, mobiles if self.mention else [])

    async def send(self, msg: Outbound) -> None:
        """A person's own route: the message in the group, @-mentioning that person."""
        mobile = c.national(msg.to)
        await self._limited_post(msg.text, [mobile] if mobile else [])

    async def observe(self, batch: Sequence[Seen], directory: Directory | None) -> int:
        """Post digests of a sent batch; returns how many posts went out. Never raises."""
        wanted = [m for m in batch if self.wants(m, directory)]
        sent = 0
        for text, mobiles in digest(wanted, directory, max_names=self.max_names):
            try:
                await self._limited_post(text, mobiles)
                sent += 1
            except DeliveryError as exc:
                log.warning("group_digest_failed", channel=self.name, error=str(exc))
            except Exception:  # a digest must never disturb the sender
                log.exception("group_digest_crashed", channel=self.name)
        return sent

    async def aclose(self) -> None:
        await self._http.aclose()

    def _check_answer(self, status: int, text: str, transient_codes: frozenset[int]) -> None:
        """Both robots answer ``{"errcode": 0, "errmsg": "ok"}``."""
        answer: dict[str, Any] = c.json_object(text)
        code = answer.get("errcode")
        if status == 200 and code == 0:
            return
        message = (
            f"{self.name}: HTTP {status} errcode {code}: {answer.get('errmsg') or c.short(text)}"
        )
        if status == 429 or status >= 500 or code in transient_codes:
            raise TransientError(message, status=status)
        raise PermanentError(message, status=status)
