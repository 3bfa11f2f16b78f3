"""The SDK and the CLI over real HTTP, against a small scripted server on loopback.

The real server is tested with the CLI in tests/integration; here the answers are scripted so
that every error shape, long-poll loop and exit code can be provoked on purpose.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from typer.testing import CliRunner

import fleetyard.client
from fleetyard.cli.main import app
from fleetyard.client import Client
from fleetyard.errors import (
    Conflict,
    DigestMismatch,
    FleetyardError,
    Forbidden,
    NotFound,
    UnschedulableJob,
)


@dataclass
class Req:
    method: str
    path: str
    query: dict[str, list[str]]
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body)


Answer = tuple[int, Any]
Route = Callable[[Req], Answer]


@dataclass
class Scripted:
    url: str
    routes: dict[tuple[str, str], Route] = field(default_factory=dict)
    seen: list[Req] = field(default_factory=list)

    def on(self, method: str, path: str, answer: Route | Answer) -> None:
        self.routes[(method, path)] = answer if callable(answer) else (lambda _req, a=answer: a)

    def calls(self, method: str, path: str) -> list[Req]:
        return [r for r in self.seen if (r.method, r.path) == (method, path)]


@pytest.fixture
def srv() -> Iterator[Scripted]:
    state: dict[str, Scripted] = {}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _handle(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            req = Req(self.command, parts.path, parse_qs(parts.query), body, dict(self.headers))
            s = state["s"]
            s.seen.append(req)
            route = s.routes.get((req.method, req.path))
            status, payload = route(req) if route else (404, {"detail": "Not Found"})
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header(
                "Content-Type", "application/octet-stream" if isinstance(payload, bytes) else "application/json"
            )
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _handle

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state["s"] = Scripted(url=f"http://127.0.0.1:{httpd.server_address[1]}")
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield state["s"]
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def _no_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FLEETYARD_CONFIG", str(tmp_path / "no-config.json"))
    monkeypatch.delenv("FLEETYARD_SERVER", raising=False)
    monkeypatch.delenv("FLEETYARD_TOKEN", raising=False)


def error(code: str, message: str, detail: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "detail": detail}}


def board(board_id: str = "host-01-s0", state: str = "available") -> dict[str, Any]:
    return {
        "id": board_id,
        "host_id": "host-01",
        "slot": 0,
        "generation": "sim-g1",
        "firmware": "1.0.0",
        "device": "sim:0",
        "state": state,
        "state_reason": None,
        "drain_reason": None,
        "labels": {"rack": "r1"},
        "attempt_id": None,
        "job_id": None,
        "telemetry": {"temperature_c": 41.0},
        "telemetry_at": 1.0,
        "probe_ok": True,
        "probe_reason": None,
    }


def job(job_id: int = 7, state: str = "queued", outcome: str | None = None, boards: int = 1) -> dict[str, Any]:
    return {
        "id": job_id,
        "name": "j",
        "kind": "command",
        "state": state,
        "team": "t",
        "owner": "me",
        "priority": 0,
        "spec": {"boards": boards, "params": {"command": ["true"]}},
        "submitted_at": 1.0,
        "started_at": 2.0 if state != "queued" else None,
        "finished_at": 3.0 if state in ("succeeded", "failed", "canceled") else None,
        "outcome": outcome,
        "message": None,
        "attempts": 1,
        "infra_retries": 0,
    }


def rank(r: int, exit_code: int | None, outcome: str = "user_error") -> dict[str, Any]:
    return {
        "assignment_id": 100 + r,
        "rank": r,
        "board_id": f"host-01-s{r}",
        "host_id": "host-01",
        "state": "exited",
        "outcome": outcome,
        "exit_code": exit_code,
        "message": None,
        "created_at": 1.5,
        "delivered_at": 1.6,
        "started_at": 2.0,
        "finished_at": 3.0,
        "result": {},
        "outputs": {},
    }


def logs_page(chunks: list[tuple[int, int, str]], cursor: int, finished: bool) -> dict[str, Any]:
    return {
        "job_id": 7,
        "chunks": [{"attempt_id": 1, "rank": r, "seq": seq, "at": 1.0, "data": d} for seq, r, d in chunks],
        "cursor": cursor,
        "finished": finished,
    }


def paged(pages: list[dict[str, Any]]) -> Route:
    """Answer a logs request by its ?after= cursor."""
    by_after = {}
    after = 0
    for page in pages:
        by_after[after] = page
        after = page["cursor"]

    def route(req: Req) -> Answer:
        return 200, by_after[int(req.query["after"][0])]

    return route


# -- the SDK ----------------------------------------------------------------------------------


def test_the_public_surface_is_pinned() -> None:
    assert sorted(fleetyard.client.__all__) == [
        "ArtifactOut",
        "AttemptOut",
        "AuditEntryOut",
        "BoardEventOut",
        "BoardOp",
        "BoardOpOut",
        "BoardOut",
        "Client",
        "FaultAction",
        "FaultKind",
        "FaultOrderOut",
        "FirmwareOut",
        "FleetStatsOut",
        "HostOut",
        "JobDetail",
        "JobOut",
        "JobSpec",
        "JobState",
        "LogChunk",
        "LogsOut",
        "OnboardingBatchOut",
        "OnboardingBoardOut",
        "PipelineRunOut",
        "PipelineStageOut",
        "Placement",
        "RankOut",
        "RepairOut",
        "ResultsOut",
        "Role",
        "TokenOut",
        "parse_spec",
    ]


def test_models_come_back_and_the_token_is_sent(srv: Scripted) -> None:
    srv.on("GET", "/v1/boards", (200, [board("b1"), board("b2", "drained")]))
    with Client(srv.url, "tok") as fy:
        boards = fy.boards(state="available", generation="sim-g1", labels={"rack": "r1", "row": "2"})
    assert [b.id for b in boards] == ["b1", "b2"]
    [req] = srv.seen
    assert req.headers["Authorization"] == "Bearer tok"
    assert req.query == {"state": ["available"], "generation": ["sim-g1"], "label": ["rack=r1", "row=2"]}


@pytest.mark.parametrize(
    ("status", "body", "cls", "message"),
    [
        (404, error("not_found", "no board x", {"board": "x"}), NotFound, "no board x"),
        (422, error("unschedulable", "only 8 sim-g9 boards"), UnschedulableJob, "only 8 sim-g9 boards"),
        (409, error("conflict", "cannot go"), Conflict, "cannot go"),
        (403, {"detail": "nope"}, Forbidden, "HTTP 403"),
        (500, b"boom", FleetyardError, "HTTP 500"),
    ],
)
def test_errors_come_back_as_their_class(srv: Scripted, status: int, body: Any, cls: type, message: str) -> None:
    srv.on("GET", "/v1/boards/x", (status, body))
    with Client(srv.url, "t") as fy, pytest.raises(cls, match=message) as info:
        fy.board("x")
    assert type(info.value) is cls
    if status == 404:
        assert info.value.detail == {"board": "x"}


def test_an_unreachable_server_says_which_and_how_to_change_it() -> None:
    with Client("http://127.0.0.1:9", "t") as fy, pytest.raises(FleetyardError) as info:
        fy.hosts()
    assert "http://127.0.0.1:9" in info.value.message
    assert "FLEETYARD_SERVER" in info.value.message and "fleetyard up" in info.value.message


def test_submit_many_goes_in_batches_of_a_thousand(srv: Scripted) -> None:
    counter = iter(range(1, 10_000))
    srv.on("POST", "/v1/jobs/batch", lambda req: (201, {"ids": [next(counter) for _ in req.json()["jobs"]]}))
    with Client(srv.url, "t") as fy:
        ids = fy.submit_many([{"params": {"command": ["true"]}}] * 2500)
    assert ids == list(range(1, 2501))
    assert [len(r.json()["jobs"]) for r in srv.calls("POST", "/v1/jobs/batch")] == [1000, 1000, 500]


def test_a_bad_spec_is_refused_before_sending(srv: Scripted) -> None:
    with Client(srv.url, "t") as fy, pytest.raises(FleetyardError, match="boards"):
        fy.submit({"boards": -1})
    assert srv.seen == []


def test_wait_polls_until_the_job_finished(srv: Scripted) -> None:
    states = iter(["queued", "running", "succeeded"])
    srv.on("GET", "/v1/jobs/7/wait", lambda req: (200, job(7, next(states))))
    with Client(srv.url, "t") as fy:
        done = fy.wait(7, poll=0.01)
    assert done.state == "succeeded"
    assert len(srv.calls("GET", "/v1/jobs/7/wait")) == 3


def test_wait_returns_the_unfinished_job_when_time_runs_out(srv: Scripted) -> None:
    srv.on("GET", "/v1/jobs/7/wait", (200, job(7, "running")))
    with Client(srv.url, "t") as fy:
        t0 = time.monotonic()
        still = fy.wait(7, timeout=0.2, poll=0.05)
    assert still.state == "running" and time.monotonic() - t0 < 5
    assert all(float(r.query["timeout"][0]) <= 60 for r in srv.seen)


def test_wait_lease_waits_for_the_boards_access_and_the_lease_clock(srv: Scripted) -> None:
    def lease(access: bool, started: bool) -> dict[str, Any]:
        board = {"rank": 0, "board_id": "b0", "host_id": "h1", "device": "sim:0", "state": "running"}
        return {
            "id": 5, "state": "running", "active": True, "team": "t", "owner": "o", "note": None,
            "boards_wanted": 1, "ttl_s": 60.0, "submitted_at": 1.0, "started_at": 2.0 if started else None,
            "finished_at": None, "expires_at": 62.0 if started else None, "pending_reason": None, "message": None,
            "boards": [{**board, "access": {"host": "h1"} if access else None}],
        }  # fmt: skip

    # Its access line (a log) can come before its start (an event): reachable but not yet timed.
    answers = iter([lease(False, False), lease(True, False), lease(True, True)])
    srv.on("GET", "/v1/leases/5", lambda req: (200, next(answers)))
    with Client(srv.url, "t") as fy:
        ready = fy.wait_lease(5, timeout=10, poll=0.01)
    assert ready.expires_at == 62.0 and ready.boards[0].access == {"host": "h1"}
    assert len(srv.calls("GET", "/v1/leases/5")) == 3


def test_follow_logs_yields_everything_then_stops(srv: Scripted) -> None:
    pages = [
        logs_page([(1, 0, "a\n")], 1, False),
        logs_page([], 1, False),
        logs_page([(2, 0, "b\n"), (3, 0, "c\n")], 3, True),
        logs_page([], 3, True),
    ]
    srv.on("GET", "/v1/jobs/7/logs", paged(pages[:1] + pages[2:]))
    with Client(srv.url, "t") as fy:
        assert [c.data for c in fy.follow_logs(7)] == ["a\n", "b\n", "c\n"]
    # Once the job finished, the last look must not long-poll.
    assert srv.seen[-1].query["wait"] == ["0"]


def test_blobs_go_up_and_come_down_by_their_sha256(srv: Scripted, tmp_path: Path) -> None:
    stored: dict[str, bytes] = {}

    def put(req: Req) -> Answer:
        sha = req.path.rsplit("/", 1)[1]
        assert hashlib.sha256(req.body).hexdigest() == sha
        stored[sha] = req.body
        return 201, {"sha256": sha, "size": len(req.body), "created_at": 1.0}

    data = b"weights" * 1000
    sha = hashlib.sha256(data).hexdigest()
    srv.on("PUT", f"/v1/blobs/{sha}", put)
    srv.on("GET", f"/v1/blobs/{sha}", lambda req: (200, stored[sha]))
    src = tmp_path / "model.bin"
    src.write_bytes(data)
    with Client(srv.url, "t") as fy:
        assert fy.upload_blob(src) == sha
        assert fy.upload_blob(data) == sha
        got = fy.download_blob(sha, tmp_path / "out")  # not a folder: the file's name
        assert got.read_bytes() == data
        (tmp_path / "dir").mkdir()
        assert fy.download_blob(sha, tmp_path / "dir") == tmp_path / "dir" / sha


def test_a_corrupt_download_is_refused_and_leaves_nothing(srv: Scripted, tmp_path: Path) -> None:
    sha = hashlib.sha256(b"right").hexdigest()
    srv.on("GET", f"/v1/blobs/{sha}", (200, b"wrong"))
    with Client(srv.url, "t") as fy, pytest.raises(DigestMismatch):
        fy.download_blob(sha, tmp_path / "x")
    assert list(tmp_path.iterdir()) == []


# -- the CLI ----------------------------------------------------------------------------------


def cli(srv: Scripted, *args: str) -> Any:
    return CliRunner().invoke(app, ["--server", srv.url, "--token", "t", *args])


def test_listings_print_json_for_scripts(srv: Scripted) -> None:
    srv.on("GET", "/v1/boards", (200, [board("b1")]))
    result = cli(srv, "boards", "ls", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["id"] == "b1"


def test_listings_print_tables_for_people(srv: Scripted) -> None:
    srv.on("GET", "/v1/boards", (200, [board("b1"), board("b2", "drained")]))
    result = cli(srv, "boards", "ls", "--label", "rack=r1")
    assert result.exit_code == 0, result.output
    assert "b1" in result.stdout and "drained" in result.stdout
    assert srv.seen[0].query["label"] == ["rack=r1"]


def audit_entry(action: str = "board.drain", target: str | None = "b1") -> dict[str, Any]:
    return {
        "id": 1,
        "at": 1.0,
        "actor": "olga",
        "role": "operator",
        "action": action,
        "target": target,
        "reason": "fan noise",
        "detail": {"state": "available"},
    }


def test_audit_ls_sends_the_filters_and_prints_the_entries(srv: Scripted) -> None:
    srv.on("GET", "/v1/audit", (200, [audit_entry(), audit_entry("queues.apply", None)]))
    result = cli(srv, "audit", "ls", "--since", "2h", "--actor", "olga", "--action", "board.drain", "--limit", "5")
    assert result.exit_code == 0, result.output
    assert "board.drain" in result.stdout and "fan noise" in result.stdout and "queues.apply" in result.stdout
    assert srv.seen[0].query == {"since_s": ["7200.0"], "actor": ["olga"], "action": ["board.drain"], "limit": ["5"]}
    result = cli(srv, "audit", "ls", "--target", "b1", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["detail"] == {"state": "available"}
    assert srv.seen[1].query["target"] == ["b1"] and srv.seen[1].query["since_s"] == ["604800.0"]


def test_a_server_error_is_a_red_message_and_exit_1(srv: Scripted) -> None:
    srv.on("POST", "/v1/boards/b9/drain", (404, error("not_found", "no board b9", {"board": "b9"})))
    result = cli(srv, "boards", "drain", "b9", "--reason", "fan")
    assert result.exit_code == 1
    assert "error: no board b9" in result.stderr and '{"board":"b9"}' in result.stderr
    assert "Traceback" not in result.output
    assert srv.seen[0].json() == {"reason": "fan"}


def test_an_unreachable_server_is_exit_1_with_the_fix() -> None:
    result = CliRunner().invoke(app, ["--server", "http://127.0.0.1:9", "jobs", "ls"])
    assert result.exit_code == 1
    assert "cannot reach the Fleetyard server at http://127.0.0.1:9" in result.stderr
    assert "FLEETYARD_SERVER" in result.stderr and "Traceback" not in result.output


def test_the_environment_selects_the_server(srv: Scripted, monkeypatch: pytest.MonkeyPatch) -> None:
    srv.on("GET", "/v1/hosts", (200, []))
    monkeypatch.setenv("FLEETYARD_SERVER", srv.url)
    monkeypatch.setenv("FLEETYARD_TOKEN", "env-tok")
    result = CliRunner().invoke(app, ["hosts", "ls", "--json"])
    assert result.exit_code == 0, result.output
    assert srv.seen[0].headers["Authorization"] == "Bearer env-tok"


def _run_routes(srv: Scripted, final: dict[str, Any], ranks: list[dict[str, Any]]) -> None:
    srv.on("POST", "/v1/jobs", lambda req: (201, job(7, "queued", boards=req.json()["boards"])))
    pages = [logs_page([(1, 0, "zero\n"), (2, 1, "one\n")], 2, True), logs_page([], 2, True)]
    srv.on("GET", "/v1/jobs/7/logs", paged(pages))
    srv.on("GET", "/v1/jobs/7/wait", (200, final))
    srv.on(
        "GET",
        "/v1/jobs/7/results",
        (200, {"job_id": 7, "state": final["state"], "outcome": final["outcome"], "attempt_id": 1, "ranks": ranks}),
    )


def test_run_submits_the_command_and_follows_its_logs(srv: Scripted) -> None:
    _run_routes(srv, job(7, "succeeded", "success", boards=2), [])
    result = cli(
        srv, "run", "--boards", "2", "--gen", "sim-g2", "--same-host", "--label", "a=b", "--", "sh", "-c", "echo $X"
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == "[0] zero\n[1] one\n"
    spec = srv.calls("POST", "/v1/jobs")[0].json()
    assert spec["params"] == {"command": ["sh", "-c", "echo $X"]}
    assert (spec["boards"], spec["generations"], spec["placement"], spec["labels"]) == (
        2,
        ["sim-g2"],
        "same-host",
        {"a": "b"},
    )


def test_run_exits_with_the_failed_ranks_exit_code(srv: Scripted) -> None:
    _run_routes(srv, job(7, "failed", "user_error", boards=2), [rank(0, 0, "success"), rank(1, 3)])
    result = cli(srv, "run", "--boards", "2", "--", "false")
    assert result.exit_code == 3
    assert "job 7 failed" in result.stderr


def test_run_without_an_exit_code_exits_1(srv: Scripted) -> None:
    _run_routes(srv, job(7, "failed", "infra_error"), [rank(0, None, "infra_error")])
    assert cli(srv, "run", "--", "true").exit_code == 1


def test_run_detached_prints_the_job_id(srv: Scripted) -> None:
    srv.on("POST", "/v1/jobs", (201, job(7)))
    result = cli(srv, "run", "--detach", "--", "sleep", "1")
    assert (result.exit_code, result.stdout.strip()) == (0, "7")


@pytest.mark.parametrize(("state", "code"), [("succeeded", 0), ("failed", 1), ("canceled", 1), ("running", 124)])
def test_jobs_wait_exit_codes(srv: Scripted, state: str, code: int) -> None:
    srv.on("GET", "/v1/jobs/7/wait", (200, job(7, state)))
    result = cli(srv, "jobs", "wait", "7", "--timeout", "0.2", "--json")
    assert result.exit_code == code, result.output
    assert json.loads(result.stdout)["state"] == state


def test_jobs_submit_a_list_with_wait_fails_if_one_fails(srv: Scripted, tmp_path: Path) -> None:
    spec_file = tmp_path / "many.yaml"
    spec_file.write_text("- params: {command: [true]}\n- params: {command: [false]}\n")
    srv.on("POST", "/v1/jobs/batch", (201, {"ids": [7, 8]}))
    srv.on("GET", "/v1/jobs/7/wait", (200, job(7, "succeeded")))
    srv.on("GET", "/v1/jobs/8/wait", (200, job(8, "failed")))
    result = cli(srv, "jobs", "submit", str(spec_file), "--wait", "--json")
    assert result.exit_code == 1
    assert [j["state"] for j in json.loads(result.stdout)] == ["succeeded", "failed"]


def test_token_create_prints_only_the_secret_on_stdout(srv: Scripted) -> None:
    made = {"name": "ci", "role": "user", "team": "vision", "host": None, "created_at": 1.0, "token": "fy_secret"}
    srv.on("POST", "/v1/tokens", (201, made))
    result = cli(srv, "token", "create", "ci", "--role", "user", "--team", "vision")
    assert result.exit_code == 0, result.output
    assert result.stdout == "fy_secret\n"
    assert srv.seen[0].json() == {"name": "ci", "role": "user", "team": "vision", "host": None}


@pytest.mark.parametrize(
    "args",
    [
        ["token", "create", "x", "--role", "user"],
        ["token", "create", "x", "--role", "agent"],
        ["token", "create", "x", "--role", "root"],
        ["boards", "fault", "b1"],
        ["boards", "op", "b1", "power_cycle"],
        ["boards", "ls", "--label", "nolabel"],
        ["run", "--boards", "0", "--", "true"],
    ],
)
def test_usage_errors_exit_2_without_asking_the_server(args: list[str]) -> None:
    result = CliRunner().invoke(app, ["--server", "http://127.0.0.1:9", *args])
    assert result.exit_code == 2, result.output


def test_fault_injection_sends_the_order(srv: Scripted) -> None:
    srv.on("POST", "/v1/admin/boards/b1/faults", (200, {"id": 1, "board_id": "b1", "kind": "hang", "action": "inject"}))
    assert cli(srv, "boards", "fault", "b1", "hang").exit_code == 0
    assert cli(srv, "boards", "fault", "b1", "--clear").exit_code == 0
    assert [r.json() for r in srv.seen] == [{"kind": "hang", "action": "inject"}, {"kind": None, "action": "clear"}]


def test_board_ops_send_the_order_and_show_how_it_went(srv: Scripted) -> None:
    op = {
        "id": 7,
        "board_id": "b1",
        "op": "soft_reset",
        "state": "ordered",
        "reason": "ordered by ops: stuck",
        "actor": "operator",
        "ordered_at": 100.0,
        "timeout_s": 120.0,
    }
    done = {**op, "state": "failed", "started_at": 101.0, "finished_at": 103.5, "ok": False, "message": "no bus"}
    srv.on("POST", "/v1/boards/b1/ops", (201, op))
    srv.on("GET", "/v1/boards/b1/ops", (200, [done]))
    ordered = cli(srv, "boards", "op", "b1", "soft_reset", "--reason", "stuck")
    assert ordered.exit_code == 0, ordered.output
    assert "op 7: soft_reset on b1 (ordered)" in ordered.stdout
    listed = cli(srv, "boards", "ops", "b1")
    assert listed.exit_code == 0, listed.output
    assert "failed" in listed.stdout and "2.5s" in listed.stdout and "no bus" in listed.stdout
    assert srv.seen[0].json() == {"op": "soft_reset", "reason": "stuck"}
    assert srv.seen[1].query == {"limit": ["20"]}
    assert cli(srv, "boards", "op", "b1", "soft_reset", "--take-over").exit_code == 0
    assert srv.seen[2].json() == {"op": "soft_reset", "reason": "", "take_over": True}


def test_board_repairs_show_each_case_its_steps_and_how_it_ended(srv: Scripted) -> None:
    case = {
        "id": 3,
        "board_id": "b1",
        "opened_at": 100.0,
        "cause": "failed its probe: fell off the bus",
        "step": 2,
        "phase": "check",
        "closed_at": 200.0,
        "outcome": "quarantined",
        "reason": "remediation exhausted",
        "evidence": {"steps": ["soft_reset: failed (no bus)", "reflash: failed (no bus)"]},
    }
    srv.on("GET", "/v1/boards/b1/repairs", (200, [case]))
    listed = cli(srv, "boards", "repairs", "b1")
    assert listed.exit_code == 0, listed.output
    for text in ("quarantined", "fell off the bus", "soft_reset: failed", "reflash: failed", "remediation exhausted"):
        assert text in listed.stdout
    assert srv.seen[0].query == {"limit": ["5"]}
    as_json = cli(srv, "boards", "repairs", "b1", "--json")
    assert as_json.exit_code == 0 and '"outcome": "quarantined"' in as_json.stdout


def test_firmware_ls_shows_each_generations_images_and_its_standard(srv: Scripted) -> None:
    image = {
        "generation": "sim-g2",
        "version": "2.2.0",
        "sha256": "ab" * 32,
        "size": 2048,
        "notes": "fixes ECC scrub",
        "hardware_revisions": [],
        "standard": True,
        "uploaded_by": "ops",
        "uploaded_at": 100.0,
    }
    srv.on("GET", "/v1/firmware", (200, [image]))
    listed = cli(srv, "firmware", "ls", "--gen", "sim-g2")
    assert listed.exit_code == 0, listed.output
    for text in ("sim-g2", "2.2.0", "standard", "abababababab", "fixes ECC scrub", "all"):
        assert text in listed.stdout
    assert srv.seen[0].query == {"generation": ["sim-g2"]}
