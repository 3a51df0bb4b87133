"""The live views' model: gateway MQTT messages → per-wearer picture and events (no I/O)."""

from __future__ import annotations

import json
import re
import uuid

from alanet.device.live.store import DEFAULT_THRESHOLD, LiveStore
from alanet.device.live.terminal import render, sparkline


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def state(p: float, smoothed: float, st: str = "none", wearer: str = "w1") -> bytes:
    return json.dumps({"schema": "alanet.state/1", "gateway": "gw1", "wearer": wearer, "task": "protective",
                       "t_end": 3.0, "probabilities": {"normal": 1 - p, "protective": p}, "smoothed": smoothed,
                       "state": st, "model": "m1"}).encode()


def alert(state_: str, kind: str = "protective", level: int | None = None, alert_id: str | None = None) -> bytes:
    d = {"schema": "alanet.alert/1", "id": alert_id or str(uuid.uuid4()), "gateway": "gw1", "wearer": "w1",
         "type": kind, "state": state_, "probability": 0.8, "t_start": 1.0, "t_end": 4.0, "model": "m1",
         "time": "2026-11-24T10:00:00.000Z"}
    if level is not None:
        d["level"] = level
    return json.dumps(d).encode()


def test_state_messages_build_a_trace_and_emit_events():
    clock = Clock()
    store = LiveStore(clock)
    events = []
    store.add_listener(events.append)
    for i, p in enumerate([0.1, 0.5, 0.9]):
        clock.t += 0.75
        store.ingest("alanet/gw1/w1/state", state(p, p * 0.9))
    w = store.snapshot()["wearers"][0]
    assert (w["gateway"], w["wearer"], w["samples"], w["task"]) == ("gw1", "w1", 3, "protective")
    assert w["probability"] == 0.81 and w["raw"] == 0.9
    assert [s[1] for s in w["trace"]] == [0.09, 0.45, 0.81]
    assert [e["type"] for e in events] == ["wearer"] * 3
    assert events[-1]["sample"] == [1002.25, 0.81, 0.9]


def test_threshold_comes_from_the_model_topic_and_status_from_the_will():
    store = LiveStore(Clock())
    assert store.snapshot()["gateways"] == {}
    store.ingest("alanet/gw1/model", json.dumps({"schema": "alanet.model/1", "model": "m1", "task": "protective",
                                                 "decision": {"raise_threshold": 0.7, "clear_threshold": 0.3}}).encode())
    store.ingest("alanet/gw1/status", json.dumps({"schema": "alanet.status/1", "gateway": "gw1", "state": "online",
                                                  "counters": {"frames": 5}}).encode())
    g = store.snapshot()["gateways"]["gw1"]
    assert (g["threshold"], g["clear_threshold"], g["model_id"], g["online"]) == (0.7, 0.3, "m1", True)
    store.ingest("alanet/gw1/status", b'{"state":"offline"}')  # the last will
    assert store.snapshot()["gateways"]["gw1"]["online"] is False
    assert LiveStore(Clock()).ingest("alanet/gw2/status", b"online")["gateway"]["threshold"] == DEFAULT_THRESHOLD


def test_alerts_raise_clear_and_duplicates_are_dropped():
    store = LiveStore(Clock())
    aid = str(uuid.uuid4())
    assert store.ingest("alanet/gw1/w1/alert", alert("raised", alert_id=aid))["type"] == "alert"
    assert store.ingest("alanet/gw1/w1/alert", alert("raised", alert_id=aid)) is None  # at-least-once duplicate
    w = store.snapshot()["wearers"][0]
    assert [a["id"] for a in w["active"]] == [aid] and len(w["recent"]) == 1 and w["protective_active"] is True
    store.ingest("alanet/gw1/w1/alert", alert("cleared"))
    w = store.snapshot()["wearers"][0]
    assert w["active"] == [] and len(w["recent"]) == 2 and w["protective_active"] is False
    store.ingest("alanet/gw1/w1/alert", alert("high", kind="pain", level=2))
    w = store.snapshot()["wearers"][0]
    assert w["active"][0]["type"] == "pain" and w["pain"]["label"] == "high"
    store.ingest("alanet/gw1/w1/alert", alert("none", kind="pain", level=0))
    assert store.snapshot()["wearers"][0]["active"] == []


def test_pain_state_gives_the_level_estimate():
    store = LiveStore(Clock())
    store.ingest("alanet/gw1/w2/state", json.dumps({
        "schema": "alanet.state/1", "gateway": "gw1", "wearer": "w2", "task": "pain", "t_end": 3.0,
        "probabilities": {"none": 0.2, "low": 0.7, "high": 0.1}, "smoothed": 0.6, "state": "low", "model": "m"}).encode())
    w = store.snapshot()["wearers"][0]
    assert w["task"] == "pain" and w["pain"]["label"] == "low" and w["pain"]["level"] == 1
    assert w["pain"]["leading"] == "low" and w["probability"] is None


def test_bad_payloads_are_counted_not_fatal():
    store = LiveStore(Clock())
    assert store.ingest("alanet/gw1/w1/state", b"not json") is None
    assert store.ingest("alanet/gw1/w1/state", b'{"probabilities": [0.1, 0.9]}') is None
    assert store.ingest("alanet/gw1/w1/alert", b'{"type": "protective"}') is None
    assert store.ingest("other/topic", b"{}") is None
    assert store.ingest("alanet/gw1/cmd/x", b"{}") is None
    assert store.skipped == 3
    assert store.snapshot()["wearers"] == []


def test_terminal_render_shows_link_status_trace_and_alerts():
    clock = Clock()
    store = LiveStore(clock)
    store.broker = "mqtt://127.0.0.1:1883"
    store.set_link("connected", "connected to 127.0.0.1:1883")
    store.ingest("alanet/gw1/status", json.dumps({"schema": "alanet.status/1", "gateway": "gw1", "state": "online",
                                                  "model": "m1", "counters": {"frames": 1234, "crc_errors": 2, "gaps": 0,
                                                  "windows": 25, "inference_ms": 0.15, "queue_depth": 0},
                                                  "wearers": {"w1": {"serial": "up"}, "w9": {"serial": "down"}}}).encode())
    assert [w["wearer"] for w in store.snapshot()["wearers"]] == ["w1", "w9"]  # known before any window
    for p in (0.2, 0.4, 0.9):
        store.ingest("alanet/gw1/w1/state", state(p, p))
    store.ingest("alanet/gw1/w1/alert", alert("raised"))
    text = render(store.snapshot())
    assert "connected" in text and "gateway gw1" in text and "online" in text and "model m1" in text
    assert "frames 1234" in text and "crc_errors 2" in text
    assert "0.90 ^" in text and "PROTECTIVE raised" in text
    assert re.search(r"w1 .* up .*PROTECTIVE", text) and re.search(r"w9 .* down ", text)
    assert sparkline([0.0, 0.5, 0.99]).strip() == "▁▅█"
    store.set_link("disconnected", "cannot reach 127.0.0.1:1883; retrying")
    assert "disconnected - cannot reach" in render(store.snapshot())


def test_sessions_timeline_history_and_exercise_reach_the_views():
    clock = Clock()
    store = LiveStore(clock)
    events = []
    store.add_listener(events.append)
    sess = {"schema": "alanet.session/1", "gateway": "gw1", "wearer": "w1", "state": "active", "session": "s1",
            "exercise": "bend", "time": "2026-11-24T10:00:00.000Z"}
    store.ingest("alanet/gw1/w1/session", json.dumps(sess).encode())
    for i, p in enumerate([0.2, 0.9]):
        clock.t += 0.75
        d = json.loads(state(p, p, "active" if p > 0.5 else "none"))
        d.update(session="s1", exercise="bend", attention={"peak_s": 1.2, "peak_frame": 71, "window_s": 3.0,
                                                           "profile": [1.0], "body_axis": "parts"})
        store.ingest("alanet/gw1/w1/state", json.dumps(d).encode())
    w = store.snapshot()["wearers"][0]
    assert w["exercise"] == "bend" and w["timeline_session"] == "s1" and w["attention"]["peak_s"] == 1.2
    assert [p[1:] for p in w["timeline"]] == [[0.2, 0, "bend"], [0.9, 1, "bend"]]
    assert events[-1]["timeline"] == {"session": "s1", "point": w["timeline"][-1]}
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    store.ingest("alanet/gw1/w1/session", json.dumps({**sess, "state": "idle", "session": None}).encode())
    assert len(store.snapshot()["wearers"][0]["timeline"]) == 2  # the stopped session's timeline stays on screen
    store.ingest("alanet/gw1/w1/history", json.dumps({"schema": "alanet.history/1", "gateway": "gw1", "wearer": "w1",
                                                      "sessions": [{"session": "s1", "protective_s": 0.75}]}).encode())
    assert events[-1]["type"] == "history" and store.snapshot()["wearers"][0]["history"][0]["session"] == "s1"
    store.ingest("alanet/gw1/w1/session", json.dumps({**sess, "session": "s2"}).encode())
    assert store.snapshot()["wearers"][0]["timeline"] == []  # a new session starts a new timeline


def test_non_finite_numbers_become_null():
    store = LiveStore(Clock())
    store.ingest("alanet/gw1/status", b'{"state": "online", "counters": {"frames": 1, "inference_ms": NaN}}')
    store.ingest("alanet/gw1/w1/state", b'{"probabilities": {"normal": 0.5, "protective": Infinity}, "smoothed": 0.5}')
    snap = store.snapshot()
    assert snap["gateways"]["gw1"]["status"]["counters"]["inference_ms"] is None
    assert snap["skipped"] == 1  # the state with an infinite probability is refused
    json.dumps(snap, allow_nan=False)
