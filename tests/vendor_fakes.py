"""Loopback fakes of the providers warnd talks to, each checking requests as documented.

* ``AliyunFake`` — the RPC endpoint of Dysmsapi/Dyvmsapi (``POST /``, form body): common
  parameters, action parameters, and the HMAC-SHA1 signature recomputed here from the
  documented algorithm with the known secret. A request that fails a check is answered as
  Aliyun would (``SignatureDoesNotMatch``, ``MissingParameter``) and kept in ``rejected``.
* ``TencentFake`` — API 3.0 (``POST /``, JSON): headers, the TC3-HMAC-SHA256 Authorization
  recomputed from the received headers and raw payload, the action's body.
* ``WecomFake`` / ``DingtalkFake`` — the group robots' webhooks (DingTalk's ``sign`` checked).

The signature code here is written from the providers' documentation on purpose and does not
import warnd's, so that a test compares two independent implementations. ``push`` posts a
provider callback (a receipt or key press) to warnd, as the provider would.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

import aiohttp
from aiohttp import web


@dataclass
class Call:
    """One request a fake accepted (or rejected), as received."""

    path: str
    query: dict[str, str]
    headers: dict[str, str]
    raw: bytes
    params: dict[str, Any]  # form parameters (Aliyun) or JSON body (others)
    error: str | None = None

    @property
    def action(self) -> str | None:
        return self.params.get("Action") or self.headers.get("X-TC-Action")


class _Fake:
    """An aiohttp server on 127.0.0.1, any free port."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.rejected: list[Call] = []
        self.script: list[tuple[int, dict[str, Any]]] = []  # next answers, instead of success
        self._runner: web.AppRunner | None = None
        self.port = 0

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    async def start(self) -> str:
        app = web.Application()
        self.routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self.url

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def answer_next(self, status: int, body: dict[str, Any]) -> None:
        self.script.append((status, body))

    def _scripted(self) -> web.Response | None:
        if not self.script:
            return None
        status, body = self.script.pop(0)
        return web.json_response(body, status=status)

    async def push(self, url: str, payload: Any) -> tuple[int, Any]:
        """POST a callback to warnd as the provider does (JSON)."""
        async with (
            aiohttp.ClientSession() as http,
            http.post(url, data=json.dumps(payload, ensure_ascii=False).encode()) as resp,
        ):
            text = await resp.text()
            try:
                return resp.status, json.loads(text)
            except ValueError:
                return resp.status, text


# ---- Aliyun ---------------------------------------------------------------------------------


def aliyun_encode(value: str) -> str:
    """The documented percentEncode: URL-encode, then + → %20, * → %2A, %7E → ~."""
    return quote(value, safe="~").replace("+", "%20").replace("*", "%2A").replace("%7E", "~")


def aliyun_signature(secret: str, method: str, params: dict[str, str]) -> str:
    pairs = sorted((k, v) for k, v in params.items() if k != "Signature")
    canonical = "&".join(f"{aliyun_encode(k)}={aliyun_encode(v)}" for k, v in pairs)
    to_sign = f"{method}&{aliyun_encode('/')}&{aliyun_encode(canonical)}"
    mac = hmac.new(f"{secret}&".encode(), to_sign.encode(), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode()


ALIYUN_REQUIRED = {
    "SendSms": ("PhoneNumbers", "SignName", "TemplateCode"),
    "SingleCallByTts": ("CalledNumber", "TtsCode"),
    "IvrCall": (
        "CalledShowNumber",
        "CalledNumber",
        "StartCode",
        "MenuKeyMap.1.Key",
        "MenuKeyMap.1.Code",
    ),
}
ALIYUN_COMMON = (
    "AccessKeyId",
    "Action",
    "Format",
    "RegionId",
    "SignatureMethod",
    "SignatureNonce",
    "SignatureVersion",
    "Timestamp",
    "Version",
    "Signature",
)


class AliyunFake(_Fake):
    def __init__(self, access_key_id: str, secret: str) -> None:
        super().__init__()
        self.access_key_id = access_key_id
        self.secret = secret
        self.nonces: set[str] = set()
        self._ids = itertools.count(1)

    def routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/{tail:.*}", self.handle)

    def _error(self, call: Call, status: int, code: str, message: str) -> web.Response:
        call.error = code
        self.rejected.append(call)
        return web.json_response(
            {"Code": code, "Message": message, "RequestId": "fake"}, status=status
        )

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        text = raw.decode()
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text))
        params = dict(pairs)
        call = Call(request.path, dict(request.query), dict(request.headers), raw, params)
        if request.method != "POST" or request.path != "/":
            return self._error(call, 404, "InvalidAction.NotFound", "POST / only")
        if not request.headers.get("Content-Type", "").startswith(
            "application/x-www-form-urlencoded"
        ):
            return self._error(call, 400, "InvalidParameter", "form body expected")
        if len(pairs) != len(params):
            return self._error(call, 400, "InvalidParameter", "repeated parameter")
        missing = [k for k in ALIYUN_COMMON if not params.get(k)]
        if missing:
            return self._error(call, 400, "MissingParameter", f"missing {missing[0]}")
        fixed = {
            "Format": "JSON",
            "SignatureMethod": "HMAC-SHA1",
            "SignatureVersion": "1.0",
            "Version": "2017-05-25",
        }
        for key, want in fixed.items():
            if params[key] != want:
                return self._error(call, 400, "InvalidParameter", f"{key}={params[key]}")
        if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", params["Timestamp"]):
            return self._error(call, 400, "InvalidTimeStamp.Format", params["Timestamp"])
        if params["AccessKeyId"] != self.access_key_id:
            return self._error(call, 404, "InvalidAccessKeyId.NotFound", "unknown key")
        if params["Signature"] != aliyun_signature(self.secret, "POST", params):
            return self._error(call, 400, "SignatureDoesNotMatch", "signature mismatch")
        if params["SignatureNonce"] in self.nonces:
            return self._error(call, 400, "SignatureNonceUsed", "nonce used")
        self.nonces.add(params["SignatureNonce"])
        action = params["Action"]
        if action not in ALIYUN_REQUIRED:
            return self._error(call, 400, "InvalidAction.NotFound", action)
        for key in ALIYUN_REQUIRED[action]:
            if not params.get(key):
                return self._error(call, 400, "MissingParameter", f"missing {key}")
        for key in ("TemplateParam", "TtsParam", "StartTtsParams"):
            if key in params:
                json.loads(params[key])  # must be JSON
        self.calls.append(call)
        scripted = self._scripted()
        if scripted is not None:
            return scripted
        n = next(self._ids)
        answer = {"Code": "OK", "Message": "OK", "RequestId": f"req-{n}"}
        if action == "SendSms":
            answer["BizId"] = f"biz-{n}"
        else:
            answer["CallId"] = f"1000{n}^10{n}"
        return web.json_response(answer)

    def voice_report(self, call: Call, *, dtmf: str = "", status: str = "200000") -> dict[str, Any]:
        """A VoiceReport item (HTTP 批量推送 format) for a call this fake accepted."""
        return {
            "status_code": status,
            "callee": call.params["CalledNumber"],
            "caller": call.params.get("CalledShowNumber", ""),
            "duration": "12" if status in ("200000", "200001") else "0",
            "voice_type": "voice",
            "originate_time": "2025-06-14 08:00:01",
            "end_time": "2025-06-14 08:00:20",
            "call_id": f"call-{call.params['SignatureNonce'][:8]}",
            "status_msg": "执行完成",
            "out_id": call.params.get("OutId", ""),
            "dtmf": dtmf,
        }


# ---- Tencent --------------------------------------------------------------------------------

_AUTH = re.compile(
    r"^TC3-HMAC-SHA256 Credential=(?P<id>[^/]+)/(?P<date>\d{4}-\d\d-\d\d)/(?P<service>[a-z]+)"
    r"/tc3_request, SignedHeaders=(?P<signed>[a-z0-9;-]+), Signature=(?P<sig>[0-9a-f]{64})$"
)
TENCENT_ACTIONS = {"SendSms": ("sms", "2021-01-11"), "SendTtsVoice": ("vms", "2020-09-02")}


def tc3_signature(
    secret_key: str, service: str, timestamp: int, headers: dict[str, str], signed: str, raw: bytes
) -> str:
    """签名方法 v3, step by step, from the received request."""
    lower = {k.lower(): v for k, v in headers.items()}
    canonical_headers = "".join(f"{h}:{lower[h].strip().lower()}\n" for h in signed.split(";"))
    request = "\n".join(
        ["POST", "/", "", canonical_headers, signed, hashlib.sha256(raw).hexdigest()]
    )
    date = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
    to_sign = "\n".join(
        [
            "TC3-HMAC-SHA256",
            str(timestamp),
            f"{date}/{service}/tc3_request",
            hashlib.sha256(request.encode()).hexdigest(),
        ]
    )

    def mac(key: bytes, msg: str) -> bytes:
        return hmac.new(key, msg.encode(), hashlib.sha256).digest()

    key = mac(mac(mac(f"TC3{secret_key}".encode(), date), service), "tc3_request")
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


class TencentFake(_Fake):
    def __init__(self, secret_id: str, secret_key: str, *, now: Callable[[], datetime]) -> None:
        super().__init__()
        self.secret_id = secret_id
        self.secret_key = secret_key
        self.now = now
        self._ids = itertools.count(1)

    def routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/{tail:.*}", self.handle)

    def _error(self, call: Call, code: str, message: str) -> web.Response:
        call.error = code
        self.rejected.append(call)
        body = {"Response": {"Error": {"Code": code, "Message": message}, "RequestId": "fake"}}
        return web.json_response(body)  # API 3.0 answers errors with HTTP 200

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = {}
        call = Call(request.path, dict(request.query), dict(request.headers), raw, body)
        h = request.headers
        if request.method != "POST" or request.path != "/":
            return self._error(call, "InvalidAction", "POST / only")
        if h.get("Content-Type") != "application/json; charset=utf-8":
            return self._error(call, "InvalidParameter", "content type")
        action = h.get("X-TC-Action", "")
        if action not in TENCENT_ACTIONS:
            return self._error(call, "InvalidAction", action)
        service, version = TENCENT_ACTIONS[action]
        if h.get("X-TC-Version") != version or not h.get("X-TC-Region"):
            return self._error(call, "NoSuchVersion", str(h.get("X-TC-Version")))
        auth = _AUTH.match(h.get("Authorization", ""))
        if auth is None:
            return self._error(call, "AuthFailure.InvalidAuthorization", "malformed")
        timestamp = int(h.get("X-TC-Timestamp", "0"))
        if abs(timestamp - self.now().timestamp()) > 300:
            return self._error(call, "AuthFailure.SignatureExpire", str(timestamp))
        date = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
        if auth["id"] != self.secret_id:
            return self._error(call, "AuthFailure.SecretIdNotFound", auth["id"])
        if auth["date"] != date or auth["service"] != service:
            return self._error(call, "AuthFailure.SignatureFailure", "credential scope")
        if "host" not in auth["signed"].split(";") or h.get("Host") != f"127.0.0.1:{self.port}":
            return self._error(call, "AuthFailure.SignatureFailure", "host not signed")
        want = tc3_signature(self.secret_key, service, timestamp, dict(h), auth["signed"], raw)
        if not hmac.compare_digest(want, auth["sig"]):
            return self._error(call, "AuthFailure.SignatureFailure", "signature mismatch")
        self.calls.append(call)
        scripted = self._scripted()
        if scripted is not None:
            return scripted
        n = next(self._ids)
        if action == "SendSms":
            statuses = [
                {
                    "SerialNo": f"2028:{n}",
                    "PhoneNumber": number,
                    "Fee": 1,
                    "SessionContext": body.get("SessionContext", ""),
                    "Code": "Ok",
                    "Message": "send success",
                    "IsoCode": "CN",
                }
                for number in body.get("PhoneNumberSet", [])
            ]
            return web.json_response(
                {"Response": {"SendStatusSet": statuses, "RequestId": f"req-{n}"}}
            )
        status = {"CallId": f"call-{n:04d}-tx", "SessionContext": body.get("SessionContext", "")}
        return web.json_response({"Response": {"SendStatus": status, "RequestId": f"req-{n}"}})


# ---- group robots ---------------------------------------------------------------------------


@dataclass
class RobotPost:
    query: dict[str, str]
    body: dict[str, Any]
    raw: bytes = field(repr=False, default=b"")


class WecomFake(_Fake):
    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key
        self.posts: list[RobotPost] = []

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/cgi-bin/webhook/send", self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        if request.query.get("key") != self.key:
            return web.json_response({"errcode": 93000, "errmsg": "invalid webhook url"})
        scripted = self._scripted()
        if scripted is not None:
            return scripted
        body = json.loads(raw)
        assert body["msgtype"] == "text" and isinstance(body["text"]["content"], str)
        assert len(body["text"]["content"].encode()) <= 2048
        self.posts.append(RobotPost(dict(request.query), body, raw))
        return web.json_response({"errcode": 0, "errmsg": "ok"})


class DingtalkFake(_Fake):
    def __init__(self, token: str, secret: str | None, *, now: Callable[[], datetime]) -> None:
        super().__init__()
        self.token = token
        self.secret = secret
        self.now = now
        self.posts: list[RobotPost] = []

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/robot/send", self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        q = request.query
        if q.get("access_token") != self.token:
            return web.json_response({"errcode": 300001, "errmsg": "token is not exist"})
        if self.secret is not None:
            ts = q.get("timestamp", "")
            if not ts.isdigit() or abs(int(ts) / 1000 - self.now().timestamp()) > 3600:
                return web.json_response({"errcode": 310000, "errmsg": "timestamp invalid"})
            mac = hmac.new(self.secret.encode(), f"{ts}\n{self.secret}".encode(), hashlib.sha256)
            want = base64.b64encode(mac.digest()).decode()
            # the query arrives URL-encoded once; aiohttp decoded it: compare decoded values
            if q.get("sign") != want:
                return web.json_response({"errcode": 310000, "errmsg": "sign not match"})
        scripted = self._scripted()
        if scripted is not None:
            return scripted
        body = json.loads(raw)
        assert body["msgtype"] == "text"
        self.posts.append(RobotPost({k: unquote(v) for k, v in q.items()}, body, raw))
        return web.json_response({"errcode": 0, "errmsg": "ok"})
