"""Synthetic EmoPain-format sessions: format, energies, determinism, behaviour balance, atomic writes."""

from __future__ import annotations

import numpy as np
import pytest

from alanet.device.features import energy_from_angles
from alanet.device.windowing import WindowSpec, segment_windows
from alanet.train.data.check import summarize
from alanet.train.data.emopain import load_emopain, read_bd
from alanet.train.data.synthetic import (WALK, count_episodes, draw_subject, synth_bd, synth_session,
                                         write_synthetic_dataset)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    paths = write_synthetic_dataset(out, patients=2, controls=1, seed=7, duration_s=40)
    return out, paths


def test_files_and_loader(small):
    out, paths = small
    assert sorted(p.name for p in out.iterdir()) == ["C01D.mat", "C01N.mat", "P01D.mat", "P01N.mat", "P02D.mat",
                                                     "P02N.mat"]
    assert sorted(paths) == sorted(out.iterdir())
    ds = load_emopain(out)
    assert ds.participants == ["C01", "P01", "P02"]
    assert all(r.n_frames == 40 * 60 for r in ds.recordings)
    pain = {r.participant: set(r.labels["pain"].tolist()) for r in ds.recordings}
    assert pain == {"C01": {0}, "P01": {1}, "P02": {2}}
    s = summarize(ds)
    assert s.frames == 6 * 2400 and s.recordings == 6 and len(s.channels) == 30
    assert sum(s.class_balance["protective"].values()) == s.frames
    # windows cut per exercise instance exist for every recording
    for i, r in enumerate(ds.recordings):
        assert len(segment_windows(r.values, r.labels["protective"], WindowSpec(), r.segment, i)) > 3


def test_energies_in_file_equal_recomputed(small):
    out, _ = small
    for r in load_emopain(out).recordings:
        np.testing.assert_array_equal(r.values[:, 13:26], energy_from_angles(r.values[:, :13], 60.0))
        assert r.values[:, 13:26].max() > 0.1  # the body actually moves


def test_plausible_ranges_and_exercises(small):
    out, _ = small
    bd = np.concatenate([read_bd(p) for p in sorted(out.iterdir())])
    angles, emg = bd[:, :13], bd[:, 26:30]
    assert 0.0 < angles[:, :8].min() and angles.max() < 3.6  # interior angles, rad
    assert (emg >= 0).all() and 0.02 < emg.mean() < 5
    types = set(np.unique(bd[:, 30]).astype(int).tolist())
    assert 0 in types and len(types - {0}) >= 5


def test_deterministic_per_seed(tmp_path):
    a = write_synthetic_dataset(tmp_path / "a", patients=1, controls=1, seed=3, duration_s=20)
    b = write_synthetic_dataset(tmp_path / "b", patients=1, controls=1, seed=3, duration_s=20)
    c = write_synthetic_dataset(tmp_path / "c", patients=1, controls=1, seed=4, duration_s=20)
    for pa, pb, pc in zip(a, b, c):
        np.testing.assert_array_equal(read_bd(pa), read_bd(pb))
        assert not np.array_equal(read_bd(pa)[:, :30], read_bd(pc)[:, :30])
    np.testing.assert_array_equal(synth_session(seed=5, duration_s=60), synth_session(seed=5, duration_s=60))


def test_protective_balance_patients_vs_controls():
    pat, ctl = [], []
    for i in range(8):
        rng = np.random.default_rng(100 + i)
        pat.append(synth_bd(rng, patient=True, pain_level=1 + i % 2, duration_s=120, difficult=bool(i % 2))[:, 32])
        ctl.append(synth_bd(rng, patient=False, pain_level=0, duration_s=120, difficult=bool(i % 2))[:, 32])
    frac = float(np.mean(np.concatenate(pat)))
    assert 0.10 < frac < 0.30, frac  # about the real ~19 %
    assert float(np.mean(np.concatenate(ctl))) < 0.04
    assert set(np.unique(np.concatenate(pat)).tolist()) == {0.0, 1.0}


def test_protective_repetitions_move_differently():
    """One bend, healthy vs guarded (strength 1, no pause or catch): the guarded trunk moves
    less and slower, the joints move en bloc (the knees no longer lead), and a braced
    repetition's sEMG drive starts before the movement."""
    from alanet.train.data.synthetic import (BEND, BEND_D, LAGS, TRUNK, Behaviour, _rep, _Session, _sequencing,
                                             draw_subject)

    subj = draw_subject(np.random.default_rng(0), patient=True, pain_level=1)
    base = np.zeros(13)

    def bend(b):
        ses = _Session(60.0, base)
        _rep(ses, np.random.default_rng(1), base, BEND_D, BEND, 1.0, b, subj, hold_s=1.0, go_s=1.5)
        return np.concatenate(ses.angles), np.concatenate(ses.brace)

    healthy, _ = bend(Behaviour())
    guarded, brace = bend(Behaviour(strength=1.0, brace=True))
    trunk_range = lambda a: float(np.ptp(a[:, TRUNK], axis=0).mean())  # noqa: E731
    assert trunk_range(guarded) < 0.9 * trunk_range(healthy)
    assert len(guarded) > len(healthy)  # slower
    assert np.any(LAGS[BEND] > 0) and np.all(_sequencing(BEND, subj, Behaviour(strength=1.0)) == 0)
    moving = np.flatnonzero(np.abs(np.diff(guarded[:, TRUNK], axis=0)).sum(axis=1) > 1e-9)
    assert brace[: moving[0]].max() > 0  # bracing builds up before the trunk moves


def test_subjects_differ():
    rng = np.random.default_rng(1)
    subs = [draw_subject(rng, patient=True, pain_level=1) for _ in range(5)]
    assert len({round(s.amp, 4) for s in subs}) == 5 and len({round(s.speed, 4) for s in subs}) == 5


def test_synth_session_has_several_episodes():
    for seed in range(3):
        bd = synth_session(seed=seed, duration_s=120)
        assert bd.shape == (7200, 33)
        assert count_episodes(bd[:, 32]) >= 3
    assert WALK == 8


def test_failure_leaves_no_files(tmp_path):
    calls = []

    def boom(path):
        calls.append(path)
        if len(calls) == 3:
            raise RuntimeError("disk full")

    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(RuntimeError):
        write_synthetic_dataset(tmp_path, patients=2, controls=0, seed=0, duration_s=5, progress=boom)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
