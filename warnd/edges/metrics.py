"""Prometheus metrics on the listener's ``/metrics``.

Two kinds: what happens in this process (sends, feed polls, scheduler lag, time to acknowledge)
is counted as it happens; what the chain's state is (warnings by state, acknowledgements,
escalations, the not-woken list, outbox by channel) is read from the store at scrape time, so
every instance sharing a database reports the same truth.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from warnd.store import Store  # the store's tables are read only when /metrics asks


REGISTRY = CollectorRegistry(auto_describe=True)

SENT = Counter(
    "warnd_messages_total",
    "Outbound messages handed to a channel, by outcome.",
    ["channel", "purpose", "result"],
    registry=REGISTRY,
)
FEED_POLLS = Counter("warnd_feed_polls_total", "Feed polls.", ["feed"], registry=REGISTRY)
FEED_ERRORS = Counter(
    "warnd_feed_poll_errors_total",
    "Feed polls that reported an error.",
    ["feed"],
    registry=REGISTRY,
)
FEED_ITEMS = Counter(
    "warnd_feed_items_total",
    "Messages a feed handed over, by what became of them (accepted, duplicate, rejected).",
    ["feed", "outcome"],
    registry=REGISTRY,
)
FEED_ALARMS = Counter(
    "warnd_feed_alarms_total",
    "Feed alarms raised: missing (a warning no source delivered in time), stale (a silent feed).",
    ["kind"],
    registry=REGISTRY,
)
FEED_STALE = Gauge(
    "warnd_feed_stale",
    "1 while a dispatching feed has not answered for its stale_after, else 0.",
    ["feed"],
    registry=REGISTRY,
)
SCHEDULER_LAG = Histogram(
    "warnd_scheduler_lag_seconds",
    "How late due rows were picked up by the engine.",
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900),
    registry=REGISTRY,
)
TIME_TO_ACK = Histogram(
    "warnd_time_to_ack_seconds",
    "From a call's first attempt to its acknowledgement.",
    ["source"],
    buckets=(15, 30, 60, 120, 180, 300, 600, 900, 1800, 3600),
    registry=REGISTRY,
)

# The edges (docs/hardening.md): listeners under a flood, feeds refusing internal addresses,
# failed delivery tries.
LISTENER_CONNECTIONS = Gauge(
    "warnd_listener_connections", "Open connections per listener.", ["listener"], registry=REGISTRY
)
LISTENER_REFUSED = Counter(
    "warnd_listener_refused_total",
    "Connections closed at once by a listener's limits (listener_full, per_address).",
    ["listener", "reason"],
    registry=REGISTRY,
)
LISTENER_IDLE = Counter(
    "warnd_listener_idle_closed_total",
    "Connections that closed before sending one whole request (header timeout, flood).",
    ["listener"],
    registry=REGISTRY,
)
FEED_REFUSED = Counter(
    "warnd_feed_fetches_refused_total",
    "Feed fetches refused: a link or redirect to an internal address not allow-listed.",
    ["feed"],
    registry=REGISTRY,
)
DELIVERY_FAILURES = Counter(
    "warnd_delivery_failures_total",
    "Failed requests to a channel (every try, retried or not).",
    ["channel", "kind", "permanent"],
    registry=REGISTRY,
)


class StoreCollector(Collector):
    """Chain state from the store, refreshed (async) just before each scrape."""

    def __init__(self) -> None:
        self.snapshot: dict[str, list[tuple[tuple[str, ...], float]]] = {}

    async def refresh(self, store: Store) -> None:
        read = store.backend
        snap: dict[str, list[tuple[tuple[str, ...], float]]] = {}
        rows = await read.fetch(
            'SELECT state, drill, count(*) FROM "warning" GROUP BY state, drill'
        )
        snap["warnings"] = [((st, str(bool(dr)).lower()), c) for st, dr, c in rows]
        rows = await read.fetch(
            "SELECT channel, purpose, state, count(*) FROM outbox GROUP BY channel, purpose, state"
        )
        snap["outbox"] = [((ch or "", p, st), c) for ch, p, st, c in rows]
        rows = await read.fetch("SELECT source, count(*) FROM ack GROUP BY source")
        snap["acks"] = [((src,), c) for src, c in rows]
        rung = read.json_field("data", "rung")
        rows = await read.fetch(
            f"SELECT {rung}, count(*) FROM event WHERE type = 'escalate' GROUP BY {rung}"
        )
        snap["escalations"] = [((r or "",), c) for r, c in rows]
        rows = await read.fetch(
            'SELECT w.drill, count(*) FROM division d JOIN "warning" w ON w.id = d.warning_id'
            " WHERE d.unreached_at IS NOT NULL AND d.reached_at IS NULL"
            " AND d.resolved_at IS NULL GROUP BY w.drill"
        )
        snap["not_woken"] = [((str(bool(dr)).lower(),), c) for dr, c in rows]
        self.snapshot = snap

    def collect(self) -> Iterator[Any]:
        families: list[tuple[str, str, list[str], str]] = [
            ("warnings", "warnd_warnings", ["state", "drill"], "gauge"),
            ("outbox", "warnd_outbox_messages", ["channel", "purpose", "state"], "gauge"),
            ("acks", "warnd_acknowledgements", ["source"], "counter"),
            ("escalations", "warnd_escalations", ["rung"], "counter"),
            ("not_woken", "warnd_not_woken_divisions", ["drill"], "gauge"),
        ]
        helps = {
            "warnings": "Warnings by state (drills apart).",
            "outbox": "Outbound messages by channel, purpose and state.",
            "acks": "Acknowledgements stored, by source.",
            "escalations": "Divisions moved up the ladder, by rung.",
            "not_woken": "Divisions on the duty office's not-woken list, unresolved.",
        }
        for key, name, labels, kind in families:
            family: Any = (
                CounterMetricFamily(name, helps[key], labels=labels)
                if kind == "counter"
                else GaugeMetricFamily(name, helps[key], labels=labels)
            )
            for values, n in self.snapshot.get(key, []):
                family.add_metric(list(values), float(n))
            yield family


STORE = StoreCollector()
REGISTRY.register(STORE)


async def exposition(store: Store | None) -> bytes:
    """The text exposition format, with the store-derived families refreshed first."""
    if store is not None:
        await STORE.refresh(store)
    return generate_latest(REGISTRY)
