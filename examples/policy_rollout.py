"""A closed-loop policy rollout (the ``rollout`` job kind) with a CartPole controller built in code.

    python examples/policy_rollout.py [--out DIR] [--episodes N] [--no-run]

Writes DIR/cartpole_policy.onnx (a linear controller, logits out, that balances the pole for the
full 500 steps) and DIR/rollout.yaml (a ``rollout`` job spec naming it by sha256), then runs the
spec here on this machine's CPU, as a board would, and prints the summary. To run it on the
fleet (a server from ``fleetyard up``):

    fleetyard artifacts push DIR/cartpole_policy.onnx
    fleetyard jobs submit DIR/rollout.yaml --wait

(The spec is not in examples/*.yaml: those are submitted as they are, and this one names an
artifact that must be pushed first.)
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import yaml

from fleetyard.workloads.policy_rollout import RolloutParams, cartpole_policy, rollout_local


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("rollout-example"), help="where to write (rollout-example)")
    ap.add_argument("--episodes", type=int, default=10, help="episodes, seeds 0..N-1 (10)")
    ap.add_argument("--no-run", action="store_true", help="write the policy and the spec only")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    data = cartpole_policy()
    model = args.out / "cartpole_policy.onnx"
    model.write_bytes(data)
    params = {"env": "CartPole-v1", "artifact": hashlib.sha256(data).hexdigest(), "episodes": args.episodes}
    spec = {"kind": "rollout", "name": "cartpole-rollout", "boards": 1, "time_limit_s": 300, "params": params}
    (args.out / "rollout.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    print(f"wrote {model} and {args.out / 'rollout.yaml'}")
    if args.no_run:
        return 0
    res = rollout_local(RolloutParams(**params), artifact_path=model, output_dir=args.out / "outputs")
    r, out = res.result, args.out / "outputs"
    summary = {"outcome": res.outcome.value, "board": r.get("board"), "comparison": r.get("comparison")}
    print(json.dumps(summary, indent=1))
    print(f"trajectories: {out / 'trajectories.npz'}; episodes: {out / 'episodes.jsonl'}")
    return 0 if res.outcome.value == "success" else 1


if __name__ == "__main__":
    raise SystemExit(main())
