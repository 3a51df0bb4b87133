"""The gateway's MQTT connection: durable QoS 1 alerts, live state, retained status.

Built on paho-mqtt 2.x (callback API version 2), which owns the socket, the
keep-alive and the reconnects (network thread). This class adds what a gateway
needs on top:

- Alerts go through the :class:`~alanet.device.alert_queue.AlertQueue` first and are
  deleted only when paho reports the broker's PUBACK for their message id. Alerts left
  in the queue by an earlier process (crash, SIGKILL) are published on connect.
- Retained topics (status, model) are re-sent on every (re)connect; the status topic
  carries a retained last will ``{"state": "offline"}``.
- Subscriptions (:meth:`MqttLink.subscribe`, the session and exercise commands) are
  renewed on every (re)connect; their messages are handled in :meth:`poll`.

Threading: every publish happens on the caller's thread (the runtime's main loop);
paho's callbacks only push events onto thread-safe queues that :meth:`poll` drains.
That avoids a lock-order deadlock with paho's internal mutex, which is held while
``on_publish`` runs.
"""

from __future__ import annotations

import logging
import queue
import socket
import ssl
import threading
import time
from typing import Any, Callable

import paho.mqtt.client as mqtt

from alanet.device.alert_queue import AlertQueue
from alanet.device.config import BrokerConfig
from alanet.errors import InputError

log = logging.getLogger(__name__)


def no_delay(client: mqtt.Client, userdata: Any, sock: Any) -> None:
    """paho ``on_socket_open``: TCP_NODELAY. With Nagle's algorithm a QoS 1 publish could wait
    for the broker's delayed TCP ack (40 ms on Linux): p99 40 ms in ``bench/fleet.py``."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):  # not a TCP socket
        pass


def make_client(cfg: BrokerConfig, client_id: str = "", clean_session: bool = True) -> mqtt.Client:
    """A paho client set up for ``cfg`` (TLS, credentials); not yet connected."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cfg.client_id or client_id,
                    clean_session=clean_session, protocol=mqtt.MQTTv311)
    if cfg.username:
        c.username_pw_set(cfg.username, cfg.password)
    if cfg.tls:
        try:
            c.tls_set(ca_certs=cfg.ca_file, certfile=cfg.cert_file, keyfile=cfg.key_file,
                      cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        except (ssl.SSLError, OSError, ValueError) as exc:
            key = "mqtt.cert_file" if cfg.cert_file else "mqtt.ca_file"
            raise InputError(f"{key}: cannot set up TLS: {exc}") from None
    c.reconnect_delay_set(min_delay=1, max_delay=8)
    c.on_socket_open = no_delay
    c.max_inflight_messages_set(200)
    return c


class MqttLink:
    """One gateway's connection to the broker (see the module docstring)."""

    RESEND_AFTER_S = 60.0  # re-publish an alert still unacknowledged this long after a connect

    def __init__(self, cfg: BrokerConfig, client_id: str, alert_queue: AlertQueue,
                 will_topic: str, will_payload: bytes) -> None:
        self.cfg = cfg
        self.queue = alert_queue
        self.client = make_client(cfg, client_id)
        self.client.will_set(will_topic, will_payload, qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_message = self._on_message
        self._subs: dict[str, Callable[[str, bytes], None]] = {}
        self._acks: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._events: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._inflight: dict[int, str] = {}  # mid -> alert id (caller's thread only)
        self._handed: dict[str, float] = {}  # alert id -> when handed to paho
        self._retained: dict[str, bytes] = {}
        self._connected = threading.Event()
        self._first = threading.Event()  # set at the first connect outcome
        self.first_outcome: str | None = None  # "connected", "refused: <reason>" or "unreachable"
        self._unreachable_logged = False
        self.connects = 0
        self.acked = 0
        self.last_error: str | None = None

    # ---- paho callbacks (network thread): only enqueue ----
    def _outcome(self, what: str) -> None:
        if not self._first.is_set():
            self.first_outcome = what
            self._first.set()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            self._outcome(f"refused: {reason}")
            self._events.put(("refused", str(reason)))
            return
        self._outcome("connected")
        self._connected.set()
        self._events.put(("connected", None))

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self._outcome("unreachable")
        self._events.put(("unreachable", None))

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self._connected.clear()
        self._events.put(("disconnected", str(reason)))

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        self._acks.put(mid)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self._events.put(("message", (msg.topic, bytes(msg.payload))))

    # ---- caller's thread ----
    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> None:
        """Connect in the background; paho keeps reconnecting while the broker is away."""
        self.client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive)
        self.client.loop_start()

    def wait_first_outcome(self, timeout: float) -> str | None:
        """The first connection attempt's result (None if still undecided after ``timeout``)."""
        self._first.wait(timeout)
        return self.first_outcome

    def wait_connected(self, timeout: float) -> bool:
        ok = self._connected.wait(timeout)
        self.poll()
        return ok

    def set_retained(self, topic: str, payload: bytes) -> None:
        """Publish ``payload`` retained now (if connected) and again after every reconnect."""
        self._retained[topic] = payload
        if self.connected:
            self.client.publish(topic, payload, qos=1, retain=True)

    def subscribe(self, topic_filter: str, handler: Callable[[str, bytes], None]) -> None:
        """Receive ``topic_filter`` (QoS 1, renewed after every reconnect); ``handler(topic, payload)``
        runs on the caller's thread, inside :meth:`poll`."""
        self._subs[topic_filter] = handler
        if self.connected:
            self.client.subscribe(topic_filter, qos=1)

    def publish(self, topic: str, payload: bytes, qos: int = 0) -> None:
        """Fire-and-forget (live state): dropped while disconnected."""
        if self.connected:
            self.client.publish(topic, payload, qos=qos)

    def publish_alert(self, alert_id: str, topic: str, payload: bytes) -> None:
        """Commit the alert to the durable queue, then hand it to paho (QoS 1)."""
        self.queue.put(alert_id, topic, payload)
        self._send(alert_id, topic, payload)

    def _send(self, alert_id: str, topic: str, payload: bytes) -> None:
        info = self.client.publish(topic, payload, qos=1)
        self._inflight[info.mid] = alert_id
        self._handed[alert_id] = time.monotonic()

    def poll(self) -> None:
        """Apply PUBACKs to the queue, react to (re)connects. Call often from one thread."""
        while True:
            try:
                kind, detail = self._events.get_nowait()
            except queue.Empty:
                break
            if kind == "connected":
                self.connects += 1
                self.last_error = None
                self._unreachable_logged = False
                log.info("connected to %s (connection %d)", self.cfg.url, self.connects)
                for topic, payload in self._retained.items():
                    self.client.publish(topic, payload, qos=1, retain=True)
                for topic_filter in self._subs:
                    self.client.subscribe(topic_filter, qos=1)
                self._drain_queue(stale_only=False)
            elif kind == "refused":
                if detail != self.last_error:
                    log.error("broker %s refused the connection: %s", self.cfg.url, detail)
                self.last_error = detail
            elif kind == "unreachable":
                if not self._unreachable_logged:
                    log.warning("broker %s unreachable; retrying (alerts stay queued meanwhile)", self.cfg.url)
                    self._unreachable_logged = True
            elif kind == "disconnected":
                log.warning("lost the broker %s (%s); alerts stay queued, reconnecting", self.cfg.url, detail)
            elif kind == "message":
                self._dispatch(*detail)
        while True:
            try:
                mid = self._acks.get_nowait()
            except queue.Empty:
                break
            alert_id = self._inflight.pop(mid, None)
            if alert_id is not None:
                self._handed.pop(alert_id, None)
                if self.queue.delete(alert_id):
                    self.acked += 1
        if self.connected and self._handed:
            oldest = min(self._handed.values())
            if time.monotonic() - oldest > self.RESEND_AFTER_S:
                self._drain_queue(stale_only=True)

    def _dispatch(self, topic: str, payload: bytes) -> None:
        for topic_filter, handler in self._subs.items():
            if mqtt.topic_matches_sub(topic_filter, topic):
                try:
                    handler(topic, payload)
                except Exception:  # noqa: BLE001 - a bad message must not stop the gateway
                    log.exception("cannot handle a message on %s", topic)
                return

    def _drain_queue(self, stale_only: bool) -> None:
        """Hand queued alerts to paho: those it does not hold yet (or holds for too long)."""
        now = time.monotonic()
        for item in self.queue.pending():
            handed = self._handed.get(item.id)
            if handed is None and not stale_only or handed is not None and now - handed > self.RESEND_AFTER_S:
                self._send(item.id, item.topic, item.payload)

    def flush(self, timeout: float) -> bool:
        """Wait until every queued alert has been acknowledged (or ``timeout``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.poll()
            if len(self.queue) == 0:
                return True
            time.sleep(0.01)
        return False

    def stop(self, status_topic: str, offline_payload: bytes, timeout: float = 2.0) -> None:
        """Publish the retained offline status (if connected), disconnect, stop the thread."""
        self.poll()
        if self.connected:
            info = self.client.publish(status_topic, offline_payload, qos=1, retain=True)
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError):
                pass
            self.flush(min(timeout, 1.0))
        self.client.disconnect()
        self.client.loop_stop()
