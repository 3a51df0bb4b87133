"""alanet convert: all four quantisations convert a tiny run and pass parity; crashes become errors."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from alanet.convert.parity import Parity, compare, macro_f1
from alanet.convert.tinyrun import cached_tiny_run
from alanet.device.bundle import load_bundle
from alanet.device.inference import ModelRunner
from conftest import run_cli


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    return cached_tiny_run(tmp_path_factory.getbasetemp())


@pytest.mark.parametrize("quant", ["float32", "float16", "dynamic", "int8"])
def test_every_quantisation_converts_and_passes_parity(tiny_run, tmp_path, quant):
    out = tmp_path / f"bundle-{quant}"
    extra = ["--bundle-version", "7", "--for-gateway", "ward3", "--for-gateway", "ward4"] if quant == "float16" else []
    t0 = int(time.time())
    res = run_cli("convert", str(tiny_run), "--quantize", quant, "--out", str(out), *extra)
    assert res.returncode == 0, res.stderr
    assert "agreement" in res.stdout
    b = load_bundle(out)
    if extra:  # the release number and the target gateways go into the (signed) manifest
        assert (b.version, b.gateways) == (7, ["ward3", "ward4"])
    else:  # by default the conversion time: a newer conversion is a newer version
        assert t0 <= b.version <= int(time.time()) and b.gateways == []

    b = load_bundle(out)  # schema, hash and self-test
    m = b.manifest
    assert m["quantization"] == quant and m["route"] == "unrolled" and m["stateful"] is False
    assert m["parity"]["agreement"] >= (0.97 if quant == "int8" else 0.99)
    assert m["parity"]["macro_f1_tflite"] > 0.9
    assert m["parity"]["n_windows"] == 128
    assert m["model_bytes"] == (out / "model.tflite").stat().st_size
    assert m["input"]["dtype"] == ("int8" if quant == "int8" else "float32")

    runner = ModelRunner.from_bundle(b)
    assert "attention" not in m and not runner.has_attention and runner.attention() is None  # a baseline: no attention
    ops = runner.ops()
    assert "FULLY_CONNECTED" in ops and not any(o.startswith("Flex") or o == "CUSTOM" for o in ops)
    assert "WHILE" not in ops  # the unrolled route

    # The gateway's runner reproduces the parity numbers on the run's held-out windows.
    with np.load(tiny_run / "parity_windows.npz") as z:
        x, y = z["test_x"], z["test_y"]
    probs = runner.predict_many(x)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=0.02)
    assert macro_f1(y, probs.argmax(1), 2) == pytest.approx(m["parity"]["macro_f1_tflite"], abs=1e-9)


def test_int8_loop_route_crash_is_a_clear_error(tiny_run, tmp_path):
    """The TFLite calibrator segfaults on int8 WHILE-loop graphs (TF 2.21): the worker process
    dies, the CLI explains and writes nothing. (Should a later TF fix it, the bundle must verify.)"""
    out = tmp_path / "b"
    res = run_cli("convert", str(tiny_run), "--quantize", "int8", "--route", "loop", "--out", str(out))
    if res.returncode == 0:
        assert load_bundle(out).quantization == "int8"
        return
    assert res.returncode == 1, res.stderr
    assert "alanet convert: error: the TFLite converter crashed (SIGSEGV)" in res.stderr
    assert "nothing written" in res.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_loop_route_float16_is_small(tiny_run, tmp_path):
    out = tmp_path / "b"
    res = run_cli("convert", str(tiny_run), "--quantize", "float16", "--route", "loop", "--out", str(out),
                  "--decision", "raise_threshold=0.5", "--decision", "min_raise_windows=3", "--decision", "warmup_s=30")
    assert res.returncode == 0, res.stderr
    m = json.loads((out / "manifest.json").read_text())
    assert m["decision"]["raise_threshold"] == 0.5 and m["decision"]["min_raise_windows"] == 3
    assert m["decision"]["warmup_s"] == 30 and "warmup_s" not in json.loads((tiny_run / "config.json").read_text())
    assert m["decision"]["clear_threshold"] == 0.4
    assert m["route"] == "loop" and "WHILE" in ModelRunner(out / "model.tflite").ops()
    assert m["parity"]["agreement"] >= 0.99


def test_parity_numbers():
    k = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]], np.float32)
    t = np.array([[0.8, 0.2], [0.3, 0.7], [0.4, 0.6], [0.3, 0.7]], np.float32)
    p = compare(k, t, np.array([0, 1, 0, 1]), threshold=0.99)
    assert isinstance(p, Parity)
    assert p.agreement == 0.75 and not p.passed
    assert p.max_abs_diff == pytest.approx(0.2)
    assert p.macro_f1_keras == 1.0 and p.macro_f1_tflite == pytest.approx((2 / 3 + 0.8) / 2)
    assert compare(k, k, None, 0.99).passed and compare(k, k, None, 0.99).macro_f1_keras is None


def test_parity_uses_full_windows_only(tiny_run, tmp_path):
    """Zero-padded windows (short training segments, masked in Keras) never come from a stream."""
    import shutil

    from alanet.convert.rundir import load_parity_windows, load_run

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    with np.load(run / "parity_windows.npz") as z:
        d = {k: z[k].copy() for k in z.files}
    d["test_x"][:5, -7:, :] = 0.0  # 5 windows padded at the end
    np.savez(run / "parity_windows.npz", **d)
    pw = load_parity_windows(load_run(run))
    assert pw.skipped_padded == 5 and len(pw.test_x) == len(d["test_x"]) - 5
    np.testing.assert_array_equal(pw.test_y, d["test_y"][5:])
