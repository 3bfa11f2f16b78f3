"""The ``lease`` job kind: hold boards for an engineer until the lease is released or expires.

A lease is an ordinary job, so the scheduler, quotas, priorities and "no board is held twice"
apply to it unchanged. Each rank says how to reach its board (log and result), then waits for
its stop: a release (cancel) or the controller's expiry of the lease (see
:mod:`fleetyard.store.leases`). Its ``time_limit_s`` is only the longest a lease may last.
"""

from __future__ import annotations

import json
import shlex
import socket
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from fleetyard.domain.job import Outcome
from fleetyard.domain.spec import MAX_TIME_LIMIT_S
from fleetyard.workloads.base import WorkloadContext, WorkloadResult, params_as

__all__ = ["ACCESS_LOG_PREFIX", "LeaseParams", "LeaseWorkload", "access_info", "parse_access_line"]

MAX_LEASE_S = MAX_TIME_LIMIT_S
STOP_POLL_S = 0.1
# Each rank logs one line of this prefix and its access info as JSON: while the lease runs, its
# log is what the server can read of it (a rank's result arrives only when the rank ends).
ACCESS_LOG_PREFIX = "lease access: "
# Of the board session's environment, what a shell on the board needs; the rest (outputs dir,
# rank, attempt) belongs to the lease's own process.
_SKIP_ENV = frozenset(
    {
        "FLEETYARD_OUTPUT_DIR",
        "FLEETYARD_RANK",
        "FLEETYARD_WORLD_SIZE",
        "FLEETYARD_ATTEMPT_ID",
        "FLEETYARD_ASSIGNMENT_ID",
        "FLEETYARD_SIM_FAULTS",
    }
)


class LeaseParams(BaseModel):
    """Parameters of a ``lease`` job."""

    model_config = ConfigDict(extra="forbid")

    ttl_s: float = Field(gt=0, le=MAX_LEASE_S, description="how long the lease lasts from when its boards are granted")
    note: str | None = Field(None, max_length=1000, description="what the boards are for, shown to others")


def access_info(
    *, board_id: str, host: str, device: str, lease_id: int, env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """How an engineer reaches a leased board: the host, the device, and a shell on that host
    with the board's environment (``shell``), or the same through ssh (``ssh``)."""
    board_env = {"FLEETYARD_BOARD_ID": board_id, "FLEETYARD_DEVICE": device, "FLEETYARD_LEASE_ID": str(lease_id)}
    for k, v in sorted((env or {}).items()):
        if k not in _SKIP_ENV and k not in board_env and not k.startswith("FLEETYARD_JOB"):
            board_env[k] = v
    assigns = " ".join(f"{k}={shlex.quote(v)}" for k, v in board_env.items())
    shell = f'env {assigns} "${{SHELL:-/bin/sh}}"'
    return {
        "board_id": board_id,
        "host": host,
        "device": device,
        "env": board_env,
        "shell": shell,
        "ssh": f"ssh -t {shlex.quote(host)} {shlex.quote(shell)}",
    }


def parse_access_line(text: str) -> dict[str, Any] | None:
    """The access info in a log chunk of a lease's rank, if it holds one."""
    for line in text.splitlines():
        if line.startswith(ACCESS_LOG_PREFIX):
            try:
                info = json.loads(line.removeprefix(ACCESS_LOG_PREFIX))
            except ValueError:
                return None
            return info if isinstance(info, dict) else None
    return None


class LeaseWorkload:
    """Holds its board until stopped; a stop is the lease's normal end ("lease released")."""

    kind: ClassVar[str] = "lease"
    params_model: ClassVar[type[BaseModel]] = LeaseParams
    # Nothing of the job's runs: it stays in the worker (see fleetyard.agent.rank_host).
    fleet_code: ClassVar[bool] = True

    def run(self, ctx: WorkloadContext) -> WorkloadResult:
        params = params_as(ctx.params, LeaseParams)
        device = ctx.device or ctx.env.get("FLEETYARD_DEVICE", "")
        # The agent's host id defaults to this machine's name; it is what ssh reaches.
        info = access_info(
            board_id=ctx.board_id, host=socket.gethostname(), device=device, lease_id=ctx.job_id, env=ctx.env
        )
        held_from = time.time()
        ctx.log(
            f"lease {ctx.job_id}: board {ctx.board_id} ({device}) on host {info['host']} is yours"
            f" for {params.ttl_s:g} s unless renewed\n"
            f"  on the host: {info['shell']}\n"
            f"  from afar:   {info['ssh']}\n"
            f"{ACCESS_LOG_PREFIX}{json.dumps(info, sort_keys=True)}\n"
        )
        while not ctx.should_stop():
            time.sleep(STOP_POLL_S)
        held = round(time.time() - held_from, 3)
        ctx.log(f"lease {ctx.job_id}: board {ctx.board_id} released after {held:g} s\n")
        return WorkloadResult(Outcome.SUCCESS, message="lease released", result={**info, "held_s": held})
