"""`GET /metrics`: the Prometheus exposition of the store's counts, through the API in one process
over a real SQLite store."""

from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from tests.unit.test_api_flow import Fleet, finish

from fleetyard.server.metrics import make_registry

Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


def scrape(fleet: Fleet, token: str | None = None) -> Samples:
    """Every sample by its name, then by its sorted labels."""
    r = fleet.client.get("/metrics", headers=fleet.h(token or fleet.user))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == CONTENT_TYPE_LATEST
    out: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def by(samples: Samples, name: str, label: str) -> dict[str, float]:
    """A metric's samples keyed by one label (the metric must have only that label)."""
    return {dict(k)[label]: v for k, v in samples.get(name, {}).items()}


def test_metrics_need_a_token(fleet: Fleet) -> None:
    r = fleet.client.get("/metrics")
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthenticated"
    assert fleet.client.get("/metrics", headers=fleet.h("not-a-token")).status_code == 401
    # Any role will do, an agent's included.
    assert fleet.client.get("/metrics", headers=fleet.h(fleet.agents["h1"])).status_code == 200


def test_an_empty_fleet_exports_the_families_without_samples(fleet: Fleet) -> None:
    got = scrape(fleet)
    for name in ("fleetyard_boards", "fleetyard_hosts", "fleetyard_jobs", "fleetyard_attempts_total"):
        assert name not in got
    [(labels, seconds)] = got["fleetyard_scrape_seconds"].items()
    assert labels == () and 0 <= seconds < 5
    r = fleet.client.get("/metrics", headers=fleet.h(fleet.user))
    types = {f.name: f.type for f in text_string_to_metric_families(r.text)}
    assert types == {
        "fleetyard_boards": "gauge",
        "fleetyard_hosts": "gauge",
        "fleetyard_jobs": "gauge",
        "fleetyard_queue_boards_in_use": "gauge",
        "fleetyard_queue_nominal_boards": "gauge",
        "fleetyard_attempts": "counter",
        "fleetyard_board_transitions": "counter",
        "fleetyard_scrape_seconds": "gauge",
        "fleetyard_breaker_tripped": "gauge",
        "fleetyard_attempts_swept": "counter",
        "fleetyard_store_races_retried": "counter",
        "fleetyard_heartbeat_gap_seconds": "histogram",
    }


def test_heartbeat_gaps_are_a_histogram_per_server_process(fleet: Fleet) -> None:
    fleet.register("h1", n=1)
    for _ in range(3):  # a new session's first beat follows none: two gaps
        r = fleet.client.post("/v1/agent/heartbeat", json={"session": "s1"}, headers=fleet.h(fleet.agents["h1"]))
        assert r.status_code == 200
    got = scrape(fleet)
    assert got["fleetyard_heartbeat_gap_seconds_count"][()] == 2
    assert got["fleetyard_heartbeat_gap_seconds_bucket"][(("le", "0.25"),)] == 2  # back to back here
    fleet.register("h1", n=1, session="s2")
    r = fleet.client.post("/v1/agent/heartbeat", json={"session": "s2"}, headers=fleet.h(fleet.agents["h1"]))
    assert scrape(fleet)["fleetyard_heartbeat_gap_seconds_count"][()] == 2


def test_metrics_follow_boards_jobs_queues_and_attempts(fleet: Fleet) -> None:
    r = fleet.client.put(
        "/v1/queues",
        json={
            "queues": [
                {"name": "compiler", "cohort": "fleet", "nominal": {"sim-g1": 3, "sim-g2": 1}},
                {"name": "robotics", "nominal": {"sim-g1": 2}},
                {"name": "research"},  # unlimited: no nominal, no samples
            ]
        },
        headers=fleet.h(fleet.admin),
    )
    assert r.status_code == 200, r.text
    fleet.register("h1", n=2)
    fleet.register("h2", n=2)
    first = fleet.submit(boards=1)
    assert fleet.rec.schedule(time.time()) == 1
    fleet.submit(boards=1)  # stays queued: no scheduling pass after it
    fleet.submit(fleet.other, boards=1)

    got = scrape(fleet)
    assert got["fleetyard_boards"] == {
        (("generation", "sim-g1"), ("state", "allocated")): 1,
        (("generation", "sim-g1"), ("state", "available")): 3,
    }
    assert by(got, "fleetyard_hosts", "state") == {"online": 2}
    assert got["fleetyard_jobs"] == {
        (("queue", "compiler"), ("state", "running")): 1,
        (("queue", "compiler"), ("state", "queued")): 1,
        (("queue", "robotics"), ("state", "queued")): 1,
    }
    assert got["fleetyard_queue_boards_in_use"] == {(("generation", "sim-g1"), ("queue", "compiler")): 1}
    assert got["fleetyard_queue_nominal_boards"] == {
        (("generation", "sim-g1"), ("queue", "compiler")): 3,
        (("generation", "sim-g2"), ("queue", "compiler")): 1,
        (("generation", "sim-g1"), ("queue", "robotics")): 2,
    }
    assert "fleetyard_attempts_total" not in got  # none finished yet
    # Four boards registered (-> available), one bound (-> allocated).
    assert by(got, "fleetyard_board_transitions_total", "to_state") == {"available": 4, "allocated": 1}

    # The first job's only rank finishes: its board is free again and its attempt counts.
    host = next(h for h in ("h1", "h2") if (assigned := fleet.take(h)))
    [a] = assigned
    assert a["job_id"] == first["id"]
    fleet.events(host, finish(a))
    assert fleet.job(first["id"])["state"] == "succeeded"

    got = scrape(fleet, fleet.admin)
    assert got["fleetyard_boards"] == {(("generation", "sim-g1"), ("state", "available")): 4}
    assert got["fleetyard_jobs"] == {
        (("queue", "compiler"), ("state", "succeeded")): 1,
        (("queue", "compiler"), ("state", "queued")): 1,
        (("queue", "robotics"), ("state", "queued")): 1,
    }
    assert "fleetyard_queue_boards_in_use" not in got
    assert by(got, "fleetyard_attempts_total", "outcome") == {"success": 1}
    assert by(got, "fleetyard_board_transitions_total", "to_state") == {"available": 5, "allocated": 1}


def test_each_app_has_its_own_registry(fleet: Fleet) -> None:
    fleet.register("h1", n=2)
    one, two = make_registry(fleet.store), make_registry(fleet.store)
    assert one is not two
    assert one.get_sample_value("fleetyard_boards", {"state": "available", "generation": "sim-g1"}) == 2
    assert two.get_sample_value("fleetyard_hosts", {"state": "online"}) == 1
