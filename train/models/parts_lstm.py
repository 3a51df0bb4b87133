"""P independent LSTMs (one per body part) run as one recurrent layer.

ALANet per body part gives every part its own encoder (and, for pretraining, its
own decoder) LSTM. Built as P separate Keras LSTMs, the model has 3·P weight
variables and P recurrent loops (and P more for the gradient); Keras' training step
costs about half a second of tracing per variable on a 2-core CPU, and tracing, not
the epochs, was most of a short run. :class:`PartsLSTM` holds the same parameters
in three variables and runs every part in one loop:

- ``kernel`` [D_0 + … + D_{P-1}, 4h]: part ``p``'s input kernel in its own rows,
- ``recurrent_kernel`` [P·h, 4h]: part ``p``'s recurrent kernel in rows p·h … p·h+h-1,
- ``bias`` [P·4h]: part ``p``'s bias in its own block,

i.e. the P kernels of separate LSTMs stacked (Keras' gate order i, f, c, o inside
each). Each call spreads them into block-diagonal matrices (a constant 0/1 mask: no
weight of one part ever touches another part, and no gradient crosses either), so a
step is one LSTM step of P·h units; the input projection of every frame happens once,
before the loop.

Input: the parts side by side, [B, T, ΣD]. Output: every part's hidden states side by
side, [B, T, P·h] (or the last ones), exactly what ``Concatenate`` of P separate LSTMs
gives; with ``return_state`` the states are [B, P·h] too. Masks behave as in a Keras
LSTM (a masked frame keeps the state). :func:`stack_part_weights` turns the weights
of P separate LSTMs (or Dense layers) into this layout.

:class:`PartsDense` is the matching per-part ``Dense`` (every part's reconstruction
in the autoencoder).

A plain optimizer's per-variable gradient clipping (``clipnorm``) would clip the
parts' stacked kernels together; :class:`PartwiseClipAdam` (what ``train.fit`` uses
for these models) clips every part's block alone, so training takes the steps it takes
with separate LSTMs. On a GPU the step is Keras' generic loop, not the cuDNN kernel.
The weights are drawn part by part from the same initialisers as separate LSTMs, but
in another order: a seed gives other initial weights than the per-part form did.
"""

from __future__ import annotations

from typing import Any, Sequence

import keras
import numpy as np
from keras import initializers, layers, ops

PACKAGE = "alanet"


def _owner_mask(row_parts: Sequence[int], n_parts: int, blocks: int, width: int) -> np.ndarray:
    """[rows, blocks·P·width] 0/1: row r may reach the columns of part ``row_parts[r]`` in every block."""
    own = np.asarray(row_parts)[:, None] == np.arange(n_parts)[None, :]  # [rows, P]
    return np.repeat(np.tile(own[:, None, :], (1, blocks, 1)), width, axis=-1).reshape(len(row_parts), -1).astype(
        np.float32)


def _spread(w, n_parts: int, blocks: int, mask):
    """Stacked part weights [rows, blocks·w] → block-diagonal [rows, blocks·P·w] (columns: block, part, w)."""
    rows, width = w.shape[0], w.shape[1] // blocks
    tiled = ops.tile(ops.reshape(w, (rows, blocks, 1, width)), (1, 1, n_parts, 1))
    return ops.reshape(tiled, (rows, blocks * n_parts * width)) * mask


def _part_rows(sizes: Sequence[int]) -> list[int]:
    return [p for p, n in enumerate(sizes) for _ in range(n)]


def stack_part_weights(per_part: Sequence[Sequence[np.ndarray]], kind: str = "lstm") -> list[np.ndarray]:
    """The weights of P separate Keras layers (``kind`` "lstm": [kernel, recurrent_kernel,
    bias] each; "dense": [kernel, bias]) in the layout of :class:`PartsLSTM` / :class:`PartsDense`."""
    if kind == "lstm":
        return [np.concatenate([w[i] for w in per_part], axis=0) for i in range(3)]
    return [np.concatenate([w[0] for w in per_part], axis=1), np.concatenate([w[1] for w in per_part])]


@keras.saving.register_keras_serializable(package=PACKAGE)
class PartsLSTMCell(layers.Layer):
    """The step of P independent LSTMs of ``units`` each, on input projections already made.

    Step input: [B, 4·P·h] (pre-activations, gate-major: i, f, c, o of every part);
    states h, c: [B, P·h]. The cell holds the weights (see the module); the layer
    computes the input projections with :meth:`project`.
    """

    def __init__(self, units: int, part_sizes: Sequence[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.units = int(units)
        self.part_sizes = [int(s) for s in part_sizes]
        self.n_parts = len(self.part_sizes)
        self.state_size = [self.n_parts * self.units, self.n_parts * self.units]
        self.output_size = self.n_parts * self.units
        self.loop_recurrent = None  # set by PartsLSTM.call while its loop runs

    def build(self, input_shape) -> None:  # type: ignore[override]
        h, p = self.units, self.n_parts
        glorot, orthogonal = initializers.GlorotUniform(), initializers.Orthogonal()

        # Each part's block drawn as a separate Keras LSTM draws its own (Glorot's limit
        # depends on the part's width; orthogonality holds per part).
        def kernel_init(shape, dtype=None):
            return ops.concatenate([glorot((d, 4 * h), dtype) for d in self.part_sizes], axis=0)

        def recurrent_init(shape, dtype=None):
            return ops.concatenate([orthogonal((h, 4 * h), dtype) for _ in range(p)], axis=0)

        def bias_init(shape, dtype=None):  # Keras' unit_forget_bias: the forget gate starts at 1
            one = ops.concatenate([ops.zeros((h,), dtype), ops.ones((h,), dtype), ops.zeros((2 * h,), dtype)])
            return ops.tile(one, (p,))

        self.kernel = self.add_weight(shape=(sum(self.part_sizes), 4 * h), name="kernel", initializer=kernel_init)
        self.recurrent_kernel = self.add_weight(shape=(p * h, 4 * h), name="recurrent_kernel",
                                                initializer=recurrent_init)
        self.bias = self.add_weight(shape=(p * 4 * h,), name="bias", initializer=bias_init)
        self._kernel_mask = _owner_mask(_part_rows(self.part_sizes), p, 4, h)
        self._recurrent_mask = _owner_mask(_part_rows([h] * p), p, 4, h)
        self.built = True

    def _bias(self):
        """[P·4h] part-major → gate-major [4·P·h]."""
        b = ops.reshape(self.bias, (self.n_parts, 4, self.units))
        return ops.reshape(ops.transpose(b, (1, 0, 2)), (-1,))

    def project(self, sequences):
        """Every part's input pre-activations for all frames: [B, T, ΣD] → [B, T, 4·P·h]."""
        return ops.matmul(sequences, _spread(self.kernel, self.n_parts, 4, self._kernel_mask)) + self._bias()

    def recurrent_matrix(self):
        """The block-diagonal recurrent kernel [P·h, 4·P·h] (gate-major columns)."""
        return _spread(self.recurrent_kernel, self.n_parts, 4, self._recurrent_mask)

    def call(self, inputs, states):  # type: ignore[override]
        h_prev, c_prev = states
        recurrent = self.loop_recurrent if self.loop_recurrent is not None else self.recurrent_matrix()
        z = inputs + ops.matmul(h_prev, recurrent)
        zi, zf, zc, zo = ops.split(z, 4, axis=-1)
        c = ops.sigmoid(zf) * c_prev + ops.sigmoid(zi) * ops.tanh(zc)
        h = ops.sigmoid(zo) * ops.tanh(c)
        return h, [h, c]

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
        # The input projection of every frame and the block-diagonal recurrent kernel are
        # made once, outside the recurrent loop (the cell's steps read the kernel from
        # ``loop_recurrent`` while this call runs).
        self.cell.loop_recurrent = self.cell.recurrent_matrix()
        try:
            return super().call(self.cell.project(sequences), initial_state=initial_state, mask=mask,
                                training=training)
        finally:
            self.cell.loop_recurrent = None

    def get_config(self) -> dict[str, Any]:
        return {**layers.Layer.get_config(self), "units": self.cell.units, "part_sizes": self.cell.part_sizes,
                "return_sequences": self.return_sequences, "return_state": self.return_state, "unroll": self.unroll}

    @classmethod
    def from_config(cls, config, custom_objects=None):  # type: ignore[override]
        return cls(**config)


@keras.saving.register_keras_serializable(package=PACKAGE)
class PartsDense(layers.Layer):
    """P independent ``Dense`` layers over parts of ``units`` features side by side:
    [..., P·units] → [..., Σ out_p].

    ``kernel`` [units, Σ out_p] holds part ``p``'s kernel in its own columns, ``bias``
    [Σ out_p] its bias (see :func:`stack_part_weights`).
    """

    def __init__(self, units: int, out_sizes: Sequence[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.units = int(units)
        self.out_sizes = [int(s) for s in out_sizes]

    def build(self, input_shape) -> None:  # type: ignore[override]
        h, glorot = self.units, initializers.GlorotUniform()

        def kernel_init(shape, dtype=None):
            return ops.concatenate([glorot((h, o), dtype) for o in self.out_sizes], axis=1)

        self.kernel = self.add_weight(shape=(h, sum(self.out_sizes)), name="kernel", initializer=kernel_init)
        self.bias = self.add_weight(shape=(sum(self.out_sizes),), name="bias", initializer="zeros")
        own = np.asarray(_part_rows(self.out_sizes))[None, :] == np.arange(len(self.out_sizes))[:, None]
        self._mask = np.repeat(own, h, axis=0).astype(np.float32)  # [P·h, Σ out]: row block p → part p's columns
        self.built = True

    def call(self, x):  # type: ignore[override]
        spread = ops.tile(self.kernel, (len(self.out_sizes), 1)) * self._mask
        return ops.matmul(x, spread) + self.bias

    def compute_output_shape(self, input_shape):  # type: ignore[override]
        return (*input_shape[:-1], sum(self.out_sizes))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "units": self.units, "out_sizes": self.out_sizes}


def part_splits(model) -> dict[str, tuple[int, list[int]]]:
    """``{variable path: (axis, part sizes)}`` for the stacked part weights of ``model``
    (nested models included): where each part's own block lies in each variable."""
    out: dict[str, tuple[int, list[int]]] = {}
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, PartsLSTM):
            cell = layer.cell
            h, p = cell.units, cell.n_parts
            for v, sizes in ((cell.kernel, cell.part_sizes), (cell.recurrent_kernel, [h] * p),
                             (cell.bias, [4 * h] * p)):
                out[v.path] = (0, list(sizes))
        elif isinstance(layer, PartsDense):
            out[layer.kernel.path] = (1, list(layer.out_sizes))
            out[layer.bias.path] = (0, list(layer.out_sizes))
    return out


@keras.saving.register_keras_serializable(package=PACKAGE)
class PartwiseClipAdam(keras.optimizers.Adam):
    """Adam whose per-weight gradient clipping (``clipnorm``) treats every part's block of a
    stacked part weight (:func:`part_splits`) as the weight of its own: training then
    takes exactly the steps it takes with one Keras LSTM per part."""

    def __init__(self, *args: Any, part_splits: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.part_splits = {k: (int(a), [int(s) for s in sizes]) for k, (a, sizes) in (part_splits or {}).items()}
        self._clip_variables: list[Any] | None = None

    def _backend_apply_gradients(self, grads, trainable_variables):  # type: ignore[override]
        self._clip_variables = list(trainable_variables)
        try:
            return super()._backend_apply_gradients(grads, trainable_variables)
        finally:
            self._clip_variables = None

    def _clip_gradients(self, grads):  # type: ignore[override]
        variables = self._clip_variables
        if not (self.clipnorm and self.clipnorm > 0) or variables is None or len(variables) != len(grads):
            return super()._clip_gradients(grads)
        out = []
        for g, v in zip(grads, variables):
            split = self.part_splits.get(v.path)
            if g is None or split is None:
                out.append(g if g is None else self._clip_by_norm(g))
                continue
            axis, sizes = split
            cuts = list(np.cumsum(sizes)[:-1])
            out.append(ops.concatenate([self._clip_by_norm(piece) for piece in ops.split(g, cuts, axis=axis)],
                                       axis=axis))
        return out

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "part_splits": self.part_splits}
