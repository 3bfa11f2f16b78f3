"""Peers (pure): ranks that computed the same inputs on boards of one kind, and the odd one out.

Boards of one generation, driver and firmware compute the same numbers bit for bit (the golden
check rests on it). So when ranks of one job validated the same input set on such boards, and a
strict majority of them saved the same candidate outputs, a rank whose outputs differ was computed
by a board that is wrong, whatever the reference says. With no majority (two boards that differ,
a kernel that is not deterministic) nothing says which board is the odd one, and nothing is blamed.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["PeerOutputs", "Verdict", "compare_peers", "peer_group"]


@dataclass(frozen=True)
class PeerOutputs:
    key: Hashable  # which rank
    group: Hashable  # the same inputs on the same kind of board
    digest: str | None  # sha256 of the candidate outputs it saved; None: it saved none


@dataclass(frozen=True)
class Verdict:
    differs: bool  # its outputs are not the majority's
    agreeing: int  # ranks of its group with the majority's outputs
    of: int  # ranks of its group that saved outputs


def compare_peers(ranks: Iterable[PeerOutputs]) -> dict[Hashable, Verdict]:
    """Each rank that saved outputs in a group of two or more with a strict majority: whether it
    differs from the majority. Ranks with nothing to compare with are left out."""
    groups: dict[Hashable, list[PeerOutputs]] = defaultdict(list)
    for r in ranks:
        if r.digest is not None:
            groups[r.group].append(r)
    out: dict[Hashable, Verdict] = {}
    for members in groups.values():
        if len(members) < 2:
            continue
        common, n = Counter(m.digest for m in members).most_common(1)[0]
        if n * 2 <= len(members):
            continue  # no majority: nothing says which board is the odd one
        for m in members:
            out[m.key] = Verdict(m.digest != common, n, len(members))
    return out


def peer_group(result: Mapping[str, Any]) -> Hashable:
    """What makes two validation ranks peers: the input set they saved, on boards of the same
    generation, driver and firmware (as each rank's ``board`` record names them)."""
    board = result.get("board") or {}
    return (
        result.get("saved_set"),
        board.get("generation"),
        board.get("driver"),
        board.get("firmware"),
    )
