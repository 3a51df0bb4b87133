"""Small serialisable layers shared by the models (all TFLite-friendly builtin ops).

Each layer is registered with Keras so a saved ``model.keras`` loads without custom
code beyond importing this module, and each one converts to plain TFLite builtins
(GATHER, MUL, SUM, RESHAPE, PACK).
"""

from __future__ import annotations

from typing import Any, Sequence

import keras
from keras import layers, ops

PACKAGE = "alanet"


@keras.saving.register_keras_serializable(package=PACKAGE)
class SelectChannels(layers.Layer):
    """Pick channels ``indices`` from [B, T, C]; ``-1`` inserts a zero channel (padding).

    Passes the time mask through, so ``Masking`` can sit before it.
    """

    def __init__(self, indices: Sequence[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.indices = [int(i) for i in indices]
        self.supports_masking = True

    def call(self, x):  # type: ignore[override]
        if any(i < 0 for i in self.indices):
            zero = ops.zeros_like(x[..., :1])
            x = ops.concatenate([x, zero], axis=-1)
            n = x.shape[-1] - 1
            idx = [n if i < 0 else i for i in self.indices]
        else:
            idx = self.indices
        return ops.take(x, idx, axis=-1)

    def compute_output_shape(self, input_shape):  # type: ignore[override]
        return (*input_shape[:-1], len(self.indices))

    def compute_mask(self, inputs, mask=None):  # type: ignore[override]
        return mask

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "indices": self.indices}


@keras.saving.register_keras_serializable(package=PACKAGE)
class DropMask(layers.Layer):
    """Identity that ends the time mask (padded frames only occur in training on short
    segments; attention layers after it see every frame, as at inference)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, x):  # type: ignore[override]
        return ops.copy(x)  # a new tensor: the mask travels as an attribute of the old one

    def compute_mask(self, inputs, mask=None):  # type: ignore[override]
        return None


@keras.saving.register_keras_serializable(package=PACKAGE)
class WeightedSum(layers.Layer):
    """Attention pooling: ``sum_t values[:, t, :] * weights[:, t, :]`` ([B,T,F], [B,T,1] → [B,F]).

    Also used across body parts ([B,P,F], [B,P,1] → [B,F]).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs):  # type: ignore[override]
        values, weights = inputs
        return ops.sum(values * weights, axis=1)

    def compute_output_shape(self, input_shape):  # type: ignore[override]
        values_shape = input_shape[0]
        return (values_shape[0], values_shape[2])

    def compute_mask(self, inputs, mask=None):  # type: ignore[override]
        return None


@keras.saving.register_keras_serializable(package=PACKAGE)
class PartWeighting(layers.Layer):
    """Bodily attention applied to a feature vector made of ``n_parts`` equal blocks.

    ``features`` [B, P*D] and ``weights`` [B, P] → every block scaled by its weight.
    With ``n_parts == F`` (D = 1) this is a plain element-wise product. ``scale``
    multiplies the (softmax, summing to 1) weights by P, so uniform attention leaves
    the features as they are; without it the classifier starts on features shrunk
    P-fold (32× for ALANet's units) and learns slowly (BasicMotions test accuracy
    0.65 → 1.0 with the same budget).
    """

    def __init__(self, n_parts: int, scale: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.n_parts = int(n_parts)
        self.scale = bool(scale)

    def call(self, inputs):  # type: ignore[override]
        features, weights = inputs
        if self.scale:
            weights = weights * float(self.n_parts)
        f = features.shape[-1]
        d = f // self.n_parts
        if d == 1:
            return features * weights
        blocks = ops.reshape(features, (-1, self.n_parts, d))
        return ops.reshape(blocks * ops.expand_dims(weights, -1), (-1, f))

    def compute_output_shape(self, input_shape):  # type: ignore[override]
        return input_shape[0]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "n_parts": self.n_parts, "scale": self.scale}


@keras.saving.register_keras_serializable(package=PACKAGE)
class StackParts(layers.Layer):
    """Stack P tensors [B, F] into [B, P, F] (BANet's per-part vectors)."""

    def call(self, inputs):  # type: ignore[override]
        return ops.stack(list(inputs), axis=1)

    def compute_output_shape(self, input_shape):  # type: ignore[override]
        first = input_shape[0]
        return (first[0], len(input_shape), first[1])

    def compute_mask(self, inputs, mask=None):  # type: ignore[override]
        return None


@keras.saving.register_keras_serializable(package=PACKAGE)
class FoldParts(layers.Layer):
    """[B, T, P*D] (parts side by side) → [B*P, T, D]: every part becomes a batch row.

    Row ``b*P + p`` holds part ``p`` of window ``b``; the time mask is repeated to match.
    """

    def __init__(self, n_parts: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.n_parts = int(n_parts)
        self.supports_masking = True

    def call(self, x):  # type: ignore[override]
        t, f = x.shape[1], x.shape[2]
        d = f // self.n_parts
        x = ops.reshape(x, (-1, t, self.n_parts, d))
        return ops.reshape(ops.transpose(x, (0, 2, 1, 3)), (-1, t, d))

    def compute_output_shape(self, input_shape):  # type: ignore[override]
        b = None if input_shape[0] is None else input_shape[0] * self.n_parts
        return (b, input_shape[1], input_shape[2] // self.n_parts)

    def compute_mask(self, inputs, mask=None):  # type: ignore[override]
        return None if mask is None else ops.repeat(mask, self.n_parts, axis=0)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "n_parts": self.n_parts}


@keras.saving.register_keras_serializable(package=PACKAGE)
class FoldMask(layers.Layer):
    """The padding mask [B, T] of windows → [B*P, T] for their folded parts (see FoldParts)."""

    def __init__(self, n_parts: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.n_parts = int(n_parts)

    def call(self, inputs):  # type: ignore[override]
        return ops.repeat(ops.cast(inputs, "bool"), self.n_parts, axis=0)

    def compute_output_shape(self, input_shape):  # type: ignore[override]
        b = None if input_shape[0] is None else input_shape[0] * self.n_parts
        return (b, *input_shape[1:])

    def compute_mask(self, inputs, mask=None):  # type: ignore[override]
        return None

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "n_parts": self.n_parts}


@keras.saving.register_keras_serializable(package=PACKAGE)
class TakePart(layers.Layer):
    """Part ``index`` of folded rows: [B*P, T, D] → [B, T, D]."""

    def __init__(self, n_parts: int, index: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.n_parts, self.index = int(n_parts), int(index)

    def call(self, x):  # type: ignore[override]
        t, d = x.shape[1], x.shape[2]
        return ops.reshape(x, (-1, self.n_parts, t, d))[:, self.index]

    def compute_output_shape(self, input_shape):  # type: ignore[override]
        b = None if input_shape[0] is None else input_shape[0] // self.n_parts
        return (b, input_shape[1], input_shape[2])

    def compute_mask(self, inputs, mask=None):  # type: ignore[override]
        return None

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "n_parts": self.n_parts, "index": self.index}


@keras.saving.register_keras_serializable(package=PACKAGE)
class FrameMask(layers.Layer):
    """The padding mask [B, T] (bool, True = real frame) as [B, T, 1], for attention."""

    def call(self, inputs):  # type: ignore[override]
        return ops.expand_dims(ops.cast(inputs, "bool"), -1)

    def compute_output_shape(self, input_shape):  # type: ignore[override]
        return (*input_shape, 1)

    def compute_mask(self, inputs, mask=None):  # type: ignore[override]
        return None


def padding_mask_input(timesteps: int, batch_size: int | None):
    """The second model input of a training model: True for real frames, False for padding.

    Masks come from the padding (where a short segment ended), never from the values,
    so frames that augmentation zeroes are still seen, and the mask is always
    right-padded (what the cuDNN LSTM kernel requires).
    """
    return keras.Input((timesteps,), batch_size=batch_size, dtype="bool", name="mask")


def temporal_attention(seq, name: str, mask=None):
    """Temporal attention (ALANet / BANet): 1×1 Conv1D score per frame, softmax over
    time (padded frames get weight 0), attention-weighted sum of the frames' features.
    [B,T,F] (+ mask [B,T]) → [B,F]."""
    seq = DropMask(name=f"{name}_input")(seq)
    score = layers.Conv1D(1, 1, name=f"{name}_score")(seq)
    if mask is None:
        weights = layers.Softmax(axis=1, name=name)(score)
    else:
        weights = layers.Softmax(axis=1, name=name)(score, mask=FrameMask(name=f"{name}_mask")(mask))
    return WeightedSum(name=f"{name}_pool")([seq, weights])


def body_attention(context, n_parts: int, name: str = "body_attention"):
    """Bodily attention: Dense(tanh) → Dense(softmax over ``n_parts``), multiplied into the
    context vector block by block. [B, P*D] → [B, P*D]."""
    f = context.shape[-1]
    hidden = layers.Dense(f, activation="tanh", name=f"{name}_hidden")(context)
    weights = layers.Dense(n_parts, activation="softmax", name=name)(hidden)
    return PartWeighting(n_parts, scale=True, name=f"{name}_apply")([context, weights])
