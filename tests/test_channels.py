"""warnd.edges.channels: the webhook against a real gateway fake, the log channel, limits,
retries."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from warnd.config.policy import ChannelConfig, RateLimit
from warnd.core.clock import ManualClock
from warnd.core.errors import ConfigError, PermanentError, TransientError
from warnd.edges.channels import (
    Channel,
    Outbound,
    build_channel,
    register,
    registered_types,
)
from warnd.edges.channels.delivery import Backoff, DeliveryResult, deliver
from warnd.edges.channels.log import LogChannel
from warnd.edges.channels.ratelimit import Limiter, TokenBucket
from warnd.engine.ids import message_id_of, route_message_id

T0 = datetime(2025, 6, 14, 8, 15, tzinfo=UTC)
CONTRACT_KEYS = {"id", "to", "kind", "purpose", "text", "warning", "contact", "drill"}


def message(n: int = 1, **changes: Any) -> Outbound:
    fields: dict[str, Any] = {
        "id": f"m-{n}",
        "to": "+8613800138000",
        "kind": "voice",
        "purpose": "call",
        "text": "【预警叫应】泸溪县暴雨红色预警。请按1确认。",
        "warning": "43312241600000_20250614081500",
        "contact": "c-433122101-a1",
    }
    fields.update(changes)
    return Outbound(**fields)


@dataclass
class Seen:
    headers: dict[str, str]
    raw: bytes
    body: dict[str, Any]


@dataclass
class Gateway:
    """A real HTTP gateway fake: records requests, answers from a script (default 200)."""

    url: str = ""
    script: list[int | str] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    inflight: int = 0
    max_inflight: int = 0
    wave: int = 0  # when set: hold requests until this many are in flight (bounded)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    full: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        self.seen.append(Seen(dict(request.headers), raw, json.loads(raw)))
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            action = self.script.pop(0) if self.script else 200
            if action == "slow":  # far slower than the client's timeout; freed at teardown
                await asyncio.wait_for(self.release.wait(), 10)
                action = 200
            if self.wave:
                if self.inflight >= self.wave:
                    self.full.set()
                await asyncio.wait_for(self.full.wait(), 5)
                await asyncio.sleep(0.05)  # the gateway's own latency, so overlaps can show
            return web.json_response({"status": action}, status=int(action))
        finally:
            self.inflight -= 1


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    fake = Gateway()
    app = web.Application()
    app.router.add_post("/send", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    fake.url = f"http://{host}:{port}/send"
    yield fake
    fake.release.set()
    fake.full.set()
    await runner.cleanup()


def webhook_config(url: str, **options: Any) -> ChannelConfig:
    return ChannelConfig(
        name="gateway",
        type="webhook",
        kinds=("voice", "sms"),
        options=MappingProxyType({"url": url, **options}),
    )


class FakeTime:
    """A monotonic clock that only the fake sleep moves; the sleep records what it was asked."""

    def __init__(self) -> None:
        self.t = 1000.0
        self.waits: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.t += seconds


@pytest.fixture
async def webhook(gateway: Gateway) -> AsyncIterator[Channel]:
    channel = build_channel(webhook_config(gateway.url), clock=ManualClock(T0))
    yield channel
    await channel.aclose()


async def send_with_retries(
    channel: Channel, msg: Outbound, **kw: Any
) -> tuple[DeliveryResult, list[float]]:
    """Deliver under a fake clock; return the result and the backoff waits asked for."""
    time = FakeTime()
    kw.setdefault("backoff", Backoff(initial=1.0, maximum=30.0, jitter=0.5, max_tries=5))
    result = await deliver(
        channel,
        msg,
        limiter=Limiter(None, 10),
        deadline_s=kw.pop("deadline_s", 300.0),
        sleep=time.sleep,
        now=time.now,
        **kw,
    )
    return result, time.waits


# -- webhook: contracts §5 ------------------------------------------------------------------


async def test_body_is_the_contract(gateway: Gateway, webhook: Channel) -> None:
    msg = message(kind="sms", purpose="update", drill=True)
    await webhook.send(msg)
    (seen,) = gateway.seen
    assert seen.body == {
        "id": "m-1",
        "to": "+8613800138000",
        "kind": "sms",
        "purpose": "update",
        "text": "【预警叫应】泸溪县暴雨红色预警。请按1确认。",
        "warning": "43312241600000_20250614081500",
        "contact": "c-433122101-a1",
        "drill": True,
    }
    assert seen.headers["Content-Type"].startswith("application/json")
    assert "X-Warnd-Signature" not in seen.headers  # unsigned unless a secret is configured


async def test_reply_code_and_link_are_extra_keys(gateway: Gateway, webhook: Channel) -> None:
    await webhook.send(message(reply_code="4821", link="http://127.0.0.1:8620/a/tok"))
    body = gateway.seen[0].body
    assert set(body) == CONTRACT_KEYS | {"reply_code", "link"}
    assert (body["reply_code"], body["link"]) == ("4821", "http://127.0.0.1:8620/a/tok")


@pytest.mark.parametrize("status", [429, 500, 502, 503])
async def test_transient_statuses_are_retried_with_the_same_id(
    gateway: Gateway, webhook: Channel, status: int
) -> None:
    gateway.script = [status, status, 200]
    result, waits = await send_with_retries(webhook, message(7))
    assert result == DeliveryResult(ok=True, permanent=False, tries=3, error=None)
    assert [s.body["id"] for s in gateway.seen] == ["m-7", "m-7", "m-7"]
    assert len(waits) == 2
    assert 1.0 <= waits[0] <= 1.5 and 2.0 <= waits[1] <= 2.5  # exponential, plus jitter


@pytest.mark.parametrize("status", [400, 401, 404, 422])
async def test_other_4xx_is_permanent_and_not_retried(
    gateway: Gateway, webhook: Channel, status: int
) -> None:
    gateway.script = [status, 200]
    result, waits = await send_with_retries(webhook, message())
    assert (result.ok, result.permanent, result.tries, result.status) == (False, True, 1, status)
    assert result.error is not None and str(status) in result.error
    assert len(gateway.seen) == 1
    assert waits == []


async def test_send_raises_the_right_error_class(gateway: Gateway, webhook: Channel) -> None:
    gateway.script = [503, 400]
    with pytest.raises(TransientError) as transient:
        await webhook.send(message())
    assert transient.value.status == 503
    with pytest.raises(PermanentError) as permanent:
        await webhook.send(message())
    assert permanent.value.status == 400


async def test_timeout_is_transient(gateway: Gateway) -> None:
    channel = build_channel(webhook_config(gateway.url, timeout=0.2), clock=ManualClock(T0))
    gateway.script = ["slow"]
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        with pytest.raises(TransientError, match="timed out"):
            await channel.send(message())
        assert loop.time() - started < 5  # bounded by the 0.2 s client timeout
        gateway.script = ["slow", 200]
        result, waits = await send_with_retries(channel, message(2))
        assert (result.ok, result.tries, len(waits)) == (True, 2, 1)
    finally:
        await channel.aclose()


async def test_connection_refused_is_transient() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nobody listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    channel = build_channel(webhook_config(f"http://127.0.0.1:{port}/send"), clock=ManualClock(T0))
    try:
        result, waits = await send_with_retries(channel, message(), backoff=Backoff(max_tries=2))
    finally:
        await channel.aclose()
    assert (result.ok, result.permanent, result.tries, len(waits)) == (False, False, 2, 1)


async def test_signed_requests_verify(gateway: Gateway, tmp_path: Path) -> None:
    secret_file = tmp_path / "gateway-secret"
    secret_file.write_text("s3cret-for-the-gateway\n")
    clock = ManualClock(T0)
    cfg = webhook_config(gateway.url, secret_file=str(secret_file))
    channel = build_channel(cfg, clock=clock)
    try:
        await channel.send(message(1))
        clock.advance(timedelta(seconds=42))
        await channel.send(message(2))
    finally:
        await channel.aclose()
    for seen, expected_ts in zip(gateway.seen, (T0, T0 + timedelta(seconds=42)), strict=True):
        timestamp = seen.headers["X-Warnd-Timestamp"]
        assert timestamp == str(int(expected_ts.timestamp()))
        mac = hmac.new(b"s3cret-for-the-gateway", f"{timestamp}.".encode() + seen.raw, "sha256")
        assert hmac.compare_digest(seen.headers["X-Warnd-Signature"], "sha256=" + mac.hexdigest())
        wrong = hmac.new(b"other", f"{timestamp}.".encode() + seen.raw, hashlib.sha256)
        assert not hmac.compare_digest(seen.headers["X-Warnd-Signature"], wrong.hexdigest())


async def test_webhook_options_are_checked(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    bad = ChannelConfig(name="gw", type="webhook", options=MappingProxyType({}))
    with pytest.raises(ConfigError) as info:
        build_channel(bad, clock=clock)
    assert info.value.field == "channels.gw.url"
    missing = webhook_config("http://127.0.0.1:9/send", secret_file=str(tmp_path / "absent"))
    with pytest.raises(ConfigError) as info:
        build_channel(missing, clock=clock)
    assert info.value.field == "channels.gateway.secret_file"
    with pytest.raises(ConfigError) as info:
        build_channel(replace(missing, source="warnd.toml"), clock=clock)
    assert str(info.value).startswith("warnd.toml: channels.gateway.secret_file: ")
    unknown = ChannelConfig(name="gw", type="sms-cannon")
    with pytest.raises(ConfigError, match="unknown channel type"):
        build_channel(unknown, clock=clock)


# -- delivery: retries, deadline, limits -------------------------------------------------------


class ScriptedChannel:
    """A channel without I/O: raises from a script, counts what is in flight."""

    def __init__(self, script: list[Exception | None], concurrency_gate: int = 0) -> None:
        self.name = "scripted"
        self.kinds = frozenset({"voice", "sms"})
        self.script = script
        self.sent: list[str] = []
        self.inflight = 0
        self.max_inflight = 0
        self.gate = asyncio.Event()

    async def send(self, msg: Outbound) -> None:
        self.sent.append(msg.id)
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            if self.script:
                step = self.script.pop(0)
                if step is not None:
                    raise step
            await self.gate.wait()
        finally:
            self.inflight -= 1

    async def aclose(self) -> None:
        return None


async def test_retries_stop_before_the_deadline() -> None:
    channel = ScriptedChannel([TransientError("busy", status=503)] * 10)
    channel.gate.set()
    result, waits = await send_with_retries(
        channel, message(), deadline_s=5.0, backoff=Backoff(initial=1.0, jitter=0.0, max_tries=10)
    )
    # waits 1 s and 2 s fit in 5 s; the next (4 s) would end at 7 s, past the deadline
    assert waits == [1.0, 2.0]
    assert (result.ok, result.permanent, result.tries, result.status) == (False, False, 3, 503)


async def test_retries_stop_after_max_tries() -> None:
    channel = ScriptedChannel([TransientError("busy")] * 10)
    channel.gate.set()
    backoff = Backoff(initial=0.5, maximum=2.0, jitter=0.0, max_tries=4)
    result, waits = await send_with_retries(channel, message(), backoff=backoff)
    assert waits == [0.5, 1.0, 2.0]
    assert (result.ok, result.tries) == (False, 4)
    assert channel.sent == ["m-1"] * 4


async def test_unexpected_exception_becomes_a_result() -> None:
    channel = ScriptedChannel([ValueError("bug in a channel")])
    result, waits = await send_with_retries(channel, message())
    assert (result.ok, result.permanent, result.tries) == (False, True, 1)
    assert result.error == "ValueError: bug in a channel"
    assert waits == []


async def test_kind_the_channel_cannot_carry() -> None:
    channel = ScriptedChannel([])
    result, waits = await send_with_retries(channel, message(kind="email"))
    assert (result.ok, result.permanent, result.tries) == (False, True, 0)
    assert channel.sent == [] and waits == []


def test_token_bucket_grants_exactly_count_per_period() -> None:
    time = FakeTime()
    bucket = TokenBucket(RateLimit(5, timedelta(seconds=1)), time.now)
    assert [bucket.try_acquire() for _ in range(5)] == [0.0] * 5
    assert bucket.try_acquire() == pytest.approx(0.2)
    for _ in range(3):
        time.t += 1.0
        assert [bucket.try_acquire() for _ in range(5)] == [0.0] * 5
        assert bucket.try_acquire() > 0.0
    time.t += 10.0  # idle time does not bank more than one period's worth
    assert sum(bucket.try_acquire() == 0.0 for _ in range(20)) == 5


async def test_token_bucket_acquire_waits_only_the_deficit() -> None:
    time = FakeTime()
    bucket = TokenBucket(RateLimit(600, timedelta(minutes=1)), time.now, sleep=time.sleep)
    start = time.t
    for _ in range(600 + 30):
        await bucket.acquire()
    assert len(time.waits) == 30
    assert all(w == pytest.approx(0.1) for w in time.waits)
    assert time.t - start == pytest.approx(3.0)


async def test_rate_limit_applies_to_deliveries() -> None:
    time = FakeTime()
    limiter = Limiter(RateLimit(2, timedelta(seconds=1)), 10, now=time.now, sleep=time.sleep)
    channel = ScriptedChannel([])
    channel.gate.set()
    for n in range(6):
        result = await deliver(
            channel, message(n), limiter=limiter, deadline_s=60, sleep=time.sleep, now=time.now
        )
        assert result.ok
    assert channel.sent == [f"m-{n}" for n in range(6)]
    assert time.waits == pytest.approx([0.5] * 4)


async def test_concurrency_limit_without_io() -> None:
    channel = ScriptedChannel([])
    limiter = Limiter(None, 3)
    tasks = [
        asyncio.create_task(deliver(channel, message(n), limiter=limiter, deadline_s=60))
        for n in range(10)
    ]
    for _ in range(20):  # let every task run as far as it can (a yield, not a timer)
        await asyncio.sleep(0)
    assert channel.inflight == 3 and len(channel.sent) == 3
    channel.gate.set()
    results = await asyncio.gather(*tasks)
    assert all(r.ok for r in results)
    assert channel.max_inflight == 3 and len(channel.sent) == 10


async def test_concurrency_limit_at_the_gateway(gateway: Gateway, webhook: Channel) -> None:
    gateway.wave = 3
    limiter = Limiter(None, 3)
    results = await asyncio.gather(
        *(deliver(webhook, message(n), limiter=limiter, deadline_s=60) for n in range(9))
    )
    assert all(r.ok for r in results)
    assert len(gateway.seen) == 9
    assert gateway.max_inflight == 3


# -- log channel and the registry ------------------------------------------------------------


async def test_log_channel_writes_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "var" / "deep" / "outbox.jsonl"
    cfg = ChannelConfig(name="outbox", type="log", options=MappingProxyType({"path": str(path)}))
    clock = ManualClock(T0)
    channel = build_channel(cfg, clock=clock)
    sent = [message(1), message(2, kind="sms", drill=True), message(3, purpose="lift")]
    for msg in sent:
        await channel.send(msg)
        clock.advance(timedelta(seconds=1))
    await channel.aclose()
    lines = path.read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["id"] for r in records] == ["m-1", "m-2", "m-3"]
    for record, msg in zip(records, sent, strict=True):
        assert {k: record[k] for k in CONTRACT_KEYS} == msg.body()
        assert record["channel"] == "outbox"
    assert records[1]["at"] == (T0 + timedelta(seconds=1)).isoformat()
    assert "泸溪县" in lines[0]  # Chinese kept readable, not \u-escaped


async def test_log_channel_without_path_logs(tmp_path: Path) -> None:
    channel = LogChannel("outbox", frozenset({"sms"}), path=None, clock=ManualClock(T0))
    with capture_logs() as logs:
        await channel.send(message(5))
    assert [(e["event"], e["id"]) for e in logs] == [("outbound", "m-5")]


async def test_log_channel_io_error_is_permanent(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    channel = LogChannel(
        "outbox", frozenset({"sms"}), path=blocker / "x.jsonl", clock=ManualClock(T0)
    )
    with pytest.raises(PermanentError):
        await channel.send(message(kind="sms"))
    result, waits = await send_with_retries(channel, message(kind="sms"))
    assert (result.ok, result.permanent, result.tries, waits) == (False, True, 1, [])


def test_registry_knows_the_types_and_refuses_a_second_owner() -> None:
    assert {"log", "webhook"} <= set(registered_types())
    with pytest.raises(ValueError, match="twice"):
        register("log")(ScriptedChannel)  # type: ignore[type-var]


def test_no_channel_module_imports_the_config_loader_or_reaches_up() -> None:
    """``warnd.config.policy`` reads ``[channels.*]`` through
    ``warnd.edges.channels.load_channels``: the import runs one way (type-only imports aside).
    Nor does the outbound layer reach up: a provider's reference is returned by ``send``
    (``Sent``) and recorded by the daemon (warnd.edges.vendors.remember_sent); callback routes
    come from warnd.edges.vendors too. Even imports inside functions count."""
    import ast

    import warnd.edges.channels

    def imports(node: ast.AST) -> set[str]:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return set().union(*(imports(n) for n in node.orelse))
        found = set().union(*(imports(n) for n in ast.iter_child_nodes(node)))
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        return found

    folder = Path(warnd.edges.channels.__file__).parent
    modules = sorted(folder.glob("*.py"))
    assert len(modules) >= 10
    above = (
        "warnd.config.policy",
        "warnd.engine",
        "warnd.edges.vendors",
        "warnd.store",
        "warnd.edges.sender",
    )
    for module in modules:
        found = imports(ast.parse(module.read_text()))
        assert not {m for m in found if m.startswith(above)}, module.name


def test_the_optional_protocols_name_what_a_channel_type_does_beyond_sending() -> None:
    from warnd.edges.channels import (
        Observer,
        WithRoutes,
        aliyun,
        dingtalk,
        email,
        tencent,
        webhook,
        wecom,
    )

    types = {
        "aliyun": aliyun.AliyunChannel,
        "tencent": tencent.TencentChannel,
        "wecom": wecom.WecomChannel,
        "dingtalk": dingtalk.DingtalkChannel,
        "webhook": webhook.WebhookChannel,
        "log": LogChannel,
        "email": email.EmailChannel,
    }
    assert {n for n, cls in types.items() if issubclass(cls, WithRoutes)} == {"aliyun", "tencent"}
    assert {n for n, cls in types.items() if issubclass(cls, Observer)} == {"wecom", "dingtalk"}


@pytest.mark.parametrize(
    ("message_id", "route", "sent"),
    [
        ("01a23a8f0000700080000000000000ab", 0, "01a23a8f0000700080000000000000ab"),
        ("01a23a8f0000700080000000000000ab", 1, "01a23a8f0000700080000000000000ab-1"),
        ("01a23a8f0000700080000000000000ab", 3, "01a23a8f0000700080000000000000ab-3"),
        ("m000001", 2, "m000001-2"),
    ],
)
def test_a_fallback_route_has_its_own_id_that_leads_back_to_the_message(
    message_id: str, route: int, sent: str
) -> None:
    assert route_message_id(message_id, route) == sent
    assert message_id_of(sent) == message_id


@pytest.mark.parametrize("foreign", ["bare-id", "x-", "-1", "abc-123", "abc-1a", ""])
def test_ids_that_are_no_route_id_are_left_alone(foreign: str) -> None:
    assert message_id_of(foreign) == foreign
