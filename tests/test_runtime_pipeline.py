"""The per-wearer pipeline (sans-I/O): streaming equals offline, gaps, restarts, HELLO checks."""

from __future__ import annotations

import numpy as np
import pytest

import runtime_support as rs
from alanet.device.bundle import load_bundle
from alanet.device.decisions import decide_offline
from alanet.device.features import emopain_frame_features
from alanet.device.inference import ModelRunner
from alanet.device.pipeline import ModelSpec, WearerPipeline
from alanet.device.windowing import window_starts
from alanet.firmware_bridge.codec import Decoder, Encoder
from alanet.firmware_bridge.protocol import Frame, FrameBlock


@pytest.fixture(scope="module")
def built():
    return rs.cached_bundle(3, 120.0)


@pytest.fixture(scope="module")
def session(built):
    s = built[0]
    return rs.Session(s.angles[:3600], s.emg[:3600], s.protective[:3600])


@pytest.fixture(scope="module")
def model(built):
    b = load_bundle(built[1])
    runner = ModelRunner.from_bundle(b)
    return b, runner, ModelSpec.from_bundle(b, runner)


def frames(sess, idx, seq0=0):
    """The wearable's HELLO, then its frames ``idx``."""
    return [rs.hello()] + [Frame((seq0 + i) % 2**32, int(round(i * 1000 / rs.FS)), tuple(map(float, sess.angles[i])),
                                 tuple(map(float, sess.emg[i]))) for i in idx]


def offline(b, runner, angles, emg):
    z = b.normalizer.apply(emopain_frame_features(angles, emg, rs.FS))
    st = window_starts(len(z), rs.L, rs.S)
    return runner.predict_many([z[s:s + rs.L] for s in st]), st


def test_streaming_through_the_codec_equals_offline(model, session):
    b, runner, spec = model
    enc, dec = Encoder(), Decoder()
    wire = enc.hello(0) + b"".join(enc.frame(int(i * 1000 / 60), session.angles[i].tolist(), session.emg[i].tolist())
                                   for i in range(session.n))
    p = WearerPipeline("w1", spec)
    res = []
    for k in range(0, len(wire), 777):  # arbitrary chunking, like serial reads
        res += p.handle(dec.feed(wire[k:k + 777]))
    probs, st = offline(b, runner, session.angles, session.emg)
    assert len(res) == len(st) and p.counters.frames == session.n
    np.testing.assert_allclose(np.stack([r.probs for r in res]), probs, atol=2e-6)
    assert [r.seq for r in res] == list(st + rs.L - 1)
    ev = decide_offline(b.task, b.decision, b.labels, probs, (st) / rs.FS, (st + rs.L) / rs.FS)
    assert [(r.event.state, r.window) for r in res if r.event] == [(e.state, e.window) for e in ev]
    assert res[0].t_end == pytest.approx(rs.L / rs.FS, abs=1e-3)


def test_short_gap_is_bridged_by_repeating_the_last_frame(model, session):
    b, runner, spec = model
    p = WearerPipeline("w1", spec, max_gap_frames=3)
    keep = [i for i in range(session.n) if i not in (500, 501)]
    res = p.handle(frames(session, keep))
    c = p.counters
    assert (c.gaps, c.lost, c.bridged, c.resets) == (1, 2, 2, 0)
    ang, emg = session.angles.copy(), session.emg.copy()
    ang[500:502], emg[500:502] = ang[499], emg[499]
    probs, st = offline(b, runner, ang, emg)
    assert len(res) == len(st)
    np.testing.assert_allclose(np.stack([r.probs for r in res]), probs, atol=2e-6)


def test_long_gap_restarts_the_window(model, session):
    _, _, spec = model
    p = WearerPipeline("w1", spec, max_gap_frames=3)
    keep = list(range(0, 400)) + list(range(500, session.n))
    res = p.handle(frames(session, keep))
    assert p.counters.resets == 1 and p.counters.bridged == 0 and p.counters.lost == 100
    seqs = [r.seq for r in res]
    assert seqs[:5] == [179, 224, 269, 314, 359]
    after = [s for s in seqs if s >= 500]
    assert after[0] == 500 + rs.L - 1 and np.all(np.diff(after) == rs.S)  # the window refilled from the gap


def test_sequence_wrap_is_continuous(model, session):
    _, _, spec = model
    p = WearerPipeline("w1", spec)
    res = p.handle(frames(session, range(600), seq0=2**32 - 300))
    assert p.counters.resets == 0 and p.counters.gaps == 0 and len(res) == (600 - rs.L) // rs.S + 1


def test_device_restart_resets(model, session):
    _, _, spec = model
    p = WearerPipeline("w1", spec)
    p.handle(frames(session, range(300), seq0=1000))
    p.handle(frames(session, range(300, 600), seq0=0))  # seq went back: rebooted
    assert p.counters.resets == 1


def test_wrong_rate_hello_refuses_frames(model, session):
    _, _, spec = model
    dec = Decoder()
    enc = Encoder(sample_rate_hz=50.0)
    p = WearerPipeline("w1", spec)
    res = p.handle(dec.feed(enc.hello(0) + b"".join(enc.frame(i * 20, session.angles[i].tolist(), session.emg[i].tolist())
                                                      for i in range(400))))
    assert res == [] and p.counters.refused == 400 and "50 Hz" in p.refusal
    good = Encoder()
    res = p.handle(dec.feed(good.hello(0) + b"".join(good.frame(i * 17, session.angles[i].tolist(), session.emg[i].tolist(), seq=1000 + i)
                                                      for i in range(400))))
    assert p.refusal is None and len(res) == (400 - rs.L) // rs.S + 1


def test_pain_bundle_level_changes_stream_equals_offline(session):
    sess, bundle = rs.cached_bundle(3, 120.0, task="pain")
    b = load_bundle(bundle)
    runner = ModelRunner.from_bundle(b)
    assert b.task == "pain" and runner.n_outputs == 3
    p = WearerPipeline("w1", ModelSpec.from_bundle(b, runner))
    res = p.handle(frames(sess, range(sess.n)))
    probs, st = offline(b, runner, sess.angles, sess.emg)
    ev = decide_offline("pain", b.decision, b.labels, probs, st / rs.FS, (st + rs.L) / rs.FS)
    got = [(r.event.type, r.event.state, r.event.level, r.window) for r in res if r.event]
    assert got == [(e.type, e.state, e.level, e.window) for e in ev]
    assert len(got) >= 2 and all(g[0] == "pain" for g in got)
    assert res[-1].state == got[-1][1]  # the live state carries the current level's label


def _hostile_stream(sess, rng) -> list:
    """One wearer's packets with every condition the frame path knows, many inside one read."""
    from dataclasses import replace as dc_replace

    from alanet.firmware_bridge.protocol import RawEmg

    out, seq, t = [rs.hello()], 0, 0
    for i in range(3000):
        f = Frame(seq % 2**32, t, tuple(map(float, sess.angles[i])), tuple(map(float, sess.emg[i])))
        u = rng.random()
        if u < 0.01:
            out.append(f)  # duplicate
        elif u < 0.02:
            seq += int(rng.integers(1, 4))  # short gap (bridged)
        elif u < 0.023:
            seq += 40  # long gap (window restarts)
        elif u < 0.025:
            seq = int(rng.integers(0, 100))  # device restart (seq back)
        elif u < 0.035:
            bad = list(f.angles)
            bad[int(rng.integers(0, 13))] = [float("nan"), 1e9, float("-inf"), 7.0][int(rng.integers(0, 4))]
            out.append(dc_replace(f, angles=tuple(bad)))
        elif u < 0.04:
            out.append(dc_replace(f, emg=f.emg[:3]))  # wrong shape
        elif u < 0.042:
            out.append(dc_replace(f, emg=(1e6,) * 4))  # sEMG out of range
        elif u < 0.044:
            out.append(rs.hello(device_id=f"test-wear-{i % 3}"))  # the wearable changed: window restarts
        elif u < 0.045:
            out += [rs.hello(sample_rate_hz=50.0), dc_replace(f, seq=(seq + 1) % 2**32), rs.hello()]  # refused, then back
        elif u < 0.046:
            out.append(RawEmg(i, t, 1000.0, ((0.1,) * 4,)))  # no raw rate in the HELLO: rejected
        out.append(f)
        seq, t = seq + 1, t + 17
    return out


@pytest.mark.parametrize("source,per_wearer", [("frames", False), ("wire", False), ("wire", True)])
def test_blocks_equal_frame_by_frame(model, session, source, per_wearer):
    """Reads handled as blocks give the WindowResults, counters and faults of one packet at a time
    (the reference path, ``batch=False``): from ``Frame`` lists, and from the decoder's frame blocks
    of the same stream sent over the wire in reads of random sizes."""
    from dataclasses import asdict, replace as dc_replace

    from alanet.firmware_bridge.codec import encode_packet

    _, runner, spec = model
    rng = np.random.default_rng(14)
    packets = _hostile_stream(session, rng)
    assert sum(type(p) is Frame for p in packets) > 2900
    if source == "wire":  # one decoder, its reads as the gateway gets them (blocks of frame rows)
        wire, dec, pos, packets = b"".join(map(encode_packet, packets)), Decoder(), 0, []
        while pos < len(wire):
            k = int(rng.choice([1, 56, 300, 2000, 40000]))
            packets += dec.feed_blocks(wire[pos:pos + k])
            pos += k
        assert dec.stats.malformed  # the NaN frames stop at the decoder
        assert sum(len(p) for p in packets if type(p) is FrameBlock) > 2900

    def pipeline(batch: bool = True) -> WearerPipeline:
        calls = {"n": 0}

        def predict(x):  # the real model; one window faults, another gives NaN
            calls["n"] += 1
            if calls["n"] == 9:
                raise RuntimeError("invoke failed")
            return np.full(2, np.nan, np.float32) if calls["n"] == 17 else runner.predict(x)

        norm = spec.normalizer.with_prior(600.0) if per_wearer else spec.normalizer
        return WearerPipeline("w1", dc_replace(spec, predict=predict, normalizer=norm), max_gap_frames=3, batch=batch)

    ref, blk = pipeline(batch=False), pipeline()
    want = [r for p in packets for r in ref.handle([p])]  # runs of one frame: the per-frame path
    got, pos = [], 0
    while pos < len(packets):
        k = int(rng.choice([1, 5, 45, 300, 1000]))
        got += blk.handle(packets[pos:pos + k])
        pos += k
    c, b = asdict(ref.counters), asdict(blk.counters)
    c.pop("inference_s"), b.pop("inference_s")  # time, not behaviour
    assert b == c
    # one window raises, one is not finite (noted as a fault too)
    assert c["windows"] > 20 and c["faults"] == 2 and c["skipped"] == 1 and c["bridged"] and c["resets"] > 5
    assert c["out_of_range"] and c["bad_shape"] and c["refused"] and c["raw_rejected"] and c["gaps"]
    assert blk.take_faults() == ref.take_faults()
    assert len(got) == len(want)
    for x, y in zip(got, want):
        assert (x.window, x.seq, x.t_start, x.t_end, x.state, x.event) == \
               (y.window, y.seq, y.t_start, y.t_end, y.state, y.event)
        if per_wearer:  # running sums added per block or per frame: the same up to rounding
            np.testing.assert_allclose(x.probs, y.probs, atol=1e-5)
            assert x.smoothed == pytest.approx(y.smoothed, abs=1e-5)
        else:
            assert np.array_equal(x.probs, y.probs) and x.smoothed == y.smoothed
    assert any(r.event for r in want)


def test_per_wearer_normalisation_streams_as_the_trainer_computes_it(model, session, tmp_path):
    """A per-wearer bundle: each window is normalised with the wearer's running statistics
    up to its last frame, the same numbers the trainer computes per recording, on the
    block path (serial reads of many frames) and frame by frame; a new wearable starts
    again from the prior."""
    import dataclasses
    import json

    from alanet.device.bundle import write_bundle

    b, runner, _ = model
    manifest = json.loads((b.path / "manifest.json").read_text())
    manifest["normalization"].update(mode="per-wearer", prior_frames=600)
    from alanet.device.bundle import BundleError

    with pytest.raises(BundleError, match="schema"):  # schema 1 promises population statistics to older gateways
        write_bundle(tmp_path / "pw1", manifest, b.model_path.read_bytes(), force=True)
        load_bundle(tmp_path / "pw1")
    manifest["schema"] = "alanet.bundle/2"
    write_bundle(tmp_path / "pw", manifest, b.model_path.read_bytes(), force=True)
    pb = load_bundle(tmp_path / "pw")
    spec = ModelSpec.from_bundle(pb, ModelRunner.from_bundle(pb))
    norm = spec.normalizer
    assert norm.per_wearer and norm.prior_frames == 600.0
    seen: list[np.ndarray] = []

    def predict(x):
        seen.append(np.array(x))
        return runner.predict(x)

    pw = dataclasses.replace(spec, normalizer=norm, predict=predict)
    feats = emopain_frame_features(session.angles, session.emg, rs.FS)
    st = window_starts(len(feats), rs.L, rs.S)
    expect = norm.stream_windows(feats, st, rs.L)
    assert np.abs(expect - b.normalizer.stream_windows(feats, st, rs.L)).max() > 0.1  # not the population's
    enc = Encoder()
    wire = enc.hello(0) + b"".join(enc.frame(int(i * 1000 / 60), session.angles[i].tolist(), session.emg[i].tolist())
                                   for i in range(session.n))
    for chunk in (777, None):
        seen.clear()
        p, dec = WearerPipeline("w1", pw), Decoder()
        if chunk:
            for k in range(0, len(wire), chunk):
                p.handle(dec.feed(wire[k:k + chunk]))
        else:
            for pkt in frames(session, range(session.n)):
                p.handle([pkt])
        assert len(seen) == len(st)
        np.testing.assert_allclose(np.stack(seen), expect, atol=2e-5)
    # another wearable on the same line: its statistics start from the prior again
    seen.clear()
    p.handle([rs.hello(device_id="other-wearable")] + frames(session, range(rs.L))[1:])
    np.testing.assert_allclose(seen[0], norm.stream_windows(feats[:rs.L], [0], rs.L)[0], atol=2e-5)
    # and after a refused HELLO, the next accepted wearable starts from the prior too
    p.handle([rs.hello(sample_rate_hz=50.0, device_id="third")])
    assert p.refusal
    seen.clear()
    p.handle([rs.hello(device_id="third")] + frames(session, range(rs.L))[1:])
    np.testing.assert_allclose(seen[0], norm.stream_windows(feats[:rs.L], [0], rs.L)[0], atol=2e-5)


def test_per_wearer_statistics_keep_every_frame_when_a_deferred_window_fails(model, session):
    """A batched call that fails restarts the wearer's window while the fast path still
    holds rows that complete no window: those frames count in the wearer's statistics,
    as on the reference path, so the next windows are normalised alike."""
    from dataclasses import replace as dc_replace

    _, _, spec = model
    pw = dc_replace(spec, normalizer=spec.normalizer.with_prior(600.0))
    ref, blk = (WearerPipeline("w1", pw, deferred=True, batch=b) for b in (False, True))
    first = frames(session, range(rs.L + 20))
    for p in (ref, blk):
        p.handle(first)
        assert p.due == 1
        p.conclude_due(np.zeros((1, 2), np.float32), failed={0: "invoke failed (injected)"})
        assert p.counters.faults == 1
    assert blk.stats.n == ref.stats.n == rs.L + 20
    later = frames(session, range(rs.L + 20, 2 * rs.L + 40))[1:]
    for p in (ref, blk):
        p.handle(later)
    assert ref.due == blk.due >= 1
    for x, y in zip(blk.due_windows(), ref.due_windows()):
        np.testing.assert_allclose(x, y, atol=1e-5)


@pytest.mark.parametrize("per_wearer", [True, False])
def test_warmup_holds_raises_as_offline(model, session, per_wearer):
    """A rule with a warm-up: the gateway (block path, reference path, deferred windows) raises
    exactly what decide_offline raises on the same windows from the recording's start (no
    raise before warmup_s of the wearer's stream), and a new wearable's warm-up starts again."""
    from dataclasses import replace as dc_replace

    b, runner, spec = model
    norm = spec.normalizer.with_prior(600.0) if per_wearer else spec.normalizer
    feats = emopain_frame_features(session.angles, session.emg, rs.FS)
    st = window_starts(len(feats), rs.L, rs.S)
    probs = runner.predict_many(norm.stream_windows(feats, st, rs.L))
    rule = {**spec.decision, "smoothing_alpha": 1.0}
    plain = decide_offline(b.task, rule, b.labels, probs, st / rs.FS, (st + rs.L) / rs.FS)
    assert plain and plain[0].state == "raised"
    rule["warmup_s"] = plain[0].t_end + 0.5  # holds the first raise (and what follows from it)
    want = decide_offline(b.task, rule, b.labels, probs, st / rs.FS, (st + rs.L) / rs.FS)
    assert want and want != plain and want[0].t_end > rule["warmup_s"]
    pw = dc_replace(spec, normalizer=norm, decision=rule)

    def switched_on_long_ago(pkts, t0_ms):  # the device clock does not start with the stream
        return pkts[:1] + [dc_replace(f, t_ms=f.t_ms + t0_ms) for f in pkts[1:]]

    packets = switched_on_long_ago(frames(session, range(session.n)), 600_000)
    for p in (WearerPipeline("w1", pw), WearerPipeline("w1", pw, batch=False), WearerPipeline("w1", pw, deferred=True)):
        res = []
        for k in range(0, len(packets), 700):
            res += p.handle(packets[k:k + 700])
            if p.deferred:
                res += p.finish_due()
        assert [(r.event.state, r.window) for r in res if r.event] == [(e.state, e.window) for e in want]
    # another wearable on the same line after an episode cleared: held again from its own start
    end = int(st[[e.window for e in want if e.state == "cleared"][0]]) + rs.L
    p = WearerPipeline("w1", pw)
    p.handle(packets[:1 + end])
    assert not p.decider.active
    res = p.handle(switched_on_long_ago([rs.hello(device_id="other-wearable")] + packets[1:], 900_000))
    assert [(r.event.state, r.window - res[0].window) for r in res if r.event] == [(e.state, e.window) for e in want]
