"""``focalcodec serve``: many live streams through one engine, over WebSockets (aiohttp).

Map:

- :class:`EngineWorker`: one thread owns the :class:`~focalcodec.streaming.StreamEngine`.
  It applies the commands the event loop queues (open, push, flush, close), then runs one
  engine step over every stream with a complete chunk (continuous batching: streams join and
  leave between steps) and hands the outputs back to the event loop.
- :class:`StreamSession`: one ``/v1/stream`` client (protocol in :mod:`.protocol` and
  docs/serve.md). It reads the client's messages, checks them and queues them for the
  engine; input waits in the engine for at most :attr:`Limits.backlog_seconds` before the
  server stops reading from that client (TCP back-pressure). Its output goes through a
  bounded queue to a writer task: a client that does not read fast enough fills the queue
  and is dropped, while the engine and the other clients go on.
- :class:`LinkPeer`: ``/v1/link/ROOM`` relays binary frames between the two peers of a room
  (the page's "link" mode: only tokens cross the server).
- :func:`create_app`: the aiohttp application (page, ``/health``, the two WebSockets);
  :func:`run_server` serves it until interrupted; :class:`BackgroundServer` runs it in a
  thread (tests, notebooks, benchmarks).

Security: the server binds 127.0.0.1 unless told otherwise. Browsers may connect from the
page it serves itself (same origin) and from ``allowed_origins``; other origins get 403.
On a loopback address the Host header must name the loopback too (no DNS rebinding).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import math
import queue
import re
import socket
import threading
import time
import traceback
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import torch
from aiohttp import WSCloseCode, WSMsgType, web

from ..errors import InputError
from ..streaming import EngineFull, StreamEngine, StreamOutput
from .protocol import (
    CLOSE_INTERNAL,
    CLOSE_INVALID,
    CLOSE_OUT_OF_ORDER,
    CLOSE_POLICY,
    CLOSE_TOO_BIG,
    CLOSE_TRY_LATER,
    MAX_MESSAGE_BYTES,
    MODES,
    ProtocolError,
    audio_from_bytes,
    audio_to_bytes,
    error_message,
    parse_control,
    tokens_from_bytes,
)

__all__ = [
    "BackgroundServer",
    "EngineWorker",
    "Limits",
    "create_app",
    "load_speaker_sets",
    "run_server",
    "speaker_set_files",
]

log = logging.getLogger("focalcodec.serve")

STATIC_FILES = {"index.html": "text/html", "app.js": "text/javascript", "worklet.js": "text/javascript"}
SERVER_KEY: web.AppKey[Server] = web.AppKey("focalcodec_server")
ROOM_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
LOOPBACK_NAMES = ("localhost", "localhost.")
# Flushes a client may have unanswered before the server stops reading it.
MAX_PENDING_FLUSHES = 8
# A link peer may relay frames at most this many times faster than real time, on average.
LINK_SPEEDUP = 20


@dataclass
class Limits:
    """Per-client bounds. ``queue_chunks``: output chunks waiting for a client before it is
    dropped as too slow; ``backlog_seconds``: input waiting in the engine before the server
    stops reading from the client; ``start_timeout``: seconds to send ``start``;
    ``close_timeout``: seconds a closing handshake may take before the socket is cut;
    ``send_buffer_bytes``: the kernel's send buffer per client (Linux would otherwise let it
    grow to megabytes, tens of seconds of audio, before a slow reader shows)."""

    queue_chunks: int = 64
    backlog_seconds: float = 5.0
    start_timeout: float = 10.0
    close_timeout: float = 2.0
    heartbeat: float = 30.0
    link_message_bytes: int = 1024
    send_buffer_bytes: int = 256 * 1024


class EngineWorker:
    """Runs the engine in one thread; every engine call happens there (it is not thread-safe).

    The event loop calls :meth:`open` (awaitable, returns the stream id), :meth:`send`
    (``"push"``, ``"flush"``, ``"close"``; fire and forget). Outputs of each step go to
    ``on_outputs({sid: (messages, output)})`` on the event loop; a command that fails goes to
    ``on_error(sid, exc)``.
    """

    def __init__(self, engine: Any, loop: asyncio.AbstractEventLoop, on_outputs, on_error) -> None:
        self.engine = engine
        self.loop = loop
        self.on_outputs, self.on_error = on_outputs, on_error
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="focalcodec-engine", daemon=True)
        self.step_ms: deque[float] = deque(maxlen=500)
        self.batch_sizes: deque[int] = deque(maxlen=500)
        self.steps = 0
        self.failed: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._commands.put(None)
        self._thread.join(timeout=30)

    def open(self, mode: str, matching_set: Any = None) -> asyncio.Future:
        future = self.loop.create_future()
        self._commands.put(("open", future, mode, matching_set))
        return future

    def send(self, op: str, sid: int, data: Any = None) -> None:
        self._commands.put((op, sid, data))

    # -- worker thread ---------------------------------------------------------------------
    def _run(self) -> None:
        torch.set_grad_enabled(False)
        while True:
            commands = []
            if not self.engine.ready():
                commands.append(self._commands.get())
            while True:
                try:
                    commands.append(self._commands.get_nowait())
                except queue.Empty:
                    break
            for cmd in commands:
                if cmd is None:
                    return
                self._apply(cmd)
            if self.engine.ready():
                self._step()

    def _apply(self, cmd: tuple) -> None:
        if cmd[0] == "open":
            _, future, mode, matching_set = cmd
            try:
                sid = self.engine.open(mode=mode, matching_set=matching_set)
            except Exception as exc:  # noqa: BLE001 - handed to the client's session
                self.loop.call_soon_threadsafe(self._resolve, future, None, exc)
            else:
                self.loop.call_soon_threadsafe(self._resolve, future, sid, None)
            return
        op, sid, data = cmd
        try:
            if op == "push":
                self.engine.push(sid, data)
            elif op == "flush":
                self.engine.flush(sid)
            elif op == "close":
                self.engine.close(sid)
        except Exception as exc:  # noqa: BLE001 - handed to the client's session
            if op != "close":
                self.loop.call_soon_threadsafe(self.on_error, sid, exc)

    def _resolve(self, future: asyncio.Future, sid: int | None, exc: BaseException | None) -> None:
        """On the event loop: the result of an ``open``. A client gone meanwhile gets its
        stream closed again."""
        if future.cancelled():
            if sid is not None:
                self.send("close", sid)
        elif exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(sid)

    def _step(self) -> None:
        t0 = time.perf_counter()
        try:
            outputs = self.engine.step()
        except Exception as exc:  # noqa: BLE001 - a failing step ends every stream in it
            log.error("engine step failed:\n%s", traceback.format_exc())
            self.failed = exc
            self.loop.call_soon_threadsafe(self.on_error, None, exc)
            return
        self.step_ms.append(1000.0 * (time.perf_counter() - t0))
        self.batch_sizes.append(len(outputs))
        self.steps += 1
        batch = {sid: (_messages(out), out) for sid, out in outputs.items()}
        self.loop.call_soon_threadsafe(self.on_outputs, batch)


def _numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _messages(out: StreamOutput) -> list[str | bytes]:
    """One engine output as WebSocket messages: tokens (text), audio (binary), flushed (text)."""
    msgs: list[str | bytes] = []
    toks = _numpy(out.tokens).reshape(-1)
    audio = _numpy(out.audio).reshape(-1)
    if toks.size:
        msgs.append(json.dumps({"type": "tokens", "tokens": toks.astype(np.int64).tolist()}))
    if audio.size:
        msgs.append(audio_to_bytes(audio))
    if out.flushed:
        msgs.append(json.dumps({"type": "flushed", "tokens": int(out.tokens_total), "samples": int(out.samples_total)}))
    return msgs


class _Socket(web.WebSocketResponse):
    """aiohttp closes a connection whose message is over ``max_msg_size`` by itself (code
    1009, no reason); this sends the protocol's error message first and names the limit."""

    async def close(self, *, code: int = WSCloseCode.OK, message: bytes = b"", drain: bool = True) -> bool:
        if code == WSCloseCode.MESSAGE_TOO_BIG and not message and not self.closed:
            text = f"message too big: at most {self._max_msg_size} bytes per message"
            with contextlib.suppress(Exception):
                await self.send_str(error_message(text))
            message = text.encode()
        return await super().close(code=code, message=message, drain=drain)


class _Peer:
    """A WebSocket client with a bounded output queue drained by a writer task."""

    def __init__(self, server: Server, request: web.Request, ws: web.WebSocketResponse, queue_size: int) -> None:
        self.server, self.request, self.ws = server, request, ws
        self.out: asyncio.Queue = asyncio.Queue(maxsize=queue_size)
        self.writer = asyncio.get_running_loop().create_task(self._write_loop())
        self.failed = False
        self.name = f"{request.remote or '?'}#{id(self) % 100000}"

    async def _write_loop(self) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            while True:
                msg = await self.out.get()
                if isinstance(msg, bytes):
                    await self.ws.send_bytes(msg)
                else:
                    await self.ws.send_str(msg)

    def enqueue(self, msgs: Iterable[str | bytes]) -> bool:
        """Queue messages for the client; a full queue drops the client (it does not read)."""
        if self.failed:
            return False
        for m in msgs:
            try:
                self.out.put_nowait(m)
            except asyncio.QueueFull:
                self.failed = True  # at once: later outputs in this tick are not queued either
                self.server.stats["dropped_slow"] += 1
                text = "too slow: the client does not read its output in time; connection dropped"
                self.server.spawn(self._fail(text, CLOSE_POLICY))
                return False
        return True

    async def fail(self, message: str, code: int) -> None:
        """Send ``{"type": "error"}`` and close with ``code``; cut the socket if the client
        does not take them within the close timeout. Once per connection."""
        if self.failed:
            return
        self.failed = True
        await self._fail(message, code)

    async def _fail(self, message: str, code: int) -> None:
        log.info("%s: error %d: %s", self.name, code, message)
        self.writer.cancel()
        self._failed()

        async def close() -> None:
            if not self.ws.closed:
                await self.ws.send_str(error_message(message))
                reason = message.encode("utf-8")[:120].decode("utf-8", "ignore").encode("utf-8")
                await self.ws.close(code=code, message=reason)

        try:
            await asyncio.wait_for(close(), self.server.limits.close_timeout)
        except (asyncio.TimeoutError, ConnectionError, RuntimeError):
            transport = self.request.transport
            if transport is not None:
                transport.abort()

    def _failed(self) -> None:
        """Hook: wake whatever waits on this peer."""

    async def finish(self) -> None:
        self.writer.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.writer


class StreamSession(_Peer):
    """One ``/v1/stream`` connection."""

    def __init__(self, server: Server, request: web.Request, ws: web.WebSocketResponse) -> None:
        # Each chunk gives up to 3 messages (tokens, audio, flushed).
        super().__init__(server, request, ws, 3 * server.limits.queue_chunks)
        self.sid: int | None = None
        self.mode: str | None = None
        self.pushed = 0  # input steps (samples or tokens) sent to the engine
        self.consumed = 0  # input steps the engine has coded
        self.flush_marks: deque[int] = deque()  # ``pushed`` at each flush not yet answered
        self.held: list[np.ndarray] = []  # input of less than a chunk, not yet sent to the engine
        self.held_size = 0
        self.drained = asyncio.Event()
        self.drained.set()

    @property
    def backlog(self) -> int:
        return self.pushed - self.consumed

    def _failed(self) -> None:
        self.drained.set()

    def _backlog_limit(self) -> int:
        e = self.server.engine
        seconds = self.server.limits.backlog_seconds
        if self.mode == "decode":
            chunks = seconds * e.sample_rate_in / e.chunk_samples
            return max(e.tokens_per_chunk, int(chunks * e.tokens_per_chunk))
        return max(e.chunk_samples, int(seconds * e.sample_rate_in))

    def _busy(self) -> bool:
        """Whether to stop reading the client: too much of its input waits in the engine, or
        too many of its flushes are unanswered."""
        return self.backlog > self._backlog_limit() or len(self.flush_marks) > MAX_PENDING_FLUSHES

    async def serve(self) -> None:
        limits = self.server.limits
        try:
            msg = await self.ws.receive(timeout=limits.start_timeout)
        except asyncio.TimeoutError:
            await self.fail(f"no start message within {limits.start_timeout:g} s", CLOSE_POLICY)
            return
        while not self.failed:
            if msg.type == WSMsgType.TEXT:
                await self._control(parse_control(msg.data))
            elif msg.type == WSMsgType.BINARY:
                self._data(msg.data)
            else:  # closed by the client, or a frame aiohttp refused (it closed with the reason)
                return
            while self._busy() and not self.failed:
                self.drained.clear()
                await self.drained.wait()
            if self.failed:
                return
            msg = await self.ws.receive()

    async def _control(self, msg: dict) -> None:
        kind = msg["type"]
        if kind == "start":
            await self._start(msg)
        elif kind == "flush":
            if self.sid is None:
                raise ProtocolError('flush before start: send {"type": "start", ...} first', CLOSE_OUT_OF_ORDER)
            self._send_held()
            self.flush_marks.append(self.pushed)
            self.server.worker.send("flush", self.sid)
        else:
            raise ProtocolError(f'unknown message type {kind!r}: a client sends "start" or "flush"')

    async def _start(self, msg: dict) -> None:
        mode = msg.get("mode", "resynth")
        if not isinstance(mode, str) or mode not in MODES:
            raise ProtocolError(f"mode must be one of {', '.join(map(repr, MODES))}, got {mode!r}")
        name = msg.get("speaker_set")
        feats = None
        if name is not None:
            if not isinstance(name, str):
                raise ProtocolError(f"speaker_set must be a string, got {type(name).__name__}")
            if name not in self.server.speaker_sets:
                have = ", ".join(sorted(self.server.speaker_sets)) or "none (start the server with --speaker-sets DIR)"
                raise ProtocolError(f"unknown speaker set {name!r}; available: {have}")
            if mode == "encode":
                raise ProtocolError("a speaker set converts the output voice: it needs mode 'resynth' or 'decode'")
            feats = self.server.speaker_sets[name]
        if self.sid is not None:
            if self.flush_marks or self.backlog or self.held_size:
                raise ProtocolError(
                    'start during an utterance: send {"type": "flush"} and wait for "flushed" first',
                    CLOSE_OUT_OF_ORDER,
                )
            self._release()
        try:
            sid = await self.server.worker.open(mode, feats)
        except EngineFull:
            self.server.stats["refused_full"] += 1
            raise ProtocolError(
                f"server full: all {self.server.engine.max_streams} streams are in use (--max-streams); "
                "try again later",
                CLOSE_TRY_LATER,
            ) from None
        self.sid, self.mode = sid, mode
        self.pushed = self.consumed = 0
        self.server.sessions[sid] = self
        e = self.server.engine
        ready = {
            "type": "ready",
            "sample_rate_in": e.sample_rate_in,
            "sample_rate_out": e.sample_rate_out,
            "chunk_samples": e.chunk_samples,
            "tokens_per_chunk": e.tokens_per_chunk,
            "codebook_size": e.codebook_size,
            "samples_per_chunk_out": e.samples_per_chunk_out,
            "latency_ms": e.latency_ms,
            "mode": mode,
            "speaker_set": name,
            "model": self.server.model_name,
        }
        self.enqueue([json.dumps(ready)])
        log.info("%s: stream %d opened (%s%s)", self.name, sid, mode, f", voice {name}" if name else "")

    def _data(self, data: bytes) -> None:
        if self.sid is None:
            raise ProtocolError('binary message before start: send {"type": "start", ...} first', CLOSE_OUT_OF_ORDER)
        if self.mode == "decode":
            x = tokens_from_bytes(data, self.server.engine.codebook_size)
        else:
            x = audio_from_bytes(data)
        if x.size:
            # Pieces are held until they make a chunk: the engine gets one command per chunk
            # or more, however finely the client cuts its input.
            self.held.append(x)
            self.held_size += x.size
            e = self.server.engine
            if self.held_size >= (e.tokens_per_chunk if self.mode == "decode" else e.chunk_samples):
                self._send_held()

    def _send_held(self) -> None:
        if self.held_size:
            x = self.held[0] if len(self.held) == 1 else np.concatenate(self.held)
            self.pushed += x.size
            self.server.worker.send("push", self.sid, torch.from_numpy(x))
        self.held, self.held_size = [], 0

    def deliver(self, msgs: list[str | bytes], out: StreamOutput) -> None:
        """On the event loop: one engine output for this stream."""
        e = self.server.engine
        if out.flushed:
            self.consumed = self.flush_marks.popleft() if self.flush_marks else self.pushed
        else:
            self.consumed += e.tokens_per_chunk if self.mode == "decode" else e.chunk_samples
        if not self._busy():
            self.drained.set()
        self.enqueue(msgs)

    def _release(self) -> None:
        if self.sid is not None:
            self.server.sessions.pop(self.sid, None)
            self.server.worker.send("close", self.sid)
            log.info("%s: stream %d closed", self.name, self.sid)
            self.sid = None
        self.flush_marks.clear()
        self.held, self.held_size = [], 0

    async def finish(self) -> None:
        self._release()
        await super().finish()


class LinkPeer(_Peer):
    """One end of a ``/v1/link/ROOM`` relay."""

    def __init__(self, server: Server, request: web.Request, ws: web.WebSocketResponse, room: str) -> None:
        super().__init__(server, request, ws, server.limits.queue_chunks)
        self.room = room

    async def serve(self) -> None:
        rooms = self.server.rooms
        if self.room not in rooms and len(rooms) >= self.server.engine.max_streams:
            await self.fail("too many link rooms open; try again later", CLOSE_TRY_LATER)
            return
        peers = rooms.setdefault(self.room, [])
        if len(peers) >= 2:
            await self.fail(f"link room {self.room!r} already has two peers; choose another room name", CLOSE_POLICY)
            return
        peers.append(self)
        self._announce()
        limit = self.server.limits.link_message_bytes
        frame = self.server.frame_bytes
        e = self.server.engine
        # A peer relays at most LINK_SPEEDUP times the real-time rate on average (bursts of
        # 64 frames): a flood costs the server no more than that.
        pacer = _Pacer(LINK_SPEEDUP * frame * e.sample_rate_in / e.chunk_samples, 64 * frame)
        async for msg in self.ws:
            if msg.type == WSMsgType.BINARY:
                data = msg.data
                if len(data) > limit or len(data) % frame:
                    await self.fail(
                        f"link messages hold whole {frame}-byte token frames, at most {limit} bytes; "
                        f"got {len(data)} bytes",
                        CLOSE_INVALID if len(data) <= limit else CLOSE_TOO_BIG,
                    )
                    return
                await pacer.take(len(data))
                self.server.stats["link_bytes"] += len(data)
                for other in list(peers):
                    if other is not self:
                        other.enqueue([data])
            elif msg.type == WSMsgType.TEXT:
                await self.fail("a link carries binary token frames only", CLOSE_INVALID)
                return
            else:
                return

    def _announce(self) -> None:
        peers = self.server.rooms.get(self.room, [])
        s = self.server
        info = {
            "type": "link",
            "room": self.room,
            "peers": len(peers),
            "frame_bytes": s.frame_bytes,
            "tokens_per_frame": s.engine.tokens_per_chunk,
            "code_dim": s.code_dim,
        }
        for p in peers:
            p.enqueue([json.dumps(info)])

    async def finish(self) -> None:
        peers = self.server.rooms.get(self.room)
        if peers is not None and self in peers:
            peers.remove(self)
            if peers:
                self._announce()
            else:
                del self.server.rooms[self.room]
        await super().finish()


class _Pacer:
    """Token bucket: :meth:`take` waits so that at most ``rate`` units per second pass on
    average, in bursts of at most ``burst``."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.allowance, self.last = burst, time.monotonic()

    async def take(self, n: float) -> None:
        now = time.monotonic()
        self.allowance = min(self.burst, self.allowance + (now - self.last) * self.rate)
        self.last = now
        if self.allowance < n:
            await asyncio.sleep((n - self.allowance) / self.rate)
            self.allowance, self.last = n, time.monotonic()
        self.allowance -= n


def _is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Server:
    """State shared by the handlers: the engine worker, the sessions, the limits."""

    def __init__(
        self,
        engine: Any,
        model_name: str,
        code_dim: int,
        speaker_sets: dict[str, torch.Tensor] | None = None,
        allowed_origins: Iterable[str] = (),
        limits: Limits | None = None,
        loopback_only: bool = True,
    ) -> None:
        self.engine = engine
        self.model_name = model_name
        self.code_dim = code_dim
        self.frame_bytes = math.ceil(engine.tokens_per_chunk * code_dim / 8)
        self.speaker_sets = dict(speaker_sets or {})
        self.allowed_origins = {o.rstrip("/").lower() for o in allowed_origins}
        self.limits = limits or Limits()
        self.loopback_only = loopback_only
        self.sessions: dict[int, StreamSession] = {}
        self.rooms: dict[str, list[LinkPeer]] = {}
        self.peers: set[_Peer] = set()
        self.tasks: set[asyncio.Task] = set()
        self.stats = {"connections_total": 0, "dropped_slow": 0, "refused_full": 0, "link_bytes": 0}
        self.started = time.time()
        self.worker: EngineWorker

    async def startup(self, app: web.Application) -> None:
        loop = asyncio.get_running_loop()
        self.worker = EngineWorker(self.engine, loop, self._on_outputs, self._on_error)
        self.worker.start()

    async def shutdown(self, app: web.Application) -> None:
        await asyncio.gather(*(p.fail("the server is shutting down", WSCloseCode.GOING_AWAY) for p in list(self.peers)))
        await asyncio.get_running_loop().run_in_executor(None, self.worker.stop)

    def spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _on_outputs(self, batch: dict) -> None:
        for sid, (msgs, out) in batch.items():
            session = self.sessions.get(sid)
            if session is not None:
                session.deliver(msgs, out)

    def _on_error(self, sid: int | None, exc: BaseException) -> None:
        targets = list(self.sessions.values()) if sid is None else [self.sessions.get(sid)]
        for session in targets:
            if session is None:
                continue
            if isinstance(exc, InputError) and sid is not None:
                self.spawn(session.fail(str(exc), CLOSE_INVALID))
            else:
                self.spawn(session.fail(f"internal error in the engine ({type(exc).__name__})", CLOSE_INTERNAL))

    # -- HTTP --------------------------------------------------------------------------------
    def check_request(self, request: web.Request) -> None:
        """403 for cross-origin browsers not in ``allowed_origins``, and, on a loopback
        address, for Host headers that do not name the loopback (DNS rebinding)."""
        host = request.host or ""
        hostname = urlsplit(f"//{host}").hostname or ""
        if self.loopback_only and not _is_loopback(hostname):
            raise web.HTTPForbidden(text=f"host {host!r} refused: this server only answers on the loopback address\n")
        origin = request.headers.get("Origin")
        if origin is None:
            return  # not a browser, or a same-origin GET
        o = origin.rstrip("/").lower()
        if "*" in self.allowed_origins or o in self.allowed_origins:
            return
        parts = urlsplit(o)
        if parts.netloc == host.lower():
            return
        raise web.HTTPForbidden(
            text=f"origin {origin!r} not allowed; start the server with --allowed-origins {origin}\n"
        )

    async def page(self, request: web.Request) -> web.Response:
        name = request.match_info.get("name", "index.html")
        if name not in STATIC_FILES:
            raise web.HTTPNotFound()
        data = resources.files(__package__).joinpath("static", name).read_bytes()
        return web.Response(body=data, content_type=STATIC_FILES[name], headers={"Cache-Control": "no-cache"})

    def health_info(self) -> dict:
        e = self.engine
        steps = np.asarray(self.worker.step_ms) if self.worker.step_ms else np.zeros(0)
        batches = np.asarray(self.worker.batch_sizes) if self.worker.batch_sizes else np.zeros(0)
        return {
            "status": "ok" if self.worker.failed is None else "engine failed",
            "model": self.model_name,
            "sample_rate_in": e.sample_rate_in,
            "sample_rate_out": e.sample_rate_out,
            "chunk_samples": e.chunk_samples,
            "tokens_per_chunk": e.tokens_per_chunk,
            "codebook_size": e.codebook_size,
            "code_dim": self.code_dim,
            "latency_ms": e.latency_ms,
            "precision": getattr(e, "precision", None),
            "decode_precision": getattr(e, "decode_precision", None),
            "bitrate_bps": 8 * self.frame_bytes * e.sample_rate_in / e.chunk_samples,
            "streams_open": len(self.sessions),
            "max_streams": e.max_streams,
            "connections": len(self.peers),
            "link_rooms": len(self.rooms),
            "speaker_sets": sorted(self.speaker_sets),
            "steps": self.worker.steps,
            "step_ms_p50": float(np.percentile(steps, 50)) if steps.size else None,
            "step_ms_p99": float(np.percentile(steps, 99)) if steps.size else None,
            "batch_mean": float(batches.mean()) if batches.size else None,
            "uptime_s": round(time.time() - self.started, 3),
            **self.stats,
        }

    async def health(self, request: web.Request) -> web.Response:
        self.check_request(request)
        return web.json_response(self.health_info())

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        self.check_request(request)
        ws = _Socket(
            max_msg_size=MAX_MESSAGE_BYTES,
            compress=False,
            heartbeat=self.limits.heartbeat,
            timeout=self.limits.close_timeout,
        )
        await ws.prepare(request)
        sock = request.transport.get_extra_info("socket") if request.transport is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.limits.send_buffer_bytes)
        self.stats["connections_total"] += 1
        return ws

    async def _run_peer(self, peer: _Peer) -> None:
        self.peers.add(peer)
        try:
            await peer.serve()
        except ProtocolError as exc:
            await peer.fail(str(exc), exc.code)
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception as exc:  # noqa: BLE001 - one client's failure must not stop the server
            log.error("%s: %s", peer.name, traceback.format_exc())
            await peer.fail(f"internal error ({type(exc).__name__})", CLOSE_INTERNAL)
        finally:
            self.peers.discard(peer)
            await peer.finish()

    async def stream(self, request: web.Request) -> web.WebSocketResponse:
        ws = await self._socket(request)
        await self._run_peer(StreamSession(self, request, ws))
        return ws

    async def link(self, request: web.Request) -> web.WebSocketResponse:
        room = request.match_info["room"]
        ws = await self._socket(request)
        peer = LinkPeer(self, request, ws, room)
        if not ROOM_NAME.match(room):
            await peer.fail("a room name has 1-64 letters, digits, '-' or '_'", CLOSE_INVALID)
            await peer.finish()
            return ws
        await self._run_peer(peer)
        return ws


def create_app(
    engine: Any,
    model_name: str,
    code_dim: int,
    speaker_sets: dict[str, torch.Tensor] | None = None,
    allowed_origins: Iterable[str] = (),
    limits: Limits | None = None,
    loopback_only: bool = True,
) -> web.Application:
    """The aiohttp application around ``engine`` (a :class:`StreamEngine`).

    ``speaker_sets``: name -> ``(M, C)`` matching set (:func:`load_speaker_sets`);
    ``allowed_origins``: web origins (``https://example.org``, or ``*``) whose pages may use
    the server besides its own; ``loopback_only``: refuse Host headers that are not the
    loopback (set when bound to 127.0.0.1)."""
    server = Server(engine, model_name, code_dim, speaker_sets, allowed_origins, limits, loopback_only)
    app = web.Application(client_max_size=MAX_MESSAGE_BYTES)
    app[SERVER_KEY] = server
    app.on_startup.append(server.startup)
    app.on_shutdown.append(server.shutdown)
    app.router.add_get("/", server.page)
    app.router.add_get("/static/{name}", server.page)
    app.router.add_get("/health", server.health)
    app.router.add_get("/v1/stream", server.stream)
    app.router.add_get("/v1/link/{room}", server.link)
    return app


def load_speaker_sets(
    folder: str | Path, codec: Any, features_model: Any, check_weights: bool = True
) -> dict[str, torch.Tensor]:
    """Every ``*.safetensors`` speaker set in ``folder`` (named by file stem), each checked as
    ``focalcodec vc --speaker-set`` checks one (:meth:`focalcodec.vc.SpeakerSet.check_model`):
    built by ``features_model`` (its architecture, and its weights unless
    ``check_weights=False``; a set without that identity warns once and is used), with
    features that fit ``codec``'s decoder. The first set that fails raises
    :class:`~focalcodec.errors.InputError` naming its file and both models, so a server never
    starts with part of its voices."""
    from ..vc import SpeakerSet, matching_features

    sets = {}
    for path in speaker_set_files(folder):
        speaker = SpeakerSet.load(path, model=features_model, check_weights=check_weights)
        try:
            sets[path.stem] = matching_features(codec, speaker).float()
        except InputError as exc:
            raise InputError(f"speaker set {path}: {exc}") from None
    return sets


def speaker_set_files(folder: str | Path) -> list[Path]:
    """The ``*.safetensors`` files of ``--speaker-sets`` ``folder``, sorted; :class:`InputError`
    when it is not a folder or holds none (checked before any model is loaded)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"--speaker-sets {folder}: not a folder (expected a folder of .safetensors speaker sets)")
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise InputError(
            f"--speaker-sets {folder}: no .safetensors speaker sets in it (make them with `focalcodec vc`)"
        )
    return files


def _app_for(
    codec: Any,
    max_streams: int,
    precision: str,
    decode_precision: str | None,
    speaker_sets: dict | None,
    allowed_origins: Iterable[str],
    limits: Limits | None,
    host: str,
) -> web.Application:
    engine = StreamEngine(codec, max_streams=max_streams, precision=precision, decode_precision=decode_precision)
    _warm_up(engine)
    return create_app(
        engine,
        codec.model_id,
        int(codec.code_dim),
        speaker_sets,
        allowed_origins,
        limits,
        loopback_only=_is_loopback(host),
    )


def _warm_up(engine: Any) -> None:
    """One chunk through a stream, so the first client does not pay for building the
    streaming model."""
    sid = engine.open(mode="resynth")
    try:
        engine.push(sid, torch.zeros(engine.chunk_samples))
        while engine.ready():
            engine.step()
    finally:
        engine.close(sid)


async def _serve(app: web.Application, host: str, port: int, started) -> None:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    try:
        await site.start()
        started(runner.addresses[0][1])
        await asyncio.Event().wait()  # until cancelled
    finally:
        await runner.cleanup()


def run_server(
    codec: Any,
    host: str = "127.0.0.1",
    port: int = 8765,
    max_streams: int = 8,
    precision: str = "float32",
    decode_precision: str | None = None,
    speaker_sets: dict | None = None,
    allowed_origins: Iterable[str] = (),
    limits: Limits | None = None,
    on_start=None,
) -> None:
    """Serve until interrupted (Ctrl-C / SIGTERM). ``on_start(port)`` is called once listening."""
    app = _app_for(codec, max_streams, precision, decode_precision, speaker_sets, allowed_origins, limits, host)

    async def main() -> None:
        import signal

        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, task.cancel)
        await _serve(app, host, port, on_start or (lambda p: None))

    with contextlib.suppress(asyncio.CancelledError, KeyboardInterrupt):
        asyncio.run(main())


class BackgroundServer:
    """The server in a background thread, for tests, notebooks and benchmarks::

    with BackgroundServer(codec, port=0) as srv:
        srv.url          # http://127.0.0.1:PORT
    """

    def __init__(
        self,
        codec: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        max_streams: int = 8,
        precision: str = "float32",
        decode_precision: str | None = None,
        speaker_sets: dict | None = None,
        allowed_origins: Iterable[str] = (),
        limits: Limits | None = None,
    ) -> None:
        self.host = host
        self.app = _app_for(
            codec, max_streams, precision, decode_precision, speaker_sets, allowed_origins, limits, host
        )
        self.port: int | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="focalcodec-serve", daemon=True)

    @property
    def server(self) -> Server:
        return self.app[SERVER_KEY]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _run(self) -> None:
        def started(port: int) -> None:
            self.port = port
            self._ready.set()

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._task = asyncio.current_task()
            await _serve(self.app, self.host, 0 if self.port is None else self.port, started)

        try:
            asyncio.run(main())
        except asyncio.CancelledError:
            pass
        except BaseException as exc:  # noqa: BLE001 - reported by start()
            self._error = exc
        finally:
            self._ready.set()

    def start(self) -> BackgroundServer:
        self._thread.start()
        self._ready.wait(60)
        if self._error is not None:
            raise self._error
        if self.port is None:
            raise RuntimeError("the server did not start within 60 s")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._task is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(timeout=30)

    def call(self, fn, *args):
        """Run ``fn(*args)`` on the server's event loop and return its result (for tests)."""
        done = threading.Event()
        box: list = []

        def run() -> None:
            try:
                box.append((True, fn(*args)))
            except BaseException as exc:  # noqa: BLE001
                box.append((False, exc))
            done.set()

        assert self._loop is not None
        self._loop.call_soon_threadsafe(run)
        done.wait(30)
        ok, value = box[0]
        if not ok:
            raise value
        return value

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
