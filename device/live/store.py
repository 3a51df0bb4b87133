"""What the live views show, built from the gateways' MQTT messages (no I/O, thread-safe).

:class:`LiveStore` takes ``(topic, payload)`` pairs from ``alanet/#`` and keeps, per
gateway, the status (online/offline, counters) and the model in use, and per wearer
a short trace of the protective-behaviour probability, the current pain-level
estimate, the exercise, what drove the last window (attention), the active alerts,
the running session (with its timeline) and the history of finished sessions. Every
change becomes a small JSON-ready event that the web page (Server-Sent Events) and the
terminal view apply to their own copy; :meth:`LiveStore.snapshot` gives the whole
picture to a new viewer. Events carry an increasing ``seq`` (a viewer that starts from
a snapshot skips events it already holds).

Payloads follow ``alanet/device/schemas/{status,state,alert,session,history}.schema.json``;
anything that does not parse is counted and skipped, never fatal. ``NaN`` and
``Infinity`` (which Python's JSON parser accepts and a browser's rejects) become
``null`` on the way in, so one bad message cannot break a viewer.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

DEFAULT_THRESHOLD = 0.6
TRACE_LEN = 600  # samples kept per wearer (~7 min at one window every 0.75 s)
RECENT_ALERTS = 20
TIMELINE_LEN = 4800  # session timeline points kept per wearer (1 h at one window every 0.75 s), then halved
HISTORY_LEN = 100  # finished-session summaries kept per wearer

Event = dict[str, Any]
Listener = Callable[[Event], None]


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def loads(payload: bytes) -> Any:
    """JSON with ``NaN`` / ``Infinity`` / ``-Infinity`` read as ``None``."""
    return json.loads(payload.decode("utf-8"), parse_constant=lambda _: None)


def finite(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by ``None`` (for JSON a browser accepts)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def dumps(obj: Any) -> str:
    """Strict JSON (no ``NaN``) for viewers, whatever ``obj`` holds."""
    try:
        return json.dumps(obj, separators=(",", ":"), allow_nan=False)
    except ValueError:
        return json.dumps(finite(obj), separators=(",", ":"), allow_nan=False)


@dataclass
class WearerView:
    """Everything the views show for one wearer."""

    gateway: str
    wearer: str
    task: str | None = None
    samples: int = 0
    trace: deque = field(default_factory=lambda: deque(maxlen=TRACE_LEN))  # (received, smoothed, raw)
    probability: float | None = None  # smoothed protective probability (the decision value)
    raw: float | None = None  # this window's positive-class probability
    protective_active: bool | None = None
    pain: dict[str, Any] | None = None  # {"label", "level", "probabilities", "smoothed"}
    active: dict[str, dict[str, Any]] = field(default_factory=dict)  # alert type -> alert
    recent: deque = field(default_factory=lambda: deque(maxlen=RECENT_ALERTS))
    last_state: float | None = None  # receive time of the last state message
    t_end: float | None = None
    exercise: str | None = None  # from state messages and the retained session topic
    attention: dict[str, Any] | None = None  # what drove the last window (models with attention)
    session: dict[str, Any] | None = None  # the retained alanet/<gw>/<wearer>/session message
    timeline: list = field(default_factory=list)  # active session: [received, smoothed, active 0/1, exercise]
    timeline_session: str | None = None
    history: list = field(default_factory=list)  # summaries of finished sessions (oldest first)
    settings: dict[str, Any] = field(default_factory=dict)  # patient view: sensitivity, tone (set on the page)

    def to_dict(self, trace: bool = True) -> dict[str, Any]:
        """The wearer for viewers; ``trace`` adds the trace, the session timeline and the history."""
        d = {
            "gateway": self.gateway, "wearer": self.wearer, "task": self.task, "samples": self.samples,
            "probability": self.probability, "raw": self.raw, "protective_active": self.protective_active,
            "pain": self.pain, "active": list(self.active.values()), "recent": list(self.recent),
            "last_state": self.last_state, "t_end": self.t_end, "exercise": self.exercise,
            "attention": self.attention, "session": self.session, "settings": self.settings,
            "timeline_session": self.timeline_session,
        }
        if trace:
            d["trace"] = [list(s) for s in self.trace]
            d["timeline"] = [list(s) for s in self.timeline]
            d["history"] = list(self.history)
        return d


@dataclass
class GatewayView:
    """Status and model of one gateway."""

    gateway: str
    online: bool | None = None
    status: dict[str, Any] | None = None
    last_status: float | None = None
    model: dict[str, Any] | None = None
    model_id: str | None = None
    threshold: float = DEFAULT_THRESHOLD
    clear_threshold: float | None = None
    bridge: bool | None = None  # behind a Mosquitto bridge (docs/fleet.md): is its link up?

    def to_dict(self) -> dict[str, Any]:
        return {"gateway": self.gateway, "online": self.online, "status": self.status, "bridge": self.bridge,
                "last_status": self.last_status, "model": self.model, "model_id": self.model_id,
                "threshold": self.threshold, "clear_threshold": self.clear_threshold}


def _decision_thresholds(model: dict[str, Any]) -> tuple[float | None, float | None]:
    """``(raise, clear)`` thresholds from a model-topic payload (or a manifest inside it)."""
    for holder in (model, model.get("manifest") if isinstance(model.get("manifest"), dict) else None):
        if not holder:
            continue
        dec = holder.get("decision")
        if isinstance(dec, dict):
            r = _num(dec.get("raise_threshold", dec.get("threshold")))
            if r is not None:
                return r, _num(dec.get("clear_threshold"))
        r = _num(holder.get("threshold"))
        if r is not None:
            return r, None
    return None, None


def _model_id(payload: dict[str, Any]) -> str | None:
    for key in ("model", "model_id", "id"):
        v = payload.get(key)
        if isinstance(v, str) and v:
            return v
        if isinstance(v, dict):
            inner = _model_id(v)
            if inner:
                return inner
    return None


class LiveStore:
    """Thread-safe picture of every gateway and wearer seen on ``alanet/#``.

    ``listener`` (optional) is called, under the store's lock, with each event; use
    :meth:`subscribe_with_snapshot` to add a viewer without missing or doubling one.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.lock = threading.RLock()
        self.clock = clock
        self.gateways: dict[str, GatewayView] = {}
        self.wearers: dict[tuple[str, str], WearerView] = {}
        self.link: dict[str, Any] = {"state": "connecting", "detail": "", "since": clock()}
        self.broker = ""
        self.skipped = 0
        self.last_error: str | None = None
        self._seen_alerts: deque = deque(maxlen=1000)
        self._seen_set: set[str] = set()
        self._listeners: list[Listener] = []
        self.seq = 0  # of the last event

    # ---- viewers ----
    def add_listener(self, fn: Listener) -> None:
        with self.lock:
            self._listeners.append(fn)

    def remove_listener(self, fn: Listener) -> None:
        with self.lock:
            if fn in self._listeners:
                self._listeners.remove(fn)

    def subscribe_with_snapshot(self, fn: Listener) -> Event:
        """Add ``fn`` and return the snapshot it starts from (atomically)."""
        with self.lock:
            self._listeners.append(fn)
            return self.snapshot()

    def _emit(self, ev: Event) -> Event:
        self.seq += 1
        ev["now"] = self.clock()
        ev["seq"] = self.seq
        for fn in list(self._listeners):
            fn(ev)
        return ev

    def snapshot(self) -> Event:
        """The whole picture (with traces), as the ``snapshot`` event; ``seq`` is that of the last event in it."""
        with self.lock:
            return {
                "type": "snapshot", "seq": self.seq, "now": self.clock(), "link": dict(self.link), "broker": self.broker,
                "gateways": {g: v.to_dict() for g, v in sorted(self.gateways.items())},
                "wearers": [w.to_dict() for _, w in sorted(self.wearers.items())],
                "skipped": self.skipped,
            }

    # ---- inputs ----
    def set_link(self, state: str, detail: str) -> Event:
        """The subscriber's connection state: connecting | connected | disconnected."""
        with self.lock:
            if state != self.link["state"]:
                self.link = {"state": state, "detail": detail, "since": self.clock()}
            else:
                self.link["detail"] = detail
            return self._emit({"type": "link", "link": dict(self.link)})

    def ingest(self, topic: str, payload: bytes) -> Event | None:
        """Apply one MQTT message; returns the event it produced (None if ignored)."""
        parts = topic.split("/")
        if len(parts) < 3 or parts[0] != "alanet":
            return None
        with self.lock:
            try:
                if len(parts) == 3 and parts[2] == "status":
                    return self._status(parts[1], payload)
                if len(parts) == 3 and parts[2] == "model":
                    return self._model(parts[1], payload)
                if len(parts) == 3 and parts[2] == "bridge":  # "1" / "0": the bridge's link (its will says 0)
                    g = self._gw(parts[1])
                    g.bridge = payload.strip() == b"1"
                    if not g.bridge:  # the retained status stays "online"; the bridge re-sends it when back
                        g.online = False
                    return self._emit({"type": "gateway", "gateway": g.to_dict()})
                if len(parts) == 4 and parts[1] != "cmd" and parts[2] != "cmd":
                    if parts[3] == "state":
                        return self._state(parts[1], parts[2], payload)
                    if parts[3] == "alert":
                        return self._alert(parts[1], parts[2], payload)
                    if parts[3] == "session":
                        return self._session(parts[1], parts[2], payload)
                    if parts[3] == "history":
                        return self._history(parts[1], parts[2], payload)
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                self.skipped += 1
                self.last_error = f"{topic}: {exc}"
        return None

    # ---- per topic ----
    def _gw(self, gateway: str) -> GatewayView:
        g = self.gateways.get(gateway)
        if g is None:
            g = self.gateways[gateway] = GatewayView(gateway)
        return g

    def _wearer(self, gateway: str, wearer: str) -> WearerView:
        key = (gateway, wearer)
        w = self.wearers.get(key)
        if w is None:
            self._gw(gateway)
            w = self.wearers[key] = WearerView(gateway, wearer)
        return w

    def set_settings(self, gateway: str, wearer: str, settings: dict[str, Any]) -> Event:
        """Patient-view settings of a wearer, set on the page (not from MQTT)."""
        with self.lock:
            w = self._wearer(gateway, wearer)
            w.settings = dict(settings)
            return self._emit({"type": "wearer", "wearer": w.to_dict(trace=False)})

    @staticmethod
    def _json(payload: bytes) -> dict[str, Any]:
        d = loads(payload)
        if not isinstance(d, dict):
            raise ValueError("payload is not a JSON object")
        return d

    def _status(self, gateway: str, payload: bytes) -> Event | None:
        g = self._gw(gateway)
        if not payload:  # retained status cleared
            g.online, g.status = None, None
        else:
            text = payload.decode("utf-8", "replace").strip()
            if text in ("online", "offline"):
                d: dict[str, Any] = {"state": text}
            else:
                d = self._json(payload)
            g.status = d
            g.online = d.get("state") == "online"
            if isinstance(d.get("model"), str) and d["model"]:
                g.model_id = d["model"]
            if isinstance(d.get("wearers"), dict):  # wearers the gateway serves, even before any window
                for name in d["wearers"]:
                    if isinstance(name, str) and name:
                        self._wearer(gateway, name)
        g.last_status = self.clock()
        return self._emit({"type": "gateway", "gateway": g.to_dict()})

    def _model(self, gateway: str, payload: bytes) -> Event | None:
        g = self._gw(gateway)
        if not payload:
            g.model = None
        else:
            d = self._json(payload)
            g.model = d
            g.model_id = _model_id(d) or g.model_id
            r, c = _decision_thresholds(d)
            if r is not None:
                g.threshold, g.clear_threshold = r, c
        return self._emit({"type": "gateway", "gateway": g.to_dict()})

    def _state(self, gateway: str, wearer: str, payload: bytes) -> Event | None:
        d = self._json(payload)
        probs = d.get("probabilities")
        if not isinstance(probs, dict):
            raise ValueError("probabilities: expected an object of label -> probability")
        labels = list(probs)
        values = [_num(probs[k]) for k in labels]
        if any(v is None for v in values):
            raise ValueError("probabilities: a value is not a number")
        smoothed = _num(d.get("smoothed"))
        task = d.get("task")
        if task not in ("protective", "pain"):
            task = "protective" if len(labels) == 2 else "pain"
        w = self._wearer(gateway, wearer)
        w.task = task
        now = self.clock()
        w.last_state, w.t_end = now, _num(d.get("t_end"))
        w.samples += 1
        state = d.get("state")
        if "exercise" in d:
            w.exercise = d["exercise"] if isinstance(d["exercise"], str) else None
        w.attention = d["attention"] if isinstance(d.get("attention"), dict) else None
        session = d.get("session") if isinstance(d.get("session"), str) else None
        if task == "protective":
            raw = float(values[1]) if len(values) > 1 else float(values[0])
            p = smoothed if smoothed is not None else raw
            w.probability, w.raw = p, raw
            w.protective_active = state == "active" if isinstance(state, str) else None
            w.trace.append((round(now, 3), round(p, 4), round(raw, 4)))
            point = [round(now, 3), round(p, 4), int(w.protective_active is True), w.exercise]
        else:
            lead = max(range(len(values)), key=lambda i: values[i]) if values else None
            level = labels.index(state) if isinstance(state, str) and state in labels else None
            w.pain = {"label": state if isinstance(state, str) else None, "level": level,
                      "leading": labels[lead] if lead is not None else None,
                      "probabilities": dict(zip(labels, values)), "smoothed": smoothed, "labels": labels}
            w.trace.append((round(now, 3), None, None))
            point = [round(now, 3), level, 0, w.exercise]
        ev: Event = {"type": "wearer", "wearer": w.to_dict(trace=False), "sample": list(w.trace[-1])}
        if session is not None:
            if session != w.timeline_session:
                w.timeline, w.timeline_session = [], session
            w.timeline.append(point)
            if len(w.timeline) > TIMELINE_LEN:  # keep the whole session at half the resolution
                w.timeline = w.timeline[::2]
            ev["timeline"] = {"session": session, "point": point}
        return self._emit(ev)

    def _alert(self, gateway: str, wearer: str, payload: bytes) -> Event | None:
        d = self._json(payload)
        alert_id = d.get("id")
        if not isinstance(alert_id, str) or not alert_id:
            raise ValueError("id: missing")
        if alert_id in self._seen_set:  # at-least-once delivery: drop duplicates
            return None
        if len(self._seen_alerts) == self._seen_alerts.maxlen:
            self._seen_set.discard(self._seen_alerts[0])
        self._seen_alerts.append(alert_id)
        self._seen_set.add(alert_id)
        kind, state = d.get("type"), d.get("state")
        if kind not in ("protective", "pain") or not isinstance(state, str):
            raise ValueError("type/state: expected protective|pain and a state string")
        w = self._wearer(gateway, wearer)
        a = {k: d.get(k) for k in ("id", "type", "state", "level", "probability", "t_start", "t_end", "model", "time",
                                   "exercise", "session", "attention")}
        a["received"] = self.clock()
        if kind == "protective":
            if state == "raised":
                w.active["protective"] = a
            else:
                w.active.pop("protective", None)
            w.protective_active = state == "raised"
        else:
            level = d.get("level")
            if isinstance(level, int) and level > 0:
                w.active["pain"] = a
            else:
                w.active.pop("pain", None)
            pain = dict(w.pain or {})
            pain.update(label=state, level=level if isinstance(level, int) else pain.get("level"))
            w.pain = pain
        w.recent.appendleft(a)
        return self._emit({"type": "alert", "alert": a, "wearer": w.to_dict(trace=False)})

    def _session(self, gateway: str, wearer: str, payload: bytes) -> Event | None:
        w = self._wearer(gateway, wearer)
        if not payload:
            w.session = None
        else:
            d = self._json(payload)
            if d.get("state") not in ("active", "idle"):
                raise ValueError("state: expected active or idle")
            w.session = d
            w.exercise = d["exercise"] if isinstance(d.get("exercise"), str) else None
            if isinstance(d.get("session"), str) and d["session"] != w.timeline_session:  # a new session
                w.timeline, w.timeline_session = [], d["session"]
        return self._emit({"type": "wearer", "wearer": w.to_dict(trace=False)})

    def _history(self, gateway: str, wearer: str, payload: bytes) -> Event | None:
        w = self._wearer(gateway, wearer)
        d = self._json(payload) if payload else {"sessions": []}
        sessions = d.get("sessions")
        if not isinstance(sessions, list):
            raise ValueError("sessions: expected a list of session summaries")
        w.history = [s for s in sessions if isinstance(s, dict)][-HISTORY_LEN:]
        return self._emit({"type": "history", "gateway": gateway, "wearer": wearer, "history": w.history})
