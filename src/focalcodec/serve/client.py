"""Python client of ``focalcodec serve`` (aiohttp).

One call, blocking::

    from focalcodec.serve.client import stream
    result = stream("http://127.0.0.1:8765", sig)          # (N,) float32 at 16 kHz, resynth
    result.tokens, result.audio, result.latencies_ms        # (T,) int64, (M,) float32 at 24 kHz
    result = stream(url, tokens, mode="decode")             # tokens -> audio

Or step by step, in asyncio::

    async with await StreamClient.connect(url, mode="encode") as client:
        await client.send_audio(piece)                     # any length
        await client.flush()
        while True:
            kind, value = await client.receive()           # "tokens" | "audio" | "flushed"
            if kind == "flushed":
                break

A server error (``{"type": "error"}``) or a closed connection raises :class:`ServerError`
with the server's message and the WebSocket close code.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import AsyncIterable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from ..errors import FocalCodecError
from .protocol import MAX_MESSAGE_BYTES, audio_from_bytes, audio_to_bytes, tokens_to_bytes

__all__ = ["ServerError", "StreamClient", "StreamResult", "health", "run_stream", "stream", "stream_url"]


class ServerError(FocalCodecError):
    """The server reported an error or closed the connection; ``code`` is the close code."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


def _base(url: str) -> tuple[str, str, str]:
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.netloc:
        raise ServerError(f"server URL {url!r} is not an http(s):// or ws(s):// address, e.g. http://127.0.0.1:8765")
    secure = parts.scheme in ("https", "wss")
    return ("https" if secure else "http"), ("wss" if secure else "ws"), parts.netloc


def stream_url(url: str, path: str = "/v1/stream") -> str:
    """``http://host:port`` (or ``ws://...``, with or without the path) -> the WebSocket URL."""
    _, ws, netloc = _base(url)
    return urlunsplit((ws, netloc, path, "", ""))


def health(url: str, timeout: float = 10.0) -> dict:
    """``GET /health`` of the server at ``url``."""
    http, _, netloc = _base(url)
    try:
        with urllib.request.urlopen(urlunsplit((http, netloc, "/health", "", "")), timeout=timeout) as r:
            return json.loads(r.read())
    except OSError as exc:
        raise ServerError(f"cannot reach the server at {url}: {exc}") from None


class StreamClient:
    """One ``/v1/stream`` connection (see the module doc). ``ready``: the server's ready message."""

    def __init__(self, session: Any, ws: Any, ready: dict) -> None:
        self._session, self._ws, self.ready = session, ws, ready

    @classmethod
    async def connect(
        cls, url: str, mode: str = "resynth", speaker_set: str | None = None, timeout: float = 30.0
    ) -> StreamClient:
        import aiohttp

        session = aiohttp.ClientSession()
        try:
            ws = await asyncio.wait_for(
                session.ws_connect(stream_url(url), max_msg_size=MAX_MESSAGE_BYTES, compress=0, heartbeat=30.0),
                timeout,
            )
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            await session.close()
            raise ServerError(f"cannot connect to the server at {url}: {exc}") from None
        client = cls(session, ws, {})
        start: dict = {"type": "start", "mode": mode}
        if speaker_set is not None:
            start["speaker_set"] = speaker_set
        try:
            await ws.send_str(json.dumps(start))
            kind, ready = await asyncio.wait_for(client.receive(), timeout)
        except BaseException:
            await client.close()
            raise
        if kind != "ready":
            await client.close()
            raise ServerError(f"expected a ready message, got {kind}")
        client.ready = ready
        return client

    async def send_audio(self, x: np.ndarray) -> None:
        """``(n,)`` float samples at ``ready["sample_rate_in"]``, split to fit the message limit."""
        data = audio_to_bytes(np.asarray(x, dtype=np.float32).reshape(-1))
        for i in range(0, len(data), MAX_MESSAGE_BYTES):
            await self._ws.send_bytes(data[i : i + MAX_MESSAGE_BYTES])

    async def send_tokens(self, tokens: np.ndarray) -> None:
        data = tokens_to_bytes(np.asarray(tokens).reshape(-1))
        for i in range(0, len(data), MAX_MESSAGE_BYTES):
            await self._ws.send_bytes(data[i : i + MAX_MESSAGE_BYTES])

    async def flush(self) -> None:
        await self._ws.send_str(json.dumps({"type": "flush"}))

    async def receive(self) -> tuple[str, Any]:
        """The next event: ``("ready", dict)``, ``("tokens", (k,) int64)``, ``("audio", (m,)
        float32)`` or ``("flushed", dict)``; :class:`ServerError` on an error or a close."""
        import aiohttp

        while True:
            msg = await self._ws.receive()
            if msg.type == aiohttp.WSMsgType.BINARY:
                return "audio", audio_from_bytes(msg.data)
            if msg.type == aiohttp.WSMsgType.TEXT:
                data = json.loads(msg.data)
                kind = data.get("type")
                if kind == "tokens":
                    return "tokens", np.asarray(data["tokens"], dtype=np.int64)
                if kind == "error":
                    await self._ws.receive()  # the close frame that follows, for its code
                    raise ServerError(f"server error: {data.get('message')}", self._ws.close_code)
                if kind in ("ready", "flushed"):
                    return kind, data
                continue  # a message type this client does not know: skipped
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                raise ServerError(f"the server closed the connection (code {self._ws.close_code})", self._ws.close_code)
            if msg.type == aiohttp.WSMsgType.ERROR:
                raise ServerError(f"connection error: {msg.data}", self._ws.close_code)

    async def close(self) -> None:
        try:
            await self._ws.close()
        finally:
            await self._session.close()

    async def __aenter__(self) -> StreamClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


@dataclass
class StreamResult:
    """What one utterance gave: ``tokens (T,)`` int64 (empty in decode mode), ``audio (M,)``
    float32 at ``ready["sample_rate_out"]`` (empty in encode mode), per-chunk latencies as the
    client saw them (ms from the moment a chunk's last input was available to its output's
    arrival), the ``flushed`` and ``ready`` messages and the number of input steps sent."""

    tokens: np.ndarray
    audio: np.ndarray
    latencies_ms: list[float] = field(default_factory=list)
    flushed: dict = field(default_factory=dict)
    ready: dict = field(default_factory=dict)
    input_steps: int = 0  # samples (or tokens in decode mode) sent


async def paced(x: np.ndarray, block: int, rate: float | None = None):
    """``(piece, time available)`` pairs of ``block`` steps; with ``rate`` (steps per second)
    each piece waits for its real-time moment, else they come at once."""
    start = time.perf_counter()
    for i in range(0, len(x), block):
        piece = x[i : i + block]
        if rate:
            due = start + (i + len(piece)) / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        else:
            due = time.perf_counter()
        yield piece, due


async def _pieces(blocks: Iterable | AsyncIterable):
    if hasattr(blocks, "__aiter__"):
        async for item in blocks:
            yield item
        return
    it = iter(blocks)
    done = object()
    while True:  # a blocking source (a microphone) is read in a thread
        item = await asyncio.to_thread(next, it, done)
        if item is done:
            return
        yield item


async def run_stream(
    url: str, blocks: Iterable | AsyncIterable | Callable, mode: str = "resynth", speaker_set: str | None = None
) -> StreamResult:
    """Send ``blocks`` (``(piece, time available)`` pairs: audio for resynth/encode, tokens for
    decode; a sync or async iterable, or a function of the ready message that returns one),
    flush, and collect the output of that one utterance."""
    client = await StreamClient.connect(url, mode, speaker_set)
    async with client:
        if callable(blocks):
            blocks = blocks(client.ready)
        group = client.ready["tokens_per_chunk"] if mode == "decode" else client.ready["chunk_samples"]
        unit = "tokens" if mode == "encode" else "audio"
        available: list[float] = []  # when each chunk's last input step was available
        sent = 0

        async def send() -> None:
            nonlocal sent
            async for piece, at in _pieces(blocks):
                piece = np.asarray(piece)
                if mode == "decode":
                    await client.send_tokens(piece)
                else:
                    await client.send_audio(piece)
                sent += len(piece)
                available.extend([at] * (sent // group - len(available)))
            await client.flush()

        sender = asyncio.get_running_loop().create_task(send())
        toks, audio, latencies, chunks = [], [], [], 0
        try:
            while True:
                kind, value = await client.receive()
                now = time.perf_counter()
                if kind == "flushed":
                    break
                (toks if kind == "tokens" else audio).append(value)
                if kind == unit:
                    if chunks < len(available):
                        latencies.append(1000.0 * (now - available[chunks]))
                    chunks += 1
            await sender
        finally:
            sender.cancel()
        return StreamResult(
            tokens=np.concatenate(toks) if toks else np.zeros(0, dtype=np.int64),
            audio=np.concatenate(audio) if audio else np.zeros(0, dtype=np.float32),
            latencies_ms=latencies,
            flushed=value,
            ready=client.ready,
            input_steps=sent,
        )


def stream(
    url: str,
    data: Any,
    mode: str = "resynth",
    block: int = 1280,
    realtime: bool = False,
    speaker_set: str | None = None,
) -> StreamResult:
    """Blocking: send ``data`` (``(N,)`` audio at 16 kHz, or tokens for ``mode="decode"``) in
    pieces of ``block`` steps (paced in real time with ``realtime``) and return the result."""
    x = np.asarray(data.detach().cpu() if hasattr(data, "detach") else data).reshape(-1)
    x = x.astype(np.int64 if mode == "decode" else np.float32)

    def blocks(ready: dict):
        rate = ready["sample_rate_in"]
        if mode == "decode":  # tokens per second
            rate = rate * ready["tokens_per_chunk"] / ready["chunk_samples"]
        return paced(x, block, rate if realtime else None)

    return _run_blocking(lambda: run_stream(url, blocks, mode, speaker_set))


def _run_blocking(make_coro: Callable):
    """``asyncio.run``, also from a thread whose event loop is running (Jupyter, playwright):
    then in a helper thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make_coro())
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(make_coro())).result()
