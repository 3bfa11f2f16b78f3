"""Leases through the whole stack: a board held for an engineer, reachable, then given back."""

from __future__ import annotations

import pytest

from fleetyard.client import Client
from tests.integration.harness import Stack, wait_for


@pytest.mark.one_store("postgres")  # bounded runs: the lease store is tests/unit's on SQLite
def test_take_a_lease_reach_its_board_and_release_it(stack: Stack) -> None:
    stack.start(hosts=1, driver="sim:2:sim-g1")
    with Client(server=stack.url, token=stack.tokens["alice"]) as fy:
        taken = fy.take_lease(3600, generations=["sim-g1"], note="debugging a hang")
        lease = fy.wait_lease(taken.id, timeout=60, poll=0.1)
        assert lease.state == "running" and lease.active, (lease, stack.logs())
        [board] = lease.boards
        assert board.host_id == "h1" and board.device is not None and board.device.startswith("sim:")
        access = board.access
        assert access is not None and access["board_id"] == board.board_id and access["device"] == board.device
        assert f"FLEETYARD_BOARD_ID={board.board_id}" in access["shell"] and access["ssh"].startswith("ssh -t ")
        assert lease.expires_at is not None and lease.started_at is not None
        assert lease.expires_at >= lease.started_at + 3600 - 1
        assert stack.boards(state="allocated")[0]["id"] == board.board_id
        assert [x.id for x in fy.leases(mine=True)] == [lease.id]

        renewed = fy.renew_lease(lease.id, 7200)
        assert renewed.expires_at is not None and renewed.expires_at > lease.expires_at

        fy.release_lease(lease.id)
        done = wait_for(lambda: (x := fy.lease(lease.id)).ended and x, timeout=60, what="lease to end")
        assert done.state == "succeeded" and done.ended == "released" and done.message == "lease released"
        wait_for(lambda: len(stack.boards(state="available")) == 2, timeout=60, what="the board back in service")
        assert fy.leases() == []
    assert "is yours" in stack.logs_of(lease.id)
    assert stack.ok("GET", f"/v1/boards/{board.board_id}")["state"] == "available"
