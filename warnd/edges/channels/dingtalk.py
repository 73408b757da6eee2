"""The ``dingtalk`` channel: a DingTalk (钉钉) custom group robot — informational only.

``POST <endpoint>/robot/send?access_token=<token>[&timestamp=<ms>&sign=<sign>]`` with
``{"msgtype": "text", "text": {"content"}, "at": {"atMobiles", "isAtAll": false}}``. With the
robot's 加签 security (``secret_file`` / ``secret_env``) every request is signed as DingTalk
documents: ``sign = urlencode(base64(HMAC-SHA256(secret, "<timestamp>\\n<secret>")))`` with the
timestamp in milliseconds. A robot secured by keywords instead gets ``keyword`` put in front of
every text that lacks it. The @-mentioned numbers are also written into the text, which is how
DingTalk shows a mention. How digests and routes work: warnd.edges.channels.groups.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Self
from urllib.parse import quote, quote_plus

from warnd.core.clock import Clock
from warnd.edges.channels import cloud as c
from warnd.edges.channels import register
from warnd.edges.channels.config import ChannelConfig
from warnd.edges.channels.groups import GroupRobot, clip

ENDPOINT = "https://oapi.dingtalk.com"
MAX_TEXT_BYTES = 18000  # text messages are limited to 20000 bytes
#: -1 system busy, 130101 "send too fast, exceed 20 times per minute"
TRANSIENT_CODES = frozenset({-1, 130101})


def sign(secret: str, timestamp_ms: int) -> str:
    """The ``sign`` query value of a signed robot webhook (already URL-encoded)."""
    to_sign = f"{timestamp_ms}\n{secret}".encode()
    digest = hmac.new(secret.encode(), to_sign, hashlib.sha256).digest()
    return quote_plus(base64.b64encode(digest).decode())


@register("dingtalk")
class DingtalkChannel(GroupRobot):
    def __init__(self, cfg: ChannelConfig, *, token: str, secret: str | None, clock: Clock) -> None:
        super().__init__(cfg, clock=clock)
        self.endpoint = c.url_option(cfg, "endpoint", ENDPOINT)
        self.keyword = c.maybe_text(cfg, "keyword")
        self._token = token
        self._secret = secret

    @classmethod
    def check(cls, cfg: ChannelConfig) -> None:
        extra = ("access_token_file", "access_token_env", "secret_file", "secret_env", "keyword")
        cls.check_group(cfg, extra)
        c.url_option(cfg, "endpoint", ENDPOINT)
        c.secret_option(cfg, "access_token")
        c.secret_option(cfg, "secret", required=False)
        c.maybe_text(cfg, "keyword")

    @classmethod
    def from_config(cls, cfg: ChannelConfig, *, clock: Clock) -> Self:
        signed = "secret_file" in cfg.options or "secret_env" in cfg.options
        return cls(
            cfg,
            token=c.read_secret_option(cfg, "access_token"),
            secret=c.read_secret_option(cfg, "secret") if signed else None,
            clock=clock,
        )

    def url(self) -> str:
        url = f"{self.endpoint}/robot/send?access_token={quote(self._token, safe='')}"
        if self._secret is not None:
            ts = int(self._clock.now().timestamp() * 1000)
            url += f"&timestamp={ts}&sign={sign(self._secret, ts)}"
        return url

    def body(self, text: str, mobiles: list[str]) -> dict[str, object]:
        if self.keyword and self.keyword not in text:
            text = f"{self.keyword} {text}"
        if mobiles:
            text += "\n" + " ".join(f"@{m}" for m in mobiles)
        return {
            "msgtype": "text",
            "text": {"content": clip(text, MAX_TEXT_BYTES)},
            "at": {"atMobiles": mobiles, "isAtAll": False},
        }

    async def _post(self, text: str, mobiles: list[str]) -> None:
        payload = json.dumps(self.body(text, mobiles), ensure_ascii=False).encode()
        status, answer = await self._http.request(
            "POST", self.url(), data=payload, headers={"Content-Type": "application/json"}
        )
        self._check_answer(status, answer, TRANSIENT_CODES)
