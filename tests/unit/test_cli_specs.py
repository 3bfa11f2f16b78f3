"""Job specs the CLI builds or reads, checked before any server is asked."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from fleetyard.cli._demo import demo_specs, find_examples
from fleetyard.cli._specs import build_run_spec, load_specs, read_specs
from fleetyard.cli.main import app
from fleetyard.client import JobSpec, Placement
from fleetyard.errors import BadRequest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_run_builds_a_command_job_with_the_argv() -> None:
    spec = build_run_spec(["python", "-c", "print(1)"])
    assert spec.kind == "command"
    assert spec.params == {"command": ["python", "-c", "print(1)"]}
    assert spec.boards == 1
    assert spec.placement is Placement.ANY
    assert spec.name == "python -c 'print(1)'"
    assert spec.time_limit_s == JobSpec().time_limit_s


def test_run_passes_every_constraint() -> None:
    spec = build_run_spec(
        ["hostname"],
        boards=4,
        generations=["sim-g2", "sim-g1", "sim-g2"],
        labels={"rack": "r1"},
        same_host=True,
        time_limit_s=30,
        name="probe",
        priority=5,
        team="vision",
    )
    assert (spec.boards, spec.generations, spec.labels) == (4, ["sim-g1", "sim-g2"], {"rack": "r1"})
    assert (spec.placement, spec.time_limit_s, spec.name, spec.priority, spec.team) == (
        Placement.SAME_HOST,
        30,
        "probe",
        5,
        "vision",
    )


def test_run_without_a_command_says_how() -> None:
    with pytest.raises(BadRequest, match="after `--`"):
        build_run_spec([])


def test_run_refuses_impossible_values_naming_the_field() -> None:
    with pytest.raises(BadRequest, match="boards"):
        build_run_spec(["true"], boards=0)
    with pytest.raises(BadRequest, match="time_limit_s"):
        build_run_spec(["true"], time_limit_s=-1)


def test_a_long_command_gets_a_short_default_name() -> None:
    spec = build_run_spec(["echo", "x" * 500])
    assert spec.name is not None and len(spec.name) <= 80


def test_one_spec_or_a_list() -> None:
    specs, is_list = load_specs("boards: 2\nparams: {command: [true]}\n", "a.yaml")
    assert (len(specs), is_list, specs[0].boards) == (1, False, 2)
    specs, is_list = load_specs('[{"boards": 1}, {"boards": 3}]', "b.json")
    assert ([s.boards for s in specs], is_list) == ([1, 3], True)


@pytest.mark.parametrize(
    ("text", "source", "match"),
    [
        ("boards: [1, 2", "bad.yaml", "bad.yaml: not valid YAML"),
        ("{'boards': 1}", "bad.json", "bad.json: not valid JSON"),
        ("", "empty.yaml", "empty.yaml: empty"),
        ("[]", "none.yaml", "empty list"),
        ("42", "n.yaml", "expected a job spec"),
        ("boards: 0", "zero.yaml", "zero.yaml: boards: "),
        ("bords: 2", "typo.yaml", "typo.yaml: bords: Extra inputs"),
        ("- boards: 1\n- placement: nowhere", "list.yaml", "list.yaml, job #2: placement"),
        ("- 7", "list.yaml", "job #1: expected a mapping"),
    ],
)
def test_bad_documents_name_the_file_item_and_field(text: str, source: str, match: str) -> None:
    with pytest.raises(BadRequest, match=match):
        load_specs(text, source)


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BadRequest, match="no such file"):
        read_specs(str(tmp_path / "nope.yaml"))


def test_submitting_a_bad_spec_file_fails_before_any_server_is_asked(tmp_path: Path) -> None:
    bad = tmp_path / "job.yaml"
    bad.write_text("boards: many\nparams: {command: [true]}\n")
    # A server that does not exist: the spec must be refused before it would matter.
    result = CliRunner().invoke(app, ["--server", "http://127.0.0.1:9", "jobs", "submit", str(bad)])
    assert result.exit_code == 1
    assert "job.yaml: boards:" in result.stderr
    assert "Traceback" not in result.output


def test_every_example_is_a_valid_spec() -> None:
    files = sorted(EXAMPLES.glob("*.yaml"))
    assert {"hello.yaml", "gang.yaml"} <= {f.name for f in files}
    for path in files:
        specs, _ = read_specs(str(path))
        assert all(s.kind == "command" and s.params.get("command") for s in specs), path


def test_the_gang_example_is_four_boards_on_one_host() -> None:
    [gang], _ = read_specs(str(EXAMPLES / "gang.yaml"))
    assert (gang.boards, gang.placement) == (4, Placement.SAME_HOST)


def test_examples_cover_every_simulated_generation() -> None:
    gens = {g for _, spec in demo_specs(EXAMPLES) for g in spec.generations}
    assert gens == {"sim-g1", "sim-g2", "sim-g3"}


def test_the_demo_finds_the_examples_and_starts_with_hello(tmp_path: Path) -> None:
    assert find_examples(tmp_path) == EXAMPLES
    order = [source for source, _ in demo_specs(EXAMPLES)]
    assert order[:2] == ["hello.yaml", "gang.yaml"]


def test_the_demo_has_a_fallback_without_examples() -> None:
    [(source, spec)] = demo_specs(None)
    assert source == "built-in" and spec.kind == "command"


def test_run_passes_topology_firmware_class_and_board_choices() -> None:
    spec = build_run_spec(
        ["x"],
        boards=2,
        extra={
            "placement": "same-rack",
            "placement_required": False,
            "packing": "spread",
            "firmware": ">= 2.1",
            "priority_class": "ci-gate",
            "board_ids": ["b", "a", "c"],
            "exclude_boards": ["c"],
        },
    )
    assert (spec.placement, spec.placement_required, spec.packing) == (Placement.SAME_RACK, False, "spread")
    assert (spec.firmware, spec.priority_class, spec.board_ids, spec.exclude_boards) == (
        ">=2.1",
        "ci-gate",
        ["a", "b", "c"],
        ["c"],
    )
    with pytest.raises(BadRequest, match="bad firmware selector"):
        build_run_spec(["x"], extra={"firmware": "~2"})
