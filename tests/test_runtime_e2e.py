"""The gateway end to end: pty wearable → `alanet run` → real Mosquitto → subscriber.

Expected alerts are what the decision logic yields for the session's windows,
computed offline with the same bundle (LiteRT); the runtime must deliver exactly
those, once each after de-duplication by id, through broker restarts and a SIGKILL.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import jsonschema
import paho.mqtt.client as mqtt
import pytest

import runtime_support as rs
from alanet.device.alert_queue import AlertQueue

SCHEMAS = Path(__file__).resolve().parents[1] / "device" / "schemas"
GW = "gw-test"


@pytest.fixture(scope="module")
def built():
    return rs.cached_bundle(3, 120.0)


@pytest.fixture(scope="module")
def session(built):
    return built[0]


@pytest.fixture(scope="module")
def bundle(built):
    return built[1]


@pytest.fixture(scope="module")
def expected(bundle, session):
    ev = rs.expected_events(bundle, session)
    assert len(ev) >= 4, "the test session must produce several alerts"
    return ev


class Subscriber:
    """A persistent-session QoS 1 subscriber that records everything under alanet/<gw>/#."""

    def __init__(self, port: int, client_id: str = "test-sub") -> None:
        self.msgs: list[tuple[str, dict, bool]] = []
        self.lock = threading.Lock()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe(f"alanet/{GW}/#", qos=1)
        self.c.on_message = self._on_message
        self.c.reconnect_delay_set(0.1, 0.5)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def _on_message(self, c, u, m):
        with self.lock:
            self.msgs.append((m.topic, json.loads(m.payload), bool(m.retain)))

    def of(self, suffix: str) -> list[dict]:
        with self.lock:
            return [p for t, p, _ in self.msgs if t.endswith(suffix)]

    def unique_alerts(self) -> list[dict]:
        seen, out = set(), []
        for a in self.of("/alert"):
            if a["id"] not in seen:
                seen.add(a["id"])
                out.append(a)
        return out

    def wait(self, pred, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return True
            time.sleep(0.05)
        return pred()

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


def start_gateway(tmp_path: Path, port_path: str, bundle: Path, broker_url: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "alanet", "run", "--port", port_path, "--bundle", str(bundle),
                             "--broker", broker_url, "--gateway", GW, "--wearer", "w1",
                             "--state-dir", str(tmp_path / "state")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def stop_gateway(p: subprocess.Popen, sig=signal.SIGTERM) -> str:
    if p.poll() is None:
        p.send_signal(sig)
    out, _ = p.communicate(timeout=20)
    return out


def as_tuples(alerts):
    return sorted((a["type"], a["state"], round(a["t_end"], 1)) for a in alerts)


def ev_tuples(events):
    return sorted((e.type, e.state, round(e.t_end, 1)) for e in events)


def wait_port_up(p: subprocess.Popen, sub: Subscriber, wear: rs.PtyWearable) -> None:
    assert sub.wait(lambda: any(s.get("state") == "online" for s in sub.of("/status")), 30), "gateway never online"
    assert wear.wait_opened_by(p.pid), "gateway never opened the port"


def test_session_end_to_end_exact_alerts(tmp_path, mosquitto, bundle, session, expected):
    sub = Subscriber(mosquitto.port)
    wear = rs.PtyWearable()
    gw = start_gateway(tmp_path, wear.path, bundle, mosquitto.url)
    try:
        wait_port_up(gw, sub, wear)
        wear.hello()
        wear.frames(session, 0, session.n)
        n_windows = (session.n - rs.L) // rs.S + 1
        assert sub.wait(lambda: len(sub.of("/state")) >= n_windows and len(sub.unique_alerts()) >= len(expected), 60)
        time.sleep(0.3)
    finally:
        out = stop_gateway(gw)
        wear.close()
    assert gw.returncode == 0, out
    alerts = sub.of("/alert")
    assert len({a["id"] for a in alerts}) == len(alerts)  # no duplicates on a healthy link
    assert as_tuples(alerts) == ev_tuples(expected)
    a_schema = json.loads((SCHEMAS / "alert.schema.json").read_text())
    s_schema = json.loads((SCHEMAS / "state.schema.json").read_text())
    st_schema = json.loads((SCHEMAS / "status.schema.json").read_text())
    for a in alerts:
        jsonschema.validate(a, a_schema)
        assert a["gateway"] == GW and a["wearer"] == "w1" and a["model"] == "test-protective"
    states = sub.of("/state")
    assert len(states) == n_windows
    for s in states[:5]:
        jsonschema.validate(s, s_schema)
    # raw biosignals never leave the gateway: no angle/emg arrays in any payload
    assert not any("angles" in json.dumps(p) or "emg" in json.dumps(p) for _, p, _ in sub.msgs)
    status = sub.of("/status")
    for s in status:
        jsonschema.validate(s, st_schema)
    assert status[-1]["state"] == "offline" and status[-1]["counters"]["frames"] == session.n
    assert status[-1]["counters"]["windows"] == n_windows and status[-1]["counters"]["queue_depth"] == 0
    model = sub.of("/model")
    assert model and model[0]["model"] == "test-protective" and model[0]["window"] == rs.L
    sub.close()


def test_broker_restart_mid_session_every_alert_once(tmp_path, mosquitto, bundle, session, expected):
    sub = Subscriber(mosquitto.port, client_id="sub-restart")
    wear = rs.PtyWearable()
    gw = start_gateway(tmp_path, wear.path, bundle, mosquitto.url)
    cut = int(45 * rs.FS)  # stop the broker after 45 s of the session
    try:
        wait_port_up(gw, sub, wear)
        wear.frames(session, 0, cut)
        before = [e for e in expected if e.t_end * rs.FS <= cut]
        assert sub.wait(lambda: len(sub.unique_alerts()) >= len(before), 30)
        mosquitto.stop()
        wear.frames(session, cut, session.n)  # alerts decided while the broker is down
        time.sleep(1.0)
        mosquitto.start()
        assert sub.wait(lambda: len(sub.unique_alerts()) >= len(expected), 60), sub.of("/alert")
        time.sleep(0.5)
    finally:
        out = stop_gateway(gw)
        wear.close()
    assert gw.returncode == 0, out
    assert len(expected) > len(before), "some alerts must fall into the outage"
    assert as_tuples(sub.unique_alerts()) == ev_tuples(expected)
    q = AlertQueue(tmp_path / "state" / "alerts.sqlite")
    assert len(q) == 0
    sub.close()


def test_sigkill_with_queued_alerts_then_restart_delivers(tmp_path, mosquitto, bundle, session, expected):
    mosquitto.stop()  # broker away: every alert stays queued
    wear = rs.PtyWearable()
    gw = start_gateway(tmp_path, wear.path, bundle, mosquitto.url)
    qpath = tmp_path / "state" / "alerts.sqlite"
    try:
        assert wear.wait_opened_by(gw.pid)
        wear.frames(session, 0, session.n)
        q = AlertQueue(qpath)
        deadline = time.monotonic() + 30
        while len(q.pending()) < len(expected) and time.monotonic() < deadline:
            time.sleep(0.05)
        queued = q.pending()
        q.close()
        assert len(queued) == len(expected)
    finally:
        out = stop_gateway(gw, signal.SIGKILL)
        wear.close()
    assert gw.returncode == -9, out
    mosquitto.start()
    sub = Subscriber(mosquitto.port, client_id="sub-kill")
    time.sleep(0.2)
    wear2 = rs.PtyWearable()
    gw2 = start_gateway(tmp_path, wear2.path, bundle, mosquitto.url)  # same state dir, no new frames
    try:
        assert sub.wait(lambda: len(sub.unique_alerts()) >= len(expected), 60)
        time.sleep(0.3)
    finally:
        out = stop_gateway(gw2)
        wear2.close()
    assert gw2.returncode == 0, out
    got = sub.unique_alerts()
    assert sorted(a["id"] for a in got) == sorted(a.id for a in queued)
    assert as_tuples(got) == ev_tuples(expected)
    assert len(AlertQueue(qpath)) == 0
    sub.close()


def test_sigterm_with_broker_down_exits_cleanly_and_keeps_the_queue(tmp_path, mosquitto, bundle, session, expected):
    mosquitto.stop()
    wear = rs.PtyWearable()
    gw = start_gateway(tmp_path, wear.path, bundle, mosquitto.url)
    qpath = tmp_path / "state" / "alerts.sqlite"
    try:
        assert wear.wait_opened_by(gw.pid)
        wear.frames(session, 0, session.n)
        time.sleep(1.5)
    finally:
        t0 = time.monotonic()
        out = stop_gateway(gw, signal.SIGTERM)
        wear.close()
    assert gw.returncode == 0, out
    assert time.monotonic() - t0 < 10
    assert f"{len(expected)} alert(s) left queued" in out
    assert len(AlertQueue(qpath)) == len(expected)


def test_broker_down_at_start_is_retried(tmp_path, mosquitto, bundle, session, expected):
    sub = Subscriber(mosquitto.port, client_id="sub-late")  # persistent session, kept across the restart
    assert sub.wait(lambda: sub.c.is_connected(), 10)
    time.sleep(0.2)
    mosquitto.stop()
    wear = rs.PtyWearable()
    gw = start_gateway(tmp_path, wear.path, bundle, mosquitto.url)
    try:
        assert wear.wait_opened_by(gw.pid)
        wear.frames(session, 0, session.n)  # every alert is decided while the broker is away
        time.sleep(0.5)
        mosquitto.start()
        assert sub.wait(lambda: len(sub.unique_alerts()) >= len(expected), 60)
        time.sleep(0.3)
    finally:
        out = stop_gateway(gw)
        wear.close()
    assert gw.returncode == 0, out
    assert "unreachable; retrying" in out
    assert as_tuples(sub.unique_alerts()) == ev_tuples(expected)
    assert len(AlertQueue(tmp_path / "state" / "alerts.sqlite")) == 0, out  # all acknowledged by the broker
    sub.close()
