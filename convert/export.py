"""Keras → TFLite (imports TensorFlow; run it through :mod:`alanet.convert.worker`).

A Keras 3 LSTM never becomes the fused TFLite LSTM op, and with a dynamic batch
dimension the conversion fails. So the converter builds an *inference copy* of the
trained model, with the trained weights:

- batch fixed to 1, no ``Masking`` (a streamed window is always full), and
- route ``unrolled`` (default): every LSTM/GRU ``unroll=True``, Keras LSTMs as
  :class:`~alanet.convert.lean_lstm.LeanLSTM` (the input side of all frames in one
  matrix product, 11 operators per step instead of 14). All four
  quantisations convert to builtin ops only, int8 included; fastest on device.
  int8 is selective: weights, matmuls and I/O int8, the recurrent elementwise
  ops (``INT8_FLOAT_OPS``) float, see :func:`_int8_selective`.
- route ``loop``: LSTMs left rolled: a WHILE-loop graph, smaller files for long
  windows, but int8 crashes the calibrator (the worker subprocess reports it).
- route ``fused`` (ALANet): the fused LSTM op through a ``tf_keras`` copy, see
  :mod:`alanet.convert.fused`: the smallest file; it does not batch.

A bundle that runs more batch sizes than 1 gets one file per size (the batch is
fixed in a WHILE loop's and a fused LSTM's graph), or, for ``unrolled``, one file
with a dynamic batch.

The copy comes from ``alanet.train.models.build_model`` when it knows the model,
else from the trained model's own serialized config, rewritten as above.

Models with attention (ALANet, ALANet per part, BANet) are exported with two extra
outputs, the temporal and the bodily attention weights (:func:`with_attention`), so
the gateway can say what drove a decision; baselines keep their single output.
"""

from __future__ import annotations

import copy
import os
import tempfile
from typing import Any, Callable

import numpy as np

from alanet.convert.rundir import Run
from alanet.errors import InputError

ROUTES = ("unrolled", "loop", "fused")
# int8 ops kept in float: the LSTM gate/state arithmetic. Quantising the recurrent
# state at each of 180 steps cost 10 points of agreement on a real ALANet run
# (87.5 % → 98.8 % with these in float); weights, FULLY_CONNECTED/CONV_2D and the
# softmax stay int8.
INT8_FLOAT_OPS = ("ADD", "MUL", "LOGISTIC", "TANH")
RNN_LAYERS = {"LSTM", "GRU", "SimpleRNN", "PartsLSTM"}  # PartsLSTM: ALANet per part (train.models.parts_lstm)


def load_trained(run: Run):
    """The trained Keras model of a run (custom layers registered by importing the model zoo)."""
    import keras

    try:
        from alanet.train.models import custom_objects

        objects = custom_objects()
    except ImportError:
        objects = None
    try:
        return keras.saving.load_model(run.model_path, custom_objects=objects, compile=False)
    except Exception as exc:  # noqa: BLE001 - any load failure is a bad model file
        raise InputError(f"{run.model_path}: cannot load the Keras model ({type(exc).__name__}: {exc})") from None


def full_window_inputs(model, x: np.ndarray):
    """What ``model`` takes for full windows: a training model also takes the padding mask
    (all True here: a streamed window has no padding), an inference copy the window alone."""
    if len(model.inputs) == 1:
        return x
    return [x, np.ones(x.shape[:2], bool)]


def _rewrite(node: Any, unroll: bool, batch: int = 1) -> Any:
    """Rewrite a serialized Keras config: batch ``batch``, Masking → Identity, masks dropped, RNNs unrolled."""
    if isinstance(node, list):
        return [_rewrite(v, unroll, batch) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _rewrite(v, unroll, batch) for k, v in node.items()}
    if isinstance(out.get("kwargs"), dict) and "args" in out:  # a call node: streamed windows carry no mask
        out["kwargs"].pop("mask", None)
    cls = out.get("class_name")
    cfg = out.get("config")
    if isinstance(cfg, dict):
        if cls == "InputLayer":
            for key in ("batch_shape", "batch_input_shape"):
                if isinstance(cfg.get(key), list) and cfg[key]:
                    cfg[key] = [batch] + list(cfg[key][1:])
        elif cls in RNN_LAYERS and unroll:
            cfg["unroll"] = True
            if cls == "LSTM" and out.get("module") == "keras.layers":  # the same LSTM in fewer TFLite ops
                out.update(module="alanet.convert.lean_lstm", class_name="LeanLSTM", registered_name="alanet>LeanLSTM")
        elif cls == "Masking":
            out["class_name"] = "Identity"
            out["module"] = "keras.layers"
            out["registered_name"] = None
            out["config"] = {k: cfg[k] for k in ("name", "trainable", "dtype") if k in cfg}
        if cls == "Sequential" and isinstance(cfg.get("build_input_shape"), list):
            cfg["build_input_shape"] = [batch] + list(cfg["build_input_shape"][1:])
    return out


def _copy_from_config(trained, unroll: bool, batch: int = 1):
    import keras

    import alanet.convert.lean_lstm  # noqa: F401 - registers LeanLSTM for the rewritten config

    ser = keras.saving.serialize_keras_object(trained)
    return keras.saving.deserialize_keras_object(_rewrite(copy.deepcopy(ser), unroll, batch))


def _copy_from_zoo(run: Run, unroll: bool, batch: int = 1):
    from alanet.train.models import build_model  # may not exist / not know the model

    cfg = run.config
    groups = cfg.get("groups") or list(run.schema.groups.values())
    model = build_model(cfg["model"], timesteps=run.window, channels=run.schema.n_channels, n_classes=len(run.labels),
                       groups=[list(g) for g in groups], hparams=cfg.get("hparams") or {}, unroll=unroll,
                       masking=False, batch_size=batch)
    return _copy_from_config(model, unroll, batch) if unroll else model


def inference_copy(run: Run, trained, route: str, check_x: np.ndarray, atol: float = 1e-4, batch: int = 1):
    """Batch-``batch``, Masking-free copy of ``trained`` for ``route``, checked to give the same outputs."""
    if route not in ROUTES or route == "fused":
        raise InputError(f"unknown route {route!r} (choose from {', '.join(ROUTES)})")
    unroll = route == "unrolled"
    ref = trained.predict(full_window_inputs(trained, check_x), verbose=0, batch_size=len(check_x))
    reasons = []
    builders: list[tuple[str, Callable[[], Any]]] = [
        ("model zoo", lambda: _copy_from_zoo(run, unroll, batch)),
        ("saved config", lambda: _copy_from_config(trained, unroll, batch)),
    ]
    for how, build in builders:
        try:
            model = build()
            model.set_weights(trained.get_weights())
        except Exception as exc:  # noqa: BLE001 - try the next way, report all
            reasons.append(f"{how}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            continue
        xs = np.resize(check_x, (-(-len(check_x) // batch) * batch, *check_x.shape[1:]))
        got = np.concatenate([np.asarray(model(xs[i:i + batch], training=False))
                              for i in range(0, len(xs), batch)])[:len(check_x)]
        diff = float(np.max(np.abs(got - ref)))
        if got.shape == ref.shape and diff <= atol:
            return model, how
        reasons.append(f"{how}: outputs differ from the trained model (max |Δ| {diff:.3g})")
    raise InputError(f"{run.model_path}: cannot build a batch-{batch} inference copy: " + "; ".join(reasons))


def with_attention(model, model_name: str, n_groups: int):
    """``(model with outputs [probabilities, temporal, body], info)`` or ``(model, None)`` without attention.

    ALANet's head (a nested model ``head``) holds the layers ``temporal_attention``
    (softmax over frames) and ``body_attention`` (softmax over encoder units, or over
    body parts for ``alanet-parts``); BANet has one ``temporal_attention_<p>`` per part
    (averaged here into one weight per frame) and ``body_attention`` across parts. The
    returned model shares the layers and weights of ``model``. ``info``: ``temporal_len``,
    ``body_n`` and ``axis`` ("parts" when the bodily weights are per body part, else "units").
    """
    import keras

    names = {layer.name for layer in model.layers}
    if "head" in names and "encoder_features" in names:
        head = model.get_layer("head")
        try:
            parts = keras.Model(head.inputs, [head.output, head.get_layer("temporal_attention").output,
                                              head.get_layer("body_attention").output])
        except ValueError:
            return model, None
        feats = model.get_layer("encoder_features").output
        # A training model's head also takes the padding mask (the model's second input).
        probs, temporal, body = parts([feats, model.inputs[1]] if len(head.inputs) == 2 else feats)
    elif "body_attention" in names:
        per_part = sorted((n for n in names if n.startswith("temporal_attention_") and n.split("_")[-1].isdigit()),
                          key=lambda n: int(n.split("_")[-1]))
        if not per_part:
            return model, None
        ts = [model.get_layer(n).output for n in per_part]
        if len(ts) > 1:  # the mean of the parts' temporal attentions, added as [B, T] (Average or Add on
            # the [B, T, 1] softmax outputs trips the TFLite converter: "tf.Transpose ... rank")
            flat = [keras.layers.Reshape((int(t.shape[1]),), name=f"temporal_attention_flat_{i}")(t)
                    for i, t in enumerate(ts)]
            temporal = keras.layers.Rescaling(1.0 / len(ts), name="temporal_attention_mean")(
                keras.layers.Add(name="temporal_attention_sum")(flat))
        else:
            temporal = ts[0]
        probs, body = model.output, model.get_layer("body_attention").output
        if len(body.shape) == 3 and int(body.shape[-1]) > 1:
            # BANet's published head weighs the parts once per LSTM unit ([B, units, parts]):
            # one weight per part is their mean over the units.
            body = keras.layers.GlobalAveragePooling1D(name="body_attention_mean")(body)
    else:
        return model, None
    out = keras.Model(model.inputs, [probs, temporal, body], name=f"{model.name}_with_attention")
    body_n = int(body.shape[1])
    axis = "parts" if model_name != "alanet" and body_n == n_groups else "units"
    return out, {"temporal_len": int(temporal.shape[1]), "body_n": body_n, "axis": axis,
                 "outputs": {"probabilities": "output_0", "temporal": "output_1", "body": "output_2"}}


def to_tflite(model, quantization: str, calib_x: np.ndarray, *, n_calib: int = 256, batch: int | None = 1) -> bytes:
    """Convert a Keras model to TFLite bytes at batch ``batch`` (None: dynamic; builtin ops only, never Flex)."""
    import tensorflow as tf

    shape = [batch] + [int(d) for d in model.inputs[0].shape[1:]]
    with tempfile.TemporaryDirectory(prefix="alanet-export-") as tmp:
        sm = os.path.join(tmp, "saved_model")
        model.export(sm, input_signature=[tf.TensorSpec(shape, tf.float32)], verbose=False)
        if quantization == "int8":
            conv = tf.lite.TFLiteConverter.from_saved_model(sm)
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
            return _int8_selective(conv, calib_x[:n_calib])
        return convert_saved_model(sm, quantization)


def convert_saved_model(saved_model: str, quantization: str) -> bytes:
    """TFLite bytes of a SavedModel, builtin ops only, float32 / float16 / dynamic-range weights."""
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_saved_model(saved_model)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantization == "float16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif quantization == "dynamic":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantization != "float32":
        raise InputError(f"unknown quantisation {quantization!r}")
    return bytes(conv.convert())


def _int8_selective(conv, calib_x: np.ndarray) -> bytes:
    """Integer model with int8 weights, matmuls and input/output; ``INT8_FLOAT_OPS`` stay float.

    ``QuantizationDebugger`` calibrates ``conv`` on ``calib_x``; the model is then quantised
    as its ``get_nondebug_quantized_model()`` does, plus int8 input/output (both ends of the
    graph are int8 ops, so no float tensor is exposed).
    """
    import tensorflow as tf
    from tensorflow.lite.python import convert as tflite_convert

    calib = np.asarray(calib_x, dtype=np.float32)

    def representative():
        for i in range(len(calib)):
            yield [calib[i:i + 1]]

    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=list(INT8_FLOAT_OPS))
    debugger = tf.lite.experimental.QuantizationDebugger(converter=conv, debug_dataset=representative,
                                                         debug_options=options)
    return bytes(tflite_convert.mlir_quantize(debugger.calibrated_model, fully_quantize=True,
                                              input_data_type=tf.int8, output_data_type=tf.int8,
                                              denylisted_ops=list(INT8_FLOAT_OPS)))


def slim(tflite: bytes) -> bytes:
    """The same TFLite model without what the interpreter never reads: tensor, subgraph and model
    names, and one empty buffer per activation tensor (all share the empty buffer 0).

    The signature, which names the outputs (:func:`with_attention`), stays. An unrolled
    LSTM has thousands of tensors, each named after its Keras path: ~30 % of the file.
    """
    from tensorflow.lite.tools import flatbuffer_utils as fb

    model = fb.convert_bytearray_to_object(bytearray(tflite))
    model.description = None
    # buffers without data; one stored outside the flatbuffer (offset/size, > 2 GB models) has data
    empty = {i for i, b in enumerate(model.buffers)
             if (b.data is None or len(b.data) == 0) and not getattr(b, "offset", 0) > 1}
    if 0 not in empty:  # not the converter's layout (buffer 0 is its empty sentinel): names only
        empty = set()
    for sg in model.subgraphs:
        sg.name = None
        for t in sg.tensors:
            t.name = None
            if t.buffer in empty:
                t.buffer = 0
    keep = sorted({0} | {t.buffer for sg in model.subgraphs for t in sg.tensors}
                  | {m.buffer for m in model.metadata or []} | set(model.metadataBuffer or []))
    new = {old: i for i, old in enumerate(keep)}
    model.buffers = [model.buffers[i] for i in keep]
    for sg in model.subgraphs:
        for t in sg.tensors:
            t.buffer = new[t.buffer]
    for m in model.metadata or []:
        m.buffer = new[m.buffer]
    if model.metadataBuffer is not None and len(model.metadataBuffer):
        model.metadataBuffer = [new[int(i)] for i in model.metadataBuffer]
    return bytes(fb.convert_object_to_bytearray(model))
