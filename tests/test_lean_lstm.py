"""The unrolled route's LSTM (LeanLSTM): a Keras LSTM's outputs from the same weights, in a
graph with one input projection and 11 operators per step; converted models lose their
tensor names but keep the signature that names the outputs."""

from __future__ import annotations

import collections

import keras
import numpy as np
import pytest

from alanet.convert.lean_lstm import LeanLSTM
from alanet.convert.tinyrun import cached_tiny_run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return cached_tiny_run(tmp_path_factory.getbasetemp())


def _pair(**kw):
    """(Keras LSTM, LeanLSTM) with the same random weights, built for [*, 12, 5] inputs."""
    rng = np.random.default_rng(0)
    ref, lean = keras.layers.LSTM(7, **kw), LeanLSTM(7, **kw)
    for layer in (ref, lean):
        layer.build((None, 12, 5))
    weights = [rng.normal(scale=0.5, size=w.shape).astype(np.float32) for w in ref.get_weights()]
    ref.set_weights(weights)
    lean.set_weights(weights)
    return ref, lean


@pytest.mark.parametrize("kw", [dict(return_sequences=True), dict(return_sequences=False),
                                dict(return_sequences=True, return_state=True), dict(use_bias=False)],
                         ids=["sequences", "last", "state", "no-bias"])
def test_lean_lstm_matches_keras_lstm(kw):
    ref, lean = _pair(**kw)
    x = np.random.default_rng(1).normal(size=(3, 12, 5)).astype(np.float32)
    want, got = ref(x), lean(x)
    if not isinstance(want, (list, tuple)):
        want, got = [want], [got]
    assert len(got) == len(want)
    for w, g in zip(want, got):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), atol=2e-6)


def test_lean_lstm_falls_back_to_keras_with_a_mask():
    ref, lean = _pair(return_sequences=True)
    x = np.random.default_rng(2).normal(size=(2, 12, 5)).astype(np.float32)
    mask = np.ones((2, 12), bool)
    mask[1, 8:] = False
    np.testing.assert_allclose(np.asarray(lean(x, mask=mask)), np.asarray(ref(x, mask=mask)), atol=2e-6)


def test_unrolled_conversion_is_lean_and_keeps_the_output_signature(tiny_run, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    from alanet.convert.convert import convert_run
    from alanet.device.bundle import load_bundle

    res = convert_run(tiny_run, "float32", tmp_path / "b", route="unrolled", quiet=True, batch_sizes=(1, 4))
    b = load_bundle(res.bundle)
    it = Interpreter(model_path=str(b.model_path))
    ops = collections.Counter(o["op_name"] for o in it._get_ops_details())
    steps = b.window
    # one input projection for all frames plus one recurrent product per step but the first
    # (+ the head's dense layers); a Keras-unrolled LSTM has two per step
    assert steps - 1 <= ops["FULLY_CONNECTED"] <= steps + 4, ops
    assert ops["LOGISTIC"] == steps and ops["SPLIT_V"] == steps, ops  # one sigmoid over three gates
    assert all(not d["name"] for d in it.get_tensor_details())  # names stripped
    sigs = it.get_signature_list()
    assert len(sigs) == 1
    if b.manifest.get("attention"):
        outs = set(it.get_signature_runner(next(iter(sigs))).get_output_details())
        assert outs == set(b.manifest["attention"]["outputs"].values())
    assert res.parity.agreement == 1.0 and b.batch_sizes == (1, 4)
