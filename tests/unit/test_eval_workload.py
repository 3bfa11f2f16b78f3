"""The ``eval`` kind and :mod:`fleetyard.evaluation`: sharding, metrics, hashes, aggregation, McNemar."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import models
import numpy as np
import pytest
from pydantic import ValidationError

from fleetyard.domain.job import Outcome
from fleetyard.evaluation import (
    RankTally,
    aggregate,
    bootstrap_mean_ci,
    compare_records,
    input_digest,
    mcnemar_exact,
    score_sample,
    shard_indices,
)
from fleetyard.workloads.base import required_blobs, workload_class
from fleetyard.workloads.eval import SAMPLES_FILE, EvalParams, EvalWorkload, eval_local, execute
from fleetyard.workloads.tensors import save_arrays

N = 23  # samples of the data set


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def mlp_path(tmp_path: Path) -> Path:
    return models.save(models.mlp(batch="batch"), tmp_path / "mlp.onnx")


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (N, 4)).astype(np.float32)
    y = models.mlp_reference(x).astype(np.float32)
    labels = rng.integers(0, 3, N)
    targets = y + rng.normal(0, 0.1, y.shape).astype(np.float32)
    return save_arrays(tmp_path / "data.npz", {"x": x, "labels": labels, "targets": targets}), x, labels, targets


def _records(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / SAMPLES_FILE).read_text().splitlines()]


def test_shards_cover_every_sample_exactly_once() -> None:
    for n, k in ((0, 3), (1, 4), (23, 1), (23, 5), (64, 64), (100, 7)):
        seen = [i for r in range(k) for i in shard_indices(n, r, k)]
        assert sorted(seen) == list(range(n))
        assert all(i % k == r for r in range(k) for i in shard_indices(n, r, k))
    with pytest.raises(ValueError):
        shard_indices(5, 3, 3)


def test_metrics_and_hashes_match_numpy_by_hand() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 10))
    labels = rng.integers(0, 10, 50)
    targets = rng.normal(size=(50, 10))
    tally = RankTally()
    for i in range(50):
        inputs = {"x": np.full((1, 2), i, np.float32), "k": np.arange(3)}
        s = score_sample(i, inputs, logits[i : i + 1], label=int(labels[i]), target=targets[i])
        tally.add(s)
        h = hashlib.sha256(inputs["x"].tobytes() + inputs["k"].tobytes()).hexdigest()
        assert s.input_sha256 == h == input_digest(inputs)
        assert s.output_sha256 == hashlib.sha256(logits[i : i + 1].tobytes()).hexdigest()
    m = tally.metrics()
    assert m["top1"] == pytest.approx(np.mean(logits.argmax(1) == labels))
    top5 = np.argsort(-logits, axis=1)[:, :5]
    assert m["top5"] == pytest.approx(np.mean([labels[i] in top5[i] for i in range(50)]))
    assert m["mse"] == pytest.approx(np.mean((logits - targets) ** 2))
    # Fewer than five classes: top-5 is every class.
    s = score_sample(0, {"x": np.zeros(1)}, np.array([[0.1, 0.9, 0.0]]), label=2)
    assert s.prediction == 1 and s.correct is False and s.top5 is True


def test_mcnemar_exact_known_values_and_compare() -> None:
    # b=1, c=6: 2 * (C(7,0) + C(7,1)) / 2**7 = 0.125 (statsmodels' mcnemar(exact=True) agrees).
    assert mcnemar_exact(1, 6) == pytest.approx(0.125)
    assert mcnemar_exact(0, 10) == pytest.approx(2 / 1024)
    assert mcnemar_exact(5, 5) == 1.0 and mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(3, 12) == pytest.approx(0.03515625)  # 2 * 576 / 32768

    def rec(i: int, correct: bool, err: float) -> dict[str, Any]:
        return {"index": i, "input_sha256": f"h{i}", "output_sha256": f"o{i}", "label": 0, "correct": correct,
                "sq_err": err * 2, "elems": 2, "error": err}  # fmt: skip

    # 100 samples: both right on 80, A only on 3, B only on 12 -> p = 0.0352, significant.
    a = [rec(i, i < 83, 1.0) for i in range(100)]
    b = [rec(i, i < 80 or 83 <= i < 95, 0.5 + 0.01 * (i % 5)) for i in range(100)]
    c = compare_records(a, b)
    t = c["top1"]
    assert (t["a_only"], t["b_only"]) == (3, 12) and t["p_value"] == pytest.approx(0.03515625) and t["significant"]
    assert t["delta"] == pytest.approx(0.09) and c["paired"] == 100
    m = c["mse"]
    assert m["delta"] == pytest.approx(np.mean([0.5 + 0.01 * (i % 5) for i in range(100)]) - 1.0)
    assert m["significant"] and m["ci95"][1] < 0
    same = compare_records(a, a)
    assert same["top1"]["p_value"] == 1.0 and not same["top1"]["significant"] and not same["mse"]["significant"]
    with pytest.raises(ValueError, match="same data set"):
        compare_records(a, [{**r, "input_sha256": "x"} for r in a])
    lo, hi = bootstrap_mean_ci(np.random.default_rng(0).normal(1.0, 0.1, 200))
    assert lo < 1.0 < hi and hi - lo < 0.05


def test_npz_eval_sharded_equals_single_rank_and_matches_numpy(tmp_path: Path, mlp_path: Path, dataset: Any) -> None:
    data, x, labels, targets = dataset
    params = EvalParams(artifact=_sha(mlp_path), data=_sha(data))
    one = eval_local(params, artifact_path=mlp_path, data_path=data, output_dir=tmp_path / "one")
    assert one.outcome is Outcome.SUCCESS, one.message
    y = models.mlp_reference(x)
    assert one.result["top1"] == pytest.approx(np.mean(y.argmax(1) == labels))
    assert one.result["mse"] == pytest.approx(np.mean((y - targets) ** 2), rel=1e-5)
    recs = _records(tmp_path / "one")
    assert [r["index"] for r in recs] == list(range(N))
    assert recs[5]["input_sha256"] == hashlib.sha256(x[5:6].tobytes()).hexdigest()
    assert recs[5]["label"] == labels[5] and recs[5]["prediction"] == y[5].argmax()

    k = 3
    ranks = [
        eval_local(params, artifact_path=mlp_path, data_path=data, output_dir=tmp_path / f"r{r}", rank=r, world_size=k)
        for r in range(k)
    ]
    assert [r.result["tally"]["samples"] for r in ranks] == [8, 8, 7]
    idx = sorted(rec["index"] for r in range(k) for rec in _records(tmp_path / f"r{r}"))
    assert idx == list(range(N))
    agg = aggregate([r.result for r in reversed(ranks)])
    single = aggregate([one.result])
    for key in ("samples", "top1", "top5", "mse", "artifact", "dataset"):
        assert agg[key] == pytest.approx(single[key]) if isinstance(agg[key], float) else agg[key] == single[key]
    assert agg["dataset"] == {"kind": "npz", "sha256": _sha(data)} and agg["world_size"] == 3
    with pytest.raises(ValueError, match="cover"):
        aggregate([ranks[0].result, ranks[2].result])


def test_generated_data_user_metrics_and_sim_corruption(tmp_path: Path, mlp_path: Path) -> None:
    metrics = tmp_path / "metrics_blob"  # a blob has no suffix
    metrics.write_text(
        "import numpy as np\n"
        "def mean_out(outputs, labels):\n    return float(np.mean(outputs))\n"
        "def n_rows(outputs, labels):\n    return float(len(labels))\n"
    )
    params = EvalParams(
        artifact=_sha(mlp_path),
        generated={"n": 12, "seed": 4, "classes": 3},
        metrics_module=_sha(metrics),
        user_metrics=["mean_out", "n_rows"],
    )
    res = eval_local(params, artifact_path=mlp_path, data_path=None, metrics_path=metrics, output_dir=tmp_path / "g")
    assert res.outcome is Outcome.SUCCESS, res.message
    r = res.result
    assert r["top1"] == 1.0 and r["mse"] == pytest.approx(0.0, abs=1e-10)  # the board agrees with the reference
    assert r["user"]["n_rows"] == {"value": 12.0, "samples": 12}
    assert r["dataset"]["kind"] == "generated" and len(r["dataset"]["sha256"]) == 64

    # A sim board with silent corruption: outputs drift, MSE > 0; and the simulated latency applies.
    env = {"FLEETYARD_DEVICE": "sim:0", "FLEETYARD_SIM_GENERATION": "sim-g2", "FLEETYARD_SIM_LATENCY_FACTOR": "0.5",
           "FLEETYARD_SIM_FAULTS": "silent_corruption"}  # fmt: skip
    out = tmp_path / "bad"
    out.mkdir()
    bad = execute(params.model_copy(update={"sim_latency_ms": 2.0}), artifact_path=mlp_path, data_path=None,
                  metrics_path=metrics, output_dir=out, env=env, artifact_sha256=params.artifact)  # fmt: skip
    assert bad.outcome is Outcome.SUCCESS, bad.message
    assert bad.result["mse"] > 0 and bad.result["sim_latency_s_per_sample"] == pytest.approx(0.001)
    cmp = compare_records(_records(tmp_path / "g"), _records(out))
    assert cmp["outputs_identical"] < 12 and cmp["mse"]["delta"] > 0


def test_bad_specs_and_data_are_refused(tmp_path: Path, mlp_path: Path) -> None:
    sha = _sha(mlp_path)
    with pytest.raises(ValidationError, match="one data set"):
        EvalParams(artifact=sha)
    with pytest.raises(ValidationError, match="metrics_module"):
        EvalParams(artifact=sha, generated={"n": 1}, user_metrics=["f"])
    nolabels = save_arrays(tmp_path / "n.npz", {"x": np.zeros((2, 4), np.float32)})
    res = eval_local(EvalParams(artifact=sha, data=_sha(nolabels)), artifact_path=mlp_path, data_path=nolabels,
                     output_dir=tmp_path / "o")  # fmt: skip
    assert res.outcome is Outcome.USER_ERROR and "neither labels nor targets" in (res.message or "")

    def broken(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"y": np.zeros((2, 3), np.float32)}  # two rows for one sample

    out = tmp_path / "b"
    out.mkdir()
    res = execute(EvalParams(artifact=sha, generated={"n": 2}), artifact_path=mlp_path, data_path=None,
                  output_dir=out, env={}, candidate=broken)  # fmt: skip
    assert res.outcome is Outcome.USER_ERROR and "one sample a query" in (res.message or "")

    assert workload_class("eval") is EvalWorkload
    d, m = "d" * 64, "e" * 64
    spec = {"artifact": sha, "data": d, "metrics_module": m, "user_metrics": ["f"]}
    assert required_blobs("eval", spec) == [sha, d, m]


def test_cli_show_and_compare_read_the_ranks_and_refuse_other_data_sets(
    tmp_path: Path, mlp_path: Path, dataset: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil
    from types import SimpleNamespace

    from typer.testing import CliRunner

    import fleetyard.cli.eval as cli_eval

    data = dataset[0]
    jobs: dict[int, list[SimpleNamespace]] = {}
    blobs: dict[str, Path] = {}
    for job_id, (path, ds) in {1: (mlp_path, _sha(data)), 2: (mlp_path, _sha(data)), 3: (mlp_path, "f" * 64)}.items():
        ranks = []
        for r in range(2):
            out = tmp_path / f"j{job_id}r{r}"
            res = eval_local(EvalParams(artifact=_sha(path), data=_sha(data)), artifact_path=path, data_path=data,
                             output_dir=out, rank=r, world_size=2)  # fmt: skip
            result = {**res.result, "dataset": {"kind": "npz", "sha256": ds}}
            sha = _sha(out / SAMPLES_FILE)
            blobs[sha] = out / SAMPLES_FILE
            ranks.append(SimpleNamespace(rank=r, outcome="success", result=result, outputs={SAMPLES_FILE: sha}))
        jobs[job_id] = ranks

    class Fake:
        def __enter__(self) -> Fake:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def results(self, job_id: int) -> SimpleNamespace:
            return SimpleNamespace(state="succeeded", ranks=jobs[job_id])

        def download_blob(self, sha: str, dest: Path) -> Path:
            return Path(shutil.copy(blobs[sha], dest))

    monkeypatch.setattr(cli_eval, "client", lambda ctx: Fake())
    runner = CliRunner()
    res = runner.invoke(cli_eval.app, ["show", "1"])
    assert res.exit_code == 0 and "top1" in res.stdout and f"npz {_sha(data)}" in res.stdout, res.output
    res = runner.invoke(cli_eval.app, ["compare", "1", "2"])
    assert res.exit_code == 0 and "p = 1: not significant at 0.05" in res.stdout, res.output
    res = runner.invoke(cli_eval.app, ["compare", "1", "3"])
    assert res.exit_code == 3 and "different data sets" in res.output


def _parquet(path: Path, columns: dict[str, Any], row_group_size: int = 5) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    def col(a: Any) -> Any:
        if isinstance(a, np.ndarray) and a.ndim == 2:  # a fixed-size list per row
            return pa.FixedSizeListArray.from_arrays(pa.array(a.reshape(-1)), a.shape[1])
        return pa.array(a)

    pq.write_table(pa.table({k: col(v) for k, v in columns.items()}), path, row_group_size=row_group_size)
    return path


def test_parquet_eval_reads_only_its_row_groups_and_equals_the_npz_eval(
    tmp_path: Path, mlp_path: Path, dataset: Any
) -> None:
    from fleetyard.evaluation.parquet import block, read_shard

    npz, x, labels, targets = dataset
    data = _parquet(tmp_path / "data.parquet", {"features": x, "labels": labels, "targets": targets})
    assert data.read_bytes()[:4] == b"PAR1"
    # Columns to arrays: fixed-size lists are 2-D; one input and one other column need no name.
    whole = read_shard(data, inputs=["x"])
    assert whole.columns["x"].shape == (N, 4) and whole.columns["x"].dtype == np.float32
    assert np.array_equal(whole.columns["x"], x) and np.array_equal(whole.columns["labels"], labels)
    assert whole.columns["targets"].shape == targets.shape and whole.row_groups_total == 5
    # Rank 1 of 3 takes rows 7..14 (block sharding): it reads row groups 1 and 2 of 5, nothing else.
    shard = read_shard(data, inputs=["x"], rank=1, world_size=3)
    assert shard.rows == block(N, 1, 3) == range(7, 15) and shard.row_groups_read == 2
    assert np.array_equal(shard.columns["x"], x[7:15])
    assert sorted(i for r in range(4) for i in block(N, r, 4)) == list(range(N))

    params = EvalParams(artifact=_sha(mlp_path), data=_sha(data))
    one = eval_local(params, artifact_path=mlp_path, data_path=data, output_dir=tmp_path / "one")
    assert one.outcome is Outcome.SUCCESS, one.message
    assert one.result["dataset"]["kind"] == "parquet"
    ref = eval_local(
        EvalParams(artifact=_sha(mlp_path), data=_sha(npz)), artifact_path=mlp_path, data_path=npz,
        output_dir=tmp_path / "npz",
    )  # fmt: skip
    assert one.result["tally"] == ref.result["tally"]
    digests = [r["input_sha256"] for r in _records(tmp_path / "npz")]
    assert [r["input_sha256"] for r in _records(tmp_path / "one")] == digests
    ranks = [
        eval_local(params, artifact_path=mlp_path, data_path=data, output_dir=tmp_path / f"r{r}", rank=r, world_size=3)
        for r in range(3)
    ]
    assert [r.result["tally"]["samples"] for r in ranks] == [7, 8, 8]
    combined = aggregate([r.result for r in ranks])
    assert combined["samples"] == N and combined["top1"] == one.result["top1"]

    # A folder of Parquet files reads as one table, in name order.
    folder = tmp_path / "folder"
    folder.mkdir()
    _parquet(folder / "part-0.parquet", {"x": x[:10], "labels": labels[:10]}, row_group_size=4)
    _parquet(folder / "part-1.parquet", {"x": x[10:], "labels": labels[10:]}, row_group_size=4)
    last = read_shard(folder, inputs=["x"], rank=2, world_size=3)
    assert last.rows == range(15, 23) and np.array_equal(last.columns["x"], x[15:])
    # part-0: rows 0-3, 4-7, 8-9; part-1: 10-13, 14-17, 18-21, 22. Rows 15-22 overlap the last three.
    assert last.row_groups_read == 3 and last.row_groups_total == 7
    from_folder = eval_local(params, artifact_path=mlp_path, data_path=folder, output_dir=tmp_path / "folder-out")
    assert from_folder.outcome is Outcome.SUCCESS and from_folder.result["top1"] == one.result["top1"]


def test_a_parquet_data_set_that_does_not_fit_says_which_columns_it_needs(tmp_path: Path, mlp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    params = EvalParams(artifact=_sha(mlp_path), data="0" * 64)
    x = np.zeros((3, 4), np.float32)

    def run(path: Path) -> str:
        r = eval_local(params, artifact_path=mlp_path, data_path=path, output_dir=tmp_path / "out")
        assert r.outcome is Outcome.USER_ERROR
        return r.message or ""

    no_labels = _parquet(tmp_path / "a.parquet", {"x": x, "other": np.arange(3)})
    message = run(no_labels)
    assert "needs columns 'x' (input) and 'labels'" in message and "it has 'x', 'other'" in message
    ragged = tmp_path / "b.parquet"
    pq.write_table(pa.table({"x": pa.array([[1.0], [1.0, 2.0], [3.0]], pa.list_(pa.float32())),
                             "labels": [0, 1, 2]}), ragged)  # fmt: skip
    assert "column 'x' holds lists of different lengths (1 to 2)" in run(ragged)
    nulls = tmp_path / "c.parquet"
    pq.write_table(pa.table({"x": pa.array([[1.0] * 4, None, [3.0] * 4], pa.list_(pa.float32(), 4)),
                             "labels": [0, 1, 2]}), nulls)  # fmt: skip
    assert "column 'x' has 1 null(s)" in run(nulls)
    (tmp_path / "empty").mkdir()
    from fleetyard.evaluation.parquet import read_shard

    with pytest.raises(ValueError, match=r"holds no \.parquet files"):
        read_shard(tmp_path / "empty", inputs=["x"])
