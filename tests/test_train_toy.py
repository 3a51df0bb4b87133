"""A tiny learnable dataset for the training tests, and tests of windows/augmentation."""

from __future__ import annotations

import numpy as np
import pytest

from alanet.device.schema import Channel, Schema, generic_schema
from alanet.device.windowing import WindowSpec
from alanet.errors import InputError
from alanet.train.data.recording import Dataset, Recording


def toy_dataset(participants: int = 4, n_classes: int = 2, frames: int = 360, seed: int = 0,
                block: int = 60) -> Dataset:
    """Participants with 6 channels in 3 body parts; the class sets the amplitude of an
    oscillation on part 0, so every model can learn it in a few epochs."""
    rng = np.random.default_rng(seed)
    chans = tuple(Channel(f"c{i}", "a.u.", "other", f"part{i // 2}") for i in range(6))
    schema = Schema(chans, 60.0, name="toy")
    recs = []
    t = np.arange(frames) / 60.0
    for p in range(participants):
        lab = (np.arange(frames) // block + p) % n_classes
        values = rng.normal(0, 0.3, (frames, 6)).astype(np.float32)
        amp = 0.5 + 1.5 * lab
        values[:, 0] += amp * np.sin(2 * np.pi * 1.5 * t)
        values[:, 1] += amp * np.cos(2 * np.pi * 1.5 * t)
        recs.append(Recording(f"S{p:02d}", f"S{p:02d}_a", values, schema, {"label": lab.astype(np.int64)},
                              segment=(np.arange(frames) // block).astype(np.int64)))
    names = ["low", "high", "mid"][:n_classes]
    return Dataset(tuple(recs), schema, {"label": names}, "csv", "toy")


def test_make_windows_drops_unlabelled_and_tracks_participants():
    from alanet.train.windows import make_windows

    ds = toy_dataset()
    rec = ds.recordings[0]
    lab = rec.labels["label"].copy()
    lab[:60] = -1
    ds2 = Dataset((Recording(rec.participant, rec.name, rec.values, rec.schema, {"label": lab}, rec.segment),)
                  + ds.recordings[1:], ds.schema, ds.label_names, "csv", "toy")
    full = make_windows(ds, "label", WindowSpec(30, 15))
    part = make_windows(ds2, "label", WindowSpec(30, 15))
    assert len(part) == len(full) - 3  # the first 60-frame segment held 3 windows
    assert set(full.participant.tolist()) == set(ds.participants)
    assert full.x.shape[1:] == (30, 6)


def test_window_longer_than_every_recording_is_input_error():
    from alanet.train.windows import make_windows

    with pytest.raises(InputError, match="longer than every recording"):
        make_windows(toy_dataset(), "label", WindowSpec(10_000, 15))
    with pytest.raises(InputError, match="task 'pain'"):
        make_windows(toy_dataset(), "pain", WindowSpec(30, 15))


def test_augment_balances_minority_and_keeps_padding_zero():
    from alanet.train.augment import augment

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 20, 6)).astype(np.float32)
    mask = np.ones((40, 20), bool)
    mask[:, 15:] = False
    x[~mask] = 0
    y = np.array([0] * 32 + [1] * 8)
    xa, ma, ya = augment(x, mask, y, [[0, 1], [2, 3], [4, 5]], 2, 1, rng, balance=True)
    counts = np.bincount(ya)
    assert counts[0] == 64 and counts[1] == 8 + 8 * 4  # minority gets 4x the copies
    assert np.all(xa[~ma] == 0)
    assert not np.allclose(np.sort(xa.ravel()), np.sort(np.concatenate([x] * (len(ya) // 40 + 1)).ravel()[: xa.size]))


def test_normaliser_uses_training_participants_only():
    from alanet.train.windows import fit_normalizer

    ds = toy_dataset()
    norm = fit_normalizer(ds, ["S00", "S01"])
    frames = np.concatenate([r.values for r in ds.recordings if r.participant in ("S00", "S01")])
    np.testing.assert_allclose(norm.mean, frames.mean(axis=0), rtol=1e-5, atol=1e-6)
    other = fit_normalizer(ds, ["S02", "S03"])
    assert not np.allclose(norm.mean, other.mean)


def test_per_wearer_training_windows_are_the_gateways():
    """normalise_windows in per-wearer mode gives each window its recording's running
    statistics at the window's last frame (as the gateway does per wearer); padded frames stay 0."""
    from alanet.device.windowing import WindowSpec
    from alanet.train.windows import fit_normalizer, make_windows, normalise, normalise_windows

    ds = toy_dataset()
    tw = make_windows(ds, "label", WindowSpec(30, 10))
    norm = fit_normalizer(ds, ["S00", "S01"], prior_frames=50.0)
    assert norm.per_wearer
    idx = np.arange(len(tw))
    x = normalise_windows(tw, idx, ds, norm)
    assert np.all(x[~tw.mask] == 0)
    assert not np.allclose(x, normalise(tw.x, tw.mask, norm))
    for i in np.flatnonzero(tw.mask.all(axis=1))[:5]:
        rec = ds.recordings[int(tw.recording[i])]
        expect = norm.stream_windows(rec.values, [int(tw.start[i])], 30)[0]
        np.testing.assert_allclose(x[i], expect, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(normalise_windows(tw, idx, ds, norm.with_prior(0)), normalise(tw.x, tw.mask, norm))


def test_generic_schema_toy_is_valid():
    s = generic_schema(["a", "b"], 50.0, {"g": ["a", "b"]})
    assert s.groups == {"g": [0, 1]}


def test_every_augmentation_keeps_padding_zero_and_class_counts_without_balance():
    from alanet.train.augment import KINDS, augment, time_warp

    rng = np.random.default_rng(1)
    x = rng.normal(size=(12, 20, 6)).astype(np.float32)
    mask = np.ones((12, 20), bool)
    mask[:4, 11:] = False
    x[~mask] = 0
    y = np.array([0] * 9 + [1] * 3)
    for kind in KINDS:
        xa, ma, ya = augment(x, mask, y, [[0, 1], [2, 3], [4, 5]], 2, 2, rng, balance=False, kinds=(kind,))
        assert np.bincount(ya).tolist() == [27, 9]  # every window 2 copies: balance is the loss's business
        assert np.all(xa[~ma] == 0), kind
        assert np.array_equal(np.sort(ma.sum(1)), np.sort(np.tile(mask.sum(1), 3)))  # masks unchanged
    with pytest.raises(ValueError, match="augmentation kinds"):
        augment(x, mask, y, [[0]], 2, 1, rng, kinds=("nope",))
    ramp = np.tile(np.arange(20, dtype=np.float32)[:, None], (1, 2))
    fast = time_warp(ramp, 20, 1.25, np.random.default_rng(0))
    steps = np.diff(fast[:, 0])
    assert np.all(steps >= 0) and fast[:, 0].max() <= 19  # replayed faster, held at the edges
    assert np.median(steps) == pytest.approx(1.25)
