"""`alanet demo`, the embedded brokers and `alanet alerts`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

import runtime_support as rs
from alanet.device.broker import EmbeddedBroker
from alanet.device.demo import find_demo_bundle, run_demo, score_alerts

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bundle():
    shipped = REPO / "models" / "protective-demo" / "manifest.json"
    return shipped.parent if shipped.is_file() else rs.cached_bundle(3, 120.0)[1]


def test_demo_scores_alert_payloads_with_the_stream_scorer():
    alerts = [{"state": "raised", "t_start": 9.0, "t_end": 12.0}, {"state": "cleared", "t_start": 9.0, "t_end": 20.0},
              {"state": "raised", "t_start": 50.0, "t_end": 53.0}, {"state": "cleared", "t_start": 50.0, "t_end": 55.0},
              {"state": "raised", "t_start": 80.0, "t_end": 83.0}]
    episodes = [{"t_start": 10.0, "t_end": 18.0}, {"t_start": 30.0, "t_end": 35.0}, {"t_start": 81.0, "t_end": 90.0}]
    sc = score_alerts(alerts, episodes, 100.0, half_window_s=1.5)
    assert (sc.hits, sc.misses, sc.false_alarms) == (2, 1, 1) and sc.detection_delays_s == [2.0, 2.0]


def test_demo_command_runs_and_summarises(cli, bundle, tmp_path):
    r = cli("demo", "--duration", "120", "--speed", "30", "--bundle", str(bundle), "--keep", str(tmp_path / "run"),
            timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.splitlines()
    assert "summary:" in r.stdout
    for start in ("hits:", "false alarms:", "active-time precision:"):
        assert any(line.startswith(start) for line in lines), start
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["frames"] == 7200 and s["windows"] == (7200 - 180) // 45 + 1
    assert s["hits"] + s["misses"] == s["episodes"] > 0
    got = [json.loads(l) for l in (tmp_path / "run" / "alerts.jsonl").read_text().splitlines()]
    assert len(got) == s["alerts"] > 0 and len({a["id"] for a in got}) == len(got)
    warmup = json.loads((bundle / "manifest.json").read_text())["decision"].get("warmup_s", 0.0)
    assert all(a["t_end"] >= warmup for a in got if a["state"] == "raised")  # none in the wearer's warm-up


def test_demo_on_the_python_broker(bundle, tmp_path):
    with EmbeddedBroker("amqtt") as b:
        assert b.kind == "amqtt"
        s = run_demo(duration=40, speed=30, bundle=str(bundle), broker_url=b.url, keep=str(tmp_path / "k"))
    assert s.frames == 2400 and s.windows == (2400 - 180) // 45 + 1


def test_find_demo_bundle_names_where_it_looked(monkeypatch):
    from alanet.errors import InputError

    with pytest.raises(InputError, match="no shipped bundle 'nope'"):
        find_demo_bundle("nope")


def test_alerts_cli_prints_and_deduplicates(mosquitto):
    p = subprocess.Popen([sys.executable, "-m", "alanet", "alerts", "--broker", mosquitto.url, "--gateway", "g1",
                          "--count", "2", "--timeout", "30"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    time.sleep(1.5)  # let the subscriber connect
    a = {"schema": "alanet.alert/1", "id": str(uuid.uuid4()), "gateway": "g1", "wearer": "p017", "type": "protective",
         "state": "raised", "probability": 0.83, "t_start": 12.0, "t_end": 15.75, "model": "m", "time": "2026-11-24T10:00:00Z"}
    b = {**a, "id": str(uuid.uuid4()), "state": "cleared", "probability": 0.2, "t_end": 30.0}
    other = {**a, "id": str(uuid.uuid4()), "gateway": "g2"}
    for topic, payload in (("alanet/g1/p017/alert", a), ("alanet/g1/p017/alert", a), ("alanet/g2/p017/alert", other),
                           ("alanet/g1/p017/alert", b)):
        pub.publish(topic, json.dumps(payload), qos=1).wait_for_publish(5)
    out, err = p.communicate(timeout=40)
    pub.loop_stop()
    assert p.returncode == 0, err
    lines = [l for l in out.splitlines() if "g1/p017" in l]
    assert len(lines) == 2, out
    assert "PROTECTIVE RAISED" in lines[0] and "p=0.83" in lines[0] and "since 12.0 s" in lines[0]
    assert "cleared" in lines[1] and "12.0-30.0 s" in lines[1]
    assert "g2/" not in out
