"""Model registry: ALANet, ALANet per body part, BANet, Stacked-LSTM, classic baselines.

``build_model`` returns the full classifier (window [B, T, C], already normalised,
and with ``masking=True`` its padding mask [B, T] → softmax [B, n_classes]). Its
weight list does not depend on ``unroll``, ``masking`` or ``batch_size``, so an
inference copy (one input: a streamed window is always full) takes the trained
weights::

    infer = build_model(name, ..., unroll=True, masking=False, batch_size=1)
    infer.set_weights(trained.get_weights())

TensorFlow is imported only when a neural model is built.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

from alanet.train.models import classic as _classic
from alanet.train.models import defaults as _neural

NEURAL_MODELS = frozenset({"alanet", "alanet-parts", "banet", "stacked-lstm"})
CLASSIC_MODELS = frozenset({"knn", "svm", "rf"})
ALL_MODELS = tuple(sorted(NEURAL_MODELS)) + tuple(sorted(CLASSIC_MODELS))


def _defaults() -> dict[str, dict[str, Any]]:
    return {**{k: dict(v) for k, v in _neural.NEURAL.items()},
            **{k: {**v, "augment_copies": 1, "augment_kinds": list(_neural.PAPER_AUGMENT)}
               for k, v in _classic.DEFAULTS.items()}}


DEFAULT_HPARAMS: dict[str, dict[str, Any]] = _defaults()


def hparams_for(name: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Defaults of ``name`` updated with ``overrides`` (unknown keys rejected)."""
    if name not in DEFAULT_HPARAMS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(ALL_MODELS)}")
    hp = copy.deepcopy(DEFAULT_HPARAMS[name])
    unknown = sorted(set(overrides or {}) - set(hp))
    if unknown:
        raise ValueError(f"unknown hyperparameter(s) for {name}: {', '.join(unknown)}")
    hp.update(overrides or {})
    kinds = hp.get("augment_kinds")
    if kinds is not None:
        from alanet.train.augment import KINDS

        if not isinstance(kinds, list) or not kinds or any(k not in KINDS for k in kinds):
            raise ValueError(f"hyperparameter augment_kinds={kinds!r} for {name}: a non-empty list from "
                             f"{', '.join(KINDS)}")
    for key, allowed in (("encoder", _neural.ENCODER_MODES), ("head", _neural.BANET_HEADS),
                         ("class_weight", _neural.CLASS_WEIGHTS), ("refit", _neural.REFIT_MODES)):
        if key in hp and hp[key] not in allowed:
            raise ValueError(f"hyperparameter {key}={hp[key]!r} for {name}: choose from {', '.join(allowed)}")
    return hp


def model_inputs(model, x, mask=None):
    """What ``model`` takes: ``[x, mask]`` for a training model (window + padding mask; an
    absent mask means every frame is real), ``x`` for an inference copy."""
    import numpy as np

    if len(model.inputs) == 1:
        return x
    if mask is None:
        mask = np.ones(np.shape(x)[:2], bool)
    return [x, np.asarray(mask, bool)]


def build_model(name: str, *, timesteps: int, channels: int, n_classes: int, groups: list[list[int]],
                hparams: dict[str, Any], unroll: bool = False, masking: bool = True,
                batch_size: int | None = None):
    """The full Keras classifier ``name``: [B, timesteps, channels] (+ mask) → softmax [B, n_classes]."""
    if name in CLASSIC_MODELS:
        raise ValueError(f"{name} is a scikit-learn model, not a Keras model")
    with warnings.catch_warnings():
        # Layers after an LSTM called with a mask drop the time mask by design (attention
        # takes the padding mask explicitly; at inference every window is full).
        warnings.filterwarnings("ignore", message=r".*does not support masking.*")
        return _build(name, timesteps, channels, n_classes, groups, hparams, unroll, masking, batch_size)


def _build(name, timesteps, channels, n_classes, groups, hparams, unroll, masking, batch_size):
    hp = {**DEFAULT_HPARAMS.get(name, {}), **hparams}
    kw = dict(unroll=unroll, masking=masking, batch_size=batch_size)
    args = (int(timesteps), int(channels), int(n_classes), [list(map(int, g)) for g in groups], hp)
    if name == "alanet":
        from alanet.train.models.alanet import alanet
        return alanet(*args, **kw)
    if name == "alanet-parts":
        from alanet.train.models.alanet import alanet_parts
        return alanet_parts(*args, **kw)
    if name == "banet":
        from alanet.train.models.banet import banet
        return banet(*args, **kw)
    if name == "stacked-lstm":
        from alanet.train.models.stacked_lstm import stacked_lstm
        return stacked_lstm(*args, **kw)
    raise ValueError(f"unknown model {name!r}; choose from {', '.join(ALL_MODELS)}")


def custom_objects() -> dict[str, Any]:
    """Import the custom layers (registers them) and return them for ``load_model``."""
    from alanet.train.models import layers, parts_lstm

    return {c.__name__: c for c in (layers.DropMask, layers.SelectChannels, layers.WeightedSum, layers.PartWeighting, layers.StackParts,
                                        layers.FoldParts, layers.FoldMask, layers.TakePart, layers.FrameMask,
                                        parts_lstm.PartsLSTM, parts_lstm.PartsLSTMCell, parts_lstm.PartsDense)}
