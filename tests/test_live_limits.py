"""``alanet live`` under hostile or careless clients and publishers (real Mosquitto, real sockets).

Each test reproduces a problem of the earlier stdlib server: one retained message with
``NaN`` made every new viewer's JSON invalid; every event stream and every idle socket
held a thread forever, without a cap or a timeout.
"""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import time

import paho.mqtt.client as mqtt
import pytest
from conftest import free_port


def strict(text: str):
    """Parse JSON the way a browser does: NaN / Infinity are errors."""
    def refuse(name: str):
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def start_live(broker_url: str, *flags: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    p = subprocess.Popen([sys.executable, "-m", "alanet", "live", "--broker", broker_url, "--http-port", str(port),
                          *flags], stderr=subprocess.PIPE, text=True)
    line = p.stderr.readline()
    assert "serving" in line, line + (p.stderr.read() if p.poll() is not None else "")
    return p, port


def stop_live(p: subprocess.Popen) -> None:
    p.terminate()
    try:
        assert p.wait(10) == 0
    finally:
        if p.poll() is None:
            p.kill()


def open_stream(port: int, timeout: float = 5.0) -> tuple[socket.socket, bytes]:
    """A raw /events request; returns the socket and the first bytes of the answer."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    return s, data


def test_a_retained_nan_does_not_break_new_viewers(mosquitto):
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="nan-pub")
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    try:
        # What a firmware "invalid" value turned into before the gateway checked it: NaN in a retained status.
        status = ('{"schema": "alanet.status/1", "gateway": "gw1", "state": "online", "model": "m1", '
                  '"counters": {"frames": 10, "inference_ms": NaN, "queue_depth": Infinity}}')
        model = '{"schema": "alanet.model/1", "gateway": "gw1", "model": "m1", "decision": {"raise_threshold": NaN}}'
        for topic, payload in (("alanet/gw1/status", status), ("alanet/gw1/model", model)):
            pub.publish(topic, payload, qos=1, retain=True).wait_for_publish(5)
        live, port = start_live(mosquitto.url)
        try:
            deadline = time.monotonic() + 10
            while True:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/api/snapshot")
                snap = strict(conn.getresponse().read().decode())
                conn.close()
                if "gw1" in snap["gateways"] and snap["gateways"]["gw1"]["model"] is not None:
                    break
                assert time.monotonic() < deadline, "the retained messages never arrived"
                time.sleep(0.1)
            g = snap["gateways"]["gw1"]
            assert g["status"]["counters"] == {"frames": 10, "inference_ms": None, "queue_depth": None}
            assert g["threshold"] == 0.6  # the NaN threshold is ignored, the default stays
            s, head = open_stream(port)
            assert b" 200 " in head.split(b"\r\n", 1)[0]
            body = head.split(b"\r\n\r\n", 1)[1]
            while b"\n\n" not in body:
                body += s.recv(65536)
            first = body.split(b"\n\n", 1)[0].decode()
            data = "".join(line[6:] for line in first.splitlines() if line.startswith("data: "))
            assert strict(data)["type"] == "snapshot"
            s.close()
        finally:
            stop_live(live)
    finally:
        pub.disconnect()
        pub.loop_stop()


def test_event_streams_are_capped_and_the_page_still_answers(mosquitto):
    live, port = start_live(mosquitto.url, "--max-clients", "4")
    streams = []
    try:
        for _ in range(4):
            s, head = open_stream(port)
            assert b" 200 " in head.split(b"\r\n", 1)[0], head
            streams.append(s)
        s, head = open_stream(port)  # one too many: refused at once, not parked on a thread
        assert head.split(b"\r\n", 1)[0].split(b" ")[1] == b"503", head
        assert b"retry-after" in head.lower()
        s.close()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)  # the page itself keeps working
        conn.request("GET", "/healthz")
        assert conn.getresponse().status == 200
        conn.close()
        streams.pop().close()  # a freed slot is usable again
        deadline = time.monotonic() + 5
        while True:
            s, head = open_stream(port)
            if b" 200 " in head.split(b"\r\n", 1)[0]:
                streams.append(s)
                break
            s.close()
            assert time.monotonic() < deadline, "the closed stream's slot was never freed"
            time.sleep(0.1)
    finally:
        for s in streams:
            s.close()
        stop_live(live)


@pytest.mark.parametrize("sent", [b"", b"GET / HTTP/1.1\r\nHost: x\r\n"], ids=["silent", "half-sent request"])
def test_idle_and_half_open_sockets_are_closed(mosquitto, sent):
    live, port = start_live(mosquitto.url, "--idle-timeout", "1")
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        if sent:
            s.sendall(sent)
        t0 = time.monotonic()
        got = s.recv(4096)  # blocks until the server closes the socket (b"") or the 10 s timeout raises
        assert got == b"" and time.monotonic() - t0 < 8
        s.close()
    finally:
        stop_live(live)
