"""Training speed: ALANet vs BANet (and Stacked-LSTM) on the same windows, one run.

The paper's claim: ALANet trains more than 20× faster than BANet. ALANet runs one
LSTM encoder over the window (its autoencoder pretraining adds a decoder); BANet runs a
shared 3-layer LSTM once per body part on every step.

Every model gets the same training / validation / test windows (protective task,
EmoPain-format synthetic data, 180-frame windows, stride 45, training-only
normalisation and augmentation) and the same epoch budget; early stopping on the
validation participants applies to all. Reports wall time (ALANet: autoencoder +
head), time per epoch, windows per second, macro F1 on the held-out participants
and the BANet / ALANet time ratio.

Prints a summary and writes ``bench/results/train_speed.json``.

    python bench/train_speed.py [--data DIR] [--epochs 30] [--ae-epochs 20]
                                [--models alanet,banet,banet-folded,stacked-lstm]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", help="EmoPain-format dataset (default: synthetic, 8 patients + 5 controls, 120 s)")
    ap.add_argument("--task", default="protective")
    ap.add_argument("--models", default="alanet,banet,banet-folded,stacked-lstm")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--ae-epochs", type=int, default=20)
    ap.add_argument("--window", type=int, default=180)
    ap.add_argument("--stride", type=int, default=45)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "train_speed.json"))
    args = ap.parse_args(argv)

    from alanet.device.windowing import WindowSpec
    from alanet.train.augment import augment
    from alanet.train.data.loading import load_dataset
    from alanet.train.experiment import ExperimentConfig, inner_split, model_groups
    from alanet.train.fit import configure_tensorflow, fit_model, predict_proba
    from alanet.train.metrics import classification_metrics
    from alanet.train.windows import fit_normalizer, make_windows, normalise

    with tempfile.TemporaryDirectory() as tmp:
        if args.data:
            data = Path(args.data)
        else:
            from alanet.train.data.synthetic import write_synthetic_dataset

            data = Path(tmp) / "synthetic"
            write_synthetic_dataset(data, patients=8, controls=5, seed=args.seed, duration_s=120)
        ds = load_dataset(data)
    tw = make_windows(ds, args.task, WindowSpec(args.window, args.stride))
    people = ds.participants
    test = [p for p in people if p in ("P01", "P02", "C01")] or people[:2]
    train = [p for p in people if p not in test]
    fit_ids, val_ids = inner_split(tuple(train), tw, 0.2, args.seed)
    norm = fit_normalizer(ds, train)
    sel = {k: tw.of(v) for k, v in (("fit", fit_ids), ("val", val_ids), ("test", test))}
    x = {k: normalise(tw.x[i], tw.mask[i], norm) for k, i in sel.items()}
    y = {k: tw.y[i] for k, i in sel.items()}
    configure_tensorflow()
    import keras

    results: dict[str, dict] = {}
    for label in args.models.split(","):
        # "banet-folded": BANet with the parts folded into the batch (same network).
        name = "banet" if label == "banet-folded" else label
        groups = model_groups(name, ds)
        # The same exact budget for every stage of every model (--epochs turns the step floors off).
        hp = ExperimentConfig(model=name, task=args.task, epochs=args.epochs, ae_epochs=args.ae_epochs,
                              hparams={"fold_parts": True} if label == "banet-folded" else {}).resolved_hparams()
        xa, ma, ya = augment(x["fit"], tw.mask[sel["fit"]], y["fit"], groups, tw.n_classes,
                             int(hp["augment_copies"]), np.random.default_rng(args.seed), balance=False)
        res = fit_model(name, hp, x=xa, mask=ma, y=ya, x_val=x["val"], y_val=y["val"], mask_val=tw.mask[sel["val"]],
                        groups=groups, n_classes=tw.n_classes, seed=args.seed, progress=True)
        pred = predict_proba(res, x["test"], tw.mask[sel["test"]]).argmax(axis=1)
        m = classification_metrics(y["test"], pred, tw.n_classes)
        epochs = len(res.history.get("loss", [])) + len(res.history.get("ae_loss", []))
        results[label] = {"train_seconds": round(res.train_seconds, 2), "epochs_run": epochs,
                         "seconds_per_epoch": round(res.train_seconds / max(epochs, 1), 3),
                         "windows_per_second": round(len(ya) * epochs / res.train_seconds, 1),
                         "macro_f1": round(m["macro_f1"], 4), "accuracy": round(m["accuracy"], 4),
                         "mcc": round(m["mcc"], 4), "n_params": res.n_params}
        print(f"{label:14s} {res.train_seconds:8.1f} s  {epochs:3d} epochs  macro F1 {m['macro_f1']:.3f}  "
              f"acc {m['accuracy']:.3f}", flush=True)

    out = {
        "task": args.task, "window": args.window, "stride": args.stride, "data": str(args.data or "synthetic 8P+5C 120s"),
        "windows": {"fit": len(y["fit"]), "fit_augmented": None, "val": len(y["val"]), "test": len(y["test"])},
        "epochs": args.epochs, "ae_epochs": args.ae_epochs, "results": results,
        "platform": {"machine": platform.machine(), "python": platform.python_version(), "cpus": os.cpu_count(),
                     "keras_backend": keras.backend.backend(), "devices": _devices()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out["windows"].pop("fit_augmented")
    for other in ("banet", "banet-folded", "stacked-lstm"):
        if "alanet" in results and other in results:
            ratio = round(results[other]["train_seconds"] / results["alanet"]["train_seconds"], 2)
            out[f"{other.replace('-', '_')}_over_alanet_time"] = ratio
            print(f"{other} / alanet training time: {ratio}x")
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


def _devices() -> list[str]:
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return [g.name for g in tf.config.list_physical_devices("GPU")] or ["cpu"]
    if keras.backend.backend() == "jax":
        import jax

        return [str(d) for d in jax.devices()]
    return [keras.backend.backend()]


if __name__ == "__main__":
    sys.exit(main())
