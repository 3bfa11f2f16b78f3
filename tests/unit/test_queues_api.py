"""Team queues and priority classes through the API, in one process over a real SQLite store:
configuration, role checks, validation, the numbers `GET /v1/queues` reports, submit-time refusals,
and the `fleetyard queues` commands against the same app."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.unit.test_api_flow import Fleet
from typer.testing import CliRunner

from fleetyard.cli import queues as cli_queues
from fleetyard.cli.main import app as cli_app
from fleetyard.client import Client
from fleetyard.domain.auth import Role
from fleetyard.domain.queue_config import parse_queue_config
from fleetyard.errors import BadRequest
from fleetyard.policy.queues import DEFAULT_PRIORITY_CLASSES
from fleetyard.store import queues as store_queues
from fleetyard.store import tables as t
from fleetyard.store.tokens import create_token

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "config" / "queues.yaml"


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path)
    f.operator = create_token(f.url, name="olga", role=Role.OPERATOR)  # type: ignore[attr-defined]
    with f.client:
        yield f
    f.store.dispose()


def _config(**over: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "queues": [
            {"name": "compiler", "cohort": "fleet", "nominal": {"sim-g1": 1}},
            {"name": "robotics", "cohort": "fleet", "nominal": {"sim-g1": 2}, "borrowing_limit": {"sim-g1": 0}},
        ]
    }
    config.update(over)
    return config


def _apply(fleet: Fleet, config: dict[str, Any], token: str | None = None) -> Any:
    return fleet.client.put("/v1/queues", json=config, headers=fleet.h(token or fleet.admin))


def _queues(fleet: Fleet) -> dict[str, dict[str, Any]]:
    r = fleet.client.get("/v1/queues", headers=fleet.h(fleet.user))
    assert r.status_code == 200, r.text
    return {q["name"]: q for q in r.json()}


def _gen(queue: dict[str, Any], gen: str) -> dict[str, Any]:
    [g] = [g for g in queue["generations"] if g["generation"] == gen]
    return g


def test_apply_list_put_delete(fleet: Fleet) -> None:
    assert _queues(fleet) == {}
    r = _apply(fleet, _config())
    assert r.status_code == 200, r.text
    assert [q["name"] for q in r.json()] == ["compiler", "robotics"]
    qs = _queues(fleet)
    assert qs["compiler"]["configured"] and qs["compiler"]["cohort"] == "fleet"
    assert qs["compiler"]["nominal"] == {"sim-g1": 1} and qs["compiler"]["updated_by"] == "admin"
    assert _gen(qs["robotics"], "sim-g1") | {"headroom": None} == {
        "generation": "sim-g1",
        "nominal": 2,
        "borrowing_limit": 0,
        "in_use": 0,
        "borrowed": 0,
        "headroom": None,
        "pending_jobs": 0,
        "pending_boards": 0,
    }
    assert _gen(qs["robotics"], "sim-g1")["headroom"] == 2  # nominal only: its borrowing limit is 0
    assert _gen(qs["compiler"], "sim-g1")["headroom"] == 3  # 1 + the 2 robotics leaves unused

    r = fleet.client.put(
        "/v1/queues/ai",
        json={"nominal": {"sim-g2": 4}},
        headers=fleet.h(fleet.operator),  # type: ignore[attr-defined]
    )
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "ai" and r.json()["nominal"] == {"sim-g2": 4} and r.json()["cohort"] is None
    r = fleet.client.put("/v1/queues/ai", json={"cohort": "fleet"}, headers=fleet.h(fleet.admin))
    assert r.status_code == 200 and r.json()["nominal"] is None  # replaced whole: now unlimited
    assert fleet.client.get("/v1/queues/ai", headers=fleet.h(fleet.user)).json()["cohort"] == "fleet"

    assert fleet.client.delete("/v1/queues/ai", headers=fleet.h(fleet.admin)).status_code == 204
    assert fleet.client.get("/v1/queues/ai", headers=fleet.h(fleet.user)).status_code == 404
    r = fleet.client.delete("/v1/queues/ai", headers=fleet.h(fleet.admin))
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"

    # Applying replaces everything: robotics is gone, compiler changed.
    r = _apply(fleet, {"queues": [{"name": "compiler", "nominal": {"sim-g1": 5}}]})
    assert [q["name"] for q in r.json()] == ["compiler"] and r.json()[0]["cohort"] is None


def test_priority_classes_default_then_configured(fleet: Fleet) -> None:
    r = fleet.client.get("/v1/priority-classes", headers=fleet.h(fleet.agents["h1"]))
    assert r.status_code == 200
    assert [(c["name"], c["value"], c["default"]) for c in r.json()] == [
        (c.name, c.value, c.default) for c in DEFAULT_PRIORITY_CLASSES
    ]
    classes = [{"name": "low", "value": 1, "default": True}, {"name": "urgent", "value": 9}]
    assert _apply(fleet, _config(priority_classes=classes)).status_code == 200
    got = fleet.client.get("/v1/priority-classes", headers=fleet.h(fleet.user)).json()
    assert [(c["name"], c["default"]) for c in got] == [("urgent", False), ("low", True)]
    # A config without priority_classes brings the defaults back.
    assert _apply(fleet, _config()).status_code == 200
    got = fleet.client.get("/v1/priority-classes", headers=fleet.h(fleet.user)).json()
    assert [c["name"] for c in got] == ["ci-gate", "interactive", "batch", "scavenger"]


def test_only_admins_and_operators_configure(fleet: Fleet) -> None:
    r = _apply(fleet, _config(), token=fleet.user)
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert fleet.client.put("/v1/queues/compiler", json={}, headers=fleet.h(fleet.user)).status_code == 403
    assert fleet.client.delete("/v1/queues/compiler", headers=fleet.h(fleet.user)).status_code == 403
    assert fleet.client.put("/v1/queues/compiler", json={}, headers=fleet.h(fleet.agents["h1"])).status_code == 403
    assert fleet.client.get("/v1/queues").status_code == 401
    assert _apply(fleet, _config(), token=fleet.operator).status_code == 200  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("config", "says"),
    [
        ({"queues": [{"name": "a"}, {"name": "a"}]}, "a listed more than once"),
        ({"queues": [{"name": "a", "nominal": {"sim-g1": -1}}]}, "nominal.sim-g1 is -1"),
        ({"queues": [{"name": "a", "nominal": {"sim-g1": 1}, "borrowing_limit": {"sim-g1": -2}}]}, "use 0 or more"),
        ({"queues": [{"name": "a", "borrowing_limit": {"sim-g1": 2}}]}, "give it a nominal quota"),
        ({"queues": [], "priority_classes": [{"name": "x", "value": 1}]}, "exactly one class must have default"),
        (
            {"queues": [], "priority_classes": [{"name": "x", "value": 1, "default": True}] * 2},
            "x listed more than once",
        ),
        (
            {
                "queues": [],
                "priority_classes": [
                    {"name": "x", "value": 1, "default": True},
                    {"name": "y", "value": 2, "default": True},
                ],
            },
            "found 2 (x, y)",
        ),
        ({"queues": [], "priority_classes": []}, "leave priority_classes out"),
        ({"queues": [{"name": "a/b"}]}, "must start with a letter or digit"),
        ({"queues": [{"name": "a", "quota": 3}]}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_configs_are_refused_naming_the_problem(fleet: Fleet, config: dict[str, Any], says: str) -> None:
    r = _apply(fleet, config)
    assert r.status_code == 422 and r.json()["error"]["code"] == "bad_request"
    assert says in r.json()["error"]["message"], r.json()
    with pytest.raises(BadRequest, match=r"f\.yaml: ") as exc:  # the CLI's local check says the same
        parse_queue_config(config, where="f.yaml")
    assert says in exc.value.message
    assert _queues(fleet) == {}  # nothing applied


def test_a_cohort_of_one_queue_is_allowed(fleet: Fleet) -> None:
    r = _apply(fleet, {"queues": [{"name": "solo", "cohort": "alone", "nominal": {"sim-g1": 1}}]})
    assert r.status_code == 200 and r.json()[0]["cohort"] == "alone"


def test_put_one_queue_validates(fleet: Fleet) -> None:
    r = fleet.client.put("/v1/queues/a", json={"borrowing_limit": {"sim-g1": 1}}, headers=fleet.h(fleet.admin))
    assert r.status_code == 422 and "give it a nominal quota" in r.json()["error"]["message"]
    r = fleet.client.put("/v1/queues/a.b c", json={}, headers=fleet.h(fleet.admin))
    assert r.status_code == 422 and "must start with a letter or digit" in r.json()["error"]["message"]


def test_in_use_borrowed_and_pending_after_binding(fleet: Fleet) -> None:
    fleet.register("h1", n=3, gen="sim-g1")
    fleet.register("h2", n=1, gen="sim-g2")
    assert _apply(fleet, _config()).status_code == 200
    running = fleet.submit(boards=2, generations=["sim-g1"])  # compiler: 1 nominal + 1 borrowed
    assert fleet.rec.schedule(time.time()) == 1
    assert fleet.job(running["id"])["state"] == "running"
    fleet.submit(boards=2, generations=["sim-g1"])  # waits: one board left
    fleet.submit(boards=1)  # any generation: counts under each
    fleet.submit(fleet.other, boards=2, generations=["sim-g1"])  # robotics: within nominal, queued

    qs = _queues(fleet)
    compiler, robotics = qs["compiler"], qs["robotics"]
    g1 = _gen(compiler, "sim-g1")
    assert (g1["in_use"], g1["borrowed"], g1["nominal"]) == (2, 1, 1)
    assert compiler["pending_jobs"] >= 1 and compiler["pending_boards"] >= 2
    assert g1["pending_jobs"] == compiler["pending_jobs"]  # both pending compiler jobs may use sim-g1
    r1 = _gen(robotics, "sim-g1")
    assert (r1["in_use"], r1["pending_jobs"], r1["pending_boards"], r1["headroom"]) == (0, 1, 2, 2)
    assert [g["generation"] for g in robotics["generations"]] == ["sim-g1"]

    one = fleet.client.get("/v1/queues/compiler", headers=fleet.h(fleet.user)).json()
    assert one == compiler


def test_teams_without_a_queue_show_as_unlimited(fleet: Fleet) -> None:
    fleet.register("h1", n=2)
    job = fleet.submit(boards=1, generations=["sim-g1"])
    fleet.rec.schedule(time.time())
    assert fleet.job(job["id"])["state"] == "running"
    q = fleet.client.get("/v1/queues/compiler", headers=fleet.h(fleet.user)).json()
    assert not q["configured"] and q["nominal"] is None and q["updated_by"] is None
    g = _gen(q, "sim-g1")
    assert (g["nominal"], g["in_use"], g["borrowed"], g["headroom"]) == (None, 1, 0, None)
    assert fleet.client.get("/v1/queues/nobody", headers=fleet.h(fleet.user)).status_code == 404


def test_usage_is_reported(fleet: Fleet) -> None:
    with fleet.store.write() as conn:
        conn.execute(t.queue_usage.insert().values(queue="ai", usage=1234.5, updated_at=time.time()))
        assert store_queues.read_usage(conn) == {"ai": 1234.5}
    assert _queues(fleet)["ai"]["usage"] == 1234.5


def test_unknown_priority_class_is_refused_at_submit(fleet: Fleet) -> None:
    fleet.register("h1")
    r = fleet.client.post(
        "/v1/jobs", json={"params": {"command": "true"}, "priority_class": "vip"}, headers=fleet.h(fleet.user)
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "bad_request"
    msg = r.json()["error"]["message"]
    assert "unknown priority_class 'vip'" in msg and "ci-gate, interactive, batch, scavenger" in msg
    assert fleet.submit(priority_class="ci-gate")["state"] == "queued"
    r = fleet.client.post(
        "/v1/jobs/batch",
        json={"jobs": [{"params": {"command": "true"}}, {"params": {"command": "true"}, "priority_class": "x"}]},
        headers=fleet.h(fleet.user),
    )
    assert r.status_code == 422 and r.json()["error"]["message"].startswith("jobs[1]: unknown priority_class")


def test_a_job_its_queue_can_never_hold_is_refused_at_submit(fleet: Fleet) -> None:
    fleet.register("h1", n=2, gen="sim-g1")
    fleet.register("h2", n=2, gen="sim-g2")
    # compiler: 1 of sim-g1 + 2 robotics may lend = 3 at most; nothing of sim-g2 and nobody lends it.
    assert _apply(fleet, _config()).status_code == 200

    def refused(**spec: Any) -> str:
        r = fleet.client.post("/v1/jobs", json={"params": {"command": "true"}, **spec}, headers=fleet.h(fleet.user))
        assert r.status_code == 422 and r.json()["error"]["code"] == "unschedulable", r.text
        return str(r.json()["error"]["message"])

    assert "queue compiler can never hold 1 boards of sim-g2" in refused(generations=["sim-g2"])
    # The fleet's own check comes first: 4 boards of sim-g1 do not exist at all.
    assert "queue" not in refused(boards=4, generations=["sim-g1"])
    # Naming no generation: every generation of the fleet is tried; 2 boards fit sim-g1's ceiling.
    assert fleet.submit(boards=2)["state"] == "queued"
    assert fleet.submit(boards=2, generations=["sim-g1", "sim-g2"])["state"] == "queued"
    # robotics may not borrow (limit 0): 2 boards of sim-g1 fit its nominal, 3 would not even exist.
    assert fleet.submit(fleet.other, boards=2, generations=["sim-g1"])["state"] == "queued"
    # Once the quota is raised, the same job is accepted.
    r = fleet.client.put("/v1/queues/compiler", json={"nominal": {"sim-g2": 1}}, headers=fleet.h(fleet.admin))
    assert r.status_code == 200
    assert fleet.submit(generations=["sim-g2"])["state"] == "queued"
    # A team without a queue is unlimited.
    assert fleet.submit(fleet.admin, team="ai", generations=["sim-g2"], boards=2)["state"] == "queued"


class InProcessClient(Client):
    """The SDK over the in-process app: a TestClient is an httpx.Client."""

    def __init__(self, http: TestClient, token: str) -> None:
        super().__init__(server="http://testserver", token=token)
        self._http.close()
        http.headers["Authorization"] = f"Bearer {token}"
        self._http = http

    def close(self) -> None:  # the fixture owns the TestClient
        pass


def test_cli_against_the_in_process_app(fleet: Fleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_queues, "client", lambda _ctx: InProcessClient(fleet.client, fleet.admin))
    runner = CliRunner()

    res = runner.invoke(cli_app, ["queues", "apply", str(EXAMPLE)])
    assert res.exit_code == 0, res.output
    assert "compiler" in res.stdout and "robotics" in res.stdout and "sim-g3" in res.stdout

    res = runner.invoke(cli_app, ["queues", "ls", "--json"])
    assert res.exit_code == 0, res.output
    got = {q["name"]: q for q in json.loads(res.stdout)}
    assert set(got) == {"ai", "compiler", "robotics"}
    assert got["ai"]["nominal"] == {"sim-g1": 8, "sim-g2": 24, "sim-g3": 16}

    res = runner.invoke(cli_app, ["queues", "ls"])
    assert res.exit_code == 0 and "BORROWING LIMIT" in res.stdout and "PENDING JOBS/BOARDS" in res.stdout

    res = runner.invoke(cli_app, ["queues", "show", "compiler"])
    assert res.exit_code == 0 and "HEADROOM" in res.stdout and "fleet" in res.stdout

    res = runner.invoke(cli_app, ["queues", "classes"])
    assert res.exit_code == 0 and "ci-gate" in res.stdout and "batch" in res.stdout and "MAX LOST" in res.stdout
    res = runner.invoke(cli_app, ["queues", "classes", "--json"])
    lost = {c["name"]: c["max_lost_s"] for c in json.loads(res.stdout)}
    assert lost == {"ci-gate": None, "interactive": None, "batch": 300.0, "scavenger": 300.0}  # as the file says

    bad = tmp_path / "bad.yaml"
    bad.write_text("queues:\n  - name: ai\n    nominal: {sim-g1: -3}\n")
    res = runner.invoke(cli_app, ["queues", "apply", str(bad)])
    assert res.exit_code == 1
    assert f"{bad}: queues[0] (ai): queue ai: nominal.sim-g1 is -3" in res.stderr

    res = runner.invoke(cli_app, ["queues", "show", "nobody"])
    assert res.exit_code == 1 and "no queue 'nobody'" in res.stderr


def test_sdk_methods(fleet: Fleet) -> None:
    fy = InProcessClient(fleet.client, fleet.admin)
    applied = fy.apply_queues({"queues": [{"name": "ai", "nominal": {"sim-g1": 2}}]})
    assert [q.name for q in applied] == ["ai"]
    assert fy.queue("ai").nominal == {"sim-g1": 2}
    assert fy.put_queue("robotics", {"cohort": "fleet"}).cohort == "fleet"
    assert [q.name for q in fy.queues()] == ["ai", "robotics"]
    fy.delete_queue("robotics")
    assert fy.priority_classes()[0].name == "ci-gate"
    with pytest.raises(BadRequest, match="queue config: queues"):
        fy.apply_queues({"queues": [{"name": "x", "nominal": {"g": -1}}]})


def test_a_priority_class_limited_to_teams_refuses_the_others_with_a_403_naming_it(fleet: Fleet) -> None:
    fleet.register("h1", n=2)
    classes = [
        {"name": "ci-gate", "value": 1000, "teams": ["compiler"]},
        {"name": "batch", "value": 100, "default": True},
    ]
    assert _apply(fleet, _config(priority_classes=classes)).status_code == 200
    got = fleet.client.get("/v1/priority-classes", headers=fleet.h(fleet.user)).json()
    assert [(c["name"], c["teams"]) for c in got] == [("ci-gate", ["compiler"]), ("batch", None)]
    spec = {"params": {"command": "true"}, "priority_class": "ci-gate"}
    r = fleet.client.post("/v1/jobs", json=spec, headers=fleet.h(fleet.other))  # bob: team robotics
    assert r.status_code == 403, r.text
    message = r.json()["error"]["message"]
    assert "team 'robotics' may not submit in priority class 'ci-gate'" in message and "compiler" in message
    batch = {"jobs": [{"params": {"command": "true"}}, spec]}
    r = fleet.client.post("/v1/jobs/batch", json=batch, headers=fleet.h(fleet.other))
    assert r.status_code == 403 and r.json()["error"]["message"].startswith("jobs[1]: ")
    assert fleet.client.get("/v1/jobs", headers=fleet.h(fleet.admin)).json() == []  # all or none
    # The team it names submits in it; the others in the default class.
    assert fleet.client.post("/v1/jobs", json=spec, headers=fleet.h(fleet.user)).status_code == 201
    r = fleet.client.post("/v1/jobs", json={"params": {"command": "true"}}, headers=fleet.h(fleet.other))
    assert r.status_code == 201, r.text
