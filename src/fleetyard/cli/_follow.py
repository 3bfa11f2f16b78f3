"""Watching jobs from the CLI: printing log chunks, waiting with progress, exit codes."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import TextIO

from fleetyard.cli._output import err
from fleetyard.client import Client, JobOut, JobState, LogChunk, ResultsOut

EXIT_WAIT_TIMED_OUT = 124  # what coreutils' timeout(1) answers


class LogPrinter:
    """Writes log chunks to a stream; with several ranks, each line starts with ``[rank]``."""

    def __init__(self, prefix_ranks: bool, stream: TextIO | None = None) -> None:
        self.prefix_ranks = prefix_ranks
        self.stream = stream
        self._partial: dict[tuple[int, int], str] = {}
        self._attempt: int | None = None

    def _out(self) -> TextIO:
        return self.stream if self.stream is not None else sys.stdout

    def write(self, chunk: LogChunk) -> None:
        if self._attempt is not None and chunk.attempt_id != self._attempt:
            self.flush()
            # A new attempt means the last one ended as an infra error and the job was re-queued.
            err().print(f"— the job was re-queued; logs of attempt {chunk.attempt_id} follow", style="yellow")
        self._attempt = chunk.attempt_id
        if not self.prefix_ranks:
            self._out().write(chunk.data)
            self._out().flush()
            return
        key = (chunk.attempt_id, chunk.rank)
        text = self._partial.pop(key, "") + chunk.data
        *lines, rest = text.split("\n")
        for line in lines:
            self._out().write(f"[{chunk.rank}] {line}\n")
        if rest:
            self._partial[key] = rest
        self._out().flush()

    def flush(self) -> None:
        """Print lines still waiting for their newline."""
        for (_, rank), rest in sorted(self._partial.items()):
            self._out().write(f"[{rank}] {rest}\n")
        self._partial.clear()
        self._out().flush()


def wait_jobs(client: Client, ids: Sequence[int], timeout: float | None) -> list[JobOut]:
    """Wait for every job, showing progress on stderr; the jobs as they are at the end."""
    deadline = None if timeout is None else time.monotonic() + timeout
    done: dict[int, JobOut] = {}
    last: dict[int, JobOut] = {}
    with err().status("") as status:
        for job_id in ids:
            while job_id not in done:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                state = last[job_id].state if job_id in last else "…"
                status.update(f"waiting for job {job_id} ({state}); {len(done)}/{len(ids)} finished")
                # Short server-side waits, so the spinner's text follows the job's state.
                job = client.wait(job_id, timeout=5.0 if left is None else min(5.0, left))
                last[job_id] = job
                if job.state in FINISHED:
                    done[job_id] = job
            if job_id not in done and job_id not in last:
                last[job_id] = client.wait(job_id, timeout=0)
    return [done.get(i) or last[i] for i in ids]


FINISHED = frozenset(s.value for s in JobState if s.finished)


def wait_exit_code(jobs: Sequence[JobOut]) -> int:
    """0 when every job succeeded; 124 when one had not finished; else 1."""
    if any(j.state not in FINISHED for j in jobs):
        return EXIT_WAIT_TIMED_OUT
    return 0 if all(j.state == JobState.SUCCEEDED for j in jobs) else 1


def run_exit_code(job: JobOut, results: ResultsOut | None) -> int:
    """``fleetyard run``'s exit code: 0 on success, a failed rank's own exit code, else 1."""
    if job.state == JobState.SUCCEEDED:
        return 0
    if job.state not in FINISHED:
        return EXIT_WAIT_TIMED_OUT
    for rank in sorted(results.ranks if results else [], key=lambda r: r.rank):
        code = rank.exit_code
        if code is None or code == 0:
            continue
        # A negative code is a signal (Popen's convention); shells answer 128 + signal.
        code = 128 + (-code) if code < 0 else code
        return code if 0 < code < 256 else 1
    return 1
