"""TLS (mqtts:// with a CA file) and username/password against a real Mosquitto."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import signal
import socket
import subprocess
import sys
import time

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import runtime_support as rs
from conftest import free_port


def _cert(subject: str, issuer_key, issuer_name, key, ca: bool, san: bool):
    now = dt.datetime.now(dt.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
         .issuer_name(issuer_name or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san:
        import ipaddress

        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                         x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _pem_key(k) -> bytes:
    return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                           serialization.NoEncryption())


@pytest.fixture
def secure_broker(tmp_path):
    """Mosquitto with a TLS listener (own CA) and a password file; anonymous refused."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("alanet test CA", ca_key, None, ca_key, True, False)
    srv_key = ec.generate_private_key(ec.SECP256R1())
    srv = _cert("localhost", ca_key, ca.subject, srv_key, False, True)
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "srv.pem").write_bytes(srv.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "srv.key").write_bytes(_pem_key(srv_key))
    pw = tmp_path / "passwd"
    pw.write_text("")
    subprocess.run([shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd", "-b", str(pw), "gw1", "s3cret"],
                   check=True, capture_output=True)
    port = free_port()
    conf = tmp_path / "m.conf"
    conf.write_text("\n".join([
        "user root", f"listener {port} 127.0.0.1", "allow_anonymous false", f"password_file {pw}",
        f"cafile {tmp_path / 'ca.pem'}", f"certfile {tmp_path / 'srv.pem'}", f"keyfile {tmp_path / 'srv.key'}",
        f"log_dest file {tmp_path / 'm.log'}", ""]))
    proc = subprocess.Popen([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.02)
    yield port, tmp_path / "ca.pem"
    proc.terminate()
    proc.wait(5)


def _config(tmp_path, port, ca, bundle, wear_path, password):
    (tmp_path / "pw").write_text(password + "\n")
    p = tmp_path / "gw.toml"
    p.write_text(f"""
gateway = "sec"
state_dir = "{tmp_path / 'state'}"
[model]
bundle = "{bundle}"
[mqtt]
broker = "mqtts://localhost:{port}"
username = "gw1"
password_file = "{tmp_path / 'pw'}"
ca_file = "{ca}"
heartbeat_s = 0.5
[[wearable]]
wearer = "w1"
port = "{wear_path}"
""")
    return p


def test_tls_and_password_alerts_flow(tmp_path, secure_broker):
    port, ca = secure_broker
    sess, bundle = rs.cached_bundle(3, 120.0)
    got = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    sub.username_pw_set("gw1", "s3cret")
    sub.tls_set(ca_certs=str(ca))
    sub.on_message = lambda c, u, m: got.append((m.topic, json.loads(m.payload)))
    sub.connect("localhost", port)
    sub.subscribe("alanet/sec/#", qos=1)
    sub.loop_start()
    wear = rs.PtyWearable()
    cfg = _config(tmp_path, port, ca, bundle, wear.path, "s3cret")
    gw = subprocess.Popen([sys.executable, "-m", "alanet", "run", "--config", str(cfg)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while not any(t.endswith("/status") for t, _ in got) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert wear.wait_opened_by(gw.pid)
        wear.frames(sess, 0, 1800)
        deadline = time.monotonic() + 30
        while sum(t.endswith("/state") for t, _ in got) < (1800 - 180) // 45 + 1 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        gw.send_signal(signal.SIGTERM)
        out, _ = gw.communicate(timeout=20)
        wear.close()
        sub.loop_stop()
    assert gw.returncode == 0, out
    assert sum(t.endswith("/state") for t, _ in got) == (1800 - 180) // 45 + 1, out
    assert [p["state"] for t, p in got if t.endswith("/status")][-1] == "offline"


def test_wrong_password_is_refused_at_start(tmp_path, secure_broker):
    port, ca = secure_broker
    _, bundle = rs.cached_bundle(3, 120.0)
    cfg = _config(tmp_path, port, ca, bundle, "/dev/null", "wrong")
    r = subprocess.run([sys.executable, "-m", "alanet", "run", "--config", str(cfg)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2, r.stderr
    assert "mqtt.username: the broker mqtts://localhost" in r.stderr and "refused the credentials" in r.stderr
