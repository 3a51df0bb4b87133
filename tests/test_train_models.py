"""Model registry: every neural model builds; an unrolled / mask-free / batch-1 copy
takes the trained weights and gives the same outputs; saved models load back."""

from __future__ import annotations

import numpy as np
import pytest

from alanet.train.models import CLASSIC_MODELS, DEFAULT_HPARAMS, NEURAL_MODELS, build_model, hparams_for

GROUPS = [[0, 3], [1, 4], [2, 5], [6, 7, 8]]
TINY = {"alanet": {"units": 6}, "alanet-parts": {"units": 3}, "banet": {"units": 3, "layers": 2},
        "stacked-lstm": {"units": 5, "layers": 2}}


def test_registry_names_and_defaults():
    assert NEURAL_MODELS == {"alanet", "alanet-parts", "banet", "stacked-lstm"}
    assert CLASSIC_MODELS == {"knn", "svm", "rf"}
    assert set(DEFAULT_HPARAMS) == NEURAL_MODELS | CLASSIC_MODELS
    assert DEFAULT_HPARAMS["alanet"]["lr"] == 0.003 and DEFAULT_HPARAMS["alanet"]["batch"] == 40
    assert DEFAULT_HPARAMS["banet"]["units"] == 8 and DEFAULT_HPARAMS["banet"]["layers"] == 3
    assert DEFAULT_HPARAMS["stacked-lstm"]["lr"] == 0.001 and DEFAULT_HPARAMS["stacked-lstm"]["batch"] == 20
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        hparams_for("alanet", {"nope": 1})
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
    a = trained.predict(x, verbose=0)
    b = np.concatenate([infer(x[i:i + 1]).numpy() for i in range(3)])
    assert a.shape == (3, 3)
    np.testing.assert_allclose(a.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(a, b, atol=1e-5)

    path = tmp_path / "m.keras"
    trained.save(path)
    loaded = keras.saving.load_model(path, custom_objects=custom_objects(), compile=False)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), a, atol=1e-6)


def test_masking_skips_padded_frames():
    """A window padded with zero frames at the end gives the same ALANet encoder state as
    the unpadded prefix would: Masking is in front of the LSTM."""
    import keras

    m = build_model("stacked-lstm", timesteps=10, channels=9, n_classes=2, groups=GROUPS, hparams={"units": 4, "layers": 1})
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 10, 9)).astype(np.float32)
    padded = x.copy()
    padded[:, 6:] = 0.0
    short = build_model("stacked-lstm", timesteps=6, channels=9, n_classes=2, groups=GROUPS,
                        hparams={"units": 4, "layers": 1})
    short.set_weights(m.get_weights())
    np.testing.assert_allclose(m.predict(padded, verbose=0), short.predict(x[:, :6], verbose=0), atol=1e-5)
    assert isinstance(m.layers[1], keras.layers.Masking)


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
    x[1, 7:] = 0.0  # a padded window: the mask must follow the parts into the batch
    np.testing.assert_allclose(fold.predict(x, verbose=0), loop.predict(x, verbose=0), atol=1e-6)
