"""P independent LSTMs (one per body part) run as one recurrent layer.

ALANet per body part gives every part its own encoder (and, for pretraining, its
own decoder) LSTM. Built as P separate Keras LSTMs, the graph holds P recurrent
loops for the forward pass and P more for the gradient, and tracing and running
them is most of the training time of a short run. :class:`PartsLSTM` holds the
same P weight sets (part ``p``: ``kernel_p`` [D_p, 4h], ``recurrent_kernel_p``
[h, 4h], ``bias_p`` [4h], Keras' gate order i, f, c, o, created in that order so the
weight list is the one P separate LSTMs give) and runs them in one loop:

- the input projections of every part are computed for all frames at once, before
  the loop (one matmul per part);
- each step multiplies the P hidden states by their own recurrent kernels in one
  batched matmul (``einsum("bph,phg->bpg")``).

Input: the parts side by side, [B, T, D_0 + … + D_{P-1}]. Output: every part's
hidden states side by side, [B, T, P·h] (or the last one), exactly what
``Concatenate`` of P separate LSTMs gives; with ``return_state`` the states are
[B, P·h] too. Masks behave as in a Keras LSTM (a masked frame keeps the state).

:class:`PartsDense` is the matching per-part ``Dense`` (the autoencoder's
reconstruction layer of every part).
"""

from __future__ import annotations

from typing import Any, Sequence

import keras
from keras import initializers, layers, ops

PACKAGE = "alanet"


def _split(x, sizes: Sequence[int]):
    """Split the last axis of ``x`` into consecutive pieces of ``sizes``."""
    if len(sizes) == 1:
        return [x]
    cuts, at = [], 0
    for s in sizes[:-1]:
        at += s
        cuts.append(at)
    return ops.split(x, cuts, axis=-1)


@keras.saving.register_keras_serializable(package=PACKAGE)
class PartsLSTMCell(layers.Layer):
    """The step of P independent LSTMs of ``units`` each, on input projections already made.

    Step input: [B, P·4h] (part ``p``'s pre-activations ``x_p·K_p + b_p`` in its own
    block); states h, c: [B, P·h]. The weights of every part are kept here (the layer
    computes the input projections with ``kernels`` and ``biases``).
    """

    def __init__(self, units: int, part_sizes: Sequence[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.units = int(units)
        self.part_sizes = [int(s) for s in part_sizes]
        self.n_parts = len(self.part_sizes)
        self.state_size = [self.n_parts * self.units, self.n_parts * self.units]
        self.output_size = self.n_parts * self.units

    def build(self, input_shape) -> None:  # type: ignore[override]
        h = self.units

        def bias_init(shape, dtype=None):  # Keras' unit_forget_bias: forget gate starts at 1
            return ops.concatenate([ops.zeros((h,), dtype), ops.ones((h,), dtype), ops.zeros((2 * h,), dtype)])

        self.kernels, self.recurrent_kernels, self.biases = [], [], []
        for p, d in enumerate(self.part_sizes):
            self.kernels.append(self.add_weight(shape=(d, 4 * h), name=f"kernel_{p}",
                                                initializer=initializers.GlorotUniform()))
            self.recurrent_kernels.append(self.add_weight(shape=(h, 4 * h), name=f"recurrent_kernel_{p}",
                                                          initializer=initializers.Orthogonal()))
            self.biases.append(self.add_weight(shape=(4 * h,), name=f"bias_{p}", initializer=bias_init))
        self.built = True

    def project(self, sequences):
        """Every part's input pre-activations for all frames: [B, T, ΣD] → [B, T, P·4h]."""
        pieces = _split(sequences, self.part_sizes)
        z = [ops.matmul(x, k) + b for x, k, b in zip(pieces, self.kernels, self.biases)]
        return z[0] if len(z) == 1 else ops.concatenate(z, axis=-1)

    def call(self, inputs, states):  # type: ignore[override]
        h_prev, c_prev = states
        p, h = self.n_parts, self.units
        recurrent = ops.reshape(ops.concatenate(self.recurrent_kernels, axis=0), (p, h, 4 * h))
        z = ops.reshape(inputs, (-1, p, 4 * h)) + ops.einsum("bph,phg->bpg", ops.reshape(h_prev, (-1, p, h)),
                                                              recurrent)
        zi, zf, zc, zo = ops.split(z, 4, axis=-1)
        c = ops.sigmoid(zf) * ops.reshape(c_prev, (-1, p, h)) + ops.sigmoid(zi) * ops.tanh(zc)
        out = ops.sigmoid(zo) * ops.tanh(c)
        out, c = ops.reshape(out, (-1, p * h)), ops.reshape(c, (-1, p * h))
        return out, [out, c]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "units": self.units, "part_sizes": self.part_sizes}


@keras.saving.register_keras_serializable(package=PACKAGE)
class PartsLSTM(layers.RNN):
    """P independent LSTMs of ``units`` each over parts given side by side (see the module)."""

    def __init__(self, units: int, part_sizes: Sequence[int], return_sequences: bool = False,
                 return_state: bool = False, unroll: bool = False, **kwargs: Any) -> None:
        kwargs.pop("cell", None)
        cell = PartsLSTMCell(units, part_sizes, dtype=kwargs.get("dtype"), name="parts_lstm_cell")
        super().__init__(cell, return_sequences=return_sequences, return_state=return_state, unroll=unroll, **kwargs)

    def build(self, sequences_shape, initial_state_shape=None) -> None:  # type: ignore[override]
        width = sequences_shape[-1]
        if width is not None and int(width) != sum(self.cell.part_sizes):
            raise ValueError(f"{self.name}: input has {width} channels, the parts {self.cell.part_sizes} "
                             f"add up to {sum(self.cell.part_sizes)}")
        super().build(sequences_shape, initial_state_shape)

    def call(self, sequences, initial_state=None, mask=None, training=False):  # type: ignore[override]
        # The input projection of every frame happens once, outside the recurrent loop.
        return super().call(self.cell.project(sequences), initial_state=initial_state, mask=mask,
                            training=training)

    def get_config(self) -> dict[str, Any]:
        return {**layers.Layer.get_config(self), "units": self.cell.units, "part_sizes": self.cell.part_sizes,
                "return_sequences": self.return_sequences, "return_state": self.return_state, "unroll": self.unroll}

    @classmethod
    def from_config(cls, config, custom_objects=None):  # type: ignore[override]
        return cls(**config)


@keras.saving.register_keras_serializable(package=PACKAGE)
class PartsDense(layers.Layer):
    """P independent ``Dense`` layers over parts side by side: [..., Σ in_p] → [..., Σ out_p].

    Part ``p`` has ``kernel_p`` [in_p, out_p] and ``bias_p`` [out_p] (the weights of
    P separate Dense layers, in their order).
    """

    def __init__(self, in_sizes: Sequence[int], out_sizes: Sequence[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.in_sizes = [int(s) for s in in_sizes]
        self.out_sizes = [int(s) for s in out_sizes]
        if len(self.in_sizes) != len(self.out_sizes):
            raise ValueError(f"{self.name}: {len(self.in_sizes)} input parts but {len(self.out_sizes)} output parts")

    def build(self, input_shape) -> None:  # type: ignore[override]
        self.kernels, self.biases = [], []
        for p, (i, o) in enumerate(zip(self.in_sizes, self.out_sizes)):
            self.kernels.append(self.add_weight(shape=(i, o), name=f"kernel_{p}",
                                                initializer=initializers.GlorotUniform()))
            self.biases.append(self.add_weight(shape=(o,), name=f"bias_{p}", initializer="zeros"))
        self.built = True

    def call(self, x):  # type: ignore[override]
        out = [ops.matmul(xp, k) + b for xp, k, b in zip(_split(x, self.in_sizes), self.kernels, self.biases)]
        return out[0] if len(out) == 1 else ops.concatenate(out, axis=-1)

    def compute_output_shape(self, input_shape):  # type: ignore[override]
        return (*input_shape[:-1], sum(self.out_sizes))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "in_sizes": self.in_sizes, "out_sizes": self.out_sizes}
