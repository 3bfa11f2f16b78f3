"""Evaluation arithmetic, free of I/O: sharding, per-sample metrics, combining ranks, comparing two evals.

Used by the ``eval`` job kind (:mod:`fleetyard.workloads.eval`) on the boards and by
``fleetyard eval show|compare`` on the client.
"""

from fleetyard.evaluation.core import (
    RankTally,
    SampleScore,
    aggregate,
    bootstrap_mean_ci,
    compare_records,
    input_digest,
    mcnemar_exact,
    score_sample,
    shard_indices,
)

__all__ = [
    "RankTally",
    "SampleScore",
    "aggregate",
    "bootstrap_mean_ci",
    "compare_records",
    "input_digest",
    "mcnemar_exact",
    "score_sample",
    "shard_indices",
]
