"""The gateway's MQTT connection: durable QoS 1 alerts, live state, retained status.

Built on paho-mqtt 2.x (callback API version 2), which owns the socket, the
keep-alive and the reconnects (network thread). MQTT 5 by default; a broker that
does not speak it (it answers "Unsupported protocol version") gets MQTT 3.1.1, with a
warning, unless ``mqtt.protocol`` says which one to use. This class adds what a
gateway needs on top:

- Alerts go through the :class:`~alanet.device.alert_queue.AlertQueue` first and are
  deleted only when the broker acknowledges them (QoS 1 PUBACK) **with a success
  reason code**. Under MQTT 5 a broker that refuses a publish (an ACL that denies the
  topic: reason 135 "Not authorized", quota exceeded, ...) says so in the PUBACK: the
  alert stays queued, the refusal is logged and reported (:meth:`MqttLink.publish_problem`,
  the gateway's status topic), and the refused alerts are sent again after a back-off
  (``retry_s`` doubling up to ``retry_max_s``). Under MQTT 3.1.1 a broker acknowledges
  a publish it denied and the alert is gone: use MQTT 5.
- The PUBACKs :meth:`MqttLink.poll` drains are deleted from the queue in one transaction,
  before the queue is read again (so an acknowledged alert is never handed out twice).
  A crash between a PUBACK and that commit re-sends the alert at the next start: a
  duplicate that subscribers drop by id (as after a PUBACK lost in a broker restart).
  :meth:`MqttLink.publish_alerts` commits several alerts at once.
- The queue is fed to paho in a window of at most ``window`` unacknowledged alerts
  (paho's in-flight limit), oldest first, reading the queue by position (it never
  re-reads the whole backlog). paho keeps what it was handed and retransmits it
  after a reconnect by itself; the link never hands it an alert twice, so neither a
  long outage nor a backlog duplicates alerts or grows paho's memory past the window.
- A broker that keeps the connection but stops acknowledging would hold the window
  forever (MQTT retransmits only on a new connection): when nothing has been
  acknowledged for ``ack_timeout_s`` while alerts wait, the link drops the connection
  and paho reconnects and retransmits.
- Alerts left in the queue by an earlier process (crash, SIGKILL) are published on connect.
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
import math
import queue
import socket
import ssl
import threading
import time
from collections import OrderedDict
from typing import Any, Callable, Sequence

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from alanet.device.alert_queue import AlertQueue, QueuedAlert
from alanet.device.config import BrokerConfig
from alanet.errors import InputError

log = logging.getLogger(__name__)

MQTT_PROTOCOLS = {"5": mqtt.MQTTv5, "3.1.1": mqtt.MQTTv311}


def no_delay(client: mqtt.Client, userdata: Any, sock: Any) -> None:
    """paho ``on_socket_open``: TCP_NODELAY. With Nagle's algorithm a QoS 1 publish could wait
    for the broker's delayed TCP ack (40 ms on Linux): p99 40 ms in ``bench/fleet.py``."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):  # not a TCP socket
        pass


def make_client(cfg: BrokerConfig, client_id: str = "", *, protocol: str | None = None, persistent: bool = False,
                reconnect: tuple[float, float] = (1, 8), max_inflight: int = 200) -> mqtt.Client:
    """A paho client set up for ``cfg`` (protocol, TLS, credentials, TCP_NODELAY); not yet connected.

    ``persistent``: keep the session at the broker (3.1.1: ``clean_session=False``; MQTT 5:
    see :func:`connect_async`).
    """
    proto = protocol or cfg.protocol or "5"
    if proto == "5":
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    else:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=not persistent,
                        protocol=mqtt.MQTTv311)
    if cfg.username:
        c.username_pw_set(cfg.username, cfg.password)
    if cfg.tls:
        try:
            c.tls_set(ca_certs=cfg.ca_file, certfile=cfg.cert_file, keyfile=cfg.key_file,
                      cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        except (ssl.SSLError, OSError, ValueError) as exc:
            key = "mqtt.cert_file" if cfg.cert_file else "mqtt.ca_file"
            raise InputError(f"{key}: cannot set up TLS: {exc}") from None
    c.reconnect_delay_set(min_delay=reconnect[0], max_delay=reconnect[1])
    c.on_socket_open = no_delay
    c.max_inflight_messages_set(max_inflight)
    c.max_queued_messages_set(0)
    return c


def connect_async(c: mqtt.Client, cfg: BrokerConfig, *, persistent: bool = False, session_expiry_s: int = 0,
                  max_packet: int | None = None, keepalive: int | None = None) -> None:
    """Start connecting (in the background once ``loop_start`` runs).

    MQTT 5 only: ``persistent`` keeps the session for ``session_expiry_s`` (``clean_start=False``),
    and ``max_packet`` asks the broker never to send this client a larger packet (it drops them).
    """
    ka = keepalive or cfg.keepalive
    if c.protocol == mqtt.MQTTv5:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = session_expiry_s if persistent else 0
        if max_packet:
            props.MaximumPacketSize = int(max_packet)
        c.connect_async(cfg.host, cfg.port, keepalive=ka, clean_start=not persistent, properties=props)
    else:
        c.connect_async(cfg.host, cfg.port, keepalive=ka)


class MqttLink:
    """One gateway's connection to the broker (see the module docstring)."""

    WINDOW = 100  # alerts handed to paho and not yet acknowledged, at most
    OUTBOX_MAX = 64  # held live-state messages sent at once when this many wait
    RETRY_S = 2.0  # first wait before refused alerts go again (doubles up to retry_max_s)

    def __init__(self, cfg: BrokerConfig, client_id: str, alert_queue: AlertQueue,
                 will_topic: str, will_payload: bytes, *, on_problem: Callable[[], None] | None = None,
                 retry_max_s: float = 300.0, ack_timeout_s: float = 60.0, window: int | None = None,
                 state_hold_s: float = 0.0, on_activity: Callable[[], None] | None = None) -> None:
        self.cfg = cfg
        # called on paho's thread after anything poll() must see arrived (the gateway's loop wakes for it)
        self._activity = on_activity or (lambda: None)
        # live state (QoS 0) held up to this long and sent together: paho's network thread wakes once per
        # message it is handed alone, and that wake costs several times the publish itself
        self.state_hold_s = float(state_hold_s)
        self._outbox: list[tuple[str, bytes]] = []
        self._outbox_since = 0.0
        self.queue = alert_queue
        self.window = int(window or self.WINDOW)
        self.retry_max_s = float(retry_max_s)
        self.ack_timeout_s = float(ack_timeout_s)
        self.on_problem = on_problem
        self.protocol = cfg.protocol or "5"
        self._client_id = cfg.client_id or client_id
        self._will = (will_topic, will_payload)
        self._subs: dict[str, Callable[[str, bytes], None]] = {}
        self.client = self._make_client()
        self._acks: queue.SimpleQueue[tuple[int, bool, str]] = queue.SimpleQueue()
        self._events: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._inflight: dict[int, str] = {}  # mid -> alert id (caller's thread only)
        self._handed: OrderedDict[str, str] = OrderedDict()  # alert id -> topic, for the alerts paho holds
        self._cursor = 0  # queue position of the newest alert taken from the queue
        self._fed = (-1, -1)  # (queue version, cursor) after a look that handed over everything queued
        self._generation = alert_queue.generation
        self._retry_at = math.inf  # when the refused alerts go again
        self._retry_s = self.RETRY_S
        self._last_progress = time.monotonic()  # last acknowledgement (or the first alert handed after a quiet time)
        self._retained: dict[str, bytes] = {}
        self._connected = threading.Event()
        self._first = threading.Event()  # set at the first connect outcome
        self.first_outcome: str | None = None  # "connected", "refused: <reason>" or "unreachable"
        self._unreachable_logged = False
        self.connects = 0
        self.acked = 0
        self.refused = 0  # PUBACKs with a failure reason code (alerts kept queued)
        self.last_refusal: tuple[float, str, str] | None = None  # (monotonic time, reason, topic)
        self.stalls = 0  # connections dropped because the broker stopped acknowledging
        self.last_error: str | None = None

    def _make_client(self) -> mqtt.Client:
        c = make_client(self.cfg, self._client_id, protocol=self.protocol, max_inflight=self.window)
        c.will_set(self._will[0], self._will[1], qos=1, retain=True)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        c.on_connect_fail = self._on_connect_fail
        c.on_message = self._on_message
        return c

    def _fall_back_to_311(self) -> None:
        """The broker does not speak MQTT 5: start again with 3.1.1 (what paho held goes back to the queue)."""
        log.warning("broker %s does not speak MQTT 5: using MQTT 3.1.1. A publish the broker refuses (an ACL) "
                    "cannot be told from a delivered one under 3.1.1; set mqtt.protocol to choose", self.cfg.url)
        old = self.client
        old.loop_stop()
        try:
            old.disconnect()
        except (OSError, ValueError):
            pass
        self.protocol = "3.1.1"
        self._inflight.clear()
        self._handed.clear()
        self._rewind()
        self.client = self._make_client()
        self.start()

    # ---- paho callbacks (network thread): only enqueue ----
    def _event(self, event: tuple[str, Any]) -> None:
        """Queue ``event`` for :meth:`poll` and say something arrived (``on_activity``)."""
        self._events.put(event)
        self._activity()

    def _outcome(self, what: str) -> None:
        if not self._first.is_set():
            self.first_outcome = what
            self._first.set()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            if not (str(reason) == "Unsupported protocol version" and self.cfg.protocol is None):
                self._outcome(f"refused: {reason}")  # (a fall-back to 3.1.1 is not an outcome yet)
            self._event(("refused", str(reason)))
            return
        self._connected.set()  # before the outcome: whoever waits for it then sees a connected link
        self._outcome("connected")
        self._event(("connected", None))

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self._outcome("unreachable")
        self._event(("unreachable", None))

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self._connected.clear()
        self._event(("disconnected", str(reason)))

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        failed = bool(getattr(reason, "is_failure", False))
        self._acks.put((mid, failed, str(reason) if failed else ""))
        self._activity()  # as _event: poll() applies the acknowledgement

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self._event(("message", (msg.topic, bytes(msg.payload))))

    # ---- caller's thread ----
    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def inflight(self) -> int:
        """Alerts handed to paho and not yet acknowledged (at most ``window``)."""
        return len(self._handed)

    def counters(self) -> dict[str, int]:
        """For the gateway's status: acknowledged, refused, in flight, connections dropped for stalling."""
        return {"acked": self.acked, "publish_refused": self.refused, "inflight": len(self._handed),
                "ack_stalls": self.stalls}

    def publish_problem(self) -> str | None:
        """A line about refused publishes while they go on (None when there is nothing to say)."""
        if self.last_refusal is None:
            return None
        at, reason, topic = self.last_refusal
        if time.monotonic() - at > max(60.0, 2 * self._retry_s):
            return None
        nxt = "" if math.isinf(self._retry_at) else f"; next try in {max(0.0, self._retry_at - time.monotonic()):.0f} s"
        return (f"the broker refused {self.refused} alert publish(es) ({reason}, latest on {topic}); "
                f"the alerts stay queued{nxt}")

    def start(self) -> None:
        """Connect in the background; paho keeps reconnecting while the broker is away."""
        connect_async(self.client, self.cfg)
        self.client.loop_start()

    def wait_first_outcome(self, timeout: float) -> str | None:
        """The first connection attempt's result (None if still undecided after ``timeout``).

        Polls meanwhile, so a fall-back to MQTT 3.1.1 happens within the wait.
        """
        deadline = time.monotonic() + timeout
        while not self._first.wait(min(0.05, max(0.0, deadline - time.monotonic()))):
            self.poll()
            if time.monotonic() >= deadline:
                break
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
        """Fire-and-forget (live state): dropped while disconnected. Held live state goes first (a fault
        report must not overtake an older window's state on the same topic)."""
        if self._outbox:
            self.send_outbox()
        if self.connected:
            self.client.publish(topic, payload, qos=qos)

    def publish_many(self, messages: Sequence[tuple[str, bytes]]) -> None:
        """:meth:`publish` for several ``(topic, payload)`` in a row; with a ``state_hold_s`` they join
        the outbox, which :meth:`poll` sends once its oldest message has waited that long (or at
        ``OUTBOX_MAX`` messages), so that paho's network thread wakes once for many."""
        if self.state_hold_s <= 0:
            self._send_many(messages)
            return
        if not self._outbox:
            self._outbox_since = time.monotonic()
        self._outbox.extend(messages)
        if len(self._outbox) >= self.OUTBOX_MAX:
            self.send_outbox()

    def outbox_wait_s(self, now: float) -> float:
        """Seconds until the held live state is due (``inf`` when none is held)."""
        return max(0.0, self._outbox_since + self.state_hold_s - now) if self._outbox else math.inf

    def send_outbox(self) -> None:
        """Send the held live state now."""
        out, self._outbox = self._outbox, []
        self._send_many(out)

    def _send_many(self, messages: Sequence[tuple[str, bytes]]) -> None:
        if self.connected:  # fire-and-forget: dropped while disconnected, as publish()
            publish = self.client.publish
            for topic, payload in messages:
                publish(topic, payload, qos=0)

    def publish_alert(self, alert_id: str, topic: str, payload: bytes) -> None:
        """Commit the alert to the durable queue, then hand it to paho (QoS 1) when the window has room."""
        self.queue.put(alert_id, topic, payload)
        self._feed()

    def publish_alerts(self, alerts: Sequence[tuple[str, str, bytes]]) -> None:
        """:meth:`publish_alert` for several ``(alert_id, topic, payload)`` at once: one commit for all.

        The runtime calls it with the alerts of one loop iteration; they are on disk
        before any of them is handed to paho.
        """
        if alerts:
            self.queue.put_many(alerts)
            self._feed()

    def _send(self, item: QueuedAlert) -> None:
        if not self._handed:
            self._last_progress = time.monotonic()  # the ack clock starts with the first alert in flight
        info = self.client.publish(item.topic, item.payload, qos=1)
        self._inflight[info.mid] = item.id
        self._handed[item.id] = item.topic

    def _rewind(self) -> None:
        """Take the queue from its start again at the next :meth:`_feed` (what was handed over is skipped)."""
        self._cursor, self._fed = 0, (-1, -1)

    def _feed(self) -> None:
        """Hand the next queued alerts to paho, oldest first, up to the window."""
        if self.queue.generation != self._generation:  # the queue was rebuilt (corrupt file): positions restart
            self._generation = self.queue.generation
            self._rewind()
        free = self.window - len(self._handed)
        if free <= 0:
            return
        seen = (self.queue.version, self._cursor)
        if seen == self._fed:  # nothing was queued since the last look found everything handed over
            return
        items = self.queue.after(self._cursor, free)
        if len(items) < free and not self.queue.acked_unsaved:  # (skipped rows make a short answer no proof)
            self._fed = (seen[0], max(seen[1], max((i.n for i in items), default=0)))
        for item in items:
            if item.n:
                self._cursor = max(self._cursor, item.n)
            if item.id in self._handed:
                continue
            self._send(item)
            free -= 1
            if free <= 0:
                return

    def poll(self) -> None:
        """Apply PUBACKs to the queue, react to (re)connects, feed the window. Call often from one thread."""
        while True:
            try:
                kind, detail = self._events.get_nowait()
            except queue.Empty:
                break
            if kind == "connected":
                self.connects += 1
                self.last_error = None
                self._unreachable_logged = False
                self._last_progress = time.monotonic()
                log.info("connected to %s (connection %d)", self.cfg.url, self.connects)
                # Subscribe before announcing: the broker handles one connection's packets in
                # order, so a command sent by someone who saw the retained "online" status is
                # never published before the gateway's subscription exists.
                for topic_filter in self._subs:
                    self.client.subscribe(topic_filter, qos=1)
                for topic, payload in self._retained.items():
                    self.client.publish(topic, payload, qos=1, retain=True)
            elif kind == "refused":
                if detail == "Unsupported protocol version" and self.cfg.protocol is None and self.protocol == "5":
                    self._fall_back_to_311()
                    continue
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
        acked: list[str] = []
        while True:
            try:
                mid, failed, reason = self._acks.get_nowait()
            except queue.Empty:
                break
            alert_id = self._inflight.pop(mid, None)
            if alert_id is None:
                continue
            topic = self._handed.pop(alert_id, "")
            self._last_progress = time.monotonic()
            if failed:
                self._refused(alert_id, reason, topic)
            else:
                acked.append(alert_id)
        if acked:  # one commit for every PUBACK this poll drained, before anything is fed again
            self.acked += self.queue.delete_many(acked)
        now = time.monotonic()
        if now >= self._retry_at and self.connected:  # a new round over the queue for the refused alerts
            self._retry_at = math.inf
            self._rewind()
            log.info("sending the alerts the broker refused again")
        self._feed()
        if self.outbox_wait_s(now) <= 0:
            self.send_outbox()
        if self._handed and self.connected and now - self._last_progress > self.ack_timeout_s:
            self._drop_stalled_connection(now)

    def _dispatch(self, topic: str, payload: bytes) -> None:
        for topic_filter, handler in self._subs.items():
            if mqtt.topic_matches_sub(topic_filter, topic):
                try:
                    handler(topic, payload)
                except Exception:  # noqa: BLE001 - a bad message must not stop the gateway
                    log.exception("cannot handle a message on %s", topic)
                return

    def _refused(self, alert_id: str, reason: str, topic: str) -> None:
        """The broker refused an alert (PUBACK reason code): keep it queued, say so, retry later."""
        self.refused += 1
        quiet = math.inf if self.last_refusal is None else time.monotonic() - self.last_refusal[0]
        first = quiet > max(60.0, 2 * self._retry_s)
        if quiet > self.retry_max_s:  # a new episode: start the back-off again
            self._retry_s = self.RETRY_S
        self.last_refusal = (time.monotonic(), reason, topic)
        if first or self.refused in (10, 100, 1000) or self.refused % 10000 == 0:
            log.error("the broker %s REFUSED alert %s (%s); it stays queued and is sent again later (%d refused so "
                      "far). Check the broker's ACL for this gateway", self.cfg.url, alert_id, reason, self.refused)
            if self.on_problem is not None:
                self.on_problem()
        if math.isinf(self._retry_at):
            self._retry_at = time.monotonic() + self._retry_s
            self._retry_s = min(self._retry_s * 2, self.retry_max_s)

    def _drop_stalled_connection(self, now: float) -> None:
        """The broker holds our alerts unacknowledged: reconnect, so paho retransmits them."""
        self.stalls += 1
        self._last_progress = now
        log.error("broker %s has acknowledged nothing for %.0f s with %d alert(s) in flight: reconnecting",
                  self.cfg.url, self.ack_timeout_s, len(self._handed))
        sock = self.client.socket()
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # paho sees the connection lost and reconnects
            except OSError:
                pass

    def flush(self, timeout: float) -> bool:
        """Send the held live state; wait until every queued alert has been acknowledged (or ``timeout``)."""
        self.send_outbox()
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
        self.send_outbox()
        if self.connected:
            info = self.client.publish(status_topic, offline_payload, qos=1, retain=True)
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError):
                pass
            self.flush(min(timeout, 1.0))
        self.client.disconnect()
        self.client.loop_stop()
