"""The benchmark runner's own logic: FLOP counting on a real TFLite graph, the
comparison with a reference, the table, and the command line (no timings asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import runtime_support as rs

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.__main__ import BENCHES, compare, markdown  # noqa: E402
from bench.common import Figure, fmt, platform_name  # noqa: E402
from bench.compute_limit import count_flops  # noqa: E402


def test_flops_of_the_test_model_counted_from_its_graph():
    _, bundle = rs.cached_bundle(3, 120.0)
    gc = count_flops((bundle / "model.tflite").read_bytes(), rs.L)
    # GlobalAveragePooling1D (MEAN over 180×30), Dense 30→2 with bias, softmax over 2
    assert gc.ops_by_kind == {"MEAN": rs.L * 30, "FULLY_CONNECTED": 2 * 30 * 2 + 2, "SOFTMAX": 3 * 2}
    assert gc.flops == rs.L * 30 + 122 + 6 and gc.matmul_flops == 122 and gc.loops == []


def test_flops_of_a_dynamic_batch_lstm_count_the_input_projection(tmp_path):
    """The unrolled route projects every frame's input in one FULLY_CONNECTED behind a
    RESHAPE whose stored output shape is a batch placeholder ([1, C] for [-1, C])."""
    from alanet.convert.convert import convert_run
    from alanet.convert.tinyrun import cached_tiny_run

    res = convert_run(cached_tiny_run(tmp_path), "float32", tmp_path / "b", quiet=True, batch_sizes=(1, 4))
    gc = count_flops((res.bundle / "model.tflite").read_bytes(), 24)
    t, c, u = 24, 6, 8  # the tiny run: 24 frames, 6 channels, LSTM(8) → Dense(2)
    projection = 2 * t * c * 4 * u + t * 4 * u  # every frame's input side, with its bias
    recurrent = 2 * (t - 1) * u * 4 * u  # the state's product from the second step on
    assert gc.ops_by_kind["FULLY_CONNECTED"] == projection + recurrent + 2 * u * 2 + 2


def test_compare_flags_only_clear_regressions_in_the_right_direction():
    figs = [Figure("a", "latency", 2.5, "ms", "x", "lower").as_dict(),
            Figure("b", "rate", 100.0, "/s", "x", "higher").as_dict(),
            Figure("c", "latency2", 1.4, "ms", "x", "lower").as_dict(),
            Figure("f", "start-up", 0.6, "s", "x", "lower").as_dict(),
            Figure("d", "count", 0, "", "x", "").as_dict(),
            Figure("e", "new", 3.0, "", "x", "lower").as_dict()]
    ref = {"figures": [{"key": "a", "value": 1.0}, {"key": "b", "value": 200.0}, {"key": "c", "value": 1.0},
                       {"key": "d", "value": 0}, {"key": "f", "value": 0.25}]}
    out = {f["key"]: f for f in compare(figs, ref)}
    assert out["a"]["flag"] == "worse" and out["a"]["ratio"] == 2.5
    assert out["b"]["flag"] == "worse" and out["b"]["ratio"] == 0.5
    assert out["c"]["flag"] == ""  # within noise
    assert out["f"]["flag"] == "" and out["f"]["ratio"] == 2.4  # 2.4× but only 0.35 s: noise
    assert out["d"].get("flag", "") == "" and "ratio" not in out["d"]
    assert "ref" not in out["e"]
    doc = {"platform": "p", "machine": {"cpu": "c", "cpus": 1, "python": "3", "os": "o"}, "date_utc": "d",
           "quick": True, "seconds": 1.0, "figures": compare(figs, ref),
           "benchmarks": {"x": {"status": "missing", "seconds": 0.0, "error": "bench/x.py does not exist"}}}
    md = markdown(doc)
    assert "| latency | 2.5 ms | 1 (×2.50) **worse** | x |" in md and "| x | missing |" in md


def test_every_benchmark_script_exists_and_the_cli_lists_them():
    for b in BENCHES:
        assert (REPO / "bench" / b.script).is_file(), b.script
    r = subprocess.run([sys.executable, "-m", "bench", "--list"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and all(b.name in r.stdout for b in BENCHES)
    r = subprocess.run([sys.executable, "-m", "bench", "--only", "nope"], cwd=REPO, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "unknown benchmark" in r.stderr


def test_platform_name_and_number_format(monkeypatch):
    monkeypatch.setenv("ALANET_BENCH_PLATFORM", "rpi5")
    assert platform_name() == "rpi5"
    monkeypatch.delenv("ALANET_BENCH_PLATFORM")
    assert platform_name().startswith(sys.platform.rstrip("0123456789") + "-")
    assert fmt(None) == "missing" and fmt(1234567) == "1,234,567" and fmt(0.1234) == "0.123"
