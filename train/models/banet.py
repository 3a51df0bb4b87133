"""BANet (Wang et al., ACIIW 2019), as published: one shared 3-layer LSTM (8 units,
dropout 0.5) encodes every body part (in EmoPain the 13 angle/energy pairs) in turn,
a temporal attention per part (1×1 Conv1D, softmax over time, weighted sum) pools its
frames, and the bodily attention of the authors' code weighs the [units × parts]
tensor: Dense(parts, tanh) → Dense(parts, softmax) over the parts axis, multiplied in,
flattened (8 × 13 = 104 features) into the softmax. Adam 0.003, batch 40, 80 epochs.

``head="pooled"`` keeps this toolkit's earlier variant (each part scored alone by
Dense(tanh) → Dense(1), softmax across parts, weighted sum to ``units`` features).

The part loop calls the shared LSTM once per part, which is what makes BANet slow to
train; ``fold_parts=True`` builds the same network with the parts folded into the
batch (one LSTM call, identical weights and outputs, ~5× faster).
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from alanet.train.models import defaults
from alanet.train.models.layers import (FoldMask, FoldParts, SelectChannels, StackParts, TakePart, WeightedSum,
                                        padding_mask_input, temporal_attention)

DEFAULTS = defaults.BANET


def _padded(groups: list[list[int]]) -> list[list[int]]:
    """Pad every part to the widest one with zero channels (-1) so one LSTM fits all."""
    width = max(len(g) for g in groups)
    return [list(g) + [-1] * (width - len(g)) for g in groups]


def banet(timesteps: int, channels: int, n_classes: int, groups: list[list[int]], hp: dict[str, Any],
          unroll: bool = False, masking: bool = True, batch_size: int | None = None) -> keras.Model:
    window = keras.Input((timesteps, channels), batch_size=batch_size, name="window")
    mask = padding_mask_input(timesteps, batch_size) if masking else None
    # One LSTM stack shared by every body part.
    shared = [layers.LSTM(hp["units"], return_sequences=True, unroll=unroll, name=f"shared_lstm_{i}")
              for i in range(hp["layers"])]
    drops = [layers.Dropout(hp["dropout"], name=f"shared_dropout_{i}") for i in range(hp["layers"])]
    parts_idx = _padded(groups)
    n_parts = len(parts_idx)
    part_vectors = []
    if hp.get("fold_parts"):
        # Same network, parts folded into the batch: one call of the shared stack.
        fold = FoldParts(n_parts, name="fold_parts")
        h = fold(SelectChannels([i for idx in parts_idx for i in idx], name="parts_side_by_side")(window))
        fmask = FoldMask(n_parts, name="fold_mask")(mask) if mask is not None else None
        for lstm, drop in zip(shared, drops):
            h = drop(lstm(h, mask=fmask))
        for p in range(n_parts):
            hp_ = TakePart(n_parts, p, name=f"part_{p}_sequence")(h)
            part_vectors.append(temporal_attention(hp_, name=f"temporal_attention_{p}", mask=mask))
    else:
        # As published: the shared stack is called once per body part.
        for p, idx in enumerate(parts_idx):
            h = SelectChannels(idx, name=f"part_{p}")(window)
            for lstm, drop in zip(shared, drops):
                h = drop(lstm(h, mask=mask))
            part_vectors.append(temporal_attention(h, name=f"temporal_attention_{p}", mask=mask))
    parts = StackParts(name="parts")(part_vectors)  # [B, P, units]
    if hp.get("head", "published") == "published":
        # The authors' bodily attention: weights over the parts axis for every unit.
        data = layers.Permute((2, 1), name="units_by_parts")(parts)  # [B, units, P]
        a = layers.Dense(n_parts, activation="tanh", name="body_attention_hidden")(data)
        weights = layers.Dense(n_parts, activation="softmax", name="body_attention")(a)  # [B, units, P]
        weighted = layers.Multiply(name="body_attention_apply")([data, weights])
        features = layers.Flatten(name="body_features")(weighted)  # units × P
    else:
        hidden = layers.Dense(hp["units"], activation="tanh", name="body_attention_hidden")(parts)
        score = layers.Dense(1, name="body_attention_score")(hidden)
        weights = layers.Softmax(axis=1, name="body_attention")(score)  # [B, P, 1]
        features = WeightedSum(name="body_attention_pool")([parts, weights])
    out = layers.Dense(n_classes, activation="softmax", name="output")(features)
    return keras.Model([window, mask] if masking else window, out, name="banet")
