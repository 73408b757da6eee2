"""The ``wecom`` channel: a WeCom (企业微信) group robot — informational, never acknowledges.

``POST <endpoint>/cgi-bin/webhook/send?key=<key>`` with ``{"msgtype": "text", "text":
{"content", "mentioned_mobile_list"}}``; the answer is ``{"errcode": 0, "errmsg": "ok"}``.
The key (the ``key=`` part of the robot's webhook URL) is a secret: ``key_file`` / ``key_env``.
How digests and routes work: warnd.edges.channels.groups.
"""

from __future__ import annotations

import json
from typing import Self
from urllib.parse import quote

from warnd.core.clock import Clock
from warnd.edges.channels import cloud as c
from warnd.edges.channels import register
from warnd.edges.channels.config import ChannelConfig
from warnd.edges.channels.groups import GroupRobot, clip

ENDPOINT = "https://qyapi.weixin.qq.com"
MAX_TEXT_BYTES = 2048  # text messages: at most 2048 bytes of UTF-8
#: -1 system busy, 45009 "api freq out of limit" (20 messages a minute per robot)
TRANSIENT_CODES = frozenset({-1, 45009})


@register("wecom")
class WecomChannel(GroupRobot):
    def __init__(self, cfg: ChannelConfig, *, key: str, clock: Clock) -> None:
        super().__init__(cfg, clock=clock)
        self.endpoint = c.url_option(cfg, "endpoint", ENDPOINT)
        self._key = key

    @classmethod
    def check(cls, cfg: ChannelConfig) -> None:
        cls.check_group(cfg, ("key_file", "key_env"))
        c.url_option(cfg, "endpoint", ENDPOINT)
        c.secret_option(cfg, "key")

    @classmethod
    def from_config(cls, cfg: ChannelConfig, *, clock: Clock) -> Self:
        return cls(cfg, key=c.read_secret_option(cfg, "key"), clock=clock)

    @staticmethod
    def body(text: str, mobiles: list[str]) -> dict[str, object]:
        content: dict[str, object] = {"content": clip(text, MAX_TEXT_BYTES)}
        if mobiles:
            content["mentioned_mobile_list"] = mobiles
        return {"msgtype": "text", "text": content}

    async def _post(self, text: str, mobiles: list[str]) -> None:
        url = f"{self.endpoint}/cgi-bin/webhook/send?key={quote(self._key, safe='')}"
        payload = json.dumps(self.body(text, mobiles), ensure_ascii=False).encode()
        status, answer = await self._http.request(
            "POST", url, data=payload, headers={"Content-Type": "application/json"}
        )
        self._check_answer(status, answer, TRANSIENT_CODES)
