"""``alanet alerts``: watch a gateway's alerts, live state and status from the broker.

Alerts are de-duplicated by id (delivery is at-least-once). Live state is shown at
most every ``state_every`` seconds per wearer so the screen stays readable.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
import threading
import time
from collections import deque
from dataclasses import replace
from typing import Any, Callable, TextIO

from alanet.device.config import parse_broker_url
from alanet.errors import InputError


def _clock(iso: str | None = None) -> str:
    if iso:
        try:
            t = _dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone()
            return t.strftime("%H:%M:%S")
        except ValueError:
            pass
    return time.strftime("%H:%M:%S")


def _bar(p: float, width: int = 10) -> str:
    n = max(0, min(width, int(round(p * width))))
    return "#" * n + "." * (width - n)


def format_alert(a: dict[str, Any]) -> str:
    """One line for an alert, e.g. ``14:02:11  ward3/p017  PROTECTIVE RAISED  p=0.83  at 12.0-15.8 s``."""
    who = f"{a.get('gateway', '?')}/{a.get('wearer', '?')}"
    typ, state = str(a.get("type", "?")), str(a.get("state", "?"))
    p = float(a.get("probability", 0.0))
    t0, t1 = float(a.get("t_start", 0.0)), float(a.get("t_end", 0.0))
    if state == "raised":
        what = f"{typ.upper()} RAISED   p={p:.2f}  since {t0:.1f} s (confirmed at {t1:.1f} s)"
    elif state == "cleared":
        what = f"{typ} cleared    p={p:.2f}  episode {t0:.1f}-{t1:.1f} s ({t1 - t0:.1f} s)"
    else:
        what = f"{typ} level -> {state.upper()}  p={p:.2f}  since {t0:.1f} s"
    return f"{_clock(a.get('time'))}  {who:<16} {what}  [{str(a.get('id', ''))[:8]}]"


def format_state(s: dict[str, Any]) -> str:
    who = f"{s.get('gateway', '?')}/{s.get('wearer', '?')}"
    probs = s.get("probabilities") or {}
    sm = float(s.get("smoothed", 0.0))
    ps = " ".join(f"{k}={float(v):.2f}" for k, v in probs.items())
    return f"{_clock()}  {who:<16} state {str(s.get('state')):<8} smoothed {sm:.2f} [{_bar(sm)}]  t={float(s.get('t_end', 0)):.1f} s  {ps}"


def format_status(s: dict[str, Any]) -> str:
    gw = s.get("gateway", "?")
    if s.get("state") != "online":
        return f"{_clock(s.get('time'))}  {gw:<16} gateway OFFLINE"
    c = s.get("counters") or {}
    return (f"{_clock(s.get('time'))}  {gw:<16} gateway online  model {s.get('model')}  frames {c.get('frames', 0)}"
            f"  windows {c.get('windows', 0)}  crc errors {c.get('crc_errors', 0)}  gaps {c.get('gaps', 0)}"
            f"  inference {float(c.get('inference_ms', 0)):.2f} ms  queued {c.get('queue_depth', 0)}")


class Dedup:
    """Remembers the last ``n`` alert ids."""

    def __init__(self, n: int = 10000) -> None:
        self._ids: set[str] = set()
        self._order: deque[str] = deque()
        self.n = n

    def first(self, alert_id: str) -> bool:
        if alert_id in self._ids:
            return False
        self._ids.add(alert_id)
        self._order.append(alert_id)
        if len(self._order) > self.n:
            self._ids.discard(self._order.popleft())
        return True


class AlertWatcher:
    """Subscribes to ``alanet/<gateway>/...`` and calls back with parsed payloads.

    ``on_alert(payload)`` only for the first copy of each id; ``on_state``, ``on_status``
    for every message; ``on_bridge(gateway, up)`` for the link notifications of
    gateways behind a Mosquitto bridge (``alanet/<gw>/bridge``, docs/fleet.md). Runs paho's network thread; call :meth:`close` at the end.
    ``persistent`` (needs ``client_id``): a persistent session (clean_session false,
    alerts subscribed at QoS 1), so the broker keeps the alerts published while this
    watcher is disconnected (a restart of either, or of a bridge in between) and
    delivers them when it is back.
    """

    def __init__(self, broker_url: str, gateway: str = "+", *, ca_file: str | None = None,
                 on_alert: Callable[[dict], None] | None = None, on_state: Callable[[dict], None] | None = None,
                 on_status: Callable[[dict], None] | None = None, client_id: str = "",
                 persistent: bool = False, on_bridge: Callable[[str, bool], None] | None = None) -> None:
        import paho.mqtt.client as mqtt

        from alanet.device.mqtt_link import make_client

        cfg = parse_broker_url(broker_url, "--broker", "broker")
        if ca_file:
            if not cfg.tls:
                raise InputError("--ca-file: needs an mqtts:// broker URL")
            cfg = replace(cfg, ca_file=ca_file)
        if gateway != "+" and ("/" in gateway or "#" in gateway or "+" in gateway):
            raise InputError(f"--gateway: {gateway!r} is not a gateway id")
        self.cfg = cfg
        self.gateway = gateway
        self.on_alert, self.on_state, self.on_status, self.on_bridge = on_alert, on_state, on_status, on_bridge
        self.dedup = Dedup()
        self.duplicates = 0
        self.connected = threading.Event()
        if persistent and not (client_id or cfg.client_id):
            raise InputError("--session: a persistent session needs a client id")
        self.client = make_client(cfg, cfg.client_id or client_id, protocol=cfg.protocol or "3.1.1",  # a subscriber: any broker
                                  persistent=persistent)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self._mqtt = mqtt

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            print(f"broker refused the connection: {reason}", file=sys.stderr)
            return
        g = self.gateway
        client.subscribe([(f"alanet/{g}/+/alert", 1), (f"alanet/{g}/status", 1)]
                         + ([(f"alanet/{g}/+/state", 0)] if self.on_state else [])
                         + ([(f"alanet/{g}/bridge", 1)] if self.on_bridge else []))
        self.connected.set()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        if msg.topic.endswith("/bridge"):  # "1" / "0", not JSON
            if self.on_bridge:
                self.on_bridge(msg.topic.split("/")[1], bytes(msg.payload).strip() == b"1")
            return
        try:
            d = json.loads(msg.payload)
        except (ValueError, UnicodeDecodeError):
            return
        if not isinstance(d, dict):
            return
        t = msg.topic
        if t.endswith("/alert"):
            if self.dedup.first(str(d.get("id"))):
                if self.on_alert:
                    self.on_alert(d)
            else:
                self.duplicates += 1
        elif t.endswith("/state"):
            if self.on_state:
                self.on_state(d)
        elif t.endswith("/status"):
            if self.on_status:
                self.on_status(d)

    def start(self) -> "AlertWatcher":
        try:
            self.client.connect(self.cfg.host, self.cfg.port, keepalive=30)
        except OSError as exc:
            raise InputError(f"--broker: cannot reach {self.cfg.url}: {exc.strerror or exc}") from None
        self.client.loop_start()
        return self

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def cmd_alerts(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """``alanet alerts``."""
    lock = threading.Lock()
    n_alerts = 0
    done = threading.Event()
    last_state: dict[str, float] = {}
    state_every = 2.0

    def emit(line: str) -> None:
        with lock:
            print(line, file=out, flush=True)

    def on_alert(a: dict) -> None:
        nonlocal n_alerts
        emit(json.dumps(a) if args.json else format_alert(a))
        n_alerts += 1
        if args.count and n_alerts >= args.count:
            done.set()

    def on_state(s: dict) -> None:
        key = f"{s.get('gateway')}/{s.get('wearer')}"
        now = time.monotonic()
        if args.json:
            emit(json.dumps(s))
        elif now - last_state.get(key, -1e9) >= state_every:
            last_state[key] = now
            emit(format_state(s))

    def on_status(s: dict) -> None:
        emit(json.dumps(s) if args.json else format_status(s))

    def on_bridge(gateway: str, up: bool) -> None:
        emit(json.dumps({"gateway": gateway, "bridge": "up" if up else "down"}) if args.json else
             f"{_clock()}  {gateway:<16} link to this broker {'up' if up else 'DOWN (its bridge lost the connection)'}")

    session = getattr(args, "session", None)
    w = AlertWatcher(args.broker, args.gateway, ca_file=args.ca_file, on_alert=on_alert,
                     on_state=on_state if args.state else None, on_status=on_status,
                     client_id=session or "", persistent=bool(session), on_bridge=on_bridge).start()
    if not args.json:
        print(f"watching {args.broker} (gateway {'any' if args.gateway == '+' else args.gateway}); Ctrl-C to stop",
              file=sys.stderr)
    try:
        done.wait(args.timeout if args.timeout > 0 else None)
    except KeyboardInterrupt:
        pass
    finally:
        w.close()
    return 0
