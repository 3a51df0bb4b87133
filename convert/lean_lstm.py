"""The ``unrolled`` route's LSTM: the same weights and outputs as a Keras LSTM, in fewer TFLite ops.

A Keras LSTM unrolled for conversion does, at every one of the window's time steps,
a matrix product of that frame with the input kernel, a bias add, a matrix product
of the state with the recurrent kernel, and the gates (14 TFLite operators per step).
This layer computes the input side for all frames at once (one matrix product over
``[B·T, C]``, bias included), then per step only the recurrent product and the gates,
with the gate columns reordered (input, forget, output | cell) so that one sigmoid and
one tanh cover them (11 operators per step, none of them on the input). The
arithmetic is the LSTM's (tanh cell, sigmoid gates); the graph has ~20 % fewer
operators and runs as fast (measured in models/README.md).

Used only in inference copies (:func:`alanet.convert.export.inference_copy`): no
mask, no initial state, no dropout, forward in time. Anything else falls back to
the Keras computation.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="alanet")
class LeanLSTM(keras.layers.LSTM):
    """``keras.layers.LSTM`` whose unmasked forward pass is written out step by step, lean."""

    def _lean(self, sequences: Any, initial_state: Any, mask: Any, training: bool) -> bool:
        return (initial_state is None and mask is None and not training and not self.go_backwards
                and sequences.shape[1] is not None and sequences.shape[2] is not None
                and not self.stateful and self.cell.activation is keras.activations.tanh
                and self.cell.recurrent_activation is keras.activations.sigmoid)

    def call(self, sequences, initial_state=None, mask=None, training=False):
        if not self._lean(sequences, initial_state, mask, training):
            return super().call(sequences, initial_state=initial_state, mask=mask, training=training)
        u = self.units
        steps, channels = int(sequences.shape[1]), int(sequences.shape[2])

        def ifo_c(w):  # Keras keeps the gates as (input, forget, cell, output) columns
            return ops.concatenate([w[..., :2 * u], w[..., 3 * u:], w[..., 2 * u:3 * u]], axis=-1)

        kernel, recurrent = ifo_c(self.cell.kernel), ifo_c(self.cell.recurrent_kernel)
        proj = ops.matmul(ops.reshape(sequences, (-1, channels)), kernel)
        if self.cell.use_bias:
            proj = proj + ifo_c(self.cell.bias)
        frames = ops.unstack(ops.reshape(proj, (-1, steps, 4 * u)), axis=1)
        h = c = None
        out = []
        for z in frames:
            if h is not None:
                z = ops.matmul(h, recurrent) + z
            gates, cand = ops.split(z, [3 * u], axis=-1)
            i, f, o = ops.split(ops.sigmoid(gates), 3, axis=-1)
            ic = i * ops.tanh(cand)
            c = ic if c is None else f * c + ic
            h = o * ops.tanh(c)
            out.append(h)
        y = ops.stack(out, axis=1) if self.return_sequences else h
        return [y, h, c] if self.return_state else y
