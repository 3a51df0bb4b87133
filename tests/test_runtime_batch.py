"""Batched inference across wearers gives what one window at a time gives.

Each wearer streams its own part of a synthetic session (so rows mixed up between
wearers would show). The same streams go through a gateway that classifies each
window at once (``batch_max = 1``) and one that batches the due windows of all its
wearers (``batch_max = 8``); probabilities agree within float tolerance and events,
states, attention and counters are identical. Faults: a window whose model call
raises inside a batch is charged to its own wearer only. Model switches: windows
still due are concluded with the old model. Real LiteRT models, real Mosquitto, real
pty serial ports for the main loop.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import replace

import numpy as np
import pytest
from test_runtime_e2e import GW, Subscriber, as_tuples, ev_tuples

import runtime_support as rs
from alanet.device.bundle import load_bundle
from alanet.device.config import WearableConfig, load_config
from alanet.device.inference import ModelRunner
from alanet.device.pipeline import ModelSpec, WearerPipeline, predict_windows
from alanet.device.runtime import PARTIAL_MAX, Gateway, load_model
from alanet.firmware_bridge.codec import Encoder
from alanet.firmware_bridge.protocol import Frame

N_WEARERS = 3
OFFSETS = (0, 700, 1450)  # each wearer's start in the session (frames)
N_FRAMES = 2400  # per wearer (40 s: ~50 windows each)


@pytest.fixture(scope="module")
def built():
    return rs.cached_bundle(3, 120.0)


def _parts(sess, n_frames: int = N_FRAMES) -> list[rs.Session]:
    """Each wearer's stream: its own part of the session."""
    return [rs.Session(sess.angles[o:o + n_frames], sess.emg[o:o + n_frames], sess.protective[o:o + n_frames])
            for o in OFFSETS]


def _wire(part: rs.Session, idx, enc: Encoder) -> bytes:
    return b"".join(enc.frame(int(round(i * 1000 / rs.FS)), part.angles[i].tolist(), part.emg[i].tolist(), seq=i)
                    for i in idx)


def _gateway(tmp_path, url, bundle, name, model=None, **over):
    cfg = load_config(None, {"port": "/dev/null", "bundle": str(bundle), "broker": url, "gateway": GW,
                             "state_dir": str(tmp_path / name)})
    cfg = replace(cfg, wearables=tuple(WearableConfig(f"w{i}", f"/dev/null{i}") for i in range(N_WEARERS)), **over)
    results: list = []
    return Gateway(cfg, model=model, on_result=results.append), results


def _stream(gw: Gateway, parts: list[rs.Session], chunk: int = 20) -> None:
    """Interleaved reads of every wearer, as the main loop handles them: windows stay due until the
    batch is full or a round of reads is done (the queue ran empty)."""
    encs = [Encoder(device_id=f"wear-{i}") for i in range(N_WEARERS)]
    for i, e in enumerate(encs):
        gw.process(i, e.hello(0), defer=True)
    for k in range(0, N_FRAMES, chunk):
        for i, e in enumerate(encs):
            gw.process(i, _wire(parts[i], range(k, min(k + chunk, N_FRAMES)), e), defer=True)
            if gw.due >= gw.batch_limit():
                gw.classify_due()
        gw.classify_due()


def _by_wearer(results) -> dict[str, list]:
    out: dict[str, list] = {}
    for r in results:
        out.setdefault(r.wearer, []).append(r)
    return out


def _same_results(a: list, b: list) -> None:
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        assert (x.wearer, x.window, x.seq, x.t_start, x.t_end, x.state, x.event) == \
               (y.wearer, y.window, y.seq, y.t_start, y.t_end, y.state, y.event)
        np.testing.assert_allclose(x.probs, y.probs, atol=1e-5)
        assert x.smoothed == pytest.approx(y.smoothed, abs=1e-5)
        assert (x.attention is None) == (y.attention is None)
        if x.attention is not None:
            pa, pb = x.attention.to_payload(), y.attention.to_payload()
            assert pa["peak_frame"] == pb["peak_frame"] and [p["part"] for p in pa["body"]] == \
                [p["part"] for p in pb["body"]]
            np.testing.assert_allclose(pa["profile"], pb["profile"], atol=1e-4)


def _counters(gw: Gateway) -> dict:
    c = gw.counters()
    return {k: v for k, v in c.items() if k not in ("inference_ms",)}


@pytest.mark.parametrize("batch_call", ["loop", "predict_many"])
def test_batched_gateway_gives_the_unbatched_results(tmp_path, mosquitto, built, batch_call):
    """Same streams, one gateway at batch 1 and one batching 3 wearers: same windows, events, counters."""
    sess, bundle = built
    bundle_, spec = load_model(load_config(None, {"port": "/dev/null", "bundle": str(bundle),
                                                  "state_dir": str(tmp_path / "m")}))
    if batch_call == "predict_many":  # a runner with a batch entry point (N windows in, [N, K] out)
        runner = ModelRunner.from_bundle(load_bundle(bundle))
        spec = replace(spec, predict_batch=runner.predict_many, batch_sizes=(1, 8))
    one, got1 = _gateway(tmp_path, mosquitto.url, bundle, "one", (bundle_, spec), batch_max=1)
    many, got8 = _gateway(tmp_path, mosquitto.url, bundle, "many", (bundle_, spec), batch_max=8)
    try:
        assert not one.batching and many.batching and many.batch_limit() == 8
        default, _ = _gateway(tmp_path, mosquitto.url, bundle, "default", (bundle_, spec))
        # batch_max 0: the native batch, at least 16 (a batch-1 model still defers: shared commits)
        assert default.batching and default.batch_limit() == max(16, *spec.batch_sizes)
        default.shutdown()
        assert all(w.pipeline.deferred for w in many.wearables)
        _stream(one, _parts(sess))
        _stream(many, _parts(sess))
        a, b = _by_wearer(got1), _by_wearer(got8)
        assert sorted(a) == sorted(b) == [f"w{i}" for i in range(N_WEARERS)]
        for w in a:
            _same_results(a[w], b[w])
        assert any(r.event for r in got1), "the streams must raise alerts"
        # the wearers' streams differ: so do their probabilities (rows are not mixed up)
        assert not np.allclose([r.probs for r in a["w0"][:10]], [r.probs for r in a["w1"][:10]])
        assert _counters(one) == _counters(many)
        assert many.batch_windows == sum(len(v) for v in b.values())
        assert many.batch_windows > many.batches  # windows did share calls
        assert many.due == 0 and all(w.pipeline.due == 0 for w in many.wearables)
        assert all(r.inference_ms > 0 for r in got8)
    finally:
        for gw in (one, many):
            gw.link.stop(gw.status_topic, b"{}")
            gw.queue.close()
            gw._lock.release()


def test_a_failing_window_in_a_batch_is_charged_to_its_wearer_only(tmp_path, mosquitto, built):
    """w1's windows make the model raise (fault injection into the real model); the batched call falls
    back to one call per window, so w0 and w2 get every window and w1 alone gets the faults."""
    sess, bundle = built
    bundle_, spec = load_model(load_config(None, {"port": "/dev/null", "bundle": str(bundle),
                                                  "state_dir": str(tmp_path / "m")}))
    real = spec.predict
    still_at = 1.2345  # w1 holds its first angle at this value (rad): its windows are recognisable
    marker = (still_at - float(spec.normalizer.mean[0])) / float(spec.normalizer.std[0])

    def bad(x: np.ndarray) -> bool:
        return float(np.ptp(x[:, 0])) == 0.0 and abs(float(x[0, 0]) - marker) < 1e-3

    def predict(x: np.ndarray) -> np.ndarray:
        if bad(x):
            raise RuntimeError("interpreter failure (injected)")
        return real(x)

    def predict_batch(xs: np.ndarray) -> np.ndarray:
        if any(bad(x) for x in xs):
            raise RuntimeError("batched interpreter failure (injected)")
        return np.stack([real(x) for x in xs])

    failing = replace(spec, predict=predict, predict_batch=predict_batch, batch_sizes=(1, 8))
    gw, got = _gateway(tmp_path, mosquitto.url, bundle, "gw", (bundle_, failing), batch_max=8)
    parts = _parts(sess)
    still = parts[1].angles.copy()
    still[:, 0] = still_at
    parts[1] = replace(parts[1], angles=still)
    try:
        gw.link.start()
        assert gw.link.wait_connected(10)
        _stream(gw, parts)
        w0, w1, w2 = gw.wearables
        n_win = (N_FRAMES - rs.L) // rs.S + 1
        assert w0.pipeline.counters.windows == w2.pipeline.counters.windows == n_win
        assert w0.fault_count() == w2.fault_count() == 0
        assert w1.pipeline.counters.windows == 0 and w1.fault_count() > 0
        assert "interpreter failure" in w1.pipeline.last_fault
        assert gw.batch_failures > 0
        st = gw.status_payload()
        assert b'"faults":' in st and gw.counters()["faults"] == w1.fault_count()
        # the survivors' windows are the model's, not the failed wearer's
        by = _by_wearer(got)
        assert set(by) == {"w0", "w2"}
    finally:
        gw.link.stop(gw.status_topic, b"{}")
        gw.queue.close()
        gw._lock.release()


def _numpy_spec(norm, model_id: str, seen: list, flip: bool = False) -> ModelSpec:
    def predict(x: np.ndarray) -> np.ndarray:
        seen.append(model_id)
        p = float(1 / (1 + np.exp(-x[:, 13:26].mean())))
        return np.array([p, 1 - p] if flip else [1 - p, p], np.float32)

    return ModelSpec(predict=predict, normalizer=norm, length=rs.L, stride=rs.S, sample_rate_hz=rs.FS,
                     n_channels=30, task="protective", labels=("normal", "protective"),
                     decision={"class_index": 1, "raise_threshold": 0.6, "clear_threshold": 0.4}, model_id=model_id)


def _frames(sess, idx):
    return [Frame(i, int(round(i * 1000 / rs.FS)), tuple(map(float, sess.angles[i])), tuple(map(float, sess.emg[i])))
            for i in idx]


def test_a_model_switch_concludes_due_windows_with_the_old_model(built):
    """Windows due at a switch are classified by the model they completed under (as immediate mode
    does) and come out with the next call; later windows use the new model; nothing is lost."""
    sess, bundle = built
    norm = load_bundle(bundle).normalizer
    seen_i: list = []
    seen_d: list = []
    imm = WearerPipeline("w", _numpy_spec(norm, "a", seen_i))
    dfr = WearerPipeline("w", _numpy_spec(norm, "a", seen_d), deferred=True)
    first = [rs.hello()] + _frames(sess, range(0, 600))
    r_imm = imm.handle(first)
    n_first = len(r_imm)
    assert dfr.handle(first) == [] and dfr.due == n_first > 1
    imm.set_model(_numpy_spec(norm, "b", seen_i, flip=True))
    dfr.set_model(_numpy_spec(norm, "b", seen_d, flip=True))
    assert dfr.due == 0 and seen_d == ["a"] * n_first
    later = _frames(sess, range(600, 1200))
    r_imm += imm.handle(later)
    assert dfr.handle(later) == [] and dfr.due == len(r_imm) - n_first > 0
    probs, att = predict_windows(dfr.spec, np.stack(dfr.due_windows()))
    r_dfr = dfr.conclude_due(probs, att, 0.1)  # the windows concluded at the switch come first
    assert [r.window for r in r_dfr] == list(range(len(r_imm)))
    _same_results(r_imm, r_dfr)
    assert seen_d == seen_i  # each window went to the same model in both modes
    assert imm.counters == replace(dfr.counters, inference_s=imm.counters.inference_s)


def test_the_main_loop_batches_pty_wearables(tmp_path, mosquitto, built):
    """``Gateway.run`` with three pty wearables and batching on: every window is classified through
    the batch path, and each wearer's alerts are exactly those of its stream, decided offline."""
    sess, bundle = built
    wears = [rs.PtyWearable() for _ in range(N_WEARERS)]
    cfg = load_config(None, {"port": "/dev/null", "bundle": str(bundle), "broker": mosquitto.url, "gateway": GW,
                             "state_dir": str(tmp_path / "state")})
    cfg = replace(cfg, wearables=tuple(WearableConfig(f"w{i}", w.path) for i, w in enumerate(wears)), batch_max=8,
                  batch_wait_ms=50.0)
    gw = Gateway(cfg)
    sub = Subscriber(mosquitto.port)
    th = threading.Thread(target=gw.run, kwargs={"install_signals": False}, daemon=True)
    th.start()
    n_frames = 1800
    n_win = (n_frames - rs.L) // rs.S + 1
    parts = _parts(sess, n_frames)
    expected = [rs.expected_events(bundle, part) for part in parts]
    try:
        for w in wears:
            assert w.wait_opened_by(os.getpid(), timeout=20, settle=0.1)
            w.hello()
        t0 = time.perf_counter()
        for k in range(0, n_frames, 15):  # 4x real time (a loaded CI core keeps up), the wearers interleaved
            for i, w in enumerate(wears):
                w.write(_wire(parts[i], range(k, k + 15), w.enc))
            delay = t0 + (k + 15) / (rs.FS * 4) - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        sub.wait(lambda: len(sub.of("/state")) >= N_WEARERS * n_win and
                 len(sub.unique_alerts()) >= sum(map(len, expected)), 30)
    finally:
        gw.stop()
        th.join(15)
        for w in wears:
            w.close()
        sub.close()
    assert gw.batching and gw.batch_windows == N_WEARERS * n_win
    states, alerts = sub.of("/state"), sub.unique_alerts()
    for i in range(N_WEARERS):
        mine = [s for s in states if s["wearer"] == f"w{i}"]
        assert [s["window"] for s in mine] == list(range(n_win))
        assert as_tuples(a for a in alerts if a["wearer"] == f"w{i}") == ev_tuples(expected[i])
    assert alerts, "the streams must raise alerts"


def test_reads_that_complete_no_window_are_held_and_a_window_read_goes_out_at_once(tmp_path, mosquitto, built):
    """``[runtime] read_hold_ms``: the main loop keeps a wearer's serial chunks until they hold the
    frame that completes its next window (then at once, joined into one read) or have waited the hold."""
    sess, bundle = built
    gw, results = _gateway(tmp_path, mosquitto.url, bundle, "hold", read_hold_ms=400.0, batch_max=1)
    part = _parts(sess)[0]
    enc = Encoder(device_id="wear-0")
    hello = enc.hello(0)
    try:
        gw.link.start()
        assert gw.link.wait_connected(10)
        gw.on_serial_data(0, hello)
        assert gw._next_read() == (0, hello)  # nothing known about the stream yet: at once
        gw.process(0, hello)
        first = [_wire(part, [k], enc) for k in range(rs.L)]
        for w in first[:-1]:
            gw.on_serial_data(0, w)
        gw.on_serial_data(0, first[-1][:10])  # the completing frame, in two reads
        assert gw._next_read() is None  # one frame short of the first window
        gw.on_serial_data(0, first[-1][10:])
        assert gw._next_read() == (0, b"".join(first))  # the window is complete: no waiting
        gw.process(0, b"".join(first))
        assert [r.window for r in results] == [0]
        t0 = time.monotonic()
        more = _wire(part, range(rs.L, rs.L + 5), enc)
        gw.on_serial_data(0, more)
        assert gw._next_read() is None
        while (item := gw._next_read()) is None:
            time.sleep(0.01)
        assert item == (0, more) and time.monotonic() - t0 >= 0.39  # after the hold, all together
        gw.process(0, more)
        assert gw.wearables[0].pipeline.counters.frames == rs.L + 5 and len(results) == 1
    finally:
        gw.link.stop(gw.status_topic, b"{}")
        gw.queue.close()
        gw._lock.release()


def test_held_reads_are_processed_at_shutdown(tmp_path, mosquitto, built):
    """What the main loop still holds when the gateway stops is decoded, not lost."""
    sess, bundle = built
    gw, results = _gateway(tmp_path, mosquitto.url, bundle, "drain", read_hold_ms=1000.0, batch_max=1)
    part = _parts(sess)[0]
    enc = Encoder(device_id="wear-0")
    gw.link.start()
    assert gw.link.wait_connected(10)
    gw.process(0, enc.hello(0))
    gw.on_serial_data(0, _wire(part, range(rs.L), enc))  # a whole window ...
    gw.process(1, b"\x00")  # w1 has no accepted HELLO yet: its reads wait for the hold (1 s) ...
    gw.on_serial_data(1, enc.hello(0))  # ... so this one is still held when the gateway stops
    assert gw._next_read() == (0, _wire(part, range(rs.L), enc)) and gw._next_read() is None
    gw.on_serial_data(0, _wire(part, range(rs.L), enc)[:20])  # and part of w0's next frame
    gw.process(0, _wire(part, range(rs.L), enc))
    gw.shutdown()  # stops the links, then takes in and processes what was queued or held
    assert gw.wearables[0].pipeline.counters.frames == rs.L and [r.window for r in results] == [0]
    assert gw.wearables[0].decoder.stats.bytes == len(enc.hello(0)) + len(_wire(part, range(rs.L), enc)) + 20
    assert gw.wearables[1].pipeline.hello is not None


def test_a_read_wakes_the_main_loop_only_when_it_may_complete_a_window(tmp_path, mosquitto, built):
    """Reader threads append to the loop's queue without waking it, except for a read whose bytes not yet
    taken reach the wearer's need (the rest wait for their hold); a read without a frame delimiter
    waits in its reader thread for the one that ends its frame. The decoder sees the same bytes."""
    sess, bundle = built
    gw, results = _gateway(tmp_path, mosquitto.url, bundle, "wake", read_hold_ms=400.0)
    part = _parts(sess)[0]
    enc = Encoder(device_id="wear-0")
    try:
        hello = enc.hello(0)
        gw.on_serial_data(0, hello)
        assert gw._wake.is_set()  # no need known yet: any read may complete a window
        gw._wake.clear()
        assert gw._next_read() == (0, hello) and gw._next_read() is None
        gw.process(0, hello)
        need = gw.reads.need(0)
        frames = [_wire(part, [k], enc) for k in range(rs.L + rs.S)]
        assert sum(map(len, frames[:rs.L])) >= need > sum(map(len, frames[:rs.L - 1]))
        for k in range(rs.L - 1):
            first, rest = frames[k][:1], frames[k][1:]  # as an idle line gives a frame: its first byte, then the rest
            gw.on_serial_data(0, first)
            assert gw._partial[0] == first and not gw._wake.is_set()  # no delimiter: held by the reader
            gw.on_serial_data(0, rest)
            assert gw._partial[0] == b"" and not gw._wake.is_set()  # the window is not complete: no wake
        assert len(gw._data) == rs.L - 1  # one hand-over per frame
        gw.on_serial_data(0, frames[rs.L - 1])
        assert gw._wake.is_set()  # this read completes the first window
        i, data = gw._next_read()
        assert (i, data) == (0, b"".join(frames[:rs.L]))
        gw.process(0, data)
        assert [r.window for r in results] == [0]
        gw._wake.clear()
        gw.on_serial_data(0, frames[rs.L])  # the next window needs a stride more
        assert not gw._wake.is_set() and gw.reads.need(0) > len(frames[rs.L])
        gw.on_serial_data(0, b"\x01" * PARTIAL_MAX)  # a stream that never delimits is handed over at the bound
        assert gw._partial[0] == b"" and len(gw._data) == 2
    finally:
        gw.link.stop(gw.status_topic, b"{}")
        gw.queue.close()
        gw._lock.release()
