"""Hostile wearables: what a CRC-valid but malformed stream may not do to the gateway.

Each test is a reproduction of a way a wearable (or its firmware's "invalid" marker,
±3.4e38) used to kill the main loop or silence a wearer for good: frames before any
HELLO, channel counts that differ from the HELLO, values outside physical bounds,
non-finite model outputs, raw sEMG blocks of another shape, HELLO strings that forge
log lines, an unbounded hand-off queue. Real decoder, real pipeline, real LiteRT
models; the gateway tests use a real Mosquitto.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest

import runtime_support as rs
from alanet.device.bundle import load_bundle
from alanet.device.config import WearableConfig, load_config
from alanet.device.inference import ModelRunner
from alanet.device.pipeline import ModelSpec, WearerPipeline
from alanet.device.runtime import Gateway
from alanet.firmware_bridge.codec import Decoder, Encoder, encode_frame, encode_raw_emg
from alanet.firmware_bridge.protocol import Frame, RawEmg

F32_MAX = 3.4028234663852886e38


@pytest.fixture(scope="module")
def built():
    return rs.cached_bundle(3, 120.0)


@pytest.fixture(scope="module")
def spec(built):
    b = load_bundle(built[1])
    return ModelSpec.from_bundle(b, ModelRunner.from_bundle(b))


def frames(sess, idx, seq0=0, edit=None):
    out = []
    for i in idx:
        a, e = list(map(float, sess.angles[i])), list(map(float, sess.emg[i]))
        if edit is not None:
            a, e = edit(i, a, e)
        out.append(Frame(seq0 + i, int(round(i * 1000 / rs.FS)), tuple(a), tuple(e)))
    return out


def test_data_before_any_hello_is_dropped(built, spec):
    sess = built[0]
    p = WearerPipeline("w1", spec)
    assert p.handle(frames(sess, range(400))) == []
    assert p.counters.frames == 0 and p.counters.no_hello == 400 and p.counters.windows == 0
    res = p.handle([rs.hello()] + frames(sess, range(400, 800)))
    assert p.counters.frames == 400 and len(res) == (400 - rs.L) // rs.S + 1


def test_frames_whose_counts_differ_from_the_hello_are_dropped(built, spec):
    """A 12-angle frame, or 17 values split 12+5, used to crash the pipeline at once."""
    sess = built[0]
    p = WearerPipeline("w1", spec)
    bad = [Frame(10_000 + k, 0, tuple(map(float, sess.angles[0][:12])), tuple(map(float, sess.emg[0])))
           for k in range(3)]
    bad += [Frame(20_000, 0, tuple(map(float, sess.angles[0][:12])), tuple(map(float, sess.emg[0])) + (0.5,))]
    res = p.handle([rs.hello()] + frames(sess, range(300)) + bad + frames(sess, range(300, 600), seq0=30_000))
    assert p.counters.bad_shape == 4 and p.counters.frames == 600 and p.counters.faults == 0
    assert len(res) > 0 and all(np.all(np.isfinite(r.probs)) for r in res)


@pytest.mark.parametrize("value", [F32_MAX, -F32_MAX, 7.0, 2e5])
def test_values_outside_the_physical_bounds_never_reach_the_model(built, spec, value):
    """±FLT_MAX (a common firmware 'invalid' value) made the model output NaN; the wearer was then stuck."""
    sess = built[0]
    p = WearerPipeline("w1", spec)

    def edit(i, a, e):
        if 500 <= i < 520:
            if value in (F32_MAX, -F32_MAX, 7.0):
                a[3] = value
            else:
                e[1] = value
        return a, e

    res = p.handle([rs.hello()] + frames(sess, range(1200), edit=edit))
    assert all(np.all(np.isfinite(r.probs)) for r in res) and np.isfinite(p.decider.smoothed)
    assert p.counters.out_of_range == 20 and p.counters.frames == 1180
    assert p.counters.resets == 1  # the 20-frame hole restarted the window (longer than max_gap_frames)


def test_non_finite_model_output_skips_the_window_and_restarts_smoothing(built, tmp_path):
    """A bundle whose normalisation overflows float32 (std 1e-38) makes LiteRT output NaN for real frames."""
    sess, bundle = built
    broken = tmp_path / "overflow"
    shutil.copytree(bundle, broken)
    m = json.loads((broken / "manifest.json").read_text())
    m["normalization"]["std"][16] = 1e-38  # an energy channel: |x - mean| / 1e-38 = inf
    (broken / "manifest.json").write_text(json.dumps(m))
    b = load_bundle(broken)  # unsigned, self-test input is stored normalised: it passes
    p = WearerPipeline("w1", ModelSpec.from_bundle(b, ModelRunner.from_bundle(b)))
    p.decider.active = True  # an open episode survives the skipped windows
    res = p.handle([rs.hello()] + frames(sess, range(900)))
    assert all(np.all(np.isfinite(r.probs)) for r in res)
    assert p.decider.smoothed is None or np.isfinite(p.decider.smoothed)
    assert p.counters.skipped > 0 and p.counters.skipped + len(res) == (900 - rs.L) // rs.S + 1
    assert p.decider.active
    faults = p.take_faults()
    assert faults and "not finite" in faults[0] and p.take_faults() == []


def test_raw_emg_of_another_shape_is_dropped(built, spec):
    """A RAW_EMG block with 3 channels (the HELLO says 4) used to raise out of the pipeline."""
    sess = built[0]
    h = replace(rs.hello(), raw_emg_rate_hz=250.0)
    p = WearerPipeline("w1", spec)
    good = RawEmg(0, 0, 250.0, tuple((0.1, 0.2, 0.3, 0.4) for _ in range(25)))
    blocks = [RawEmg(k, 0, 250.0, tuple((0.1, 0.2, 0.3) for _ in range(10))) for k in range(1, 4)]
    blocks += [RawEmg(9, 0, 1000.0, tuple((0.1,) * 4 for _ in range(10)))]  # another rate
    blocks += [RawEmg(10, 0, 250.0, tuple((F32_MAX,) * 4 for _ in range(10)))]  # out of range
    res = p.handle([h, good] + blocks + [replace(good, seq=11)] + frames(sess, range(400)))
    assert p.counters.frames == 400 and len(res) == (400 - rs.L) // rs.S + 1
    assert p.counters.raw_rejected == 5 and p.counters.faults == 0


def test_a_hello_that_changes_the_wearable_restarts_the_window(built, spec):
    sess = built[0]
    p = WearerPipeline("w1", spec)
    p.handle([rs.hello()] + frames(sess, range(150)))
    res = p.handle([rs.hello(device_id="another-wear")] + frames(sess, range(150, 400)))
    assert p.counters.resets == 1 and res[0].seq == 150 + rs.L - 1  # a fresh window, none mixed
    p.handle([rs.hello(device_id="another-wear")])  # the same wearable announcing itself again: nothing restarts
    assert p.counters.resets == 1


def test_hello_strings_cannot_forge_log_lines(built, spec, caplog):
    """A device id with a newline would have written a fake ALERT line into the gateway's log."""
    dec = Decoder()
    forged = "w\nALERT w1 protective raised p=1.00 t=0.0-3.0 s"
    p = WearerPipeline("w1", spec)
    with caplog.at_level(logging.INFO):
        p.handle(dec.feed(Encoder(device_id="v\r\nALERT x", sample_rate_hz=50.0).hello(0)))  # refused, then
        p.handle(dec.feed(Encoder(device_id=forged[:32], firmware="\x1b[2J").hello(0)))  # accepted: both logged
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) >= 2 and all("\n" not in ln and "\r" not in ln and "\x1b" not in ln for ln in lines), lines


# ---- the gateway: one wearer's faults never stop the others ----

def _gateway(tmp_path, url, bundle, n=2, **over):
    cfg = load_config(None, {"port": "/dev/null", "bundle": str(bundle), "broker": url, "gateway": "gw-hostile",
                             "state_dir": str(tmp_path / "state")})
    cfg = replace(cfg, wearables=tuple(WearableConfig(f"w{i}", f"/dev/null{i}") for i in range(n)), **over)
    return Gateway(cfg)


def _listen(port: int, topics: str) -> tuple[mqtt.Client, list]:
    got: list[tuple[str, dict]] = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    sub.on_message = lambda c, u, m: got.append((m.topic, json.loads(m.payload)))
    sub.connect("127.0.0.1", port)
    sub.subscribe(topics, qos=1)
    sub.loop_start()
    return sub, got


def _wire(sess, idx, enc, edit=None):
    out = []
    for i in idx:
        a, e = sess.angles[i].tolist(), sess.emg[i].tolist()
        if edit is not None:
            a, e = edit(i, a, e)
        out.append(encode_frame(Frame(i, int(round(i * 1000 / rs.FS)), tuple(a), tuple(e))))
    return b"".join(out)


@pytest.mark.parametrize("publish_state", [True, False])
def test_a_hostile_wearer_never_stops_the_gateway(tmp_path, mosquitto, built, publish_state):
    """w0 streams FLT_MAX angles, wrong channel counts, odd RAW_EMG and HELLO changes; w1 is classified throughout.

    Before: the first FLT_MAX window made the state JSON raise (``allow_nan=False``) out of
    ``Gateway.process``, ending the main loop; without state publishing w0's smoothing
    stayed NaN and it could never raise or clear an alert again.
    """
    sess, bundle = built
    gw = _gateway(tmp_path, mosquitto.url, bundle, publish_state=publish_state)
    sub, got = _listen(mosquitto.port, "alanet/gw-hostile/#")
    gw.link.start()
    assert gw.link.wait_connected(10)
    e0, e1 = Encoder(device_id="hostile", raw_emg_rate_hz=250.0), Encoder(device_id="calm")
    n = sess.n

    def invalid(i, a, e):
        if i % 97 == 13:
            a[i % 13] = F32_MAX if i % 2 else -F32_MAX
        return a, e

    try:
        gw.process(0, e0.hello(0))
        gw.process(1, e1.hello(0))
        for k in range(0, n, 60):
            block = range(k, min(k + 60, n))
            extra = b""
            if k % 600 == 0:  # a 12-angle frame, a 3-channel raw block, a HELLO that changes the wearable
                extra += encode_frame(Frame(900_000 + k, 0, (0.1,) * 12, (0.2,) * 4))
                extra += encode_raw_emg(k, 0, 250.0, [[0.1, 0.2, 0.3]] * 5)
                extra += Encoder(device_id=f"hostile-{k}", raw_emg_rate_hz=250.0).hello(0)
            gw.process(0, extra + _wire(sess, block, e0, invalid))
            gw.process(1, _wire(sess, block, e1))
            gw.link.poll()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(gw.queue):
            gw.link.poll()
            time.sleep(0.02)
        w0, w1 = gw.wearables
        assert w1.pipeline.counters.windows == (n - rs.L) // rs.S + 1 and w1.fault_count() == 0
        c0 = w0.pipeline.counters
        assert c0.out_of_range > 0 and c0.bad_shape > 0 and c0.raw_rejected > 0 and c0.windows > 0
        assert w0.fault_count() == 0  # nothing had to be caught: every bad packet was refused up front
        st = json.loads(gw.status_payload())
        assert st["wearers"]["w0"]["rejected"]["out_of_range"] == c0.out_of_range
        assert st["counters"]["rejected"] >= c0.out_of_range + c0.bad_shape
        if publish_state:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and sum(t.endswith("/w1/state") for t, _ in got) < w1.pipeline.counters.windows:
                gw.link.poll()  # as the main loop does: held live state goes out
                time.sleep(0.05)
            states = [d for t, d in got if t.endswith("/state")]
            assert all(all(np.isfinite(v) for v in d["probabilities"].values()) for d in states)
            assert sum(d["wearer"] == "w1" for d in states) == w1.pipeline.counters.windows
    finally:
        gw.shutdown()
        sub.loop_stop()


def test_a_fault_in_one_wearer_is_isolated_counted_and_reported(tmp_path, mosquitto, built, monkeypatch):
    """An exception while handling w0's packets (here: its model failing) is caught, counted, logged and
    reported on w0's state topic; w1's windows keep coming."""
    sess, bundle = built
    # batch_max 1: windows classified as they complete (batched calls retry a failed batch one
    # window at a time, so a transient failure is no fault there: tests/test_runtime_batch.py)
    gw = _gateway(tmp_path, mosquitto.url, bundle, batch_max=1)
    sub, got = _listen(mosquitto.port, "alanet/gw-hostile/+/state")
    gw.link.start()
    assert gw.link.wait_connected(10)
    real = gw.wearables[0].pipeline.slot.spec.predict
    calls = [0]

    def failing(x):  # fault injection into the real model: every 3rd window of w0 fails
        calls[0] += 1
        if calls[0] % 3 == 0:
            raise RuntimeError("interpreter failure (injected)")
        return real(x)

    gw.wearables[0].pipeline.slot = replace(gw.wearables[0].pipeline.slot,
                                            spec=replace(gw.spec, predict=failing, predict_batch=None))
    e0, e1 = Encoder(device_id="a"), Encoder(device_id="b")
    try:
        gw.process(0, e0.hello(0))
        gw.process(1, e1.hello(0))
        for k in range(0, sess.n, 45):
            block = range(k, min(k + 45, sess.n))
            gw.process(0, _wire(sess, block, e0))
            gw.process(1, _wire(sess, block, e1))
        w0, w1 = gw.wearables
        n_win = (sess.n - rs.L) // rs.S + 1
        assert w1.pipeline.counters.windows == n_win and w1.fault_count() == 0
        assert w0.fault_count() > 0 and "interpreter failure" in w0.pipeline.last_fault
        st = json.loads(gw.status_payload())
        assert st["wearers"]["w0"]["faults"] == w0.fault_count() and st["counters"]["faults"] == w0.fault_count()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any("fault" in d for _, d in got):
            time.sleep(0.05)
        faults = [d for t, d in got if "fault" in d]
        assert faults and faults[0]["wearer"] == "w0" and "interpreter failure" in faults[0]["fault"]
        import jsonschema

        schemas = Path(__file__).resolve().parents[1] / "device" / "schemas"
        jsonschema.validate(faults[0], json.loads((schemas / "state.schema.json").read_text()))
        jsonschema.validate(st, json.loads((schemas / "status.schema.json").read_text()))
        from alanet.device.live.store import LiveStore  # a subscriber that knows nothing of faults still copes

        live = LiveStore()
        live.ingest("alanet/gw-hostile/w0/state", json.dumps(faults[0]).encode())
        assert live.skipped == 0
    finally:
        gw.shutdown()
        sub.loop_stop()


def test_serial_reads_waiting_for_the_main_loop_are_bounded(tmp_path, built):
    """A wearable faster than the main loop no longer grows memory without bound: reads past the bound are dropped."""
    from alanet.device.runtime import DATA_QUEUE_MAX

    gw = _gateway(tmp_path, "mqtt://127.0.0.1:9", built[1], n=1)
    try:
        chunk = b"\x00" * 1024
        t = threading.Thread(target=lambda: [gw.on_serial_data(0, chunk) for _ in range(DATA_QUEUE_MAX + 500)])
        t.start()
        t.join(30)
        assert not t.is_alive()  # the reader never blocks
        assert len(gw._data) == DATA_QUEUE_MAX and gw.dropped_reads == 500
        assert json.loads(gw.status_payload())["counters"]["dropped_reads"] == 500
    finally:
        gw.shutdown()
