"""ALANet (Yuan & Mahmoud): an LSTM autoencoder learns a compact encoding of each
window; its encoder's sequence output feeds a temporal + bodily attention classifier.

Two stages: (1) the autoencoder is trained to reconstruct windows (MSE); (2) its
encoder is frozen, its features are computed once, and only the attention head is
trained on them (optionally followed by end-to-end fine-tuning). The inference model
is the encoder composed with the head, one Keras model.

``alanet-parts`` (the paper's Table II) gives every body part its own autoencoder;
the head's bodily attention then weighs the parts.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from alanet.train.models.layers import DropMask, SelectChannels, body_attention, temporal_attention

DEFAULTS: dict[str, Any] = {
    "units": 32,  # encoder / decoder LSTM size
    "ae_epochs": 20, "ae_lr": 0.001, "ae_batch": 40,  # autoencoder: MSE, Adam defaults
    "epochs": 50, "lr": 0.003, "batch": 40, "patience": 8,  # attention classifier
    "finetune": False, "finetune_epochs": 10, "finetune_lr": 1e-4,
    "augment_copies": 1,
}
PARTS_DEFAULTS: dict[str, Any] = {**DEFAULTS, "units": 8}


def _masked_input(timesteps: int, channels: int, masking: bool, batch_size: int | None):
    inp = keras.Input((timesteps, channels), batch_size=batch_size, name="window")
    return inp, (layers.Masking(0.0, name="masking")(inp) if masking else inp)


def attention_head(timesteps: int, features: int, n_parts: int, n_classes: int) -> keras.Model:
    """The ALANet classifier on encoder features [B, T, F] → class probabilities.

    Temporal attention pools the frames; bodily attention re-weights the pooled
    features in ``n_parts`` blocks (one per encoder unit, or one per body part).
    """
    seq = keras.Input((timesteps, features), name="encoder_sequence")
    context = temporal_attention(seq, name="temporal_attention")
    context = body_attention(context, n_parts, name="body_attention")
    out = layers.Dense(n_classes, activation="softmax", name="output")(context)
    return keras.Model(seq, out, name="head")


def alanet_autoencoder(timesteps: int, channels: int, hp: dict[str, Any]) -> keras.Model:
    """Masking → LSTM encoder → RepeatVector → LSTM decoder → TimeDistributed Dense."""
    inp, x = _masked_input(timesteps, channels, True, None)
    _, state_h, _ = layers.LSTM(hp["units"], return_sequences=True, return_state=True, name="encoder_lstm")(x)
    z = layers.RepeatVector(timesteps, name="repeat")(state_h)
    d = layers.LSTM(hp["units"], return_sequences=True, name="decoder_lstm")(z)
    out = layers.TimeDistributed(layers.Dense(channels), name="reconstruction")(d)
    return keras.Model(inp, out, name="alanet_autoencoder")


def alanet(timesteps: int, channels: int, n_classes: int, groups: list[list[int]], hp: dict[str, Any],
           unroll: bool = False, masking: bool = True, batch_size: int | None = None) -> keras.Model:
    """The full ALANet classifier: window → encoder LSTM (sequence) → attention head."""
    inp, x = _masked_input(timesteps, channels, masking, batch_size)
    seq = layers.LSTM(hp["units"], return_sequences=True, unroll=unroll, name="encoder_lstm")(x)
    feats = DropMask(name="encoder_features")(seq)
    out = attention_head(timesteps, hp["units"], hp["units"], n_classes)(feats)
    return keras.Model(inp, out, name="alanet")


def alanet_parts_autoencoder(timesteps: int, channels: int, groups: list[list[int]], hp: dict[str, Any]) -> keras.Model:
    """One autoencoder per body part, trained together (disjoint weights, summed MSE).

    The output is every part's reconstruction concatenated in ``groups`` order; the
    target is ``x[..., concat(groups)]``.
    """
    inp, x = _masked_input(timesteps, channels, True, None)
    outs = []
    for p, idx in enumerate(groups):
        xp = SelectChannels(idx, name=f"part_{p}")(x)
        _, h, _ = layers.LSTM(hp["units"], return_sequences=True, return_state=True, name=f"encoder_lstm_{p}")(xp)
        d = layers.LSTM(hp["units"], return_sequences=True, name=f"decoder_lstm_{p}")(
            layers.RepeatVector(timesteps, name=f"repeat_{p}")(h))
        outs.append(layers.TimeDistributed(layers.Dense(len(idx)), name=f"reconstruction_{p}")(d))
    out = outs[0] if len(outs) == 1 else layers.Concatenate(name="reconstruction")(outs)
    return keras.Model(inp, out, name="alanet_parts_autoencoder")


def alanet_parts(timesteps: int, channels: int, n_classes: int, groups: list[list[int]], hp: dict[str, Any],
                 unroll: bool = False, masking: bool = True, batch_size: int | None = None) -> keras.Model:
    """ALANet with one encoder per body part; bodily attention weighs the parts."""
    inp, x = _masked_input(timesteps, channels, masking, batch_size)
    seqs = [layers.LSTM(hp["units"], return_sequences=True, unroll=unroll, name=f"encoder_lstm_{p}")(
        SelectChannels(idx, name=f"part_{p}")(x)) for p, idx in enumerate(groups)]
    seq = seqs[0] if len(seqs) == 1 else layers.Concatenate(name="parts")(seqs)
    feats = DropMask(name="encoder_features")(seq)
    out = attention_head(timesteps, hp["units"] * len(groups), len(groups), n_classes)(feats)
    return keras.Model(inp, out, name="alanet_parts")


def encoder_layer_names(model: keras.Model) -> list[str]:
    """Names of the encoder LSTMs, shared by the autoencoder and the classifier."""
    return [layer.name for layer in model.layers if layer.name.startswith("encoder_lstm")]
