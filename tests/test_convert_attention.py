"""Attention outputs for every model of the zoo: which models get them, what they hold, and that a
converted BANet (per-part temporal attentions averaged in the graph) reads them back through LiteRT."""

from __future__ import annotations

import numpy as np
import pytest

from alanet.train.models import NEURAL_MODELS, build_model, model_inputs

GROUPS = [[0, 3], [1, 4], [2, 5], [6, 7, 8]]
TINY = {"alanet": {"units": 6}, "alanet-parts": {"units": 3}, "banet": {"units": 3, "layers": 2},
        "stacked-lstm": {"units": 5, "layers": 2}}


@pytest.mark.parametrize("name", sorted(NEURAL_MODELS))
def test_attention_outputs_are_the_training_reports_attention(name):
    from alanet.convert.export import with_attention
    from alanet.train.report import attention_maps

    rng = np.random.default_rng(1)
    model = build_model(name, timesteps=12, channels=9, n_classes=3, groups=GROUPS, hparams=TINY[name])
    model.set_weights([w + rng.normal(0, 0.3, w.shape).astype(np.float32) for w in model.get_weights()])
    x = rng.normal(size=(5, 12, 9)).astype(np.float32)
    out, info = with_attention(model, name, len(GROUPS))
    if name == "stacked-lstm":
        assert info is None and out is model
        return
    probs, temporal, body = (np.asarray(a) for a in out.predict(model_inputs(out, x), verbose=0))
    np.testing.assert_allclose(probs, model.predict(model_inputs(model, x), verbose=0), atol=1e-6)
    t_ref, b_ref = attention_maps(name, model, x)  # what `alanet train` plots
    np.testing.assert_allclose(temporal.reshape(5, -1), t_ref, atol=1e-5)
    np.testing.assert_allclose(body.reshape(5, -1), b_ref.reshape(5, -1), atol=1e-5)
    np.testing.assert_allclose(temporal.reshape(5, -1).sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(body.reshape(5, -1).sum(1), 1.0, atol=1e-5)
    assert info["temporal_len"] == 12
    assert (info["axis"], info["body_n"]) == (("units", 6) if name == "alanet" else ("parts", len(GROUPS)))


def test_a_converted_banet_gives_its_attention_through_litert(tmp_path):
    from alanet.convert.export import to_tflite, with_attention
    from alanet.convert.parity import compare_attention
    from alanet.device.inference import ModelRunner

    rng = np.random.default_rng(2)
    hp = {**TINY["banet"], "fold_parts": True}  # the same network with the parts in the batch: quicker to convert
    model = build_model("banet", timesteps=8, channels=9, n_classes=2, groups=GROUPS, hparams=hp,
                        unroll=True, masking=False, batch_size=1)
    model.set_weights([w + rng.normal(0, 0.3, w.shape).astype(np.float32) for w in model.get_weights()])
    out, info = with_attention(model, "banet", len(GROUPS))
    x = rng.normal(size=(8, 8, 9)).astype(np.float32)
    path = tmp_path / "m.tflite"
    path.write_bytes(to_tflite(out, "float32", x))
    runner = ModelRunner(path, outputs=info["outputs"])
    got_t, got_b, ref_t, ref_b = [], [], [], []
    for w in x:
        p = runner.predict(w)
        t, b = runner.attention()
        kp, kt, kb = (np.asarray(a) for a in out(w[None], training=False))
        np.testing.assert_allclose(p, kp[0], atol=1e-5)
        got_t.append(t), got_b.append(b), ref_t.append(kt.reshape(-1)), ref_b.append(kb.reshape(-1))
    par = compare_attention(np.array(ref_t), np.array(got_t), np.array(ref_b), np.array(got_b), 0.02)
    assert par.passed and par.temporal_max_abs_diff < 1e-5 and par.top_agreement == 1.0
    with pytest.raises(Exception, match="no output named"):  # a manifest naming outputs the model lacks
        ModelRunner(path, outputs={**info["outputs"], "body": "output_9"})
    with pytest.raises(Exception, match="expected 1 output tensor"):  # attention outputs but no attention block
        ModelRunner(path)
