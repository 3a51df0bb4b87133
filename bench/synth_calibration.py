"""How hard is the synthetic dataset, and does frame order matter? Classic classifiers
on the toolkit's window statistics.

Generates the default synthetic cohort (or loads DIR), cuts 3 s windows per exercise
instance and fits the classic baselines of ``alanet train`` (k-NN, RBF SVM, random
forest on per-channel mean / std / min / max / mean absolute change of the normalised
window), holding out participants: the challenge split and 5-fold grouped
cross-validation. Then the same with the frames of every window shuffled: when the
behaviour lives in the order of the frames (hesitation, sequencing, bracing before the
movement), shuffling must *lower* the best baseline; a sequence model can then earn a
lead over it.

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


def window_features(dataset, task: str, train_ids, shuffle_seed: int | None = None):
    """Classic-baseline features of every labelled window (frames shuffled per window if asked)."""
    from alanet.device.windowing import WindowSpec
    from alanet.train.models.classic import window_statistics
    from alanet.train.windows import fit_normalizer, make_windows, normalise

    tw = make_windows(dataset, task, WindowSpec())
    x = normalise(tw.x, tw.mask, fit_normalizer(dataset, train_ids))
    if shuffle_seed is not None:
        rng = np.random.default_rng(shuffle_seed)
        for i in range(len(x)):
            n = int(tw.mask[i].sum())  # padding is at the end: shuffle the real frames only
            x[i, :n] = x[i, rng.permutation(n)]
    return window_statistics(x, tw.mask), tw.y, tw.participant


def evaluate(x, y, g, train_ids, test_ids) -> dict:
    from sklearn.dummy import DummyClassifier
    from sklearn.model_selection import GroupKFold

    from alanet.device.scoring import macro_f1
    from alanet.train.models import DEFAULT_HPARAMS
    from alanet.train.models.classic import build_classic

    out: dict = {}
    tr, te = np.isin(g, train_ids), np.isin(g, test_ids)
    for name in ("knn", "svm", "rf"):
        def make():
            return build_classic(name, DEFAULT_HPARAMS[name], 0)

        split = macro_f1(y[te], make().fit(x[tr], y[tr]).predict(x[te]))
        cv = [macro_f1(y[b], make().fit(x[a], y[a]).predict(x[b])) for a, b in GroupKFold(n_splits=5).split(x, y, g)]
        out[name] = {"challenge_split_macro_f1": round(float(split), 3),
                     "groupkfold5_macro_f1_mean": round(float(np.mean(cv)), 3),
                     "groupkfold5_macro_f1_std": round(float(np.std(cv)), 3)}
    best = max(("knn", "svm", "rf"), key=lambda k: out[k]["groupkfold5_macro_f1_mean"])
    out["best"] = {"model": best, **out[best]}
    chance = DummyClassifier(strategy="stratified", random_state=0).fit(x[tr], y[tr])
    out["chance_stratified"] = {"challenge_split_macro_f1": round(macro_f1(y[te], chance.predict(x[te])), 3)}
    out["windows"] = {"train": int(tr.sum()), "test": int(te.sum()), "class_counts": np.bincount(y).tolist()}
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
        result[task] = evaluate(*window_features(ds, task, train_ids), train_ids, test_ids)
        shuffled = evaluate(*window_features(ds, task, train_ids, shuffle_seed=args.seed), train_ids, test_ids)
        result[task]["frames_shuffled"] = {k: shuffled[k] for k in ("knn", "svm", "rf", "best")}
        b0, b1 = result[task]["best"], shuffled["best"]
        result[task]["frame_order"] = {
            "best_baseline": b0["model"], "best_baseline_shuffled": b1["model"],
            "groupkfold5_macro_f1": b0["groupkfold5_macro_f1_mean"],
            "groupkfold5_macro_f1_shuffled": b1["groupkfold5_macro_f1_mean"],
            "shuffling_lowers_best_baseline": bool(b1["groupkfold5_macro_f1_mean"] < b0["groupkfold5_macro_f1_mean"])}
    print(json.dumps(result, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
