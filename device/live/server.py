"""``alanet live``: the live feedback page (aiohttp + Server-Sent Events) or a terminal view.

One process subscribes to ``alanet/#`` (or one gateway), keeps a
:class:`~alanet.device.live.store.LiveStore`, and serves:

- ``/`` (``index.html``, ``app.js``, ``style.css``): the page, all assets local;
- ``/events``: Server-Sent Events, first a ``snapshot`` then one event per change;
- ``/api/snapshot``: the same snapshot as plain JSON (scripts, checks);
- ``POST /api/command``: exercise and session start/stop for a wearer, published as
  ``alanet/<gateway>/cmd/{exercise,session}`` (not with ``--read-only``);
- ``POST /api/settings``: the patient view's sensitivity and tone for a wearer;
- ``/report/<gateway>/<wearer>/<session>.html`` (and ``.csv``): a session's report,
  rendered from its log, which the gateway sends on request over MQTT.

The server is aiohttp on one asyncio loop (a thread of its own; paho has another):
an idle or half-sent connection costs a socket, not a thread, and is closed after
``idle_timeout`` (aiohttp's keep-alive timeout, which also covers a connection that
never completes a request); event streams are capped at ``max_clients`` (503 with
``Retry-After`` beyond), a stream's slot is freed as soon as its viewer leaves
(handler cancellation), and a viewer that stops reading is dropped once its bounded
queue fills or a write stalls for ``WRITE_TIMEOUT_S``. Everything sent is strict JSON: ``NaN`` and ``Infinity`` from a publisher
become ``null`` (:func:`~alanet.device.live.store.loads`).
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import gzip
import io
import json
import logging
import os
import re
import signal
import sys
import threading
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from alanet import atomic
from alanet.device.config import ID_RE, BrokerConfig, parse_broker_url
from alanet.device.live.store import LiveStore, dumps
from alanet.device.live.subscriber import Subscriber, topics_for
from alanet.errors import InputError

log = logging.getLogger(__name__)

STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
KEEPALIVE_S = 10.0  # comment line on an idle event stream
CLIENT_QUEUE = 2000  # events buffered per viewer before it counts as stalled and is dropped
MAX_CLIENTS = 32
IDLE_TIMEOUT_S = 15.0
WRITE_TIMEOUT_S = 10.0  # an event stream whose socket accepts nothing for this long is closed
EXPORT_WAIT_S = 10.0  # how long a report request waits for the gateway to send the session log
MAX_LOG_BYTES = 64 << 20  # a session log larger than this (decompressed) is refused
SESSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
LOG_TOPIC = re.compile(r"^alanet/([^/]+)/([^/]+)/session/([^/]+)/log$")


def _asset(name: str) -> bytes:
    return resources.files("alanet.device.live").joinpath("web", name).read_bytes()


def default_data_dir() -> str:
    from alanet.device.config import default_state_dir

    return str(Path(default_state_dir()) / "live")


class EventHub:
    """Fans store events out to every open event stream (one bounded asyncio queue each).

    Store events are produced on paho's thread under the store's lock; each is
    serialised once and handed to the loop. A new stream starts from a snapshot and
    skips events whose ``seq`` the snapshot already holds.
    """

    def __init__(self, store: LiveStore, loop: asyncio.AbstractEventLoop, max_clients: int,
                 extra: dict[str, Any] | None = None) -> None:
        self.store = store
        self.extra = dict(extra or {})  # added to every snapshot (e.g. whether the page may send commands)
        self.loop = loop
        self.max_clients = max_clients
        self.clients: set[asyncio.Queue] = set()
        self.refused = 0
        self.dropped = 0
        self.closed = False
        store.add_listener(self._publish)

    def _publish(self, ev: dict[str, Any]) -> None:  # paho thread, store lock held
        data = dumps(ev)
        try:
            self.loop.call_soon_threadsafe(self._fanout, ev["seq"], data)
        except RuntimeError:  # the loop is closed: shutting down
            pass

    def _fanout(self, seq: int, data: str) -> None:  # loop thread
        for q in list(self.clients):
            try:
                q.put_nowait((seq, data))
            except asyncio.QueueFull:  # a stalled viewer: drop it, it reconnects and gets a snapshot
                self.clients.discard(q)
                self.dropped += 1
                _drain(q)
                q.put_nowait(None)

    def attach(self) -> tuple[asyncio.Queue, int, str] | None:
        """A new stream's queue, the snapshot's seq and the snapshot (``None`` when full)."""
        if len(self.clients) >= self.max_clients or self.closed:
            self.refused += 1
            return None
        q: asyncio.Queue = asyncio.Queue(maxsize=CLIENT_QUEUE)
        self.clients.add(q)
        snap = self.store.snapshot()
        snap.update(self.extra)
        return q, int(snap["seq"]), dumps(snap)

    def detach(self, q: asyncio.Queue) -> None:
        self.clients.discard(q)

    def close(self) -> None:
        """Tell every open stream to end (loop thread)."""
        self.closed = True
        for q in list(self.clients):
            _drain(q)
            q.put_nowait(None)
        self.clients.clear()


def _drain(q: asyncio.Queue) -> None:
    while True:
        try:
            q.get_nowait()
        except asyncio.QueueEmpty:
            return


class LiveServer:
    """The HTTP server and the MQTT subscriber, started and stopped together."""

    def __init__(self, broker: BrokerConfig, host: str = "127.0.0.1", port: int = 8080,
                 gateway: str | None = None, *, max_clients: int = MAX_CLIENTS, idle_timeout: float = IDLE_TIMEOUT_S,
                 data_dir: str | os.PathLike[str] | None = None, read_only: bool = False) -> None:
        self.store = LiveStore()
        self.store.broker = f"{'mqtts' if broker.tls else 'mqtt'}://{broker.host}:{broker.port}"
        self.host, self.port = host, port
        self.max_clients, self.idle_timeout = max_clients, idle_timeout
        self.read_only = read_only
        self.data_dir = Path(data_dir or default_data_dir())
        self.subscriber = Subscriber(broker, topics_for(gateway), self._message, self.store.set_link)
        self.loop = asyncio.new_event_loop()
        self.hub = EventHub(self.store, self.loop, max_clients, {"control": not read_only, "exercises": exercise_vocab()})
        self._thread: threading.Thread | None = None
        self._runner: Any = None
        self._waiters: dict[tuple[str, str, str], list[asyncio.Future]] = {}
        self._settings_path = self.data_dir / "settings.json"
        self._load_settings()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    # ---- MQTT (paho thread) ----
    def _message(self, topic: str, payload: bytes) -> None:
        m = LOG_TOPIC.match(topic)
        if m is None:
            self.store.ingest(topic, payload)
            return
        gw, wearer, session = m.groups()
        if not (ID_RE.match(gw) and ID_RE.match(wearer) and SESSION_RE.match(session)):
            return
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(payload)) as f:
                data = f.read(MAX_LOG_BYTES + 1)
        except (OSError, EOFError) as exc:
            log.warning("%s: not a gzipped session log (%s)", topic, exc)
            return
        if len(data) > MAX_LOG_BYTES:
            log.warning("%s: session log over %d bytes, ignored", topic, MAX_LOG_BYTES)
            return
        try:
            atomic.write_bytes(self._log_path(gw, wearer, session), data)
        except OSError as exc:
            log.error("cannot keep session log %s: %s", self._log_path(gw, wearer, session), exc)
            return
        try:
            self.loop.call_soon_threadsafe(self._arrived, (gw, wearer, session))
        except RuntimeError:
            pass

    def _log_path(self, gw: str, wearer: str, session: str) -> Path:
        return self.data_dir / "sessions" / gw / wearer / f"{session}.jsonl"

    def _arrived(self, key: tuple[str, str, str]) -> None:  # loop thread
        for fut in self._waiters.pop(key, []):
            if not fut.done():
                fut.set_result(True)

    def publish_command(self, gateway: str, kind: str, payload: dict[str, Any]) -> bool:
        """Publish a command for a gateway (QoS 1); False when the broker is not connected."""
        c = self.subscriber.client
        if not c.is_connected():
            return False
        c.publish(f"alanet/{gateway}/cmd/{kind}", json.dumps(payload, separators=(",", ":")), qos=1)
        return True

    # ---- settings ----
    def _load_settings(self) -> None:
        try:
            d = json.loads(self._settings_path.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError, OSError):
            return
        for key, s in (d.items() if isinstance(d, dict) else []):
            gw, _, wearer = key.partition("/")
            if ID_RE.match(gw) and ID_RE.match(wearer) and isinstance(s, dict):
                self.store.set_settings(gw, wearer, _clean_settings(s))

    def _save_settings(self) -> None:
        with self.store.lock:
            d = {f"{g}/{w}": v.settings for (g, w), v in self.store.wearers.items() if v.settings}
        try:
            atomic.write_text(self._settings_path, json.dumps(d))
        except OSError as exc:
            log.warning("cannot save %s: %s", self._settings_path, exc)

    # ---- HTTP (loop thread) ----
    def _app(self) -> Any:
        from aiohttp import web

        app = web.Application(client_max_size=16 << 10)
        for path in STATIC:
            app.router.add_get(path, self._static)
        app.router.add_get("/events", self._events)
        app.router.add_get("/api/snapshot", self._snapshot)
        app.router.add_get("/healthz", self._health)
        app.router.add_post("/api/command", self._command)
        app.router.add_post("/api/settings", self._settings)
        app.router.add_get(r"/report/{gateway}/{wearer}/{session}.{ext:html|csv}", self._report)
        return app

    async def _static(self, request: Any) -> Any:
        from aiohttp import web

        name, ctype = STATIC[request.path]
        return web.Response(body=_asset(name), headers={"Content-Type": ctype, "Cache-Control": "no-cache"})

    async def _health(self, request: Any) -> Any:
        from aiohttp import web

        return web.Response(text="ok\n")

    async def _snapshot(self, request: Any) -> Any:
        from aiohttp import web

        snap = self.store.snapshot()
        snap.update(self.hub.extra)
        return web.Response(text=dumps(snap), content_type="application/json", headers={"Cache-Control": "no-cache"})

    async def _events(self, request: Any) -> Any:
        from aiohttp import web

        got = self.hub.attach()
        if got is None:
            return web.Response(status=503, text="too many live viewers; retrying\n",
                                headers={"Retry-After": "5", "Cache-Control": "no-cache"})
        q, seen, snap = got
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
        try:
            await resp.prepare(request)
            await asyncio.wait_for(resp.write(b"retry: 1000\ndata: " + snap.encode() + b"\n\n"), WRITE_TIMEOUT_S)
            while True:
                try:
                    item = await asyncio.wait_for(q.get(), KEEPALIVE_S)
                except asyncio.TimeoutError:
                    await asyncio.wait_for(resp.write(b": keep-alive\n\n"), WRITE_TIMEOUT_S)
                    continue
                if item is None:
                    break
                chunks = []
                while item is not None:  # batch a burst into one write
                    seq, data = item
                    if seq > seen:
                        chunks.append(b"data: " + data.encode() + b"\n\n")
                    if len(chunks) >= 200:
                        break
                    try:
                        item = q.get_nowait()
                    except asyncio.QueueEmpty:
                        item = None
                if chunks:
                    await asyncio.wait_for(resp.write(b"".join(chunks)), WRITE_TIMEOUT_S)
        except (ConnectionError, asyncio.TimeoutError):
            pass
        finally:  # also when the viewer leaves: handler_cancellation cancels this task at once
            self.hub.detach(q)
        return resp

    async def _json_body(self, request: Any) -> dict[str, Any]:
        """The JSON object of a POST from the page itself (JSON content type, same origin)."""
        from aiohttp import web

        if self.read_only:
            raise web.HTTPForbidden(text="this page is read-only (alanet live --read-only)\n")
        if request.content_type != "application/json":
            raise web.HTTPUnsupportedMediaType(text="send application/json\n")
        origin = request.headers.get("Origin")
        if origin and origin.split("://", 1)[-1] != request.host:
            raise web.HTTPForbidden(text="cross-origin request refused\n")
        try:
            d = await request.json(loads=lambda s: json.loads(s, parse_constant=lambda _: None))
        except ValueError:
            raise web.HTTPBadRequest(text="body: not JSON\n") from None
        if not isinstance(d, dict):
            raise web.HTTPBadRequest(text="body: not a JSON object\n")
        for key in ("gateway", "wearer"):
            if not isinstance(d.get(key), str) or not ID_RE.match(d[key]):
                raise web.HTTPBadRequest(text=f"{key}: not a gateway / wearer id\n")
        return d

    async def _command(self, request: Any) -> Any:
        from aiohttp import web

        from alanet.device.sessions import exercise_id

        d = await self._json_body(request)
        action = d.get("action")
        payload: dict[str, Any] = {"wearer": d["wearer"], "source": "page"}
        try:
            if action == "exercise":
                kind = "exercise"
                payload["exercise"] = exercise_id(d.get("exercise"))
            elif action in ("start", "stop"):
                kind = "session"
                payload["action"] = action
                if action == "start" and d.get("exercise") is not None:
                    payload["exercise"] = exercise_id(d["exercise"])
            else:
                raise ValueError(f"action: {action!r} is not exercise, start or stop")
        except ValueError as exc:
            raise web.HTTPBadRequest(text=f"{exc}\n") from None
        if not self.publish_command(d["gateway"], kind, payload):
            raise web.HTTPServiceUnavailable(text="the MQTT broker is not connected\n")
        return web.json_response({"sent": kind, **payload}, status=202)

    async def _settings(self, request: Any) -> Any:
        from aiohttp import web

        d = await self._json_body(request)
        self.store.set_settings(d["gateway"], d["wearer"], _clean_settings(d))
        await self.loop.run_in_executor(None, self._save_settings)
        return web.json_response({"ok": True})

    async def _report(self, request: Any) -> Any:
        from aiohttp import web

        from alanet.device import report

        gw, wearer, session, ext = (request.match_info[k] for k in ("gateway", "wearer", "session", "ext"))
        if not (ID_RE.match(gw) and ID_RE.match(wearer) and SESSION_RE.match(session)):
            raise web.HTTPBadRequest(text="not a gateway / wearer / session id\n")
        path = self._log_path(gw, wearer, session)
        with self.store.lock:
            w = self.store.wearers.get((gw, wearer))
            running = bool(w and w.session and w.session.get("session") == session)
        if running or not path.is_file():  # ask the gateway for the log (again, while it still grows)
            fut = self.loop.create_future()
            self._waiters.setdefault((gw, wearer, session), []).append(fut)
            sent = self.publish_command(gw, "session", {"wearer": wearer, "action": "export", "session": session,
                                                        "source": "page"})
            if sent:
                try:
                    await asyncio.wait_for(fut, EXPORT_WAIT_S)
                except asyncio.TimeoutError:
                    pass
            if not path.is_file():
                raise web.HTTPGatewayTimeout(text=f"gateway {gw} did not send session {session} "
                                                  f"({'no answer' if sent else 'broker not connected'}); "
                                                  "is it online? Try again, or run `alanet report` on the gateway.\n")

        def render() -> tuple[str, str]:
            data = report.read_log(path)
            if ext == "csv":
                return report.render_csv(data), "text/csv"
            return report.render_html(data), "text/html"

        try:
            text, ctype = await self.loop.run_in_executor(None, render)
        except InputError as exc:
            raise web.HTTPUnprocessableEntity(text=f"{exc}\n") from None
        headers = {"Cache-Control": "no-cache"}
        if ext == "csv":
            headers["Content-Disposition"] = f'attachment; filename="{session}.csv"'
        return web.Response(text=text, content_type=ctype, charset="utf-8", headers=headers)

    # ---- lifecycle ----
    async def _serve(self) -> None:
        from aiohttp import web

        self._runner = web.AppRunner(self._app(), keepalive_timeout=self.idle_timeout, access_log=None,
                                     handle_signals=False, shutdown_timeout=1.0, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        socks = getattr(site._server, "sockets", None) or []  # the real port when asked for port 0
        if socks:
            self.port = int(socks[0].getsockname()[1])

    def start(self) -> None:
        """Bind the HTTP port (InputError if it cannot), then serve and subscribe in the background."""
        self._thread = threading.Thread(target=self.loop.run_forever, name="alanet-live-http", daemon=True)
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._serve(), self.loop).result(10)
        except OSError as exc:
            self._stop_loop()
            why = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
            raise InputError(f"--http-port {self.port} on {self.host}: cannot listen: {why}") from None
        self.subscriber.start()

    def stop(self) -> None:
        """Close the event streams and the server, then the MQTT subscriber."""
        async def shutdown() -> None:
            self.hub.close()
            if self._runner is not None:
                await self._runner.cleanup()

        if self._thread is not None and self._thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
            except Exception as exc:  # noqa: BLE001 - stopping must go on
                log.warning("live server shutdown: %s", exc)
        self.subscriber.stop()
        self._stop_loop()

    def _stop_loop(self) -> None:
        if self._thread is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)
            self._thread = None
        if not self.loop.is_running():
            self.loop.close()


def exercise_vocab() -> list[list[str]]:
    """``[id, label, colour]`` of each exercise, for the page (the report uses the same colours)."""
    from alanet.device.report import EXERCISE_COLOURS
    from alanet.device.sessions import EXERCISE_LABELS

    return [[k, v, EXERCISE_COLOURS[k]] for k, v in EXERCISE_LABELS.items()]


def _clean_settings(d: dict[str, Any]) -> dict[str, Any]:
    """Patient-view settings: ``sensitivity`` in [0.05, 1] (or None: the alert threshold), ``tone`` bool."""
    out: dict[str, Any] = {"tone": bool(d.get("tone", False))}
    s = d.get("sensitivity")
    if isinstance(s, (int, float)) and not isinstance(s, bool) and s == s:
        out["sensitivity"] = round(min(1.0, max(0.05, float(s))), 3)
    else:
        out["sensitivity"] = None
    return out


def wait_for_stop(poll: Callable[[], None] | None = None, interval: float = 1.0,
                  ready: Callable[[], None] | None = None) -> None:
    """Block until SIGINT/SIGTERM (calling ``poll`` every ``interval`` seconds).

    ``ready`` runs once the handlers are installed: a "serving" line printed there
    promises that a signal sent from then on stops the program cleanly."""
    stop = threading.Event()
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum: int, frame: object) -> None:
        stop.set()

    for s in old:
        signal.signal(s, handler)
    try:
        if ready is not None:
            ready()
        while not stop.is_set():
            if poll is not None:
                poll()
            stop.wait(interval)
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def broker_from_args(args: argparse.Namespace) -> BrokerConfig:
    b = parse_broker_url(args.broker, "--broker", "URL")
    if getattr(args, "ca_file", None):  # a private CA, e.g. a fleet's central broker (docs/fleet.md)
        if not b.tls:
            raise InputError("--ca-file: needs an mqtts:// broker URL")
        from dataclasses import replace

        b = replace(b, ca_file=args.ca_file)
    return b


def cmd_live(args: argparse.Namespace) -> int:
    """Entry point of ``alanet live``."""
    broker = broker_from_args(args)
    if not 0 <= args.http_port <= 65535:
        raise InputError(f"--http-port {args.http_port}: must be in 0..65535 (0: any free port)")
    if not args.refresh > 0:
        raise InputError(f"--refresh {args.refresh}: must be > 0 seconds")
    if args.gateway is not None and (not args.gateway or any(c in args.gateway for c in "/+#")):
        raise InputError(f"--gateway {args.gateway!r}: not a gateway id (no '/', '+', '#')")
    if not 1 <= args.max_clients <= 10000:
        raise InputError(f"--max-clients {args.max_clients}: must be in 1..10000")
    if not 0.5 <= args.idle_timeout <= 3600:
        raise InputError(f"--idle-timeout {args.idle_timeout}: must be in 0.5..3600 seconds")
    if args.terminal:
        from alanet.device.live.terminal import run_terminal

        return run_terminal(broker, gateway=args.gateway, interval=args.refresh, once=args.once)
    server = LiveServer(broker, host=args.host, port=args.http_port, gateway=args.gateway,
                        max_clients=args.max_clients, idle_timeout=args.idle_timeout,
                        data_dir=args.data_dir, read_only=args.read_only)
    server.start()

    def serving() -> None:
        print(f"alanet live: serving {server.url} (broker {server.store.broker}"
              f"{', gateway ' + args.gateway if args.gateway else ''}{', read-only' if args.read_only else ''})"
              "; Ctrl-C to stop", file=sys.stderr, flush=True)

    try:
        wait_for_stop(ready=serving)
    finally:
        server.stop()
    print("alanet live: stopped", file=sys.stderr)
    return 0


__all__ = ["LiveServer", "EventHub", "cmd_live", "wait_for_stop"]
