"""Feeds from their config (``warnd.config.feedconfig.FeedConfig``): one place for every source
type.

Used by ``warnd serve`` and ``warnd feeds check``. Secrets (the QWeather signing key or API
key) are read here, when the feed is built, never at config load. ``scope`` gives the
divisions warnd serves (the contacts directory, read again after a reload) for the CMA area
pre-filter and the cross-check; a feed's own ``areas`` replace it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from warnd.config.feedconfig import FeedConfig
from warnd.config.policy import read_secret
from warnd.core.directory import Directory
from warnd.core.errors import ConfigError
from warnd.edges.feeds import Feed
from warnd.edges.feeds.cma import AreaScope, find_id
from warnd.edges.feeds.crosscheck import CheckFeed
from warnd.edges.feeds.folder import FolderFeed
from warnd.edges.feeds.http import HttpFeed, Select
from warnd.edges.feeds.index import IndexItem
from warnd.edges.feeds.qwalert import Point
from warnd.edges.feeds.qweather import ApiKeyAuth, Auth, JwtAuth, QWeatherFeed, load_ed25519
from warnd.edges.feeds.watch import Watched

Scope = Callable[[], AreaScope]


class DirectoryScope:
    """The divisions of the current contacts directory, worked out once per directory."""

    def __init__(self, directory: Callable[[], Directory | None]) -> None:
        self._directory = directory
        self._for: int | None = None
        self._scope = AreaScope(())

    def __call__(self) -> AreaScope:
        d = self._directory()
        if d is None:
            return AreaScope(())
        if id(d) != self._for:
            self._scope = AreaScope(div.code for div in d.divisions())
            self._for = id(d)
        return self._scope


def prefilter(scope: Scope) -> Select:
    """Download an index entry unless its CMA identifier proves another area issued it."""

    def select(item: IndexItem) -> bool:
        found = find_id(item.guid, item.link)
        return scope().concerns(found.area if found is not None else None)

    return select


def feed_scope(cfg: FeedConfig, default: Scope) -> Scope:
    if not cfg.areas:
        return default
    fixed = AreaScope(cfg.areas)
    return lambda: fixed


def _auth(cfg: FeedConfig, now: Callable[[], float], source: str | None) -> Auth:
    auth = cfg.auth
    assert auth is not None
    field = f"feeds.{cfg.name}.key_file"
    if auth.kind == "jwt":
        assert auth.key_file is not None and auth.kid and auth.project
        key = load_ed25519(auth.key_file, field=field)
        return JwtAuth(
            key, kid=auth.kid, project=auth.project, ttl_s=auth.token_ttl.total_seconds(), now=now
        )
    secret = read_secret(auth.key_file, auth.key_env, field=f"feeds.{cfg.name}.key", source=source)
    return ApiKeyAuth(secret.decode("utf-8", "replace"))


def build_feed(
    cfg: FeedConfig,
    *,
    scope: Scope,
    now: Callable[[], float] = time.time,
    source: str | None = None,
    **http: Any,
) -> Feed:
    """The feed ``cfg`` describes (``http``: test seams such as ``sleep`` and ``session``)."""
    timeout = cfg.timeout.total_seconds()
    try:
        if cfg.type == "folder":
            assert cfg.path is not None
            return FolderFeed(cfg.name, cfg.path, now=now)
        if cfg.type == "qweather":
            assert cfg.host is not None
            points = [Point(p.code, p.lat, p.lon, p.name) for p in cfg.points]
            auth = _auth(cfg, now, source)
            return QWeatherFeed(
                cfg.name,
                cfg.host,
                points,
                auth=auth,
                timeout_s=timeout,
                lang=cfg.lang,
                now=now,
                **http,
            )
        assert cfg.url is not None
        if cfg.role == "check":
            return CheckFeed(
                cfg.name,
                cfg.url,
                list_format="nmc" if cfg.type == "nmc" else "index",
                grace=cfg.grace,
                levels=cfg.issuer_levels,
                scope=feed_scope(cfg, scope),
                timeout_s=timeout,
                now=now,
                **http,
            )
        select = prefilter(feed_scope(cfg, scope)) if cfg.prefilter else None
        allow = cfg.allow_hosts
        return HttpFeed(
            cfg.name, cfg.url, timeout_s=timeout, now=now, select=select, allow=allow, **http
        )
    except ConfigError as exc:
        if exc.source is not None:
            raise
        raise ConfigError(exc.message, source=source, field=exc.field, value=exc.value) from None


def by_priority(feeds: Sequence[FeedConfig]) -> list[FeedConfig]:
    """Most trusted first: sources due together are polled in this order, so that the
    preferred source's copy of a warning is the one that runs the chain."""
    return sorted(feeds, key=lambda f: f.priority)


def watched(feeds: Sequence[FeedConfig]) -> list[Watched]:
    return [Watched(f.name, f.role, f.priority, f.stale_after, f.grace) for f in feeds]
