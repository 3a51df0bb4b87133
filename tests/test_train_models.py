"""Model registry: every neural model builds; an unrolled / mask-free / batch-1 copy
takes the trained weights and gives the same outputs; saved models load back; masks
come from padding only; BANet's published head."""

from __future__ import annotations

import numpy as np
import pytest

from alanet.train.models import CLASSIC_MODELS, DEFAULT_HPARAMS, NEURAL_MODELS, build_model, hparams_for, model_inputs

GROUPS = [[0, 3], [1, 4], [2, 5], [6, 7, 8]]
TINY = {"alanet": {"units": 6}, "alanet-parts": {"units": 3}, "banet": {"units": 3, "layers": 2},
        "stacked-lstm": {"units": 5, "layers": 2}}


def test_registry_names_and_defaults():
    assert NEURAL_MODELS == {"alanet", "alanet-parts", "banet", "stacked-lstm"}
    assert CLASSIC_MODELS == {"knn", "svm", "rf"}
    assert set(DEFAULT_HPARAMS) == NEURAL_MODELS | CLASSIC_MODELS
    assert DEFAULT_HPARAMS["alanet"]["lr"] == 0.003 and DEFAULT_HPARAMS["alanet"]["batch"] == 40
    assert DEFAULT_HPARAMS["alanet"]["encoder"] == "finetune"
    assert DEFAULT_HPARAMS["banet"]["units"] == 8 and DEFAULT_HPARAMS["banet"]["layers"] == 3
    assert DEFAULT_HPARAMS["banet"]["epochs"] == 80 and DEFAULT_HPARAMS["banet"]["head"] == "published"
    assert DEFAULT_HPARAMS["stacked-lstm"]["lr"] == 0.001 and DEFAULT_HPARAMS["stacked-lstm"]["batch"] == 20
    for name in NEURAL_MODELS:
        assert DEFAULT_HPARAMS[name]["class_weight"] == "balanced" and DEFAULT_HPARAMS[name]["min_steps"] > 0
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        hparams_for("alanet", {"nope": 1})
    with pytest.raises(ValueError, match="encoder='nope'"):
        hparams_for("alanet", {"encoder": "nope"})
    with pytest.raises(ValueError, match="scikit-learn"):
        build_model("knn", timesteps=10, channels=9, n_classes=2, groups=GROUPS, hparams={})


@pytest.mark.parametrize("name", sorted(NEURAL_MODELS))
def test_inference_copy_matches_trained_weights(name, tmp_path):
    import keras

    from alanet.train.models import custom_objects

    rng = np.random.default_rng(0)
    trained = build_model(name, timesteps=12, channels=9, n_classes=3, groups=GROUPS, hparams=TINY[name])
    # Move the weights away from their initial values so the copy is really tested.
    trained.set_weights([w + rng.normal(0, 0.1, w.shape).astype(np.float32) for w in trained.get_weights()])
    infer = build_model(name, timesteps=12, channels=9, n_classes=3, groups=GROUPS, hparams=TINY[name],
                        unroll=True, masking=False, batch_size=1)
    assert [w.shape for w in infer.get_weights()] == [w.shape for w in trained.get_weights()]
    infer.set_weights(trained.get_weights())
    x = rng.normal(size=(3, 12, 9)).astype(np.float32)
    assert [i.name for i in trained.inputs] == ["window", "mask"] and len(infer.inputs) == 1
    a = trained.predict(model_inputs(trained, x), verbose=0)
    b = np.concatenate([infer(x[i:i + 1]).numpy() for i in range(3)])
    assert a.shape == (3, 3)
    np.testing.assert_allclose(a.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(a, b, atol=1e-5)

    path = tmp_path / "m.keras"
    trained.save(path)
    loaded = keras.saving.load_model(path, custom_objects=custom_objects(), compile=False)
    np.testing.assert_allclose(loaded.predict(model_inputs(loaded, x), verbose=0), a, atol=1e-6)


@pytest.mark.parametrize("name", sorted(NEURAL_MODELS))
def test_mask_comes_from_padding_not_from_values(name):
    """A window padded at the end (mask False there) gives exactly what the unpadded prefix
    gives a shorter model; frames zeroed by augmentation in the middle (mask True) are seen."""
    rng = np.random.default_rng(1)
    hp = TINY[name]
    m = build_model(name, timesteps=10, channels=9, n_classes=2, groups=GROUPS, hparams=hp)
    m.set_weights([w + rng.normal(0, 0.2, w.shape).astype(np.float32) for w in m.get_weights()])
    short = build_model(name, timesteps=6, channels=9, n_classes=2, groups=GROUPS, hparams=hp, masking=False)
    short.set_weights(m.get_weights())
    x = rng.normal(size=(1, 10, 9)).astype(np.float32)
    padded, mask = x.copy(), np.ones((1, 10), bool)
    padded[:, 6:], mask[:, 6:] = 0.0, False
    np.testing.assert_allclose(m.predict([padded, mask], verbose=0), short.predict(x[:, :6], verbose=0), atol=1e-5)
    zeroed = x.copy()
    zeroed[:, 2:4] = 0.0  # augmentation's frame dropout: still real frames
    skipped = np.delete(x, [2, 3], axis=1)
    short8 = build_model(name, timesteps=8, channels=9, n_classes=2, groups=GROUPS, hparams=hp, masking=False)
    short8.set_weights(m.get_weights())
    seen = m.predict([zeroed, np.ones((1, 10), bool)], verbose=0)
    assert not np.allclose(seen, short8.predict(skipped, verbose=0), atol=1e-4)
    assert not any(layer.__class__.__name__ == "Masking" for layer in m.layers)


def test_banet_shares_one_lstm_across_parts():
    m = build_model("banet", timesteps=8, channels=9, n_classes=2, groups=GROUPS, hparams={"units": 3, "layers": 2})
    lstms = [layer for layer in m.layers if layer.__class__.__name__ == "LSTM"]
    assert len(lstms) == 2  # the stack, called once per part
    attn = [layer for layer in m.layers if layer.name.startswith("temporal_attention_") and layer.name[-1].isdigit()]
    assert len(attn) == len(GROUPS)


def test_classic_window_statistics_ignore_padding():
    from alanet.train.models.classic import window_statistics

    x = np.zeros((1, 4, 2), np.float32)
    x[0, :2] = [[1, 2], [3, 6]]
    mask = np.array([[True, True, False, False]])
    f = window_statistics(x, mask)
    np.testing.assert_allclose(f[0], [2, 4, 1, 2, 1, 2, 3, 6, 2, 4])


def test_banet_folded_variant_is_the_same_network():
    """fold_parts=True runs the shared stack once on parts folded into the batch; its
    weights are interchangeable with the published part loop and its outputs equal."""
    rng = np.random.default_rng(2)
    hp = {"units": 3, "layers": 2}
    loop = build_model("banet", timesteps=10, channels=9, n_classes=3, groups=GROUPS, hparams=hp)
    fold = build_model("banet", timesteps=10, channels=9, n_classes=3, groups=GROUPS, hparams={**hp, "fold_parts": True})
    loop.set_weights([w + rng.normal(0, 0.2, w.shape).astype(np.float32) for w in loop.get_weights()])
    fold.set_weights(loop.get_weights())
    x = rng.normal(size=(4, 10, 9)).astype(np.float32)
    mask = np.ones((4, 10), bool)
    x[1, 7:], mask[1, 7:] = 0.0, False  # a padded window: the mask must follow the parts into the batch
    np.testing.assert_allclose(fold.predict([x, mask], verbose=0), loop.predict([x, mask], verbose=0), atol=1e-6)


def test_banet_published_head_shapes():
    """The authors' bodily attention: Dense(parts, tanh) → Dense(parts, softmax) over the
    [units × parts] tensor, multiplied in, flattened units × parts features → softmax."""
    parts = [[i, 13 + i] for i in range(13)]
    m = build_model("banet", timesteps=20, channels=30, n_classes=2, groups=parts, hparams={})
    assert m.get_layer("units_by_parts").output.shape[1:] == (8, 13)
    assert m.get_layer("body_attention_hidden").output.shape[1:] == (8, 13)
    att = m.get_layer("body_attention")
    assert att.output.shape[1:] == (8, 13) and att.activation.__name__ == "softmax"
    assert m.get_layer("body_features").output.shape[1:] == (104,)
    assert m.get_layer("output").kernel.shape == (104, 2)
    x = np.random.default_rng(0).normal(size=(2, 20, 30)).astype(np.float32)
    import keras

    w = keras.Model(m.inputs, att.output).predict(model_inputs(m, x), verbose=0)
    np.testing.assert_allclose(w.sum(axis=-1), 1.0, atol=1e-5)  # softmax over the parts
    pooled = build_model("banet", timesteps=20, channels=30, n_classes=2, groups=parts, hparams={"head": "pooled"})
    assert pooled.get_layer("output").kernel.shape == (8, 2)


def _separate_and_grouped(builder, *args):
    """The same ALANet-per-part network built with one LSTM per part and with every part in one layer."""
    from alanet.train.models import hparams_for

    hp = hparams_for("alanet-parts", {"units": 3})
    return builder(*args, {**hp, "group_parts": False}), builder(*args, {**hp, "group_parts": True})


def _as_grouped(sep_weights: list[np.ndarray], n_parts: int) -> list[np.ndarray]:
    """A separate-LSTM ALANet-per-part weight list (3 per part, then the head) → the grouped one."""
    from alanet.train.models.parts_lstm import stack_part_weights

    parts = [sep_weights[3 * p:3 * p + 3] for p in range(n_parts)]
    return stack_part_weights(parts) + sep_weights[3 * n_parts:]


def test_alanet_parts_grouped_lstm_is_the_same_network():
    """group_parts=True (the default) runs every part's encoder LSTM in one layer: as many
    parameters, the per-part weights stacked, equal outputs on a padded batch, and one
    optimizer step (Adam, per-weight clipnorm, EMA) moves both forms to the same weights:
    no gradient crosses from one part to another, and every part's gradient is clipped alone."""
    from alanet.train.fit import _optimizer
    from alanet.train.models.alanet import alanet_parts

    rng = np.random.default_rng(3)
    sep, grp = _separate_and_grouped(lambda *a: alanet_parts(10, 9, 3, GROUPS, *a))
    assert sum(layer.__class__.__name__ == "LSTM" for layer in sep.layers) == len(GROUPS)
    assert [layer.__class__.__name__ for layer in grp.layers].count("PartsLSTM") == 1
    assert len(grp.get_layer("encoder_lstm").weights) == 3 and grp.count_params() == sep.count_params()
    sep.set_weights([w + rng.normal(0, 0.3, w.shape).astype(np.float32) for w in sep.get_weights()])
    grp.set_weights(_as_grouped(sep.get_weights(), len(GROUPS)))
    x = rng.normal(size=(4, 10, 9)).astype(np.float32)
    mask = np.ones((4, 10), bool)
    x[1, 6:], mask[1, 6:] = 0.0, False  # a padded window: every part keeps its state past the end
    np.testing.assert_allclose(grp.predict([x, mask], verbose=0), sep.predict([x, mask], verbose=0), atol=1e-6)
    y = np.array([0, 1, 2, 1])
    before = grp.get_weights()
    # The recipe's optimizer (fit._optimizer), with a clipnorm small enough to clip every gradient.
    hp = {"clipnorm": 0.01, "ema": 0.9}
    for m in (sep, grp):
        m.compile(_optimizer(0.01, hp, m), "sparse_categorical_crossentropy")
        for step in range(3):  # Adam's first step ignores a gradient's scale: later ones do not
            m.train_on_batch([x * (1 + step), mask], np.roll(y, step))
    assert type(grp.optimizer).__name__ == "PartwiseClipAdam" and type(sep.optimizer).__name__ == "Adam"
    after = _as_grouped(sep.get_weights(), len(GROUPS))
    for w0, a, b in zip(before[:3], after[:3], grp.get_weights()[:3]):  # the parts' LSTM weights
        assert np.abs(a - w0).max() > 1e-3  # they moved (Adam: by about the learning rate a step)
        np.testing.assert_allclose(b, a, atol=1e-5)


def test_alanet_parts_grouped_autoencoder_is_the_same_network():
    """The pretraining autoencoder with every part's encoder, decoder and reconstruction
    in one layer each reconstructs exactly what one autoencoder per part does."""
    from alanet.train.models.alanet import alanet_parts_autoencoder
    from alanet.train.models.parts_lstm import stack_part_weights

    rng = np.random.default_rng(4)
    sep, grp = _separate_and_grouped(lambda hp: alanet_parts_autoencoder(10, 9, GROUPS, hp))
    assert grp.count_params() == sep.count_params()
    sep.set_weights([w + rng.normal(0, 0.3, w.shape).astype(np.float32) for w in sep.get_weights()])
    for stage, kind in (("encoder_lstm", "lstm"), ("decoder_lstm", "lstm"), ("reconstruction", "dense")):
        grp.get_layer(stage).set_weights(stack_part_weights(
            [sep.get_layer(f"{stage}_{p}").get_weights() for p in range(len(GROUPS))], kind))
    x = rng.normal(size=(3, 10, 9)).astype(np.float32)
    mask = np.ones((3, 10), bool)
    x[2, 7:], mask[2, 7:] = 0.0, False  # the code is the state after the last real frame
    out = grp.predict([x, mask], verbose=0)
    assert out.shape == (3, 10, sum(len(g) for g in GROUPS))
    np.testing.assert_allclose(out, sep.predict([x, mask], verbose=0), atol=1e-6)
