"""A tiny, quickly trained run directory in the ``alanet train`` layout (imports TensorFlow).

Used by the converter's tests and benchmark: a Masking → LSTM → Dense softmax
classifier on random windows where class 1 windows carry an offset on a few
channels, so the task is learnable and parity/F1 numbers mean something.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from alanet.device.features import Normalizer
from alanet.device.schema import generic_schema


def make_tiny_run(out: str | Path, *, task: str = "protective", window: int = 24, channels: int = 6,
                  n_classes: int = 2, units: int = 8, n_train: int = 384, n_test: int = 128, epochs: int = 6,
                  seed: int = 0) -> Path:
    """Train a tiny model and write config.json, normalization.json, model.keras, parity_windows.npz."""
    import keras

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    keras.utils.set_random_seed(seed)

    def windows(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, n_classes, size=n)
        x = rng.normal(size=(n, window, channels)).astype(np.float32)
        ramp = np.linspace(0.2, 1.0, window, dtype=np.float32)[None, :]
        for c in range(1, n_classes):
            x[y == c, :, (c - 1) % channels] += 1.6 * c * ramp
        return x, y

    raw_train, y_train = windows(n_train)
    raw_test, y_test = windows(n_test)
    names = [f"ch{i}" for i in range(channels)]
    schema = generic_schema(names, 50.0, {"a": names[: channels // 2], "b": names[channels // 2:]})
    norm = Normalizer.fit(raw_train.reshape(-1, channels))
    x_train, x_test = norm.apply(raw_train), norm.apply(raw_test)

    inp = keras.Input((window, channels))
    h = keras.layers.Masking(mask_value=0.0)(inp)
    h = keras.layers.LSTM(units)(h)
    prob = keras.layers.Dense(n_classes, activation="softmax")(h)
    model = keras.Model(inp, prob, name="tiny_lstm")
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=epochs, batch_size=32, verbose=0)
    model.save(out / "model.keras")

    labels = ["absent", "present"] if n_classes == 2 else [f"level{i}" for i in range(n_classes)]
    cfg = {"model": "tiny_lstm", "task": task, "label_names": labels, "schema": schema.to_dict(), "window": window,
           "stride": max(1, window // 4), "hparams": {"units": units}, "seed": seed, "eval": "holdout",
           "test_participants": ["synthetic"]}
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    (out / "normalization.json").write_text(json.dumps(norm.to_dict()))
    np.savez(out / "parity_windows.npz", calib_x=x_train[:128], test_x=x_test, test_y=y_test)
    acc = float(np.mean(model.predict(x_test, verbose=0).argmax(1) == y_test))
    (out / "metrics.json").write_text(json.dumps({"test": {"accuracy": acc}}))
    return out


def cached_tiny_run(base: str | Path) -> Path:
    """``make_tiny_run`` into ``base/tiny-run`` once, in a child process (keeps TensorFlow out of
    the caller); later calls reuse it, so tests share one run."""
    import subprocess
    import sys

    out = Path(base) / "tiny-run"
    if not (out / "metrics.json").is_file():
        subprocess.run([sys.executable, "-m", "alanet.convert.tinyrun", str(out)], check=True, capture_output=True,
                       timeout=300)
    return out


if __name__ == "__main__":  # python -m alanet.convert.tinyrun OUT
    import sys

    print(make_tiny_run(sys.argv[1]))
