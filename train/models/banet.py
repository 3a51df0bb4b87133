"""BANet (Wang et al.), as published: one shared 3-layer LSTM encodes every body part
(the 13 angle/energy pairs in EmoPain) in turn, a temporal attention per part pools
its frames, and a body attention across parts weighs them before the softmax.

The part loop calls the shared LSTM once per part, which is what makes BANet slow to
train; ``fold_parts=True`` builds the same network with the parts folded into the
batch (one LSTM call, identical weights and outputs, ~3× faster).
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from alanet.train.models.layers import FoldParts, SelectChannels, StackParts, TakePart, WeightedSum, temporal_attention

DEFAULTS: dict[str, Any] = {
    "units": 8, "layers": 3, "dropout": 0.5, "fold_parts": False,
    "epochs": 50, "lr": 0.003, "batch": 40, "patience": 8,
    "augment_copies": 1,
}


def _padded(groups: list[list[int]]) -> list[list[int]]:
    """Pad every part to the widest one with zero channels (-1) so one LSTM fits all."""
    width = max(len(g) for g in groups)
    return [list(g) + [-1] * (width - len(g)) for g in groups]


def banet(timesteps: int, channels: int, n_classes: int, groups: list[list[int]], hp: dict[str, Any],
          unroll: bool = False, masking: bool = True, batch_size: int | None = None) -> keras.Model:
    inp = keras.Input((timesteps, channels), batch_size=batch_size, name="window")
    x = layers.Masking(0.0, name="masking")(inp) if masking else inp
    # One LSTM stack shared by every body part.
    shared = [layers.LSTM(hp["units"], return_sequences=True, unroll=unroll, name=f"shared_lstm_{i}")
              for i in range(hp["layers"])]
    drops = [layers.Dropout(hp["dropout"], name=f"shared_dropout_{i}") for i in range(hp["layers"])]
    parts_idx = _padded(groups)
    part_vectors = []
    if hp.get("fold_parts"):
        # Same network, parts folded into the batch: one call of the shared stack.
        h = FoldParts(len(parts_idx), name="fold_parts")(
            SelectChannels([i for idx in parts_idx for i in idx], name="parts_side_by_side")(x))
        for lstm, drop in zip(shared, drops):
            h = drop(lstm(h))
        for p in range(len(parts_idx)):
            hp_ = TakePart(len(parts_idx), p, name=f"part_{p}_sequence")(h)
            part_vectors.append(temporal_attention(hp_, name=f"temporal_attention_{p}"))
    else:
        # As published: the shared stack is called once per body part.
        for p, idx in enumerate(parts_idx):
            h = SelectChannels(idx, name=f"part_{p}")(x)
            for lstm, drop in zip(shared, drops):
                h = drop(lstm(h))
            part_vectors.append(temporal_attention(h, name=f"temporal_attention_{p}"))
    parts = StackParts(name="parts")(part_vectors)  # [B, P, units]
    # Body attention across parts: score each part, softmax over parts, weighted sum.
    hidden = layers.Dense(hp["units"], activation="tanh", name="body_attention_hidden")(parts)
    score = layers.Dense(1, name="body_attention_score")(hidden)
    weights = layers.Softmax(axis=1, name="body_attention")(score)  # [B, P, 1]
    pooled = WeightedSum(name="body_attention_pool")([parts, weights])
    out = layers.Dense(n_classes, activation="softmax", name="output")(pooled)
    return keras.Model(inp, out, name="banet")
