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


SWAP_CHECK = """
import numpy as np, keras
keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(2, activation="softmax")])
model.compile(keras.optimizers.Adam(0.05, use_ema=True, ema_momentum=0.9), "sparse_categorical_crossentropy")
x, y = np.random.default_rng(0).normal(size=(64, 4)).astype("float32"), np.arange(64) % 2
model.fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=[SWAP()])
opt, rng = model.optimizer, np.random.default_rng(1)
for v, a in zip(opt._trainable_variables, opt._model_variables_moving_average):
    v.assign(rng.normal(size=v.shape).astype("float32"))
    a.assign(rng.normal(size=a.shape).astype("float32"))
weights = [np.array(v) for v in opt._trainable_variables]
averages = [np.array(a) for a in opt._model_variables_moving_average]
swap = SWAP()
swap._backend_swap_variables(opt)
assert all(v.value is not a.value for v, a in zip(opt._trainable_variables, opt._model_variables_moving_average))
assert all(np.array_equal(np.array(v), a) for v, a in zip(opt._trainable_variables, averages))
assert all(np.array_equal(np.array(a), w) for a, w in zip(opt._model_variables_moving_average, weights))
swap._backend_swap_variables(opt)
assert all(np.array_equal(np.array(v), w) for v, w in zip(opt._trainable_variables, weights))
model.fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=[SWAP()])
assert not any(a.value.is_deleted() for a in opt._model_variables_moving_average)
print("ok")
"""


def test_moving_average_swap_under_jax_is_by_value():
    """The trainer's moving-average swap under JAX exchanges the weights and their average by value
    and a second swap restores them; training on with it keeps the averages alive. (The run-level
    regression, the averages deleted by a donated step, is the test above.)"""
    import os
    import subprocess
    import sys

    code = "SWAP = __import__('alanet.train.fit', fromlist=['_']).__dict__['_swap_ema_weights']\n" + SWAP_CHECK
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "KERAS_BACKEND": "jax"})
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr[-2000:]
