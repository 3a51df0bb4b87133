"""How hard is the synthetic dataset? Classic classifiers on window statistics.

Generates the default synthetic cohort (or loads DIR), cuts 3 s windows per exercise
instance, and fits a random forest and a logistic regression on per-window
mean/std/min/max of the 30 channels, holding out participants (the challenge split,
and 5-fold grouped cross-validation). Target: protective-behaviour macro F1 clearly
below 0.9 but well above chance; pain level likewise.

    python bench/synth_calibration.py [--data DIR] [--seed 0] [--duration 120]

Prints the numbers and saves them to bench/results/synth_calibration.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def window_features(dataset, task: str):
    from alanet.device.windowing import WindowSpec, segment_windows

    spec = WindowSpec()
    feats, ys, groups = [], [], []
    for i, rec in enumerate(dataset.recordings):
        w = segment_windows(rec.values, rec.labels[task], spec, rec.segment, source=i)
        m = w.mask[..., None]
        n = np.maximum(m.sum(axis=1), 1)
        mean = (w.x * m).sum(axis=1) / n
        std = np.sqrt(np.maximum(((w.x - mean[:, None]) ** 2 * m).sum(axis=1) / n, 0))
        big = np.where(m, w.x, np.inf).min(axis=1)
        small = np.where(m, w.x, -np.inf).max(axis=1)
        feats.append(np.concatenate([mean, std, big, small], axis=1))
        ys.append(w.y)
        groups += [rec.participant] * len(w)
    x, y, g = np.concatenate(feats), np.concatenate(ys), np.asarray(groups)
    keep = y >= 0
    return x[keep], y[keep], g[keep]


def models():
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return {
        "random_forest": lambda: RandomForestClassifier(n_estimators=200, min_samples_leaf=2, n_jobs=2,
                                                        class_weight="balanced", random_state=0),
        "logistic_regression": lambda: make_pipeline(StandardScaler(), LogisticRegression(
            max_iter=2000, class_weight="balanced")),
    }


def evaluate(x, y, g, train_ids, test_ids) -> dict:
    from sklearn.dummy import DummyClassifier
    from sklearn.metrics import f1_score
    from sklearn.model_selection import GroupKFold

    out: dict = {}
    tr, te = np.isin(g, train_ids), np.isin(g, test_ids)
    for name, make in models().items():
        clf = make().fit(x[tr], y[tr])
        split = f1_score(y[te], clf.predict(x[te]), average="macro")
        cv = []
        for a, b in GroupKFold(n_splits=5).split(x, y, g):
            cv.append(f1_score(y[b], make().fit(x[a], y[a]).predict(x[b]), average="macro"))
        out[name] = {"challenge_split_macro_f1": round(float(split), 3),
                     "groupkfold5_macro_f1_mean": round(float(np.mean(cv)), 3),
                     "groupkfold5_macro_f1_std": round(float(np.std(cv)), 3)}
    chance = DummyClassifier(strategy="stratified", random_state=0).fit(x[tr], y[tr])
    out["chance_stratified"] = {"challenge_split_macro_f1": round(float(
        f1_score(y[te], chance.predict(x[te]), average="macro")), 3)}
    out["windows"] = {"train": int(tr.sum()), "test": int(te.sum()),
                      "class_counts": np.bincount(y).tolist()}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="an existing EmoPain-format folder (default: generate the synthetic cohort)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--duration", type=float, default=None, help="seconds per synthetic file")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "synth_calibration.json"))
    args = ap.parse_args(argv)

    from alanet.train.data.emopain import challenge_split, load_emopain
    from alanet.train.data.synthetic import DEFAULT_DURATION_S, write_synthetic_dataset

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.data
        if root is None:
            root = tmp
            write_synthetic_dataset(tmp, seed=args.seed, duration_s=args.duration or DEFAULT_DURATION_S)
        ds = load_emopain(root)
    gen_s = time.perf_counter() - t0
    train_ids, test_ids = challenge_split(ds)
    frames = sum(r.n_frames for r in ds.recordings)
    patients = [r for r in ds.recordings if r.participant.startswith("P")]
    prot_frac = float(np.mean(np.concatenate([r.labels["protective"] for r in patients]))) if patients else 0.0
    controls = [r for r in ds.recordings if r.participant.startswith("C")]
    ctrl_frac = float(np.mean(np.concatenate([r.labels["protective"] for r in controls]))) if controls else 0.0
    result = {
        "dataset": {"root": args.data or f"synthetic seed={args.seed}", "participants": len(ds.participants),
                    "recordings": len(ds.recordings), "frames": frames,
                    "protective_frame_fraction_patients": round(prot_frac, 4),
                    "protective_frame_fraction_controls": round(ctrl_frac, 4),
                    "generate_and_load_s": round(gen_s, 2)},
        "platform": {"python": sys.version.split()[0], "machine": platform.machine(), "processor": platform.processor()},
    }
    for task in ("protective", "pain"):
        x, y, g = window_features(ds, task)
        result[task] = evaluate(x, y, g, train_ids, test_ids)
    print(json.dumps(result, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
