"""Big JSON bodies (a batch of job specs, an agent's events) parsed off the event loop.

FastAPI parses and validates a route's body on the event loop, in one go: a 7.4 MiB batch of a
thousand specs held it 0.13 s, a 16 MiB batch of events 0.44 s, and nothing else (a heartbeat, a
health check) was answered meanwhile. A thread alone would not help: ``json`` and pydantic-core
hold the GIL for a whole call, and a ``json.loads`` of a 7.5 MiB batch of a million short
strings holds it 0.15 s. So these routes read their body raw and, in a worker thread, decode and
validate its long list one item at a time (the standard decoder's ``raw_decode`` from each
item's offset): the event loop gets the GIL back between items (every
``sys.getswitchinterval()``). One body is worked on at a time: three at once made the loop wait
its turn behind each. Errors are the same 422 as FastAPI's, located in the body.

The route names its model in the OpenAPI through :func:`openapi_body`; :func:`document` adds the
models' schemas to the app's components.
"""

from __future__ import annotations

import json
import re
import threading
import typing
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic.json_schema import models_json_schema
from starlette.concurrency import run_in_threadpool

__all__ = ["document", "openapi_body", "parsed_off_loop"]

M = TypeVar("M", bound=BaseModel)

# Past this many problems a body is refused without looking further (the answer shows the first few).
MAX_PROBLEMS = 1000
_WORKING = threading.Lock()  # one big body at a time
_DECODER = json.JSONDecoder()
_SPACE = re.compile(r"[ \t\n\r]*")


def parsed_off_loop(model: type[M], items: str) -> Callable[[Request], Awaitable[M]]:
    """A dependency: the request's body as ``model``, whose field ``items`` is a long list,
    parsed in a worker thread an item at a time."""
    field = model.model_fields[items]
    (item_type,) = typing.get_args(field.annotation)
    adapter: TypeAdapter[Any] = TypeAdapter(item_type)
    most = next((m.max_length for m in field.metadata if hasattr(m, "max_length")), None)

    def parse(raw: bytes) -> M:
        try:
            data = _decode(raw, items)
        except ValueError as exc:
            raise RequestValidationError(
                [{"type": "json_invalid", "loc": ("body",), "msg": f"JSON decode error: {exc}", "input": {}}]
            ) from None
        listed = data.get(items) if isinstance(data, dict) else None
        if not isinstance(listed, list) or (most is not None and len(listed) > most):
            return _validate(model, data)  # its errors say what is wrong with the whole
        problems: list[dict[str, Any]] = []
        valid: list[Any] = []
        for i, item in enumerate(listed):
            try:
                valid.append(adapter.validate_python(item))
            except ValidationError as exc:
                problems += [{**e, "loc": ("body", items, i, *e["loc"])} for e in exc.errors()]
                if len(problems) >= MAX_PROBLEMS:
                    break
        if not problems:
            return _validate(model, {**data, items: valid})  # the items pass as they are, checked once
        try:
            _validate(model, {**data, items: valid or listed[:1]})
        except RequestValidationError as exc:
            problems = [e for e in exc.errors() if e["loc"][1:2] != (items,)] + problems
        raise RequestValidationError(problems)

    async def dependency(request: Request) -> M:
        raw = await request.body()

        def one_at_a_time() -> M:
            with _WORKING:
                return parse(raw)

        return await run_in_threadpool(one_at_a_time)

    return dependency


def _decode(raw: bytes, items: str) -> Any:
    """``json.loads(raw)``, but the list under the top-level key ``items`` is decoded an element
    at a time, so that no one call holds the GIL for the whole body. ValueError if not JSON."""
    text = raw.decode("utf-8")  # JSON over HTTP is UTF-8 (RFC 8259)
    i = _SPACE.match(text).end()  # type: ignore[union-attr]
    if not text.startswith("{", i):
        return json.loads(text)  # not an object: small, or the model's errors say what is wrong

    def skip(at: int) -> int:
        return _SPACE.match(text, at).end()  # type: ignore[union-attr]

    def expect(at: int, char: str) -> int:
        if not text.startswith(char, at):
            raise json.JSONDecodeError(f"Expecting {char!r}", text, at)
        return skip(at + 1)

    out: dict[str, Any] = {}
    i = skip(i + 1)
    if text.startswith("}", i):
        i = skip(i + 1)
    else:
        while True:
            if not text.startswith('"', i):
                raise json.JSONDecodeError("Expecting property name enclosed in double quotes", text, i)
            key, i = _DECODER.raw_decode(text, i)
            i = expect(skip(i), ":")
            if key == items and text.startswith("[", i):
                listed: list[Any] = []
                i = skip(i + 1)
                if text.startswith("]", i):
                    i += 1
                else:
                    while True:
                        value, i = _DECODER.raw_decode(text, i)
                        listed.append(value)
                        i = skip(i)
                        if not text.startswith(",", i):
                            break
                        i = skip(i + 1)
                    if not text.startswith("]", i):
                        raise json.JSONDecodeError("Expecting ',' delimiter", text, i)
                    i += 1
                out[key] = listed
            else:
                out[key], i = _DECODER.raw_decode(text, i)
            i = skip(i)
            if not text.startswith(",", i):
                break
            i = skip(i + 1)
        i = expect(i, "}")
    if i != len(text):
        raise json.JSONDecodeError("Extra data", text, i)
    return out


def _validate(model: type[M], data: object) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None


def openapi_body(model: type[BaseModel]) -> dict[str, Any]:
    """The ``openapi_extra`` of a route whose body ``model`` is parsed by :func:`parsed_off_loop`."""
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


def document(app: FastAPI, models: Sequence[type[BaseModel]]) -> None:
    """Add ``models``' schemas (and those they use) to the app's OpenAPI components."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        if any(m.__name__ not in components for m in models):
            _, defs = models_json_schema(
                [(m, "validation") for m in models], ref_template="#/components/schemas/{model}"
            )
            for name, d in defs.get("$defs", {}).items():
                components.setdefault(name, d)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
