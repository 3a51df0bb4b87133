"""``alanet live``: the live feedback page (stdlib HTTP + Server-Sent Events) or a terminal view.

One process subscribes to ``alanet/#`` (or one gateway), keeps a
:class:`~alanet.device.live.store.LiveStore`, and serves:

- ``/`` (``index.html``, ``app.js``, ``style.css``): the page, all assets local;
- ``/events``: Server-Sent Events, first a ``snapshot`` then one event per change;
- ``/api/snapshot``: the same snapshot as plain JSON (scripts, checks).
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import queue
import signal
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any, Callable

from alanet.device.config import BrokerConfig, parse_broker_url
from alanet.device.live.store import LiveStore
from alanet.device.live.subscriber import Subscriber, topics_for
from alanet.errors import InputError

log = logging.getLogger(__name__)

STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
KEEPALIVE_S = 10.0
CLIENT_QUEUE = 2000


def _asset(name: str) -> bytes:
    return resources.files("alanet.device.live").joinpath("web", name).read_bytes()


def _drain(q: queue.Queue) -> None:
    while True:
        try:
            q.get_nowait()
        except queue.Empty:
            return


class EventHub:
    """Fans store events out to every connected browser (one bounded queue each)."""

    def __init__(self, store: LiveStore) -> None:
        self.store = store
        self._clients: set[queue.Queue] = set()
        self._lock = threading.Lock()
        self.closed = threading.Event()
        store.add_listener(self._publish)

    def _publish(self, ev: dict[str, Any]) -> None:
        data = json.dumps(ev, separators=(",", ":"))
        with self._lock:
            for q in list(self._clients):
                try:
                    q.put_nowait(data)
                except queue.Full:  # a stalled browser: drop it, it reconnects and gets a snapshot
                    self._clients.discard(q)
                    _drain(q)
                    q.put_nowait(None)

    def attach(self) -> tuple[queue.Queue, str]:
        """A new client's queue and the snapshot it starts from (no event lost or doubled)."""
        q: queue.Queue = queue.Queue(maxsize=CLIENT_QUEUE)
        with self.store.lock:
            with self._lock:
                self._clients.add(q)
            snap = self.store.snapshot()
        return q, json.dumps(snap, separators=(",", ":"))

    def detach(self, q: queue.Queue) -> None:
        with self._lock:
            self._clients.discard(q)

    def close(self) -> None:
        """Tell every open /events stream to end."""
        self.closed.set()
        with self._lock:
            for q in self._clients:
                try:
                    q.put_nowait(None)
                except queue.Full:
                    pass
            self._clients.clear()


def make_handler(hub: EventHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "alanet-live"
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *args: Any) -> None:  # quiet by default
            log.debug("%s " + fmt, self.address_string(), *args)

        def _send(self, status: int, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_HEAD(self) -> None:  # noqa: N802
            self.do_GET()

        def do_GET(self) -> None:  # noqa: N802
            path = self.path.split("?", 1)[0]
            if path in STATIC:
                name, ctype = STATIC[path]
                self._send(HTTPStatus.OK, _asset(name), ctype)
            elif path == "/events":
                self._events()
            elif path == "/api/snapshot":
                self._send(HTTPStatus.OK, json.dumps(hub.store.snapshot()).encode(), "application/json")
            elif path == "/healthz":
                self._send(HTTPStatus.OK, b"ok\n", "text/plain")
            else:
                self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")

        def _events(self) -> None:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("X-Accel-Buffering", "no")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            q, snap = hub.attach()
            try:
                self.wfile.write(b"retry: 1000\ndata: " + snap.encode() + b"\n\n")
                self.wfile.flush()
                while not hub.closed.is_set():
                    try:
                        data = q.get(timeout=KEEPALIVE_S)
                    except queue.Empty:
                        self.wfile.write(b": keep-alive\n\n")
                        self.wfile.flush()
                        continue
                    if data is None:
                        break
                    chunks = [data]
                    while len(chunks) < 200:  # batch a burst into one write
                        try:
                            more = q.get_nowait()
                        except queue.Empty:
                            break
                        if more is None:
                            break
                        chunks.append(more)
                    self.wfile.write(b"".join(b"data: " + c.encode() + b"\n\n" for c in chunks))
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError, OSError):
                pass
            finally:
                hub.detach(q)

    return Handler


class LiveServer:
    """The HTTP server and the MQTT subscriber, started and stopped together."""

    def __init__(self, broker: BrokerConfig, host: str = "127.0.0.1", port: int = 8080,
                 gateway: str | None = None) -> None:
        self.store = LiveStore()
        self.store.broker = f"{'mqtts' if broker.tls else 'mqtt'}://{broker.host}:{broker.port}"
        self.hub = EventHub(self.store)
        try:
            self.httpd = ThreadingHTTPServer((host, port), make_handler(self.hub))
        except OSError as exc:
            why = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
            raise InputError(f"--http-port {port} on {host}: cannot listen: {why}") from None
        self.httpd.daemon_threads = True
        self.subscriber = Subscriber(broker, topics_for(gateway), self.store.ingest, self.store.set_link)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/"

    def start(self) -> None:
        self.subscriber.start()
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="alanet-live-http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.hub.close()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.subscriber.stop()


def wait_for_stop(poll: Callable[[], None] | None = None, interval: float = 1.0) -> None:
    """Block until SIGINT/SIGTERM (calling ``poll`` every ``interval`` seconds)."""
    stop = threading.Event()
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum: int, frame: object) -> None:
        stop.set()

    for s in old:
        signal.signal(s, handler)
    try:
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
    if args.terminal:
        from alanet.device.live.terminal import run_terminal

        return run_terminal(broker, gateway=args.gateway, interval=args.refresh, once=args.once)
    server = LiveServer(broker, host=args.host, port=args.http_port, gateway=args.gateway)
    server.start()
    print(f"alanet live: serving {server.url} (broker {server.store.broker}"
          f"{', gateway ' + args.gateway if args.gateway else ''}); Ctrl-C to stop", file=sys.stderr, flush=True)
    try:
        wait_for_stop()
    finally:
        server.stop()
    print("alanet live: stopped", file=sys.stderr)
    return 0
