"""Home Assistant MQTT discovery: the payloads against the documented format, and retained on a real broker."""

from __future__ import annotations

import json
import re
import threading
import time
from importlib import resources

import paho.mqtt.client as mqtt
import pytest
from conftest import REPO

from alanet.device.homeassistant import DiscoveryMessage, config_topics, discovery_messages, removal_messages

DOC = REPO / "docs" / "subscribers.md"
TOPIC_RE = re.compile(r"^homeassistant/(binary_sensor|sensor)/[A-Za-z0-9_-]+/[A-Za-z0-9_-]+/config$")


def _doc_blocks(marker: str) -> dict[str, str]:
    """``<!-- marker: KEY -->`` followed by a fenced json block, from docs/subscribers.md."""
    text = DOC.read_text()
    return {m.group(1): m.group(2) for m in
            re.finditer(r"<!-- " + marker + r": (\S+) -->\s*```json\n(.*?)\n```", text, re.S)}


def test_payloads_match_the_documented_examples():
    documented = _doc_blocks("example")
    msgs = discovery_messages("clinic-gw1", "p017", model_id="protective-demo", sw_version="0.1.0")
    assert set(documented) == {m.topic for m in msgs}
    for m in msgs:
        assert json.loads(documented[m.topic]) == m.payload, m.topic


def test_alert_schema_in_the_docs_is_the_shipped_one():
    shipped = json.loads(resources.files("alanet.device").joinpath("schemas", "alert.schema.json").read_text())
    assert json.loads(_doc_blocks("schema")["alert"]) == shipped


def test_discovery_format():
    msgs = discovery_messages("ward3.bed2", "p017", model_id="m1", sw_version="9.9")
    assert [m.topic for m in msgs] == ["homeassistant/binary_sensor/alanet_ward3_bed2/p017_protective/config",
                                       "homeassistant/sensor/alanet_ward3_bed2/p017_pain/config"]
    bs, sn = (m.payload for m in msgs)
    for m in msgs:
        assert TOPIC_RE.match(m.topic) and m.retain is True
        p = m.payload
        for key in ("name", "unique_id", "state_topic", "value_template", "availability", "device", "origin"):
            assert key in p, (m.topic, key)
        assert p["state_topic"] == "alanet/ward3.bed2/p017/state"
        assert [a["topic"] for a in p["availability"]] == ["alanet/ward3.bed2/status"]
        assert p["device"]["identifiers"] == ["alanet_ward3_bed2_p017"]
        assert p["device"]["model"] == "m1" and p["device"]["sw_version"] == "9.9"
        assert json.loads(m.encode()) == p
    assert bs["device_class"] == "problem" and (bs["payload_on"], bs["payload_off"]) == ("ON", "OFF")
    assert bs["unique_id"] == "alanet_ward3_bed2_p017_protective" and sn["unique_id"] == "alanet_ward3_bed2_p017_pain"
    assert bs["device"] == sn["device"]  # one device per wearer
    # unique ids differ across wearers and gateways
    ids = {m.payload["unique_id"] for g in ("g1", "g2") for w in ("w1", "w2") for m in discovery_messages(g, w)}
    assert len(ids) == 8
    # pain labels make an enum sensor; a task announces only its entity and removes the other
    sn = discovery_messages("g", "w", pain_labels=["none", "low", "high"])[1].payload
    assert sn["device_class"] == "enum" and sn["options"] == ["none", "low", "high"]
    only = discovery_messages("g", "w", task="protective")
    assert only[0].payload is not None and only[1].payload is None and only[1].encode() == b""


def test_removal_is_an_empty_retained_payload_on_each_config_topic():
    rm = removal_messages("g1", "w1")
    assert [m.topic for m in rm] == list(config_topics("g1", "w1").values())
    assert all(m.payload is None and m.encode() == b"" and m.retain for m in rm)
    assert [m.topic for m in removal_messages("g1", "w1", prefix="ha")][0].startswith("ha/binary_sensor/")


@pytest.mark.parametrize("gateway,wearer", [("a/b", "w"), ("g", "+"), ("g", "#"), ("", "w"), ("g", "w x")])
def test_bad_ids_are_refused(gateway, wearer):
    with pytest.raises(ValueError):
        discovery_messages(gateway, wearer)


def test_templates_render_the_runtime_payloads():
    """Render the value / availability templates (Jinja, as Home Assistant does) on real payload shapes."""
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment()
    bs, sn = (m.payload for m in discovery_messages("gw1", "w1"))

    def value(tpl: str, payload: dict) -> str:
        return env.from_string(tpl).render(value_json=payload).strip()

    state = {"schema": "alanet.state/1", "gateway": "gw1", "wearer": "w1", "task": "protective", "t_end": 3.0,
             "probabilities": {"normal": 0.2, "protective": 0.8}, "smoothed": 0.7, "state": "active", "model": "m"}
    assert value(bs["value_template"], state) == "ON"
    assert value(bs["value_template"], dict(state, state="none")) == "OFF"
    assert value(sn["value_template"], state) == "None"  # a protective model has no pain level
    pain = dict(state, task="pain", probabilities={"none": 0.1, "low": 0.8, "high": 0.1}, state="low")
    assert value(sn["value_template"], pain) == "low"
    assert value(sn["value_template"], dict(pain, state=None)) == "None"
    avail = bs["availability"][0]["value_template"]
    online = {"schema": "alanet.status/1", "gateway": "gw1", "state": "online",
              "wearers": {"w1": {"serial": "up"}, "w2": {"serial": "down"}}}
    assert value(avail, online) == "online"
    assert value(avail, dict(online, wearers={"w1": {"serial": "down"}})) == "offline"
    assert value(avail, dict(online, wearers={})) == "offline"  # wearer removed from the gateway
    assert value(avail, {"schema": "alanet.status/1", "gateway": "gw1", "state": "offline"}) == "offline"  # last will
    assert jinja2  # used


def _retained(port: int, topic: str, wait_s: float = 0.7) -> dict[str, bytes]:
    """What a fresh subscriber receives as retained on ``topic`` (within ``wait_s``)."""
    got: dict[str, bytes] = {}
    subscribed = threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"fresh-{time.monotonic_ns()}")
    c.on_message = lambda cl, ud, msg: got.__setitem__(msg.topic, msg.payload) if msg.retain else None
    c.on_subscribe = lambda *a: subscribed.set()
    c.on_connect = lambda cl, ud, fl, rc, pr: cl.subscribe(topic, qos=1)
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        assert subscribed.wait(5)
        time.sleep(wait_s)
    finally:
        c.disconnect()
        c.loop_stop()
    return got


def _publish(port: int, msgs: list[DiscoveryMessage]) -> None:
    acked: set[int] = set()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="gateway-sim")
    c.on_publish = lambda cl, ud, mid, rc, pr: acked.add(mid)
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        mids = {c.publish(m.topic, m.encode(), qos=1, retain=m.retain).mid for m in msgs}
        deadline = time.monotonic() + 5
        while not mids <= acked and time.monotonic() < deadline:
            time.sleep(0.01)
        assert mids <= acked
    finally:
        c.disconnect()
        c.loop_stop()


def test_retained_configs_reach_a_fresh_subscriber_and_removal_deletes_them(mosquitto):
    announce = discovery_messages("gw1", "w1", model_id="m1") + discovery_messages("gw1", "w2", model_id="m1")
    _publish(mosquitto.port, announce)
    got = _retained(mosquitto.port, "homeassistant/#")
    assert set(got) == {m.topic for m in announce}
    for m in announce:
        assert json.loads(got[m.topic]) == m.payload
    _publish(mosquitto.port, removal_messages("gw1", "w1"))
    got = _retained(mosquitto.port, "homeassistant/#")
    assert set(got) == set(config_topics("gw1", "w2").values())  # w1's entities are gone, w2's stay


def test_sync_announces_current_wearers_and_removes_the_rest(tmp_path):
    from alanet.device.homeassistant import load_announced, save_announced, sync_messages

    f = tmp_path / "homeassistant.json"
    assert load_announced(f) == []
    msgs, announced = sync_messages("gw1", ["w1", "w2"], load_announced(f), model_id="m1", task="protective")
    assert [m.topic for m in msgs if m.payload] == [config_topics("gw1", w)["protective"] for w in ("w1", "w2")]
    save_announced(f, announced)
    assert load_announced(f) == [("homeassistant", "gw1", "w1"), ("homeassistant", "gw1", "w2")]
    # next run: w1 left the config
    msgs, announced = sync_messages("gw1", ["w2"], load_announced(f), task="protective")
    removed = [m.topic for m in msgs if m.payload is None]
    assert set(config_topics("gw1", "w1").values()) <= set(removed)
    assert config_topics("gw1", "w2")["protective"] not in removed
    # discovery switched off: everything announced goes
    msgs, announced = sync_messages("gw1", ["w2"], announced, enabled=False)
    assert announced == [] and all(m.payload is None for m in msgs)
    assert {m.topic for m in msgs} == set(config_topics("gw1", "w2").values())
    f.write_text("garbage")
    assert load_announced(f) == []
