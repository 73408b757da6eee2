"""What every command shares: the --config option, config loading, one-line failures."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar
from zoneinfo import ZoneInfo

import click

from warnd.config.policy import Config, find_config, load_config
from warnd.core.errors import ConfigError, WarndError

F = TypeVar("F", bound=Callable[..., Any])

config_option = click.option(
    "--config",
    "config_path",
    metavar="PATH",
    default=None,
    help="配置文件 config file (default config/warnd.toml, then /etc/warnd/warnd.toml)",
)
json_option = click.option("--json", "as_json", is_flag=True, help="machine-readable JSON output")


def fail(message: str, code: int = 2) -> NoReturn:
    """Exit with one line on stderr: what is wrong and where."""
    click.echo(f"warnd: {' '.join(str(message).split())}", err=True)
    sys.exit(code)


def load(config_path: str | None, *, required: bool = False) -> Config | None:
    """The validated config, or None when none exists and the command can do without one."""
    try:
        path = find_config(config_path)
    except ConfigError:
        if config_path is not None or required:
            raise
        return None
    config = load_config(path)
    from warnd.edges import logs

    logs.set_timezone(config.tz)  # log timestamps in the configured zone, with its offset
    return config


def contacts_path(explicit: str | None, config: Config | None) -> Path:
    if explicit:
        return Path(explicit)
    if config is not None and config.contacts_path is not None:
        return config.contacts_path
    fail(
        "未指定通讯录：请加 --contacts PATH 或在配置中设置 [contacts] path"
        " (no contacts directory: pass --contacts PATH or set [contacts] path in the config)"
    )


def parse_time(text: str, tz: ZoneInfo) -> datetime:
    """ISO 8601 with an offset; a time without one is read in the configured timezone."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        fail(f"时间格式不对 --at：应如 2025-06-14T08:00:00+08:00 (not an ISO 8601 time): {text!r}")
    return value if value.tzinfo else value.replace(tzinfo=tz)


def emit_json(obj: Any) -> None:
    click.echo(json.dumps(obj, ensure_ascii=False, sort_keys=False))


def guarded(fn: F) -> F:
    """Turn warnd's own errors into a one-line message and exit code 2 (never a traceback)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except WarndError as exc:
            fail(str(exc))

    return wrapper  # type: ignore[return-value]
