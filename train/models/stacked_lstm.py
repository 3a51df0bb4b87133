"""Stacked-LSTM baseline: three LSTM layers (32 units) with dropout 0.5, last state →
softmax (the paper's comparison baseline; Adam lr 0.001, batch 20)."""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from alanet.train.models import defaults
from alanet.train.models.layers import padding_mask_input

DEFAULTS = defaults.STACKED_LSTM


def stacked_lstm(timesteps: int, channels: int, n_classes: int, groups: list[list[int]], hp: dict[str, Any],
                 unroll: bool = False, masking: bool = True, batch_size: int | None = None) -> keras.Model:
    window = keras.Input((timesteps, channels), batch_size=batch_size, name="window")
    mask = padding_mask_input(timesteps, batch_size) if masking else None
    h = window
    for i in range(hp["layers"]):
        last = i == hp["layers"] - 1
        h = layers.LSTM(hp["units"], return_sequences=not last, unroll=unroll, name=f"lstm_{i}")(h, mask=mask)
        h = layers.Dropout(hp["dropout"], name=f"dropout_{i}")(h)
    out = layers.Dense(n_classes, activation="softmax", name="output")(h)
    return keras.Model([window, mask] if masking else window, out, name="stacked_lstm")
