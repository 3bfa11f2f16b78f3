"""Events on their way to the server: batched, uploaded with their outputs, kept until acknowledged.

Invariant: an event leaves the outbox only after the server answered 2xx to a batch holding it
(or a 4xx that says it can never succeed). A failed batch is sent again with the same
``(assignment_id, seq)`` keys, which the server dedupes, so a server restart or a lost answer
neither loses nor duplicates anything.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fleetyard.agent.link import Backoff, Revival, ServerLink, Unreachable, describe
from fleetyard.errors import FleetyardError, NotFound, StaleSession
from fleetyard.protocol.agent import Event, EventAck, EventBatch, EventType

__all__ = ["EventSender", "Outbox"]

log = logging.getLogger("fleetyard.agent")

# While events flow (a batch went out less than BUSY_S ago), a batch waits up to FLUSH_INTERVAL_S
# for company: a fifth fewer CPU-milliseconds per job across server and agent at full load (see
# docs/benchmarks.md). A lone event after a quiet spell goes out at once.
FLUSH_INTERVAL_S = 0.02
BUSY_S = 0.1
FLUSH_COUNT = 200
MAX_BATCH = 2000  # after an outage, catch up in requests of bounded size
MAX_BATCH_BYTES = 8 * 1024 * 1024  # ... in events and in bytes (a log event holds at most 64 Ki chars)
EVENT_OVERHEAD_BYTES = 400  # an event's JSON without its log text, about


@dataclass
class _Item:
    event: Event
    uploads: dict[str, Path] = field(default_factory=dict)  # sha256 -> file, sent before the event
    cleanup: Path | None = None  # removed once the server has the event


class Outbox:
    """A thread-safe FIFO of events not yet acknowledged by the server."""

    def __init__(self) -> None:
        self._items: deque[_Item] = deque()
        self._cond = threading.Condition()
        self._first_at = 0.0  # when the oldest pending item was added
        self._finished: dict[int, int] = {}  # assignment id -> finished events pending

    def add(self, event: Event, uploads: dict[str, Path] | None = None, cleanup: Path | None = None) -> None:
        with self._cond:
            if not self._items:
                self._first_at = time.monotonic()
            self._items.append(_Item(event, uploads or {}, cleanup))
            if event.type is EventType.FINISHED:
                self._finished[event.assignment_id] = self._finished.get(event.assignment_id, 0) + 1
            if len(self._items) == 1 or len(self._items) >= FLUSH_COUNT:
                self._cond.notify_all()

    def __len__(self) -> int:
        return len(self._items)

    def unacked_finished(self) -> set[int]:
        """Assignments whose end the server has not heard yet (they still count as running)."""
        with self._cond:
            return set(self._finished)

    def take(self, stop: threading.Event, *, linger_s: float = FLUSH_INTERVAL_S) -> list[_Item]:
        """The next batch (left in the outbox until :meth:`done`); [] once ``stop`` is set and empty.

        Waits for the first event, then up to ``linger_s`` more (measured from that event) for
        company, unless FLUSH_COUNT are already pending.
        """
        with self._cond:
            while not self._items:
                if stop.is_set():
                    return []
                self._cond.wait(0.5)
            if linger_s > 0:
                while len(self._items) < FLUSH_COUNT:
                    left = self._first_at + linger_s - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            batch: list[_Item] = []
            size = 0
            for item in self._items:
                # Bounded in bytes too: the server caps an agent's request body (16 MiB).
                size += EVENT_OVERHEAD_BYTES + len(item.event.data or "") * 4  # a char is at most 4 bytes of UTF-8
                if batch and (len(batch) >= MAX_BATCH or size > MAX_BATCH_BYTES):
                    break
                batch.append(item)
            return batch

    def done(self, items: list[_Item]) -> None:
        """Drop a batch from the head of the outbox (the server has it, or can never take it)."""
        with self._cond:
            for item in items:
                head = self._items.popleft()
                assert head is item, "only the sender removes, and only from the head"
                if item.event.type is EventType.FINISHED:
                    aid = item.event.assignment_id
                    self._finished[aid] -= 1
                    if self._finished[aid] <= 0:
                        del self._finished[aid]
            if self._items:
                self._first_at = time.monotonic()
            self._cond.notify_all()

    def wait_empty(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._items:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True


class EventSender(threading.Thread):
    """Sends the outbox to the server, one request per flush, until ``stop`` and the outbox is empty."""

    def __init__(
        self,
        outbox: Outbox,
        link: ServerLink,
        *,
        session: Callable[[], str],
        reregister: Callable[[ServerLink], None],
        on_cancel: Callable[[list[int]], None],
        stop: threading.Event,
        revival: Revival | None = None,
    ) -> None:
        super().__init__(name="agent-events", daemon=True)
        self.outbox = outbox
        self.link = link
        self.session = session
        self.reregister = reregister
        self.on_cancel = on_cancel
        self.stop = stop
        self.revival = revival
        self._uploaded: set[str] = set()  # blobs the server has, as far as this process knows
        self.batches = 0
        self._last_sent = -float("inf")

    def run(self) -> None:
        backoff = Backoff(revival=self.revival)
        down_since: float | None = None
        while True:
            busy = time.monotonic() - self._last_sent < BUSY_S
            items = self.outbox.take(self.stop, linger_s=FLUSH_INTERVAL_S if busy and not self.stop.is_set() else 0.0)
            if not items:
                return
            try:
                self._upload(items)
                body = EventBatch(session=self.session(), events=[i.event for i in items])
                ack = EventAck.model_validate(self.link.post_model("/v1/agent/events", body))
            except Unreachable as exc:
                if down_since is None:
                    down_since = time.monotonic()
                    log.warning("cannot send %d events, will retry: %s", len(items), exc)
                backoff.wait()
                continue
            except StaleSession as exc:
                log.warning("events: %s; registering again", describe(exc))
                self.reregister(self.link)
                backoff.wait()  # (re-registration is not possible while shutting down)
                continue
            except FleetyardError as exc:
                # A 4xx other than 409/429: this batch can never succeed; keep the agent going.
                log.error("the server refused %d events for good (%s); dropping them", len(items), describe(exc))
                self._finish(items)
                continue
            except Exception:  # e.g. an answer that is not an EventAck: retry, never die
                log.exception("sending %d events failed, will retry", len(items))
                backoff.wait()
                continue
            if down_since is not None:
                log.info("events flowing again after %.1f s", time.monotonic() - down_since)
                down_since = None
            backoff.succeeded()
            self.batches += 1
            self._last_sent = time.monotonic()
            self._finish(items)
            if ack.cancel:
                self.on_cancel(ack.cancel)

    def _finish(self, items: list[_Item]) -> None:
        self.outbox.done(items)
        for item in items:
            if item.cleanup is not None:
                shutil.rmtree(item.cleanup, ignore_errors=True)

    def _upload(self, items: list[_Item]) -> None:
        """Upload the output files the batch's events name (raises Unreachable to retry later)."""
        for item in items:
            for sha, path in list(item.uploads.items()):
                if sha not in self._uploaded:
                    try:
                        self._upload_one(sha, path)
                        self._uploaded.add(sha)
                    except (FleetyardError, OSError) as exc:
                        # Too large, or lost on disk: the rank ends without that output.
                        names = [n for n, s in item.event.outputs.items() if s == sha]
                        log.error(
                            "output %s of assignment %d not uploaded: %s",
                            names,
                            item.event.assignment_id,
                            describe(exc),
                        )
                        item.event = item.event.model_copy(
                            update={
                                "outputs": {n: s for n, s in item.event.outputs.items() if s != sha},
                                "message": _append(
                                    item.event.message, f"output {', '.join(names)} lost: {describe(exc)}"
                                ),
                            }
                        )
                del item.uploads[sha]

    def _upload_one(self, sha: str, path: Path) -> None:
        try:
            self.link.request("HEAD", f"/v1/blobs/{sha}")
            return  # the server has it already
        except NotFound:
            pass
        # Streamed from the file: an output is never all in the agent's memory. The server's
        # size limit decides what is too large (413).
        with path.open("rb") as f:
            self.link.request(
                "PUT",
                f"/v1/blobs/{sha}",
                content=f,
                headers={"Content-Type": "application/octet-stream"},
                timeout_s=300,
            )


def _append(message: str | None, note: str) -> str:
    return f"{message}; {note}" if message else note
