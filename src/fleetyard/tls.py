"""TLS for the fleet's HTTP clients (the agent's links, the SDK and CLI)."""

from __future__ import annotations

import functools
import ssl
from collections.abc import Iterable

import httpx


def tls_for(urls: Iterable[str]) -> ssl.SSLContext | bool:
    """What an ``httpx.Client`` for these servers verifies TLS with: one verifying context per
    process for https (httpx builds a new one per client: 57 ms of CPU loading the CA bundle,
    paid by every agent link and CLI call); none for plain http, which never uses it."""
    return _verifying_context() if any(u.lower().startswith("https:") for u in urls) else False


@functools.cache
def _verifying_context() -> ssl.SSLContext:
    return httpx.create_ssl_context()
