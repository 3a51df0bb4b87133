"""Fit one model on training windows, with model selection on an inner validation set.

Every neural model trains the same way (one implementation, :func:`train_stage`):

- an **optimizer-step floor** (``min_steps``): a small dataset gets more epochs (and
  a smaller batch, at least 4 steps per epoch), so 40 windows still see hundreds of
  updates; an explicit ``--epochs`` turns the floors off;
- **class weights** (``class_weight="balanced"``) in the loss, independent of
  augmentation;
- **selection on the inner-validation macro F1** (ties: the class-weighted validation
  loss), with early stopping never before the step floor; the best epoch's weights
  are kept.

ALANet pretrains its autoencoder (masked MSE), then trains encoder and attention head
end to end from the pretrained encoder (``encoder="finetune"``), or, in the paper's
form (``encoder="frozen"``), trains the head alone on cached encoder features and, with
``finetune=True``, fine-tunes end to end, keeping whichever did better on validation.
Classic models fit scikit-learn on per-window statistics. Nothing here sees test windows.
"""

from __future__ import annotations

import functools
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from alanet.device.scoring import macro_f1
from alanet.train.models import CLASSIC_MODELS, build_model

warnings.filterwarnings("ignore", message=r".*does not support masking.*")

# Eager execution skips graph tracing: slower per step, but much faster to start on
# the tiny datasets of smoke tests (ALANET_EAGER=1). Never on for real training.
EAGER = os.environ.get("ALANET_EAGER", "") == "1"
ALANET_MODELS = ("alanet", "alanet-parts")
MIN_STEPS_PER_EPOCH = 4


@dataclass
class FitResult:
    """A trained model and how it got there."""

    name: str
    model: Any  # keras.Model | sklearn Pipeline
    history: dict[str, list[float]] = field(default_factory=dict)
    train_seconds: float = 0.0
    n_params: int = 0
    epochs_run: int = 0
    selection: dict[str, Any] = field(default_factory=dict)  # best epoch and its validation scores, per stage
    class_weights: list[float] = field(default_factory=list)

    @property
    def classic(self) -> bool:
        return self.name in CLASSIC_MODELS


@dataclass(frozen=True)
class Stage:
    """One training stage: its budget and how its best epoch is chosen."""

    desc: str
    epochs: int
    batch: int
    min_steps: int = 0
    patience: int = 10
    select: str = "macro_f1"  # or "loss" (the autoencoder)


@dataclass(frozen=True)
class Validation:
    """Inner-validation windows (never test) and the class weights of the loss."""

    inputs: Any
    y: np.ndarray
    sample_weight: np.ndarray
    n_classes: int


def configure_tensorflow(threads: int | None = None, deterministic: bool = False) -> None:
    """Quiet the backend's logs; let every process grow its GPU memory as it needs it
    (parallel LOSO workers share one GPU instead of the first taking all of it);
    optionally cap the thread pools (parallel LOSO workers on a CPU) and make every
    TensorFlow op deterministic (``--seed`` given: the same run gives the same weights,
    at some cost in speed on a GPU).

    Call it in every process before TensorFlow touches a device. Keras runs on
    TensorFlow here; on another Keras backend (``KERAS_BACKEND=jax``) only the
    GPU-memory setting applies."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # JAX: allocate on demand
    import keras

    if keras.backend.backend() != "tensorflow":
        return
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    try:
        for gpu in tf.config.list_physical_devices("GPU"):
            tf.config.experimental.set_memory_growth(gpu, True)
    except RuntimeError:
        pass  # already initialised in this process
    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:
            pass  # already initialised in this process
    if deterministic:
        tf.config.experimental.enable_op_determinism()


class _NoStrategy:
    """The default placement of a Keras backend without tf.distribute."""

    def scope(self):
        import contextlib

        return contextlib.nullcontext()


@functools.lru_cache(maxsize=None)
def get_strategy(name: str | None):
    """``None`` → the default strategy (one GPU if present, else CPU);
    ``mirrored`` → all local GPUs; ``multiworker`` → hosts from ``TF_CONFIG``.

    One strategy object per name and process (TensorFlow refuses to mix them).
    """
    import keras

    if keras.backend.backend() != "tensorflow":
        if name:
            raise ValueError(f"--distribute {name} needs Keras on TensorFlow (KERAS_BACKEND=tensorflow)")
        return _NoStrategy()
    import tensorflow as tf

    if not name:
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        from alanet.train.distributed import patch_keras

        patch_keras()
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown distribution strategy {name!r}")


def class_weights(y: np.ndarray, n_classes: int, how: str = "balanced") -> np.ndarray:
    """Per-class loss weights: ``balanced`` = n / (k · count_c) over the k classes present; ``none`` = 1."""
    w = np.ones(n_classes, np.float32)
    if how == "none" or len(y) == 0:
        return w
    counts = np.bincount(np.asarray(y, np.int64), minlength=n_classes).astype(np.float64)
    present = counts > 0
    w[present] = (len(y) / (present.sum() * counts[present])).astype(np.float32)
    return w


def plan_epochs(n: int, batch: int, epochs: int, min_steps: int) -> tuple[int, int]:
    """(batch, epochs) for ``n`` windows: at least 4 steps per epoch and ``min_steps`` steps in all."""
    b = max(1, min(int(batch), math.ceil(n / MIN_STEPS_PER_EPOCH))) if n else max(1, int(batch))
    steps = max(1, math.ceil(n / b))
    e = max(int(epochs), math.ceil(min_steps / steps)) if min_steps > 0 else int(epochs)
    return b, max(1, e)


def check_right_padded(mask: np.ndarray) -> None:
    """Raise unless every window's mask is real frames first, then padding (never a gap)."""
    m = np.asarray(mask, bool)
    if m.ndim != 2:
        raise ValueError(f"mask must be [N, T], got shape {m.shape}")
    if np.any(~m[:, :-1] & m[:, 1:]):
        bad = int(np.flatnonzero(np.any(~m[:, :-1] & m[:, 1:], axis=1))[0])
        raise ValueError(f"window {bad}: padding mask is not right-padded (a real frame follows padding)")


def _select_callback(stage: Stage, val: Validation | None, desc: str, progress: bool, steps_per_epoch: int):
    import keras
    from tqdm.auto import tqdm

    class SelectBest(keras.callbacks.Callback):
        """Progress bar, best-epoch selection on validation, early stopping after the step floor."""

        def on_train_begin(self, logs=None):
            self.bar = tqdm(total=stage.epochs, desc=desc, unit="epoch", leave=False, file=sys.stderr,
                            disable=not progress)
            self.best: tuple[float, float] | None = None
            self.best_epoch = -1
            self.best_weights = None
            self.scores: dict[str, list[float]] = {"val_macro_f1": [], "val_weighted_loss": []}

        def _score(self, logs) -> tuple[float, float] | None:
            if val is None:
                return None
            if stage.select == "loss":
                return (-float(logs.get("val_loss", np.inf)), 0.0)
            p = np.asarray(self.model.predict(val.inputs, batch_size=512, verbose=0), np.float64)
            f1 = macro_f1(val.y, p.argmax(axis=1), val.n_classes)
            nll = -np.log(np.clip(p[np.arange(len(val.y)), val.y], 1e-7, 1.0))
            loss = float(np.sum(nll * val.sample_weight) / max(np.sum(val.sample_weight), 1e-9))
            self.scores["val_macro_f1"].append(f1)
            self.scores["val_weighted_loss"].append(loss)
            return (round(f1, 9), -loss)

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            score = self._score(logs)
            post = {k: f"{v:.3f}" for k, v in logs.items() if k in ("loss", "val_loss")}
            if score is not None:
                if self.best is None or score > self.best:
                    self.best, self.best_epoch = score, epoch
                    self.best_weights = [w.copy() for w in self.model.get_weights()]
                if stage.select != "loss":
                    post["val_f1"] = f"{score[0]:.3f}"
                steps = (epoch + 1) * steps_per_epoch
                if steps >= stage.min_steps and epoch - self.best_epoch >= stage.patience:
                    self.model.stop_training = True
            self.bar.set_postfix(post)
            self.bar.update(1)

        def on_train_end(self, logs=None):
            self.bar.close()
            if self.best_weights is not None:
                self.model.set_weights(self.best_weights)

    return SelectBest()


def train_stage(model, inputs, targets, sample_weight: np.ndarray, val: Validation | None, val_targets, stage: Stage,
                progress: bool) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Fit a compiled model for one stage; returns (history, selection summary)."""
    n = len(sample_weight)
    batch, epochs = plan_epochs(n, stage.batch, stage.epochs, stage.min_steps)
    stage = Stage(stage.desc, epochs, batch, stage.min_steps, stage.patience, stage.select)
    steps = max(1, math.ceil(n / batch))
    inputs, targets, sample_weight = whole_batches(inputs, targets, sample_weight, batch, steps)
    cb = _select_callback(stage, val, stage.desc, progress, steps)
    # Selection on macro F1 scores the validation windows itself (one predict per epoch);
    # Keras' own validation pass would only add a second traced graph and a second pass.
    vdata = None if val is None or stage.select != "loss" else (val.inputs, val_targets, val.sample_weight)
    import keras

    callbacks = [cb]
    if getattr(model.optimizer, "use_ema", False):
        # Validate, select and keep the weights' moving average (Polyak averaging).
        callbacks.insert(0, _swap_ema_weights())
    h = model.fit(inputs, targets, sample_weight=sample_weight, batch_size=batch, epochs=epochs,
                  validation_data=vdata, callbacks=callbacks, verbose=0, shuffle=True)
    history = {k: [float(v) for v in vals] for k, vals in h.history.items()}
    history.update({k: v for k, v in cb.scores.items() if v})
    run = len(history.get("loss", []))
    sel = {"epochs_run": run, "steps": run * steps, "batch": batch, "best_epoch": cb.best_epoch + 1}
    if cb.best is not None and stage.select != "loss":
        sel.update(val_macro_f1=cb.best[0], val_weighted_loss=-cb.best[1])
    elif cb.best is not None:
        sel.update(val_loss=-cb.best[0])
    return history, sel


def _swap_ema_weights():
    """Keras' ``SwapEMAWeights(swap_on_epoch=True)``, swapping by value on every backend.

    Keras swaps a variable with its moving average by ``assign``-ing one variable to the
    other; under JAX the two then hold the same array, the next training step donates it
    to XLA, and the average is left pointing at a deleted buffer (``model.save`` then
    fails with "Array has been deleted"). Copies through numpy keep them apart. The two
    methods mirror Keras 3.15's private ``_backend_swap_variables`` and
    ``_backend_finalize_ema_values`` (TensorFlow takes Keras' own path, unchanged).
    """
    import keras

    class SwapEMAWeightsByValue(keras.callbacks.SwapEMAWeights):
        def _backend_swap_variables(self, optimizer):
            for var, average in zip(optimizer._trainable_variables, optimizer._model_variables_moving_average):
                current = np.array(keras.ops.convert_to_numpy(var), copy=True)
                var.assign(np.array(keras.ops.convert_to_numpy(average), copy=True))
                average.assign(current)

        def _backend_finalize_ema_values(self, optimizer):
            for var, average in zip(optimizer._trainable_variables, optimizer._model_variables_moving_average):
                average.assign(np.array(keras.ops.convert_to_numpy(var), copy=True))

    return SwapEMAWeightsByValue(swap_on_epoch=True)


def whole_batches(inputs, targets, sample_weight: np.ndarray, batch: int, steps: int):
    """The fitting arrays topped up to ``steps`` whole batches with a few repeated windows
    (chosen by the seeded global generator), so every step has the same batch shape and
    the training graph is traced once per stage instead of twice (the last, partial batch
    would trace its own); tracing an LSTM graph costs more than a small dataset's epoch."""
    n = len(sample_weight)
    extra = steps * batch - n
    if extra <= 0 or n == 0:
        return inputs, targets, sample_weight
    import keras

    idx = np.concatenate([np.arange(n), np.random.choice(n, extra, replace=extra > n)])
    return keras.tree.map_structure(lambda a: np.asarray(a)[idx], (inputs, targets, sample_weight))


def _optimizer(lr: float, hp: dict[str, Any], model=None):
    import keras

    kw: dict[str, Any] = {}
    if hp.get("clipnorm"):
        kw["clipnorm"] = float(hp["clipnorm"])
    if hp.get("ema"):
        kw.update(use_ema=True, ema_momentum=float(hp["ema"]))
    if kw.get("clipnorm") and model is not None:
        from alanet.train.models.parts_lstm import PartwiseClipAdam, part_splits

        splits = part_splits(model)
        if splits:  # grouped part LSTMs: clip every part's gradient alone, as separate LSTMs are
            return PartwiseClipAdam(lr, part_splits=splits, **kw)
    return keras.optimizers.Adam(lr, **kw)


def _compile(model, lr: float, hp: dict[str, Any], loss: str = "sparse_categorical_crossentropy") -> None:
    model.compile(_optimizer(lr, hp, model), loss, run_eagerly=EAGER)


def fit_model(name: str, hp: dict[str, Any], *, x: np.ndarray, mask: np.ndarray, y: np.ndarray,
              x_val: np.ndarray | None, y_val: np.ndarray | None, groups: list[list[int]], n_classes: int,
              mask_val: np.ndarray | None = None, seed: int = 0, strategy: str | None = None,
              progress: bool = True) -> FitResult:
    """Train ``name`` on (already augmented, normalised) windows; select on ``x_val``."""
    t0 = time.perf_counter()
    weights = class_weights(y, n_classes, str(hp.get("class_weight", "balanced")))
    if name in CLASSIC_MODELS:
        from alanet.train.models.classic import build_classic, n_params, window_statistics

        model = build_classic(name, hp, seed)
        model.fit(window_statistics(x, mask), y)
        if name == "knn":  # k-NN has no class weighting: it saw the natural prior
            weights = np.ones_like(weights)
        return FitResult(name, model, {}, time.perf_counter() - t0, n_params(model), 0, {}, weights.tolist())

    configure_tensorflow()
    import keras

    check_right_padded(mask)
    keras.utils.set_random_seed(seed)
    timesteps, channels = int(x.shape[1]), int(x.shape[2])
    val = None
    if x_val is not None and y_val is not None and len(x_val):
        mv = np.ones(x_val.shape[:2], bool) if mask_val is None else np.asarray(mask_val, bool)
        check_right_padded(mv)
        val = Validation([x_val, mv], np.asarray(y_val, np.int64), weights[np.asarray(y_val, np.int64)], n_classes)
    with get_strategy(strategy).scope():
        model = build_model(name, timesteps=timesteps, channels=channels, n_classes=n_classes, groups=groups,
                            hparams=hp)
    inputs, sw = [x, np.asarray(mask, bool)], weights[y]
    if name in ALANET_MODELS:
        history, selection = _fit_alanet(name, model, hp, inputs, y, sw, val, groups, strategy, progress)
    else:
        with get_strategy(strategy).scope():
            _compile(model, hp["lr"], hp)
        stage = Stage(name, int(hp["epochs"]), int(hp["batch"]), int(hp.get("min_steps", 0)), int(hp["patience"]))
        history, sel = train_stage(model, inputs, y, sw, val, None if val is None else val.y, stage, progress)
        selection = {"classifier": sel}
    epochs = sum(s.get("epochs_run", 0) for s in selection.values() if isinstance(s, dict))
    return FitResult(name, model, history, time.perf_counter() - t0, int(model.count_params()), epochs, selection,
                     weights.tolist())


def _fit_alanet(name: str, model, hp: dict[str, Any], inputs, y, sw, val: Validation | None, groups, strategy,
                progress) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Stage 1: autoencoder (masked MSE). Stage 2: end to end from its encoder, or the paper's frozen form."""
    import keras

    from alanet.train.models.alanet import alanet_autoencoder, alanet_parts_autoencoder, encoder_layer_names

    x, mask = inputs
    timesteps, channels = int(x.shape[1]), int(x.shape[2])
    history: dict[str, list[float]] = {}
    selection: dict[str, Any] = {}
    if int(hp["ae_epochs"]) > 0:
        with get_strategy(strategy).scope():
            if name == "alanet":
                ae = alanet_autoencoder(timesteps, channels, hp)
                cols = list(range(channels))
            else:
                ae = alanet_parts_autoencoder(timesteps, channels, groups, hp)
                cols = [i for g in groups for i in g]
            _compile(ae, hp["ae_lr"], hp, loss="mse")
        frame_w = mask.astype(np.float32)  # reconstruct real frames only (per-frame loss weights)
        ae_val = None if val is None else Validation(val.inputs, val.y, val.inputs[1].astype(np.float32),
                                                     val.n_classes)
        stage = Stage(f"{name} autoencoder", int(hp["ae_epochs"]), int(hp["ae_batch"]), int(hp.get("ae_min_steps", 0)),
                      int(hp["patience"]), select="loss")
        ae_hist, selection["autoencoder"] = train_stage(ae, inputs, x[..., cols], frame_w, ae_val,
                                                        None if val is None else val.inputs[0][..., cols], stage,
                                                        progress)
        history.update({f"ae_{k}": v for k, v in ae_hist.items()})
        for layer in encoder_layer_names(model):
            model.get_layer(layer).set_weights(ae.get_layer(layer).get_weights())

    classifier = Stage(f"{name} classifier", int(hp["epochs"]), int(hp["batch"]), int(hp.get("min_steps", 0)),
                       int(hp["patience"]))
    if hp.get("encoder", "finetune") == "finetune":
        with get_strategy(strategy).scope():
            _compile(model, hp["lr"], hp)
        h, selection["classifier"] = train_stage(model, inputs, y, sw, val, None if val is None else val.y,
                                                 classifier, progress)
        history.update(h)
        return history, selection

    # The paper's form: the encoder is frozen; its features are computed once and only the head trains.
    for layer in encoder_layer_names(model):
        model.get_layer(layer).trainable = False
    encoder = keras.Model(model.inputs, model.get_layer("encoder_features").output)
    feats = encoder.predict(inputs, batch_size=256, verbose=0)
    head = model.get_layer("head")
    head_val = None
    if val is not None:
        head_val = Validation([encoder.predict(val.inputs, batch_size=256, verbose=0), val.inputs[1]], val.y,
                              val.sample_weight, val.n_classes)
    with get_strategy(strategy).scope():
        _compile(head, hp["lr"], hp)
    h, selection["head"] = train_stage(head, [feats, mask], y, sw, head_val, None if val is None else val.y,
                                       classifier, progress)
    history.update(h)
    if hp.get("finetune"):
        before = [w.copy() for w in model.get_weights()]
        for layer in encoder_layer_names(model):
            model.get_layer(layer).trainable = True
        with get_strategy(strategy).scope():
            _compile(model, hp["finetune_lr"], hp)
        ft = Stage(f"{name} fine-tune", int(hp["finetune_epochs"]), int(hp["batch"]), 0, int(hp["patience"]))
        h, sel = train_stage(model, inputs, y, sw, val, None if val is None else val.y, ft, progress)
        history.update({f"finetune_{k}": v for k, v in h.items()})
        head_f1 = selection["head"].get("val_macro_f1")
        kept = head_f1 is None or sel.get("val_macro_f1", -1.0) > head_f1
        if not kept:
            model.set_weights(before)  # fine-tuning did worse on validation: keep the head-only model
        selection["finetune"] = {**sel, "kept": bool(kept)}
    return history, selection


def predict_proba(result: FitResult, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Class probabilities [N, n_classes] (classic models without probabilities: one-hot)."""
    if result.classic:
        from alanet.train.models.classic import window_statistics

        return classic_proba(result.model, window_statistics(x, mask))
    return keras_proba(result.model, x, mask)


def keras_proba(model, x: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """A Keras classifier's probabilities on windows (+ their padding mask)."""
    from alanet.train.models import model_inputs

    if len(x) == 0:
        return np.zeros((0, model.output_shape[-1]), np.float32)
    return np.asarray(model.predict(model_inputs(model, x, mask), batch_size=256, verbose=0))


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
