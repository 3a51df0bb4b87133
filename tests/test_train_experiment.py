"""Experiments in memory: every model in a tiny configuration, hold-out and LOSO,
no leakage of the held-out participant, parallel folds, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from alanet.errors import InputError
from alanet.train.experiment import ExperimentConfig, inner_split, run_experiment
from alanet.train.windows import make_windows
from alanet.device.windowing import WindowSpec
from test_train_toy import toy_dataset

TINY = {"alanet": {"units": 4}, "alanet-parts": {"units": 2}, "banet": {"units": 3, "layers": 1},
        "stacked-lstm": {"units": 4, "layers": 1}, "knn": {}, "svm": {}, "rf": {"n_estimators": 10}}


@pytest.fixture(autouse=True)
def _eager(monkeypatch):
    import alanet.train.fit as fit

    monkeypatch.setattr(fit, "EAGER", True)  # tiny data: skip graph tracing
    monkeypatch.setenv("ALANET_EAGER", "1")  # and in worker processes


def cfg(model: str, ev: str = "holdout", **kw) -> ExperimentConfig:
    base = dict(model=model, task="label", eval=ev, window=30, stride=15, epochs=1, ae_epochs=1,
                hparams=TINY[model], progress=False)
    base.update(kw)
    return ExperimentConfig(**base)


def assert_no_leak(result):
    for fold in result.folds:
        test = set(fold.plan.test)
        assert test, "every evaluated fold has a test participant"
        assert not test & set(fold.seen_fit), f"fold {test} fitted on its test participant"
        assert not test & set(fold.seen_val), f"fold {test} selected the model on its test participant"
        assert not test & set(fold.plan.train)
        assert set(fold.seen_fit) <= set(fold.plan.fit)
        assert not set(fold.seen_val) & set(fold.plan.fit) or fold.val_by_windows


@pytest.mark.parametrize("model", ["alanet", "alanet-parts", "banet", "stacked-lstm", "svm", "rf"])
def test_every_model_holdout_tiny(model):
    ds = toy_dataset(participants=3)
    r = run_experiment(cfg(model, test_participants=("S02",)), ds)
    assert r.test_participants == ("S02",)
    assert_no_leak(r)
    m = r.metrics
    assert 0.0 <= m["accuracy"] <= 1.0 and m["n_params"] > 0 and m["train_seconds"] > 0
    assert sum(map(sum, m["confusion_matrix"])) == m["n_windows"] > 0
    assert r.final is not None
    assert r.calib_x.shape[1:] == (30, 6) and r.test_x.shape[0] == len(r.test_y)


def test_loso_never_sees_the_held_out_participant_and_learns():
    ds = toy_dataset(participants=5)
    r = run_experiment(cfg("knn", "loso", final=False), ds)
    assert [f.plan.test for f in r.folds] == [(p,) for p in ds.participants]
    assert_no_leak(r)
    for f in r.folds:
        assert f.seen_val, "model selection uses validation participants"
    assert r.metrics["accuracy"] > 0.9  # the toy task is easy: the pipeline really learns
    assert len(r.metrics["folds"]) == 5 and "pooled" in r.metrics


def test_loso_neural_folds_and_final_model():
    ds = toy_dataset(participants=3)
    r = run_experiment(cfg("stacked-lstm", "loso"), ds)
    assert_no_leak(r)
    assert len(r.folds) == 3 and r.final is not None and not r.test_participants
    # The deployable model's statistics cover every participant.
    assert r.normalizer.mean.shape == (6,)


def test_parallel_folds_match_sequential():
    ds = toy_dataset(participants=4)
    seq = run_experiment(cfg("rf", "loso", final=False), ds)
    par = run_experiment(cfg("rf", "loso", final=False, jobs=2), ds)
    assert [f.metrics["accuracy"] for f in par.folds] == [f.metrics["accuracy"] for f in seq.folds]
    assert_no_leak(par)


def test_inner_split_keeps_every_class_in_fit():
    ds = toy_dataset(participants=6, n_classes=3)
    tw = make_windows(ds, "label", WindowSpec(30, 15))
    fit, val = inner_split(tuple(ds.participants), tw, 0.2, 0)
    assert val and not set(fit) & set(val) and set(fit) | set(val) == set(ds.participants)
    assert set(np.unique(tw.y[tw.of(fit)])) == {0, 1, 2}


def test_bad_configurations_are_input_errors():
    ds = toy_dataset(participants=3)
    with pytest.raises(InputError, match="unknown model"):
        run_experiment(ExperimentConfig(model="resnet", task="label"), ds)
    with pytest.raises(InputError, match="unknown task"):
        run_experiment(cfg("knn", task="pain"), ds)
    with pytest.raises(InputError, match="at least 3 participants"):
        run_experiment(cfg("knn", "loso"), toy_dataset(participants=2))
    with pytest.raises(InputError, match="longer than every recording"):
        run_experiment(cfg("knn", window=5000), ds)
    with pytest.raises(InputError, match="not in the dataset"):
        run_experiment(cfg("knn", test_participants=("X9",)), ds)
    # Class 2 only in S02: holding S02 out leaves it without training windows.
    one = toy_dataset(participants=3)
    recs = list(one.recordings)
    r = recs[2]
    lab = r.labels["label"].copy()
    lab[:60] = 2
    from alanet.train.data.recording import Dataset, Recording

    recs[2] = Recording(r.participant, r.name, r.values, r.schema, {"label": lab}, r.segment)
    three = Dataset(tuple(recs), one.schema, {"label": ["a", "b", "c"]}, "csv", "toy")
    with pytest.raises(InputError, match="class 'c'.*no training windows"):
        run_experiment(cfg("knn", test_participants=("S02",)), three)


def test_mirrored_distribution_strategy_trains():
    r = run_experiment(cfg("stacked-lstm", distribute="mirrored", test_participants=("S02",)), toy_dataset(3))
    assert r.final is not None and 0 <= r.metrics["accuracy"] <= 1
