"""Sending through failing gateways (issue 12; docs/hardening.md §8): the fallback rule and the
failure log.

A voice call that is merely retried (5xx, 429, timeouts) stays a voice call; a refusal for good
(4xx) falls back to SMS, logged; a person's own channel order falls back on any failure. Every
failed request is counted and logged, and the log is throttled without losing count.
Harness: ``tests/daemon_rig.py`` (ManualClock, real SQLite, the gateway fake).
"""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from daemon_rig import ID, T0, Harness
from factory import cap_xml, county_rows

from warnd.edges import logs, metrics
from warnd.edges.channels import delivery
from warnd.edges.channels.delivery import Backoff
from warnd.store.tables import Outbox

H = timedelta(hours=1)
RETRY = timedelta(seconds=20)  # the outbox's back-off after a transient failure


def failures(kind: str, permanent: bool) -> float:
    labels = {"channel": "gateway", "kind": kind, "permanent": str(permanent).lower()}
    return metrics.REGISTRY.get_sample_value("warnd_delivery_failures_total", labels) or 0.0


#: three tries a send, milliseconds apart (the real back-off is 1 s, 2 s, …)
TRIES = Backoff(initial=0.001, maximum=0.002, jitter=0, max_tries=3)


class Logged(Harness):
    def __init__(
        self, tmp: Path, rows: list[list[str]] | None = None, *, backoff: Backoff = TRIES
    ) -> None:
        super().__init__(tmp, rows, backoff=backoff)
        self.log = io.StringIO()

    async def start(self) -> None:
        logs.configure(json=True, file=self.log)
        await super().start()

    def events(self, name: str) -> list[dict[str, Any]]:
        lines = [json.loads(x) for x in self.log.getvalue().splitlines()]
        return [e for e in lines if e["event"] == name]


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Logged]:
    harness = Logged(tmp_path)
    await harness.start()
    try:
        yield harness
    finally:
        await harness.stop()


async def test_a_voice_call_that_is_retried_stays_a_voice_call(h: Logged) -> None:
    """Before: after transient errors voice attempts went out as SMS, silently."""
    before = failures("voice", False), failures("voice", True)
    h.gateway.script(lambda body: body["kind"] == "voice", *[503] * 21)  # 3 tries x 7 calls
    await h.feed(cap_xml(ID, T0, expires=T0 + 12 * H))
    rows = await h.all(Outbox, Outbox.purpose == "call")
    assert len(rows) == 7 and {r.state for r in rows} == {"pending"}  # queued again
    assert {r.body["kind"] for r in h.gateway.receipts} == {"voice"}  # no SMS instead
    assert h.events("route_fallback") == []
    sent = await h.to(T0 + RETRY)
    assert {s.receipt.body["kind"] for s in sent} == {"voice"}
    assert {(r.state, r.channel) for r in await h.all(Outbox)} == {("sent", "gateway/voice")}
    # every failed request counted and logged: two retried tries and the last, per call (the
    # 21st line in a few milliseconds is past the 20 a period: written when the period ends)
    assert failures("voice", False) - before[0] == 21 and failures("voice", True) == before[1]
    assert len(h.events("delivery_retry") + h.events("delivery failed")) == 20
    delivery._LINES.flush()
    retried = Counter(e["id"] for e in h.events("delivery_retry"))
    last = Counter(e["id"] for e in h.events("delivery failed"))
    assert set(retried.values()) == {2} and set(last.values()) == {1}
    assert set(retried) == set(last) == {r.id for r in rows}
    assert len(h.events("send_failed")) == 7


async def test_a_voice_call_refused_for_good_falls_back_to_sms_and_says_so(h: Logged) -> None:
    h.gateway.script(lambda body: body["kind"] == "voice", *[400] * 7)
    await h.feed(cap_xml(ID, T0, expires=T0 + 12 * H))
    rows = await h.all(Outbox, Outbox.purpose == "call")
    assert {(r.state, r.channel) for r in rows} == {("sent", "gateway/sms")}
    fallbacks = h.events("route_fallback")
    assert sorted(e["message"] for e in fallbacks) == sorted(r.id for r in rows)
    assert {(e["route"], e["next_route"]) for e in fallbacks} == {("gateway/voice", "gateway/sms")}


async def test_the_persons_own_order_falls_back_on_any_failure(
    tmp_path: Path,
) -> None:
    """A person whose channels column says ``voice;sms`` gets the SMS when voice is down."""
    rows = [[*r, "voice;sms" if r[0] == "c-433122-a" else ""] for r in county_rows()]
    h = Logged(tmp_path, rows)
    await h.start()
    try:
        h.gateway.script(lambda body: body["kind"] == "voice", *[503] * 21)
        await h.feed(cap_xml(ID, T0, expires=T0 + 12 * H))
        by_contact = {r.contact_id: r for r in await h.all(Outbox, Outbox.purpose == "call")}
        own = by_contact.pop("c-433122-a")
        assert (own.state, own.channel) == ("sent", "gateway/sms")  # their order says so
        assert {(r.state, r.channel) for r in by_contact.values()} == {("pending", None)}
        (fallback,) = h.events("route_fallback")
        assert fallback["message"] == own.id
    finally:
        await h.stop()


async def test_every_failed_try_of_an_attempt_is_logged_and_counted(
    tmp_path: Path,
) -> None:
    """Before: an attempt that failed 7 times left one ``send_failed`` line for all of them."""
    seven = Backoff(initial=0.001, maximum=0.002, jitter=0, max_tries=7)
    h = Logged(tmp_path, [r for r in county_rows() if r[3] == "county"], backoff=seven)  # one call
    await h.start()
    try:
        before = failures("voice", False)
        h.gateway.script(lambda body: body["kind"] == "voice", *[503] * 7)
        await h.feed(cap_xml(ID, T0, expires=T0 + 12 * H))
        (row,) = await h.all(Outbox, Outbox.purpose == "call")
        assert [r.status for r in h.gateway.receipts] == [503] * 7
        lines = [e for e in h.events("delivery_retry") + h.events("delivery failed")]
        assert len(lines) == 7 and {e["id"] for e in lines} == {row.id}
        assert [e["tries"] for e in h.events("delivery_retry")] == [1, 2, 3, 4, 5, 6]
        assert failures("voice", False) - before == 7
    finally:
        await h.stop()


def test_a_throttled_log_loses_no_count() -> None:
    buf = io.StringIO()
    logs.configure(json=True, file=buf)
    now = [0.0]
    limited = logs.LimitedLog(
        __import__("structlog").get_logger("t"), burst=20, per=10.0, now=lambda: now[0]
    )
    for i in range(1000):  # a province of failures in one period, then a few more later
        limited.warning("gateway", "delivery failed", n=i)
    now[0] = 10.0
    for i in range(3):
        limited.warning("gateway", "delivery failed", n=1000 + i)
    limited.warning("other", "delivery failed", n=-1)
    limited.flush()
    lines = [json.loads(x) for x in buf.getvalue().splitlines()]
    assert len(lines) == 20 + 3 + 1
    assert len(lines) + sum(e["suppressed"] for e in lines) == 1004  # every line accounted for
    assert lines[20]["suppressed"] == 980 and lines[20]["n"] == 1000
