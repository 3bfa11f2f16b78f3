"""The Fleetyard Python SDK: a synchronous client for the ``/v1`` HTTP API.

    from fleetyard.client import Client

    with Client() as fy:                     # FLEETYARD_SERVER / FLEETYARD_TOKEN or the config file
        job = fy.submit({"boards": 4, "generations": ["sim-g2"], "placement": "same-host",
                         "params": {"command": ["sh", "-c", "echo rank $FLEETYARD_RANK"]}})
        for chunk in fy.follow_logs(job.id):
            print(chunk.data, end="")
        print(fy.wait(job.id).state)

This module, its ``__all__`` and the models it re-exports are public API; the modules with a
leading underscore are not.
"""

from fleetyard.client._client import Client, parse_spec
from fleetyard.domain.auth import Role
from fleetyard.domain.job import JobState
from fleetyard.domain.spec import JobSpec, Placement
from fleetyard.protocol.agent import BoardOp, FaultAction, FaultKind
from fleetyard.protocol.api import (
    ArtifactOut,
    AttemptOut,
    AuditEntryOut,
    BoardEventOut,
    BoardOpOut,
    BoardOut,
    FaultOrderOut,
    FirmwareOut,
    FleetStatsOut,
    HostOut,
    JobDetail,
    JobOut,
    LogChunk,
    LogsOut,
    OnboardingBatchOut,
    OnboardingBoardOut,
    PipelineRunOut,
    PipelineStageOut,
    RankOut,
    RepairOut,
    ResultsOut,
    TokenOut,
)

__all__ = [
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
