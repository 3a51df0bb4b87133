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
        refit = "refit" in fold.selection  # a refit also fits on the validation participants, after selection
        assert set(fold.seen_fit) <= set(fold.plan.fit) | (set(fold.plan.val) if refit else set())
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
    assert len(r.metrics["folds"]) == 5 and r.metrics["aggregation"] == "pooled"


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
    with pytest.raises(InputError, match="--normalization"):
        run_experiment(cfg("knn", normalization="per-session"), ds)
    with pytest.raises(InputError, match="--prior-seconds"):
        run_experiment(cfg("knn", normalization="per-wearer", prior_seconds=0.0), ds)
    with pytest.raises(InputError, match=r"--warmup-seconds must be a number >= 0 \(got -1"):
        run_experiment(cfg("knn", warmup_seconds=-1.0), ds)
    with pytest.raises(InputError, match="--window-label: window label must be one of majority, newest"):
        run_experiment(cfg("knn", window_label="last"), ds)
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


def test_training_masks_are_right_padded_and_come_from_padding(monkeypatch):
    """Every window reaching model.fit (so every batch) carries its padding mask,
    right-padded; frames zeroed by augmentation stay real (mask True)."""
    import keras

    seen = []
    fit = keras.Model.fit

    def spy(self, x=None, y=None, **kw):
        if isinstance(x, list) and len(x) == 2:
            seen.append((np.asarray(x[0]), np.asarray(x[1])))
        return fit(self, x, y, **kw)

    monkeypatch.setattr(keras.Model, "fit", spy)
    hp = {**TINY["alanet"], "augment_copies": 3}
    run_experiment(cfg("alanet", window=80, stride=40, test_participants=("S02",), hparams=hp), toy_dataset(3))
    assert len(seen) >= 2  # the autoencoder and the classifier
    zeroed_real = 0
    for x, mask in seen:
        assert mask.dtype == bool and mask.shape == x.shape[:2]
        assert not np.any(~mask[:, :-1] & mask[:, 1:]), "a real frame after padding"
        assert (~mask).any() and np.all(x[~mask] == 0)
        zeroed_real += int(np.sum(np.all(x == 0, axis=2) & mask))
    assert zeroed_real > 0  # augmentation zeroed real frames, and the mask kept them


def test_fit_refuses_a_mask_that_is_not_right_padded():
    from alanet.train.fit import check_right_padded

    check_right_padded(np.array([[True, True, False], [True, True, True]]))
    with pytest.raises(ValueError, match="window 1: .*not right-padded"):
        check_right_padded(np.array([[True, True, False], [True, False, True]]))


def test_calibration_uses_validation_participants_only(monkeypatch):
    import alanet.train.experiment as ex
    from alanet.device.decisions import window_labels

    calls = []
    real = ex.calibrate

    def spy(p_val, y_val, *a, **kw):
        calls.append((len(y_val), kw.get("where")))
        return real(p_val, y_val, *a, **kw)

    monkeypatch.setattr(ex, "calibrate", spy)
    ds = toy_dataset(participants=6)
    r = run_experiment(cfg("rf", test_participants=("S05",)), ds)
    fold = r.folds[0]
    tw = make_windows(ds, "label", WindowSpec(30, 15))
    assert fold.plan.val and "S05" not in fold.plan.val
    assert calls == [(len(tw.of(fold.plan.val)), f"validation participants {','.join(fold.plan.val)}")]
    assert "window_threshold" in r.decision and r.decision == fold.decision
    np.testing.assert_array_equal(fold.y_pred, window_labels(fold.proba, fold.decision))


def test_stream_calibration_uses_validation_participants_only(monkeypatch):
    import alanet.train.experiment as ex

    seen = []
    real = ex.validation_streams

    def spy(dataset, cfg_, val_ids, norm):
        seen.append(tuple(val_ids))
        return real(dataset, cfg_, val_ids, norm)

    monkeypatch.setattr(ex, "validation_streams", spy)
    ds = toy_dataset(participants=6)
    r = run_experiment(cfg("rf", test_participants=("S05",)), ds)
    fold = r.folds[0]
    assert seen and all(ids == tuple(fold.plan.val) for ids in seen) and fold.plan.val
    assert all("S05" not in ids for ids in seen)
    assert "warmup_s" not in r.decision  # population statistics: no warm-up


def test_class_weights_are_independent_of_augmentation():
    from alanet.train.fit import class_weights, fit_model

    np.testing.assert_allclose(class_weights(np.array([0, 0, 0, 1]), 2), [4 / 6, 2.0])
    np.testing.assert_allclose(class_weights(np.array([0, 0, 0, 1]), 2, "none"), [1.0, 1.0])
    x = np.random.default_rng(0).normal(size=(8, 5, 6)).astype(np.float32)
    y = np.array([0, 0, 0, 0, 0, 0, 1, 1])
    r = fit_model("rf", {"n_estimators": 5, "max_depth": None}, x=x, mask=np.ones((8, 5), bool), y=y, x_val=None,
                  y_val=None, groups=[[0, 1], [2, 3], [4, 5]], n_classes=2)
    assert r.class_weights == pytest.approx([8 / 12, 2.0])  # balanced, with no augmentation at all
    r = fit_model("knn", {"n_neighbors": 1}, x=x, mask=np.ones((8, 5), bool), y=y, x_val=None, y_val=None,
                  groups=[[0, 1], [2, 3], [4, 5]], n_classes=2)
    assert r.class_weights == [1.0, 1.0]  # k-NN cannot weight classes: it reports the prior it saw


def test_explicit_epochs_apply_to_every_stage():
    hp = ExperimentConfig(model="alanet", task="label", epochs=1).resolved_hparams()
    assert (hp["epochs"], hp["ae_epochs"], hp["finetune_epochs"], hp["min_steps"], hp["ae_min_steps"]) == (1, 1, 1, 0, 0)
    hp = ExperimentConfig(model="alanet", task="label", epochs=1, ae_epochs=3).resolved_hparams()
    assert hp["ae_epochs"] == 3 and hp["epochs"] == 1
    assert hp["refit"] == "never"  # an explicit budget is taken literally: no automatic refit
    hp = ExperimentConfig(model="alanet", task="label", epochs=1, hparams={"refit": "auto"}).resolved_hparams()
    assert hp["refit"] == "auto"
    hp = ExperimentConfig(model="alanet", task="label").resolved_hparams()
    assert hp["min_steps"] > 0 and hp["ae_min_steps"] > 0 and hp["refit"] == "auto"


def test_loso_headline_is_pooled_over_present_classes():
    ds = toy_dataset(participants=4)
    r = run_experiment(cfg("knn", "loso", final=False), ds)
    m = r.metrics
    assert m["aggregation"] == "pooled" and len(m["folds"]) == 4 and "mean_of_folds" in m
    assert m["n_windows"] == sum(f.metrics["n_windows"] for f in r.folds)
    assert m["participant_vote"]["n_participants"] == 4
    from sklearn.metrics import f1_score

    for f in r.folds:  # a fold scores only the classes its participant has
        present = sorted(set(f.y_true.tolist()))
        assert f.metrics["classes_present"] == present
        assert f.metrics["macro_f1"] == pytest.approx(f1_score(f.y_true, f.y_pred, labels=present, average="macro"))
    y = np.concatenate([f.y_true for f in r.folds])
    pred = np.concatenate([f.y_pred for f in r.folds])
    assert m["macro_f1"] == pytest.approx(f1_score(y, pred, labels=sorted(set(y.tolist())), average="macro"))
    assert m["accuracy"] == pytest.approx(float(np.mean(y == pred)))


def test_refit_budget_is_the_selected_number_of_steps():
    from alanet.train.experiment import refit_hparams, wants_refit

    from alanet.train.fit import plan_epochs

    hp = {"epochs": 60, "ae_epochs": 10, "batch": 40, "ae_batch": 40, "min_steps": 600, "ae_min_steps": 300,
          "refit": "auto"}
    for n_before, n_after in ((64, 80), (100, 125), (900, 1125)):
        b_ae, _ = plan_epochs(n_before, 40, 10, 300)
        b, _ = plan_epochs(n_before, 40, 60, 600)
        sel = {"autoencoder": {"best_epoch": 20, "batch": b_ae}, "classifier": {"best_epoch": 30, "batch": b}}
        out = refit_hparams(hp, sel, n_before, n_after)
        for stage, key, bkey in (("autoencoder", "ae_epochs", "ae_batch"), ("classifier", "epochs", "batch")):
            chosen = sel[stage]["best_epoch"] * -(-n_before // sel[stage]["batch"])
            # epochs of the larger set at the selected batch: the selected number of steps
            assert out[key] == max(1, round(chosen / -(-n_after // sel[stage]["batch"])))
            batch, epochs = plan_epochs(n_after, out[bkey], out[key], out["min_steps"])
            steps = epochs * -(-n_after // batch)
            assert 0.75 * chosen <= steps <= chosen * 1.1, (n_before, stage, steps, chosen)  # re-planned batch
    assert out["min_steps"] == out["ae_min_steps"] == 0 and out["refit"] == "never"
    assert wants_refit("alanet", hp, 500) and not wants_refit("alanet", hp, 5000)
    assert not wants_refit("rf", hp, 10) and not wants_refit("alanet", {**hp, "refit": "never"}, 10)
    assert wants_refit("alanet", {**hp, "refit": "always"}, 5000)


def test_whole_batches_tops_up_with_repeats_of_real_windows():
    from alanet.train.fit import whole_batches

    x = np.arange(10, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    inputs = {"window": x, "mask": np.ones((10, 3), bool)}
    y, w = np.arange(10), np.linspace(0.5, 1.5, 10)
    np.random.seed(0)
    xi, yi, wi = whole_batches(inputs, y, w, batch=4, steps=3)
    assert len(yi) == len(wi) == len(xi["window"]) == len(xi["mask"]) == 12
    assert np.array_equal(yi[:10], y) and set(yi[10:]) <= set(y)
    assert np.array_equal(xi["window"][:, 0], yi) and np.allclose(wi, w[yi])  # rows stay aligned
    same = whole_batches(inputs, y, w, batch=5, steps=2)
    assert same[0] is inputs  # already whole: untouched


def test_refit_trains_again_on_fitting_and_validation_participants_never_test():
    ds = toy_dataset(participants=4)
    r = run_experiment(cfg("stacked-lstm", test_participants=("S02",), hparams={**TINY["stacked-lstm"], "refit": "always"}),
                       ds)
    (fold,) = r.folds
    assert "refit" in fold.selection and fold.selection["refit"]["windows"] > 0
    assert set(fold.plan.val) <= set(fold.seen_fit)  # the refit saw the validation participants ...
    assert "S02" not in fold.seen_fit and "S02" not in fold.seen_val  # ... and never the test one
    assert_no_leak(r)


def test_per_wearer_normalisation_reaches_every_window_of_the_run():
    """--normalization per-wearer: the run's normaliser carries the prior (seconds × rate),
    and the parity windows a bundle is checked on are normalised the way the gateway does."""
    from alanet.train.windows import normalise_windows

    ds = toy_dataset(participants=3)
    r = run_experiment(cfg("rf", test_participants=("S02",), normalization="per-wearer", prior_seconds=0.5,
                           warmup_seconds=0.5), ds)
    assert r.normalizer.per_wearer and r.normalizer.prior_frames == 30.0
    # --warmup-seconds: no alert from a window with less of the wearer's stream behind it; the rule was chosen so
    assert r.decision["warmup_s"] == 0.5 and "0.5 s warm-up" in r.decision["calibration"]
    tw = make_windows(ds, "label", WindowSpec(30, 15))
    full = tw.mask.all(axis=1)
    held = tw.of(("S02",))
    held = held[full[held]]
    x = normalise_windows(tw, held, ds, r.normalizer)
    assert any(np.allclose(r.test_x[0], w, atol=1e-6) for w in x)
    assert not any(np.allclose(r.test_x[0], w, atol=1e-3) for w in normalise_windows(tw, held, ds, r.normalizer.with_prior(0)))
    # the default: per-wearer for protective behaviour in EmoPain-format sessions, population
    # for pain level and for generic CSV cases
    import dataclasses

    assert cfg("rf", task="protective").normalization_for(ds) == "population"
    emo = dataclasses.replace(ds, format="emopain")
    assert cfg("rf", task="protective").normalization_for(emo) == "per-wearer"
    assert cfg("rf", task="protective").prior_frames(emo) == 3600.0
    assert cfg("rf", task="pain").normalization_for(emo) == "population" and cfg("rf", task="pain").prior_frames(emo) == 0
    assert cfg("rf", task="protective", normalization="population").prior_frames(emo) == 0.0
