"""swap_model: a WearerPipeline switches models between two windows and keeps every frame.

The models here are small numpy functions that record the window they are given, so
the test can check each window against the offline features, frame by frame.
"""

from __future__ import annotations

import numpy as np
import pytest

import runtime_support as rs
from alanet.device.features import Normalizer, emopain_frame_features
from alanet.device.flash.swap import swap_model
from alanet.device.pipeline import ModelSpec, WearerPipeline
from alanet.firmware_bridge.protocol import Frame


@pytest.fixture(scope="module")
def sess():
    return rs.make_session(seed=5, duration_s=40.0)


def spec(norm: Normalizer, length: int, stride: int, seen: list, model_id: str, decision: dict | None = None) -> ModelSpec:
    def predict(x: np.ndarray) -> np.ndarray:
        seen.append((model_id, x.copy()))
        p = float(1 / (1 + np.exp(-x[:, 13:26].mean())))
        return np.array([1 - p, p], np.float32)

    return ModelSpec(predict=predict, normalizer=norm, length=length, stride=stride, sample_rate_hz=rs.FS,
                     n_channels=30, task="protective", labels=("normal", "protective"),
                     decision=decision or {"class_index": 1, "raise_threshold": 0.6, "clear_threshold": 0.4},
                     model_id=model_id)


@pytest.mark.parametrize("length, stride", [(180, 45), (120, 30), (240, 60)])
def test_swap_keeps_every_frame(sess, length, stride):
    feats = emopain_frame_features(sess.angles, sess.emg, rs.FS)
    norm_a = Normalizer.fit(feats)
    norm_b = Normalizer(norm_a.mean + 0.1, norm_a.std * 2.0)
    seen: list = []
    pipe = WearerPipeline("w1", spec(norm_a, rs.L, rs.S, seen, "a"))
    pipe.handle([rs.hello()])
    swap_at = 1003  # not on a window boundary
    results = []
    for i in range(sess.n):
        if i == swap_at:
            kept = swap_model(pipe, spec(norm_b, length, stride, seen, "b"))
            assert kept is True  # same task, labels and decision: an open episode carries on
        f = Frame(i, int(round(i * 1000 / rs.FS)), tuple(map(float, sess.angles[i])), tuple(map(float, sess.emg[i])))
        results += pipe.handle([f])
    assert pipe.counters.frames == sess.n and pipe.counters.resets == 0
    za, zb = norm_a.apply(feats), norm_b.apply(feats)
    assert len(seen) == len(results)
    before = [(r, x) for r, (m, x) in zip(results, seen) if m == "a"]
    after = [(r, x) for r, (m, x) in zip(results, seen) if m == "b"]
    assert before and after and all(r.seq < swap_at for r, _ in before) and all(r.seq >= swap_at for r, _ in after)
    for r, x in before:
        np.testing.assert_allclose(x, za[r.seq - rs.L + 1:r.seq + 1], atol=1e-4)
    for r, x in after:  # every window after the switch is made of real frames, old ones included
        np.testing.assert_allclose(x, zb[r.seq - length + 1:r.seq + 1], atol=1e-4)
    gaps = np.diff([r.seq for r, _ in after])
    assert set(gaps.tolist()) == {stride}
    # The first window of the new model comes as soon as possible: no frame is thrown away.
    first = after[0][0].seq
    if length <= rs.L:
        # stream aligned: windows end where (frames seen - length) is a multiple of the stride
        assert (first + 1 - length) % stride == 0 and first - stride < swap_at
    else:
        # the ring held the last 180 frames; the longer window is full 60 frames later
        assert first == swap_at - 1 + (length - rs.L)


def test_swap_resets_decider_when_the_decision_changes(sess):
    feats = emopain_frame_features(sess.angles[:10], sess.emg[:10], rs.FS)
    norm = Normalizer.fit(feats)
    seen: list = []
    pipe = WearerPipeline("w1", spec(norm, rs.L, rs.S, seen, "a"))
    old = pipe.decider
    assert swap_model(pipe, spec(norm, rs.L, rs.S, seen, "b")) is True and pipe.decider is old
    assert swap_model(pipe, spec(norm, rs.L, rs.S, seen, "c", {"class_index": 1, "raise_threshold": 0.9,
                                                                "clear_threshold": 0.2})) is False
    assert pipe.decider is not old and pipe.spec.model_id == "c"


def test_swap_to_the_wearables_sample_rate_lifts_the_refusal(sess):
    """A model at the wrong rate refuses the wearable's frames; flashing one at its rate fixes it live."""
    from alanet.firmware_bridge.protocol import DEFAULT_LAYOUT, LAYOUTS, PROTOCOL_VERSION, Hello

    feats = emopain_frame_features(sess.angles[:10], sess.emg[:10], rs.FS)
    norm = Normalizer.fit(feats)
    seen: list = []
    pipe = WearerPipeline("w1", spec(norm, rs.L, rs.S, seen, "a"))
    n_a, n_e = LAYOUTS[DEFAULT_LAYOUT]
    pipe.handle([Hello(0, 0, "wear", "fw", PROTOCOL_VERSION, n_a, n_e, 50.0, 0.0, DEFAULT_LAYOUT)])
    assert pipe.refusal and "50 Hz" in pipe.refusal
    b = spec(norm, 150, 50, seen, "b")
    b = ModelSpec(**{**b.__dict__, "sample_rate_hz": 50.0})
    assert swap_model(pipe, b) is False
    assert pipe.refusal is None and pipe.fs == 50.0
    for i in range(200):
        pipe.handle([Frame(i, i * 20, tuple(map(float, sess.angles[i])), tuple(map(float, sess.emg[i])))])
    assert pipe.counters.frames == 200 and pipe.counters.windows == 2 and seen[-1][0] == "b"
