"""``fleetyard token …``: make, list and revoke API tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fleetyard.cli._common import DEFAULT_DATA_DIR, DbOpt, JsonOpt, client, db_url
from fleetyard.cli._output import emit_json, fmt_time, note, out, table
from fleetyard.client import Role

app = typer.Typer(help="Make, list and revoke API tokens (admin).", no_args_is_help=True)


def check_token_fields(role: Role, team: str | None, host: str | None) -> None:
    """Refuse the combinations the server would refuse, before touching anything."""
    if role is Role.USER and not team:
        raise typer.BadParameter("a user token belongs to a team: add --team TEAM", param_hint="'--team'")
    if role is Role.AGENT and not host:
        raise typer.BadParameter("an agent token is bound to one host: add --host HOST", param_hint="'--host'")
    if host and role is not Role.AGENT:
        raise typer.BadParameter("only agent tokens are bound to a host", param_hint="'--host'")


@app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="A unique name, e.g. 'alice' or 'agent-host-01'.")],
    role: Annotated[Role, typer.Option("--role", help="admin, operator, user or agent.")],
    team: Annotated[str | None, typer.Option("--team", help="The team a user token belongs to.")] = None,
    host: Annotated[str | None, typer.Option("--host", help="The host an agent token acts for.")] = None,
    db: DbOpt = None,
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="Write straight into this data dir's store (bootstrap, no server)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a token and print its secret, once.

    Through the API with an admin token; with --db or --data-dir, straight into the store, to
    make the first admin token before any server runs. The secret goes to stdout alone, so
    `TOKEN=$(fleetyard token create …)` captures it.
    """
    check_token_fields(role, team, host)
    if db is not None or data_dir is not None:
        from fleetyard.store.tokens import create_token

        url = db_url(db, data_dir or DEFAULT_DATA_DIR)
        secret = create_token(url, name=name, role=role, team=team, host=host)
        created = {"name": name, "role": role.value, "team": team, "host": host, "token": secret}
    else:
        with client(ctx) as fy:
            made = fy.create_token(name, role, team=team, host=host)
        created = made.model_dump(mode="json")
        secret = made.token or ""
    if as_json:
        emit_json(created)
        return
    bound = f", team {team}" if team else f", host {host}" if host else ""
    note(f"created token {name!r} (role {role.value}{bound}); its secret, shown only now:", style="green")
    typer.echo(secret)


@app.command("ls")
def ls(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List tokens (never their secrets)."""
    with client(ctx) as fy:
        tokens = fy.tokens()
    if as_json:
        emit_json(tokens)
        return
    rows = [(t.name, t.role.value, t.team or "", t.host or "", fmt_time(t.created_at)) for t in tokens]
    out().print(table(("NAME", "ROLE", "TEAM", "HOST", "CREATED"), rows))


@app.command("revoke")
def revoke(ctx: typer.Context, name: Annotated[str, typer.Argument()]) -> None:
    """Revoke a token: it stops working at once."""
    with client(ctx) as fy:
        fy.revoke_token(name)
    note(f"revoked token {name!r}", style="green")
