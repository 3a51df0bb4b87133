"""Gateway configuration: TOML + flags; bad keys and values are refused, naming the key."""

from pathlib import Path

import pytest

from alanet.device.config import load_config, parse_broker_url
from alanet.errors import InputError

EXAMPLE = Path(__file__).resolve().parents[1] / "device" / "gateway.example.toml"


def write(tmp_path, text):
    p = tmp_path / "gw.toml"
    p.write_text(text)
    return p


BASE = """
gateway = "ward3-bed2"
state_dir = "{state}"
[model]
bundle = "models/protective-demo"
[mqtt]
broker = "mqtt://broker.local:1884"
keepalive = 20
[[wearable]]
wearer = "p017"
port = "/dev/ttyACM0"
[[wearable]]
wearer = "p018"
port = "/dev/ttyACM1"
baud = 230400
"""


def test_full_file_and_flag_overrides(tmp_path):
    p = write(tmp_path, BASE.format(state=tmp_path))
    c = load_config(p)
    assert c.gateway == "ward3-bed2" and c.broker.host == "broker.local" and c.broker.port == 1884
    assert c.broker.keepalive == 20 and not c.broker.tls
    assert [(w.wearer, w.port, w.baud) for w in c.wearables] == [("p017", "/dev/ttyACM0", 115200),
                                                                 ("p018", "/dev/ttyACM1", 230400)]
    assert c.bundle == str(tmp_path / "models/protective-demo")  # relative to the file
    c2 = load_config(p, {"port": "/dev/pts/9", "wearer": "x1", "broker": "mqtts://u:p%40ss@h", "bundle": "/b",
                         "gateway": "g2", "baud": 9600})
    assert [(w.wearer, w.port, w.baud) for w in c2.wearables] == [("x1", "/dev/pts/9", 9600)]
    assert c2.broker.tls and c2.broker.port == 8883 and c2.broker.username == "u" and c2.broker.password == "p@ss"
    assert c2.gateway == "g2" and c2.bundle == "/b"


def test_example_config_loads():
    c = load_config(EXAMPLE)
    assert c.wearables and c.broker.url.startswith("mqtt")
    assert (c.batch_wait_ms, c.batch_max, c.read_hold_ms, c.state_hold_ms) == (20.0, 0, 400.0, 100.0)


@pytest.mark.parametrize("text, key", [
    ('gateway = "a"\ncolour = 1\n[model]\nbundle="b"\n[[wearable]]\nport="p"', "colour"),
    ('[model]\nbundle="b"\nbundel="c"\n[[wearable]]\nport="p"', "model.bundel"),
    ('[model]\nbundle="b"\n[mqtt]\nkeepalive = "30"\n[[wearable]]\nport="p"', "mqtt.keepalive"),
    ('[model]\nbundle="b"\n[mqtt]\nbroker = "http://x"\n[[wearable]]\nport="p"', "mqtt.broker"),
    ('[model]\nbundle="b"\n[[wearable]]\nport="p"\nbaud = -5', "wearable[0].baud"),
    ('[model]\nbundle="b"\n[[wearable]]\nport="p"\nspeed = 1', "wearable[0].speed"),
    ('[model]\nbundle="b"\n[[wearable]]\nport="p"\nwearer = "a/b"', "wearable[0].wearer"),
    ('gateway = "gw#1"\n[model]\nbundle="b"\n[[wearable]]\nport="p"', "gateway"),
    ('[model]\nbundle="b"\n[mqtt]\nca_file = "/nonexistent.pem"\n[[wearable]]\nport="p"', "mqtt.ca_file"),
    ('[model]\nbundle="b"\n[runtime]\nmax_gap_frames = 1.5\n[[wearable]]\nport="p"', "runtime.max_gap_frames"),
    ('[model]\nbundle="b"\n[runtime]\nbatch_wait_ms = -1\n[[wearable]]\nport="p"', "runtime.batch_wait_ms"),
    ('[model]\nbundle="b"\n[runtime]\nbatch_wait_ms = 5000\n[[wearable]]\nport="p"', "runtime.batch_wait_ms"),
    ('[model]\nbundle="b"\n[runtime]\nbatch_max = 2.5\n[[wearable]]\nport="p"', "runtime.batch_max"),
    ('[model]\nbundle="b"\n[runtime]\nread_hold_ms = -1\n[[wearable]]\nport="p"', "runtime.read_hold_ms"),
    ('[model]\nbundle="b"\n[runtime]\nread_hold_ms = 1500\n[[wearable]]\nport="p"', "runtime.read_hold_ms"),
    ('[model]\nbundle="b"\n[mqtt]\npublish_state = "yes"\n[[wearable]]\nport="p"', "mqtt.publish_state"),
    ('[model]\nbundle="b"\n[mqtt]\nstate_hold_ms = -1\n[[wearable]]\nport="p"', "mqtt.state_hold_ms"),
    ('[model]\nbundle="b"\n[mqtt]\nstate_hold_ms = 2000\n[[wearable]]\nport="p"', "mqtt.state_hold_ms"),
    ('[model]\nbundle="b"', "wearable"),
    ('[[wearable]]\nport="p"', "model.bundle"),
    ('[model]\nbundle="b"\n[[wearable]]\nport="p"\nwearer="a"\n[[wearable]]\nport="q"\nwearer="a"', "wearable.wearer"),
])
def test_errors_name_the_key(tmp_path, text, key):
    p = write(tmp_path, text)
    with pytest.raises(InputError) as e:
        load_config(p)
    assert f"{p}: {key}:" in str(e.value)


def test_flag_errors_name_the_flag(tmp_path):
    with pytest.raises(InputError, match=r"--broker: mqtt.broker: bad broker URL"):
        load_config(None, {"port": "/dev/x", "bundle": "b", "broker": "mqtt://"})
    with pytest.raises(InputError, match=r"--wearer: wearer: 'a b' is not a valid id"):
        load_config(None, {"port": "/dev/x", "bundle": "b", "wearer": "a b"})
    with pytest.raises(InputError, match="config file not found"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(InputError, match="not valid TOML"):
        load_config(write(tmp_path, "gateway = "))


def test_broker_urls():
    b = parse_broker_url("mqtt://10.0.0.2")
    assert (b.host, b.port, b.tls) == ("10.0.0.2", 1883, False)
    with pytest.raises(InputError):
        parse_broker_url("mqtt://h:99999")
    with pytest.raises(InputError):
        parse_broker_url("mqtt://h/topic")


def test_cli_exit_2_names_key(tmp_path, cli):
    p = write(tmp_path, '[model]\nbundle="b"\n[mqtt]\nkeepalive = 1\n[[wearable]]\nport="p"')
    r = cli("run", "--config", str(p))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == f"alanet run: error: {p}: mqtt.keepalive: must be an integer in 5..3600, got 1"


def test_run_refuses_a_tampered_bundle(tmp_path, cli):
    import shutil

    import runtime_support as rs

    _, bundle = rs.cached_bundle(3, 120.0)
    bad = tmp_path / "bad"
    shutil.copytree(bundle, bad)
    data = bytearray((bad / "model.tflite").read_bytes())
    data[-10] ^= 0xFF
    (bad / "model.tflite").write_bytes(bytes(data))
    r = cli("run", "--port", "/dev/null", "--bundle", str(bad), "--state-dir", str(tmp_path / "st"))
    assert r.returncode == 2
    assert "alanet run: error:" in r.stderr and "SHA-256 mismatch" in r.stderr
    # the state dir lock was released: a second start gets as far as the bundle again
    r = cli("run", "--port", "/dev/null", "--bundle", str(bad), "--state-dir", str(tmp_path / "st"))
    assert "SHA-256 mismatch" in r.stderr


def test_state_dir_is_exclusive(tmp_path):
    from alanet.device.runtime import StateDirLock

    a = StateDirLock(str(tmp_path / "st"))
    with pytest.raises(InputError, match="in use by another running gateway"):
        StateDirLock(str(tmp_path / "st"))
    a.release()
    StateDirLock(str(tmp_path / "st")).release()
