"""The local web server of a MUSHRA test (aiohttp): one static page and a small JSON API.

Routes:

- ``GET /``: the test page (``listen_page/index.html``, plain HTML and JavaScript, no build);
- ``GET /api/plan?rater=NAME``: the rater's trials in their own order (opaque stimulus tokens,
  never system names), the trials they completed and their ratings so far (to resume);
- ``POST /api/rating`` ``{"rater", "trial", "stimulus", "score"}``: one rating, stored as given;
- ``POST /api/complete`` ``{"rater", "trial"}``: the trial is done (every stimulus rated);
- ``GET /audio/TOKEN.wav``: a stimulus (only tokens of the test are served).

aiohttp rather than the standard library's ``http.server``: it serves files with range
requests, conditional requests and proper content types, runs concurrent raters on one event
loop, limits request sizes, and shuts down cleanly, all of which ``http.server`` leaves to
the caller. It binds 127.0.0.1 by default: a test open to the network lets anyone rate.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import FocalCodecError, InputError
from .listening import RatingStore, check_rater, rater_plan

__all__ = ["PAGE", "ListeningServer", "make_app"]

PAGE = Path(__file__).with_name("listen_page") / "index.html"
_TOKEN = re.compile(r"^[0-9a-f]{16}$")
MAX_REQUEST_BYTES = 16 * 1024


def make_app(test_dir: str | Path, test: Mapping[str, Any], store: RatingStore):
    """The aiohttp application serving ``test`` (from ``test_dir``) and storing into ``store``."""
    from aiohttp import web

    audio_dir = Path(test_dir) / "audio"
    tokens = {t["reference"] for t in test["trials"]} | {k for t in test["trials"] for k in t["stimuli"].values()}

    def fail(exc: Exception) -> web.Response:
        return web.json_response({"error": str(exc)}, status=400)

    async def body(request: web.Request) -> dict[str, Any]:
        try:
            data = await request.json()
        except ValueError:
            raise InputError("the request body is not JSON") from None
        if not isinstance(data, dict):
            raise InputError("the request body must be a JSON object")
        return data

    async def index(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(PAGE, headers={"Cache-Control": "no-store"})

    async def plan(request: web.Request) -> web.Response:
        try:
            rater = check_rater(request.query.get("rater", ""))
            store.start(rater, request.headers.get("User-Agent", ""))
            trials = [
                {
                    "id": t["id"],
                    "reference": f"audio/{t['reference']}.wav",
                    "stimuli": [{"id": s, "url": f"audio/{s}.wav"} for s in t["stimuli"]],
                }
                for t in rater_plan(test, rater)
            ]
            return web.json_response({"title": test["title"], "trials": trials, **store.state(rater)})
        except FocalCodecError as exc:
            return fail(exc)

    async def rating(request: web.Request) -> web.Response:
        try:
            data = await body(request)
            store.rate(str(data.get("rater", "")), str(data.get("trial", "")), str(data.get("stimulus", "")),
                       data.get("score"))  # fmt: skip
            return web.json_response({"ok": True})
        except FocalCodecError as exc:
            return fail(exc)

    async def complete(request: web.Request) -> web.Response:
        try:
            data = await body(request)
            store.complete(str(data.get("rater", "")), str(data.get("trial", "")))
            return web.json_response({"ok": True})
        except FocalCodecError as exc:
            return fail(exc)

    async def audio(request: web.Request) -> web.StreamResponse:
        token = request.match_info["token"]
        if not _TOKEN.match(token) or token not in tokens:
            raise web.HTTPNotFound()
        return web.FileResponse(audio_dir / f"{token}.wav", headers={"Cache-Control": "private, max-age=3600"})

    async def no_icon(request: web.Request) -> web.Response:
        return web.Response(status=204)

    app = web.Application(client_max_size=MAX_REQUEST_BYTES)
    app.router.add_get("/", index)
    app.router.add_get("/api/plan", plan)
    app.router.add_post("/api/rating", rating)
    app.router.add_post("/api/complete", complete)
    app.router.add_get("/audio/{token}.wav", audio)
    app.router.add_get("/favicon.ico", no_icon)
    return app


class ListeningServer:
    """Serve a test in a background thread: ``with ListeningServer(dir, test, store) as srv:
    srv.url``. ``port=0`` picks a free port."""

    def __init__(
        self, test_dir: str | Path, test: Mapping[str, Any], store: RatingStore, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.app = make_app(test_dir, test, store)
        self.host, self.port = host, port
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._runner: Any = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    async def _start(self) -> None:
        from aiohttp import web

        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._start())
        except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    def start(self) -> ListeningServer:
        self._thread = threading.Thread(target=self._run, daemon=True, name="focalcodec-listen")
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            if isinstance(self._error, OSError):
                raise InputError(f"cannot listen on {self.host}:{self.port}: {self._error.strerror or self._error}")
            raise self._error
        return self

    def stop(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    def __enter__(self) -> ListeningServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
