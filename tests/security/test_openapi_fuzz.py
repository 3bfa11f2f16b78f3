"""Every operation of the OpenAPI, a few generated requests each (Schemathesis), with an admin's
token: none may answer 5xx. Bounded for the suite's budget (3 examples an operation, derandomized:
the same requests every run); ``FLEETYARD_TEST_LONG=1`` tries 30."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from tests.long import FULL
from tests.unit.test_api_flow import Fleet

EXAMPLES = 30 if FULL else 3


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    f = Fleet(tmp_path_factory.mktemp("fuzz"))
    with f.client:
        f.register("h1", n=2)
        yield f


@pytest.fixture(scope="module")
def api(fleet: Fleet) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_asgi("/openapi.json", fleet.app)


schema = schemathesis.pytest.from_fixture("api")


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_operation_answers_5xx(case: schemathesis.Case, fleet: Fleet) -> None:
    _no_long_polls(case)
    response = case.call(headers=fleet.h(fleet.admin))
    assert response.status_code < 500, (case.method, case.formatted_path, response.status_code, response.text[:500])


@schema.include(path_regex="^/v1/agent/").parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_agent_operation_answers_5xx_to_an_agent(case: schemathesis.Case, fleet: Fleet) -> None:
    """The agent's routes, with an agent's token (the admin's is refused before its body is read)."""
    _no_long_polls(case)
    response = case.call(headers=fleet.h(fleet.agents["h1"]))
    assert response.status_code < 500, (case.method, case.formatted_path, response.status_code, response.text[:500])


def _no_long_polls(case: schemathesis.Case) -> None:
    """A long poll (``wait``, ``timeout``) answers the same sooner: the suite's time is budgeted."""
    for name in ("wait", "timeout"):
        if case.query and isinstance(case.query.get(name), int | float):
            case.query[name] = 0
