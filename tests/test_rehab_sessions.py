"""Rehab sessions through the real gateway: commands over MQTT, the wearable's exercise, a SIGKILL
and restart mid-session, the session log, its report and the retained session and history topics.

``alanet run`` (a subprocess) reads a pty wearable and publishes to a real Mosquitto; the
test commands it like the live page does (``alanet/<gw>/cmd/{session,exercise}``).
"""

from __future__ import annotations

import json
import signal
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from test_runtime_e2e import GW, Subscriber, start_gateway, stop_gateway, wait_port_up

import rehab_support as rh
import runtime_support as rs
from alanet.device.payload_schemas import validator
from alanet.firmware_bridge.protocol import EXERCISES


@pytest.fixture(scope="module")
def built():
    return rs.cached_bundle(3, 120.0)


def command(port: int, kind: str, **payload) -> None:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"cmd-{kind}")
    c.connect("127.0.0.1", port)
    c.loop_start()
    c.publish(f"alanet/{GW}/cmd/{kind}", json.dumps({"wearer": "w1", **payload}), qos=1).wait_for_publish(5)
    c.disconnect()
    c.loop_stop()


def session_msgs(sub: Subscriber) -> list[dict]:
    return [m for m in sub.of("/w1/session")]


def test_a_gateway_restart_mid_session_loses_no_logged_window(built, mosquitto, tmp_path):
    sess, bundle = built
    sub = Subscriber(mosquitto.port)
    wear = rs.PtyWearable()
    gw = start_gateway(tmp_path, wear.path, bundle, mosquitto.url)
    outs = []
    try:
        wait_port_up(gw, sub, wear)
        assert sub.wait(lambda: session_msgs(sub) and session_msgs(sub)[-1]["state"] == "idle", 10)
        command(mosquitto.port, "exercise", exercise="bend")
        command(mosquitto.port, "session", action="start", source="page")
        assert sub.wait(lambda: session_msgs(sub)[-1]["state"] == "active", 10)
        sid = session_msgs(sub)[-1]["session"]
        assert session_msgs(sub)[-1]["exercise"] == "bend"
        wear.hello()
        stop_feeding = threading.Event()

        def feed() -> None:
            for i in range(0, sess.n):
                if stop_feeding.is_set():
                    return
                wear.frames(sess, i, i + 1)
                time.sleep(1 / (rs.FS * 8))

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        assert sub.wait(lambda: len(sub.of("/state")) >= 30, 30)
        stop_feeding.set()
        outs.append(stop_gateway(gw, signal.SIGKILL))  # mid-stream, the hard way: no shutdown code runs
        feeder.join(5)
        half = wear.written
        before = len(sub.of("/state"))

        gw = start_gateway(tmp_path, wear.path, bundle, mosquitto.url)
        wait_port_up(gw, sub, wear)
        assert sub.wait(lambda: session_msgs(sub)[-1]["session"] == sid and session_msgs(sub)[-1]["state"] == "active",
                        10), "the session did not resume"
        wear.hello()
        wear.write(wear.enc.exercise(0, EXERCISES.index("walking")))  # the wearable reports an exercise
        wear.frames(sess, half, half + 2000, pace_hz=rs.FS * 8)
        assert sub.wait(lambda: sub.of("/state")[-1].get("exercise") == "walking", 20)
        command(mosquitto.port, "exercise", exercise="sit_to_stand")  # the therapist overrides it ...
        assert sub.wait(lambda: session_msgs(sub)[-1]["exercise"] == "sit_to_stand", 10)
        wear.write(wear.enc.exercise(0, EXERCISES.index("walking")))  # ... and a repeat of the same code does not
        wear.frames(sess, half + 2000, sess.n, pace_hz=rs.FS * 8)
        n2 = (sess.n - half - rs.L) // rs.S + 1
        assert sub.wait(lambda: len(sub.of("/state")) >= before + n2, 30)
        command(mosquitto.port, "session", action="stop")
        assert sub.wait(lambda: session_msgs(sub)[-1]["state"] == "idle" and "last" in session_msgs(sub)[-1], 15)
        assert sub.wait(lambda: sub.of("/w1/history") and sub.of("/w1/history")[-1]["sessions"], 10)
    finally:
        outs.append(stop_gateway(gw))
        wear.close()
        sub.close()
    assert gw.returncode == 0, outs[-1]

    log = tmp_path / "state" / "sessions" / "w1" / f"{sid}.jsonl"
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    logged = [r["seq"] for r in lines if r["k"] == "w"]
    published = [s["seq"] for s in sub.of("/state") if s.get("session") == sid]
    # every window the gateway published is in the log, once, in order; across the SIGKILL the log has no hole
    assert [q for q in logged if q in set(published)] == published and len(set(logged)) == len(logged)
    resume = [i for i, r in enumerate(x for x in lines if x["k"] in ("w", "resume")) if r["k"] == "resume"]
    assert len(resume) == 1
    run1, run2 = logged[:resume[0]], logged[resume[0]:]
    assert run1 and all(b - a == rs.S for a, b in zip(run1, run1[1:]))
    assert run2 == [half + rs.L - 1 + k * rs.S for k in range(n2)]  # the second run: every window, none lost
    n1 = len(run1)
    kinds = [r["k"] for r in lines]
    assert kinds[0] == "start" and kinds[-1] == "stop"
    exercises = [r["ex"] for r in lines if r["k"] == "w"]
    assert exercises[0] == "bend" and "walking" in exercises and exercises[-1] == "sit_to_stand"
    ex_lines = [r for r in lines if r["k"] == "ex"]
    assert [(r["ex"], r["source"]) for r in ex_lines] == [("walking", "wearable"), ("sit_to_stand", "mqtt")]
    assert not any(r.get("k") == "w" and ("angles" in r or "emg" in r) for r in lines)  # no raw biosignals
    assert not list(log.parent.glob("*.raw.csv"))

    # the report the gateway wrote at stop: its per-exercise figures are the log's
    html = log.with_suffix(".html").read_text()
    assert rh.figures_from_report(html) == rh.figures_from_log(log)
    summary = session_msgs(sub)[-1]["last"]
    assert summary["windows"] == n1 + n2 and summary["quality"]["gateway_restarts"] == 1
    validator("session").validate(session_msgs(sub)[-1])
    validator("history").validate(sub.of("/w1/history")[-1])
    csv_rows = log.with_suffix(".csv").read_text().splitlines()
    assert len(csv_rows) == 1 + n1 + n2 and csv_rows[0].startswith("time,session_s,window,seq,t_end,exercise")


def test_alanet_report_makes_the_same_report_from_the_command_line(cli, tmp_path):
    """``alanet report SESSION`` (id looked up in --state-dir) writes the report; figures match the log."""
    from types import SimpleNamespace as NS

    import numpy as np

    from alanet.device.sessions import SessionManager

    clock = [1_700_000_000.0]
    m = SessionManager(tmp_path / "state" / "sessions", "gw1", ["w1"], clock=lambda: clock[0])
    spec = NS(model_id="m1", task="protective", labels=("normal", "protective"), stride=45, sample_rate_hz=60.0,
              length=180, decision={"raise_threshold": 0.6, "clear_threshold": 0.4})
    sid = m.start("w1", spec, "page", exercise="reach_forward")
    for i in range(60):
        clock[0] += 0.75
        if i == 30:
            m.set_exercise("w1", "bend", "page")
        active = 10 <= i < 20 or 40 <= i < 44
        r = NS(t_end=3 + 0.75 * i, seq=180 + 45 * i, window=i, probs=np.array([0.2, 0.8] if active else [0.9, 0.1]),
               smoothed=0.8 if active else 0.1, state="active" if active else "none", attention=None)
        m.on_window("w1", r, "m1")
        if i in (10, 40):
            m.on_alert("w1", {"id": f"a{i}", "type": "protective", "state": "raised", "probability": 0.8,
                              "t_start": 0.0, "t_end": 1.5})
        if i in (20, 44):
            m.on_alert("w1", {"id": f"c{i}", "type": "protective", "state": "cleared", "probability": 0.1,
                              "t_start": 0.0, "t_end": 9.0})
    m.close()  # left running, as after a crash: the report works on an open session too
    out = tmp_path / "out" / "r.html"
    r = cli("report", sid, "--state-dir", str(tmp_path / "state"), "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr
    log = tmp_path / "state" / "sessions" / "w1" / f"{sid}.jsonl"
    figures = rh.figures_from_log(log)
    assert rh.figures_from_report(out.read_text()) == figures
    assert figures == {"reach_forward": {"seconds": 22.5, "protective_s": 7.5, "episodes": 1},
                       "bend": {"seconds": 22.5, "protective_s": 3.0, "episodes": 1}}
    s = json.loads(r.stdout)
    assert s["episodes"] == 2 and s["stopped"] is None and out.with_suffix(".csv").is_file()
    page = out.read_text()
    assert "<script src" not in page and "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    bad = cli("report", "no-such-session", "--state-dir", str(tmp_path / "state"))
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "no-such-session" in bad.stderr
