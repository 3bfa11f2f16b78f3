"""Numbers past what the store holds, in every integer path and query parameter of the API: a
clear 422, never a 500 (the database driver overflows on integers of 2**63 and more)."""

from __future__ import annotations

from typing import Any

import pytest
from tests.unit.test_api_flow import Fleet

HUGE = 2**63  # one past the largest 64-bit id
WAY_TOO_BIG = 10**30


# The dashboard's pages are not in the OpenAPI.
PAGES = [
    ("GET", "/ui/jobs/{job_id}", "job_id", "path"),
    ("GET", "/ui/pipelines/{run_id}", "run_id", "path"),
    ("GET", "/ui/validations/{job_id}", "job_id", "path"),
    ("GET", "/ui/benchmarks/{job_id}", "job_id", "path"),
    ("GET", "/ui/robotics/{job_id}", "job_id", "path"),
    ("GET", "/ui/evals", "a", "query"),
    ("GET", "/ui/evals/compare", "a", "query"),
    ("GET", "/ui/evals/compare", "b", "query"),
]


def _integer_params(fleet: Fleet) -> list[tuple[str, str, str, str]]:
    """(method, path template, parameter, where) of every integer parameter in the OpenAPI, and
    of the dashboard's pages."""
    spec: dict[str, Any] = fleet.app.openapi()
    out = list(PAGES)
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            for param in op.get("parameters", []):
                schema = param.get("schema", {})
                types = {schema.get("type")} | {s.get("type") for s in schema.get("anyOf", [])}
                if "integer" in types or schema.get("items", {}).get("type") == "integer":
                    out.append((method.upper(), path, param["name"], param["in"]))
    return out


def test_every_integer_parameter_refuses_a_number_the_store_cannot_hold(fleet: Fleet) -> None:
    params = _integer_params(fleet)
    paths = {(m, p) for m, p, _, where in params if where == "path"}
    assert len(paths) >= 20, sorted(paths)  # jobs, leases, pipelines, rollouts, the dashboard's pages
    answers = []
    for method, path, name, where in params:
        for value in (HUGE, WAY_TOO_BIG):
            url, query = path, {}
            for m, p, other, w in params:
                if (m, p) == (method, path) and w == "path":
                    url = url.replace("{" + other + "}", str(value if other == name else 1))
            if where == "query":
                query[name] = value
                if (method, path) == ("GET", "/ui/evals/compare") and name == "b":
                    query["a"] = 1
            r = fleet.client.request(method, url, params=query, json={}, headers=fleet.h(fleet.admin))
            answers.append((method, path, name, value, r.status_code))
    assert [a for a in answers if a[-1] >= 500] == []
    # Where the number is the one looked at, it is the parameter that is refused, by name.
    r = fleet.client.get(f"/v1/jobs/{HUGE}", headers=fleet.h(fleet.admin))
    assert r.status_code == 422 and "job_id" in r.text
    r = fleet.client.get("/v1/jobs/1/logs", params={"after": WAY_TOO_BIG}, headers=fleet.h(fleet.admin))
    assert r.status_code == 422 and "after" in r.text


@pytest.mark.parametrize("value", [-1, 0, 2**63 - 1])
def test_an_id_in_range_that_names_nothing_is_a_404(fleet: Fleet, value: int) -> None:
    r = fleet.client.get(f"/v1/jobs/{value}", headers=fleet.h(fleet.admin))
    assert r.status_code == (422 if value < 0 else 404), r.text


@pytest.mark.parametrize(
    ("path", "param"),
    [("/v1/jobs", "state"), ("/v1/boards", "state"), ("/v1/hosts", "state"), ("/v1/pipelines", "state")],
)
def test_an_unknown_filter_value_is_refused_not_an_empty_answer(fleet: Fleet, path: str, param: str) -> None:
    r = fleet.client.get(path, params={param: "bogus"}, headers=fleet.h(fleet.admin))
    assert r.status_code == 422, r.text
    assert param in r.json()["error"]["message"] and "bogus" in r.text


@pytest.mark.parametrize(
    ("field", "value"),
    [("boards", True), ("boards", "2"), ("boards", 2.5), ("priority", False), ("time_limit_s", True),
     ("placement_required", "yes"), ("max_infra_retries", "1")],
)  # fmt: skip
def test_a_spec_field_of_the_wrong_type_is_refused_not_coerced(fleet: Fleet, field: str, value: object) -> None:
    fleet.register("h1", n=2)
    r = fleet.client.post("/v1/jobs", json={"params": {"command": "true"}, field: value}, headers=fleet.h(fleet.user))
    assert r.status_code == 422, r.text
    assert field in r.json()["error"]["message"]


def test_a_spec_list_past_its_bound_is_refused(fleet: Fleet) -> None:
    fleet.register("h1", n=1)
    spec = {"params": {"command": "true"}, "generations": [f"g{i}" for i in range(65)]}
    r = fleet.client.post("/v1/jobs", json=spec, headers=fleet.h(fleet.user))
    assert r.status_code == 422 and "generations" in r.json()["error"]["message"]
    assert len(r.content) < 4096  # the answer names the problem, it does not echo the list


# Where the API takes free-form JSON on purpose: a job's params (its kind's model validates them at
# submit), a rank's result (what the workload returned) and a pipeline run's overrides; the
# route's body cap bounds them.
FREE_FORM = {"params", "result", "matrix"}


def _unbounded(spec: dict[str, Any], schema: dict[str, Any], where: str, seen: set[str]) -> list[str]:
    """Every string, list and map under ``schema`` with no upper bound on its length."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        if name in seen:
            return []
        return _unbounded(spec, spec["components"]["schemas"][name], where, seen | {name})
    out: list[str] = []
    for alt in schema.get("anyOf", []) + schema.get("allOf", []) + schema.get("oneOf", []):
        out += _unbounded(spec, alt, where, seen)
    kind = schema.get("type")
    if kind == "string" and not {"maxLength", "enum", "const", "pattern", "format"} & set(schema):
        out.append(where)
    if kind == "array":
        if "maxItems" not in schema:
            out.append(f"{where}[]")
        out += _unbounded(spec, schema.get("items", {}), f"{where}[i]", seen)
    if kind == "object" or "properties" in schema:
        for name, sub in schema.get("properties", {}).items():
            if name not in FREE_FORM:
                out += _unbounded(spec, sub, f"{where}.{name}", seen)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            if "maxProperties" not in schema:
                out.append(f"{where}{{}}")
            keys = schema.get("propertyNames", {})
            if "maxLength" not in keys and "pattern" not in keys:
                out.append(f"{where}{{key}}")
            out += _unbounded(spec, extra, f"{where}{{value}}", seen)
    return out


def test_every_string_list_and_map_a_request_body_takes_is_bounded(fleet: Fleet) -> None:
    spec: dict[str, Any] = fleet.app.openapi()
    found: list[str] = []
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            body = op.get("requestBody", {}).get("content", {}).get("application/json")
            if body is not None:
                found += _unbounded(spec, body["schema"], f"{method.upper()} {path}", set())
    assert found == []
