"""The admission checks that a submit and the pipeline shell share (fleetyard.store.admission).

(The kinds' own artifact checks, against a registry stub, are in test_admission.)
"""

from __future__ import annotations

import hashlib

import pytest
from tests.unit.test_api_flow import Fleet

from fleetyard.domain.spec import JobSpec
from fleetyard.errors import BadRequest, UnschedulableJob
from fleetyard.store.admission import BlobNotLocal, FleetView, StoreRegistry, Within, check_jobs

SHA = "ab" * 32


def _check(fleet: Fleet, *specs: dict, team: str = "compiler", within: bool = False) -> list[str]:
    jobs = [JobSpec.model_validate({"params": {"command": "true"}, **s}) for s in specs]
    view = FleetView()
    if within:
        with fleet.store.write() as conn:
            reader = Within(conn)
            return check_jobs(reader, jobs, lambda _: team, view=view, registry=StoreRegistry(reader, view))[1]
    registry = StoreRegistry(fleet.store, view, fleet.app.state.blobs)
    return check_jobs(fleet.store, jobs, lambda _: team, view=view, registry=registry)[1]


@pytest.mark.parametrize("within", [False, True], ids=["store", "in-transaction"])
def test_check_jobs_admits_what_can_run_and_refuses_what_never_can(fleet: Fleet, within: bool) -> None:
    fleet.register("h1", n=2)
    assert _check(fleet, {}, {"generations": ["sim-g1"], "boards": 2}, within=within) == ["compiler", "compiler"]
    cases = [
        ({"params": {"nope": 1}}, BadRequest, "params"),
        ({"generations": ["sim-g9"]}, UnschedulableJob, "sim-g9"),
        ({"boards": 3}, UnschedulableJob, "can never run"),
        ({"priority_class": "platinum"}, BadRequest, "unknown priority_class 'platinum'"),
        ({"firmware": ">=9"}, UnschedulableJob, "no board runs firmware"),
        ({"kind": "validate", "params": {"artifact": SHA}}, BadRequest, f"artifact {SHA} is not registered"),
    ]
    for spec, error, text in cases:
        with pytest.raises(error) as e:
            _check(fleet, spec, within=within)
        assert text in e.value.message, (spec, e.value.message)
    # In a batch, the refusal names its job.
    with pytest.raises(UnschedulableJob) as e:
        _check(fleet, {}, {"generations": ["sim-g9"]}, within=within)
    assert e.value.message.startswith("jobs[1]: ")


def test_without_the_blob_files_a_known_blob_leaves_its_checks_to_the_board(fleet: Fleet) -> None:
    """The controller may not reach the blob store's files: a blob the store knows is admitted
    (the board checks its content), one never uploaded is refused as at submit."""
    view = FleetView()
    registry = StoreRegistry(fleet.store, view)
    assert registry.blob_path(SHA) is None  # never uploaded
    sha = hashlib.sha256(b"x").hexdigest()
    r = fleet.client.put(f"/v1/blobs/{sha}", content=b"x", headers=fleet.h(fleet.user))
    assert r.status_code in (200, 201), r.text
    with pytest.raises(BlobNotLocal):
        registry.blob_path(sha)
    assert StoreRegistry(fleet.store, view, fleet.app.state.blobs).blob_path(sha) is not None
