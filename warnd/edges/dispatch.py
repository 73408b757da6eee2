"""Choosing a channel for each outbound message, with fallback when one fails.

A call attempt goes out as a voice call where a channel carries voice (叫应 depends on the
voice call), else as SMS; update and lift notices prefer SMS. A person's own ``channels`` column
(kinds or channel names, in order) overrides that.

The fallback rule (docs/hardening.md): a route that fails for good (4xx, a bad number) hands the
message to the next route, whatever it carries — a voice call refused by the platform becomes an
SMS rather than nothing (the SMS reply still acknowledges; only the IVR key press is lost), and
that change is logged (``route_fallback``). A route that fails transiently (5xx, 429, timeouts,
after its retries within the deadline) hands the message only to routes of the same kind (a
second voice gateway): the attempt is queued again as it was, so a voice call that is merely
retried does not silently become an SMS — unless the person's own ``channels`` list puts the
other kind next, which says they want it. A fallback route gets its own id (``<id>-<n>``,
``ids.route_message_id``): a gateway that drops repeated ids must not drop it. When every
route tried has failed the attempt is marked failed (all permanent) or queued again for later
(any transient). The outcome is set on the ``Attempt`` itself (``warnd.engine.outbox``): one
record from claim to store.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

import structlog

from warnd.core.directory import Directory
from warnd.edges import logs
from warnd.edges.channels import Channel, Outbound, Sent
from warnd.edges.channels.delivery import Backoff, DeliveryResult, deliver
from warnd.edges.channels.ratelimit import Limiter
from warnd.engine.ids import route_message_id
from warnd.engine.outbox import Attempt

log = structlog.get_logger("warnd.dispatch")

DEFAULT_KINDS = {"call": ("voice", "sms"), "update": ("sms", "voice"), "lift": ("sms", "voice")}
_FALLBACKS = logs.LimitedLog(log, burst=20, per=10.0)  # per route: a province of refusals

_BACKOFF = Backoff()  # frozen: shared
#: records a provider's reference for a message it took (route message id, what it said)
OnSent = Callable[[str, Sent], Awaitable[None]]


class Dispatcher:
    def __init__(
        self,
        channels: Mapping[str, Channel],
        limiters: Mapping[str, Limiter],
        *,
        deadline_s: float = 60.0,
        link_base: str | None = None,
        on_sent: OnSent | None = None,
        backoff: Backoff = _BACKOFF,
    ) -> None:
        self.channels = dict(channels)
        #: the daemon records provider references here (warnd.edges.vendors.remember_sent)
        self.on_sent = on_sent
        #: the retries within one send (``deliver``); tests shorten its waits here
        self.backoff = backoff
        self.limiters = dict(limiters)
        self.deadline_s = deadline_s
        self.link_base = link_base.rstrip("/") if link_base else None
        # Routes by (purpose, preference), worked out once: a fan-out asks the same few
        # questions 100,000 times. The channels are fixed once the dispatcher is built.
        self._routes: dict[tuple[str, tuple[str, ...]], tuple[tuple[Channel, str], ...]] = {}

    def routes(self, purpose: str, preference: tuple[str, ...] = ()) -> list[tuple[Channel, str]]:
        """(channel, kind) pairs to try in order."""
        return list(self._cached_routes(purpose, preference))

    def _cached_routes(
        self, purpose: str, preference: tuple[str, ...]
    ) -> tuple[tuple[Channel, str], ...]:
        found = self._routes.get((purpose, preference))
        if found is None:
            found = self._routes[(purpose, preference)] = tuple(
                self._find_routes(purpose, preference)
            )
        return found

    def _find_routes(self, purpose: str, preference: tuple[str, ...]) -> list[tuple[Channel, str]]:
        out: list[tuple[Channel, str]] = []
        kinds = DEFAULT_KINDS.get(purpose, ("sms",))
        wanted = preference or kinds
        for item in wanted:
            if item in self.channels:  # a channel name: its best kind for this purpose
                ch = self.channels[item]
                best = next((kind for kind in kinds if kind in ch.kinds), None)
                if best is None and ch.kinds:  # e.g. an e-mail or group channel named by a person
                    best = sorted(ch.kinds)[0]
                if best is not None:
                    out.append((ch, best))
            else:  # a kind: every channel carrying it, in config order
                out.extend((ch, item) for ch in self.channels.values() if item in ch.kinds)
        seen: set[tuple[str, str]] = set()
        unique = []
        for ch, kind in out:
            if (ch.name, kind) not in seen:
                seen.add((ch.name, kind))
                unique.append((ch, kind))
        return unique

    async def send(self, msg: Attempt, directory: Directory | None = None) -> Attempt:
        """Send ``msg`` on its routes in turn; its outcome is set on it (and it is returned)."""
        contact = directory.contact(msg.contact) if directory is not None else None
        preference = tuple(contact.channels) if contact is not None else ()
        routes = self._cached_routes(msg.purpose, preference)
        if not routes:
            return msg.failed(f"no channel carries a {msg.purpose} message", permanent=True)
        link = f"{self.link_base}/a/{msg.token}" if self.link_base and msg.token else None
        errors: list[str] = []
        permanent = True
        retried_kind: str | None = None  # a kind that failed transiently: no other kind now
        last: tuple[str, str] | None = None  # the route that failed last
        for n, (channel, kind) in enumerate(routes):
            if retried_kind is not None and kind != retried_kind and not preference:
                continue
            if last is not None and kind != last[1]:
                self._fallback(msg, last, (channel.name, kind))
            out = Outbound(
                id=route_message_id(msg.id, n),
                to=msg.to,
                kind=kind,
                purpose=msg.purpose,
                text=msg.text,
                warning=msg.warning,
                contact=msg.contact,
                drill=msg.drill,
                reply_code=msg.reply_code,
                link=link,
            )
            result: DeliveryResult = await deliver(
                channel,
                out,
                limiter=self.limiters[channel.name],
                deadline_s=self.deadline_s,
                backoff=self.backoff,
            )
            if result.ok:
                if result.sent is not None and self.on_sent is not None:
                    await self.on_sent(out.id, result.sent)
                return msg.sent(channel.name, kind)
            errors.append(f"{channel.name}/{kind}: {result.error}")
            permanent = permanent and result.permanent
            if not result.permanent and retried_kind is None:
                retried_kind = kind
            last = (channel.name, kind)
        return msg.failed("; ".join(errors), permanent=permanent)

    @staticmethod
    def _fallback(msg: Attempt, failed: tuple[str, str], to: tuple[str, str]) -> None:
        """A message changes kind (voice → SMS): never silently."""
        _FALLBACKS.warning(
            failed,
            "route_fallback",
            message=msg.id,
            purpose=msg.purpose,
            route="/".join(failed),
            next_route="/".join(to),
        )

    async def aclose(self) -> None:
        for ch in self.channels.values():
            await ch.aclose()
