"""Board ops in the store, on both stores: ordering, delivery, results kept once, history and
the questions a controller asks (the latest op of a board, the overdue ones)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from fleetyard.protocol.agent import OP_TIMEOUT_S, BoardOp, OpResult
from fleetyard.store import board_ops as ops
from fleetyard.store import migrate
from fleetyard.store import tables as t
from fleetyard.store.board_ops import OpState
from fleetyard.store.db import Store


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    migrate.upgrade(db_url)
    s = Store(db_url)
    with s.write() as conn:
        conn.execute(
            t.hosts.insert(),
            [{"id": h, "state": "online", "driver": "sim", "labels": {}, "registered_at": 0.0} for h in ("h1", "h2")],
        )
        conn.execute(
            t.boards.insert(),
            [
                {
                    "id": f"{h}-b{i}",
                    "host_id": h,
                    "slot": i,
                    "generation": "g1",
                    "firmware": "1.0",
                    "device": f"sim:{i}",
                    "labels": {},
                    "state": "available",
                    "state_changed_at": 0.0,
                    "telemetry": {},
                }
                for h in ("h1", "h2")
                for i in range(2)
            ],
        )
    yield s
    s.dispose()


def result(op_id: int, ok: bool = True, message: str | None = None, at: float = 20.0) -> OpResult:
    return OpResult(id=op_id, ok=ok, message=message, started_at=at - 1, finished_at=at)


def test_an_op_is_open_until_its_first_result_and_a_repeat_changes_nothing(store: Store) -> None:
    with store.write() as conn:
        a = ops.order_op(conn, "h1-b0", BoardOp.SOFT_RESET, reason="hung", at=10.0, actor="policy")
        b = ops.order_op(conn, "h2-b1", BoardOp.REFLASH, reason="bad fw", at=11.0, actor="operator", timeout_s=30.0)
        with pytest.raises(sa.exc.IntegrityError), conn.begin_nested():  # a board that does not exist
            ops.order_op(conn, "nope", BoardOp.SOFT_RESET, reason="x", at=11.0, actor="policy")
    with store.read() as conn:
        open_ = ops.open_ops(conn, at=12.0)
        assert {h: [o.id for o in os] for h, os in open_.items()} == {"h1": [a], "h2": [b]}
        first = open_["h1"][0]
        assert (first.op, first.timeout_s, first.deadline) == (
            BoardOp.SOFT_RESET,
            OP_TIMEOUT_S[BoardOp.SOFT_RESET],
            130.0,
        )
        assert first.state(12.0) is OpState.ORDERED
    with store.write() as conn:
        ops.mark_delivered(conn, [a, a], at=13.0)
        ops.mark_delivered(conn, [a], at=14.0)  # delivered again: the first time stays
        # A result from another host's agent is not taken; from the board's own, once.
        assert ops.record_results(conn, [result(a)], at=15.0, host="h2") == 0
        assert ops.record_results(conn, [result(a, message="x" * 5000)], at=15.0, host="h1") == 1
        assert ops.record_results(conn, [result(a, ok=False, message="again")], at=16.0, host="h1") == 0
    with store.read() as conn:
        got = ops.get_op(conn, a)
        assert got is not None
        assert (got.delivered_at, got.ok, got.started_at, got.finished_at, got.reported_at) == (13.0, True, 19, 20, 15)
        assert got.message is not None and len(got.message) == ops.MESSAGE_MAX
        assert got.state(1000.0) is OpState.SUCCEEDED  # a result wins over the deadline
        assert [o.id for os in ops.open_ops(conn, at=16.0).values() for o in os] == [b]
        assert ops.get_op(conn, 999) is None


def test_an_op_past_its_deadline_is_overdue_and_no_longer_delivered(store: Store) -> None:
    with store.write() as conn:
        late = ops.order_op(conn, "h1-b0", BoardOp.HARD_RESET, reason="r", at=0.0, actor="policy", timeout_s=5.0)
        ops.order_op(conn, "h1-b1", BoardOp.HOST_REBOOT, reason="r", at=0.0, actor="policy", timeout_s=50.0)
    with store.read() as conn:
        assert [o.id for o in ops.overdue_ops(conn, at=5.0)] == []  # the deadline itself is still in time
        assert [o.id for o in ops.overdue_ops(conn, at=6.0)] == [late]
        assert [o.op for o in ops.open_ops(conn, at=6.0)["h1"]] == [BoardOp.HOST_REBOOT]
        assert ops.get_op(conn, late).state(6.0) is OpState.TIMED_OUT  # type: ignore[union-attr]
    with store.write() as conn:  # a late result is still kept, for the record
        assert ops.record_results(conn, [result(late, ok=False, message="no answer")], at=9.0) == 1
    with store.read() as conn:
        assert ops.overdue_ops(conn, at=9.0) == []
        assert ops.get_op(conn, late).state(9.0) is OpState.FAILED  # type: ignore[union-attr]


def test_history_and_the_latest_op_of_each_board(store: Store) -> None:
    with store.write() as conn:
        first = ops.order_op(conn, "h1-b0", BoardOp.SOFT_RESET, reason="1", at=1.0, actor="policy")
        second = ops.order_op(conn, "h1-b0", BoardOp.REFLASH, reason="2", at=2.0, actor="policy")
        other = ops.order_op(conn, "h2-b0", BoardOp.SOFT_RESET, reason="3", at=3.0, actor="operator")
    with store.read() as conn:
        assert [o.id for o in ops.ops_for(conn, "h1-b0")] == [second, first]
        assert [o.id for o in ops.ops_for(conn, "h1-b0", limit=1)] == [second]
        assert ops.ops_for(conn, "h1-b1") == []
        latest = ops.latest_ops(conn, ["h1-b0", "h2-b0", "h1-b1"])
        assert {b: o.id for b, o in latest.items()} == {"h1-b0": second, "h2-b0": other}
        resets = ops.latest_ops(conn, ["h1-b0"], op=BoardOp.SOFT_RESET)
        assert {b: o.id for b, o in resets.items()} == {"h1-b0": first}
        assert ops.latest_ops(conn, []) == {}
