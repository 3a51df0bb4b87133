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
    labels = ["absent", "present"] if n_classes == 2 else [f"level{i}" for i in range(n_classes)]
    cfg = {"model": "tiny_lstm", "task": task, "label_names": labels, "schema": schema.to_dict(), "window": window,
           "stride": max(1, window // 4), "hparams": {"units": units}, "seed": seed}
    return _fit_and_write(out, model, cfg, norm, (x_train, y_train), (x_test, y_test), epochs=epochs, batch=32, n_calib=128)


def _fit_and_write(out: Path, model, cfg: dict, norm: Normalizer, train: tuple[np.ndarray, np.ndarray],
                   test: tuple[np.ndarray, np.ndarray], *, epochs: int, batch: int, n_calib: int) -> Path:
    """Train ``model`` and write the run directory (config, normalisation, model, parity windows, metrics)."""
    import keras

    (x_train, y_train), (x_test, y_test) = train, test
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=epochs, batch_size=batch, verbose=0)
    model.save(out / "model.keras")
    cfg = {**cfg, "eval": "holdout", "test_participants": ["synthetic"]}
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    (out / "normalization.json").write_text(json.dumps(norm.to_dict()))
    np.savez(out / "parity_windows.npz", calib_x=x_train[:n_calib], test_x=x_test, test_y=y_test)
    acc = float(np.mean(model.predict(x_test, verbose=0).argmax(1) == y_test))
    (out / "metrics.json").write_text(json.dumps({"test": {"accuracy": acc}}))
    return out


def make_session_run(out: str | Path, *, model: str = "alanet-parts", units: int = 2, seconds: float = 120.0,
                     seed: int = 11, epochs: int = 2, window: int = 180, stride: int = 45) -> Path:
    """A small zoo model (default ALANet per body part, so it has temporal and bodily attention)
    trained on the windows of a synthetic rehab session in the EmoPain layout (30 channels at
    60 Hz), labelled protective by majority vote: a bundle made from it runs on a gateway fed
    the same kind of session and raises alerts there."""
    import keras

    from alanet.device.features import emopain_frame_features
    from alanet.device.schema import EMOPAIN
    from alanet.device.windowing import majority_label, window_starts
    from alanet.train.data.synthetic import synth_session
    from alanet.train.models import build_model

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(seed)
    fs = EMOPAIN.sample_rate_hz

    def windows(sess_seed: int) -> tuple[np.ndarray, np.ndarray]:
        bd = synth_session(seed=sess_seed, duration_s=seconds)
        feats = emopain_frame_features(bd[:, :13], bd[:, 26:30], fs)
        st = window_starts(len(feats), window, stride)
        return np.stack([feats[s:s + window] for s in st]), np.array([majority_label(bd[s:s + window, 32]) for s in st])

    raw_train, y_train = windows(seed)
    raw_test, y_test = windows(seed + 1)
    norm = Normalizer.fit(raw_train.reshape(-1, EMOPAIN.n_channels))
    x_train, x_test = norm.apply(raw_train).astype(np.float32), norm.apply(raw_test).astype(np.float32)
    groups = [list(g) for g in EMOPAIN.groups.values()]
    hp = {"units": units}
    # Every window here is full: the model needs no padding-mask input.
    net = build_model(model, timesteps=window, channels=EMOPAIN.n_channels, n_classes=2, groups=groups, hparams=hp,
                      masking=False)
    cfg = {"model": model, "task": "protective", "label_names": ["normal", "protective"], "schema": EMOPAIN.to_dict(),
           "window": window, "stride": stride, "hparams": hp, "groups": groups, "seed": seed}
    return _fit_and_write(out, net, cfg, norm, (x_train, y_train), (x_test, y_test), epochs=epochs, batch=16, n_calib=64)


def cached_tiny_run(base: str | Path, kind: str = "tiny-run") -> Path:
    """``make_tiny_run`` (``kind`` "tiny-run") or ``make_session_run`` ("session-run") into
    ``base/<kind>`` once, in a child process (keeps TensorFlow out of the caller); later calls
    reuse it, so tests share one run."""
    import subprocess
    import sys

    out = Path(base) / kind
    if not (out / "metrics.json").is_file():
        subprocess.run([sys.executable, "-m", "alanet.convert.tinyrun", str(out), kind], check=True,
                       capture_output=True, timeout=600)
    return out


if __name__ == "__main__":  # python -m alanet.convert.tinyrun OUT [tiny-run|session-run]
    import sys

    make = make_session_run if sys.argv[2:] == ["session-run"] else make_tiny_run
    print(make(sys.argv[1]))
