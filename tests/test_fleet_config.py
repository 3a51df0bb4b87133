"""The fleet's Mosquitto files: the shipped examples are the generator's output, the bridge
and the ACL carry the same topics, and ``alanet fleet-config`` writes them (or says why not)."""

from __future__ import annotations

import stat

import pytest

from alanet.device.fleet import mosquitto as fm
from alanet.errors import InputError


def test_shipped_examples_are_what_the_generator_writes():
    for name, text in fm.EXAMPLE.files().items():
        shipped = fm.HERE / name
        assert shipped.is_file(), f"device/fleet/{name} is missing"
        assert shipped.read_text() == text, (f"device/fleet/{name} differs from the generator's output: regenerate "
                                             "it with fm.EXAMPLE.files()")


def test_bridge_and_acl_carry_the_same_topics():
    gw = "ward3-bed2"
    conf = fm.gateway_conf(fm.GatewayBroker(gw, "central.example", password="pw"))
    acl = fm.central_acl()
    bridged = [ln.split()[1:] for ln in conf.splitlines() if ln.startswith("topic ")]
    assert bridged == [["alanet/ward3-bed2/+/alert", "out", "1"], ["alanet/ward3-bed2/+/state", "out", "0"],
                       ["alanet/ward3-bed2/status", "out", "1"], ["alanet/ward3-bed2/model", "out", "1"],
                       ["alanet/ward3-bed2/flash/#", "out", "1"], ["alanet/ward3-bed2/cmd/#", "in", "1"]]
    patterns = [ln.split()[1:] for ln in acl.splitlines() if ln.startswith("pattern ")]
    want = [["write" if d == "out" else "read", t.replace(gw, "%u")] for t, d, _ in bridged]
    assert patterns == want + [["write", "alanet/%u/bridge"]]
    assert f"notification_topic alanet/{gw}/bridge" in conf and "cleansession false" in conf
    # every topic the gateway publishes or reads matches the bridge (the runtime's and the flash protocol's)
    from paho.mqtt.client import topic_matches_sub

    from alanet.device.flash import protocol as P
    from alanet.device.runtime import topic

    outgoing = [topic(gw, "p017", "alert"), topic(gw, "p017", "state"), topic(gw, "status"), topic(gw, "model"),
                P.reply_topic(gw, "0123abcd")]
    incoming = [P.begin_topic(gw, "t1"), P.chunk_topic(gw, "t1", 7), P.end_topic(gw, "t1"), P.rollback_topic(gw)]
    for t in outgoing:
        assert any(topic_matches_sub(b[0], t) for b in bridged if b[1] == "out"), t
    for t in incoming:
        assert any(topic_matches_sub(b[0], t) for b in bridged if b[1] == "in"), t


def test_homeassistant_topics_are_bridged_when_asked():
    from alanet.device.homeassistant import config_topics

    conf = fm.gateway_conf(fm.GatewayBroker("ward3", "c", password="pw", homeassistant_prefix="homeassistant"))
    line = [ln for ln in conf.splitlines() if ln.startswith("topic homeassistant/")]
    assert line == ["topic homeassistant/+/alanet_ward3/+/config out 1"]
    from paho.mqtt.client import topic_matches_sub

    for t in config_topics("ward3", "p017").values():
        assert topic_matches_sub("homeassistant/+/alanet_ward3/+/config", t)
    assert "pattern write homeassistant/+/alanet_%u/+/config" in fm.central_acl(fm.Accounts(homeassistant_prefix="homeassistant"))


@pytest.mark.parametrize("kw, field", [
    (dict(gateway="a/b"), "--gateway"),
    (dict(gateway="a+b"), "--gateway"),
    (dict(central_host="evil\nlistener 1"), "--central"),
    (dict(central_port=0), "--central"),
    (dict(password=None), "--password-file"),
    (dict(cert_file="/c.pem"), "--cert-file"),
])
def test_bad_settings_name_the_field(kw, field):
    s = dict(gateway="gw1", central_host="central.example", password="pw") | kw
    with pytest.raises(InputError, match=field):
        fm.gateway_conf(fm.GatewayBroker(**s))


def test_cli_writes_the_files(tmp_path, cli):
    secret = tmp_path / "gw.secret"
    secret.write_text("s3cret\n")
    out = tmp_path / "alanet-bridge.conf"
    r = cli("fleet-config", "gateway", "--gateway", "ward3-bed2", "--central", "central.example:9883",
            "--password-file", str(secret), "--out", str(out))
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    assert "address central.example:9883" in text and "remote_password s3cret" in text
    assert stat.S_IMODE(out.stat().st_mode) == 0o640
    r = cli("fleet-config", "central", "--out-dir", str(tmp_path / "central"), "--reader", "nurses", "--deployer", "ops")
    assert r.returncode == 0, r.stderr
    acl = (tmp_path / "central" / "alanet.acl").read_text()
    assert "user nurses" in acl and "user ops" in acl and "user dashboard" not in acl
    assert "listener 8883" in (tmp_path / "central" / "alanet-central.conf").read_text()
    r = cli("fleet-config", "gateway", "--gateway", "ward3", "--central", "c", "--no-tls")
    assert r.returncode == 0 and "address c:1883" in r.stdout and "bridge_cafile" not in r.stdout
    assert "CHANGE-ME" in r.stdout and "--password-file" in r.stderr


@pytest.mark.parametrize("args, msg", [
    (["gateway", "--gateway", "bad/id", "--central", "c"], "--gateway"),
    (["gateway", "--gateway", "gw", "--central", "c:port"], "--central"),
    (["gateway", "--gateway", "gw", "--central", "c", "--password-file", "/nonexistent/x"], "--password-file"),
    (["central", "--no-tls", "--ca-file", "/ca.crt"], "--no-tls"),
    (["central", "--reader", "a/b"], "account"),
])
def test_cli_bad_input_one_line_exit_2(cli, args, msg):
    r = cli("fleet-config", *args)
    assert r.returncode == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_persistent_alert_watcher_needs_a_client_id():
    from alanet.device.alerts import AlertWatcher

    with pytest.raises(InputError, match="--session"):
        AlertWatcher("mqtt://127.0.0.1:1", persistent=True)


def test_live_view_marks_a_gateway_whose_bridge_is_down_offline():
    from alanet.device.live.store import LiveStore

    st = LiveStore(clock=lambda: 100.0)
    st.ingest("alanet/gw1/status", b'{"schema": "alanet.status/1", "gateway": "gw1", "state": "online"}')
    st.ingest("alanet/gw1/bridge", b"1")
    assert st.gateways["gw1"].online is True and st.gateways["gw1"].bridge is True
    ev = st.ingest("alanet/gw1/bridge", b"0")  # the bridge's will: the link dropped, the status still says online
    assert ev["gateway"]["online"] is False and ev["gateway"]["bridge"] is False
    st.ingest("alanet/gw1/bridge", b"1")
    st.ingest("alanet/gw1/status", b'{"schema": "alanet.status/1", "gateway": "gw1", "state": "online"}')
    assert st.gateways["gw1"].online is True
