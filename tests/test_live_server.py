"""``alanet live`` against a real Mosquitto: HTTP + Server-Sent Events, reconnects, CLI errors, shutdown."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import paho.mqtt.client as mqtt
import pytest
from conftest import free_port

from alanet.device.config import parse_broker_url
from alanet.device.live.server import LiveServer


class Sse:
    """A minimal Server-Sent Events reader over http.client."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        self.conn.request("GET", "/events")
        self.sock = self.conn.sock  # http.client forgets it for "Connection: close" responses
        self.resp = self.conn.getresponse()
        assert self.resp.status == 200
        assert self.resp.getheader("Content-Type") == "text/event-stream"

    def next(self, timeout: float = 5.0) -> dict:
        self.sock.settimeout(timeout)
        data = []
        while True:
            line = self.resp.fp.readline().decode().rstrip("\n")
            if line.startswith("data: "):
                data.append(line[6:])
            elif line == "" and data:
                return json.loads("\n".join(data))

    def until(self, pred, timeout: float = 5.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ev = self.next(max(0.1, deadline - time.monotonic()))
            if pred(ev):
                return ev
        raise AssertionError("no matching event")

    def close(self) -> None:
        self.resp.close()
        self.sock.close()


def publisher(port: int) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-pub")
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


STATE = {"schema": "alanet.state/1", "gateway": "gw1", "wearer": "w1", "task": "protective", "t_end": 3.0,
         "probabilities": {"normal": 0.3, "protective": 0.7}, "smoothed": 0.66, "state": "none", "model": "m1"}


def test_page_assets_and_events_within_a_second(mosquitto, tmp_path):
    server = LiveServer(parse_broker_url(mosquitto.url), port=free_port(), data_dir=tmp_path)
    server.start()
    pub = publisher(mosquitto.port)
    try:
        for path, ctype in (("/", "text/html"), ("/app.js", "text/javascript"), ("/style.css", "text/css")):
            with urllib.request.urlopen(server.url.rstrip("/") + path, timeout=5) as r:
                body = r.read().decode()
                assert r.headers["Content-Type"].startswith(ctype)
                assert "http://" not in body and "https://" not in body  # every asset is local
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(server.url + "nope", timeout=5)
        sse = Sse(server.port)
        snap = sse.next()
        assert snap["type"] == "snapshot"
        if snap["link"]["state"] != "connected":
            sse.until(lambda e: e["type"] == "link" and e["link"]["state"] == "connected")
        t0 = time.monotonic()
        pub.publish("alanet/gw1/w1/state", json.dumps(STATE), qos=0)
        ev = sse.until(lambda e: e["type"] == "wearer", timeout=2)
        latency = time.monotonic() - t0
        print(f"state topic -> SSE event: {latency * 1000:.1f} ms")
        assert ev["wearer"]["probability"] == 0.66 and ev["sample"][1:] == [0.66, 0.7]
        snap = json.loads(urllib.request.urlopen(server.url + "api/snapshot", timeout=5).read())
        assert snap["wearers"][0]["samples"] == 1
        sse.close()
    finally:
        pub.disconnect()
        pub.loop_stop()
        server.stop()


def test_unreachable_broker_is_retried_and_shown(mosquitto, tmp_path):
    port = mosquitto.port
    mosquitto.stop()
    server = LiveServer(parse_broker_url(f"mqtt://127.0.0.1:{port}"), port=free_port(), data_dir=tmp_path)
    server.start()
    try:
        sse = Sse(server.port)
        snap = sse.next()
        assert snap["link"]["state"] in ("connecting", "disconnected")
        sse.until(lambda e: e["type"] == "link" and e["link"]["state"] == "disconnected", timeout=5)
        mosquitto.start()
        ev = sse.until(lambda e: e["type"] == "link" and e["link"]["state"] == "connected", timeout=10)
        assert "127.0.0.1" in ev["link"]["detail"]
        mosquitto.stop()
        sse.until(lambda e: e["type"] == "link" and e["link"]["state"] == "disconnected", timeout=10)
        sse.close()
    finally:
        server.stop()


def test_bad_broker_url_and_busy_port_are_one_line_errors(cli):
    for url in ("localhost:1883", "http://localhost", "mqtt://host:99999", "mqtt:///nohost"):
        r = cli("live", "--broker", url)
        assert r.returncode == 2, (url, r.stderr)
        assert r.stderr.startswith("alanet live: error: --broker") and r.stderr.count("\n") == 1, r.stderr
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        r = cli("live", "--broker", "mqtt://127.0.0.1:1", "--http-port", str(s.getsockname()[1]))
    assert r.returncode == 2 and "address already in use" in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_sigterm_and_ctrl_c_stop_cleanly_with_a_browser_attached(mosquitto):
    for sig in (signal.SIGTERM, signal.SIGINT):
        port = free_port()
        p = subprocess.Popen([sys.executable, "-m", "alanet", "live", "--broker", mosquitto.url, "--http-port", str(port)],
                             stderr=subprocess.PIPE, text=True)
        try:
            assert "serving http://127.0.0.1:" in p.stderr.readline()
            sse = Sse(port)
            assert sse.next()["type"] == "snapshot"
            p.send_signal(sig)
            rc = p.wait(timeout=10)
            assert rc == 0, p.stderr.read()
            assert "stopped" in p.stderr.read()
            sse.close()
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_terminal_once_prints_the_table(mosquitto):
    pub = publisher(mosquitto.port)
    try:
        status = {"schema": "alanet.status/1", "gateway": "gw1", "state": "online", "model": "m1",
                  "counters": {"frames": 77, "crc_errors": 0, "gaps": 1, "windows": 3, "inference_ms": 0.2,
                               "queue_depth": 0}}
        pub.publish("alanet/gw1/status", json.dumps(status), qos=1, retain=True).wait_for_publish(5)
        r = subprocess.run([sys.executable, "-m", "alanet", "live", "--broker", mosquitto.url, "--terminal", "--once",
                            "--refresh", "1.0"], capture_output=True, text=True, timeout=30,
                           env={**os.environ, "TERM": "dumb"})
        assert r.returncode == 0, r.stderr
        assert "gateway gw1  online  model m1" in r.stdout and "frames 77" in r.stdout and "gaps 1" in r.stdout
    finally:
        pub.disconnect()
        pub.loop_stop()
