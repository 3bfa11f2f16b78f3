"""The client config file: where it is, what it holds, and how settings are resolved."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from fleetyard.client import Client
from fleetyard.config import (
    DEFAULT_SERVER,
    config_path,
    load_client_config,
    normalize_server,
    resolve_client_settings,
    write_client_config,
)
from fleetyard.errors import FleetyardError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("FLEETYARD_CONFIG", "FLEETYARD_SERVER", "FLEETYARD_TOKEN", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def test_path_defaults_to_dot_config(tmp_path: Path) -> None:
    assert config_path() == tmp_path / "home" / ".config" / "fleetyard" / "config.json"


def test_path_follows_xdg_config_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert config_path() == tmp_path / "xdg" / "fleetyard" / "config.json"


def test_fleetyard_config_wins_over_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("FLEETYARD_CONFIG", str(tmp_path / "mine.toml"))
    assert config_path() == tmp_path / "mine.toml"


def test_missing_file_is_an_empty_config(tmp_path: Path) -> None:
    cfg = load_client_config(tmp_path / "absent.json")
    assert (cfg.server, cfg.token) == (None, None)


def test_write_then_load_round_trips_with_mode_0600(tmp_path: Path) -> None:
    path = write_client_config("http://127.0.0.1:8600", "s3cret", tmp_path / "a" / "config.json")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {"server": "http://127.0.0.1:8600", "token": "s3cret"}
    cfg = load_client_config(path)
    assert (cfg.server, cfg.token, cfg.path) == ("http://127.0.0.1:8600", "s3cret", path)


def test_overwriting_keeps_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text("{}")
    path.chmod(0o644)
    write_client_config("http://x:1", "t", path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_toml_round_trips(tmp_path: Path) -> None:
    path = write_client_config("http://h:1", 'we"ird\\token', tmp_path / "config.toml")
    cfg = load_client_config(path)
    assert (cfg.server, cfg.token) == ("http://h:1", 'we"ird\\token')


def test_default_location_is_used_when_no_path_is_given(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FLEETYARD_CONFIG", str(tmp_path / "c.json"))
    write_client_config("http://h:2", "t2")
    assert load_client_config().server == "http://h:2"


@pytest.mark.parametrize(
    ("name", "text"), [("config.json", "{not json"), ("config.toml", "server = "), ("config.json", "[1, 2]")]
)
def test_a_broken_file_is_an_error_naming_it(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(FleetyardError, match=str(path)):
        load_client_config(path)


def test_a_non_string_token_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"server": "http://h:1", "token": 42}')
    with pytest.raises(FleetyardError, match="token"):
        load_client_config(path)


def test_resolution_order_argument_then_env_then_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FLEETYARD_CONFIG", str(tmp_path / "c.json"))
    write_client_config("http://file:1", "file-token")
    assert resolve_client_settings() == ("http://file:1", "file-token")

    monkeypatch.setenv("FLEETYARD_SERVER", "http://env:2")
    monkeypatch.setenv("FLEETYARD_TOKEN", "env-token")
    assert resolve_client_settings() == ("http://env:2", "env-token")

    assert resolve_client_settings("http://arg:3", "arg-token") == ("http://arg:3", "arg-token")


def test_each_setting_resolves_on_its_own(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FLEETYARD_CONFIG", str(tmp_path / "c.json"))
    write_client_config("http://file:1", "file-token")
    monkeypatch.setenv("FLEETYARD_SERVER", "http://env:2")
    assert resolve_client_settings() == ("http://env:2", "file-token")


def test_nothing_configured_means_the_local_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FLEETYARD_CONFIG", str(tmp_path / "absent.json"))
    assert resolve_client_settings() == (DEFAULT_SERVER, None)


@pytest.mark.parametrize(
    ("given", "url"),
    [
        ("127.0.0.1:8600", "http://127.0.0.1:8600"),
        ("http://fleet.example/", "http://fleet.example"),
        (" https://fleet.example:443 ", "https://fleet.example:443"),
    ],
)
def test_server_urls_are_normalized(given: str, url: str) -> None:
    assert normalize_server(given) == url


def test_the_client_uses_the_resolved_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FLEETYARD_CONFIG", str(tmp_path / "c.json"))
    write_client_config("http://file:1/", "file-token")
    with Client() as fy:
        assert (fy.server, fy.token) == ("http://file:1", "file-token")
    with Client(server="other:9", token="t") as fy:
        assert (fy.server, fy.token) == ("http://other:9", "t")
