"""Fit one model on training windows, with early stopping on an inner validation set.

Neural models train with Keras (progress bar over epochs); ALANet trains in two
stages (autoencoder, then the attention head on cached encoder features); classic
models fit scikit-learn on per-window statistics. Nothing here sees test windows.
"""

from __future__ import annotations

import functools
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from alanet.train.models import CLASSIC_MODELS, build_model

warnings.filterwarnings("ignore", message=r".*does not support masking.*")

# Eager execution skips graph tracing: slower per step, but much faster to start on
# the tiny datasets of smoke tests (ALANET_EAGER=1). Never on for real training.
EAGER = os.environ.get("ALANET_EAGER", "") == "1"


@dataclass
class FitResult:
    """A trained model and how it got there."""

    name: str
    model: Any  # keras.Model | sklearn Pipeline
    history: dict[str, list[float]] = field(default_factory=dict)
    train_seconds: float = 0.0
    n_params: int = 0
    epochs_run: int = 0

    @property
    def classic(self) -> bool:
        return self.name in CLASSIC_MODELS


def configure_tensorflow(threads: int | None = None) -> None:
    """Quiet TF logs; optionally cap its thread pools (parallel LOSO workers)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:
            pass  # already initialised in this process


@functools.lru_cache(maxsize=None)
def get_strategy(name: str | None):
    """``None`` → the default strategy (one GPU if present, else CPU);
    ``mirrored`` → all local GPUs; ``multiworker`` → hosts from ``TF_CONFIG``.

    One strategy object per name and process (TensorFlow refuses to mix them).
    """
    import tensorflow as tf

    if not name:
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown distribution strategy {name!r}")


def _epoch_bar(total: int, desc: str, enabled: bool):
    import keras
    from tqdm.auto import tqdm

    class EpochBar(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.bar = tqdm(total=total, desc=desc, unit="epoch", leave=False, file=sys.stderr, disable=not enabled)

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            self.bar.set_postfix({k: f"{v:.3f}" for k, v in logs.items() if k in ("loss", "val_loss", "val_accuracy")})
            self.bar.update(1)

        def on_train_end(self, logs=None):
            self.bar.close()

    return EpochBar()


def _keras_fit(model, x, y, val, hp: dict[str, Any], epochs: int, batch: int, desc: str, progress: bool,
               monitor: str = "val_loss") -> dict[str, list[float]]:
    import keras

    callbacks = [_epoch_bar(epochs, desc, progress)]
    if val is not None:
        callbacks.append(keras.callbacks.EarlyStopping(monitor=monitor, patience=int(hp.get("patience", 8)),
                                                       restore_best_weights=True))
    h = model.fit(x, y, batch_size=batch, epochs=epochs, validation_data=val, callbacks=callbacks,
                  verbose=0, shuffle=True)
    return {k: [float(v) for v in vals] for k, vals in h.history.items()}


def fit_model(name: str, hp: dict[str, Any], *, x: np.ndarray, mask: np.ndarray, y: np.ndarray,
              x_val: np.ndarray | None, y_val: np.ndarray | None, groups: list[list[int]], n_classes: int,
              seed: int = 0, strategy: str | None = None, progress: bool = True) -> FitResult:
    """Train ``name`` on (already augmented, normalised) windows; validate on ``x_val``."""
    t0 = time.perf_counter()
    if name in CLASSIC_MODELS:
        from alanet.train.models.classic import build_classic, n_params, window_statistics

        model = build_classic(name, hp, seed)
        model.fit(window_statistics(x, mask), y)
        return FitResult(name, model, {}, time.perf_counter() - t0, n_params(model), 0)

    configure_tensorflow()
    import keras

    keras.utils.set_random_seed(seed)
    timesteps, channels = int(x.shape[1]), int(x.shape[2])
    val = (x_val, y_val) if x_val is not None and len(x_val) else None
    with get_strategy(strategy).scope():
        model = build_model(name, timesteps=timesteps, channels=channels, n_classes=n_classes, groups=groups, hparams=hp)
    if name in ("alanet", "alanet-parts"):
        history = _fit_alanet(name, model, hp, x, y, val, groups, strategy, progress)
    else:
        with get_strategy(strategy).scope():
            model.compile(keras.optimizers.Adam(hp["lr"]), "sparse_categorical_crossentropy", metrics=["accuracy"],
                          run_eagerly=EAGER)
        history = _keras_fit(model, x, y, val, hp, int(hp["epochs"]), int(hp["batch"]), name, progress)
    return FitResult(name, model, history, time.perf_counter() - t0, int(model.count_params()),
                     len(history.get("loss", [])))


def _fit_alanet(name: str, model, hp: dict[str, Any], x, y, val, groups, strategy, progress) -> dict[str, list[float]]:
    """Stage 1: autoencoder (MSE). Stage 2: frozen encoder, cached features → attention head."""
    import keras

    from alanet.train.models.alanet import alanet_autoencoder, alanet_parts_autoencoder, encoder_layer_names

    timesteps, channels = int(x.shape[1]), int(x.shape[2])
    with get_strategy(strategy).scope():
        if name == "alanet":
            ae = alanet_autoencoder(timesteps, channels, hp)
            cols = list(range(channels))
        else:
            ae = alanet_parts_autoencoder(timesteps, channels, groups, hp)
            cols = [i for g in groups for i in g]
        ae.compile(keras.optimizers.Adam(hp["ae_lr"]), "mse", run_eagerly=EAGER)
    ae_val = (val[0], val[0][..., cols]) if val is not None else None
    ae_hist = _keras_fit(ae, x, x[..., cols], ae_val, hp, int(hp["ae_epochs"]), int(hp["ae_batch"]),
                         f"{name} autoencoder", progress)
    for layer in encoder_layer_names(model):
        model.get_layer(layer).set_weights(ae.get_layer(layer).get_weights())
        model.get_layer(layer).trainable = False

    # The encoder is frozen: compute its features once and train only the head on them.
    encoder = keras.Model(model.inputs, model.get_layer("encoder_features").output)
    feats = encoder.predict(x, batch_size=256, verbose=0)
    feats_val = (encoder.predict(val[0], batch_size=256, verbose=0), val[1]) if val is not None else None
    head = model.get_layer("head")
    with get_strategy(strategy).scope():
        head.compile(keras.optimizers.Adam(hp["lr"]), "sparse_categorical_crossentropy", metrics=["accuracy"],
                     run_eagerly=EAGER)
    history = _keras_fit(head, feats, y, feats_val, hp, int(hp["epochs"]), int(hp["batch"]), f"{name} head", progress)
    history.update({f"ae_{k}": v for k, v in ae_hist.items()})

    if hp.get("finetune"):
        for layer in encoder_layer_names(model):
            model.get_layer(layer).trainable = True
        with get_strategy(strategy).scope():
            model.compile(keras.optimizers.Adam(hp["finetune_lr"]), "sparse_categorical_crossentropy",
                          metrics=["accuracy"], run_eagerly=EAGER)
        ft = _keras_fit(model, x, y, val, hp, int(hp["finetune_epochs"]), int(hp["batch"]), f"{name} fine-tune", progress)
        history.update({f"finetune_{k}": v for k, v in ft.items()})
    return history


def predict_proba(result: FitResult, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Class probabilities [N, n_classes] (classic models without probabilities: one-hot)."""
    if result.classic:
        from alanet.train.models.classic import window_statistics

        return classic_proba(result.model, window_statistics(x, mask))
    if len(x) == 0:
        return np.zeros((0, result.model.output_shape[-1]), np.float32)
    return np.asarray(result.model.predict(x, batch_size=256, verbose=0))


def classic_proba(model, feats: np.ndarray) -> np.ndarray:
    classes = model.classes_
    if hasattr(model, "predict_proba") and hasattr(model[-1], "predict_proba"):
        try:
            p = model.predict_proba(feats)
        except AttributeError:
            p = None
        if p is not None:
            return _expand(p, classes)
    pred = model.predict(feats)
    return _expand(np.eye(len(classes))[np.searchsorted(classes, pred)], classes)


def _expand(p: np.ndarray, classes: np.ndarray) -> np.ndarray:
    n = int(classes.max()) + 1
    out = np.zeros((p.shape[0], n), np.float32)
    out[:, classes] = p
    return out
