"""Route ``fused``: ALANet with TFLite's fused ``UNIDIRECTIONAL_SEQUENCE_LSTM`` op.

A Keras 3 LSTM never converts to the fused op; the same LSTM in ``tf_keras``
(Keras 2) does. So this route rebuilds the trained ALANet inference model — encoder
LSTM → temporal attention (1×1 score, softmax over frames, weighted sum) → bodily
attention (Dense tanh → Dense softmax over the units, rescaled by their count) →
Dense softmax — as a ``tf_keras`` model at a fixed batch, copies the trained weights
layer by layer, checks that it gives the trained model's probabilities and attention,
and converts it with the three outputs named as :func:`alanet.convert.export.with_attention`
names them. The smallest form of ALANet (one op for the whole sequence; its
kernel does not batch, so the cost per window stays the same at every batch size); the op keeps its state between invokes, so the bundle is marked
``stateful`` and the gateway resets it before each one. The batch dimension must
be static: a bundle that runs other batch sizes carries one file per size.

``tf-keras`` declares a dependency on the full ``tensorflow`` wheel: install it with
``pip install --no-deps 'tf-keras==2.21.*'`` next to ``tensorflow-cpu``.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import numpy as np

from alanet.convert.rundir import Run
from alanet.errors import InputError

MODELS = ("alanet",)
QUANTIZATIONS = ("float32", "float16", "dynamic")
OUTPUTS = {"probabilities": "output_0", "temporal": "output_1", "body": "output_2"}


def _tf_keras():
    try:
        import tf_keras
    except ImportError:
        raise InputError("--route fused needs the tf-keras package: pip install --no-deps 'tf-keras==2.21.*'") from None
    return tf_keras


def _trained_layers(trained) -> dict[str, Any]:
    """The trained model's layers by name, the nested attention head's included."""
    out = {layer.name: layer for layer in trained.layers}
    if "head" in out:
        out.update({layer.name: layer for layer in out["head"].layers})
    return out


def fused_alanet(run: Run, trained, batch: int, check_x: np.ndarray, atol: float = 1e-4):
    """``(tf_keras model at batch ``batch`` with outputs [probabilities, temporal, body], attention info)``.

    InputError when the run is not an ALANet this route rebuilds, or when the copy's
    outputs differ from the trained model's by more than ``atol`` on ``check_x``.
    """
    import tensorflow as tf

    from alanet.convert.export import full_window_inputs, with_attention

    if run.model_name not in MODELS:
        raise InputError(f"--route fused: rebuilds {', '.join(MODELS)} only, this run is {run.model_name!r} "
                         "(use --route unrolled or loop)")
    k2 = _tf_keras()
    L = k2.layers
    src = _trained_layers(trained)
    need = ("encoder_lstm", "temporal_attention_score", "body_attention_hidden", "body_attention", "output")
    missing = [n for n in need if n not in src]
    if missing:
        raise InputError(f"{run.model_path}: --route fused: layer(s) {', '.join(missing)} not found "
                         "(not the ALANet this route rebuilds; use --route unrolled)")
    units = int(src["encoder_lstm"].units)
    n_parts = int(src["body_attention"].units)
    part = next((layer for layer in src.values() if type(layer).__name__ == "PartWeighting"), None)
    if n_parts != units or part is None or not part.scale:
        raise InputError(f"{run.model_path}: --route fused: bodily attention over {n_parts} parts of {units} units "
                         "is not the ALANet this route rebuilds (use --route unrolled)")
    t, c = (int(d) for d in trained.inputs[0].shape[1:])
    x = k2.Input((t, c), batch_size=batch, name="window")
    seq = L.LSTM(units, return_sequences=True, name="encoder_lstm")(x)
    score = L.Conv1D(1, 1, name="temporal_attention_score")(seq)
    temporal = L.Softmax(axis=1, name="temporal_attention")(score)
    context = tf.reduce_sum(seq * temporal, axis=1)
    hidden = L.Dense(units, activation="tanh", name="body_attention_hidden")(context)
    body = L.Dense(n_parts, activation="softmax", name="body_attention")(hidden)
    n_out = int(src["output"].units)
    probs = L.Dense(n_out, activation="softmax", name="output")(context * (body * float(n_parts)))
    model = k2.Model(x, [probs, tf.reshape(temporal, [-1, t]), body], name="alanet_fused")
    for name in need:
        model.get_layer(name).set_weights([np.asarray(w) for w in src[name].get_weights()])

    ref_model, att = with_attention(trained, run.model_name, len(run.config.get("groups") or run.schema.groups))
    if att is None:  # pragma: no cover - every ALANet has both attention layers
        raise InputError(f"{run.model_path}: --route fused: no attention outputs found")
    ref = ref_model.predict(full_window_inputs(ref_model, check_x), verbose=0, batch_size=len(check_x))
    rows = [check_x[i:i + batch] for i in range(0, len(check_x) - batch + 1, batch)] or \
        [np.resize(check_x, (batch, *check_x.shape[1:]))]
    for i, xb in enumerate(rows):
        got = model(xb, training=False)
        n = min(batch, len(check_x) - i * batch)
        for what, g, r in zip(OUTPUTS, got, ref):
            r = np.asarray(r).reshape(len(check_x), -1)[i * batch:i * batch + n]
            diff = float(np.max(np.abs(np.asarray(g).reshape(batch, -1)[:n] - r)))
            if not diff <= atol:
                raise InputError(f"{run.model_path}: --route fused: the tf_keras copy's {what} differ from the "
                                 f"trained model (max |Δ| {diff:.3g})")
    return model, {**att, "outputs": dict(OUTPUTS)}


def fused_to_tflite(model, quantization: str, batch: int) -> bytes:
    """Convert a :func:`fused_alanet` model to TFLite bytes (builtin ops, the fused LSTM op)."""
    import tensorflow as tf

    from alanet.convert.export import convert_saved_model

    if quantization not in QUANTIZATIONS:
        raise InputError(f"--route fused: quantisation {quantization!r} is not supported "
                         f"(choose from {', '.join(QUANTIZATIONS)}, or --route unrolled for int8)")
    shape = [batch] + [int(d) for d in model.inputs[0].shape[1:]]

    @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32, name="window")])
    def serve(x):
        return dict(zip(OUTPUTS.values(), model(x, training=False)))

    with tempfile.TemporaryDirectory(prefix="alanet-fused-") as tmp:
        sm = os.path.join(tmp, "saved_model")
        tf.saved_model.save(model, sm, signatures={"serving_default": serve})
        return convert_saved_model(sm, quantization)
