"""The firmware registry: images per generation, the standard one, and what is refused."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from tests.unit.test_api_flow import Fleet

from fleetyard.domain.firmware_image import read_header, sim_image
from fleetyard.drivers.base import BoardFault
from fleetyard.drivers.sim import SimDriver


def upload(fleet: Fleet, data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    r = fleet.client.put(f"/v1/blobs/{sha}", content=data, headers=fleet.h(fleet.admin))
    assert r.status_code in (200, 201), r.text
    return sha


def push(fleet: Fleet, generation: str, version: str, sha: str, token: str | None = None) -> tuple[int, dict]:
    body = {"generation": generation, "version": version, "sha256": sha, "notes": "n", "hardware_revisions": ["B1"]}
    r = fleet.client.post("/v1/firmware", json=body, headers=fleet.h(token or fleet.admin))
    return r.status_code, r.json()


def test_images_are_registered_per_generation_and_one_is_the_standard(fleet: Fleet) -> None:
    fleet.app.state.max_blob_bytes = 1 << 20
    a, b = upload(fleet, sim_image("sim-g2", "2.1.0")), upload(fleet, sim_image("sim-g2", "2.10.0"))
    code, img = push(fleet, "sim-g2", "2.1.0", a)
    assert code == 201 and img["sha256"] == a and img["uploaded_by"] == "admin" and not img["standard"]
    assert push(fleet, "sim-g2", "2.1.0", a) == (201, img)  # the same bytes again: nothing changes
    assert push(fleet, "sim-g2", "2.10.0", b)[0] == 201
    listed = fleet.client.get("/v1/firmware", params={"generation": "sim-g2"}, headers=fleet.h(fleet.user)).json()
    assert [f["version"] for f in listed] == ["2.10.0", "2.1.0"]  # versions order as versions, not as text
    r = fleet.client.post("/v1/firmware/sim-g2/2.1.0/standard", headers=fleet.h(fleet.admin))
    assert r.status_code == 200 and r.json()["standard"]
    r = fleet.client.post("/v1/firmware/sim-g2/2.10.0/standard", headers=fleet.h(fleet.admin))
    listed = fleet.client.get("/v1/firmware", headers=fleet.h(fleet.user)).json()
    assert [(f["version"], f["standard"]) for f in listed] == [("2.10.0", True), ("2.1.0", False)]
    log = fleet.client.get("/v1/audit", params={"target": "sim-g2/2.10.0"}, headers=fleet.h(fleet.admin)).json()
    assert [(e["action"], e["actor"]) for e in log] == [("firmware.standard", "admin"), ("firmware.push", "admin")]


@pytest.mark.parametrize(
    ("generation", "version", "image", "code", "says"),
    [
        ("sim-g1", "2.2.0", ("sim-g2", "2.2.0"), 422, "this image is for generation sim-g2, not sim-g1"),
        ("sim-g2", "2.2.1", ("sim-g2", "2.2.0"), 422, "this image is version 2.2.0, not 2.2.1"),
        ("sim-g2", "final", ("sim-g2", "final"), 422, "not a PEP 440 version"),
        ("sim-g2", "2.1.0", ("sim-g2", "2.1.0-other"), 409, "registered already with other bytes"),
    ],
)
def test_a_bad_image_is_refused_saying_why(
    fleet: Fleet, generation: str, version: str, image: tuple[str, str], code: int, says: str
) -> None:
    fleet.app.state.max_blob_bytes = 1 << 20
    assert push(fleet, "sim-g2", "2.1.0", upload(fleet, sim_image("sim-g2", "2.1.0")))[0] == 201
    data = sim_image(*image) if not image[1].endswith("-other") else sim_image("sim-g2", "2.1.0", payload=b"x")
    got, body = push(fleet, generation, version, upload(fleet, data))
    assert got == code and says in body["error"]["message"], body


def test_only_staff_push_and_an_image_must_be_uploaded_first(fleet: Fleet) -> None:
    fleet.app.state.max_blob_bytes = 1 << 20
    sha = upload(fleet, sim_image("sim-g1", "1.5.0"))
    assert push(fleet, "sim-g1", "1.5.0", sha, token=fleet.user)[0] == 403
    code, body = push(fleet, "sim-g1", "1.5.0", "0" * 64)
    assert code == 404 and "upload the image first" in body["error"]["message"]
    r = fleet.client.get("/v1/firmware/sim-g1/9.9.9", headers=fleet.h(fleet.user))
    assert r.status_code == 404 and "fleetyard firmware ls --gen sim-g1" in r.json()["error"]["message"]


def test_a_sim_board_refuses_an_image_of_another_generation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETYARD_SIM_TIME_SCALE", "0")  # a sim flash takes minutes
    driver = SimDriver("sim:1:sim-g1", host="h1")
    [board] = [b.serial for b in driver.discover()]
    wrong, right = tmp_path / "g2.bin", tmp_path / "g1.bin"
    wrong.write_bytes(sim_image("sim-g2", "2.2.0"))
    right.write_bytes(sim_image("sim-g1", "1.5.0"))
    assert read_header(right) == {"generation": "sim-g1", "version": "1.5.0"}
    vendor = tmp_path / "vendor.bin"
    vendor.write_bytes(b"a vendor's opaque image")
    assert read_header(vendor) is None  # checked by its driver when it flashes, not here
    with pytest.raises(BoardFault, match="image is for sim-g2, not for this sim-g1 board"):
        driver.flash(board, wrong, "2.2.0")
    assert driver.flash(board, right, "1.5.0") == "1.5.0"


def test_the_cli_writes_a_sim_image_and_lists_the_registry(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from fleetyard.cli.main import app

    out = tmp_path / "fw.bin"
    r = CliRunner().invoke(app, ["firmware", "make-sim-image", str(out), "--gen", "sim-g3", "--version", "3.1.0"])
    assert r.exit_code == 0, r.output
    assert read_header(out) == {"generation": "sim-g3", "version": "3.1.0"}
    bad = tmp_path / "bad.bin"
    args = ["firmware", "make-sim-image", str(bad), "--gen", "sim-g3", "--version", "3.2.0", "--sdc-per-hour", "5"]
    assert CliRunner().invoke(app, [*args, "--no-boot"]).exit_code == 0
    assert read_header(bad) == {"generation": "sim-g3", "version": "3.2.0", "sdc_per_hour": 5.0, "boots": False}


def test_a_flash_names_a_registered_version_of_the_boards_generation(fleet: Fleet) -> None:
    fleet.app.state.max_blob_bytes = 1 << 20
    fleet.register("h1", n=1, gen="sim-g1")
    assert push(fleet, "sim-g1", "1.5.0", upload(fleet, sim_image("sim-g1", "1.5.0")))[0] == 201
    assert push(fleet, "sim-g2", "2.2.0", upload(fleet, sim_image("sim-g2", "2.2.0")))[0] == 201

    def order(body: dict) -> tuple[int, dict]:
        r = fleet.client.post("/v1/boards/h1-b0/ops", json=body, headers=fleet.h(fleet.admin))
        return r.status_code, r.json()

    code, body = order({"op": "flash"})
    assert code == 422 and "a flash needs a version" in body["error"]["message"]
    code, body = order({"op": "flash", "version": "2.2.0"})  # another generation's image
    assert code == 404 and "no sim-g1 firmware 2.2.0" in body["error"]["message"]
    code, body = order({"op": "soft_reset", "version": "1.5.0"})
    assert code == 422 and "only a flash takes a version" in body["error"]["message"]
    code, body = order({"op": "flash", "version": "1.5.0"})
    assert code == 201 and body["version"] == "1.5.0"
    [op] = fleet.beat("h1")["ops"]
    assert (op["op"], op["version"], op["image"]) == (
        "flash",
        "1.5.0",
        hashlib.sha256(sim_image("sim-g1", "1.5.0")).hexdigest(),
    )
    now = 1.0
    fleet.beat("h1", op_results=[{"id": op["id"], "ok": True, "message": "ok", "started_at": now, "finished_at": now}])
    assert fleet.client.get("/v1/boards/h1-b0", headers=fleet.h(fleet.user)).json()["firmware"] == "1.5.0"


def test_an_image_whose_bytes_do_not_hash_as_its_publisher_says_is_refused_unsent(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from fleetyard.cli.main import app
    from fleetyard.client import Client
    from fleetyard.errors import DigestMismatch

    image = tmp_path / "fw.bin"
    image.write_bytes(sim_image("sim-g1", "1.5.0"))
    published = hashlib.sha256(sim_image("sim-g1", "1.5.0", payload=b"the vendor's")).hexdigest()
    # No server listens there: the refusal comes before anything is sent.
    client = Client("http://127.0.0.1:9", token="t")
    with pytest.raises(DigestMismatch, match=f"hashes to sha256 {hashlib.sha256(image.read_bytes()).hexdigest()}"):
        client.push_firmware(image, "sim-g1", "1.5.0", sha256=published)
    args = ["--server", "http://127.0.0.1:9", "firmware", "push", str(image), "--gen", "sim-g1", "--version", "1.5.0"]
    r = CliRunner().invoke(app, [*args, "--sha256", published])
    assert r.exit_code != 0 and f"not the expected {published}" in r.output, r.output
