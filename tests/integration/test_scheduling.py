"""The scheduler with real processes: a queue reclaims its nominal quota from a borrower, whose
running command is stopped (SIGTERM, then SIGKILL) and re-queued as preempted with its history;
a pending job says why it waits."""

from __future__ import annotations

from tests.integration.harness import Stack, wait_for

QUEUES = {
    "queues": [
        {"name": "compiler", "cohort": "fleet", "nominal": {"sim-g1": 1}},
        {"name": "robotics", "cohort": "fleet", "nominal": {"sim-g1": 1}},
    ]
}


def test_a_queue_reclaims_its_quota_from_a_borrower(stack: Stack) -> None:
    stack.start(hosts=1, driver="sim:2:sim-g1")
    stack.ok("PUT", "/v1/queues", as_="ops", json=QUEUES)
    # robotics (bob) takes both boards: one of its own, one borrowed from compiler's unused quota.
    trap = "trap 'echo got SIGTERM; exit 143' TERM; echo started; while true; do sleep 0.1; done"
    first = stack.submit(as_="bob", params={"command": ["sh", "-c", trap]})
    wait_for(lambda: "started" in stack.logs_of(first), what="the first robotics job")
    second = stack.submit(as_="bob", params={"command": ["sh", "-c", trap]})
    wait_for(lambda: "started" in stack.logs_of(second), what="the borrowing robotics job")
    [robotics] = [q for q in stack.ok("GET", "/v1/queues") if q["name"] == "robotics"]
    [g1] = robotics["generations"]
    assert (g1["in_use"], g1["borrowed"]) == (2, 1), robotics

    # compiler (alice) asks for its nominal board: the newest borrower is preempted for it.
    mine = stack.submit(as_="alice", params={"command": "echo compiler ran"})
    job = stack.wait_job(mine, timeout=60)
    assert job["state"] == "succeeded", (job, stack.logs())
    victim = stack.job(second)
    assert victim["state"] in ("queued", "running"), victim  # re-queued, maybe already running again
    first_attempt = victim["attempt_list"][0]
    assert first_attempt["outcome"] == "preempted", first_attempt
    assert "queue robotics borrows beyond its nominal quota" in (first_attempt["message"] or "")
    assert "got SIGTERM" in stack.logs_of(second)  # it was asked to stop before it was killed
    assert stack.job(first)["state"] == "running"  # within its queue's nominal: left alone
    # No storm: the borrower does not take the board back from the lender, so nothing more is preempted.
    assert len(stack.job(first)["attempt_list"]) == 1
    assert all(a["outcome"] != "preempted" for a in stack.job(second)["attempt_list"][1:])

    # robotics asks for more than its queue can hold now: pending, and `why` says it with numbers.
    third = stack.submit(as_="bob", params={"command": "true"})
    wait_for(lambda: stack.job(third)["pending_reason"], what="a pending reason")
    why = stack.ok("GET", f"/v1/jobs/{third}/why")
    assert why["state"] == "queued" and why["details"]["boards_matching"] == 2
    assert any("queue robotics holds" in q for q in why["details"]["quota"]), why
    for j in (first, second, third):
        stack.http("POST", f"/v1/jobs/{j}/cancel", as_="admin")
