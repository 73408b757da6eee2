"""The ``warnd`` command line: one click group, one module per command family."""

from __future__ import annotations

import importlib

import click

from warnd import __version__

#: command name → the modules that define it (imported only when that command runs, so that
#: ``warnd status`` does not pay for the engine, Alembic or lxml at start-up)
COMMANDS: dict[str, tuple[str, ...]] = {
    "ack": ("warnd.cli.ack",),
    "contacts": ("warnd.cli.contacts", "warnd.cli.roster"),
    "db": ("warnd.cli.db",),
    "drill": ("warnd.cli.drill", "warnd.cli.replay"),
    "feeds": ("warnd.cli.feeds",),
    "inspect": ("warnd.cli.inspect",),
    "plan": ("warnd.cli.inspect",),
    "report": ("warnd.cli.report",),
    "serve": ("warnd.cli.serve",),
    "status": ("warnd.cli.status",),
    "unreached": ("warnd.cli.status",),
}


class LazyGroup(click.Group):
    """A click group whose commands attach themselves when their module is first imported."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(COMMANDS) | set(self.commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        # Every module of the command, even when one is already imported: a group's
        # subcommands may live in a second module (``contacts import`` in roster.py).
        for module in COMMANDS.get(cmd_name, ()):
            importlib.import_module(module)
        return self.commands.get(cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
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
    from warnd.edges import logs

    logs.configure(json=log_json, level=log_level)
