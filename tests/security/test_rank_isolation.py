"""A job hunts for the fleet's credentials and for other ranks' files, and tries to get what it
finds out through its outputs; under the uid sandbox (the agent runs as root here) every step
fails, and the job itself still runs and succeeds."""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetyard.cli._fleet import agent_token_file
from fleetyard.workloads.sandbox import bwrap_runs, rank_uid_base
from tests.integration.harness import Stack, rank_dir, running_stack

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the uid sandbox needs root (CI runs as root)")

needs_bwrap = pytest.mark.skipif(not bwrap_runs(), reason="bubblewrap is not installed (make test installs it)")

# Each probe prints "PROBE <name> <ok|denied>": ok means the attack worked.
HUNT = r"""
probe() { name=$1; shift; if "$@" >/dev/null 2>&1; then echo "PROBE $name ok"; else echo "PROBE $name denied"; fi; }
echo "UID $(id -u) HOME $HOME"
env | grep -c . > /dev/null
env | sed 's/^/ENV /'
probe agent_environ cat /proc/$AGENT_PID/environ
probe agent_mem head -c 1 /proc/$AGENT_PID/mem
probe token_file cat "$TOKEN_FILE"
probe state_dir_write touch "$STATE_DIR/planted"
probe blob_cache_write touch "$STATE_DIR/blobs/planted"
probe blob_cache_list ls "$STATE_DIR/blobs"
echo secret > "$HOME/secret"
for d in $OTHERS; do [ "$d" = "$HOME" ] || probe other_rank_dir ls "$d"; done
probe fleet_dirs_in_tmp sh -c 'ls -d /tmp/fleetyard-ranks/*/* | grep -v "$FLEETYARD_BOARD_SERIAL"'
probe root_write touch /usr/planted
ln -s "$TOKEN_FILE" "$FLEETYARD_OUTPUT_DIR/leak"
ln -s "/proc/$AGENT_PID/environ" "$FLEETYARD_OUTPUT_DIR/leak2"
echo fine > "$FLEETYARD_OUTPUT_DIR/mine.txt"
sleep 1
"""


@pytest.mark.parametrize("sandbox", ["uid", pytest.param("bwrap", marks=needs_bwrap)])
def test_a_job_hunting_for_the_fleets_credentials_finds_none(sqlite_stack: Stack, sandbox: str) -> None:
    stack = sqlite_stack
    stack.setup()
    stack.start_server()
    stack.start_controller()
    stack.start_agent("h1", "sim:2:sim-g1", extra=("--sandbox", sandbox))
    agent = stack.procs["agent-h1"]
    assert agent.popen is not None
    state = stack.dir / "agents" / "h1"
    token = stack.tokens["h1"]
    base = rank_uid_base("h1", state)
    ranks = rank_dir("h1", state)
    boards = sorted(b["id"] for b in stack.boards(host="h1"))
    env = {
        "AGENT_PID": str(agent.popen.pid),
        "TOKEN_FILE": str(agent_token_file(stack.dir, "h1")),
        "STATE_DIR": str(state),
        "OTHERS": " ".join(str(ranks / b / "work") for b in boards),
    }
    job = stack.submit(boards=2, params={"command": ["/bin/sh", "-c", HUNT], "env": env})
    done = stack.wait_job(job)
    log = stack.logs_of(job)
    assert done["state"] == "succeeded", log

    # Not the agent's uid, nor one rank's the other's; HOME is the rank's private dir.
    uids = sorted({line.split()[1] for line in log.splitlines() if line.startswith("UID ")})
    assert len(uids) == 2 and "0" not in uids, log
    assert {int(u) for u in uids} <= set(range(base, base + 1000))
    # The environment is the allow-list: no credential, nothing of the agent's own.
    names = {line[4:].split("=", 1)[0] for line in log.splitlines() if line.startswith("ENV ")}
    assert token not in log
    assert not {"FLEETYARD_AGENT_TOKEN", "FLEETYARD_TOKEN", "FLEETYARD_SERVER", "PYTHONUNBUFFERED"} & names
    assert {"PATH", "HOME", "FLEETYARD_RANK", "FLEETYARD_OUTPUT_DIR", "AGENT_PID"} <= names
    # Every probe failed, on both ranks.
    probes = [line.split()[1:] for line in log.splitlines() if line.startswith("PROBE ")]
    assert {name for name, _ in probes} == {
        "agent_environ",
        "agent_mem",
        "token_file",
        "state_dir_write",
        "blob_cache_write",
        "blob_cache_list",
        "other_rank_dir",
        "fleet_dirs_in_tmp",
        "root_write",
    }, log
    assert [p for p in probes if p[1] != "denied"] == [], log
    assert not (state / "planted").exists() and not (state / "blobs" / "planted").exists()
    # Links to the agent's files do not come back as outputs; the rank's own file does.
    for rank in stack.job(job)["attempt_list"][0]["ranks"]:
        assert set(rank["outputs"]) == {"mine.txt"}, rank


@pytest.fixture(scope="module")
def one_board(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A fleet of one host and one board (the default sandbox), shared by the tests that only run
    jobs on it: a stack's start costs seconds of the suite's two cores."""
    d = tmp_path_factory.mktemp("one-board")
    with running_stack(f"sqlite:///{d / 'fleetyard.db'}", d) as stack:
        yield stack.start(hosts=1, driver="sim:1:sim-g1")


def test_what_a_rank_leaves_running_is_killed_when_it_ends(one_board: Stack) -> None:
    """A daemon that leaves the rank's process group (setsid) still runs as the rank's uid: it
    is killed when the rank ends, and cannot wait for the next job on the board."""
    stack = one_board
    marker = "fleetyard-escapee-" + os.urandom(4).hex()
    script = f"setsid sh -c 'exec -a {marker} sleep 300' </dev/null >/dev/null 2>&1 & sleep 0.5; echo started"
    job = stack.submit(params={"command": ["/bin/sh", "-c", script]})
    assert stack.wait_job(job)["state"] == "succeeded", stack.logs_of(job)
    left = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _cmdline(p).startswith(marker)]
    assert left == [], f"still running: {[shlex.join(_cmdline(p).split()) for p in left]}"


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_what_the_fleet_writes_is_readable_by_its_own_user_only(one_board: Stack) -> None:
    stack = one_board
    sha = stack.put_blob(b"a model's bytes")
    job = stack.submit(params={"command": "echo out > $FLEETYARD_OUTPUT_DIR/o.txt"})
    assert stack.wait_job(job)["state"] == "succeeded"
    entries = [stack.dir / "blobs", *(stack.dir / "blobs").rglob("*")]
    assert any(p.name == sha for p in entries), entries
    loose = {str(p): oct(p.stat().st_mode & 0o777) for p in entries if p.stat().st_mode & 0o077}
    assert loose == {}
    state = stack.dir / "agents" / "h1"
    assert state.stat().st_mode & 0o777 == 0o700
    assert (state / "token").stat().st_mode & 0o777 == 0o600


def test_a_rank_over_its_boards_memory_is_a_user_error_and_the_board_stays(sqlite_stack: Stack) -> None:
    stack = sqlite_stack
    stack.setup()
    stack.start_server()
    stack.start_controller()
    stack.start_agent("h1", "sim:1:sim-g1", extra=("--rank-memory-mb", "64"))
    # `tail` keeps its last line in memory: 300 MB without a newline.
    job = stack.submit(params={"command": "head -c 300000000 /dev/zero | tail -n 1 | wc -c"}, max_infra_retries=0)
    done = stack.wait_job(job)
    assert (done["state"], done["outcome"]) == ("failed", "user_error"), done
    [attempt] = done["attempt_list"]
    [rank] = attempt["ranks"]
    assert "over its memory limit of 64 MiB" in (rank["message"] or ""), rank
    [board] = stack.boards(host="h1")
    assert board["state"] == "available"  # the job's mistake, not the board's
    # The next job on the board runs as before.
    ok = stack.submit(params={"command": "head -c 10000000 /dev/zero | wc -c"})
    assert stack.wait_job(ok)["state"] == "succeeded"


def test_another_teams_user_reads_nothing_of_a_job_through_the_real_server(one_board: Stack) -> None:
    """Alice's (team compiler) job logs a secret and records a result; Bob (team robotics), with
    his own token against the real server, gets 403 on its spec, logs and results, and sees the job
    in the list without its parameters; no answer carries the secret."""
    stack = one_board
    secret = "s3cr3t-" + os.urandom(4).hex()
    job = stack.submit(params={"command": f"echo {secret}", "env": {"HF_TOKEN": secret}})
    assert stack.wait_job(job)["state"] == "succeeded"
    assert secret in stack.logs_of(job)  # alice reads her own
    for path in (f"/v1/jobs/{job}", f"/v1/jobs/{job}/logs", f"/v1/jobs/{job}/results"):
        r = stack.http("GET", path, as_="bob")
        assert r.status_code == 403 and secret not in r.text, (path, r.text)
    listed = stack.http("GET", "/v1/jobs", as_="bob")
    assert listed.status_code == 200 and secret not in listed.text
    [mine] = [j for j in listed.json() if j["id"] == job]
    assert mine["spec"]["params"] == {}
    # Alice sees her job, the secret-looking env value masked.
    assert stack.job(job)["spec"]["params"]["env"] == {"HF_TOKEN": "***"}


# An eval's metrics module is the job's own Python, run inside the rank: each metric reports an
# attack as a number (1.0: it worked).
HOSTILE_METRICS = """
import os, pathlib

def _tried(fn):
    try:
        fn()
        return 1.0
    except OSError:
        return 0.0

def uid(outputs, labels):
    return float(os.getuid())

def token_file(outputs, labels):
    return _tried(lambda: pathlib.Path({token!r}).read_bytes())

def agent_environ(outputs, labels):
    return _tried(lambda: pathlib.Path("/proc/{agent_pid}/environ").read_bytes())

def blob_cache_write(outputs, labels):
    return _tried(lambda: pathlib.Path({cache!r}, "planted").write_bytes(b"x"))

def worker_environ(outputs, labels):
    # The worker that started the rank's process (root, the board session's).
    return _tried(lambda: pathlib.Path(f"/proc/{{os.getppid()}}/environ").read_bytes())

def credentials_in_env(outputs, labels):
    return float(any(k.endswith(("_TOKEN", "_SECRET")) or k == "FLEETYARD_SERVER" for k in os.environ))
"""


def test_an_in_process_kind_runs_the_jobs_python_as_the_slots_uid_not_the_agents(one_board: Stack) -> None:
    """The user's Python of an eval (its metrics module; a .vmfb's native code alike) runs in the
    rank's own process under the slot's uid: the agent's token, environment and blob cache are
    out of its reach, and the job still runs to its result."""
    from tests.unit.models import mlp

    stack = one_board
    agent = stack.procs["agent-h1"]
    assert agent.popen is not None
    state = stack.dir / "agents" / "h1"
    metrics = HOSTILE_METRICS.format(
        token=str(agent_token_file(stack.dir, "h1")), agent_pid=agent.popen.pid, cache=str(state / "blobs")
    )
    model = stack.push_artifact(mlp(batch=1, seed=3).SerializeToString(), "mlp-hostile")
    names = ["uid", "token_file", "agent_environ", "blob_cache_write", "worker_environ", "credentials_in_env"]
    job = stack.submit(
        kind="eval",
        params={
            "artifact": model,
            "generated": {"n": 4},
            "metrics_module": stack.put_blob(metrics.encode()),
            "user_metrics": names,
        },
    )
    done = stack.wait_job(job)
    assert done["state"] == "succeeded", stack.logs_of(job)
    [rank] = done["attempt_list"][0]["ranks"]
    found = {k: v["value"] for k, v in rank["result"]["user"].items()}
    base = rank_uid_base("h1", state)
    assert base <= found.pop("uid") < base + 1000, found
    assert found == dict.fromkeys(names[1:], 0.0), found
    assert not (state / "blobs" / "planted").exists()


# The job's Python tells the worker, in the host's own protocol, that the board failed.
FORGED_INFRA_ERROR = """
import gc, json, os, struct
from fleetyard.agent.rank_host import RankOrder

def uid(outputs, labels):
    [order] = [o for o in gc.get_objects() if isinstance(o, RankOrder)]
    done = {"type": "done", "assignment_id": order.assignment_id, "outcome": "infra_error",
            "message": "board fault: the job says so"}
    payload = json.dumps(done).encode()
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                os.write(int(fd), struct.pack("!i", len(payload)) + payload)
        except OSError:
            pass
    return 0.0
"""


def test_a_job_cannot_take_its_board_out_by_reporting_a_board_fault(one_board: Stack) -> None:
    """An in-process rank's infra_error stands only if the board's own check then fails: here it
    passes, so the job fails as its own error and the board stays in service."""
    from tests.unit.models import mlp

    stack = one_board
    model = stack.push_artifact(mlp(batch=1, seed=4).SerializeToString(), "mlp-liar")
    params = {"artifact": model, "generated": {"n": 2}, "user_metrics": ["uid"]}
    params["metrics_module"] = stack.put_blob(FORGED_INFRA_ERROR.encode())
    job = stack.submit(kind="eval", params=params, max_infra_retries=0)
    done = stack.wait_job(job)
    assert (done["state"], done["outcome"]) == ("failed", "user_error"), done
    [rank] = done["attempt_list"][0]["ranks"]
    assert "the board checks healthy" in (rank["message"] or ""), rank
    [board] = stack.boards(host="h1")
    assert board["state"] == "available", board
