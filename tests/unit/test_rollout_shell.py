"""The rollout shell in this process (server app, reconciler, SQLite): capacity against the queues'
quotas, the acts it carries out on the store, and the figures it gates with."""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from tests.fast_health import FAST_HEALTH
from tests.unit.ended_ranks import ended_ranks
from tests.unit.test_api_flow import Fleet

from fleetyard.controller.rollouts import Roller, figures, queue_demand
from fleetyard.domain.firmware_image import sim_image
from fleetyard.domain.queue_config import parse_queue_config
from fleetyard.policy.rollout import Do
from fleetyard.store import tables as t
from fleetyard.store.queues import apply_config


def _push(fleet: Fleet, version: str) -> None:
    data = sim_image("sim-g1", version, payload=b"fw")  # the app here takes small blobs
    sha = hashlib.sha256(data).hexdigest()
    h = fleet.h(fleet.admin)
    assert fleet.client.put(f"/v1/blobs/{sha}", content=data, headers=h).status_code < 300
    body = {"generation": "sim-g1", "version": version, "sha256": sha}
    assert fleet.client.post("/v1/firmware", json=body, headers=h).status_code == 201


def _rollout(fleet: Fleet, **plan: object) -> dict:  # type: ignore[type-arg]
    body = {"generation": "sim-g1", "version": "2.0.0", "reason": "t", "control": 0, "soak_s": 0, **plan}
    r = fleet.client.post("/v1/rollouts", json=body, headers=fleet.h(fleet.admin))
    assert r.status_code == 201, r.text
    return dict(r.json())


def test_the_queues_nominal_quotas_bound_what_a_wave_drains(fleet: Fleet) -> None:
    fleet.register("h1", n=4)
    fleet.beat("h1")
    _push(fleet, "1.0")
    _push(fleet, "2.0.0")
    with fleet.store.write() as conn:
        config = parse_queue_config({"queues": [{"name": "compiler", "nominal": {"sim-g1": 3}}]})
        apply_config(conn, config, by="t", at=0.0)
    # The compiler queue's work asks for 3 boards: of 4 in service, one may go for the rollout.
    fleet.submit(boards=3, generations=["sim-g1"], params={"command": "true"})
    with fleet.store.write() as conn:
        assert queue_demand(conn, "sim-g1", ["compiler"]) == {"compiler": 3}
    r = _rollout(fleet, canary=4, shares=[1.0])
    with fleet.store.write() as conn:
        done = Roller(FAST_HEALTH).pass_(conn, 1e12)
    drained = [a for rid, a in done if rid == r["id"] and a.do is Do.DRAIN]
    assert len(drained) == 1
    status = fleet.client.get(f"/v1/rollouts/{r['id']}", headers=fleet.h(fleet.admin)).json()
    assert sum(1 for b in status["boards"] if b["step"] != "pending") == 1
    [moved] = [b for b in status["boards"] if b["step"] != "pending"]
    # Drained at once (it was free) and, drained, flashed in the same pass.
    assert moved["step"] == "flashing" and moved["op_id"] is not None and moved["state"] == "servicing"
    with fleet.store.read() as conn:
        op = conn.execute(sa.select(t.board_ops).where(t.board_ops.c.id == moved["op_id"])).one()
    assert op.op == "flash" and op.version == "2.0.0"


def test_figures_count_checks_ranks_validations_and_benchmarks_by_board(fleet: Fleet) -> None:
    fleet.register("h1", n=2)
    with fleet.store.write() as conn:
        jobs = [
            ("health-check", "succeeded", "success", {}),
            ("health-check", "failed", "user_error", {}),
            ("command", "failed", "infra_error", {}),
            ("validate", "succeeded", "success", {}),
            ("bench", "succeeded", "success", {"samples_per_s": 120.0}),
        ]
        for kind, state, outcome, result in jobs:
            ranks = [{"board_id": "h1-b0", "outcome": outcome, "result": result}]
            ended_ranks(conn, kind, ranks, job_state=state, spec={"params": {"x": 1}})
        f = figures(conn, ["h1-b0"], since=5.0, flashes=2, flash_failures=1)
        assert (f.checks, f.check_failures, f.attempts, f.infra_errors) == (2, 1, 3, 1)
        assert (f.validations, f.validation_passes, f.flashes, f.flash_failures) == (1, 1, 2, 1)
        assert list(f.throughput.values()) == [[120.0]]
        assert figures(conn, ["h1-b1"], since=5.0).checks == 0
        assert figures(conn, ["h1-b0"], since=11.0).checks == 0  # before the window


def test_figures_leave_out_ranks_that_could_not_run(fleet: Fleet) -> None:
    """A host blip is not the firmware's doing: a check or a job its host's loss ended counts
    nowhere (not as a check failure, not as an infra error); the board failing under it does."""
    fleet.register("h1", n=1)
    with fleet.store.write() as conn:
        ranks = [
            ("health-check", "infra_error", "host_lost"),
            ("health-check", "preempted", "agent_stopped"),
            ("health-check", "infra_error", "board_fault"),
            ("health-check", "success", "workload"),
            ("command", "infra_error", "host_lost"),
            ("command", "infra_error", "agent_error"),
            ("command", "infra_error", "board_fault"),
        ]
        for kind, outcome, cause in ranks:
            ended_ranks(conn, kind, [{"board_id": "h1-b0", "outcome": outcome, "cause": cause}])
        f = figures(conn, ["h1-b0"], since=5.0)
    assert (f.checks, f.check_failures) == (2, 1)
    assert (f.attempts, f.infra_errors) == (1, 1)
