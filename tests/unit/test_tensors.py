"""Workload inputs: generated from a seed (ranges, dims), loaded from .npz/.npy/JSON, and their errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fleetyard.runtimes import InputMismatch, Signature, TensorSpec
from fleetyard.workloads.tensors import (
    describe_arrays,
    generate_inputs,
    input_set_count,
    iter_input_sets,
    load_arrays,
    load_inputs,
    peek_input_sets,
    save_arrays,
)

SIG = Signature(
    inputs=(
        TensorSpec("x", ("batch", 4), "float32"),
        TensorSpec("k", ("batch", None), "int64"),
        TensorSpec("m", (2,), "bool"),
    ),
    outputs=(TensorSpec("y", ("batch", 3), "float32"),),
)
ONE = Signature(inputs=(TensorSpec("x", (2, 3), "float32"),), outputs=())


def test_generation_is_deterministic_per_seed_with_default_ranges() -> None:
    a = generate_inputs(SIG, seed=7)
    b = generate_inputs(SIG, seed=7)
    c = generate_inputs(SIG, seed=8)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert not np.array_equal(a["x"], c["x"])
    assert a["x"].dtype == np.float32 and a["x"].shape == (1, 4)  # unbound symbol -> 1
    assert a["k"].dtype == np.int64 and a["k"].shape == (1, 1)  # unknown dim -> 1
    assert a["m"].dtype == np.bool_ and a["m"].shape == (2,)
    big = generate_inputs(SIG, seed=1, dims={"batch": 500})
    assert big["x"].shape == (500, 4) and big["k"].shape == (500, 1)
    assert big["x"].min() >= -1 and big["x"].max() < 1
    assert big["k"].min() >= 0 and big["k"].max() < 10


def test_ranges_apply_per_input_and_leave_the_others_alone() -> None:
    base = generate_inputs(SIG, seed=3, dims={"batch": 100})
    ranged = generate_inputs(SIG, seed=3, dims={"batch": 100}, ranges={"x": (5, 6), "k": (-3, -1)})
    assert ranged["x"].min() >= 5 and ranged["x"].max() < 6
    assert set(np.unique(ranged["k"])) <= {-3, -2}
    np.testing.assert_array_equal(base["m"], ranged["m"])


def test_generation_errors_name_the_problem() -> None:
    with pytest.raises(InputMismatch, match=r"unknown input.*'nope'.*x, k, m"):
        generate_inputs(SIG, ranges={"nope": (0, 1)})
    with pytest.raises(InputMismatch, match=r"unknown symbol.*'n'.*batch"):
        generate_inputs(SIG, dims={"n": 2})
    with pytest.raises(InputMismatch, match=r"positive"):
        generate_inputs(SIG, dims={"batch": 0})
    with pytest.raises(InputMismatch, match=r"'x'.*lo < hi"):
        generate_inputs(SIG, ranges={"x": (1, 1)})
    strings = Signature(inputs=(TensorSpec("s", (1,), "str"),), outputs=())
    with pytest.raises(InputMismatch, match=r"'s'.*dtype str"):
        generate_inputs(strings)
    unranked = Signature(inputs=(TensorSpec("u", None, "float32"),), outputs=())
    with pytest.raises(InputMismatch, match=r"'u'.*rank"):
        generate_inputs(unranked)
    small = Signature(inputs=(TensorSpec("b", (2,), "uint8"),), outputs=())
    with pytest.raises(InputMismatch, match=r"does not fit uint8"):
        generate_inputs(small, ranges={"b": (0, 1000)})


def test_loading_npz_npy_and_json(tmp_path: Path) -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    # An .npz keyed by name; a single-array .npz and a .npy for a one-input model need no name.
    save_arrays(tmp_path / "named.npz", {"x": x})
    np.savez(tmp_path / "anon.npz", x)
    np.save(tmp_path / "one.npy", x)
    (tmp_path / "in.json").write_text(json.dumps({"x": x.tolist()}))
    for name in ("named.npz", "anon.npz", "one.npy", "in.json"):
        got = load_inputs(tmp_path / name, ONE)
        assert list(got) == ["x"]
        np.testing.assert_array_equal(got["x"], x)
        assert got["x"].dtype == np.float32, name  # JSON is cast to the input's dtype
    # Several inputs from a cache blob with no suffix (the format is read from the content).
    inputs = generate_inputs(SIG, seed=1)
    blob = save_arrays(tmp_path / ("ab" * 32), inputs)
    got = load_inputs(blob, SIG)
    assert describe_arrays(got) == describe_arrays(inputs)
    assert set(load_arrays(blob)) == {"x", "k", "m"}


def test_loading_errors_list_expected_against_given(tmp_path: Path) -> None:
    save_arrays(tmp_path / "wrong.npz", {"x": np.zeros((2, 3), np.float64)})
    with pytest.raises(InputMismatch, match=r"input 'x': dtype: expected float32, got float64") as info:
        load_inputs(tmp_path / "wrong.npz", ONE)
    assert info.value.detail["expected"][0]["name"] == "x"
    save_arrays(tmp_path / "shape.npz", {"x": np.zeros((4,), np.float32)})
    with pytest.raises(InputMismatch, match=r"input 'x': rank"):
        load_inputs(tmp_path / "shape.npz", ONE)
    save_arrays(tmp_path / "names.npz", {"x": np.zeros((1, 4), np.float32), "z": np.zeros(1)})
    with pytest.raises(InputMismatch, match=r"missing input 'k'.*unknown input 'z'"):
        load_inputs(tmp_path / "names.npz", SIG)
    np.save(tmp_path / "one.npy", np.zeros((1, 4), np.float32))
    with pytest.raises(InputMismatch, match=r"one unnamed array.*3 inputs"):
        load_inputs(tmp_path / "one.npy", SIG)
    (tmp_path / "bad.json").write_text("[1, 2")
    with pytest.raises(InputMismatch, match=r"cannot read inputs file bad.json"):
        load_inputs(tmp_path / "bad.json", ONE)
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(InputMismatch, match=r"JSON inputs file is an object"):
        load_inputs(tmp_path / "list.json", ONE)


def test_saved_outputs_round_trip_with_any_names(tmp_path: Path) -> None:
    arrays = {"file": np.ones(3, np.float32), "allow_pickle": np.arange(2), "y": np.zeros((0, 2), np.float16)}
    path = save_arrays(tmp_path / "out.npz", arrays)
    with np.load(path) as npz:
        assert sorted(npz.files) == sorted(arrays)
        for k, v in arrays.items():
            np.testing.assert_array_equal(npz[k], v)
            assert npz[k].dtype == v.dtype


def test_a_file_of_several_input_sets_streams_set_by_set(tmp_path: Path) -> None:
    sets = [{"x": np.full((2, 3), i, dtype=np.float32)} for i in range(3)]
    save_arrays(tmp_path / "sets.npz", {f"{i}/x": s["x"] for i, s in enumerate(sets)})
    (tmp_path / "sets.json").write_text(json.dumps([{"x": s["x"].tolist()} for s in sets]))
    for name in ("sets.npz", "sets.json"):
        path = tmp_path / name
        assert input_set_count(path) == 3
        got = list(iter_input_sets(path, ONE))
        assert [g["x"][0, 0] for g in got] == [0, 1, 2] and all(g["x"].dtype == np.float32 for g in got)
        with pytest.raises(InputMismatch, match=r"holds 3 sets.*validate streams several"):
            load_inputs(path, ONE)
    # A plain file is one set, through the same calls.
    save_arrays(tmp_path / "one.npz", {"x": sets[0]["x"]})
    assert input_set_count(tmp_path / "one.npz") == 1
    assert len(list(iter_input_sets(tmp_path / "one.npz", ONE))) == 1


def test_several_sets_errors_name_the_set_and_the_fix(tmp_path: Path) -> None:
    x = np.zeros((2, 3), np.float32)
    save_arrays(tmp_path / "gap.npz", {"0/x": x, "2/x": x})
    with pytest.raises(InputMismatch, match=r"numbers its input sets \[0, 2\].*no gaps"):
        input_set_count(tmp_path / "gap.npz")
    save_arrays(tmp_path / "mixed.npz", {"0/x": x, "x": x})
    with pytest.raises(InputMismatch, match=r"mixes keys.*'x'"):
        list(iter_input_sets(tmp_path / "mixed.npz", ONE))
    save_arrays(tmp_path / "bad.npz", {"0/x": x, "1/x": np.zeros((2, 4), np.float32)})
    it = iter_input_sets(tmp_path / "bad.npz", ONE)
    next(it)
    with pytest.raises(InputMismatch, match=r"^input set 1: input 'x': shape: expected \[2, 3\], got \(2, 4\)"):
        next(it)
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(InputMismatch, match=r"list of such objects"):
        input_set_count(tmp_path / "list.json")


def test_peek_reads_shapes_and_dtypes_without_the_data(tmp_path: Path) -> None:
    big = np.ones((256, 1024), np.float32)  # 1 MiB
    save_arrays(
        tmp_path / "sets.npz", {"0/x": big, "0/k": np.zeros(3, np.int64), "1/x": big[:2], "1/k": np.zeros(3, np.int64)}
    )
    np.save(tmp_path / "one.npy", big)
    peeked = peek_input_sets(tmp_path / "sets.npz")
    assert [sorted(s) for s in peeked] == [["k", "x"], ["k", "x"]]
    assert peeked[0]["x"].shape == (256, 1024) and peeked[0]["x"].dtype == np.float32
    assert peeked[0]["x"].strides == (0, 0)  # a view of one element: no data was read
    assert peeked[1]["x"].shape == (2, 1024) and peeked[1]["k"].dtype == np.int64
    (npy,) = peek_input_sets(tmp_path / "one.npy")
    assert npy[""].shape == (256, 1024) and npy[""].strides == (0, 0)
