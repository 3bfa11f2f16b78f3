"""The synchronous SDK over the ``/v1`` HTTP API (docs/api.md)."""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from fleetyard import __version__
from fleetyard.client._http import raise_for_answer, unreachable
from fleetyard.config import resolve_client_settings
from fleetyard.domain.auth import Role
from fleetyard.domain.job import JobState
from fleetyard.domain.queue_config import QueueConfig, QueueQuota, parse_queue_config
from fleetyard.domain.spec import JobSpec
from fleetyard.errors import BadRequest, DigestMismatch
from fleetyard.protocol.agent import BoardOp, FaultAction, FaultKind
from fleetyard.protocol.api import (
    ArtifactOut,
    AuditEntryOut,
    BoardEventOut,
    BoardOpOut,
    BoardOut,
    BreakerOut,
    FaultOrderOut,
    FirmwareOut,
    FleetStatsOut,
    HostOut,
    InventoryDiffOut,
    InventoryOut,
    InventorySyncOut,
    JobDetail,
    JobOut,
    LeaseIn,
    LeaseOut,
    LogChunk,
    LogsOut,
    OnboardingBatchOut,
    OnboardingBoardOut,
    PipelineRunOut,
    PriorityClassOut,
    QueueOut,
    RepairOut,
    ResultsOut,
    RolloutDetail,
    RolloutOut,
    TokenOut,
    WhyOut,
)
from fleetyard.tls import tls_for

M = TypeVar("M", bound=BaseModel)

BATCH_SIZE = 1000  # the server's limit per POST /v1/jobs/batch
MAX_SERVER_WAIT_S = 60.0  # the server's limit on ?timeout= and ?wait=
_CHUNK = 1 << 20
_FINISHED = frozenset(s.value for s in JobState if s.finished)


def _q(segment: object) -> str:
    """One URL path segment, escaped (ids are data, not path syntax)."""
    return quote(str(segment), safe="")


def parse_spec(data: JobSpec | Mapping[str, Any], *, where: str = "job spec") -> JobSpec:
    """A :class:`JobSpec` from a mapping; a bad field is a :class:`BadRequest` naming it."""
    if isinstance(data, JobSpec):
        return data
    if not isinstance(data, Mapping):
        raise BadRequest(f"{where}: expected a mapping of fields, got {type(data).__name__}")
    try:
        return JobSpec.model_validate(dict(data))
    except ValidationError as exc:
        errors = [{"field": ".".join(map(str, e["loc"])) or "(spec)", "message": e["msg"]} for e in exc.errors()]
        first = errors[0]
        raise BadRequest(f"{where}: {first['field']}: {first['message']}", detail=errors) from None


class Client:
    """A connection to one Fleetyard server.

    ``server`` and ``token`` come from the arguments, else ``FLEETYARD_SERVER`` /
    ``FLEETYARD_TOKEN``, else the client config file (see :mod:`fleetyard.config`).
    Every method raises the :mod:`fleetyard.errors` class the server answered with.
    """

    def __init__(self, server: str | None = None, token: str | None = None, timeout: float = 30) -> None:
        self.server, self.token = resolve_client_settings(server, token)
        self.timeout = timeout
        headers = {"User-Agent": f"fleetyard-sdk/{__version__}"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        self._http = httpx.Client(base_url=self.server, headers=headers, timeout=timeout, verify=tls_for([self.server]))

    # -- plumbing -----------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client(server={self.server!r})"

    def _request(self, method: str, path: str, *, wait_s: float = 0.0, **kwargs: Any) -> httpx.Response:
        if wait_s:
            # A long poll may legitimately take wait_s before the first byte.
            kwargs["timeout"] = self.timeout + wait_s
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise unreachable(self.server, exc) from None
        raise_for_answer(response)
        return response

    def _one(self, model: type[M], method: str, path: str, **kwargs: Any) -> M:
        return model.model_validate(self._request(method, path, **kwargs).json())

    def _many(self, model: type[M], path: str, **kwargs: Any) -> list[M]:
        return [model.model_validate(x) for x in self._request("GET", path, **kwargs).json()]

    @staticmethod
    def _params(**values: Any) -> dict[str, Any]:
        return {k: (str(v) if not isinstance(v, int | float) else v) for k, v in values.items() if v is not None}

    # -- health -------------------------------------------------------------------------------

    def ready(self) -> bool:
        """True when the server answers ``/readyz`` (its store answers); never raises for a dead server."""
        try:
            response = self._http.get("/readyz", timeout=min(self.timeout, 5.0))
        except httpx.TransportError:
            return False
        return response.is_success

    # -- hosts and boards ---------------------------------------------------------------------

    def fleet_stats(self, since_s: float = 7 * 86400.0) -> FleetStatsOut:
        """Uptime accounting over the last ``since_s`` seconds: availability, incidents, MTTR, MTTD."""
        return self._one(FleetStatsOut, "GET", "/v1/fleet/stats", params={"since_s": since_s})

    def breakers(self) -> list[BreakerOut]:
        """Each generation's circuit breaker: tripped (automatic remediation stopped) or not."""
        return self._many(BreakerOut, "/v1/fleet/breakers")

    def reset_breaker(self, generation: str, reason: str) -> BreakerOut:
        """Let automatic remediation of a generation go on again (operators)."""
        return self._one(BreakerOut, "POST", f"/v1/fleet/breakers/{_q(generation)}/reset", json={"reason": reason})

    def hosts(self, state: str | None = None) -> list[HostOut]:
        return self._many(HostOut, "/v1/hosts", params=self._params(state=state))

    def host(self, host_id: str) -> HostOut:
        return self._one(HostOut, "GET", f"/v1/hosts/{_q(host_id)}")

    def boards(
        self,
        state: str | None = None,
        host: str | None = None,
        generation: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> list[BoardOut]:
        """Boards matching every filter given; ``labels`` must all match."""
        params: list[tuple[str, str]] = list(self._params(state=state, host=host, generation=generation).items())
        params += [("label", f"{k}={v}") for k, v in (labels or {}).items()]
        return self._many(BoardOut, "/v1/boards", params=params)

    def board(self, board_id: str) -> BoardOut:
        return self._one(BoardOut, "GET", f"/v1/boards/{_q(board_id)}")

    def drain(self, board_id: str, reason: str) -> BoardOut:
        """Take a board out of service (an allocated board drains when its attempt ends)."""
        return self._one(BoardOut, "POST", f"/v1/boards/{_q(board_id)}/drain", json={"reason": reason})

    def undrain(self, board_id: str, reason: str) -> BoardOut:
        """Return a drained or suspect board to service."""
        return self._one(BoardOut, "POST", f"/v1/boards/{_q(board_id)}/undrain", json={"reason": reason})

    def release(self, board_id: str, reason: str) -> BoardOut:
        """Let a board go from its host, so that the agent of the host it is moved to may claim it."""
        return self._one(BoardOut, "POST", f"/v1/boards/{_q(board_id)}/release", json={"reason": reason})

    def repaired(self, board_id: str, reason: str) -> BoardOut:
        """A quarantined board is back from repair: onboarding, an L3 burn-in, then service."""
        return self._one(BoardOut, "POST", f"/v1/boards/{_q(board_id)}/repaired", json={"reason": reason})

    def board_history(self, board_id: str, limit: int = 100) -> list[BoardEventOut]:
        """A board's state transitions, newest first."""
        return self._many(BoardEventOut, f"/v1/boards/{_q(board_id)}/history", params={"limit": limit})

    def inject_fault(
        self,
        board_id: str,
        kind: FaultKind | str | None,
        action: FaultAction | str = FaultAction.INJECT,
    ) -> FaultOrderOut:
        """Have the board's agent inject (or clear) a simulated fault; ``kind=None`` clears all."""
        body = {"kind": None if kind is None else str(kind), "action": str(action)}
        return self._one(FaultOrderOut, "POST", f"/v1/admin/boards/{_q(board_id)}/faults", json=body)

    def order_board_op(
        self,
        board_id: str,
        op: BoardOp | str,
        reason: str = "",
        timeout_s: float | None = None,
        version: str | None = None,
        take_over: bool = False,
    ) -> BoardOpOut:
        """Have the board's agent carry out an op (soft_reset, hard_reset, reflash, host_reboot:
        every board of its host; flash: a registered ``version``); see :meth:`board_ops` for how it went.
        A board under automatic remediation refuses it (409) unless ``take_over``: its case closes
        as taken over by you and the board stays drained until you undrain it."""
        body: dict[str, Any] = {"op": str(op), "reason": reason}
        if take_over:
            body["take_over"] = True
        if timeout_s is not None:
            body["timeout_s"] = timeout_s
        if version is not None:
            body["version"] = version
        return self._one(BoardOpOut, "POST", f"/v1/boards/{_q(board_id)}/ops", json=body)

    def board_ops(self, board_id: str, limit: int = 100) -> list[BoardOpOut]:
        """A board's ops and their results, newest first."""
        return self._many(BoardOpOut, f"/v1/boards/{_q(board_id)}/ops", params={"limit": limit})

    def repairs(self, board_id: str, limit: int = 20) -> list[RepairOut]:
        """A board's remediation cases (its repair records), newest first."""
        return self._many(RepairOut, f"/v1/boards/{_q(board_id)}/repairs", params={"limit": limit})

    def approve_boards(self, serials: Sequence[str], reason: str, batch: str | None = None) -> list[BoardOut]:
        """Let boards waiting in discovered onboard, as one batch (staff; default batch approved-<minute>)."""
        body = {"boards": list(serials), "batch": batch, "reason": reason}
        return [BoardOut.model_validate(x) for x in self._request("POST", "/v1/boards/approve", json=body).json()]

    # -- the declared inventory ---------------------------------------------------------------

    def inventory(self) -> InventoryOut:
        """The stored inventory, its auto-approve rules and onboarding parallelism."""
        return self._one(InventoryOut, "GET", "/v1/inventory")

    def inventory_diff(self, text: str) -> InventoryDiffOut:
        """What syncing this inventory (YAML text) would change, and where the fleet disagrees with it (staff)."""
        return self._one(InventoryDiffOut, "POST", "/v1/inventory/diff", json={"text": text})

    def sync_inventory(self, text: str, dry_run: bool = False) -> InventorySyncOut:
        """Make this inventory (YAML text) the stored one; discovered boards it names onboard (staff)."""
        return self._one(InventorySyncOut, "POST", "/v1/inventory/sync", json={"text": text, "dry_run": dry_run})

    # -- jobs ---------------------------------------------------------------------------------

    def submit(self, spec: JobSpec | Mapping[str, Any]) -> JobOut:
        """Submit one job; a spec that can never run is refused here, not queued."""
        body = parse_spec(spec).model_dump(mode="json")
        return self._one(JobOut, "POST", "/v1/jobs", json=body)

    def submit_many(self, specs: Iterable[JobSpec | Mapping[str, Any]]) -> list[int]:
        """Submit many jobs, in batches of 1000 (each batch all or nothing); their ids in order."""
        parsed = [parse_spec(s, where=f"job spec #{i}") for i, s in enumerate(specs)]
        ids: list[int] = []
        for start in range(0, len(parsed), BATCH_SIZE):
            batch = [s.model_dump(mode="json") for s in parsed[start : start + BATCH_SIZE]]
            answer = self._request("POST", "/v1/jobs/batch", json={"jobs": batch}).json()
            ids.extend(int(i) for i in answer["ids"])
        return ids

    def jobs(
        self,
        state: str | None = None,
        team: str | None = None,
        kind: str | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> list[JobOut]:
        """Jobs, newest first; pass the last id as ``before`` for the next page."""
        params = self._params(state=state, team=team, kind=kind, limit=limit, before=before)
        return self._many(JobOut, "/v1/jobs", params=params)

    def job(self, job_id: int) -> JobDetail:
        """One job with its attempts and ranks."""
        return self._one(JobDetail, "GET", f"/v1/jobs/{job_id}")

    def cancel(self, job_id: int) -> JobOut:
        return self._one(JobOut, "POST", f"/v1/jobs/{job_id}/cancel")

    def wait(self, job_id: int, timeout: float | None = None, poll: float = 30.0) -> JobOut:
        """Block until the job finished, or ``timeout`` seconds passed; the job as it is then.

        The caller checks ``JobState(job.state).finished``: an unfinished job means time ran out.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            step = min(poll, MAX_SERVER_WAIT_S)
            if deadline is not None:
                step = max(0.0, min(step, deadline - time.monotonic()))
            job = self._one(JobOut, "GET", f"/v1/jobs/{job_id}/wait", params={"timeout": step}, wait_s=step)
            if job.state in _FINISHED or (deadline is not None and time.monotonic() >= deadline):
                return job

    def logs(self, job_id: int, after: int = 0, wait: float = 0) -> LogsOut:
        """Log chunks after cursor ``after``; waits up to ``wait`` s for new ones."""
        wait = min(wait, MAX_SERVER_WAIT_S)
        params = {"after": after, "wait": wait}
        return self._one(LogsOut, "GET", f"/v1/jobs/{job_id}/logs", params=params, wait_s=wait)

    def follow_logs(self, job_id: int, after: int = 0, wait: float = 10.0) -> Iterator[LogChunk]:
        """Every log chunk as it arrives, until the job finished and no new chunks come."""
        cursor = after
        finished = False
        while True:
            # Once the job finished, only drain what is left: never long-poll for more.
            page = self.logs(job_id, after=cursor, wait=0 if finished else wait)
            yield from page.chunks
            cursor = max(cursor, page.cursor)
            if page.finished and not page.chunks:
                return
            finished = page.finished

    def results(self, job_id: int) -> ResultsOut:
        """The last attempt's ranks: exit codes, results and output blobs."""
        return self._one(ResultsOut, "GET", f"/v1/jobs/{job_id}/results")

    def why(self, job_id: int) -> WhyOut:
        """Why a job is pending: the scheduler's reason and a fresh look at the fleet and quotas."""
        return self._one(WhyOut, "GET", f"/v1/jobs/{job_id}/why")

    # -- blobs --------------------------------------------------------------------------------

    def upload_blob(self, data: bytes | str | os.PathLike[str]) -> str:
        """Store bytes or a file's contents as a blob; returns its sha256 (its address)."""
        if isinstance(data, bytes):
            digest = hashlib.sha256(data).hexdigest()
            self._request("PUT", f"/v1/blobs/{digest}", content=data)
            return digest
        path = Path(data)
        digest = _file_digest(path)
        with path.open("rb") as f:
            self._request("PUT", f"/v1/blobs/{digest}", content=f)
        return digest

    def download_blob(self, sha256: str, dest: str | os.PathLike[str]) -> Path:
        """Fetch a blob into ``dest`` (a file, or a folder to hold ``<sha256>``), checking its hash."""
        target = Path(dest)
        if target.is_dir():
            target = target / sha256
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".blob-", dir=target.parent)
        try:
            h = hashlib.sha256()
            with os.fdopen(fd, "wb") as f:
                try:
                    with self._http.stream("GET", f"/v1/blobs/{_q(sha256)}") as response:
                        if not response.is_success:
                            response.read()
                            raise_for_answer(response)
                        for chunk in response.iter_bytes(_CHUNK):
                            h.update(chunk)
                            f.write(chunk)
                except httpx.TransportError as exc:
                    raise unreachable(self.server, exc) from None
            if h.hexdigest() != sha256.lower():
                raise DigestMismatch(
                    f"blob {sha256} arrived with sha256 {h.hexdigest()}",
                    detail={"expected": sha256, "got": h.hexdigest()},
                )
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target

    # -- artifacts ----------------------------------------------------------------------------

    def push_artifact(self, path: str | os.PathLike[str], name: str | None = None) -> ArtifactOut:
        """Upload an artifact file and register it; the server inspects it and refuses a bad one."""
        sha = self.upload_blob(path)
        body = {"sha256": sha, "name": name or Path(path).name}
        return self._one(ArtifactOut, "POST", "/v1/artifacts", json=body)

    def push_firmware(
        self,
        path: str | os.PathLike[str],
        generation: str,
        version: str,
        *,
        notes: str = "",
        hardware_revisions: Sequence[str] = (),
        sha256: str | None = None,
    ) -> FirmwareOut:
        """Upload a firmware image and register it for a generation (staff). ``sha256``: what the
        image's publisher says it hashes to; a file that hashes otherwise is refused unsent."""
        if sha256 is not None:
            have = _file_digest(Path(path))
            if have != sha256.strip().lower():
                raise DigestMismatch(
                    f"{path} hashes to sha256 {have}, not the expected {sha256.strip()}: the file is damaged "
                    "or not the image you meant; fetch it again from its publisher",
                    detail={"sha256": have, "expected": sha256},
                )
        sha = self.upload_blob(path)
        body = {
            "generation": generation,
            "version": version,
            "sha256": sha,
            "notes": notes,
            "hardware_revisions": list(hardware_revisions),
        }
        return self._one(FirmwareOut, "POST", "/v1/firmware", json=body)

    def firmware(self, generation: str | None = None) -> list[FirmwareOut]:
        """The registered firmware images, by generation, newest version first."""
        return self._many(FirmwareOut, "/v1/firmware", params=self._params(generation=generation))

    def set_standard_firmware(self, generation: str, version: str) -> FirmwareOut:
        """Make a registered image its generation's standard: what onboarding flashes (staff)."""
        return self._one(FirmwareOut, "POST", f"/v1/firmware/{_q(generation)}/{_q(version)}/standard")

    def start_rollout(self, generation: str, version: str, *, reason: str, **plan: Any) -> RolloutDetail:
        """Start a staged firmware rollout of a generation to a registered version (staff). ``plan``:
        canary, shares, soak_s, control, drain, drain_timeout_s, step_timeout_s (left out: defaults)."""
        body = {"generation": generation, "version": version, "reason": reason}
        body.update({k: v for k, v in plan.items() if v is not None})
        return self._one(RolloutDetail, "POST", "/v1/rollouts", json=body)

    def rollouts(self, generation: str | None = None, *, active: bool = False) -> list[RolloutOut]:
        """Firmware rollouts, newest first."""
        params = self._params(generation=generation, active="true" if active else None)
        return self._many(RolloutOut, "/v1/rollouts", params=params)

    def rollout(self, rollout_id: int) -> RolloutDetail:
        """A rollout: each wave (boards by step, figures, gate, verdict) and each board."""
        return self._one(RolloutDetail, "GET", f"/v1/rollouts/{_q(rollout_id)}")

    def control_rollout(self, rollout_id: int, action: str, reason: str) -> RolloutDetail:
        """``pause``, ``resume`` or ``abort`` a rollout (staff)."""
        if action not in ("pause", "resume", "abort"):
            raise BadRequest(f"unknown rollout action {action!r}; use pause, resume or abort")
        return self._one(RolloutDetail, "POST", f"/v1/rollouts/{_q(rollout_id)}/{action}", json={"reason": reason})

    def start_pipeline(self, text: str, params: Mapping[str, Any] | None = None) -> PipelineRunOut:
        """Start a pipeline run from its spec's YAML text (``params``: overrides, as ``--set``)."""
        return self._one(PipelineRunOut, "POST", "/v1/pipelines", json={"text": text, "params": dict(params or {})})

    def pipeline(self, run_id: int) -> PipelineRunOut:
        """A pipeline run with each stage instance (state, job, metrics, outputs) and its DAG."""
        return self._one(PipelineRunOut, "GET", f"/v1/pipelines/{_q(run_id)}")

    def pipelines(self, state: str | None = None, limit: int = 50) -> list[PipelineRunOut]:
        """Pipeline runs, newest first."""
        return self._many(PipelineRunOut, "/v1/pipelines", params=self._params(state=state, limit=limit))

    def cancel_pipeline(self, run_id: int) -> PipelineRunOut:
        """Cancel a running pipeline run: its running jobs are canceled, its waiting stages skipped."""
        return self._one(PipelineRunOut, "POST", f"/v1/pipelines/{_q(run_id)}/cancel")

    def onboarding(self) -> list[OnboardingBatchOut]:
        """Onboarding progress per batch, newest first: boards per step, done and failed."""
        return self._many(OnboardingBatchOut, "/v1/onboarding")

    def onboarding_batch(self, batch: str) -> list[OnboardingBoardOut]:
        """Each board of an onboarding batch: its step, since when, evidence and outcome."""
        return self._many(OnboardingBoardOut, f"/v1/onboarding/{_q(batch)}")

    def resolve_artifact(self, ref: str | os.PathLike[str]) -> ArtifactOut:
        """An artifact from a reference: a local file is pushed, a sha256 must name a pushed one."""
        path = Path(ref)
        if path.is_file():
            return self.push_artifact(path)
        text = str(ref).lower()
        if len(text) == 64 and all(c in "0123456789abcdef" for c in text):
            return self.artifact(text)
        raise BadRequest(f"{str(ref)!r} is neither an artifact file nor the sha256 of a pushed artifact")

    def artifacts(self, name: str | None = None, limit: int = 100) -> list[ArtifactOut]:
        return self._many(ArtifactOut, "/v1/artifacts", params=self._params(name=name, limit=limit))

    def artifact(self, sha256: str) -> ArtifactOut:
        return self._one(ArtifactOut, "GET", f"/v1/artifacts/{_q(sha256)}")

    # -- tokens -------------------------------------------------------------------------------

    def create_token(self, name: str, role: Role | str, team: str | None = None, host: str | None = None) -> TokenOut:
        """Create a token; the answer carries its secret, which is never shown again."""
        body = {"name": name, "role": str(role), "team": team, "host": host}
        return self._one(TokenOut, "POST", "/v1/tokens", json=body)

    def tokens(self) -> list[TokenOut]:
        return self._many(TokenOut, "/v1/tokens")

    def revoke_token(self, name: str) -> None:
        self._request("DELETE", f"/v1/tokens/{_q(name)}")

    # -- audit log ----------------------------------------------------------------------------

    def audit(
        self,
        since_s: float | None = None,
        actor: str | None = None,
        action: str | None = None,
        target: str | None = None,
        limit: int = 100,
    ) -> list[AuditEntryOut]:
        """Operator actions, newest first (admin, operator): who did what to which target, when and why."""
        params = self._params(since_s=since_s, actor=actor, action=action, target=target, limit=limit)
        return self._many(AuditEntryOut, "/v1/audit", params=params)

    # -- queues and priority classes ----------------------------------------------------------

    def queues(self) -> list[QueueOut]:
        """Every team's queue: quotas, boards in use and borrowed, pending work, fair-share usage."""
        return self._many(QueueOut, "/v1/queues")

    def queue(self, name: str) -> QueueOut:
        return self._one(QueueOut, "GET", f"/v1/queues/{_q(name)}")

    def apply_queues(self, config: QueueConfig | Mapping[str, Any]) -> list[QueueOut]:
        """Replace every queue and priority class (admin, operator); validated here first."""
        body = parse_queue_config(config).model_dump(mode="json", exclude_unset=True)
        return [QueueOut.model_validate(x) for x in self._request("PUT", "/v1/queues", json=body).json()]

    def put_queue(self, name: str, quota: QueueQuota | Mapping[str, Any]) -> QueueOut:
        """Create or replace one queue (admin, operator)."""
        body = quota.model_dump(mode="json", exclude_unset=True) if isinstance(quota, QueueQuota) else dict(quota)
        return self._one(QueueOut, "PUT", f"/v1/queues/{_q(name)}", json=body)

    def delete_queue(self, name: str) -> None:
        """Remove a queue (admin, operator): its team is unlimited again."""
        self._request("DELETE", f"/v1/queues/{_q(name)}")

    def priority_classes(self) -> list[PriorityClassOut]:
        return self._many(PriorityClassOut, "/v1/priority-classes")

    # -- leases -------------------------------------------------------------------------------

    def take_lease(
        self,
        ttl_s: float,
        boards: int = 1,
        generations: Iterable[str] = (),
        labels: Mapping[str, str] | None = None,
        board_ids: Iterable[str] = (),
        note: str | None = None,
        team: str | None = None,
        priority_class: str | None = None,
    ) -> LeaseOut:
        """Take a lease of ``boards`` boards for ``ttl_s`` seconds from when they are granted; it
        is queued like any job (see :meth:`wait_lease`)."""
        try:
            body = LeaseIn(
                boards=boards,
                generations=list(generations),
                labels=dict(labels or {}),
                board_ids=list(board_ids),
                ttl_s=ttl_s,
                note=note,
                team=team,
                priority_class=priority_class,
            )
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(map(str, first["loc"]))
            raise BadRequest(f"lease: {field}: {first['msg']}", detail={"field": field}) from None
        return self._one(LeaseOut, "POST", "/v1/leases", json=body.model_dump(mode="json"))

    def lease(self, lease_id: int) -> LeaseOut:
        """One lease, with how to reach each of its boards once it runs."""
        return self._one(LeaseOut, "GET", f"/v1/leases/{lease_id}")

    def leases(self, mine: bool = False, team: str | None = None) -> list[LeaseOut]:
        """Active leases (queued or running); ``mine``: only this token's."""
        return self._many(LeaseOut, "/v1/leases", params=self._params(mine=str(mine).lower(), team=team))

    def renew_lease(self, lease_id: int, ttl_s: float | None = None) -> LeaseOut:
        """Make the lease end ``ttl_s`` (default: its own TTL) from now."""
        return self._one(LeaseOut, "POST", f"/v1/leases/{lease_id}/renew", json={"ttl_s": ttl_s})

    def release_lease(self, lease_id: int) -> LeaseOut:
        """Give the lease's boards back."""
        return self._one(LeaseOut, "DELETE", f"/v1/leases/{lease_id}")

    def wait_lease(self, lease_id: int, timeout: float | None = None, poll: float = 0.5) -> LeaseOut:
        """Block until every board of the lease is reachable and its clock runs (or it ended, or
        ``timeout`` passed)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            lease = self.lease(lease_id)
            # A rank's access line (its log) may arrive before its start (an event): both, then.
            reachable = bool(lease.boards) and all(b.access is not None for b in lease.boards)
            ready = reachable and lease.expires_at is not None
            if ready or lease.ended or (deadline is not None and time.monotonic() >= deadline):
                return lease
            time.sleep(poll)


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()
