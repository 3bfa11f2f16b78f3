"""Did a re-run reproduce a result? Pure comparison of two ranks' records (``fleetyard repro``).

A :class:`RankRecord` is what a finished rank left: its outcome, exit code, result and output
blobs. :func:`compare` lists :class:`Check` s between the original and the re-run, per kind:

- every kind: the outcome (success, user_error, …) and, for ``command``, the exit code;
- ``validate``: the verdict, the number of sets and failing sets, the first failing set, and the
  saved candidate outputs bit for bit (their blob digest, when the same set was saved);
- ``run``: each output array bit for bit (the sha256 of its bytes);
- ``bench``: the VALID/INVALID verdict; throughput and latency are reported with their change,
  not judged, since timings vary from run to run.

A decisive check that differs means "not reproduced". Context checks (runtime version, device,
board serial and firmware) say what changed between the two runs, to explain a difference.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Check", "RankRecord", "compare", "reproduced"]


@dataclass(frozen=True)
class RankRecord:
    kind: str
    outcome: str | None
    exit_code: int | None
    result: Mapping[str, Any] = field(default_factory=dict)
    outputs: Mapping[str, str] = field(default_factory=dict)  # file name -> blob sha256


@dataclass(frozen=True)
class Check:
    name: str
    original: Any
    again: Any
    decisive: bool  # part of the verdict; else context
    same: bool
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "original": self.original,
            "again": self.again,
            "decisive": self.decisive,
            "same": self.same,
            "note": self.note,
        }


def _check(name: str, a: Any, b: Any, *, decisive: bool = True, note: str = "") -> Check:
    return Check(name, a, b, decisive, a == b, note)


def compare(original: RankRecord, again: RankRecord) -> list[Check]:
    """The checks between an original rank and its re-run, decisive ones first."""
    o, a = original.result, again.result
    checks = [_check("outcome", original.outcome, again.outcome)]
    if original.kind == "command":
        checks.append(_check("exit code", original.exit_code, again.exit_code))
    elif original.kind == "validate":
        for key in ("passed", "sets", "failing_sets", "first_failing_set"):
            checks.append(_check(key.replace("_", " "), o.get(key), a.get(key)))
        if o.get("saved_set") == a.get("saved_set") and "candidate.npz" in original.outputs:
            checks.append(
                _check(
                    f"candidate outputs of set {o.get('saved_set')}",
                    original.outputs.get("candidate.npz"),
                    again.outputs.get("candidate.npz"),
                    note="bit for bit (blob sha256)",
                )
            )
    elif original.kind == "run":
        names = sorted(set(o.get("outputs") or {}) | set(a.get("outputs") or {}))
        for name in names:
            checks.append(
                _check(
                    f"output {name}",
                    _get(o, "outputs", name, "sha256"),
                    _get(a, "outputs", name, "sha256"),
                    note="bit for bit (sha256 of the array)",
                )
            )
    elif original.kind == "bench":
        checks.append(_check("verdict", o.get("verdict"), a.get("verdict")))
        for key, label in (("samples_per_s", "samples/s"), ("queries_per_s", "queries/s")):
            checks.append(_change(label, o.get(key), a.get(key)))
        for p in ("p50", "p99"):
            checks.append(_change(f"latency {p} ms", _get(o, "latency_ms", p), _get(a, "latency_ms", p)))
    checks += _context(o, a)
    return checks


def reproduced(checks: list[Check]) -> bool:
    return all(c.same for c in checks if c.decisive)


def _context(o: Mapping[str, Any], a: Mapping[str, Any]) -> list[Check]:
    pairs = [
        ("artifact", o.get("artifact"), a.get("artifact")),
        ("runtime", _get(o, "runtime", "runtime"), _get(a, "runtime", "runtime")),
        ("runtime version", _get(o, "runtime", "runtime_version"), _get(a, "runtime", "runtime_version")),
        ("providers", _get(o, "runtime", "providers_used"), _get(a, "runtime", "providers_used")),
        ("board", _get(o, "board", "id"), _get(a, "board", "id")),
        ("board serial", _get(o, "board", "serial"), _get(a, "board", "serial")),
        ("firmware", _get(o, "board", "firmware"), _get(a, "board", "firmware")),
        ("device", _get(o, "board", "device"), _get(a, "board", "device")),
        ("driver", _get(o, "board", "driver"), _get(a, "board", "driver")),
    ]
    return [_check(n, x, y, decisive=False) for n, x, y in pairs if x is not None or y is not None]


def _change(name: str, a: Any, b: Any) -> Check:
    note = ""
    if isinstance(a, int | float) and isinstance(b, int | float) and a:
        note = f"{(b - a) / a:+.1%}"
    return Check(name, a, b, decisive=False, same=a == b, note=note)


def _get(d: Mapping[str, Any], *keys: str) -> Any:
    cur: Any = d
    for k in keys:
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(k)
    return cur
