"""The gateway's MQTT link against a real Mosquitto: no duplicates, bounded memory, refusals kept.

- After an outage paho retransmits what it holds; the link used to hand every alert
  older than 60 s to paho once more, so each was published twice.
- Against a broker that stops acknowledging, paho's queue used to grow by the whole
  backlog; now it holds at most the link's window, and a stalled connection is
  dropped so paho retransmits.
- Under MQTT 5 a publish the broker's ACL denies comes back with PUBACK reason 135:
  the alert stays queued, the refusal is reported, and it is delivered once the ACL
  allows it. (Under MQTT 3.1.1 the broker acknowledges and drops it: the old default
  lost it silently.)
"""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from alanet.device import mqtt_link as ml
from alanet.device.alert_queue import AlertQueue
from alanet.device.config import parse_broker_url
from alanet.device.mqtt_link import MqttLink
from conftest import Mosquitto
from mqtt_proxy import AckSwallowingProxy

GW = "gw-link"


class Sub:
    """Counts alert copies per id (persistent QoS 1 session)."""

    def __init__(self, port: int, client_id: str = "link-sub") -> None:
        self.copies: dict[str, int] = {}
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        self.c.on_connect = lambda c, u, f, rc, p: (c.subscribe(f"alanet/{GW}/+/alert", qos=1), self.ready.set())
        self.c.on_message = self._msg
        self.c.reconnect_delay_set(0.05, 0.2)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        assert self.ready.wait(10)
        time.sleep(0.2)

    def _msg(self, c, u, m) -> None:
        aid = json.loads(m.payload)["id"]
        with self.lock:
            self.copies[aid] = self.copies.get(aid, 0) + 1

    def unique(self) -> int:
        with self.lock:
            return len(self.copies)

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def link(url: str, qpath: Path, **kw) -> tuple[MqttLink, AlertQueue]:
    import inspect

    q = AlertQueue(qpath)
    known = inspect.signature(MqttLink).parameters  # (options the link may not have had)
    lk = MqttLink(parse_broker_url(url), client_id=f"link-{uuid.uuid4().hex[:6]}", alert_queue=q,
                  will_topic=f"alanet/{GW}/status", will_payload=b'{"state":"offline"}',
                  **{k: v for k, v in kw.items() if k in known})
    lk.client.reconnect_delay_set(0.1, 0.5)
    return lk, q


def alert(i: int) -> tuple[str, str, bytes]:
    aid = str(uuid.uuid4())
    return aid, f"alanet/{GW}/w{i % 3}/alert", json.dumps({"schema": "alanet.alert/1", "id": aid, "n": i}).encode()


def until(pred, timeout: float, poll=None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if poll is not None:
            poll()
        if pred():
            return True
        time.sleep(0.02)
    return pred()


def test_no_alert_is_published_twice_after_a_long_outage(tmp_path, monkeypatch):
    """Alerts decided during an outage longer than the old 60 s re-send period (shortened to 1 s)."""
    monkeypatch.setattr(MqttLink, "RESEND_AFTER_S", 1.0, raising=False)  # the old link's period, shortened
    broker = Mosquitto(tmp_path, persistence=True).start()
    sub = Sub(broker.port)
    lk, q = link(broker.url, tmp_path / "q.sqlite")
    try:
        lk.start()
        assert lk.wait_connected(10)
        broker.stop()
        until(lambda: not lk.connected, 5, lk.poll)
        for i in range(30):
            lk.publish_alert(*alert(i))
            lk.poll()
        time.sleep(2.5)  # longer than the re-send period
        broker.start()
        assert until(lambda: len(q) == 0 and sub.unique() == 30, 30, lk.poll)
        time.sleep(1.0)
        lk.poll()
        assert sub.unique() == 30 and max(sub.copies.values()) == 1, sub.copies
    finally:
        lk.stop(f"alanet/{GW}/status", b"{}")
        sub.close()
        broker.stop()


def test_a_broker_that_stops_acknowledging_cannot_grow_paho_memory(tmp_path, mosquitto):
    proxy = AckSwallowingProxy(mosquitto.port).start()
    sub = Sub(mosquitto.port)
    lk, q = link(proxy.url, tmp_path / "q.sqlite", ack_timeout_s=2.0, window=50)
    try:
        lk.start()
        assert lk.wait_connected(10)
        proxy.swallow_acks.set()
        ids = []
        peak = 0
        for i in range(400):
            aid, topic, body = alert(i)
            ids.append(aid)
            lk.publish_alert(aid, topic, body)
            lk.poll()
            peak = max(peak, len(lk.client._out_messages))  # paho's own store of unacknowledged messages
        assert len(q) == 400 and peak <= 50
        # the broker has delivered what it got, but acknowledged nothing: the link drops the connection
        assert until(lambda: getattr(lk, "stalls", 0) >= 1, 10, lk.poll)
        proxy.swallow_acks.clear()
        assert until(lambda: len(q) == 0, 60, lk.poll), (len(q), lk.counters())
        assert until(lambda: sub.unique() == 400, 10)
        assert lk.acked == 400 and proxy.swallowed > 0
    finally:
        lk.stop(f"alanet/{GW}/status", b"{}")
        sub.close()
        proxy.stop()


@pytest.fixture
def acl_broker(tmp_path):
    """Mosquitto whose ACL lets the gateway publish its status but not its alerts; ``allow()`` fixes it (SIGHUP)."""
    acl = tmp_path / "acl"
    acl.write_text(f"topic readwrite alanet/{GW}/status\ntopic read alanet/#\n")
    broker = Mosquitto(tmp_path, extra=(f"acl_file {acl}",)).start()

    def allow() -> None:
        acl.write_text(f"topic readwrite alanet/{GW}/#\n")
        broker.proc.send_signal(signal.SIGHUP)  # Mosquitto reloads its ACL

    yield broker.port, allow
    broker.stop()


def test_alerts_the_acl_denies_stay_queued_and_are_delivered_once_allowed(tmp_path, acl_broker):
    port, allow = acl_broker
    problems = []
    lk, q = link(f"mqtt://127.0.0.1:{port}", tmp_path / "q.sqlite", on_problem=lambda: problems.append(1))
    lk.RETRY_S = 0.5
    sub = Sub(port)
    try:
        lk.start()
        assert lk.wait_connected(10)
        for i in range(5):
            lk.publish_alert(*alert(i))
        until(lambda: getattr(lk, "refused", 0) >= 5 or len(q) == 0, 10, lk.poll)
        assert len(q) == 5 and sub.unique() == 0  # nothing deleted as if delivered
        assert lk.refused == 5
        assert problems and "Not authorized" in lk.publish_problem() and "stay queued" in lk.publish_problem()
        allow()
        assert until(lambda: len(q) == 0, 30, lk.poll), lk.counters()
        assert until(lambda: sub.unique() == 5, 10) and lk.acked == 5
    finally:
        lk.stop(f"alanet/{GW}/status", b"{}")
        sub.close()


def test_mqtt_protocol_is_configurable(tmp_path):
    from alanet.device.config import load_config
    from alanet.errors import InputError

    base = f'gateway = "g"\nstate_dir = "{tmp_path}"\n[model]\nbundle = "b"\n[[wearable]]\nport = "p"\n[mqtt]\n'
    p = tmp_path / "gw.toml"
    p.write_text(base)
    assert load_config(p).broker.protocol is None  # MQTT 5, else 3.1.1 (a broker that speaks only 3.1.1)
    assert ml.make_client(load_config(p).broker).protocol == mqtt.MQTTv5
    p.write_text(base + 'protocol = "5"\n')
    assert load_config(p).broker.protocol == "5"
    p.write_text(base + 'protocol = "3.1.1"\n')
    c = load_config(p)
    assert c.broker.protocol == "3.1.1" and ml.make_client(c.broker).protocol == mqtt.MQTTv311
    p.write_text(base + 'protocol = "4"\n')
    with pytest.raises(InputError, match="mqtt.protocol"):
        load_config(p)


def test_alerts_of_one_iteration_share_one_commit_and_their_acks_another(tmp_path, mosquitto):
    """publish_alerts commits a batch at once; the PUBACKs one poll drains are deleted in one transaction."""
    sub = Sub(mosquitto.port)
    lk, q = link(mosquitto.url, tmp_path / "q.sqlite")
    puts, deletes = [], []
    put_many, delete_many = q.put_many, q.delete_many
    q.put_many = lambda items: (puts.append(len(items)), put_many(items))[1]
    q.delete_many = lambda ids: (deletes.append(len(ids)), delete_many(ids))[1]
    q.delete = None  # the link must not delete one by one
    try:
        lk.start()
        assert lk.wait_connected(10)
        batches = [[alert(k * 10 + i) for i in range(10)] for k in range(4)]
        for b in batches:
            lk.publish_alerts(b)
        lk.publish_alerts([])
        assert puts == [10, 10, 10, 10] and len(q) <= 40
        time.sleep(0.5)  # the broker acknowledges meanwhile; one poll drains all of it
        assert until(lambda: len(q) == 0, 20, lk.poll), lk.counters()
        assert until(lambda: sub.unique() == 40, 10)
        assert lk.acked == 40 and sum(deletes) == 40 and max(deletes) > 1
        assert max(sub.copies.values()) == 1
    finally:
        lk.stop(f"alanet/{GW}/status", b"{}")
        sub.close()


def test_polls_read_the_queue_only_when_something_new_may_be_there(tmp_path, mosquitto):
    """The link looks for alerts to hand over after a put (or a cursor reset), not at every poll."""
    sub = Sub(mosquitto.port)
    lk, q = link(mosquitto.url, tmp_path / "q.sqlite")
    looks = []
    after = q.after
    q.after = lambda n, limit: (looks.append(n), after(n, limit))[1]
    try:
        lk.start()
        assert lk.wait_connected(10)
        for _ in range(3):
            lk.poll()
        quiet = len(looks)
        for _ in range(20):
            lk.poll()
        assert len(looks) == quiet  # nothing was queued: no query
        lk.publish_alerts([alert(1), alert(2)])
        assert len(looks) == quiet + 1 and lk.inflight + lk.acked == 2
        assert until(lambda: len(q) == 0, 20, lk.poll)
        assert until(lambda: sub.unique() == 2, 10)
        before = len(looks)
        for _ in range(20):
            lk.poll()
        assert len(looks) == before
        lk._cursor, lk._fed = 0, (-1, -1)  # what a retry round after a refusal does
        lk.poll()
        assert len(looks) == before + 1
        lk.publish_alert(*alert(3))  # and a single put is seen too
        assert until(lambda: sub.unique() == 3, 10, lk.poll)
    finally:
        lk.stop(f"alanet/{GW}/status", b"{}")
        sub.close()


def test_live_state_waits_for_its_hold_then_goes_out_together(tmp_path, mosquitto):
    """With state_hold_s, publish_many holds QoS 0 state until a poll finds the oldest waited that long
    (or OUTBOX_MAX wait); stop sends what is held."""
    got: list[tuple[float, str]] = []
    ready = threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    c.on_connect = lambda cl, u, f, rc, p: (cl.subscribe(f"alanet/{GW}/+/state"), ready.set())
    bodies: list[bytes] = []
    c.on_message = lambda cl, u, m: (got.append((time.monotonic(), m.topic)), bodies.append(bytes(m.payload)))
    c.connect("127.0.0.1", mosquitto.port)
    c.loop_start()
    assert ready.wait(10)
    time.sleep(0.2)
    lk, q = link(mosquitto.url, tmp_path / "q.sqlite", state_hold_s=0.3)
    try:
        lk.start()
        assert lk.wait_connected(10)
        t0 = time.monotonic()
        lk.publish_many([(f"alanet/{GW}/w1/state", b"{}")])
        lk.publish_many([(f"alanet/{GW}/w2/state", b"{}")])
        for _ in range(5):
            lk.poll()
        time.sleep(0.15)
        lk.poll()
        assert not got  # held: the oldest has not waited 0.3 s yet
        assert until(lambda: len(got) == 2, 5, lk.poll)
        assert got[0][0] - t0 >= 0.3 and [t for _, t in got] == [f"alanet/{GW}/w1/state", f"alanet/{GW}/w2/state"]
        lk.publish_many([(f"alanet/{GW}/w{i}/state", b"{}") for i in range(MqttLink.OUTBOX_MAX)])
        assert until(lambda: len(got) == 2 + MqttLink.OUTBOX_MAX, 5)  # a full outbox goes at once, without a poll
        lk.publish_many([(f"alanet/{GW}/w1/state", b'{"window":9}')])
        lk.publish(f"alanet/{GW}/w1/state", b'{"fault":"x"}')  # a fault report: the held state goes before it
        assert until(lambda: len(got) == 4 + MqttLink.OUTBOX_MAX, 5)
        assert bodies[-2:] == [b'{"window":9}', b'{"fault":"x"}']
        lk.publish_many([(f"alanet/{GW}/last/state", b"{}")])
    finally:
        lk.stop(f"alanet/{GW}/status", b"{}")
    assert until(lambda: got[-1][1] == f"alanet/{GW}/last/state", 5)
    c.loop_stop()
    c.disconnect()


def test_alerts_hidden_by_refused_deletions_do_not_stop_the_feed(tmp_path):
    """An acknowledged alert whose deletion the disk refused is skipped by the queue's reader, so a short
    answer is no proof that everything queued was handed over: the link looks again."""
    lk, q = link("mqtt://127.0.0.1:1", tmp_path / "q.sqlite", window=3)
    items = [alert(i) for i in range(4)]
    q.put_many(items)
    q._acked_unsaved.add(items[0][0])  # what a full disk leaves after its PUBACK
    lk._feed()
    assert lk.inflight == 2  # the first three rows, one of them hidden
    lk._feed()
    assert lk.inflight == 3 and set(lk._handed) == {a for a, _, _ in items[1:]}
    lk.client.loop_stop()
