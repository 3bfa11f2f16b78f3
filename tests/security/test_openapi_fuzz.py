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
    response = case.call(headers=fleet.h(fleet.admin))
    assert response.status_code < 500, (case.method, case.formatted_path, response.status_code, response.text[:500])
