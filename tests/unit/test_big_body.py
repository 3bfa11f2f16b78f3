"""A batch of specs and an agent's events are parsed off the event loop, an item at a time: the
answers are those of any other body (a 422 locating each problem), and the OpenAPI still shows
the body's model."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.unit.test_api_flow import Fleet, finish

from fleetyard.server.big_body import _decode


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path)
    with f.client:
        yield f


def test_a_batch_with_bad_items_is_refused_naming_each_and_a_good_one_queues(fleet: Fleet) -> None:
    fleet.register("h1", n=1)
    ok = {"params": {"command": "true"}}
    body = {"jobs": [ok, ok, {"boards": "2", **ok}, {"bogus": 1, **ok}]}
    r = fleet.client.post("/v1/jobs/batch", json=body, headers=fleet.h(fleet.user))
    assert r.status_code == 422, r.text
    fields = [e["field"] for e in r.json()["error"]["detail"]]
    assert fields == ["jobs.2.boards", "jobs.3.bogus"], r.text
    assert "(and 1 more problems)" in r.json()["error"]["message"]
    r = fleet.client.post("/v1/jobs/batch", content=b'{"jobs": [', headers=fleet.h(fleet.user))
    assert r.status_code == 422 and "JSON decode error" in r.json()["error"]["message"], r.text
    r = fleet.client.post("/v1/jobs/batch", json={"jobs": [ok] * 1001}, headers=fleet.h(fleet.user))
    assert r.status_code == 422 and r.json()["error"]["detail"][0]["field"] == "jobs", r.text
    r = fleet.client.post("/v1/jobs/batch", json={"jobs": [ok, ok]}, headers=fleet.h(fleet.user))
    assert r.status_code == 201 and len(r.json()["ids"]) == 2, r.text
    # Not parsed at all for a token that may not submit.
    r = fleet.client.post("/v1/jobs/batch", content=b"not json", headers=fleet.h(fleet.agents["h1"]))
    assert r.status_code == 403, r.text


def test_an_agents_events_parse_as_before(fleet: Fleet) -> None:
    fleet.register("h1", n=1)
    job = fleet.submit()
    assert fleet.rec.schedule(time.time()) == 1
    [a] = fleet.take("h1")
    events = finish(a)
    bad = {"session": "s1", "events": [*events[:1], {**events[1], "seq": -1}]}
    r = fleet.client.post("/v1/agent/events", json=bad, headers=fleet.h(fleet.agents["h1"]))
    assert r.status_code == 422 and r.json()["error"]["detail"][0]["field"] == "events.1.seq", r.text
    fleet.events("h1", events)
    assert fleet.job(job["id"])["state"] == "succeeded"


def test_the_openapi_shows_the_bodies_parsed_off_the_loop(fleet: Fleet) -> None:
    spec = fleet.client.get("/openapi.json").json()
    for path, model in (("/v1/jobs/batch", "JobBatchIn"), ("/v1/agent/events", "EventBatch")):
        body = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert body == {"$ref": f"#/components/schemas/{model}"}
        assert model in spec["components"]["schemas"]


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    max_leaves=10,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["jobs", "session", "x"]), _JSON), st.sampled_from([None, 0, 2]))
def test_a_body_decoded_item_by_item_is_what_json_loads_gives(body: dict[str, object], indent: int | None) -> None:
    raw = json.dumps(body, indent=indent).encode()
    assert _decode(raw, "jobs") == json.loads(raw)


@pytest.mark.parametrize(
    "raw",
    [
        *(b'{"jobs": [', b'{"jobs": [1,]}', b'{"jobs": [1 2]}', b'{"jobs": []', b'{"jobs": []} x'),
        *(b'{"a" 1}', b"{a:1}", b'{"jobs":[1],}', b"", b"\xff", b'{"jobs": [1] "x": 2}'),
    ],
)
def test_what_json_loads_refuses_is_refused(raw: bytes) -> None:
    with pytest.raises(ValueError):
        json.loads(raw)
    with pytest.raises(ValueError):
        _decode(raw, "jobs")
