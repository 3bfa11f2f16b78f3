"""One fleet per data dir (:mod:`fleetyard.cli._data_dir`): ``up`` holds it alone, servers and
controllers share it, and a refusal names who holds it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fleetyard.cli._data_dir import ENV_FLEET_PID, HOLDERS, holding
from fleetyard.errors import FleetyardError


def test_servers_and_controllers_share_a_data_dir_and_up_holds_it_alone(tmp_path: Path) -> None:
    with holding(tmp_path, what="fleetyard server", port=8600), holding(tmp_path, what="fleetyard controller"):
        with pytest.raises(FleetyardError) as refused, holding(tmp_path, what="fleetyard up", port=8601, alone=True):
            pass
        msg = refused.value.message
        assert f"fleetyard server (pid {os.getpid()}, port 8600)" in msg
        assert f"fleetyard controller (pid {os.getpid()})" in msg
        assert "another --data-dir" in msg
    with holding(tmp_path, what="fleetyard up", port=8600, alone=True):
        for what, alone in (("fleetyard up", True), ("fleetyard server", False)):
            busy = r"in use by fleetyard up \(pid \d+, port 8600\)"
            with pytest.raises(FleetyardError, match=busy), holding(tmp_path, what=what, alone=alone):
                pass
    assert list((tmp_path / HOLDERS).iterdir()) == []  # each holder took its note with it


def test_a_note_left_by_a_killed_holder_is_not_named(tmp_path: Path) -> None:
    (tmp_path / HOLDERS).mkdir()
    (tmp_path / HOLDERS / "999999999.json").write_text(json.dumps({"pid": 999999999, "what": "fleetyard up"}))
    # The kernel released the killed holder's lock; its note is left behind.
    with (
        holding(tmp_path, what="fleetyard up", port=1, alone=True),
        pytest.raises(FleetyardError) as refused,
        holding(tmp_path, what="fleetyard server"),
    ):
        pass
    assert "999999999" not in refused.value.message and "fleetyard up (pid" in refused.value.message


def test_the_programs_up_starts_run_inside_its_hold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with holding(tmp_path, what="fleetyard up", alone=True):
        monkeypatch.setenv(ENV_FLEET_PID, str(os.getppid()))  # as if this process were up's child
        with holding(tmp_path, what="fleetyard server"):
            pass
        monkeypatch.setenv(ENV_FLEET_PID, "1")  # another fleet's child: no
        with pytest.raises(FleetyardError), holding(tmp_path, what="fleetyard server"):
            pass
