"""`alanet train` / `alanet evaluate` / `alanet compare` end to end: run directories
on synthetic EmoPain data and on a generic CSV dataset, and every bad-input case."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli


@pytest.fixture(autouse=True)
def _eager(monkeypatch):
    monkeypatch.setenv("ALANET_EAGER", "1")  # tiny data: skip graph tracing


@pytest.fixture(scope="module")
def emopain_dir(tmp_path_factory) -> Path:
    from alanet.train.data.synthetic import write_synthetic_dataset

    out = tmp_path_factory.mktemp("emo") / "syn"
    write_synthetic_dataset(out, patients=3, controls=2, seed=1, duration_s=20)
    return out


def write_csv_dataset(root: Path, participants: int = 4, channels: int = 5, frames: int = 240) -> Path:
    """A generic CSV dataset: ``channels`` channels, string classes calm / guarded / tense."""
    root.mkdir(parents=True, exist_ok=True)
    names = ["calm", "guarded", "tense"]
    rng = np.random.default_rng(0)
    t = np.arange(frames) / 50.0
    for p in range(participants):
        lab = (np.arange(frames) // 40 + p) % 3
        x = rng.normal(0, 0.2, (frames, channels))
        x += ((1 + lab) * np.sin(2 * np.pi * t))[:, None]
        lines = [",".join([f"ch{i}" for i in range(channels)] + ["label"])]
        lines += [",".join([f"{v:.5f}" for v in row] + [names[c]]) for row, c in zip(x, lab)]
        (root / f"p{p}_session.csv").write_text("\n".join(lines) + "\n")
    (root / "dataset.json").write_text(json.dumps({"sample_rate_hz": 50, "label_names": names}))
    return root


def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(data), "--out", str(out), "--quiet", *extra]


def test_alanet_holdout_run_directory_is_self_describing(emopain_dir, tmp_path):
    from alanet.train.commands import evaluate_run
    from alanet.train.data.loading import load_dataset
    from alanet.train.models import model_inputs
    from alanet.train.rundir import load_run
    from alanet.train.windows import fit_normalizer

    out = tmp_path / "run"
    r = run_cli(*train_args(emopain_dir, out, "--task", "protective", "--model", "alanet", "--eval", "holdout",
                            "--test-participants", "P01,C01", "--window", "40", "--stride", "40", "--epochs", "1",
                            "--ae-epochs", "1", "--hparam", "units=4"))
    assert r.returncode == 0, r.stderr
    for name in ("config.json", "normalization.json", "model.keras", "parity_windows.npz", "metrics.json",
                 "report.md", "plots/learning_curves.png", "plots/confusion_matrix.png",
                 "plots/temporal_attention.png", "plots/body_attention.png"):
        assert (out / name).is_file(), name
    assert not list(tmp_path.glob(".*partial"))
    run = load_run(out)
    cfg = run.config
    assert cfg["model"] == "alanet" and cfg["task"] == "protective" and cfg["eval"] == "holdout"
    assert cfg["label_names"] == ["normal", "protective"] and cfg["test_participants"] == ["C01", "P01"]
    assert cfg["window"] == 40 and cfg["stride"] == 40 and cfg["hparams"]["units"] == 4
    assert cfg["schema"]["channels"][0]["name"] == "left_full_body_flexion" and len(cfg["data_fingerprint"]) == 64
    assert "tensorflow" in cfg["versions"] and cfg["format"] == "emopain"
    ds = load_dataset(emopain_dir)
    expect = fit_normalizer(ds, ["C02", "P02", "P03"])  # training participants only
    np.testing.assert_allclose(run.normalizer.mean, expect.mean, rtol=1e-6)
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("accuracy", "macro_f1", "mcc", "per_class_f1", "confusion_matrix", "train_seconds", "n_params",
                "roc_auc", "pr_auc", "decision"):
        assert key in metrics
    par = run.parity_windows()
    assert par["calib_x"].shape[1:] == (40, 30) and par["calib_x"].dtype == np.float32
    assert par["test_x"].shape[0] == par["test_y"].shape[0] > 0
    # The converter's route: an unrolled, mask-free, batch-1 copy reproduces the model.
    trained = run.load_model()
    infer = run.build_inference_model(unroll=True, masking=False, batch_size=1)
    x = par["test_x"][:3]
    np.testing.assert_allclose(np.concatenate([infer(x[i:i + 1]).numpy() for i in range(3)]),
                               trained.predict(model_inputs(trained, x), verbose=0), atol=1e-5)
    # The calibrated decision rule is part of the run (chosen on validation participants only).
    assert "decision" in cfg and cfg["decision"] == metrics["decision"]
    # Per-wearer statistics (the default here), no warm-up unless asked: the alert rule chosen again on
    # the kept run's validation streams is the one training chose; with a warm-up it is chosen with it.
    from alanet.errors import InputError
    from alanet.train.recalibrate import recalibrate_alert_rule

    assert cfg["normalization"] == "per-wearer" and "warmup_s" not in cfg["decision"]
    assert cfg["warmup_seconds"] == 0.0 and cfg["window_label"] == "majority"
    assert recalibrate_alert_rule(out, ds) == cfg["decision"]
    held = recalibrate_alert_rule(out, ds, warmup_s=30.0)
    assert held["warmup_s"] == 30.0 and "30 s warm-up" in held["calibration"]
    assert held["window_threshold"] == cfg["decision"]["window_threshold"]
    with pytest.raises(InputError, match="not the data the run"):
        recalibrate_alert_rule(out, ds.by_participant(["C01", "P01"]))
    # Re-scoring on the same data agrees with the stored confusion matrix total.
    again = evaluate_run(out, ds.by_participant(["C01", "P01"]))
    assert again["confusion_matrix"] == metrics["confusion_matrix"]
    # An existing run directory is refused without --force and kept intact.
    r = run_cli(*train_args(emopain_dir, out, "--task", "protective", "--model", "knn", "--window", "40"))
    assert r.returncode == 2 and "already exists" in r.stderr
    assert load_run(out).model_name == "alanet"


def test_csv_loso_string_classes_parallel_then_evaluate_and_compare(tmp_path):
    data = write_csv_dataset(tmp_path / "csv")
    out = tmp_path / "knn"
    r = run_cli(*train_args(data, out, "--task", "label", "--model", "knn", "--eval", "loso", "--window", "40",
                            "--stride", "40", "--jobs", "2"))
    assert r.returncode == 0, r.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert [f["test_participants"] for f in m["folds"]] == [["p0"], ["p1"], ["p2"], ["p3"]]
    assert m["accuracy"] == pytest.approx(np.mean([f["accuracy"] for f in m["folds"]]))
    assert m["accuracy"] > 0.8
    assert (out / "model.pkl").is_file() and (out / "report.md").is_file()
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["label_names"] == ["calm", "guarded", "tense"] and len(cfg["schema"]["channels"]) == 5

    from alanet.errors import InputError
    from alanet.train.rundir import load_run

    with pytest.raises(InputError, match="scikit-learn"):
        load_run(out).load_model()

    r = run_cli("evaluate", str(out), "--data", str(data))
    assert r.returncode == 0, r.stderr
    scored = json.loads(r.stdout)
    assert scored["n_windows"] > 0 and 0 <= scored["accuracy"] <= 1

    r = run_cli("compare", str(out), str(out))
    assert r.returncode == 0 and r.stdout.count("| knn | label | loso, pooled |") == 2


def test_newest_stride_labels_are_trained_recorded_and_evaluated(tmp_path):
    from alanet.device.windowing import WindowSpec
    from alanet.train.data.loading import load_dataset
    from alanet.train.rundir import load_run
    from alanet.train.windows import make_windows

    data = write_csv_dataset(tmp_path / "csv")
    # the label changes every 40 frames, so windows of 40 every 10 frames differ by label rule
    ds = load_dataset(data, None)
    newest, majority = (np.bincount(make_windows(ds, "label", WindowSpec(40, 10, label=k)).y, minlength=3).tolist()
                        for k in ("newest", "majority"))
    assert newest != majority
    out = tmp_path / "knn"
    r = run_cli(*train_args(data, out, "--task", "label", "--model", "knn", "--window", "40", "--stride", "10",
                            "--eval", "loso", "--window-label", "newest"))
    assert r.returncode == 0, r.stderr
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["window_label"] == "newest" and load_run(out).window_label == "newest"
    assert "labelled by their newest stride" in (out / "report.md").read_text()
    assert np.sum(json.loads((out / "metrics.json").read_text())["confusion_matrix"], axis=1).tolist() == newest

    def evaluated() -> list[int]:
        r = run_cli("evaluate", str(out), "--data", str(data))
        assert r.returncode == 0, r.stderr
        return np.sum(json.loads(r.stdout)["confusion_matrix"], axis=1).tolist()

    assert evaluated() == newest
    # A run written before the choice existed is a majority run; a bad value is an input error naming the field.
    del cfg["window_label"]
    (out / "config.json").write_text(json.dumps(cfg))
    assert load_run(out).window_label == "majority" and evaluated() == majority
    (out / "config.json").write_text(json.dumps({**cfg, "window_label": "last"}))
    r = run_cli("evaluate", str(out), "--data", str(data))
    assert r.returncode == 2 and "config.json: field window_label: must be one of majority, newest" in r.stderr
    # `alanet compare` names the label rule of a run not labelled by majority (its F1 is against other labels)
    (out / "config.json").write_text(json.dumps({**cfg, "window_label": "newest"}))
    r = run_cli("compare", str(out))
    assert r.returncode == 0 and "| knn | label (newest) | loso, pooled |" in r.stdout


def test_neural_model_on_csv_with_other_channel_count(tmp_path):
    data = write_csv_dataset(tmp_path / "csv", participants=3, channels=7)
    out = tmp_path / "banet"
    r = run_cli(*train_args(data, out, "--task", "label", "--model", "banet", "--test-participants", "p2",
                            "--window", "40", "--stride", "40", "--epochs", "1", "--hparam", "layers=1",
                            "--hparam", "units=2", "--hparam", "fold_parts=true"))
    assert r.returncode == 0, r.stderr
    cfg = json.loads((out / "config.json").read_text())
    assert len(cfg["groups"]) == 7  # every channel its own body part
    assert (out / "plots/body_attention.png").is_file()
    from alanet.train.rundir import load_run

    run = load_run(out)  # the folded variant's layers load back
    x = run.parity_windows()["test_x"][:2]
    from alanet.train.models import model_inputs

    copy, trained = run.build_inference_model(unroll=False, masking=True, batch_size=None), run.load_model()
    np.testing.assert_allclose(copy.predict(model_inputs(copy, x), verbose=0),
                               trained.predict(model_inputs(trained, x), verbose=0), atol=1e-6)


@pytest.mark.parametrize("extra, message", [
    (["--task", "label", "--model", "resnet"], "unknown model"),
    (["--task", "pain", "--model", "knn"], "unknown task"),
    (["--task", "label", "--model", "knn", "--eval", "kfold"], "unknown evaluation"),
    (["--task", "label", "--model", "knn", "--window", "100000"], "longer than every recording"),
    (["--task", "label", "--model", "knn", "--eval", "loso", "--data-participants", "2"], "at least 3 participants"),
    (["--task", "label", "--model", "knn", "--only-class-in-test"], "no training windows"),
    (["--task", "label", "--model", "knn", "--hparam", "depth=3"], "unknown hyperparameter"),
])
def test_bad_input_exits_2_and_writes_nothing(tmp_path, extra, message):
    n = 2 if "--data-participants" in extra else 3
    data = write_csv_dataset(tmp_path / "csv", participants=n)
    if "--only-class-in-test" in extra:
        # "tense" only in p2's recording, and p2 is the test participant.
        for p in range(n):
            f = tmp_path / "csv" / f"p{p}_session.csv"
            text = f.read_text()
            f.write_text(text.replace(",tense", ",calm") if p != 2 else text)
        extra = [e for e in extra if e != "--only-class-in-test"] + ["--test-participants", "p2", "--window", "40"]
    extra = [e for e in extra if e not in ("--data-participants", "2")]
    out = tmp_path / "run"
    r = run_cli(*train_args(data, out, *extra))
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert message in r.stderr and r.stderr.startswith("alanet train: error:")
    assert not out.exists() and not list(tmp_path.glob(".run*"))


def test_evaluate_rejects_a_folder_that_is_not_a_run(tmp_path):
    r = run_cli("evaluate", str(tmp_path), "--data", str(tmp_path))
    assert r.returncode == 2 and "not a run directory" in r.stderr


def test_window_label_choices_are_the_windowing_ones():
    from alanet.device.windowing import DEFAULT_WINDOW_LABEL, WINDOW_LABELS

    r = run_cli("train", "--help")
    assert r.returncode == 0 and f"--window-label {{{','.join(WINDOW_LABELS)}}}" in r.stdout
    assert f"{DEFAULT_WINDOW_LABEL} (default" in " ".join(r.stdout.split())
