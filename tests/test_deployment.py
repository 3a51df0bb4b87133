"""Deployment details: passwords never shown, password files that cannot be read, fleet-unique default ids,
and a systemd unit whose service user can read its config."""

from __future__ import annotations

import logging
import os
import re
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import runtime_support as rs
from alanet.device.config import default_gateway_id, load_config, parse_broker_url
from alanet.errors import InputError

UNIT = Path(__file__).resolve().parents[1] / "device" / "alanet-gateway.service"
SECRET = "s3cr3t-Pa55"


def test_a_broker_password_is_never_in_the_url_shown():
    b = parse_broker_url(f"mqtt://gw1:{SECRET}@broker.clinic:1883")
    assert b.password == SECRET and SECRET not in b.url and b.url == "mqtt://gw1:***@broker.clinic:1883"
    assert SECRET not in repr(b)
    from alanet.device.config import redact_url

    assert redact_url(f"mqtts://u:{SECRET}@x@h") == "mqtts://u:***@h"
    with pytest.raises(InputError) as e:
        parse_broker_url(f"http://u:{SECRET}@h")
    assert SECRET not in str(e.value)


def test_the_password_stays_out_of_logs_and_output(tmp_path, mosquitto, caplog, cli):
    """A broker URL with credentials (also from the TOML ``broker =``) used to be logged as given."""
    _, bundle = rs.cached_bundle(3, 120.0)
    url = f"mqtt://gw1:{SECRET}@127.0.0.1:{mosquitto.port}"
    cfg_file = tmp_path / "gw.toml"
    cfg_file.write_text(f'gateway = "gw-pw"\nstate_dir = "{tmp_path / "state"}"\n[model]\nbundle = "{bundle}"\n'
                        f'[mqtt]\nbroker = "{url}"\nheartbeat_s = 0.2\n[[wearable]]\nport = "/dev/null"\n')
    r = cli("run", "--config", str(cfg_file), "--check")
    assert r.returncode == 0 and "gw1:***@" in r.stdout and SECRET not in r.stdout + r.stderr
    from alanet.device.runtime import Gateway

    cfg = load_config(cfg_file)
    assert SECRET not in repr(cfg)
    with caplog.at_level(logging.DEBUG, logger="alanet"):
        gw = Gateway(cfg)
        t = threading.Thread(target=gw.run, kwargs={"install_signals": False}, daemon=True)
        t.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any("connected to" in r.getMessage() for r in caplog.records):
            time.sleep(0.05)
        time.sleep(0.5)
        gw.stop()
        t.join(20)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "connected to mqtt://gw1:***@127.0.0.1" in text and SECRET not in text


def _pwconfig(tmp_path, pw_file):
    p = tmp_path / "gw.toml"
    p.write_text(f'gateway = "g"\nstate_dir = "{tmp_path}"\n[model]\nbundle = "b"\n[mqtt]\nusername = "u"\n'
                 f'password_file = "{pw_file}"\n[[wearable]]\nport = "p"\n')
    return p


def test_a_password_file_that_cannot_be_used_is_one_clear_line(tmp_path, cli):
    bad = tmp_path / "pw-latin1"
    bad.write_bytes(b"caf\xe9\n")
    with pytest.raises(InputError, match="mqtt.password_file: .* is not UTF-8 text"):
        load_config(_pwconfig(tmp_path, bad))
    empty = tmp_path / "pw-empty"
    empty.write_text("\n")
    with pytest.raises(InputError, match="mqtt.password_file: .* is empty"):
        load_config(_pwconfig(tmp_path, empty))
    r = cli("run", "--config", str(_pwconfig(tmp_path, bad)), "--check")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "mqtt.password_file" in r.stderr


def test_a_password_file_the_service_user_cannot_read(tmp_path):
    """The unit's ``User=alanet`` cannot read a root-only file (root can: the check runs without the
    capabilities that let root read anything, or as an unprivileged user)."""
    import shutil

    pw = tmp_path / "pw"
    pw.write_text("secret\n")
    os.chmod(pw, 0o000)
    cfg = _pwconfig(tmp_path, pw)
    code = ("from alanet.device.config import load_config\nfrom alanet.errors import InputError\n"
            f"try:\n    load_config({str(cfg)!r})\nexcept InputError as e:\n    print('ERR', e)\n")
    cmd = [sys.executable, "-c", code]
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("root without setpriv (util-linux) cannot give up reading everything")
        cmd = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-all"] + cmd
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    assert r.stdout.startswith("ERR") and "mqtt.password_file: cannot read" in r.stdout and "Permission denied" in r.stdout


def test_the_default_gateway_id_tells_machines_with_one_host_name_apart(tmp_path):
    """Every Raspberry Pi is called 'raspberrypi': the host name alone gave a fleet one id (and one client id)."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("3f2a9c0e8d7b6a5f4e3d2c1b0a998877\n")
    b.write_text("0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e\n")
    ida, idb = default_gateway_id([a]), default_gateway_id([b])
    assert ida != idb and ida.endswith("-3f2a9c0e") and idb.endswith("-0b1c2d3e")
    host = ida.rsplit("-", 1)[0]
    assert idb.startswith(host) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", ida)


def test_the_unit_installs_a_config_its_service_user_can_read():
    """The unit's own instructions installed the config root:root 0640, unreadable by ``User=alanet``."""
    text = UNIT.read_text()
    user = re.search(r"^User=(\S+)", text, re.M).group(1)
    group = re.search(r"^Group=(\S+)", text, re.M).group(1)
    steps = [ln.lstrip("#").strip() for ln in text.splitlines() if ln.startswith("#") and "sudo " in ln]
    cmds = [shlex.split(part.strip()) for s in steps for part in s.split("&&")]
    cmds = [c[1:] if c and c[0] == "sudo" else c for c in cmds]
    made = next(i for i, c in enumerate(cmds) if c[:1] == ["useradd"] and c[-1] == user)
    install = next(i for i, c in enumerate(cmds) if c[:1] == ["install"] and c[-1].endswith("gateway.toml"))
    c = cmds[install]
    mode = c[c.index("-m") + 1]
    owner = c[c.index("-o") + 1] if "-o" in c else "root"
    grp = c[c.index("-g") + 1] if "-g" in c else "root"
    readable = (owner == user and int(mode[-3], 8) & 4) or (grp == group and int(mode[-2], 8) & 4) or \
        int(mode[-1], 8) & 4
    assert readable, f"install {' '.join(c)}: {user}:{group} cannot read it"
    assert not int(mode[-1], 8) & 4, "the config may hold a broker password: not world-readable"
    assert made < install, "the service user must exist before the config is installed for its group"
