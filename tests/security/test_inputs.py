"""Inputs that would hurt the fleet, refused with a clear error: YAML that expands without bound,
numbers past what the store holds (see also tests/unit/test_api_bounds.py)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fleetyard.cli._specs import load_specs
from fleetyard.domain.health_config import parse_health_config
from fleetyard.errors import BadRequest
from tests.integration.harness import running_stack
from tests.unit.test_api_flow import Fleet


def laughs(levels: int) -> str:
    """A "billion laughs": each level's list names the one before it ten times (600 bytes for 9
    levels, 10**9 strings once expanded)."""
    lines = ['a0: &a0 "lol"']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path)
    with f.client:
        yield f


def test_a_pipeline_with_yaml_aliases_is_refused_at_once_and_nothing_is_stored(fleet: Fleet) -> None:
    text = laughs(9) + "name: boom\nstages: {}\n"
    started = time.monotonic()
    r = fleet.client.post("/v1/pipelines", json={"text": text}, headers=fleet.h(fleet.user))
    assert r.status_code == 422, r.text
    assert time.monotonic() - started < 5  # refused at the first alias, never expanded
    message = r.json()["error"]["message"]
    assert "alias *a0 is not accepted" in message and "line 2" in message
    assert fleet.client.get("/v1/pipelines", headers=fleet.h(fleet.user)).json() == []


def test_an_inventory_with_yaml_aliases_is_refused(fleet: Fleet) -> None:
    text = "defaults: &d {generation: sim-g1}\nsites:\n  s1:\n    hosts:\n      h1:\n        <<: *d\n"
    r = fleet.client.post("/v1/inventory/diff", json={"text": text}, headers=fleet.h(fleet.admin))
    assert r.status_code == 422, r.text
    assert "alias *d is not accepted" in r.json()["error"]["message"]


def test_job_specs_and_health_configs_refuse_yaml_aliases() -> None:
    with pytest.raises(BadRequest, match=r"jobs\.yaml: not valid YAML: .*alias \*a0 is not accepted"):
        load_specs(laughs(3) + "kind: command\n", "jobs.yaml")
    with pytest.raises(BadRequest, match=r"alias \*a0 is not accepted"):
        parse_health_config(laughs(2))
    # Anchors without aliases, and plain documents, are fine.
    specs, _ = load_specs("kind: command\nparams: &p {command: 'true'}\n", "jobs.yaml")
    assert specs[0].params == {"command": "true"}


def test_a_body_over_its_routes_cap_is_refused_before_it_is_read(fleet: Fleet) -> None:
    body = json.dumps({"params": {"command": "true"}, "generations": ["sim-g1"] * 1_000_000}).encode()
    headers = {**fleet.h(fleet.user), "Content-Type": "application/json"}
    for content in (body, _chunks(body)):  # declared with a length, and sent chunked without one
        r = fleet.client.post("/v1/jobs", content=content, headers=headers)
        assert r.status_code == 413, r.text
        error = r.json()["error"]
        assert error["code"] == "payload_too_large" and "1,048,576 bytes" in error["message"]
        assert "POST /v1/jobs" in error["message"] and len(r.content) < 1000
    # A batch route has a larger cap; a body under the cap goes through as before.
    fleet.register("h1")
    batch = {"jobs": [{"params": {"command": "true"}}] * 1000}
    assert fleet.client.post("/v1/jobs/batch", json=batch, headers=fleet.h(fleet.user)).status_code == 201
    assert fleet.client.post("/v1/jobs", json={"params": {"command": "true"}}, headers=headers).status_code == 201


def _chunks(body: bytes) -> Iterator[bytes]:
    for i in range(0, len(body), 65536):
        yield body[i : i + 65536]


def test_huge_requests_do_not_stall_the_server(tmp_path: Path) -> None:
    """Three 11 MB job submits at once, against a real server: each is refused, and the server
    answers /healthz throughout (it stalled for 65 s when the bodies were parsed)."""
    body = json.dumps({"params": {"command": "true"}, "generations": ["sim-g1"] * 1_100_000}).encode()
    assert len(body) > 11_000_000
    with running_stack(f"sqlite:///{tmp_path / 'fleetyard.db'}", tmp_path) as stack:
        stack.setup()
        stack.start_server()
        headers = {"Authorization": f"Bearer {stack.tokens['alice']}", "Content-Type": "application/json"}
        codes: list[int] = []

        def post() -> None:
            with httpx.Client(timeout=60) as c:
                codes.append(c.post(f"{stack.url}/v1/jobs", content=_chunks(body), headers=headers).status_code)

        threads = [threading.Thread(target=post) for _ in range(3)]
        for t in threads:
            t.start()
        slowest = 0.0
        while any(t.is_alive() for t in threads):
            started = time.monotonic()
            assert httpx.get(f"{stack.url}/healthz", timeout=30).status_code == 200
            slowest = max(slowest, time.monotonic() - started)
        for t in threads:
            t.join()
        assert codes == [413, 413, 413]
        # Generous for a loaded 2-core machine; the stall it guards against was a minute.
        assert slowest < 10, slowest
