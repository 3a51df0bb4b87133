"""How far is LiteRT's latency per window from what one core could do at best?

    python bench/compute_limit.py [--bundle DIR ...] [--invokes N] [--quick]

1. Counts the model's floating-point operations per window from the TFLite graph
   itself (the flatbuffer, read with LiteRT's schema module; no TensorFlow): 2·M·K·N
   for every FULLY_CONNECTED / BATCH_MATMUL, the kernel volume for CONV_2D, one per
   output element for element-wise ops and activations, the input size for
   reductions. A WHILE loop (the LSTM's time loop of the non-unrolled route) counts
   its body times its trip count, read from the constant loop bound (else the
   bundle's window length).
2. Measures the single-core float32 matrix-multiply rate: numpy (BLAS pinned to one
   thread, process pinned to one CPU), square sgemm 512×512 (peak) and the model's
   own shape, 1×(C+U) by (C+U)×4U (what one LSTM step does).
3. Times each bundle with the gateway's ``ModelRunner`` (one thread): p50/p99.

The latency floor is FLOPs / peak rate; the distance is measured p50 / floor. A
small LSTM is latency-bound (180 dependent steps of tiny matmuls), so a large
distance is expected; the small-matmul rate shows how much of it is the shape.
Writes ``bench/results/compute_limit.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, RESULTS, Figure, pin_one_core, write_result  # noqa: E402

ELEMENTWISE = {
    "ADD", "SUB", "MUL", "DIV", "LOGISTIC", "TANH", "RELU", "RELU6", "EXP", "SQUARED_DIFFERENCE", "MAXIMUM",
    "MINIMUM", "NEG", "SQRT", "RSQRT", "POW", "ABS", "LEAKY_RELU", "HARD_SWISH", "GELU", "QUANTIZE", "DEQUANTIZE",
    "LOG", "SQUARE", "SELECT", "SELECT_V2",
}
REDUCTIONS = {"SUM", "MEAN", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD", "L2_NORMALIZATION"}


@dataclass(frozen=True)
class GraphCount:
    """Operation count of one TFLite model for one window."""

    flops: int
    matmul_flops: int
    ops_by_kind: dict[str, int]
    loops: list[dict[str, int]]  # per WHILE: body FLOPs and trip count


def _op_names() -> dict[int, str]:
    from ai_edge_litert import schema_py_generated as s

    return {v: k for k, v in vars(s.BuiltinOperator).items() if not k.startswith("_") and isinstance(v, int)}


def count_flops(model_bytes: bytes, default_trip: int) -> GraphCount:
    """FLOPs per invoke of a TFLite model (see the module docstring for the rules)."""
    from ai_edge_litert import schema_py_generated as s

    m = s.Model.GetRootAsModel(model_bytes, 0)
    names = _op_names()
    codes = [m.OperatorCodes(i) for i in range(m.OperatorCodesLength())]
    by_kind: dict[str, int] = {}
    loops: list[dict[str, int]] = []

    subgraphs = [m.Subgraphs(g) for g in range(m.SubgraphsLength())]
    resolved: dict[tuple[int, int], list[int]] = {}  # (subgraph, tensor): shapes the file leaves at a placeholder

    def shape(sg: Any, t: int) -> list[int]:
        if t < 0:
            return []
        if (id(sg), t) in resolved:
            return resolved[id(sg), t]
        return [int(d) for d in sg.Tensors(t).ShapeAsNumpy()] if sg.Tensors(t).ShapeLength() else []

    def resolve_reshape(sg: Any, src: int, dst: int) -> None:
        """A dynamic-batch graph stores a reshape's output as e.g. [1, C] for [-1, C] even when its
        input is [1, T, C] (T·C values): the -1 takes what the input holds, as at run time."""
        ten = sg.Tensors(dst)
        sig = [int(d) for d in ten.ShapeSignatureAsNumpy()] if ten.ShapeSignatureLength() else []
        n_in, known = numel(shape(sg, src)), numel([d for d in sig if d != -1])
        if sig.count(-1) == 1 and numel(shape(sg, dst)) != n_in and known and n_in % known == 0:
            resolved[id(sg), dst] = [n_in // known if d == -1 else d for d in sig]

    def numel(sh: list[int]) -> int:
        return int(np.prod(sh)) if sh else 1

    def const_int(sg: Any, t: int) -> int | None:
        ten = sg.Tensors(t)
        buf = m.Buffers(ten.Buffer())
        if buf is None or buf.DataLength() == 0 or ten.Type() not in (s.TensorType.INT32, s.TensorType.INT64):
            return None
        data = buf.DataAsNumpy().tobytes()
        arr = np.frombuffer(data, np.int32 if ten.Type() == s.TensorType.INT32 else np.int64)
        return int(arr.reshape(-1)[0]) if arr.size == 1 else None

    def subgraph(g: int) -> tuple[int, int]:
        sg = subgraphs[g]  # one object per subgraph: `resolved` is keyed by its identity
        total = mm = 0
        for i in range(sg.OperatorsLength()):
            op = sg.Operators(i)
            oc = codes[op.OpcodeIndex()]
            name = names.get(max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode()), "?")
            ins = [int(x) for x in op.InputsAsNumpy()] if op.InputsLength() else []
            outs = [int(x) for x in op.OutputsAsNumpy()] if op.OutputsLength() else []
            if name == "RESHAPE" and ins and outs:
                resolve_reshape(sg, ins[0], outs[0])
            out_n = numel(shape(sg, outs[0])) if outs else 0
            f = 0
            if name == "FULLY_CONNECTED":
                w = shape(sg, ins[1])  # [out, in]
                rows = numel(shape(sg, ins[0])) // max(w[-1], 1)
                f = 2 * rows * w[0] * w[-1] + (rows * w[0] if len(ins) > 2 and ins[2] >= 0 else 0)
                mm += f
            elif name == "BATCH_MATMUL":
                a = shape(sg, ins[0])
                opts = s.BatchMatMulOptions()
                bo = op.BuiltinOptions()
                adj_x = False
                if bo is not None:
                    opts.Init(bo.Bytes, bo.Pos)
                    adj_x = bool(opts.AdjX())
                k = a[-2] if adj_x else a[-1]
                f = 2 * out_n * k
                mm += f
            elif name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
                w = shape(sg, ins[1])  # conv: [O, H, W, I]; depthwise: [1, H, W, O]
                per = w[1] * w[2] * (w[3] if name == "CONV_2D" else 1)
                f = 2 * out_n * per
                mm += f
            elif name == "UNIDIRECTIONAL_SEQUENCE_LSTM":
                x = shape(sg, ins[0])  # [B, T, I] (batch major)
                u = shape(sg, ins[4])[0] if ins[4] >= 0 else shape(sg, ins[5])[0]  # input_to_forget [U, I]
                steps = x[0] * x[1]
                f = steps * (2 * 4 * u * (x[2] + u) + 10 * u)
                mm += steps * 2 * 4 * u * (x[2] + u)
            elif name == "WHILE":
                opts = s.WhileOptions()
                bo = op.BuiltinOptions()
                opts.Init(bo.Bytes, bo.Pos)
                trips = [v for v in (const_int(sg, t) for t in ins if t >= 0) if v is not None and v > 1]
                trip = max(trips) if trips else default_trip
                body, body_mm = subgraph(opts.BodySubgraphIndex())
                cond, _ = subgraph(opts.CondSubgraphIndex())
                f = trip * (body + cond)
                mm += trip * body_mm
                loops.append({"body_flops": body, "trip_count": trip, "trip_from": "graph" if trips else "window"})
            elif name in ELEMENTWISE:
                f = out_n
            elif name == "SOFTMAX":
                f = 3 * out_n
            elif name in REDUCTIONS:
                f = numel(shape(sg, ins[0]))
            total += f
            by_kind[name] = by_kind.get(name, 0) + f
        return total, mm

    total, mm = subgraph(0)
    return GraphCount(int(total), int(mm), {k: int(v) for k, v in sorted(by_kind.items()) if v}, loops)


def _blas_one_thread() -> None:
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # the environment variables set above already do it
        pass


def matmul_rate(n: int, k: int, m: int, seconds: float = 0.5) -> float:
    """Float32 FLOP/s of ``A[n,k] @ B[k,m]`` on this thread (best of several timed batches)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, k), dtype=np.float32)
    b = rng.standard_normal((k, m), dtype=np.float32)
    out = np.empty((n, m), np.float32)
    np.matmul(a, b, out=out)
    reps = 1
    while True:  # calibrate so one batch takes >= 20 ms
        t = time.perf_counter()
        for _ in range(reps):
            np.matmul(a, b, out=out)
        dt = time.perf_counter() - t
        if dt >= 0.02:
            break
        reps *= 4
    best = dt / reps
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t = time.perf_counter()
        for _ in range(reps):
            np.matmul(a, b, out=out)
        best = min(best, (time.perf_counter() - t) / reps)
    return 2.0 * n * k * m / best


def time_bundle(bundle: Path, invokes: int) -> dict[str, float]:
    """p50/p99/mean ms of ``ModelRunner.predict`` (1 thread) on random normal windows."""
    from alanet.device.bundle import load_bundle
    from alanet.device.inference import ModelRunner

    b = load_bundle(bundle, run_self_test=False)
    r = ModelRunner.from_bundle(b, num_threads=1)
    rng = np.random.default_rng(1)
    wins = rng.standard_normal((16, *r.window_shape)).astype(np.float32)
    for i in range(30):
        r.predict(wins[i % 16])
    t = np.empty(invokes)
    for i in range(invokes):
        w = wins[i % 16]
        t0 = time.perf_counter()
        r.predict(w)
        t[i] = time.perf_counter() - t0
    t *= 1e3
    return {"p50_ms": float(np.percentile(t, 50)), "p99_ms": float(np.percentile(t, 99)), "mean_ms": float(t.mean()),
            "min_ms": float(t.min())}


def default_bundles() -> list[Path]:
    """Shipped bundles (models/*), the conversion benchmark's bundles, else the small test bundle."""
    found = sorted(p.parent for p in (REPO / "models").glob("*/manifest.json"))
    found += sorted(p.parent for p in (RESULTS / "tmp" / "convert_latency").glob("bundle-*/manifest.json"))
    if not found:
        sys.path.insert(0, str(REPO / "tests"))
        import runtime_support as rs

        found = [rs.cached_bundle(3, 120.0)[1]]
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", action="append", type=Path, help="bundle directory (repeatable; default: see docs)")
    ap.add_argument("--invokes", type=int, default=2000, help="timed invokes per bundle")
    ap.add_argument("--quick", action="store_true", help="fewer invokes, shorter rate measurement")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    import json

    cpu = pin_one_core()
    _blas_one_thread()
    invokes = 300 if args.quick else args.invokes
    secs = 0.2 if args.quick else 0.6
    peak = matmul_rate(512, 512, 512, secs)
    bundles = args.bundle or default_bundles()
    rows = []
    for bdir in bundles:
        man = json.loads((bdir / "manifest.json").read_text())
        model = (bdir / man.get("model_file", "model.tflite")).read_bytes()
        gc = count_flops(model, int(man.get("window", 180)))
        tr = man.get("training") if isinstance(man.get("training"), dict) else {}
        hp = (tr.get("run_config") or {}).get("hparams") or tr.get("hparams") or {}
        units = hp.get("units") if isinstance(hp, dict) else None
        c = int(man["input"]["shape"][-1])
        u = int(units or 16)
        small = matmul_rate(1, c + u, 4 * u, secs / 2)
        lat = time_bundle(bdir, invokes)
        floor_ms = 1e3 * gc.flops / peak
        small_floor_ms = 1e3 * gc.matmul_flops / small + 1e3 * (gc.flops - gc.matmul_flops) / peak
        row = {
            "bundle": str(bdir.relative_to(REPO)) if bdir.is_relative_to(REPO) else bdir.name,
            "model_id": man.get("model_id"), "quantization": man.get("quantization"), "bytes": len(model),
            "flops": gc.flops, "matmul_flops": gc.matmul_flops, "flops_by_op": gc.ops_by_kind, "loops": gc.loops,
            "floor_ms_peak": round(floor_ms, 5), "floor_ms_small_matmul": round(small_floor_ms, 5),
            "small_matmul_gflops": round(small / 1e9, 3),
            **{k: round(v, 4) for k, v in lat.items()},
            "distance_x": round(lat["p50_ms"] / floor_ms, 1) if floor_ms > 0 else None,
            "distance_small_x": round(lat["p50_ms"] / small_floor_ms, 1) if small_floor_ms > 0 else None,
        }
        rows.append(row)
        print(f"{row['bundle']:55s} {gc.flops / 1e6:7.3f} MFLOP  floor {floor_ms:.4f} ms  p50 {lat['p50_ms']:.4f} ms "
              f"p99 {lat['p99_ms']:.4f} ms  -> {row['distance_x']}x the floor", flush=True)
    print(f"single-core float32 sgemm 512^3: {peak / 1e9:.2f} GFLOP/s (cpu {cpu})")
    figs = [Figure("compute.sgemm_gflops", "Single-core float32 matmul rate (sgemm 512³)", round(peak / 1e9, 2),
                   "GFLOP/s", "numpy matmul, BLAS pinned to 1 thread, process pinned to 1 CPU, best batch", "higher")]
    for r in rows:
        tag = Path(r["bundle"]).name
        figs.append(Figure(f"compute.{tag}.mflops", f"Model FLOPs per window, {tag}", round(r["flops"] / 1e6, 4),
                           "MFLOP", "counted from the TFLite graph (matmuls 2·M·K·N, element-wise 1/elem, WHILE × trips)",
                           ""))
        figs.append(Figure(f"compute.{tag}.distance", f"LiteRT p50 / compute floor, {tag}", r["distance_x"], "×",
                           f"p50 {r['p50_ms']} ms (1 thread, {invokes} invokes) over FLOPs / sgemm peak "
                           f"({r['floor_ms_peak']} ms)", "lower"))
    path = write_result("compute_limit", {"sgemm_gflops": round(peak / 1e9, 3), "cpu": cpu, "invokes": invokes,
                                          "rows": rows}, figs, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
