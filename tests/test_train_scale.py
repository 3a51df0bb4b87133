"""Training past one process: LOSO folds run as separate jobs and merged (`alanet train
--folds`, `alanet merge`), and a real two-worker MultiWorkerMirroredStrategy run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, free_port
from test_train_cli import write_csv_dataset

KNN = ("--task", "label", "--model", "knn", "--eval", "loso", "--window", "40", "--stride", "40", "--quiet")


def alanet(*args: str) -> int:
    """``alanet ARGS`` in this process (the classic models need no TensorFlow)."""
    from alanet.main import main

    return main([str(a) for a in args])


def refused(capsys, *args: str) -> str:
    """Run a command that must fail on bad input: exit 2 and one error line; returns it."""
    capsys.readouterr()
    assert alanet(*args) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith(f"alanet {args[0]}: error: "), err
    return err


def without_times(metrics: dict) -> dict:
    """metrics.json without the wall-clock entries (they differ between runs)."""
    drop = ("train_seconds", "train_seconds_std", "final_train_seconds")
    out = {k: v for k, v in metrics.items() if k not in drop}
    out["folds"] = [{k: v for k, v in f.items() if k not in drop} for f in metrics["folds"]]
    out["mean_of_folds"] = {k: v for k, v in metrics["mean_of_folds"].items() if k not in drop}
    return out


@pytest.fixture(scope="module")
def knn_runs(tmp_path_factory) -> Path:
    """One full LOSO run and the same experiment as three cluster jobs."""
    root = tmp_path_factory.mktemp("parts")
    data = write_csv_dataset(root / "csv")
    common = ("train", "--data", data, *KNN)
    assert alanet(*common, "--out", root / "full") == 0
    assert alanet(*common, "--folds", "p1,p0", "--out", root / "a") == 0
    assert alanet(*common, "--folds", "p2", "--out", root / "b") == 0
    assert alanet(*common, "--folds", "p3,final", "--out", root / "c") == 0
    return root


def test_fold_parts_merge_into_the_full_loso_run(knn_runs, capsys):
    r = knn_runs
    part = json.loads((r / "a" / "config.json").read_text())
    assert part["folds"] == ["p0", "p1"] and part["fold_participants"] == ["p0", "p1", "p2", "p3"]
    assert not part["final_model"] and not (r / "a" / "model.pkl").exists()
    assert json.loads((r / "c" / "config.json").read_text())["final_model"]

    assert alanet("merge", r / "c", r / "a", r / "b", "--out", r / "merged") == 0
    assert "4 folds from 3 runs, with the final model" in capsys.readouterr().out
    full, merged = (json.loads((r / d / "metrics.json").read_text()) for d in ("full", "merged"))
    assert without_times(merged) == without_times(full)  # pooled headline, vote, folds, final decision
    with np.load(r / "full" / "folds.npz") as a, np.load(r / "merged" / "folds.npz") as b:
        for key in ("participant", "y_true", "y_pred", "proba", "fold", "plans"):
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    cf, cm = (json.loads((r / d / "config.json").read_text()) for d in ("full", "merged"))
    assert cm.pop("merged_from") == [str(r / "c"), str(r / "a"), str(r / "b")]
    assert {k: v for k, v in cm.items() if k != "created"} == {k: v for k, v in cf.items() if k != "created"}
    for name in ("parity_windows.npz", "normalization.json"):
        assert (r / "merged" / name).read_bytes() == (r / "full" / name).read_bytes(), name
    report = (r / "merged" / "report.md").read_text()
    assert "Merged by `alanet merge` from 3 runs" in report
    row = next(line for line in report.splitlines() if "| loso, pooled |" in line)
    assert row.split("|")[:8] == next(line for line in (r / "full" / "report.md").read_text().splitlines()
                                      if "| loso, pooled |" in line).split("|")[:8]
    # The merged final model is the part's final model, which is the full run's.
    from alanet.train.models.classic import window_statistics
    from alanet.train.rundir import load_run

    x = load_run(r / "full").parity_windows()["test_x"]
    stats = window_statistics(x, np.ones(x.shape[:2], bool))
    p = {d: load_run(r / d).load_classic().predict_proba(stats) for d in ("full", "c", "merged")}
    np.testing.assert_array_equal(p["merged"], p["c"])
    np.testing.assert_array_equal(p["merged"], p["full"])

    capsys.readouterr()
    assert alanet("compare", r / "a", r / "merged") == 0
    table = capsys.readouterr().out
    assert "| knn | label | loso part (p0,p1), pooled |" in table and "| knn | label | loso, pooled |" in table

    # A partial merge is itself a part: merged again with the rest, it gives the same run.
    assert alanet("merge", r / "a", r / "b", "--partial", "--out", r / "ab") == 0
    assert "3 of 4 folds" in capsys.readouterr().out
    assert json.loads((r / "ab" / "config.json").read_text())["folds"] == ["p0", "p1", "p2"]
    assert "Part of a leave-one-subject-out run" in (r / "ab" / "report.md").read_text()
    assert alanet("merge", r / "ab", r / "c", "--out", r / "again") == 0
    again = json.loads((r / "again" / "metrics.json").read_text())
    assert without_times(again) == without_times(full)


def test_merge_refuses_parts_that_do_not_make_one_run(knn_runs, tmp_path, capsys):
    r = knn_runs
    out = tmp_path / "m"
    assert "folds missing: p3" in refused(capsys, "merge", r / "a", r / "b", "--out", out)
    assert "given twice" in refused(capsys, "merge", r / "a", r / "b", r / "c", f"{r / 'a'}/", "--out", out)
    assert "the fold holding out p0 is also in" in refused(capsys, "merge", r / "full", r / "a", "--out", out)
    common = ("train", "--data", r / "csv", *KNN)
    assert alanet(*common, "--folds", "final", "--out", tmp_path / "final") == 0
    assert "a final model is also in" in refused(capsys, "merge", r / "a", r / "b", r / "c", tmp_path / "final",
                                                "--out", out)
    assert "nothing to pool" in refused(capsys, "merge", tmp_path / "final", "--partial", "--out", out)
    # Other settings: another seed, or a hyperparameter.
    assert alanet(*common, "--folds", "p3", "--seed", "5", "--out", tmp_path / "seed5") == 0
    assert "seed differs" in refused(capsys, "merge", r / "a", r / "b", tmp_path / "seed5", "--out", out)
    assert alanet(*common, "--folds", "p3", "--hparam", "n_neighbors=3", "--out", tmp_path / "k3") == 0
    assert "hparams differs" in refused(capsys, "merge", r / "a", r / "b", tmp_path / "k3", "--out", out)
    assert alanet(*common, "--folds", "p3", "--window-label", "newest", "--out", tmp_path / "newest") == 0
    assert "window_label differs" in refused(capsys, "merge", r / "a", r / "b", tmp_path / "newest", "--out", out)
    legacy = tmp_path / "b-before-window-labels"  # a part written before the setting existed: majority
    shutil.copytree(r / "b", legacy)
    cfg = json.loads((legacy / "config.json").read_text())
    del cfg["window_label"]
    (legacy / "config.json").write_text(json.dumps(cfg))
    assert alanet("merge", r / "c", r / "a", legacy, "--out", tmp_path / "with-legacy") == 0
    # Other data: the same participants, one value changed.
    other = tmp_path / "other"
    write_csv_dataset(other)
    f = other / "p3_session.csv"
    lines = f.read_text().splitlines()
    lines[5] = "9" + lines[5]
    f.write_text("\n".join(lines) + "\n")
    assert alanet("train", "--data", other, *KNN, "--folds", "p3", "--out", tmp_path / "p3") == 0
    assert "trained on other data" in refused(capsys, "merge", r / "a", r / "b", tmp_path / "p3", "--out", out)
    # Not a fold run, and an existing output.
    assert "not a run directory" in refused(capsys, "merge", r / "a", tmp_path, "--out", out)
    assert "already exists" in refused(capsys, "merge", r / "a", r / "b", r / "c", "--out", r / "full")
    assert not out.exists() and not list(tmp_path.glob(".m.*")) and not list(r.glob(".full.*"))


def test_folds_bad_input(knn_runs, tmp_path, capsys):
    common = ("train", "--data", knn_runs / "csv", "--task", "label", "--window", "40", "--quiet",
              "--out", tmp_path / "run")
    assert "--folds: p9 not in the dataset" in refused(capsys, *common, "--model", "knn", "--eval", "loso",
                                                       "--folds", "p9")
    assert "needs --eval loso" in refused(capsys, *common, "--model", "knn", "--folds", "p0")
    assert "choose one" in refused(capsys, *common, "--model", "knn", "--eval", "loso", "--folds", "final",
                                   "--no-final")
    assert "scikit-learn model" in refused(capsys, *common, "--model", "knn", "--distribute", "multiworker")
    assert not (tmp_path / "run").exists()


def test_seed_given_makes_the_run_deterministic(knn_runs, tmp_path):
    common = ("train", "--data", knn_runs / "csv", *KNN, "--folds", "p0")
    assert alanet(*common, "--out", tmp_path / "default") == 0
    assert alanet(*common, "--seed", "0", "--out", tmp_path / "seeded") == 0
    cfg = {d: json.loads((tmp_path / d / "config.json").read_text()) for d in ("default", "seeded")}
    assert cfg["default"]["seed"] == cfg["seeded"]["seed"] == 0
    assert not cfg["default"]["deterministic"] and cfg["seeded"]["deterministic"]


def test_merge_carries_a_neural_final_model(tmp_path, monkeypatch):
    import alanet.train.fit as fit
    from alanet.train.rundir import load_run

    monkeypatch.setattr(fit, "EAGER", True)  # tiny data: skip graph tracing
    data = write_csv_dataset(tmp_path / "csv", participants=3)
    common = ("train", "--data", data, "--task", "label", "--model", "stacked-lstm", "--eval", "loso", "--window",
              "40", "--stride", "40", "--epochs", "1", "--hparam", "units=2", "--hparam", "layers=1", "--hparam",
              'refit="never"', "--quiet")
    assert alanet(*common, "--folds", "p0,p1,p2", "--out", tmp_path / "folds") == 0
    assert alanet(*common, "--folds", "final", "--out", tmp_path / "final") == 0
    assert alanet("merge", tmp_path / "folds", tmp_path / "final", "--out", tmp_path / "run") == 0
    run, part = load_run(tmp_path / "run"), load_run(tmp_path / "final")
    assert run.config["final_model"] and run.config["folds"] is None
    for a, b in zip(run.load_model().get_weights(), part.load_model().get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert run.config["decision"] == part.config["decision"]
    assert json.loads((tmp_path / "run" / "history.json").read_text())["final"] == \
        json.loads((tmp_path / "final" / "history.json").read_text())["final"]


def _workers(tmp_path: Path, data: Path, seeds: tuple[int, int], timeout: float) -> list[subprocess.CompletedProcess]:
    """Two ``alanet train --distribute multiworker`` processes on loopback ports (worker 0
    is the chief); each writes to its own --out and dumps its weights. A worker whose
    peer failed may wait for it forever: it gets 60 s, then both are killed."""
    ports = [free_port(), free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs, logs = [], []
    try:
        for i, seed in enumerate(seeds):
            env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}),
                   "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
            env.pop("ALANET_EAGER", None)
            args = ["train", "--data", str(data), "--task", "label", "--model", "stacked-lstm", "--eval", "holdout",
                    "--test-participants", "p3", "--window", "40", "--stride", "40", "--epochs", "1",
                    "--hparam", "units=4", "--hparam", "layers=1", "--hparam", 'refit="never"',
                    "--seed", str(seed), "--distribute", "multiworker", "--quiet", "--out", str(tmp_path / f"run{i}")]
            logs.append((tmp_path / f"out{i}.log", tmp_path / f"err{i}.log"))
            with open(logs[-1][0], "w") as out, open(logs[-1][1], "w") as err:
                procs.append(subprocess.Popen(
                    [sys.executable, str(REPO / "tests" / "multiworker_support.py"), str(tmp_path / f"w{i}.npz"),
                     *args], env=env, stdout=out, stderr=err, start_new_session=True))
        deadline = time.monotonic() + timeout
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            if any(p.returncode not in (None, 0) for p in procs):
                deadline = min(deadline, time.monotonic() + 60)
            time.sleep(0.2)
    finally:
        for p in procs:  # a worker left waiting for its peer must not outlive the test
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    return [subprocess.CompletedProcess(p.args, p.returncode, out.read_text(), err.read_text())
            for p, (out, err) in zip(procs, logs)]


@pytest.mark.slow
def test_multiworker_strategy_two_workers_on_loopback(tmp_path):
    data = write_csv_dataset(tmp_path / "csv")
    chief, worker = _workers(tmp_path, data, (3, 3), timeout=300)
    assert chief.returncode == 0, chief.stderr[-3000:]
    assert worker.returncode == 0, worker.stderr[-3000:]
    assert "→" in chief.stdout and "worker 1 of 2: the chief writes" in worker.stdout
    # Only the chief writes a run directory (and nothing is left half-written).
    assert (tmp_path / "run0" / "model.keras").is_file() and not (tmp_path / "run1").exists()
    assert not list(tmp_path.glob(".run*"))
    assert json.loads((tmp_path / "run0" / "config.json").read_text())["distribute"] == "multiworker"
    w0, w1 = np.load(tmp_path / "w0.npz"), np.load(tmp_path / "w1.npz")
    # Each worker trained on its shard of every batch; gradients were all-reduced over both.
    assert int(w0["replicas"]) == int(w1["replicas"]) == 2
    assert bool(w0["deterministic"]) and bool(w1["deterministic"])  # --seed given
    names = sorted(k for k in w0.files if k.startswith("w"))
    assert names and names == sorted(k for k in w1.files if k.startswith("w"))
    for k in names:
        np.testing.assert_array_equal(w0[k], w1[k], err_msg=k)
    # The run directory holds the model the workers trained.
    from alanet.train.rundir import load_run

    saved = load_run(tmp_path / "run0").load_model().get_weights()
    assert len(saved) == len(names)
    for i, w in enumerate(saved):
        np.testing.assert_array_equal(w, w0[f"w{i}"])

    # Workers started with different settings refuse to train, each with one clear line.
    shutil.rmtree(tmp_path / "run0")
    chief, worker = _workers(tmp_path, data, (3, 4), timeout=120)
    for p in (chief, worker):
        assert p.returncode == 2, p.stderr[-3000:]
        assert "do not train on the same data and settings" in p.stderr
    assert not (tmp_path / "run0").exists()
