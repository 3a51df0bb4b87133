"""Flashing over a real Mosquitto: FlashAgent (gateway side) and ``alanet flash`` (sender).

The gateway's main loop is played by ``StandInRuntime``: session frames go through a
real WearerPipeline (LiteRT model), and model swaps are applied between two
``handle()`` calls, exactly where the gateway applies them.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import paho.mqtt.client as mqtt
import pytest

import runtime_support as rs
from test_flash_support import GW, ModelWatcher, StandInRuntime, offline_probs, validate, wait_until

from alanet.device.bundle import load_bundle
from alanet.device.flash import agent as agent_mod
from alanet.device.flash import protocol as P
from alanet.device.flash.agent import FlashAgent
from alanet.device.flash.sender import NO_ANSWER, REFUSED, TOOK, read_archive, send_to_fleet
from alanet.device.flash.store import BundleStore


@pytest.fixture
def gateway(mosquitto, tmp_path, bundles, sess):
    """A flash agent (trusted key configured) in front of a stand-in runtime running flash-v1."""
    v1 = load_bundle(bundles.v1)
    rt = StandInRuntime(v1, sess)
    agent = FlashAgent(GW, mosquitto.url, BundleStore(tmp_path / "state"), trusted_keys=[str(bundles.pub)],
                       running=v1, on_activate=rt.on_activate).start()
    assert agent.wait_connected(10)
    watch = ModelWatcher(mosquitto.port)
    watch.wait_for(lambda r: r["state"] == "active" and r["model"] == "flash-v1")
    yield agent, rt, watch
    rt.stop.set()
    watch.close()
    agent.stop()


def flash(mosquitto, bundle_dir, **kw):
    archive, name = read_archive(bundle_dir)
    kw.setdefault("timeout", 30.0)
    kw.setdefault("progress", False)
    return send_to_fleet(archive, [GW], mosquitto.url, name=name, **kw)[0]


def test_flash_switches_the_running_model_without_losing_a_frame(mosquitto, gateway, bundles, sess):
    agent, rt, watch = gateway
    n = sess.n
    rt.start(0, n, pace_hz=900.0)
    wait_until(lambda: rt.fed > n // 4)
    out = flash(mosquitto, bundles.v2, chunk_size=4096)
    assert out.status == TOOK and out.model == "flash-v2", out
    wait_until(lambda: rt.fed == n, 30)
    rt.join()
    # One swap, in the middle of the stream, applied between two windows.
    assert len(rt.swaps) == 1 and 0 < rt.swaps[0][0] < n - rs.L, rt.swaps
    c = rt.pipeline.counters
    assert (c.frames, c.lost, c.resets, c.gaps) == (n, 0, 0, 0)
    # Every window of the stream was classified exactly once: none lost at the switch.
    p1, p2 = offline_probs(bundles.v1, sess), offline_probs(bundles.v2, sess)
    assert [r.seq for _, r in rt.results] == sorted(p1)
    models = [m for m, _ in rt.results]
    k = models.index("flash-v2")
    assert 0 < k and models == ["flash-v1"] * k + ["flash-v2"] * (len(models) - k)
    # Before the switch the windows were v1's, after it v2's (and the two models disagree).
    for m, r in rt.results:
        np.testing.assert_allclose(r.probs, (p1 if m == "flash-v1" else p2)[r.seq], atol=1e-4)
    assert max(float(np.abs(p1[s] - p2[s]).max()) for s in p1) > 0.05
    rep = watch.wait_for(lambda r: r["model"] == "flash-v2")
    assert rep["schema"] == "alanet.model/1" and rep["state"] == "active" and rep["previous"] == "flash-v1"
    assert rep["transfer"] and rep["reason"] is None
    st = agent.store.state()
    assert st.current.startswith("flash-v2-") and st.previous.startswith("flash-v1-")
    assert not list(agent.store.staging.glob("flash-*"))  # staging cleaned


@pytest.mark.parametrize("which, reason", [
    ("v2_flipped", "model.tflite: SHA-256 mismatch"),
    ("v2_unsigned", "signature: bundle is unsigned"),
    ("v2_foreign", "signature: not signed by a trusted key"),
    ("other_layout", "channels: "),
])
def test_bad_bundles_are_refused_and_the_old_model_keeps_running(mosquitto, gateway, bundles, which, reason):
    agent, rt, watch = gateway
    out = flash(mosquitto, getattr(bundles, which))
    assert out.status == REFUSED and reason in out.reason and out.model == "flash-v1", out
    rep = watch.wait_for(lambda r: r["state"] == "refused")
    assert reason in rep["reason"] and rep["model"] == "flash-v1" and rep["transfer"]
    assert rt.pipeline.spec.model_id == "flash-v1" and rt.swaps == []
    assert agent.store.state().current in (None, agent.store.state().current)
    cur = agent.store.current_path()
    assert cur is None or json.loads((cur / "manifest.json").read_text())["model_id"] == "flash-v1"


def test_corrupted_transfer_is_refused(mosquitto, gateway, bundles):
    """Chunks damaged on the way: the archive's SHA-256 does not match the offer."""
    agent, rt, watch = gateway
    archive, _ = read_archive(bundles.v2)
    offer = P.make_offer("corrupt1", archive, 8192)
    bad = bytearray(archive)
    bad[len(bad) // 3] ^= 0x40
    s = P.GatewaySend(GW, offer, lambda i: bytes(bad[i * 8192:(i + 1) * 8192]))
    got: list[dict] = []
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="corrupter")
    c.on_message = lambda c_, u, m: got.append(json.loads(m.payload))
    c.connect("127.0.0.1", mosquitto.port)
    c.loop_start()
    c.subscribe(P.reply_topic(GW, "corrupt1"), qos=1)
    time.sleep(0.2)
    for t, p in s.start(time.monotonic()):
        c.publish(t, p, qos=1)
    wait_until(lambda: any(d["type"] == "result" for d in got))
    c.disconnect()
    c.loop_stop()
    for d in got:
        validate(d, "flash-reply")
    assert [d["type"] for d in got][0] == "progress"
    res = [d for d in got if d["type"] == "result"][0]
    assert res["state"] == "refused" and "SHA-256 mismatch" in res["reason"]
    assert rt.pipeline.spec.model_id == "flash-v1"


def test_cli_summary_refused_and_no_answer(mosquitto, gateway, bundles, cli):
    r = cli("flash", str(bundles.v2_foreign), "--broker", mosquitto.url, "--gateway", GW, "gw-ghost",
            "--timeout", "4", "--no-progress")
    assert r.returncode == 1, r.stderr
    lines = {ln.split()[0]: ln for ln in r.stdout.splitlines() if ln.strip()}
    assert "refused" in lines[GW] and "not signed by a trusted key" in lines[GW]
    assert "no answer" in lines["gw-ghost"]
    assert "0 of 2 gateway(s) took the bundle; 1 refused; 1 did not answer in time" in r.stdout


def test_cli_flash_all_and_rollback(mosquitto, gateway, bundles, cli):
    agent, rt, watch = gateway
    rt.start(0, 0, pace_hz=1.0)  # idle loop applying swaps
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="status-pub")
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    for gw, state in ((GW, "online"), ("gw-old", "offline")):
        pub.publish(f"alanet/{gw}/status", json.dumps({"schema": "alanet.status/1", "state": state}), qos=1,
                    retain=True).wait_for_publish(5)
    pub.disconnect()
    pub.loop_stop()
    r = cli("flash", str(bundles.v2), "--broker", mosquitto.url, "--all", "--timeout", "30")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "found 1 gateway(s) online: gw-flash" in r.stderr and "1 of 1 gateway(s) took the bundle" in r.stdout
    assert "chunk" in r.stderr  # the progress bar
    wait_until(lambda: rt.pipeline.spec.model_id == "flash-v2")
    r = cli("flash", "--rollback", "--broker", mosquitto.url, "--gateway", GW, "--timeout", "30",
            "--sign", str(bundles.key))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 of 1 gateway(s) took the rollback" in r.stdout
    assert rt.pipeline.spec.model_id == "flash-v1"
    rep = watch.wait_for(lambda r: r["model"] == "flash-v1" and r["state"] == "active")
    assert rep["previous"] == "flash-v2"
    assert [m for _, m in rt.swaps] == ["flash-v2", "flash-v1"]


def test_rollback_without_previous_is_refused(mosquitto, gateway, bundles):
    agent, rt, watch = gateway
    out = send_to_fleet(None, [GW], mosquitto.url, timeout=15, progress=False, sign=bundles.key)[0]
    assert out.status == REFUSED and "no previous bundle" in out.reason
    assert rt.pipeline.spec.model_id == "flash-v1"


@pytest.mark.parametrize("persistence", [True, False], ids=["persistent-broker", "broker-forgets"])
def test_broker_restart_in_the_middle_of_a_transfer(mosquitto, gateway, bundles, monkeypatch, persistence):
    """With persistence the broker keeps the queued chunks; without, the gateway reports what it lacks."""
    agent, rt, watch = gateway
    mosquitto.persistence = persistence
    rt.start(0, 0, pace_hz=1.0)
    slow_put = agent_mod.TransferDir.put

    def put(self, index, data):  # a slow SD card: ~25 ms per chunk
        time.sleep(0.025)
        return slow_put(self, index, data)

    monkeypatch.setattr(agent_mod.TransferDir, "put", put)
    archive, name = read_archive(bundles.v2)
    chunk = 1024  # the smallest chunk a gateway accepts
    n_chunks = -(-len(archive) // chunk)
    assert n_chunks >= 20
    result: list = []
    th = threading.Thread(target=lambda: result.append(send_to_fleet(archive, [GW], mosquitto.url, name=name,
                                                                       timeout=60, chunk_size=chunk,
                                                                       retry_s=1.0, progress=False)[0]))
    th.start()

    def received() -> int:
        return sum(len(td.have()) for td in list(agent._transfers.values()))

    wait_until(lambda: received() >= n_chunks // 4, 30)
    mosquitto.restart(down_s=1.0)
    assert received() < n_chunks  # the restart really came in the middle
    th.join(90)
    out = result[0]
    assert out.status == TOOK and out.model == "flash-v2", out
    if not persistence:
        assert out.resent > 0  # the chunks the broker forgot were sent again
    wait_until(lambda: rt.pipeline.spec.model_id == "flash-v2")
    assert agent.store.state().current.startswith("flash-v2-")


def test_offline_gateway_takes_the_queued_bundle_when_it_returns(mosquitto, tmp_path, bundles, sess):
    """The gateway's persistent session keeps the transfer while it is away (documented behaviour)."""
    v1 = load_bundle(bundles.v1)
    rt = StandInRuntime(v1, sess).start(0, 0, pace_hz=1.0)
    store = BundleStore(tmp_path / "state")

    def agent():
        a = FlashAgent(GW, mosquitto.url, store, trusted_keys=[str(bundles.pub)], running=v1,
                       on_activate=rt.on_activate).start()
        assert a.wait_connected(10)
        return a

    agent().stop()  # the session now exists on the broker
    out = flash(mosquitto, bundles.v2, timeout=2.0)
    assert out.status == NO_ANSWER and "0/" in out.reason
    watch = ModelWatcher(mosquitto.port)
    a = agent()
    try:
        rep = watch.wait_for(lambda r: r["model"] == "flash-v2")
        assert rep["state"] == "active" and rt.pipeline.spec.model_id == "flash-v2"
    finally:
        a.stop()
        watch.close()
        rt.stop.set()


def test_mqtt311_gateway(mosquitto, tmp_path, bundles, sess):
    v1 = load_bundle(bundles.v1)
    rt = StandInRuntime(v1, sess).start(0, 0, pace_hz=1.0)
    a = FlashAgent(GW, mosquitto.url, BundleStore(tmp_path / "state"), trusted_keys=[str(bundles.pub)], running=v1,
                   on_activate=rt.on_activate, mqtt5=False).start()
    try:
        assert a.wait_connected(10)
        out = flash(mosquitto, bundles.v2, chunk_size=1024)
        assert out.status == TOOK and rt.pipeline.spec.model_id == "flash-v2"
    finally:
        a.stop()
        rt.stop.set()
