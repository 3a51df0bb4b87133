"""Stacked-LSTM baseline: three LSTM layers (32 units) with dropout 0.5, last state →
softmax (the paper's comparison baseline; Adam lr 0.001, batch 20)."""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

DEFAULTS: dict[str, Any] = {
    "units": 32, "layers": 3, "dropout": 0.5,
    "epochs": 50, "lr": 0.001, "batch": 20, "patience": 8,
    "augment_copies": 1,
}


def stacked_lstm(timesteps: int, channels: int, n_classes: int, groups: list[list[int]], hp: dict[str, Any],
                 unroll: bool = False, masking: bool = True, batch_size: int | None = None) -> keras.Model:
    inp = keras.Input((timesteps, channels), batch_size=batch_size, name="window")
    h = layers.Masking(0.0, name="masking")(inp) if masking else inp
    for i in range(hp["layers"]):
        last = i == hp["layers"] - 1
        h = layers.LSTM(hp["units"], return_sequences=not last, unroll=unroll, name=f"lstm_{i}")(h)
        h = layers.Dropout(hp["dropout"], name=f"dropout_{i}")(h)
    out = layers.Dense(n_classes, activation="softmax", name="output")(h)
    return keras.Model(inp, out, name="stacked_lstm")
