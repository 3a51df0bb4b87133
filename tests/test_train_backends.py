"""Training under Keras' JAX backend: the backend a GPU machine without a TensorFlow
CUDA build trains on (``KERAS_BACKEND=jax``). The run it writes is the same run: it
loads, predicts and converts under TensorFlow like any other."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import run_cli


def test_alanet_trains_under_jax_and_its_run_loads_under_tensorflow(tmp_path: Path):
    from alanet.train.data.synthetic import write_synthetic_dataset

    data = tmp_path / "syn"
    write_synthetic_dataset(data, patients=3, controls=2, seed=1, duration_s=20)
    run = tmp_path / "run"
    # Graph mode (no ALANET_EAGER): JAX's jitted training step donates the weights' buffers,
    # which is what left the moving-average weights pointing at deleted arrays before.
    res = run_cli("train", "--data", str(data), "--task", "protective", "--model", "alanet",
                  "--test-participants", "P01,C01", "--epochs", "1", "--window", "60", "--stride", "30",
                  "--quiet", "--out", str(run), env={"KERAS_BACKEND": "jax", "ALANET_EAGER": ""})
    assert res.returncode == 0, res.stderr[-2000:]
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["versions"]["keras_backend"] == "jax"
    assert cfg["versions"]["devices"]  # the JAX devices it trained on
    assert cfg["hparams"]["ema"] > 0  # the moving average of the weights was on

    # The same run under TensorFlow (this suite's backend): `alanet evaluate` loads and scores it.
    res = run_cli("evaluate", str(run), "--data", str(data), "--out", str(tmp_path / "eval.json"),
                  env={"KERAS_BACKEND": "tensorflow"})
    assert res.returncode == 0, res.stderr[-2000:]
    scored = json.loads((tmp_path / "eval.json").read_text())
    assert scored["n_windows"] > 0 and 0.0 <= scored["accuracy"] <= 1.0
