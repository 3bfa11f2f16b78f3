"""Peers: a validation rank whose mismatch its peers' outputs contradict, bit for bit, is its board's
fault (policy.peers, and the store's settle that applies it)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from tests.unit.ended_ranks import ended_ranks
from tests.unit.test_api_flow import Fleet

from fleetyard.policy.peers import PeerOutputs, Verdict, compare_peers, peer_group
from fleetyard.store import tables as t
from fleetyard.store.attempts import settle

G1 = {"generation": "sim-g1", "driver": "sim 1", "firmware": "1.0"}
# Two boards agree and pass; the third found a mismatch, with outputs of its own.
ODD_ONE_OUT = [
    ("h1-b0", "success", "x", {"passed": True}),
    ("h1-b1", "success", "x", {"passed": True}),
    ("h1-b2", "user_error", "y", {"passed": False}),
]


def test_the_odd_one_out_differs_from_a_strict_majority_of_its_group() -> None:
    ranks = [
        PeerOutputs(0, "a", "x"),
        PeerOutputs(1, "a", "x"),
        PeerOutputs(2, "a", "y"),
        PeerOutputs(3, "b", "x"),  # alone in its group: nothing to compare with
        PeerOutputs(4, "c", "p"),  # two that differ: no majority, no blame
        PeerOutputs(5, "c", "q"),
        PeerOutputs(6, "a", None),  # saved nothing
    ]
    assert compare_peers(ranks) == {0: Verdict(False, 2, 3), 1: Verdict(False, 2, 3), 2: Verdict(True, 2, 3)}


def test_peers_are_the_same_input_set_on_the_same_kind_of_board() -> None:
    one = {"saved_set": 0, "board": {**G1, "serial": "A"}}
    assert peer_group(one) == peer_group({"saved_set": 0, "board": {**G1, "serial": "B"}})
    assert peer_group(one) != peer_group({"saved_set": 1, "board": G1})
    assert peer_group(one) != peer_group({"saved_set": 0, "board": {**G1, "firmware": "2.0"}})
    assert peer_group(one) != peer_group({"saved_set": 0, "board": {**G1, "generation": "sim-g2"}})


def _attempt(fleet: Fleet, kind: str, ranks: list[tuple[str, str, str, dict[str, Any]]]) -> tuple[int, int]:
    """A running job of ``kind`` on host h1's three boards, whose ranks (board, outcome, candidate
    digest, result) have ended."""
    fleet.register("h1", n=3)
    fleet.beat("h1")
    rows = [
        {"board_id": board, "outcome": outcome, "cause": "workload", "result": {"saved_set": 0, "board": G1, **result},
         "outputs": {"candidate.npz": digest}, "message": None if outcome == "success" else "numerical mismatch"}
        for board, outcome, digest, result in ranks
    ]  # fmt: skip
    with fleet.store.write() as conn:
        return ended_ranks(
            conn, kind, rows, job_state="running", attempt_state="running", spec={"max_infra_retries": 3}, at=1.0
        )


def test_a_mismatch_its_peers_contradict_is_the_boards_and_the_job_runs_again(fleet: Fleet) -> None:
    job_id, attempt = _attempt(fleet, "validate", ODD_ONE_OUT)
    with fleet.store.write() as conn:
        settle(conn, attempt, at=5.0)
        rank = conn.execute(sa.select(t.assignments).where(t.assignments.c.board_id == "h1-b2")).one()
        board = conn.execute(sa.select(t.boards).where(t.boards.c.id == "h1-b2")).one()
        job = conn.execute(sa.select(t.jobs).where(t.jobs.c.id == job_id)).one()
    assert (rank.outcome, rank.cause) == ("infra_error", "board_fault")
    assert "differ bit for bit from those 2 of 3 peer boards" in rank.message
    # Its L1 check decides whether it leaves service (the outputs came from the job's process).
    assert board.state == "available" and "differed from its peers'" in board.check_due
    assert (job.state, job.outcome, job.infra_retries) == ("queued", "infra_error", 1)


def test_a_mismatch_every_peer_shares_is_the_jobs(fleet: Fleet) -> None:
    bad = {"passed": False}
    job_id, attempt = _attempt(fleet, "validate", [(f"h1-b{i}", "user_error", "y", bad) for i in range(3)])
    with fleet.store.write() as conn:
        settle(conn, attempt, at=5.0)
        outcomes = set(conn.execute(sa.select(t.assignments.c.outcome)).scalars())
        states = set(conn.execute(sa.select(t.boards.c.state)).scalars())
        job = conn.execute(sa.select(t.jobs).where(t.jobs.c.id == job_id)).one()
    assert outcomes == {"user_error"} and states == {"available"}
    assert (job.state, job.outcome) == ("failed", "user_error")


def test_only_comparing_kinds_are_judged_by_their_peers(fleet: Fleet) -> None:
    job_id, attempt = _attempt(fleet, "command", ODD_ONE_OUT)
    with fleet.store.write() as conn:
        settle(conn, attempt, at=5.0)
        job = conn.execute(sa.select(t.jobs).where(t.jobs.c.id == job_id)).one()
    assert (job.state, job.outcome) == ("failed", "user_error")


def test_the_validate_table_marks_the_board_whose_outputs_differ_from_its_peers() -> None:
    from fleetyard.cli.validate import mark_peers

    def row(board: str, digest: str | None, generation: str = "sim-g1") -> dict[str, Any]:
        result = {"saved_set": 0, "board": {**G1, "generation": generation, "serial": board}}
        return {"board_id": board, "result": result, "outputs": {} if digest is None else {"candidate.npz": digest}}

    rows = [row("a", "x"), row("b", "x"), row("c", "y"), row("d", None), row("e", "z", "sim-g2")]
    mark_peers(rows)
    assert [r["peers"] for r in rows] == ["same", "same", "differs", None, None]
