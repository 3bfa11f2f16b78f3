"""How many board telemetry reports one server process absorbs: 1,250 hosts x 8 boards at once.

    python bench/heartbeats.py [--quick] [--store sqlite|postgres|both] [--rounds R] [--hosts H]

What it does, per store:

1. migrates a fresh store and creates one agent token per simulated host in one transaction;
2. starts the real server (``python -m fleetyard server``) as a process on 127.0.0.1;
3. starts a load generator of ``--procs`` processes, each running asyncio with ``--conns``
   keep-alive connections, that share the hosts between them (every request body is built before
   the clock starts; see ``RawConnection`` for why it is not httpx by default);
4. registers every host once (``POST /v1/agent/register`` with 8 boards);
5. peer: hammers ``GET /healthz`` (the same framework and threadpool, doing no work) with as many
   requests as the heartbeat phase sends, at the same concurrency: the framework's ceiling here;
6. for R rounds, every host posts one heartbeat (8 board reports with telemetry) all at once.

Metrics (flat; ``<store>_`` prefixes per store; the unprefixed keys are the worst over the stores
measured): ``board_reports_per_s`` (8 x heartbeats answered 2xx / wall time of the rounds),
``p99_heartbeat_ms`` (request sent on a pooled connection -> answer), ``p99_heartbeat_queued_ms``
(round start -> answer, so including waiting for a free connection in the generator), ``errors``,
``bare_rps`` and ``ratio_heartbeat_to_bare`` (heartbeat req/s over bare req/s), and the CPU seconds
of the server and of the generator during the heartbeat rounds. The generator runs on the same
cores as the server; its CPU time is reported so the reader can see how much it took. The server
may answer a heartbeat before writing it (write-behind): ``persist_lag_ms`` is how long after the
last answer of the last round all of that round's reports were in the store (read back directly),
so a server that answered without keeping the reports would show here.

Not a test: it prints one JSON line last and exits 0 whether or not the targets are met.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import random
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from _common import (
    database,
    emit,
    interrupts_unwind,
    ms,
    percentile,
    proc_cpu_s,
    ratio,
    rnd,
    say,
    target,
    tree_cpu_s,
    use_repo_root,
    worst,
)

BENCH = "heartbeats"
BOARDS_PER_HOST = 8
GENERATIONS = ("sim-g1", "sim-g2", "sim-g3")
TARGET_BOARD_REPORTS_PER_S = 20_000
PHASE_TIMEOUT_S = 300.0  # no phase of a sane run takes this long; a stuck one ends the bench


# ---- the load generator (runs in its own processes) ------------------------------------------


@dataclass
class HostCred:
    host: str
    token: str
    session: str
    generation: str


def board_id(host: str, slot: int) -> str:
    return f"{host}-b{slot}"


def register_body(h: HostCred) -> bytes:
    boards = [
        {
            "serial": board_id(h.host, slot),
            "generation": h.generation,
            "slot": slot,
            "firmware": "1.4.2",
            "device": f"sim:{slot}",
            "labels": {"rack": f"r{int(h.host[2:]) % 40:02d}"},
        }
        for slot in range(BOARDS_PER_HOST)
    ]
    body = {
        "host": h.host,
        "session": h.session,
        "driver": f"sim:{BOARDS_PER_HOST}:{h.generation}",
        "agent_version": "bench",
        "labels": {"bench": "heartbeats"},
        "boards": boards,
    }
    return json.dumps(body).encode()


def heartbeat_body(h: HostCred, rng: random.Random) -> bytes:
    """One heartbeat with realistic telemetry, as the sim driver reports it."""
    reports = []
    for slot in range(BOARDS_PER_HOST):
        util = max(0.0, min(100.0, rng.gauss(60.0, 30.0)))
        reports.append(
            {
                "id": board_id(h.host, slot),
                "ok": True,
                "reason": None,
                "telemetry": {
                    "temperature_c": round(40.0 + util * 0.3 + rng.gauss(0, 0.4), 2),
                    "power_w": round(35.0 + 1.15 * util + rng.gauss(0, 1.5), 2),
                    "utilization_pct": round(util, 2),
                    "memory_used_mb": round(280.0 + util * 100 + rng.gauss(0, 8), 1),
                    "memory_total_mb": 16384.0,
                    "ecc_corrected": float(rng.randint(0, 3)),
                    "ecc_uncorrected": 0.0,
                },
            }
        )
    return json.dumps({"session": h.session, "boards": reports, "running": [], "fault_acks": []}).encode()


class RawConnection:
    """One keep-alive HTTP/1.1 connection, with just enough of the protocol for this server.

    The generator shares the cores with the server, so it must cost far less per request than
    the server does. httpx.AsyncClient costs 1.3-4 ms of CPU per request here (more with a larger
    pool); this costs about 0.06 ms. ``--client httpx`` runs the same phases through httpx.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.opened = 0  # connections opened, the first one included

    async def _open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        """Send one request (already encoded); return the status and the body.

        A kept-alive connection that the server closed before answering is reopened and the
        request sent once more, as an agent does (every agent write is idempotent).
        """
        for tries_left in (1, 0):
            if self.writer is None or self.writer.is_closing():
                await self._open()
                self.opened += 1
            assert self.reader is not None and self.writer is not None
            try:
                self.writer.write(raw)
                status_line = await self.reader.readline()
            except ConnectionError:
                status_line = b""
            if status_line:
                return await self._answer(status_line)
            self.close()
            if not tries_left:
                raise ConnectionError("the server closed the connection without answering")
        raise AssertionError("unreachable")

    async def _answer(self, status_line: bytes) -> tuple[int, bytes]:
        assert self.reader is not None
        try:
            status = int(status_line.split(b" ", 2)[1])
            length, chunked, close = 0, False, False
            while True:
                line = await self.reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"transfer-encoding" and b"chunked" in value.lower():
                    chunked = True
                elif name == b"connection" and b"close" in value.lower():
                    close = True
            if chunked:
                body = b""
                while size := int((await self.reader.readline()).split(b";")[0], 16):
                    body += (await self.reader.readexactly(size + 2))[:-2]
                await self.reader.readline()
            else:
                body = await self.reader.readexactly(length)
        except BaseException:
            self.close()
            raise
        if close:
            self.close()
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def encode_request(method: str, path: str, host: str, token: str | None, body: bytes | None) -> bytes:
    head = [f"{method} {path} HTTP/1.1", f"host: {host}"]
    if token:
        head.append(f"authorization: Bearer {token}")
    if body is not None:
        head += ["content-type: application/json", f"content-length: {len(body)}"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + (body or b"")


def phase_requests(
    kind: str, hosts: list[HostCred], count: int, seed: int
) -> list[tuple[str, str, str | None, bytes | None]]:
    """The (method, path, token, body) of every request one generator sends in a phase."""
    rng = random.Random(seed)
    if kind == "register":
        return [("POST", "/v1/agent/register", h.token, register_body(h)) for h in hosts]
    if kind == "heartbeat":
        return [("POST", "/v1/agent/heartbeat", h.token, heartbeat_body(h, rng)) for h in hosts]
    if kind == "bare":
        return [("GET", "/healthz", None, None)] * count
    raise ValueError(kind)


async def _phase(url: str, client: str, conns: int, reqs: list[Any]) -> dict[str, Any]:
    """Send one phase's requests over ``conns`` connections, all at once; time each one."""
    hostport = url.split("://", 1)[1]
    host, port = hostport.rsplit(":", 1)
    lat: list[float] = []
    queued: list[float] = []
    errors: list[str] = []
    nerr = reconnects = 0
    pending = list(reversed(reqs))

    def note_error(msg: str) -> None:
        nonlocal nerr
        nerr += 1
        if len(errors) < 5:
            errors.append(msg)

    if client == "raw":
        encoded = [encode_request(m, p, hostport, t, b) for m, p, t, b in pending]
        pool = [RawConnection(host, int(port)) for _ in range(conns)]
        for c in pool:  # agents keep their connections open: open them before the clock starts
            await c.request(encode_request("GET", "/healthz", hostport, None, None))

        async def worker(c: RawConnection) -> None:
            while encoded:
                raw = encoded.pop()
                t0 = time.perf_counter()
                try:
                    status, body = await c.request(raw)
                except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
                    note_error(f"{type(exc).__name__}: {exc}")
                    continue
                t1 = time.perf_counter()
                if 200 <= status < 300:
                    lat.append(t1 - t0)
                    queued.append(t1 - start)
                else:
                    note_error(f"{status} {body[:200]!r}")

        cpu0, wall0, start = time.process_time(), time.time(), time.perf_counter()
        await asyncio.gather(*(worker(c) for c in pool))
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu0
        for c in pool:
            reconnects += c.opened - 1
            c.close()
    else:
        import httpx

        limits = httpx.Limits(max_connections=conns, max_keepalive_connections=conns)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60.0) as hc:
            await asyncio.gather(*(hc.get("/healthz") for _ in range(conns)))

            async def hworker() -> None:
                while pending:
                    method, path, token, body = pending.pop()
                    headers = {"content-type": "application/json"}
                    if token:
                        headers["authorization"] = f"Bearer {token}"
                    t0 = time.perf_counter()
                    try:
                        r = await hc.request(method, path, content=body, headers=headers)
                    except httpx.HTTPError as exc:
                        note_error(f"{type(exc).__name__}: {exc}")
                        continue
                    t1 = time.perf_counter()
                    if 200 <= r.status_code < 300:
                        lat.append(t1 - t0)
                        queued.append(t1 - start)
                    else:
                        note_error(f"{r.status_code} {r.text[:200]}")

            cpu0, wall0, start = time.process_time(), time.time(), time.perf_counter()
            await asyncio.gather(*(hworker() for _ in range(conns)))
            elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu0
    return {
        "start": wall0,
        "end": wall0 + elapsed,
        "ok": len(lat),
        "errors": nerr,
        "reconnects": reconnects,
        "error_samples": errors,
        "lat": lat,
        "queued": queued,
        "cpu_s": cpu,
    }


def loadgen_main(conn: Connection, url: str, hosts: list[HostCred], client: str, conns: int) -> None:
    """A generator process: runs each phase it is sent, answers with the measurements."""
    try:
        while True:
            msg = conn.recv()
            if msg[0] == "exit":
                return
            _, kind, count, seed = msg
            reqs = phase_requests(kind, hosts, count, seed)  # bodies built before the clock starts
            conn.send(asyncio.run(_phase(url, client, conns, reqs)))
    except (KeyboardInterrupt, EOFError):
        pass


class LoadGen:
    """``procs`` generator processes sharing the hosts."""

    def __init__(self, url: str, hosts: list[HostCred], procs: int, conns: int, client: str) -> None:
        ctx = mp.get_context("spawn")
        self.parts = [hosts[i::procs] for i in range(procs)]
        self.pipes: list[Connection] = []
        self.procs: list[mp.process.BaseProcess] = []
        for part in self.parts:
            parent, child = ctx.Pipe()
            p = ctx.Process(target=loadgen_main, args=(child, url, part, client, conns), daemon=True)
            p.start()
            child.close()
            self.pipes.append(parent)
            self.procs.append(p)

    def run(self, kind: str, count: int = 0, seed: int = 0) -> dict[str, Any]:
        """One phase on every generator at once; ``count`` (bare phase) is split between them."""
        n = len(self.pipes)
        for i, pipe in enumerate(self.pipes):
            pipe.send(("run", kind, count // n + (1 if i < count % n else 0), seed * 100 + i))
        parts = []
        for pipe in self.pipes:
            if not pipe.poll(PHASE_TIMEOUT_S):
                raise TimeoutError(f"the {kind} phase took over {PHASE_TIMEOUT_S}s")
            parts.append(pipe.recv())
        start, end = min(p["start"] for p in parts), max(p["end"] for p in parts)
        return {
            "start": start,
            "wall_s": end - start,
            "ok": sum(p["ok"] for p in parts),
            "errors": sum(p["errors"] for p in parts),
            "reconnects": sum(p["reconnects"] for p in parts),
            "error_samples": [e for p in parts for e in p["error_samples"]][:5],
            "lat": [x for p in parts for x in p["lat"]],
            "queued": [x for p in parts for x in p["queued"]],
            "gen_cpu_s": sum(p["cpu_s"] for p in parts),
        }

    def close(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError, ValueError):
                pipe.send(("exit",))
        for p in self.procs:
            p.join(5)
            if p.is_alive():
                p.kill()
                p.join(5)


# ---- setup ------------------------------------------------------------------------------------


def seed_agent_tokens(db_url: str, n_hosts: int) -> list[HostCred]:
    """One agent token per host, all in one write transaction (create_token n times is slow)."""
    from fleetyard.domain.auth import Role
    from fleetyard.store.db import Store
    from fleetyard.store.tokens import insert_token

    store = Store(db_url)
    creds = []
    try:
        with store.write() as conn:
            for i in range(n_hosts):
                host = f"bh{i + 1:05d}"
                secret, _ = insert_token(conn, name=f"agent-{host}", role=Role.AGENT, host=host)
                creds.append(HostCred(host, secret, uuid.uuid4().hex, GENERATIONS[i % len(GENERATIONS)]))
    finally:
        store.dispose()
    return creds


# ---- one store ---------------------------------------------------------------------------------


def wait_persisted(db_url: str, since: float, want: int, timeout_s: float = 30.0) -> float | None:
    """Seconds until the store holds ``want`` board reports stamped at or after ``since``.

    The server may answer a heartbeat before it writes it (write-behind); this is how long after
    the last answer the last round's reports are really in the store. None if they never are.
    """
    import sqlalchemy as sa

    from fleetyard.store import tables as t
    from fleetyard.store.db import Store

    store = Store(db_url)
    t0 = time.perf_counter()
    try:
        while time.perf_counter() - t0 < timeout_s:
            with store.read() as conn:
                n = conn.execute(sa.select(sa.func.count()).where(t.boards.c.telemetry_at >= since)).scalar() or 0
            if n >= want:
                return time.perf_counter() - t0
            time.sleep(0.01)
    finally:
        store.dispose()
    return None


def check_phase(kind: str, name: str, phase: dict[str, Any], stack: Any) -> None:
    """Say what went wrong in a phase, with the server's log, so that a failed run explains itself."""
    if phase["errors"] or phase["reconnects"]:
        say(f"{kind}: {name}: {phase['errors']} errors, {phase['reconnects']} reconnects: {phase['error_samples']}")
    if phase["errors"]:
        print(stack.logs()[-3000:], file=sys.stderr)


def measure_store(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    use_repo_root()
    from tests.integration.harness import Stack

    work = Path(tempfile.mkdtemp(prefix=f"fy-bench-hb-{kind}-"))
    gen: LoadGen | None = None
    try:
        with database(kind, work) as db:
            db_url = db.url
            stack = Stack(db_url, work)
            try:
                say(f"{kind}: migrating, creating {args.hosts} agent tokens")
                stack.setup()
                t0 = time.perf_counter()
                creds = seed_agent_tokens(db_url, args.hosts)
                say(f"{kind}: tokens in {time.perf_counter() - t0:.1f}s; starting the server")
                stack.start_server()
                server = stack.procs["server"].popen
                assert server is not None
                gen = LoadGen(stack.url, creds, args.procs, args.conns, args.client)

                reg = gen.run("register")
                say(f"{kind}: registered {reg['ok']} hosts in {reg['wall_s']:.1f}s")
                check_phase(kind, "register", reg, stack)
                if reg["ok"] != args.hosts:
                    raise RuntimeError(f"registration failed: {reg['error_samples']}")

                total = args.hosts * args.rounds
                cpu0 = proc_cpu_s(server.pid)
                bare = gen.run("bare", count=total)
                bare_server_cpu = (proc_cpu_s(server.pid) or 0) - (cpu0 or 0)
                say(f"{kind}: bare /healthz {bare['ok'] / bare['wall_s']:.0f} req/s")
                check_phase(kind, "bare", bare, stack)

                rounds = []
                cpu0 = proc_cpu_s(server.pid)
                db0 = tree_cpu_s(db.server_pid) if db.server_pid else None
                for r in range(args.rounds):
                    rounds.append(gen.run("heartbeat", seed=r + 1))
                    rr = rounds[-1]
                    say(
                        f"{kind}: round {r + 1}/{args.rounds}: {rr['ok']} heartbeats in {rr['wall_s']:.2f}s "
                        f"= {BOARDS_PER_HOST * rr['ok'] / rr['wall_s']:.0f} board reports/s, "
                        f"p99 {1000 * (percentile(rr['lat'], 99) or 0):.0f} ms"
                    )
                    check_phase(kind, f"round {r + 1}", rr, stack)
                hb_server_cpu = (proc_cpu_s(server.pid) or 0) - (cpu0 or 0)
                db_cpu = (tree_cpu_s(db.server_pid) or 0) - db0 if db.server_pid and db0 is not None else None
                lag = wait_persisted(db_url, rounds[-1]["start"], rounds[-1]["ok"] * BOARDS_PER_HOST)
                say(f"{kind}: the last round's reports were all in the store {ms(lag)} ms after its last answer")
                if not stack.procs["server"].alive:
                    raise RuntimeError("the server died during the run")
            except Exception:
                print(stack.logs(), file=sys.stderr)  # the processes' own account of what went wrong
                raise
            finally:
                if gen is not None:
                    gen.close()
                stack.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    wall = sum(r["wall_s"] for r in rounds)
    ok = sum(r["ok"] for r in rounds)
    lat = [x for r in rounds for x in r["lat"]]
    queued = [x for r in rounds for x in r["queued"]]
    hb_rps = ok / wall if wall else None
    bare_rps = bare["ok"] / bare["wall_s"] if bare["wall_s"] else None
    out = {
        "board_reports_per_s": rnd(BOARDS_PER_HOST * ok / wall if wall else None),
        "heartbeats_per_s": rnd(hb_rps),
        "p50_heartbeat_ms": ms(percentile(lat, 50)),
        "p99_heartbeat_ms": ms(percentile(lat, 99)),
        "p99_heartbeat_queued_ms": ms(percentile(queued, 99)),
        "round_max_ms": ms(max(r["wall_s"] for r in rounds)),
        "errors": sum(r["errors"] for r in rounds),
        "reconnects": sum(r["reconnects"] for r in rounds),
        "heartbeats": ok,
        "bare_rps": rnd(bare_rps),
        "p99_bare_ms": ms(percentile(bare["lat"], 99)),
        "bare_errors": bare["errors"],
        "ratio_heartbeat_to_bare": ratio(hb_rps, bare_rps),
        "server_cpu_s": rnd(hb_server_cpu, 2),
        "generator_cpu_s": rnd(sum(r["gen_cpu_s"] for r in rounds), 2),
        "server_cpu_ms_per_heartbeat": rnd(1000 * hb_server_cpu / ok if ok else None, 3),
        "server_cpu_ms_per_bare_request": rnd(1000 * bare_server_cpu / bare["ok"] if bare["ok"] else None, 3),
        "wall_s": rnd(wall, 3),
        "persist_lag_ms": ms(lag),
        "register_per_s": rnd(reg["ok"] / reg["wall_s"] if reg["wall_s"] else None),
    }
    if db_cpu is not None:  # PostgreSQL's own processes (SQLite works inside the server's)
        out["db_cpu_s"] = rnd(db_cpu, 2)
    return out


# ---- main -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds (2), under two minutes")
    ap.add_argument("--store", choices=["sqlite", "postgres", "both"], default="sqlite")
    ap.add_argument("--hosts", type=int, default=1250, help="simulated hosts (8 boards each)")
    ap.add_argument("--rounds", type=int, default=None, help="heartbeats per host (default 5; --quick 2)")
    ap.add_argument("--procs", type=int, default=2, help="load generator processes")
    ap.add_argument("--conns", type=int, default=64, help="connections per generator process")
    ap.add_argument("--client", choices=["raw", "httpx"], default="raw", help="the generator's HTTP client")
    args = ap.parse_args(argv)
    if args.rounds is None:
        args.rounds = 2 if args.quick else 5
    if not (1 <= args.hosts <= 100_000 and 1 <= args.rounds <= 100 and 1 <= args.procs <= 16):
        ap.error("--hosts 1..100000, --rounds 1..100, --procs 1..16")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stores = ["sqlite", "postgres"] if args.store == "both" else [args.store]
    metrics: dict[str, Any] = {
        "hosts": args.hosts,
        "boards_per_host": BOARDS_PER_HOST,
        "rounds": args.rounds,
        "generator_procs": args.procs,
        "generator_conns_per_proc": args.conns,
        "generator_client": args.client,
    }
    results: dict[str, dict[str, Any]] = {}
    with interrupts_unwind():
        for kind in stores:
            results[kind] = measure_store(kind, args)
            metrics.update({f"{kind}_{k}": v for k, v in results[kind].items()})
    for key, higher in (
        ("board_reports_per_s", True),
        ("p99_heartbeat_ms", False),
        ("errors", False),
        ("bare_rps", True),
        ("ratio_heartbeat_to_bare", True),
    ):
        metrics[key] = worst([r[key] for r in results.values()], higher_is_better=higher)
    targets = {"board_reports_per_s": target(metrics["board_reports_per_s"], at_least=TARGET_BOARD_REPORTS_PER_S)}
    emit(BENCH, metrics, targets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
