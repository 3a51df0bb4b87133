"""Default hyperparameters of every neural model (no Keras import here, so the
registry and the CLI can show them without loading TensorFlow).

Shared by every neural model (the same training fixes everywhere):

- ``min_steps``: an optimizer-step floor per stage, so a small dataset (40 windows
  = one batch per epoch) still gets enough updates; an explicit ``--epochs`` turns
  the floors off;
- ``patience``: early stopping on the inner-validation macro F1 (ties broken by the
  class-weighted validation loss), never before the step floor is reached; the best
  epoch's weights are kept;
- ``class_weight``: ``balanced`` (inverse class frequency in the loss) or ``none``,
  independent of augmentation (``augment_copies`` copies of every fitting window,
  each one random transform of ``augment_kinds``);
- ``refit``: ``auto`` retrains on fitting + validation windows for the selected number
  of steps when there are fewer than 2,000 fitting windows (the validation share is
  then a large part of the data); ``always`` / ``never``.
"""

from __future__ import annotations

from typing import Any

PAPER_AUGMENT = ["jitter", "zero_frames", "zero_parts"]  # the paper's augmentation (see alanet.train.augment)
ALANET_AUGMENT = [*PAPER_AUGMENT, "scale"]  # + per-channel gain/offset: measured better across participants

ALANET: dict[str, Any] = {
    "units": 32,  # encoder / decoder LSTM size
    "encoder": "finetune",  # finetune (end to end from the autoencoder) | frozen (the paper's form)
    "ae_epochs": 10, "ae_lr": 0.001, "ae_batch": 40, "ae_min_steps": 300,  # autoencoder: masked MSE, Adam
    "epochs": 60, "lr": 0.003, "batch": 40, "patience": 10, "min_steps": 600,  # classifier
    "finetune": False, "finetune_epochs": 10, "finetune_lr": 1e-4,  # frozen only: fine-tune at the end
    # What makes it generalise across people (measured, docs/training.md): the bodily attention
    # rescaled (layers.PartWeighting), dropout on the encoder sequence, an exponential moving
    # average of the weights, gain/offset augmentation, and on small datasets a refit.
    "clipnorm": 1.0, "dropout": 0.3, "ema": 0.99,
    "class_weight": "balanced", "augment_copies": 1, "augment_kinds": ALANET_AUGMENT, "refit": "auto",
}
# group_parts: every body part's LSTM runs in one layer (parts_lstm.PartsLSTM): the same parameters
# (stacked), outputs and training steps as one Keras LSTM per part (tested; group_parts=false), faster.
ALANET_PARTS: dict[str, Any] = {**ALANET, "units": 8, "group_parts": True}
BANET: dict[str, Any] = {
    # fold_parts: the shared LSTM stack runs once on the body parts folded into the batch --
    # the same weights and outputs as the published per-part loop (tested), ~5x faster.
    "units": 8, "layers": 3, "dropout": 0.5, "fold_parts": True, "head": "published",
    "epochs": 80, "lr": 0.003, "batch": 40, "patience": 10, "min_steps": 600,
    "class_weight": "balanced", "augment_copies": 1, "augment_kinds": PAPER_AUGMENT, "refit": "auto",
}
STACKED_LSTM: dict[str, Any] = {
    "units": 32, "layers": 3, "dropout": 0.5,
    "epochs": 50, "lr": 0.001, "batch": 20, "patience": 10, "min_steps": 600,
    "class_weight": "balanced", "augment_copies": 1, "augment_kinds": PAPER_AUGMENT, "refit": "auto",
}
NEURAL: dict[str, dict[str, Any]] = {"alanet": ALANET, "alanet-parts": ALANET_PARTS, "banet": BANET,
                                     "stacked-lstm": STACKED_LSTM}
ENCODER_MODES = ("finetune", "frozen")
BANET_HEADS = ("published", "pooled")
CLASS_WEIGHTS = ("balanced", "none")
REFIT_MODES = ("auto", "always", "never")
