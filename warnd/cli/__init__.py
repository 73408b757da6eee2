"""The ``warnd`` command line: one click group, one module per command family."""

from __future__ import annotations

import click

from warnd import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="warnd")
@click.option(
    "--log-level",
    default="warning",
    show_default=True,
    envvar="WARND_LOG_LEVEL",
    help="log level for commands other than serve",
)
@click.option(
    "--log-json/--log-console", default=None, help="log format (default: JSON when not a TTY)"
)
def main(log_level: str, log_json: bool | None) -> None:
    """warnd —— 631 预警叫应调度 (early-warning dispatch for the 631 call-back chain)."""
    from warnd import logs

    logs.configure(json=log_json, level=log_level)


def _register() -> None:
    """Import the command modules so that they attach themselves to ``main``."""
    from warnd.cli import ack, contacts, db, drill, inspect, replay, report, roster, serve, status  # noqa: F401  # noqa: F401  (attach to drill / contacts)  # noqa: F401


_register()
