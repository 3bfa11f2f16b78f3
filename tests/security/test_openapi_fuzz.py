"""Every operation of the OpenAPI, a few generated requests each (Schemathesis's strategies,
Hypothesis derandomized: the same requests every run), against the in-process server: none may
answer 5xx, nor name a file of the server's in an error. The admin's token for every operation,
an agent's for the agent's routes (an admin's is refused before their bodies are read).
``FLEETYARD_TEST_LONG=1`` tries ten times as many."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

import fleetyard
from tests.long import FULL
from tests.unit.test_api_flow import Fleet

EXAMPLES = 30 if FULL else 3
SENT = ("method", "url", "headers", "params", "json", "content", "data")  # the API takes no cookies


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path)
    with f.client:
        f.register("h1", n=2)
        yield f


def _fuzz(fleet: Fleet, token: str, path_prefix: str, data_dir: Path) -> list[str]:
    """Every operation under ``path_prefix``, EXAMPLES requests each; what answered 5xx."""
    api = schemathesis.openapi.from_dict(fleet.app.openapi())
    failures: list[str] = []
    tried: list[int] = []
    # No error names a file of the server's: its data dir, its code, its Python.
    server_paths = [str(data_dir), str(Path(fleetyard.__file__).parent), sys.prefix, sys.base_prefix]
    operations = [r.ok() for r in api.get_all_operations()]
    for op in [o for o in operations if o.path.startswith(path_prefix)]:

        @settings(
            max_examples=EXAMPLES,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=op.as_strategy())
        def check(case: schemathesis.Case) -> None:
            sent: dict[str, Any] = {
                k: v
                for k, v in case.as_transport_kwargs(base_url="http://testserver", headers=fleet.h(token)).items()
                if k in SENT
            }
            if isinstance(sent.get("data"), bytes | str):
                sent["content"] = sent.pop("data")
            for name in ("wait", "timeout"):  # a long poll answers the same, sooner
                if isinstance((sent.get("params") or {}).get(name), int | float):
                    sent["params"][name] = 0
            r = fleet.client.request(**sent)
            tried.append(r.status_code)
            if r.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} {sent.get('params')}: {r.status_code}")
            elif r.status_code >= 400 and any(p in r.text for p in server_paths):
                failures.append(f"{case.method} {case.formatted_path}: {r.status_code} names a server path: {r.text}")

        check()
    assert len(operations) >= 70  # the whole API was there to try
    assert len(tried) >= len([o for o in operations if o.path.startswith(path_prefix)])  # each was called
    return failures


def test_no_operation_answers_5xx_or_names_a_server_path(fleet: Fleet, tmp_path: Path) -> None:
    assert _fuzz(fleet, fleet.admin, "/", tmp_path) == []


def test_no_agent_operation_answers_5xx_to_an_agent(fleet: Fleet, tmp_path: Path) -> None:
    assert _fuzz(fleet, fleet.agents["h1"], "/v1/agent/", tmp_path) == []
