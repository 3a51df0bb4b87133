"""ALANet (Yuan & Mahmoud): an LSTM autoencoder learns a compact encoding of each
window; its encoder's sequence output feeds a temporal + bodily attention classifier.

Training (see :mod:`alanet.train.fit`): (1) the autoencoder is trained to reconstruct
windows (MSE over real frames); (2) the classifier starts from its encoder and is
trained end to end, encoder and attention head together (``encoder="finetune"``, the
default: a frozen encoder's features cap what the head can learn). The paper's form,
``encoder="frozen"`` (only the head trains, on features computed once; optionally
followed by end-to-end fine-tuning, kept only when it does better on validation),
stays available. The inference model is the encoder composed with the head, one
Keras model.

Training models take two inputs, the window and its padding mask (``masking=True``);
the inference copy (``masking=False``) takes the window alone: a streamed window is
always full. Both have the same weights.

``alanet-parts`` (the paper's Table II) gives every body part its own autoencoder;
the head's bodily attention then weighs the parts. With ``group_parts`` (the default)
the parts' LSTMs run as one layer (:class:`~alanet.train.models.parts_lstm.PartsLSTM`:
the same parameters stacked in three variables, the same outputs, one recurrent loop
instead of P); ``group_parts=False`` builds one Keras LSTM per part, as before.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from alanet.train.models import defaults
from alanet.train.models.layers import (DropMask, SelectChannels, body_attention, padding_mask_input,
                                        temporal_attention)
from alanet.train.models.parts_lstm import PartsDense, PartsLSTM

DEFAULTS = defaults.ALANET
PARTS_DEFAULTS = defaults.ALANET_PARTS


def _inputs(timesteps: int, channels: int, masking: bool, batch_size: int | None):
    """(model inputs, window tensor, padding mask tensor or None)."""
    window = keras.Input((timesteps, channels), batch_size=batch_size, name="window")
    if not masking:
        return window, window, None
    mask = padding_mask_input(timesteps, batch_size)
    return [window, mask], window, mask


def attention_head(timesteps: int, features: int, n_parts: int, n_classes: int, masking: bool = False) -> keras.Model:
    """The ALANet classifier on encoder features [B, T, F] (+ mask) → class probabilities.

    Temporal attention pools the frames; bodily attention re-weights the pooled
    features in ``n_parts`` blocks (one per encoder unit, or one per body part).
    """
    seq = keras.Input((timesteps, features), name="encoder_sequence")
    mask = padding_mask_input(timesteps, None) if masking else None
    context = temporal_attention(seq, name="temporal_attention", mask=mask)
    context = body_attention(context, n_parts, name="body_attention")
    out = layers.Dense(n_classes, activation="softmax", name="output")(context)
    return keras.Model([seq, mask] if masking else seq, out, name="head")


def alanet_autoencoder(timesteps: int, channels: int, hp: dict[str, Any]) -> keras.Model:
    """LSTM encoder → RepeatVector(last state) → LSTM decoder → TimeDistributed Dense.

    Inputs: window and padding mask (the encoder skips padded frames; the last state is
    the state after the last real frame).
    """
    inputs, x, mask = _inputs(timesteps, channels, True, None)
    _, state_h, _ = layers.LSTM(hp["units"], return_sequences=True, return_state=True, name="encoder_lstm")(x, mask=mask)
    z = layers.RepeatVector(timesteps, name="repeat")(state_h)
    d = layers.LSTM(hp["units"], return_sequences=True, name="decoder_lstm")(z)
    out = layers.TimeDistributed(layers.Dense(channels), name="reconstruction")(d)
    return keras.Model(inputs, out, name="alanet_autoencoder")


def alanet(timesteps: int, channels: int, n_classes: int, groups: list[list[int]], hp: dict[str, Any],
           unroll: bool = False, masking: bool = True, batch_size: int | None = None) -> keras.Model:
    """The full ALANet classifier: window → encoder LSTM (sequence) → attention head."""
    inputs, x, mask = _inputs(timesteps, channels, masking, batch_size)
    seq = layers.LSTM(hp["units"], return_sequences=True, unroll=unroll, name="encoder_lstm")(x, mask=mask)
    feats = DropMask(name="encoder_features")(seq)
    if hp.get("dropout"):
        feats = layers.Dropout(hp["dropout"], name="encoder_dropout")(feats)
    head = attention_head(timesteps, hp["units"], hp["units"], n_classes, masking)
    out = head([feats, mask] if masking else feats)
    return keras.Model(inputs, out, name="alanet")


def alanet_parts_autoencoder(timesteps: int, channels: int, groups: list[list[int]], hp: dict[str, Any]) -> keras.Model:
    """One autoencoder per body part, trained together (disjoint weights, summed MSE).

    The output is every part's reconstruction concatenated in ``groups`` order; the
    target is ``x[..., concat(groups)]``. The encoder layer is the classifier's (same
    name, same weights).
    """
    inputs, x, mask = _inputs(timesteps, channels, True, None)
    units, sizes = hp["units"], [len(g) for g in groups]
    if hp.get("group_parts", True):
        xp = SelectChannels([i for g in groups for i in g], name="parts")(x)
        _, h, _ = PartsLSTM(units, sizes, return_sequences=True, return_state=True, name="encoder_lstm")(xp, mask=mask)
        d = PartsLSTM(units, [units] * len(groups), return_sequences=True, name="decoder_lstm")(
            layers.RepeatVector(timesteps, name="repeat")(h))
        out = PartsDense(units, sizes, name="reconstruction")(d)
        return keras.Model(inputs, out, name="alanet_parts_autoencoder")
    outs = []
    for p, idx in enumerate(groups):
        xp = SelectChannels(idx, name=f"part_{p}")(x)
        _, h, _ = layers.LSTM(units, return_sequences=True, return_state=True,
                              name=f"encoder_lstm_{p}")(xp, mask=mask)
        d = layers.LSTM(units, return_sequences=True, name=f"decoder_lstm_{p}")(
            layers.RepeatVector(timesteps, name=f"repeat_{p}")(h))
        outs.append(layers.TimeDistributed(layers.Dense(len(idx)), name=f"reconstruction_{p}")(d))
    out = outs[0] if len(outs) == 1 else layers.Concatenate(name="reconstruction")(outs)
    return keras.Model(inputs, out, name="alanet_parts_autoencoder")


def alanet_parts(timesteps: int, channels: int, n_classes: int, groups: list[list[int]], hp: dict[str, Any],
                 unroll: bool = False, masking: bool = True, batch_size: int | None = None) -> keras.Model:
    """ALANet with one encoder per body part; bodily attention weighs the parts."""
    inputs, x, mask = _inputs(timesteps, channels, masking, batch_size)
    units = hp["units"]
    if hp.get("group_parts", True):
        # Every part's encoder LSTM in one layer: [B, T, P*units], parts in ``groups`` order.
        xp = SelectChannels([i for g in groups for i in g], name="parts")(x)
        seq = PartsLSTM(units, [len(g) for g in groups], return_sequences=True, unroll=unroll,
                        name="encoder_lstm")(xp, mask=mask)
    else:
        seqs = [layers.LSTM(units, return_sequences=True, unroll=unroll, name=f"encoder_lstm_{p}")(
            SelectChannels(idx, name=f"part_{p}")(x), mask=mask) for p, idx in enumerate(groups)]
        seq = seqs[0] if len(seqs) == 1 else layers.Concatenate(name="parts")(seqs)
    feats = DropMask(name="encoder_features")(seq)
    head = attention_head(timesteps, units * len(groups), len(groups), n_classes, masking)
    out = head([feats, mask] if masking else feats)
    return keras.Model(inputs, out, name="alanet_parts")


def encoder_layer_names(model: keras.Model) -> list[str]:
    """Names of the encoder LSTMs, shared by the autoencoder and the classifier."""
    return [layer.name for layer in model.layers if layer.name.startswith("encoder_lstm")]
