"""The TensorFlow half of ``alanet convert``, run in a child process.

The TFLite converter can crash the Python process (int8 calibration of WHILE
loops segfaults), so the parent runs this module as
``python -m alanet.convert.worker RUN_DIR QUANT ROUTE OUT_DIR [BATCH,BATCH...]`` and
turns a crash into a clear error. It writes into ``OUT_DIR``:

- ``stage``: the step in progress (what the parent reports if the child dies),
- ``model.tflite`` (batch 1; for route ``unrolled`` with extra batch sizes, a
  dynamic batch that runs every size), ``model-b<N>.tflite`` per extra batch size
  (routes ``fused`` and ``loop``: the batch is fixed in the graph), ``keras_probs.npy`` (the trained model's probabilities on
  ``test_x``), for models with attention ``keras_temporal.npy`` / ``keras_body.npy``
  (its attention weights on ``test_x``) and ``info.json`` (how the inference copy was
  built, the attention outputs),
- ``error``: one-line message for bad input (exit 2).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def _stage(out: Path, text: str) -> None:
    (out / "stage").write_text(text)


def run(run_dir: str, quantization: str, route: str, out_dir: str, sizes: str = "1") -> None:
    out = Path(out_dir)
    _stage(out, "loading TensorFlow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np

    from alanet.convert import export
    from alanet.convert.rundir import load_parity_windows, load_run

    r = load_run(run_dir)
    pw = load_parity_windows(r)
    _stage(out, "loading the trained Keras model")
    trained = export.load_trained(r)
    _stage(out, "running the Keras model on the parity windows")
    probs = trained.predict(export.full_window_inputs(trained, pw.test_x), verbose=0, batch_size=64)
    np.save(out / "keras_probs.npy", np.asarray(probs, dtype=np.float32))
    n_groups = len(r.config.get("groups") or r.schema.groups)
    ref, att = export.with_attention(trained, r.model_name, n_groups)
    if att is not None:
        _stage(out, "reading the Keras model's attention on the parity windows")
        _, temporal, body = ref.predict(export.full_window_inputs(ref, pw.test_x), verbose=0, batch_size=64)
        np.save(out / "keras_temporal.npy", np.asarray(temporal, np.float32).reshape(len(pw.test_x), -1))
        np.save(out / "keras_body.npy", np.asarray(body, np.float32).reshape(len(pw.test_x), -1))
    batches = sorted({1, *(int(b) for b in sizes.split(",") if b)})
    extra: dict[str, str | None] = {}
    if route == "fused":
        from alanet.convert import fused

        how, stateful = "tf_keras (fused LSTM)", True
        for b in batches:
            _stage(out, f"building the fused inference copy at batch {b}")
            model, att = fused.fused_alanet(r, trained, b, pw.test_x[:4])
            _stage(out, f"converting to TFLite ({quantization}, fused, batch {b})")
            name = "model.tflite" if b == 1 else f"model-b{b}.tflite"
            (out / name).write_bytes(export.slim(fused.fused_to_tflite(model, quantization, b)))
            if b > 1:
                extra[str(b)] = name
    else:
        stateful = False
        dynamic = route == "unrolled" and len(batches) > 1  # an unrolled graph converts with a dynamic batch
        for b in batches if not dynamic else [1]:
            _stage(out, f"building the {route} inference copy" + (f" at batch {b}" if b > 1 else ""))
            model, how = export.inference_copy(r, trained, route, pw.test_x[:4], batch=b)
            if att is not None:
                model, _ = export.with_attention(model, r.model_name, n_groups)
            _stage(out, f"converting to TFLite ({quantization}, {route}" + (f", batch {b})" if b > 1 else ")"))
            name = "model.tflite" if b == 1 else f"model-b{b}.tflite"
            (out / name).write_bytes(export.slim(export.to_tflite(model, quantization, pw.calib_x,
                                                                  batch=None if dynamic else b)))
            if b > 1:
                extra[str(b)] = name
        if dynamic:
            extra = {str(b): None for b in batches if b > 1}
    info = {"copy_built_from": how, "route": route, "attention": att, "stateful": stateful, "batch_models": extra}
    if quantization == "int8":
        info["float_ops"] = list(export.INT8_FLOAT_OPS)
    (out / "info.json").write_text(json.dumps(info))
    _stage(out, "done")


def main(argv: list[str]) -> int:
    from alanet.errors import InputError

    if len(argv) not in (4, 5):
        print("usage: python -m alanet.convert.worker RUN_DIR QUANT ROUTE OUT_DIR [BATCH,BATCH...]", file=sys.stderr)
        return 2
    try:
        run(*argv)
    except InputError as exc:
        (Path(argv[3]) / "error").write_text(str(exc))
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
