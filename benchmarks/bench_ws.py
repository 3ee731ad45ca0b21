"""The live feed under load: 1,000 clients on the default topics, then 1,000 on the old
default set (raw events included), compared; then 10,000 idle ones.

    python benchmarks/bench_ws.py [--clients 1000] [--measured 50] [--seconds 30]
                                  [--idle 10000] [--rate 1000] [--processes 2] [--compress 0]
                                  [--feeds new,old] [--rounds 1] [--no-baseline]

The server is the real service (`python -m cryptomon serve`) in its own
process, so the clients' CPU is not its CPU and its RSS is its alone. It
appends the events itself: `rate / 10` providers probed every 100 ms, on
loopback stand-ins answering 200 from a third process.

Two live phases, each on a fresh server under the same load: in `new` every client
connects to /ws/live and subscribes to nothing (today's default set: a log entry per
probe, the notices, status updates); in `old` every client connects with
`?topics=` the old default set, `events` included (an `event` beside each log entry),
as a script that wants the old feed back does. /ws/stats is checked for each client's
topics. Then, unless `--no-baseline`, a third server runs the same probes with no client,
so the comparison can say how much of the server's CPU is the fan-out. The comparison
prints, new against old with their ratio: events appended and messages delivered per
second, server CPU per delivered message (all its work, and the fan-out alone), server
CPU, and per appended event. `--rounds N` runs it all N times, alternating which feed
goes first, and prints the median of each ratio (a shared machine drifts).

Python clients that parse every message cost more CPU than the server spends
sending it, so 1,000 of them on a small machine measure their own backlog and
starve the server besides. So most of the 1,000 are drainers: a real
WebSocket handshake (a hand-written HTTP/1.1 Upgrade, the 101 and its
Sec-WebSocket-Accept checked), then every byte read and thrown away, the
process woken once 64 KiB wait (SO_RCVLOWAT), with nothing sent back but a
masked `{"type":"pong"}` every 20 s so the feed's heartbeat keeps them. They
keep up by construction, so the server's own counts (/ws/stats: drops,
disconnect reasons, queue depths) say whether any client that keeps up lost
anything. They run in `--processes` worker processes. `--measured` of the
clients (50 by default, in a process of their own) are aiohttp clients that
parse every message and time it.

Latency is from commit to receipt, on the measured clients: the receive wall
time minus the event's `recorded_at` (stamped as its batch's transaction
begins, so the commit itself counts too), each message matched to its event by
position; the commit times are read from /api/events once the window and the
server's figures are over (a client on the default topics gets no `event` to
read them from). Only messages received inside the measured window count.
A position missing is one a measured client that kept up had no message for:
on `old` any event, on `new` a probe or rate-limit change (each has a log entry).
A client closed by the server (1013 when its queue overflows) is not
reconnected; it counts as a drop. Messages delivered
are the server's count of messages written to the sockets in the window (every
client reads all it is sent, so sent is delivered); server CPU per 1,000 of
them is all its work in the window, probing and appending included. Also
printed: how long the server's event loop was runnable but waited for a CPU
(/proc/<pid>/schedstat) and the load average; on a shared machine they say how
much of the latency other processes caused. Then a fresh server with 3 quiet
providers takes `--idle` connections that never read, and its RSS before and
after gives the memory per idle connection.

`--compress 15` makes the clients offer permessage-deflate, as browsers and
the `websockets` package do. Drops are the server's count of clients closed
for queue overflow plus any positions a measured client never got.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import math
import multiprocessing as mp
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
import msgspec

# A loopback provider: answers every GET at once, keep-alive, without an HTTP framework so
# its CPU stays small next to the server's.
STANDIN = r"""
import asyncio, sys

BODY = b'{"gecko_says":"(V3) To the Moon!"}'
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    % len(BODY) + BODY
)

class Answer(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.buffer = b""

    def data_received(self, data):
        self.buffer += data
        count = self.buffer.count(b"\r\n\r\n")
        if count:
            self.buffer = self.buffer.rpartition(b"\r\n\r\n")[2]
            self.transport.write(RESPONSE * count)

async def main():
    loop = asyncio.get_running_loop()
    for port in sys.argv[1:]:
        await loop.create_server(Answer, "127.0.0.1", int(port), backlog=1024)
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""

CONNECT_AT_ONCE = 64  # handshakes in flight per client process
STANDIN_PORTS = 10  # the probe session allows 10 connections per host:port
LATENCY_GOAL_MS = 100.0
IDLE_GOAL_KIB = 20.0
RATE_KEPT = 0.95  # the server keeps up when it appends this share of the asked rate
PONG_EVERY = 20.0  # drainers' keep-alive; the feed drops clients silent for 2 x 30 s
BUSY_SHARE = 0.8  # a client process this busy may be timing its own backlog
# Drainers are woken once this much is waiting, not for every write: half their CPU, and the
# server's writes land in the kernel's buffer just the same.
DRAIN_LOWAT = 64 * 1024
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=60)
# What a client got without subscribing before raw events became opt-in: the old-defaults
# clients ask for these on connecting (?topics=), as a script wanting them back would.
OLD_DEFAULT_TOPICS = (
    "status", "providers", "alerts", "rate_limits", "events",
    "logs.connection", "logs.failure", "logs.collection", "logs.rate_limit",
)  # fmt: skip
# The events whose log entries a client on today's default topics gets, one or more each.
LOGGED_TYPES = frozenset({"ProbeRecorded", "RateLimitChanged"})


# ---- helpers ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def raise_fd_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit; returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_queue_wait(pid: int) -> float:
    """Seconds the process's main thread (the event loop) has spent runnable but waiting
    for a CPU, from /proc/<pid>/schedstat: what other processes took from it."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def percentile(ordered: Sequence[float], share: float) -> float:
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def mib(kib: float) -> str:
    return f"{kib / 1024:,.1f} MiB"


# ---- the client processes --------------------------------------------------------------


class Seen(msgspec.Struct):
    """What a client reads of each message; the rest is skipped unparsed."""

    type: str
    position: int = 0


class Window:
    def __init__(self) -> None:
        self.start = math.inf
        self.end = math.inf


class Listener:
    def __init__(self) -> None:
        self.ws: aiohttp.ClientWebSocketResponse[Literal[False]] | None = None
        self.error: str | None = None
        # The position and receive time of each message from an event, in the window: timed
        # once it is over, against the commit times the log gives (a client on the default
        # topics gets no `event` message to read them from).
        self.positions = array("q")
        self.received_at = array("d")
        self.received = 0
        self.closed_at: float | None = None
        self.close_code: int | None = None


_DECODER = msgspec.json.Decoder(Seen)
_PING = b'{"type":"ping"'
_PONG = '{"type":"pong"}'


async def _listen(client: Listener, window: Window) -> None:
    ws = client.ws
    assert ws is not None
    text = aiohttp.WSMsgType.TEXT
    while True:
        message = await ws.receive()
        now = time.time()
        if message.type is not text:
            break
        data: bytes = message.data
        if data.startswith(_PING):
            await ws.send_str(_PONG)
            continue
        if now < window.start or now >= window.end:
            continue
        client.received += 1
        seen = _DECODER.decode(data)
        if seen.position and seen.type != "status_update":
            client.positions.append(seen.position)
            client.received_at.append(now)
    client.closed_at = time.time()
    client.close_code = ws.close_code


class HandshakeError(Exception):
    pass


def masked_text_frame(payload: bytes) -> bytes:
    """A final text frame as a client must send it: masked (RFC 6455 section 5.3)."""
    assert len(payload) < 126
    mask = os.urandom(4)
    body = bytes(byte ^ mask[n % 4] for n, byte in enumerate(payload))
    return bytes((0x81, 0x80 | len(payload))) + mask + body


class Drainer(asyncio.Protocol):
    """A WebSocket client that reads every byte as it comes and looks at none of them."""

    def __init__(self, request: bytes, accept: bytes, window: Window) -> None:
        self.request = request
        self.accept = accept
        self.window = window
        self.transport: asyncio.Transport | None = None
        self.head = b""
        self.upgraded: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.in_window = 0  # bytes received inside the measured window
        self.closed_at: float | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if not self.upgraded.done():
            self.head += data
            head, found, data = self.head.partition(b"\r\n\r\n")
            if not found:
                if len(self.head) > 16384:
                    self._refuse("no end to the response head")
                return
            self.head = b""
            lines = head.split(b"\r\n")
            accept = b"sec-websocket-accept: " + self.accept
            if not lines[0].startswith(b"HTTP/1.1 101 "):
                self._refuse(lines[0].decode(errors="replace"))
                return
            if not any(line.lower() == accept.lower() for line in lines[1:]):
                self._refuse("101 without the right Sec-WebSocket-Accept")
                return
            self.upgraded.set_result(None)
            # Only now: with it set before, the 101 itself waited for 64 KiB of the feed,
            # so connecting took as long as the feed took to send that much.
            assert self.transport is not None
            sock = self.transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, DRAIN_LOWAT)
        now = time.time()
        if self.window.start <= now < self.window.end:
            self.in_window += len(data)

    def _refuse(self, why: str) -> None:
        self.upgraded.set_exception(HandshakeError(why[:100]))
        assert self.transport is not None
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed_at = time.time()
        if not self.upgraded.done():
            self.upgraded.set_exception(ConnectionError("closed during the handshake"))

    def pong(self) -> None:
        if self.closed_at is None and self.transport is not None:
            self.transport.write(masked_text_frame(_PONG.encode()))


async def open_drainer(url: str, compress: int, window: Window) -> Drainer:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    target = f"{parts.path}?{parts.query}" if parts.query else parts.path
    key = base64.b64encode(os.urandom(16))
    accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
    extension = (
        f"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits={compress}\r\n"
        if compress
        else ""
    )
    request = (
        f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key.decode()}\r\n"
        f"Sec-WebSocket-Version: 13\r\n{extension}\r\n"
    ).encode()
    loop = asyncio.get_running_loop()
    transport, drainer = await loop.create_connection(
        lambda: Drainer(request, accept, window), host, port
    )
    try:
        async with asyncio.timeout(60):
            await drainer.upgraded
    except BaseException:
        transport.close()
        raise
    return drainer


async def _keep_alive(drainers: list[Drainer]) -> None:
    while True:
        await asyncio.sleep(PONG_EVERY)
        for drainer in drainers:
            drainer.pong()


async def _drain_worker(conn: Connection, url: str, count: int, compress: int) -> None:
    window = Window()
    gate = asyncio.Semaphore(CONNECT_AT_ONCE)
    errors: Counter[str] = Counter()

    async def connect() -> Drainer | None:
        async with gate:
            try:
                return await open_drainer(url, compress, window)
            except (HandshakeError, OSError, TimeoutError) as exc:
                errors[f"{type(exc).__name__}: {exc}"[:120]] += 1
                return None

    drainers = [d for d in await asyncio.gather(*(connect() for _ in range(count))) if d]
    keep_alive = asyncio.create_task(_keep_alive(drainers))
    try:
        conn.send(("connected", len(drainers), dict(errors.most_common(3))))
        _, window.start, window.end = await _recv(conn)
        await asyncio.sleep(max(0.0, window.start - time.time()))
        cpu = own_cpu()
        await asyncio.sleep(max(0.0, window.end - time.time()))
        cpu = own_cpu() - cpu
        await _recv(conn)  # "report": the server's figures are taken
        closed = [d.closed_at - window.start for d in drainers if d.closed_at is not None]
        in_window = [d.in_window for d in drainers if d.closed_at is None]
        conn.send(
            {
                "kept": len(drainers) - len(closed),
                "bytes": sum(d.in_window for d in drainers),
                "bytes_min": min(in_window, default=0),
                "bytes_max": max(in_window, default=0),
                "closed_at": closed,
                "cpu": cpu,
            }
        )
        await _recv(conn)  # "close": the server's counts are taken with everyone still on
    finally:
        keep_alive.cancel()
        for drainer in drainers:
            if drainer.transport is not None:
                drainer.transport.close()


async def _recv(conn: Connection, within: float = 600.0) -> Any:
    loop = asyncio.get_running_loop()
    if not await loop.run_in_executor(None, conn.poll, within):
        raise TimeoutError("no word from the other process")
    return conn.recv()


async def _commits(
    session: aiohttp.ClientSession, url: str, first: int, last: int
) -> dict[int, tuple[float, str]]:
    """Each position's commit time (`recorded_at`, stamped as its batch's transaction
    begins) and event type, from /api/events."""
    parts = urlsplit(url)
    events_url = f"{parts.scheme}://{parts.netloc}/api/events"
    found: dict[int, tuple[float, str]] = {}
    after = first - 1
    while after < last:
        query = {"after": str(after), "limit": "1000"}
        async with session.get(events_url, params=query, timeout=HTTP_TIMEOUT) as response:
            page = await response.json()
        for event in page["events"]:
            at = datetime.fromisoformat(event["recorded_at"]).timestamp()
            found[event["position"]] = (at, event["type"])
        if not page["events"]:
            break
        after = page["events"][-1]["position"]
    return found


def _timed(
    client: Listener, commits: dict[int, tuple[float, str]], every_event: bool
) -> tuple[array[float], int, int]:
    """A client's latencies, its messages without a known commit, and the positions it
    should have had a message for (every one on `events`, else those its default topics
    carry) but had none, between the first and last it had in the window."""
    latencies = array("d")
    unmatched = 0
    for position, at in zip(client.positions, client.received_at, strict=True):
        commit = commits.get(position)
        if commit is None:
            unmatched += 1
        else:
            latencies.append((at - commit[0]) * 1000.0)
    if not client.positions:
        return latencies, unmatched, 0
    had = set(client.positions)
    span = range(min(had), max(had) + 1)
    missing = sum(
        1
        for position in span
        if position not in had
        and (every_event or commits.get(position, (0.0, ""))[1] in LOGGED_TYPES)
    )
    return latencies, unmatched, missing


async def _worker(
    conn: Connection, url: str, count: int, mode: str, compress: int, every_event: bool
) -> None:
    window = Window()
    clients = [Listener() for _ in range(count)]
    gate = asyncio.Semaphore(CONNECT_AT_ONCE)
    tasks: list[asyncio.Task[None]] = []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def connect(client: Listener) -> None:
            async with gate:
                try:
                    client.ws = await session.ws_connect(url, compress=compress, decode_text=False)
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    client.error = f"{type(exc).__name__}: {exc}"[:120]
                    return
            if mode == "measured":
                tasks.append(asyncio.create_task(_listen(client, window)))

        await asyncio.gather(*(connect(c) for c in clients))
        errors = Counter(c.error for c in clients if c.error is not None)
        conn.send(("connected", count - sum(errors.values()), dict(errors.most_common(3))))
        if mode == "idle":
            await _recv(conn)  # "close"
            await asyncio.gather(
                *(c.ws.close() for c in clients if c.ws is not None), return_exceptions=True
            )
            conn.send(("closed",))
            return
        _, window.start, window.end = await _recv(conn)
        await asyncio.sleep(max(0.0, window.start - time.time()))
        cpu = own_cpu()
        await asyncio.sleep(max(0.0, window.end - time.time()))
        cpu = own_cpu() - cpu
        await _recv(conn)  # "report": the server's figures are taken, the log may be read
        connected = [c for c in clients if c.ws is not None]
        kept = [c for c in connected if c.closed_at is None]
        lost = [c for c in connected if c.closed_at is not None]
        first = min((c.positions[0] for c in connected if c.positions), default=1)
        last = max((c.positions[-1] for c in connected if c.positions), default=0)
        commits = await _commits(session, url, first, last)
        kept_latencies = array("d")
        lost_latencies = array("d")
        unmatched = missing = 0
        for c in connected:
            latencies, c_unmatched, c_missing = _timed(c, commits, every_event)
            (kept_latencies if c.closed_at is None else lost_latencies).extend(latencies)
            unmatched += c_unmatched
            missing += c_missing if c.closed_at is None else 0
        conn.send(
            {
                "kept": len(kept),
                "kept_latencies": kept_latencies.tobytes(),
                "lost_latencies": lost_latencies.tobytes(),
                "received": sum(c.received for c in connected),
                "unmatched": unmatched,
                "kept_gaps": missing,
                "close_codes": Counter(str(c.close_code) for c in lost),
                "closed_at": [c.closed_at - window.start for c in lost if c.closed_at],
                "cpu": cpu,
            }
        )
        await _recv(conn)  # "close": the server's counts are taken with everyone still on
        for task in tasks:
            task.cancel()


def client_worker(
    conn: Connection, url: str, count: int, mode: str, compress: int, every_event: bool
) -> None:
    raise_fd_limit()
    if mode == "drain":
        asyncio.run(_drain_worker(conn, url, count, compress))
    else:
        asyncio.run(_worker(conn, url, count, mode, compress, every_event))


# ---- the server ------------------------------------------------------------------------


def provider_block(name: str, port: int, interval: str) -> str:
    return (
        f'[[providers]]\nname = "{name}"\ncategory = "market_data"\n'
        f'base_url = "http://127.0.0.1:{port}"\nhealth_path = "/ping"\n'
        f'interval = "{interval}"\ntimeout = "5s"\ndegraded_latency = "2s"\n'
    )


def start_server(
    tmp: Path, name: str, config: str, children: list[subprocess.Popen[Any]]
) -> tuple[subprocess.Popen[Any], int]:
    """`python -m cryptomon serve` on a free port; returns once it says it is listening."""
    config_path = tmp / f"{name}.toml"
    # Every benchmark client comes from 127.0.0.1: lift the per-address limits.
    limits = "[server]\nwebsocket_connections_per_address = 100000\nrequest_burst = 100000\n"
    config_path.write_text(limits + config)
    output = tmp / f"{name}.log"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "CRYPTOMON_API_TOKEN"}
    with output.open("w") as sink:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "cryptomon", "serve", "--config", str(config_path)),
                *("--db", str(tmp / f"{name}.db"), "--port", str(port)),
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
        )
    children.append(proc)
    deadline = time.monotonic() + 60
    while "listening" not in output.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the server did not start:\n{output.read_text()[-2000:]}")
        time.sleep(0.1)
    return proc, port


async def get_json(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=60)) as response:
        return await response.json()


class Workers:
    """Client processes, each driving a share of the connections."""

    def __init__(
        self,
        url: str,
        total: int,
        processes: int,
        mode: str,
        compress: int = 0,
        every_event: bool = False,
    ) -> None:
        context = mp.get_context("spawn")
        self.conns: list[Connection] = []
        self.procs: list[Any] = []
        shares = [total // processes + (n < total % processes) for n in range(processes)]
        for share in shares:
            ours, theirs = context.Pipe()
            proc = context.Process(
                target=client_worker,
                args=(theirs, url, share, mode, compress, every_event),
                daemon=True,
            )
            proc.start()
            self.conns.append(ours)
            self.procs.append(proc)

    async def gather(self) -> list[Any]:
        return list(await asyncio.gather(*(_recv(c) for c in self.conns)))

    def send(self, message: tuple[Any, ...]) -> None:
        for conn in self.conns:
            conn.send(message)

    def stop(self) -> None:
        for proc in self.procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
                proc.join()


# ---- the phases ------------------------------------------------------------------------

# The feeds compared: what each client asks for on connecting, as the output names it.
FEEDS = {
    "new": ("new defaults (clients that subscribe to nothing)", ""),
    "old": (
        "old defaults (clients on what the default set was: " + ", ".join(OLD_DEFAULT_TOPICS) + ")",
        "?topics=" + ",".join(OLD_DEFAULT_TOPICS),
    ),
}


def live_config(args: argparse.Namespace, standin_ports: list[int]) -> tuple[str, int, int]:
    """`rate / 10` providers probed every 100 ms: the config, the providers, the interval."""
    providers = max(1, math.ceil(args.rate / 10))
    interval_ms = max(1, round(providers * 1000 / args.rate))
    config = "\n".join(
        provider_block(f"p{n:04d}", standin_ports[n % len(standin_ports)], f"{interval_ms}ms")
        for n in range(providers)
    )
    return config, providers, interval_ms


async def live_phase(
    args: argparse.Namespace,
    tmp: Path,
    standin_ports: list[int],
    children: list[subprocess.Popen[Any]],
    workers: list[Workers],
    feed: str,
    name: str,
) -> dict[str, Any]:
    """One feed under load, on a fresh server and database called `name`; its figures."""
    label, query = FEEDS[feed]
    config, providers, interval_ms = live_config(args, standin_ports)
    server, port = await asyncio.to_thread(start_server, tmp, name, config, children)
    base = f"http://127.0.0.1:{port}"
    url = f"{base}/ws/live{query}"
    measured_count = max(0, min(args.measured, args.clients))
    shares = {"measured": (measured_count, 1), "drain": (args.clients - measured_count, 0)}
    groups = {
        role: Workers(url, count, processes or args.processes, role, args.compress, feed == "old")
        for role, (count, processes) in shares.items()
        if count
    }
    workers.extend(groups.values())
    connecting = time.monotonic()
    replies = await asyncio.gather(*(g.gather() for g in groups.values()))
    ready = dict(zip(groups, replies, strict=True))
    connect_seconds = time.monotonic() - connecting
    measured_connected = sum(r[1] for r in ready.get("measured", []))
    drainers_connected = sum(r[1] for r in ready.get("drain", []))
    connected = measured_connected + drainers_connected
    errors: Counter[str] = Counter()
    for group_replies in ready.values():
        for r in group_replies:
            errors.update(r[2])
    async with aiohttp.ClientSession() as http:
        # What the server says each client gets: the feed's topics, or the run is no comparison.
        listed = await get_json(http, f"{base}/ws/stats")
        topics = Counter(",".join(c["topics"]) for c in listed["connections"])
        start = time.time() + 0.5
        end = start + args.seconds
        for group in groups.values():
            group.send(("go", start, end))
        await asyncio.sleep(max(0.0, start - time.time()))
        position = (await get_json(http, f"{base}/info"))["event_position"]
        scheduler = await get_json(http, f"{base}/api/scheduler/status")
        before = await get_json(http, f"{base}/ws/stats")
        cpu = process_cpu(server.pid)
        waited = run_queue_wait(server.pid)
        load_start = os.getloadavg()[0]
        span = time.monotonic()
        rss_start = rss_kib(server.pid)
        rss_max = rss_start
        while time.time() < end:
            await asyncio.sleep(min(1.0, max(0.0, end - time.time())))
            rss_max = max(rss_max, rss_kib(server.pid))
        after = await get_json(http, f"{base}/ws/stats")
        cpu = process_cpu(server.pid) - cpu
        waited = run_queue_wait(server.pid) - waited
        load_end = os.getloadavg()[0]
        span = time.monotonic() - span
        rss_end = rss_kib(server.pid)
        appended = (await get_json(http, f"{base}/info"))["event_position"] - position
        scheduled = await get_json(http, f"{base}/api/scheduler/status")
        for group in groups.values():
            group.send(("report",))
        results = {role: await group.gather() for role, group in groups.items()}
        for group in groups.values():
            group.send(("close",))
    for group in groups.values():
        group.stop()
    stop(server)

    measured = results.get("measured", [])
    drained = results.get("drain", [])
    kept_latencies = array("d")
    all_latencies = array("d")
    closes: Counter[str] = Counter()
    closed_at: list[float] = []
    for r in measured:
        kept = array("d")
        kept.frombytes(r["kept_latencies"])
        kept_latencies.extend(kept)
        all_latencies.extend(kept)
        lost = array("d")
        lost.frombytes(r["lost_latencies"])
        all_latencies.extend(lost)
        closes.update(r["close_codes"])
        closed_at.extend(r["closed_at"])
    for r in drained:
        closed_at.extend(r["closed_at"])
    measured_kept = sum(r["kept"] for r in measured)
    drainers_kept = sum(r["kept"] for r in drained)
    kept_count = measured_kept + drainers_kept
    received = sum(r["received"] for r in measured)
    gaps = sum(r["kept_gaps"] for r in measured)
    unmatched = sum(r["unmatched"] for r in measured)
    measured_cpu = sum(r["cpu"] for r in measured)
    drainer_cpu = sum(r["cpu"] for r in drained)
    drained_bytes = sum(r["bytes"] for r in drained)
    dropped = after["dropped"]
    reasons = after["disconnect_reasons"]
    sent = after["messages_sent"] - before["messages_sent"]
    depths = [c["queue_depth"] for c in after["connections"]]
    seconds = args.seconds

    print(
        f"live feed, {label}: {args.clients:,} clients ({connected:,} connected in "
        f"{connect_seconds:.1f}s: {drainers_connected:,} drainers in "
        f"{len(ready.get('drain', []))} processes, {measured_connected:,} measured in "
        f"{len(ready.get('measured', []))}), {seconds:g}s window"
        + (f", permessage-deflate (wbits {args.compress}) offered" if args.compress else "")
    )
    if errors:
        print(f"  connection failures: {dict(errors)}")
    print(
        "  topics per client (/ws/stats): "
        + "; ".join(f"{count:,} on {names or 'nothing'}" for names, count in topics.items())
    )
    rate = appended / seconds
    print(
        f"events appended: {rate:,.0f}/s of {args.rate:,} asked "
        f"({providers} providers every {interval_ms} ms; {appended:,} in the window)"
    )
    planned, overlapping, late = (
        scheduled[key] - scheduler[key]
        for key in ("probes_planned", "skipped_overlapping", "skipped_late")
    )
    print(
        f"  probes planned {planned:,}; skipped as overlapping their previous run "
        f"{overlapping:,}, as late {late:,}"
    )
    rate_kept = rate >= RATE_KEPT * args.rate
    print(
        f"  the server {'kept up with' if rate_kept else 'did NOT keep up with'} "
        f"{args.rate:,} events/s with {connected:,} connections "
        f"({rate / args.rate:.0%} of the asked rate appended)"
    )
    # A `new_log_entry` for each successful probe, and an `event` too on the old defaults.
    per_event = 2 if feed == "old" else 1
    asked = appended * per_event * connected
    share = f" ({sent / asked:.1%} of the ~{asked / seconds:,.0f}/s asked)" if asked else ""
    print(
        f"delivered: {sent / span:,.0f} messages/s to all clients ({sent:,} written by the "
        f"server in {span:.1f}s){share}"
    )
    if measured_kept:
        print(
            f"  each measured client received {received / seconds / measured_connected:,.0f} "
            f"messages/s ({received:,} in all)"
        )
    if drained:
        live_bytes = [r["bytes_min"] for r in drained if r["kept"]]
        print(
            f"  drainers read {drained_bytes / seconds / 2**20:,.1f} MiB/s; each read "
            f"{min(live_bytes, default=0) / 2**20:,.1f} to "
            f"{max((r['bytes_max'] for r in drained), default=0) / 2**20:,.1f} MiB "
            f"in the window"
        )
    per_thousand = f"{cpu / sent * 1000:.4f} s" if sent else "n/a"
    print(
        f"server CPU: {cpu:.1f}s in {span:.1f}s ({cpu / span:.0%} of one core), "
        f"{per_thousand} per 1,000 delivered messages (all its work: probes and appends too)"
    )
    cores = os.cpu_count()
    print(
        f"  its event loop waited {waited:.1f}s of {span:.1f}s for a CPU (runnable, not "
        f"running); load average {load_start:.1f} at the window's start, {load_end:.1f} at "
        f"its end, on {cores} cores"
    )
    if appended:
        print(f"  server CPU per appended event: {cpu / appended * 1000:.2f} ms (all its work)")
    measured_share = measured_cpu / seconds
    drainer_share = drainer_cpu / seconds / max(1, len(drained))
    print(
        f"client CPU: drainers {drainer_cpu:.1f}s ({drainer_share:.0%} of a core per process), "
        f"measured clients {measured_cpu:.1f}s ({measured_share:.0%} of a core), "
        f"in {seconds:g}s on {cores} cores"
    )
    if measured_share > BUSY_SHARE:
        print(
            "  the measured clients' process was busy: their latency may include their own backlog"
        )
    for label, values in (
        ("measured clients", all_latencies),
        ("measured clients that kept up", kept_latencies),
    ):
        if values:
            ordered = sorted(values)
            print(
                f"latency commit to receipt, {label}: p50 {percentile(ordered, 0.50):.1f} ms, "
                f"p99 {percentile(ordered, 0.99):.1f} ms, max {ordered[-1]:.1f} ms "
                f"({len(ordered):,} messages)"
            )
        else:
            print(f"latency commit to receipt, {label}: no messages in the window")
    if unmatched:
        print(f"  {unmatched:,} notices without their event (not timed)")
    lost = connected - kept_count
    when = ""
    if closed_at:
        closed_at.sort()
        when = (
            f"; closed {closed_at[0]:+.1f}s to {closed_at[-1]:+.1f}s from the window's start, "
            f"median {percentile(closed_at, 0.5):+.1f}s"
        )
    print(
        f"drops: {dropped:,} clients closed for queue overflow (server), "
        f"disconnect reasons {reasons or 'none'}"
    )
    print(
        f"  server connections at the end: {after['active_connections']:,}; queue depth max "
        f"{max(depths, default=0):,}, {sum(1 for d in depths if d):,} with frames waiting"
    )
    print(
        f"  clients still connected at the end: {kept_count:,} of {connected:,} "
        f"({drainers_kept:,} drainers, {measured_kept:,} measured){when}"
    )
    print(f"  close codes seen by measured clients: {dict(closes) or 'none'}")
    print(
        f"  positions missing among the measured clients that kept up (an event, or on the "
        f"default topics a probe's or rate limit's log entry, never received): {gaps:,}"
    )
    print(
        f"server RSS: {mib(rss_start)} at the window's start, {mib(rss_max)} max, "
        f"{mib(rss_end)} at its end"
    )
    p99 = percentile(sorted(kept_latencies), 0.99) if kept_latencies else math.inf
    met = (
        p99 < LATENCY_GOAL_MS
        and dropped == 0
        and not reasons
        and lost == 0
        and gaps == 0
        and connected == args.clients
        and rate_kept
    )
    detail = (
        f"p99 {p99:.1f} ms at {rate:,.0f} events/s, {lost:,} of {connected:,} clients "
        f"dropped, {gaps:,} positions missing"
    )
    print(
        f"goal p99 < {LATENCY_GOAL_MS:g} ms at {args.rate:,} events/s with no drops among "
        f"clients that keep up: {'met' if met else 'NOT met'} ({detail})"
    )
    return {
        "sent": sent,
        "cpu": cpu,
        "span": span,
        "appended": appended,
        "kept_up": rate_kept,
    }


async def quiet_phase(
    args: argparse.Namespace,
    tmp: Path,
    standin_ports: list[int],
    children: list[subprocess.Popen[Any]],
    name: str,
) -> dict[str, Any]:
    """The same providers and probes with no client: the server CPU that is not fan-out."""
    config, _, _ = live_config(args, standin_ports)
    server, port = await asyncio.to_thread(start_server, tmp, name, config, children)
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http:
        await asyncio.sleep(0.5)  # as long as the live phases wait after connecting
        position = (await get_json(http, f"{base}/info"))["event_position"]
        cpu = process_cpu(server.pid)
        span = time.monotonic()
        await asyncio.sleep(args.seconds)
        cpu = process_cpu(server.pid) - cpu
        span = time.monotonic() - span
        appended = (await get_json(http, f"{base}/info"))["event_position"] - position
    stop(server)
    print(
        f"no clients, the same probes: {appended / span:,.0f} events/s appended, server CPU "
        f"{cpu:.1f}s in {span:.1f}s ({cpu / span:.0%} of one core)"
    )
    return {"cpu": cpu, "span": span, "appended": appended}


def compare(
    new: dict[str, Any], old: dict[str, Any], quiet: dict[str, Any] | None
) -> dict[str, float]:
    """The new defaults beside the old, from the phases of one round; the ratios by line."""
    # What probing and appending cost per event with nobody to send to.
    alone = quiet["cpu"] / quiet["appended"] if quiet is not None and quiet["appended"] else 0.0

    def figures(phase: dict[str, Any]) -> dict[str, float]:
        sent, cpu = phase["sent"], phase["cpu"]
        return {
            "appended": phase["appended"] / phase["span"],
            "rate": sent / phase["span"],
            "core": cpu / phase["span"] * 100,
            "per_message": cpu / sent * 1e6 if sent else math.inf,
            "fan_out": (cpu - phase["appended"] * alone) / sent * 1e6 if sent else math.inf,
            "fan_out_core": (cpu - phase["appended"] * alone) / phase["span"] * 100,
            "per_event": cpu / phase["appended"] * 1e3 if phase["appended"] else math.inf,
        }

    a, b = figures(new), figures(old)
    ratios: dict[str, float] = {}

    def line(what: str, key: str, unit: str, digits: int = 0) -> None:
        ratios[what] = a[key] / b[key] if b[key] else math.nan
        print(
            f"  {what}: {a[key]:,.{digits}f}{unit} / {b[key]:,.{digits}f}{unit} "
            f"= {ratios[what]:.2f}"
        )

    print("new defaults against old defaults (new / old = ratio):")
    if not (new["kept_up"] and old["kept_up"]):
        print(
            "  (the server did not append the asked rate in every phase: the phases' loads "
            "differ, so these compare unlike work; lower --rate)"
        )
    line("events appended/s", "appended", "")
    line("delivered messages/s", "rate", "")
    line("server CPU per delivered message (all its work)", "per_message", " µs", 2)
    if quiet is not None:
        print(
            f"  (the fan-out: less {alone * 1e3:.2f} ms per appended event, what probing "
            "and appending cost with no client)"
        )
        line(
            "server CPU per delivered message, the fan-out",
            "fan_out",
            " µs",
            2,
        )
    line("server CPU", "core", "% of a core")
    if quiet is not None:
        line("server CPU on the fan-out", "fan_out_core", "% of a core")
    line("server CPU per appended event (all its work)", "per_event", " ms", 2)
    return ratios


async def idle_phase(
    args: argparse.Namespace,
    tmp: Path,
    standin_ports: list[int],
    children: list[subprocess.Popen[Any]],
    workers: list[Workers],
    idle: int,
) -> bool:
    config = "\n".join(provider_block(f"q{n}", standin_ports[0], "30s") for n in range(3))
    server, port = await asyncio.to_thread(start_server, tmp, "idle", config, children)
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http:
        # Warm up what the first connections allocate once, then let it settle.
        warm = [await http.ws_connect(f"{base}/ws/live", compress=args.compress) for _ in range(20)]
        await get_json(http, f"{base}/ws/stats")
        for ws in warm:
            await ws.close()
        await asyncio.sleep(1.0)
        rss_before = rss_kib(server.pid)
        clients = Workers(f"{base}/ws/live", idle, args.processes, "idle", args.compress)
        workers.append(clients)
        connecting = time.monotonic()
        ready = await clients.gather()
        connect_seconds = time.monotonic() - connecting
        await asyncio.sleep(3.0)
        rss_after = rss_kib(server.pid)
        stats = await get_json(http, f"{base}/ws/stats")
        clients.send(("close",))
        await clients.gather()
    clients.stop()
    stop(server)
    connected = sum(r[1] for r in ready)
    errors: Counter[str] = Counter()
    for r in ready:
        errors.update(r[2])
    active = stats["active_connections"]
    per = (rss_after - rss_before) / active if active else math.inf
    print(
        f"idle: {connected:,} of {idle:,} connections in {connect_seconds:.1f}s "
        f"({active:,} active on the server)"
        + (f", permessage-deflate (wbits {args.compress}) offered" if args.compress else "")
    )
    if errors:
        print(f"  connection failures: {dict(errors)}")
    print(
        f"server RSS: {mib(rss_before)} before, {mib(rss_after)} after: "
        f"{per:.1f} KiB per idle connection"
    )
    met = per < IDLE_GOAL_KIB and active == idle
    print(f"goal < {IDLE_GOAL_KIB:g} KiB per idle connection: {'met' if met else 'NOT met'}")
    return met


async def run(
    args: argparse.Namespace,
    idle: int,
    standin_ports: list[int],
    children: list[subprocess.Popen[Any]],
) -> None:
    workers: list[Workers] = []
    try:
        with tempfile.TemporaryDirectory() as directory:
            tmp = Path(directory)
            feeds = args.feeds.split(",") if args.clients else []
            rounds: list[dict[str, float]] = []
            for n in range(args.rounds if feeds else 0):
                if args.rounds > 1:
                    print(f"---- round {n + 1} of {args.rounds}")
                # Alternated, so neither feed always runs first on a machine that drifts.
                order = feeds if n % 2 == 0 else feeds[::-1]
                figures = {
                    feed: await live_phase(
                        args, tmp, standin_ports, children, workers, feed, f"live-{feed}-{n}"
                    )
                    for feed in order
                }
                quiet = None
                if args.baseline:
                    quiet = await quiet_phase(args, tmp, standin_ports, children, f"quiet-{n}")
                if {"new", "old"} <= figures.keys():
                    rounds.append(compare(figures["new"], figures["old"], quiet))
            if len(rounds) > 1:
                print(f"median of the {len(rounds)} rounds' ratios, new / old:")
                for what in rounds[0]:
                    print(f"  {what}: {statistics.median(r[what] for r in rounds):.2f}")
            if idle:
                await idle_phase(args, tmp, standin_ports, children, workers, idle)
    finally:
        for group in workers:
            for proc in group.procs:
                if proc.is_alive():
                    proc.terminate()
                    proc.join()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=1000, help="live clients (default 1000)")
    parser.add_argument(
        "--measured", type=int, default=50, help="of the clients, those that parse and time (50)"
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="measured window (30)")
    parser.add_argument("--idle", type=int, default=10_000, help="idle connections (10000)")
    parser.add_argument("--rate", type=int, default=1000, help="events per second (1000)")
    parser.add_argument(
        "--feeds",
        default="new,old",
        choices=("new,old", "old,new", "new", "old"),
        help="the live phases, in order: clients on today's default topics (new) and on the"
        " old default set, raw events included (old); both (the default) compares them",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="the live phases this many times, in alternating order, with the median ratios (1)",
    )
    parser.add_argument(
        "--baseline",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run the same probes with no client, to tell the fan-out's CPU (on)",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=2,
        help="processes for the drainers and the idle connections (2)",
    )
    parser.add_argument(
        "--compress",
        type=int,
        default=0,
        metavar="WBITS",
        help="offer permessage-deflate as browsers do (15); default 0: no compression",
    )
    args = parser.parse_args()
    limit = raise_fd_limit()
    idle = args.idle
    # The server holds one descriptor per connection plus its own; keep a margin.
    if idle > limit - 512:
        idle = max(0, limit - 512)
        print(f"RLIMIT_NOFILE hard limit is {limit:,}: idle connections scaled down to {idle:,}")
    children: list[subprocess.Popen[Any]] = []
    try:
        standin_ports = [free_port() for _ in range(STANDIN_PORTS)]
        standin = subprocess.Popen(
            [sys.executable, "-c", STANDIN, *map(str, standin_ports)],
            stdout=subprocess.PIPE,
            text=True,
        )
        children.append(standin)
        assert standin.stdout is not None
        standin.stdout.readline()
        asyncio.run(run(args, idle, standin_ports, children))
    finally:
        for proc in reversed(children):
            stop(proc)


if __name__ == "__main__":
    main()
