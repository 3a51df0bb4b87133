"""The gateway announces Home Assistant discovery configs and retracts them."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

import runtime_support as rs
from alanet.device.homeassistant import config_topics

GW = "gw-ha"


def retained_under(port: int, pattern: str, settle: float = 1.0) -> dict[str, bytes]:
    """What a fresh subscriber receives retained under ``pattern``."""
    got: dict[str, bytes] = {}
    lock = threading.Lock()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)

    def on_message(_c, _u, m):
        if m.retain:
            with lock:
                got[m.topic] = m.payload

    c.on_message = on_message
    c.on_connect = lambda cl, u, f, rc, p: cl.subscribe(pattern, qos=1)
    c.connect("127.0.0.1", port)
    c.loop_start()
    time.sleep(settle)
    c.loop_stop()
    c.disconnect()
    return {t: p for t, p in got.items() if p}


def run_gateway_once(tmp_path: Path, broker: str, bundle: Path, discovery: bool, wearers: list[str]) -> None:
    """Start the gateway with a config file, wait until it is online, stop it."""
    wear = [rs.PtyWearable() for _ in wearers]
    conf = tmp_path / "gw.toml"
    lines = [f'gateway = "{GW}"', f'state_dir = "{tmp_path / "state"}"', "[model]", f'bundle = "{bundle}"',
             "[mqtt]", f'broker = "{broker}"', "[homeassistant]", f"discovery = {str(discovery).lower()}"]
    for w, pty in zip(wearers, wear):
        lines += ["[[wearable]]", f'wearer = "{w}"', f'port = "{pty.path}"']
    conf.write_text("\n".join(lines) + "\n")
    p = subprocess.Popen([sys.executable, "-m", "alanet", "run", "--config", str(conf)],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        opened = all(pty.wait_opened_by(p.pid) for pty in wear)
        time.sleep(0.5)
    finally:
        p.terminate()
        out, _ = p.communicate(timeout=20)
        for pty in wear:
            pty.close()
    assert opened, f"gateway never opened its ports: {out}"
    assert p.returncode == 0, out


def test_discovery_announced_then_retracted(tmp_path, mosquitto):
    _, bundle = rs.cached_bundle(3, 120.0)
    run_gateway_once(tmp_path, mosquitto.url, bundle, True, ["w1", "w2"])
    configs = retained_under(mosquitto.port, "homeassistant/#")
    expected = {t for w in ("w1", "w2") for t in [config_topics(GW, w, "homeassistant")["protective"]]}  # a protective model: no pain sensor
    assert set(configs) == expected
    for t, payload in configs.items():
        d = json.loads(payload)
        assert d["unique_id"] and d["state_topic"].startswith(f"alanet/{GW}/")

    # w2 taken out of the config: its entities disappear, w1's stay
    run_gateway_once(tmp_path, mosquitto.url, bundle, True, ["w1"])
    assert set(retained_under(mosquitto.port, "homeassistant/#")) == {config_topics(GW, "w1", "homeassistant")["protective"]}

    # discovery switched off: everything is retracted
    run_gateway_once(tmp_path, mosquitto.url, bundle, False, ["w1"])
    assert retained_under(mosquitto.port, "homeassistant/#") == {}
