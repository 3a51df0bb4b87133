"""The shared input contract: schema, energy, streaming = batch, windows, normalisation."""

import numpy as np
import pytest

from alanet.device.features import (EnvelopeFilter, Normalizer, StreamingFeatures, emopain_frame_features,
                                    energy_from_angles)
from alanet.device.schema import EMOPAIN, Schema, generic_schema
from alanet.device.windowing import IGNORE, RingWindow, WindowSpec, majority_label, segment_windows, window_starts


def test_emopain_schema_shape_and_groups():
    assert EMOPAIN.n_channels == 30
    assert EMOPAIN.names[0] == "left_full_body_flexion" and EMOPAIN.names[13] == "left_full_body_flexion_energy"
    groups = EMOPAIN.groups
    assert len(groups) == 14  # 13 angle/energy pairs + sEMG
    assert groups["left_knee_flexion"] == [4, 17]
    assert groups["emg"] == [26, 27, 28, 29]
    assert Schema.from_dict(EMOPAIN.to_dict()) == EMOPAIN


def test_generic_schema_rejects_unknown_group_member():
    with pytest.raises(ValueError, match="unknown channels"):
        generic_schema(["a", "b"], 50, {"arm": ["a", "zz"]})


def test_energy_is_squared_angular_velocity():
    t = np.arange(120) / 60.0
    angles = np.stack([0.5 * t, np.sin(t)], axis=1)  # 0.5 rad/s constant velocity
    e = energy_from_angles(angles, 60.0)
    assert e[0].tolist() == [0.0, 0.0]
    np.testing.assert_allclose(e[1:, 0], 0.25, rtol=1e-4)


def test_streaming_features_equal_batch():
    rng = np.random.default_rng(0)
    a, m = rng.normal(size=(300, 13)), rng.random((300, 4))
    batch = emopain_frame_features(a, m, 60.0)
    sf = StreamingFeatures(60.0)
    stream = np.stack([sf.push(a[i], m[i]) for i in range(300)])
    np.testing.assert_allclose(stream, batch, rtol=1e-6, atol=1e-6)


def test_ring_window_emits_the_trainers_windows():
    x = np.random.default_rng(1).normal(size=(1000, 5)).astype(np.float32)
    ring = RingWindow(5, 180, 45)
    got = [(i, w.copy()) for i, f in enumerate(x) if (w := ring.push(f)) is not None]
    starts = window_starts(1000, 180, 45)
    assert [i - 179 for i, _ in got] == starts.tolist()
    for (_, w), s in zip(got, starts):
        np.testing.assert_array_equal(w, x[s:s + 180])
    ring.reset()
    assert ring.push(x[0]) is None


def test_blocks_equal_frame_by_frame_pushes():
    """push_block (features, ring) = the same pushes one frame at a time, bit for bit, any block sizes."""
    rng = np.random.default_rng(2)
    for length, stride in [(180, 45), (7, 3), (5, 5), (1, 1), (9, 1)]:
        a, m = rng.normal(size=(400, 13)), rng.random((400, 4))
        f1, f2 = StreamingFeatures(60.0), StreamingFeatures(60.0)  # frame by frame, blocks
        r2 = RingWindow(30, length, stride)
        got, rows_all, pos = [], [], 0
        while pos < 400:
            k = int(rng.integers(1, 2 * length + 3))
            rows = f2.push_block(a[pos:pos + k], m[pos:pos + k] if k % 2 else m[pos])  # [n, E] or one [E] row
            if not k % 2:
                m[pos:pos + k] = m[pos]  # what the one-row block fed
            rows_all.append(rows)
            got += [(pos + i, w) for i, w in r2.push_block(rows)]
            pos += k
        feats = np.stack([f1.push(a[i], m[i]) for i in range(400)])
        np.testing.assert_array_equal(np.concatenate(rows_all), feats)
        r1 = RingWindow(30, length, stride)
        want = [(i, w.copy()) for i in range(400) if (w := r1.push(feats[i])) is not None]
        assert len(got) == len(want) > 0
        for (i, w), (j, v) in zip(got, want):
            assert i == j and np.array_equal(w, v)


def test_majority_vote_ignores_unlabelled_and_breaks_ties_high():
    assert majority_label(np.array([0, 0, 1])) == 0
    assert majority_label(np.array([0, 1])) == 1
    assert majority_label(np.array([IGNORE, IGNORE, 2])) == 2
    assert majority_label(np.array([IGNORE])) == IGNORE


def test_segment_windows_pad_short_segments_and_cover_tails():
    x = np.arange(400, dtype=np.float32)[:, None]
    key = np.r_[np.zeros(250), np.ones(100), np.full(50, 2)]
    w = segment_windows(x, np.zeros(400, int), WindowSpec(180, 45), segment_key=key)
    assert w.start.tolist() == [0, 45, 70, 250, 350]
    assert w.mask.sum(axis=1).tolist() == [180, 180, 180, 100, 50]
    assert not np.any(w.x[3, 100:])  # padding is zero
    assert all(w.x[i, 0, 0] == s for i, s in enumerate(w.start))


def test_newest_window_label_is_the_majority_of_the_newest_stride():
    # protective only in frames 150..179: the first window's majority is normal, its newest stride protective
    lab = np.zeros(400, int)
    lab[150:180] = 1
    x = np.zeros((400, 1), np.float32)
    key = np.r_[np.zeros(250), np.ones(150)]
    maj = segment_windows(x, lab, WindowSpec(180, 45), segment_key=key)
    new = segment_windows(x, lab, WindowSpec(180, 45, label="newest"), segment_key=key)
    assert maj.start.tolist() == new.start.tolist() == [0, 45, 70, 250]
    assert maj.y.tolist() == [0, 0, 0, 0]
    assert new.y.tolist() == [1, 0, 0, 0]  # window 0 ends in 135..179 (30 of 45 protective); 45: 180..224
    # a padded window (a 150-frame segment) is labelled by the newest stride of the frames it has
    lab[355:400] = 1
    new = segment_windows(x, lab, WindowSpec(180, 45, label="newest"), segment_key=key)
    assert new.y[-1] == 1 and segment_windows(x, lab, WindowSpec(180, 45), segment_key=key).y[-1] == 0
    with pytest.raises(ValueError, match="window label must be one of majority, newest"):
        WindowSpec(180, 45, label="last")


def test_windows_never_straddle_segments():
    x = np.arange(600, dtype=np.float32)[:, None]
    key = np.repeat([3, 4, 3], 200)
    w = segment_windows(x, None, WindowSpec(180, 45), segment_key=key)
    for xi, mi in zip(w.x, w.mask):
        vals = xi[mi, 0]
        assert len({int(v) // 200 for v in vals}) == 1


def test_normalizer_roundtrip_and_validation():
    rng = np.random.default_rng(2)
    frames = rng.normal(3.0, 2.0, size=(5000, 4))
    frames[:, 3] = 1.0  # constant channel must not divide by zero
    norm = Normalizer.fit(frames)
    z = norm.apply(frames)
    np.testing.assert_allclose(z[:, :3].mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(z[:, :3].std(0), 1, atol=1e-4)
    assert np.all(np.isfinite(z))
    again = Normalizer.from_dict(norm.to_dict(), n_channels=4)
    np.testing.assert_array_equal(again.apply(frames), z)
    with pytest.raises(ValueError, match="channels"):
        Normalizer.from_dict(norm.to_dict(), n_channels=5)
    with pytest.raises(ValueError, match="NaN"):
        Normalizer.fit(np.array([[np.nan]]))


def test_per_wearer_statistics_stream_as_computed_offline():
    """WearerStats (gateway, pushed in uneven blocks) = running_statistics (trainer) after
    every frame; the prior dominates a new wearer and fades as its frames arrive."""
    from alanet.device.features import WearerStats, running_statistics

    rng = np.random.default_rng(5)
    pop = Normalizer.fit(rng.normal(0.0, 1.0, size=(4000, 3)))
    norm = pop.with_prior(200.0)
    wearer = rng.normal([5.0, -2.0, 0.5], [3.0, 0.5, 1.0], size=(1500, 3))
    mean, std = running_statistics(wearer, norm)
    stats, at = WearerStats(3), 0
    for k in (1, 7, 0, 300, 1, 1191):
        stats.push(wearer[at:at + k])
        at += k
        if at:
            m, inv = stats.mean_inv_std(norm)
            np.testing.assert_allclose(m, mean[at - 1], rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(1 / inv, std[at - 1], rtol=1e-5)
    assert np.abs(mean[0] - pop.mean).max() < 0.05  # one frame against 200 of prior
    np.testing.assert_allclose(mean[-1], wearer.mean(0) * 1500 / 1700 + pop.mean * 200 / 1700, rtol=1e-6, atol=1e-6)
    stats.reset()
    np.testing.assert_allclose(stats.mean_inv_std(norm)[0], pop.mean, atol=1e-6)
    # stream windows: each with the statistics at its last frame
    win = norm.stream_windows(wearer, np.array([0, 45]), 180)
    np.testing.assert_allclose(win[1], (wearer[45:225] - mean[224]) / std[224], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(pop.stream_windows(wearer, np.array([0]), 180)[0], pop.apply(wearer[:180]))


def test_normalization_mode_roundtrip_and_validation():
    pop = Normalizer.fit(np.random.default_rng(1).normal(size=(100, 2)))
    assert pop.to_dict().keys() == {"mean", "std"} and pop.mode == "population"
    pw = pop.with_prior(3600)
    d = pw.to_dict()
    assert d["mode"] == "per-wearer" and d["prior_frames"] == 3600.0
    again = Normalizer.from_dict(d, 2)
    assert again.per_wearer and again.prior_frames == 3600.0 and np.array_equal(again.mean, pw.mean)
    for bad, why in (({**d, "mode": "per-session"}, "mode"), ({**d, "prior_frames": 0}, "prior_frames"),
                     ({**d, "prior_frames": "60 s"}, "prior_frames"), ({**d, "prior_frames": float("nan")}, "prior_frames")):
        with pytest.raises(ValueError, match=why):
            Normalizer.from_dict(bad, 2)
    with pytest.raises(ValueError, match="prior_frames"):
        pop.with_prior(-1)
    with pytest.raises(ValueError, match="only for mode per-wearer"):
        Normalizer.from_dict({**pop.to_dict(), "prior_frames": 3600}, 2)


def test_envelope_filter_is_causal_and_stateful():
    rng = np.random.default_rng(3)
    raw = rng.normal(size=(2000, 4)) * np.r_[np.ones(1000), 3 * np.ones(1000)][:, None]
    f1 = EnvelopeFilter(1000.0)
    whole = f1.process(raw)
    f2 = EnvelopeFilter(1000.0)
    parts = np.concatenate([f2.process(raw[:700]), f2.process(raw[700:])])
    np.testing.assert_allclose(parts, whole, rtol=1e-5, atol=1e-6)
    assert whole[1500:].mean() > 2.5 * whole[200:1000].mean()
