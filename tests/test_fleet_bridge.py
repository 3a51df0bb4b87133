"""A gateway behind a bridge: pty wearable → `alanet run` → its own Mosquitto → bridge
(TLS, the gateway's password, ACL) → the central Mosquitto → subscriber and `alanet flash`.

Both brokers run from the configuration that ``alanet.device.fleet.mosquitto`` writes
(the shipped examples are its output). The central broker is stopped for 30 s in the
middle of the session: a tablet on the gateway's broker keeps getting alerts, and the
central subscriber gets every alert exactly once after de-duplication when it is back.
Then a bundle flashed from the central side with ``--all`` reaches the gateway and the
result comes back.
"""

from __future__ import annotations

import contextlib
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
from fleet_support import Fleet

from alanet.device.alerts import AlertWatcher

SCHEMAS = Path(__file__).resolve().parents[1] / "device" / "schemas"
GW = "ward-gw1"
OUTAGE_S = 30.0
CUT1, CUT2 = int(32 * rs.FS), int(80 * rs.FS)  # the central broker is down for frames [CUT1, CUT2); flash at CUT2


class Recorder:
    """An ``AlertWatcher`` (the code of ``alanet alerts``) that keeps what it was given."""

    def __init__(self, url: str, ca_file: str | None = None, client_id: str = "", persistent: bool = False) -> None:
        self.alerts: list[dict] = []
        self.status: list[dict] = []
        self.states = 0
        self.bridge: list[bool] = []
        self.lock = threading.Lock()
        self.w = AlertWatcher(url, GW, ca_file=ca_file, on_alert=self._alert, on_state=self._state,
                              on_status=self._status, client_id=client_id, persistent=persistent,
                              on_bridge=lambda gw, up: self.bridge.append(up))
        self.w.client.reconnect_delay_set(0.2, 1)
        self.w.start()

    def _alert(self, a: dict) -> None:
        with self.lock:
            self.alerts.append(a)

    def _state(self, s: dict) -> None:
        with self.lock:
            self.states += 1

    def _status(self, s: dict) -> None:
        with self.lock:
            self.status.append(s)

    def n(self) -> int:
        with self.lock:
            return len(self.alerts)

    def close(self) -> None:
        self.w.close()


def wait(pred, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return bool(pred())


def signed_bundles(tmp: Path, bundle: Path) -> tuple[Path, Path, Path]:
    """The test bundle signed as fleet-v1 and, same model and statistics, as fleet-v2; the public key."""
    from alanet.device.bundle import MANIFEST_FILE, MODEL_FILE, write_bundle
    from alanet.device.signing import write_keypair

    key = tmp / "release.key"
    write_keypair(key)
    manifest = json.loads((bundle / MANIFEST_FILE).read_text())
    model = (bundle / MODEL_FILE).read_bytes()
    v1, v2 = tmp / "fleet-v1", tmp / "fleet-v2"
    write_bundle(v1, dict(manifest, model_id="fleet-v1"), model, signing_key=key)
    write_bundle(v2, dict(manifest, model_id="fleet-v2"), model, signing_key=key)
    return v1, v2, Path(f"{key}.pub")


def as_tuples(alerts) -> list:
    return sorted((a["type"], a["state"], round(a["t_end"], 1)) for a in alerts)


def ev_tuples(events) -> list:
    return sorted((e.type, e.state, round(e.t_end, 1)) for e in events)


def run_fleet_session(fleet, central, tablet, wear, gw, sess, cli, v2, before, during, expected) -> None:
    """Frames before, during (central broker down 30 s) and after the outage; a flash from the central side."""
    assert wait(lambda: any(s.get("state") == "online" for s in central.status), 30), "no online status centrally"
    assert wear.wait_opened_by(gw.pid)
    wear.hello()
    wear.frames(sess, 0, CUT1)
    assert wait(lambda: central.n() >= len(before), 30), central.alerts

    fleet.central.stop()
    down_at = time.monotonic()
    wear.frames(sess, CUT1, CUT2)  # decided while the central broker is away
    assert wait(lambda: tablet.n() >= len(before) + len(during), 20), "the gateway's own broker must keep working"
    time.sleep(max(0.0, down_at + OUTAGE_S - time.monotonic()))
    assert central.n() == len(before)
    fleet.central.start()
    assert wait(lambda: central.n() >= len(before) + len(during), 60), central.alerts
    assert central.bridge[-1] is True  # the bridge's link notification (retained "1") came back

    r = cli("flash", str(v2), "--broker", fleet.central_url("deploy"), "--ca-file", fleet.ca_file, "--all",
            "--timeout", "60", "--no-progress", timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"found 1 gateway(s) online: {GW}" in r.stderr
    assert "1 of 1 gateway(s) took the bundle" in r.stdout
    assert [ln.split()[:4] for ln in r.stdout.splitlines() if ln.startswith(GW)] == [[GW, "took", "it", "fleet-v2"]]

    wear.frames(sess, CUT2, sess.n)
    assert wait(lambda: central.n() >= len(expected), 30), central.alerts
    assert wait(lambda: central.status[-1].get("model") == "fleet-v2", 15), central.status[-1]  # heartbeat
    r = cli("live", "--broker", fleet.central_url("dashboard"), "--ca-file", fleet.ca_file, "--terminal", "--once",
            "--refresh", "1.5", timeout=60)  # the live view of the fleet, through the central broker
    assert r.returncode == 0, r.stderr
    assert any(GW in ln and "online" in ln and "fleet-v2" in ln for ln in r.stdout.splitlines()), r.stdout
    time.sleep(0.5)


def test_gateway_behind_a_bridge_survives_a_central_outage_and_takes_a_flash(tmp_path, cli):
    sess, bundle = rs.cached_bundle(3, 120.0)
    expected = rs.expected_events(bundle, sess)
    before = [e for e in expected if e.t_end * rs.FS <= CUT1]
    during = [e for e in expected if CUT1 < e.t_end * rs.FS <= CUT2]
    assert before and len(during) >= 2 and len(before) + len(during) < len(expected)
    v1, v2, pub = signed_bundles(tmp_path, bundle)

    fleet = Fleet(tmp_path / "fleet")
    local = fleet.add_gateway(GW)
    with contextlib.ExitStack() as stack:  # brokers, subscribers and the pty go, whatever happens
        stack.callback(fleet.stop)
        fleet.start()
        wear = rs.PtyWearable()
        stack.callback(wear.close)
        conf = tmp_path / "gateway.toml"
        conf.write_text(f'gateway = "{GW}"\nstate_dir = "{tmp_path / "state"}"\n'
                        f'[model]\nbundle = "{v1}"\ntrusted_keys = ["{pub}"]\nallow_unsigned = false\n'
                        f'[mqtt]\nbroker = "{local.url}"\nheartbeat_s = 2\n'
                        f'[[wearable]]\nwearer = "w1"\nport = "{wear.path}"\n')
        central = Recorder(fleet.central_url("dashboard"), fleet.ca_file, client_id="central-dashboard",
                           persistent=True)
        stack.callback(central.close)
        tablet = Recorder(local.url)  # a ward tablet on the gateway's own broker
        stack.callback(tablet.close)
        gw = subprocess.Popen([sys.executable, "-m", "alanet", "run", "--config", str(conf)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            run_fleet_session(fleet, central, tablet, wear, gw, sess, cli, v2, before, during, expected)
        finally:
            if gw.poll() is None:
                gw.send_signal(signal.SIGTERM)
            out, _ = gw.communicate(timeout=30)
        assert gw.returncode == 0, out
        assert wait(lambda: central.status and central.status[-1].get("state") == "offline", 15), central.status[-3:]

    # Every alert exactly once after de-duplication, the same ones the tablet saw and the bundle decides offline.
    alerts = central.alerts
    assert len({a["id"] for a in alerts}) == len(alerts) == len(expected)
    assert as_tuples(alerts) == ev_tuples(expected)
    assert sorted(a["id"] for a in alerts) == sorted(a["id"] for a in tablet.alerts)
    schema = json.loads((SCHEMAS / "alert.schema.json").read_text())
    for a in alerts:
        jsonschema.validate(a, schema)
    # The flash switched the running model: alerts decided after it carry the new model id.
    by_t = sorted(alerts, key=lambda a: a["t_end"])
    assert [a["model"] for a in by_t] == ["fleet-v1"] * (len(before) + len(during)) + \
        ["fleet-v2"] * (len(expected) - len(before) - len(during))
    assert central.states > 0  # live state crosses the bridge too (QoS 0, not while it is down)


def test_flash_all_leaves_out_a_gateway_whose_bridge_is_down(tmp_path):
    """A gateway's box loses power: its status stays online centrally, its bridge's will says 0."""
    from alanet.device.flash.sender import discover_gateways

    fleet = Fleet(tmp_path / "fleet", tls=False)
    brokers = {g: fleet.add_gateway(g) for g in ("gw-a", "gw-b")}
    seen: dict[str, bytes] = {}
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="watch-bridges")
    sub.username_pw_set("dashboard", fleet.passwords["dashboard"])
    sub.on_connect = lambda c, u, f, rc, p: c.subscribe("alanet/+/bridge", qos=1)
    sub.on_message = lambda c, u, m: seen.__setitem__(m.topic.split("/")[1], bytes(m.payload))
    try:
        fleet.start()
        for g, b in brokers.items():
            pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"alanet-{g}")
            pub.connect("127.0.0.1", b.port)
            pub.loop_start()
            pub.publish(f"alanet/{g}/status", json.dumps({"schema": "alanet.status/1", "gateway": g,
                                                          "state": "online"}), qos=1, retain=True).wait_for_publish(5)
            pub.disconnect()
            pub.loop_stop()
        sub.connect("127.0.0.1", fleet.central.port)
        sub.loop_start()
        assert wait(lambda: seen.get("gw-a") == b"1" and seen.get("gw-b") == b"1", 20), seen
        url = fleet.central_url("deploy")
        assert wait(lambda: discover_gateways(url) == ["gw-a", "gw-b"], 20)
        brokers["gw-b"].proc.send_signal(signal.SIGKILL)  # no clean disconnect: the central broker sends the will
        brokers["gw-b"].proc.wait(5)
        assert wait(lambda: seen.get("gw-b") == b"0", 90), seen  # keepalive 30 s × 1.5 at most
        assert discover_gateways(url) == ["gw-a"]
    finally:
        sub.loop_stop()
        sub.disconnect()
        fleet.stop()


def test_gateway_broker_killed_while_holding_alerts_for_the_central_loses_none(tmp_path):
    """The gateway's broker saves after every change: a SIGKILL (a power cut) with alerts queued for the
    central broker loses none of them."""
    from alanet.device.decisions import Event
    from alanet.device.runtime import alert_payload

    fleet = Fleet(tmp_path / "fleet", tls=False)
    local = fleet.add_gateway(GW)
    central = None
    try:
        fleet.start()
        central = Recorder(fleet.central_url("dashboard"), client_id="central-dashboard", persistent=True)
        assert wait(lambda: central.w.connected.is_set(), 10)
        time.sleep(0.3)
        fleet.central.stop()
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"alanet-{GW}")
        pub.connect("127.0.0.1", local.port)
        pub.loop_start()
        ids = []
        for i in range(5):
            a = alert_payload(GW, "w1", Event("protective", "raised" if i % 2 == 0 else "cleared", 0.8, i, i + 3.0, i),
                              "fleet-v1")
            ids.append(a["id"])
            pub.publish(f"alanet/{GW}/w1/alert", json.dumps(a), qos=1).wait_for_publish(5)  # the local PUBACK
        pub.disconnect()
        pub.loop_stop()
        time.sleep(0.3)
        local.proc.send_signal(signal.SIGKILL)
        local.proc.wait(5)
        local.proc = None
        local.start()
        fleet.central.start()
        assert wait(lambda: central.n() >= len(ids), 30), central.alerts
        time.sleep(0.3)
    finally:
        if central is not None:
            central.close()
        fleet.stop()
    assert sorted(a["id"] for a in central.alerts) == sorted(ids)


@pytest.fixture(autouse=True)
def _mosquitto_installed():
    import shutil

    if not shutil.which("mosquitto") and not Path("/usr/sbin/mosquitto").exists():
        pytest.fail("mosquitto is not installed (./dev test installs it)")
