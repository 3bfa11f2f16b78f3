"""The client config: which server the CLI and SDK talk to, and with which token.

One small file, ``{"server": URL, "token": T}``, found at (first that applies):

1. ``$FLEETYARD_CONFIG`` (JSON, or TOML when the name ends in ``.toml``);
2. ``$XDG_CONFIG_HOME/fleetyard/config.json``;
3. ``~/.config/fleetyard/config.json``.

``fleetyard up`` writes it so that the CLI works at once. For each setting an explicit argument
wins, then ``FLEETYARD_SERVER`` / ``FLEETYARD_TOKEN``, then the file.
"""

from __future__ import annotations

import json
import os
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleetyard.errors import FleetyardError

DEFAULT_SERVER = "http://127.0.0.1:8600"
ENV_CONFIG = "FLEETYARD_CONFIG"
ENV_SERVER = "FLEETYARD_SERVER"
ENV_TOKEN = "FLEETYARD_TOKEN"


@dataclass(frozen=True)
class ClientConfig:
    """What the config file says; either field may be missing."""

    server: str | None = None
    token: str | None = None
    path: Path | None = None


def config_path() -> Path:
    """Where the client config lives (it need not exist)."""
    explicit = os.environ.get(ENV_CONFIG)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CONFIG_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".config"
    return base / "fleetyard" / "config.json"


def load_client_config(path: Path | str | None = None) -> ClientConfig:
    """Read the client config; a missing file is an empty config, a broken one an error."""
    p = Path(path).expanduser() if path is not None else config_path()
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ClientConfig(path=p)
    except OSError as exc:
        raise FleetyardError(f"cannot read the client config {p}: {exc.strerror}") from exc
    data: Any
    try:
        data = tomllib.loads(text) if p.suffix == ".toml" else json.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        kind = "TOML" if p.suffix == ".toml" else "JSON"
        raise FleetyardError(
            f"the client config {p} is not valid {kind}: {exc}; fix it, or delete it and run `fleetyard up`"
        ) from exc
    if not isinstance(data, dict):
        raise FleetyardError(f"the client config {p} must hold an object like {{'server': URL, 'token': T}}")
    for key in ("server", "token"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise FleetyardError(f"the client config {p}: {key!r} must be a string")
    return ClientConfig(server=data.get("server") or None, token=data.get("token") or None, path=p)


def write_client_config(server: str, token: str | None, path: Path | str | None = None) -> Path:
    """Write the client config (mode 0600: it holds a secret) and return its path."""
    p = Path(path).expanduser() if path is not None else config_path()
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.suffix == ".toml":
        # JSON string escapes are valid TOML basic-string escapes.
        lines = [f"server = {json.dumps(server)}"]
        if token is not None:
            lines.append(f"token = {json.dumps(token)}")
        text = "\n".join(lines) + "\n"
    else:
        text = json.dumps({"server": server, "token": token}, indent=2) + "\n"
    write_private_text(p, text)
    return p


def write_private_text(path: Path, text: str) -> None:
    """Write a file only its owner can read (mode 0600), atomically."""
    # A private temp file renamed into place: the secret is never readable by others, not even
    # for a moment, and a crash never leaves half a file.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def normalize_server(url: str) -> str:
    """``host:port`` or a URL → a URL without a trailing slash."""
    url = url.strip()
    if "://" not in url:
        url = "http://" + url
    return url.rstrip("/")


def resolve_client_settings(server: str | None = None, token: str | None = None) -> tuple[str, str | None]:
    """The server URL and token to use: argument, else environment, else config file."""
    server = server or os.environ.get(ENV_SERVER) or None
    token = token or os.environ.get(ENV_TOKEN) or None
    if server is None or token is None:
        cfg = load_client_config()
        server = server or cfg.server
        token = token or cfg.token
    return normalize_server(server or DEFAULT_SERVER), token
