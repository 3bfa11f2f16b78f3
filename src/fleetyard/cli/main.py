"""The ``fleetyard`` command: ``fleetyard <noun> <verb>``.

Errors of the :mod:`fleetyard.errors` tree end any command with their message in red on stderr
and exit code 1, never a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from typing import Annotated

import typer

from fleetyard import __version__
from fleetyard.cli import (
    artifacts,
    audit,
    bench,
    boards,
    firmware,
    fleet,
    inventory,
    jobs,
    onboarding,
    processes,
    queues,
    reduce,
    repro,
    run,
    sim,
    tokens,
    up,
    validate,
)
from fleetyard.cli import eval as eval_cli
from fleetyard.cli import pipeline as pipeline_cli
from fleetyard.cli._common import CliState, RootGroup
from fleetyard.cli.lease import app as lease_app

app = typer.Typer(
    cls=RootGroup,
    name="fleetyard",
    help="Run AI inference work on a fleet of accelerator boards.",
    no_args_is_help=True,
    add_completion=False,
    # Locals can hold tokens: never print them in a traceback.
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"fleetyard {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    server: Annotated[
        str | None,
        typer.Option("--server", help="Server URL (default: $FLEETYARD_SERVER, else the config file)"),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option("--token", help="API token (default: $FLEETYARD_TOKEN, else the config file)"),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Run AI inference work on a fleet of accelerator boards.

    Start a local fleet with `fleetyard up`; it writes the config the other commands use.
    """
    ctx.obj = CliState(server=server, token=token)


app.command("up")(up.up)
app.command("run")(run.run)
processes.add_programs(app)
app.add_typer(boards.boards_app, name="boards")
app.add_typer(boards.hosts_app, name="hosts")
app.add_typer(fleet.app, name="fleet")
app.add_typer(audit.app, name="audit")
app.add_typer(firmware.app, name="firmware")
app.add_typer(inventory.app, name="inventory")
app.add_typer(onboarding.app, name="onboarding")
app.add_typer(jobs.app, name="jobs")
app.add_typer(lease_app, name="lease")
app.add_typer(queues.app, name="queues")
app.add_typer(tokens.app, name="token")
app.add_typer(artifacts.app, name="artifacts")
app.add_typer(eval_cli.app, name="eval")
app.add_typer(pipeline_cli.app, name="pipeline")
app.command("reduce")(reduce.reduce)
app.command("bench")(bench.bench)
app.command("validate")(validate.validate)
app.command("repro")(repro.repro)
app.command("sim")(sim.sim)
