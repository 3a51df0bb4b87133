"""``alanet convert``: a training run → a verified model bundle.

Steps: check the inputs (run directory, output, signing key) → in a child process
(TensorFlow, see :mod:`alanet.convert.worker`) build the batch-1 inference copy
and convert it (and one model per extra batch size, ``--batch-sizes``) → here, with
LiteRT only, run the converted model(s) on the held-out windows and compare with
Keras (parity; every batch size's model is checked the same way) → refuse below the agreement threshold →
write the bundle atomically (manifest, model, optional signature) → load it back
with the gateway's own checks.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from alanet.convert.parity import DEFAULT_MIN_AGREEMENT, MAX_ATTENTION_TV, Parity, compare, compare_attention
from alanet.convert.rundir import Run, load_parity_windows, load_run
from alanet.device.decisions import window_labels
from alanet.device.bundle import (MANIFEST_SCHEMA, MANIFEST_SCHEMA_PER_WEARER, MAX_BATCH_MODELS, QUANTIZATIONS, BundleError, default_decision,
                                  dequantize_window, load_bundle, quantize_window, write_bundle)
from alanet.device.inference import ModelRunner, model_ops
from alanet.device.signing import load_private_key
from alanet.errors import InputError
from alanet.options import parse_assignments

N_SELF_TEST = 3
# Ops that keep state between invokes (the fused LSTM): the runner resets them before each one.
STATEFUL_OPS = {"UNIDIRECTIONAL_SEQUENCE_LSTM", "BIDIRECTIONAL_SEQUENCE_LSTM", "UNIDIRECTIONAL_SEQUENCE_RNN",
                "VAR_HANDLE"}
CLEAR_FRACTION = 0.75  # a calibrated alert clears below this fraction of its raise threshold
HYSTERESIS = ("smoothing_alpha", "raise_threshold", "clear_threshold", "min_raise_windows", "min_clear_windows",
              "warmup_s")


class ConversionError(InputError):
    """Conversion failed (converter crash, parity below threshold): exit 1, nothing written."""

    exit_code = 1


@dataclass(frozen=True)
class ConvertResult:
    bundle: Path
    model_bytes: int  # all model files of the bundle together
    parity: Parity
    route: str
    ops: list[str]
    seconds: float
    attention: Any = None  # AttentionParity for models with attention outputs


def _worker(run_dir: Path, quantization: str, route: str, work: Path, timeout_s: float, quiet: bool,
            batch_sizes: tuple[int, ...] = (1,)) -> dict[str, Any]:
    """Run the TensorFlow half in a child process; map a crash or bad input to a clear error."""
    cmd = [sys.executable, "-m", "alanet.convert.worker", str(run_dir), quantization, route, str(work),
           ",".join(map(str, batch_sizes))]
    env = {**__import__("os").environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    stage_file, last, t0 = work / "stage", "", time.monotonic()
    out = err = b""
    while True:
        try:
            out, err = proc.communicate(timeout=0.5)
            break
        except subprocess.TimeoutExpired:
            stage = stage_file.read_text() if stage_file.exists() else ""
            if stage != last and stage and stage != "done" and not quiet:
                print(f"convert: {stage} ...", file=sys.stderr, flush=True)
            last = stage
            if time.monotonic() - t0 > timeout_s:
                proc.kill()
                proc.communicate()
                raise ConversionError(f"conversion timed out after {timeout_s:.0f} s while {last or 'starting'}")
    stage = stage_file.read_text() if stage_file.exists() else "starting"
    if proc.returncode == 0:
        return json.loads((work / "info.json").read_text())
    if (work / "error").exists():
        raise InputError((work / "error").read_text().strip())
    if proc.returncode < 0:
        try:
            name = signal.Signals(-proc.returncode).name
        except ValueError:
            name = f"signal {-proc.returncode}"
        hint = " (int8 with --route loop crashes the TFLite calibrator: use --route unrolled)" \
            if quantization == "int8" else ""
        raise ConversionError(f"the TFLite converter crashed ({name}) while {stage}{hint}; nothing written")
    tail = [ln for ln in err.decode(errors="replace").splitlines() if ln.strip()][-3:]
    raise ConversionError(f"conversion failed while {stage}: {' | '.join(tail) or f'exit {proc.returncode}'}")


def self_test_atol(quantization: str, output_quant: tuple[float, int] | None) -> float:
    """Self-test tolerance: tight enough to catch a wrong model or runtime, loose enough for
    another CPU (ARM kernels may run float16 models in FP16 arithmetic, int8 rounding can
    differ by a step)."""
    base = {"float32": 1e-3, "float16": 0.02, "dynamic": 0.01, "int8": 0.01}[quantization]
    return max(base, 3.0 * output_quant[0]) if output_quant else base


def _summary(obj: Any, depth: int = 0) -> Any:
    """A JSON-friendly summary of metrics: scalars, short lists, nested dicts to depth 3."""
    if isinstance(obj, (bool, int, str)) or obj is None:
        return obj
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict) and depth < 3:
        return {str(k): _summary(v, depth + 1) for k, v in obj.items()
                if not (isinstance(v, list) and len(v) > 64)}
    if isinstance(obj, list) and len(obj) <= 64 and depth < 3:
        return [_summary(v, depth + 1) for v in obj]
    return None


def _expected(values: Any) -> list[float]:
    """Expected self-test outputs, to 1e-6 (the tolerance is 1e-3 or more): short JSON, small bundle."""
    return [round(float(v), 6) for v in np.asarray(values, np.float32).ravel()]


def _self_test_indices(pred: np.ndarray, n: int) -> list[int]:
    idx: list[int] = []
    for c in np.unique(pred):
        idx.append(int(np.flatnonzero(pred == c)[0]))
    for i in np.linspace(0, len(pred) - 1, num=min(n, len(pred))).astype(int):
        if len(idx) >= n:
            break
        if int(i) not in idx:
            idx.append(int(i))
    return sorted(idx[:n])


def build_manifest(run: Run, quantization: str, route: str, runner: ModelRunner, parity: Parity,
                   self_test: list[dict], atol: float, model_sha256: str) -> dict[str, Any]:
    """The manifest of a bundle made from ``run`` (model hash/size are filled by write_bundle)."""
    cfg = run.config
    model_id = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{run.task}-{run.model_name}-{quantization}-{model_sha256[:8]}")
    in_q = runner.input_quant or (0.0, 0)
    out_q = runner.output_quant or (0.0, 0)
    run_config = {k: v for k, v in cfg.items() if k not in ("schema", "label_names")}
    return {
        "schema": MANIFEST_SCHEMA_PER_WEARER if run.normalizer.per_wearer else MANIFEST_SCHEMA,
        "model_id": model_id,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "task": run.task,
        "labels": run.labels,
        "schema_name": run.schema.name,
        "channels": run.schema.to_dict()["channels"],
        "sample_rate_hz": run.schema.sample_rate_hz,
        "window": run.window,
        "stride": run.stride,
        "normalization": run.normalizer.to_dict(),
        "decision": calibrated_decision(run.task, run.labels, run.config.get("decision") or {}),
        "quantization": quantization,
        "stateful": runner.stateful,
        "route": route,
        "input": {"shape": list(runner.input_shape), "dtype": runner.input_dtype.name,
                  "scale": float(in_q[0]), "zero_point": int(in_q[1])},
        "output": {"shape": [1, runner.n_outputs], "dtype": runner.output_dtype.name,
                   "scale": float(out_q[0]), "zero_point": int(out_q[1])},
        "training": {"model": run.model_name, "run_dir": run.path.name, "run_config": _summary(run_config),
                     "metrics": _summary(run.metrics)},
        "parity": parity.to_dict(),
        "self_test": self_test,
        "self_test_atol": atol,
    }


def calibrated_decision(task: str, labels: list[str], calibrated: dict[str, Any]) -> dict[str, Any]:
    """The task's default decision rule with the run's calibration (chosen on validation
    participants in training) written in: the window threshold and the alert rule chosen
    on validation streams (without one: raise at the threshold, clear a little below),
    or the multi-class prior correction."""
    dec = default_decision(task, labels)
    if "window_threshold" in calibrated and "class_index" in dec:
        t = float(calibrated["window_threshold"])
        dec.update(window_threshold=t, raise_threshold=round(t, 4), clear_threshold=round(CLEAR_FRACTION * t, 4))
        # The alert rule itself, when training chose it on validation streams.
        dec.update({k: calibrated[k] for k in HYSTERESIS if k in calibrated})
    if calibrated.get("class_weights") is not None:
        dec["class_weights"] = [float(v) for v in calibrated["class_weights"]]
    if calibrated.get("calibration"):
        dec["calibration"] = str(calibrated["calibration"])
    return dec


def attention_block(run: Run, att: dict[str, Any]) -> dict[str, Any]:
    """The manifest's ``attention`` block from the worker's description of the attention outputs."""
    from alanet.device.attention import group_names

    if att["axis"] == "parts":
        groups = run.config.get("groups") or list(run.schema.groups.values())
        body: dict[str, Any] = {"axis": "parts", "names": group_names(groups, run.schema.names,
                                                                        [c.group for c in run.schema.channels])}
    else:
        body = {"axis": "units", "count": int(att["body_n"])}
    return {"outputs": dict(att["outputs"]), "temporal": {"length": int(att["temporal_len"])}, "body": body}


def _lite_run(runner: ModelRunner, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Probabilities [N, K] of the batch-1 model and, for a model with attention outputs, temporal [N, L]
    and bodily [N, P] weights."""
    probs, temporal, body = [], [], []
    for w in x:
        probs.append(runner.predict(np.asarray(w, np.float32)))
        if runner.has_attention:
            t, b = runner.attention()  # type: ignore[misc]
            temporal.append(t)
            body.append(b)
    if not runner.has_attention:
        return np.stack(probs), None, None
    return np.stack(probs), np.stack(temporal), np.stack(body)


def _decision(run: Run, overrides: dict[str, Any]) -> dict[str, Any]:
    """The run's calibrated decision rule with ``overrides``, checked before any work."""
    from alanet.device.bundle import first_schema_error, manifest_json_schema

    cal = run.config.get("decision") or {}
    dec = calibrated_decision(run.task, run.labels, cal if isinstance(cal, dict) else {})
    known = set(dec) | {"class_name", "window_threshold", "class_weights", "calibration"} | \
        ({"warmup_s"} if "class_index" in dec else set())
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise InputError(f"--decision: unknown key(s) {', '.join(unknown)} for task {run.task!r} "
                         f"(known: {', '.join(dec)})")
    dec.update(overrides)
    err = first_schema_error(dec, manifest_json_schema()["properties"]["decision"])
    if err is not None:
        where = "/".join(map(str, err.absolute_path))
        raise InputError(f"--decision: {where + ': ' if where else ''}{err.message}")
    if "class_index" in dec and not 0 <= int(dec["class_index"]) < len(run.labels):
        raise InputError(f"--decision: class_index {dec['class_index']} out of range for {len(run.labels)} labels")
    from alanet.device.decisions import make_decider

    try:  # what the gateway will build (the bundle's verification checks the same)
        make_decider(run.task, dec, run.labels)
    except ValueError as exc:
        raise InputError(f"--decision: {exc}") from None
    return dec


def parse_batch_sizes(text: str | None) -> tuple[int, ...]:
    """``"1,16"`` → (1, 16): the native batch sizes of a bundle (1 is always added)."""
    if not text:
        return (1,)
    try:
        sizes = {int(v) for v in text.split(",") if v.strip()}
    except ValueError:
        raise InputError(f"--batch-sizes: {text!r} is not a comma-separated list of integers") from None
    bad = sorted(v for v in sizes if not 1 <= v <= 9999)
    if bad:
        raise InputError(f"--batch-sizes: {bad[0]} is out of range (1..9999)")
    sizes.add(1)
    if len(sizes) > 1 + MAX_BATCH_MODELS:
        raise InputError(f"--batch-sizes: at most {MAX_BATCH_MODELS} sizes besides 1")
    return tuple(sorted(sizes))


def convert_run(run_dir: str | Path, quantization: str, out: str | Path, *, route: str = "unrolled",
                sign: str | Path | None = None, force: bool = False, min_agreement: float | None = None,
                timeout_s: float = 1800.0, quiet: bool = False,
                decision: dict[str, Any] | None = None, bundle_version: int | None = None,
                gateways: list[str] | None = None, batch_sizes: tuple[int, ...] = (1,)) -> ConvertResult:
    """Convert a run into a bundle at ``out``; ConversionError/InputError leave nothing behind.

    ``bundle_version`` (default: now, in seconds since 1970) and ``gateways`` (the only
    gateways that may install it) go into the signed manifest. ``batch_sizes``: the
    native batch sizes the bundle runs (each extra size is one more model file, or for
    ``route="unrolled"`` one dynamic-batch model).
    """
    t0 = time.monotonic()
    if bundle_version is None:
        bundle_version = int(time.time())
    if bundle_version < 0:
        raise InputError(f"--bundle-version: must be >= 0, got {bundle_version}")
    from alanet.device.config import ID_RE

    for g in gateways or []:
        if not ID_RE.match(g):
            raise InputError(f"--for-gateway: {g!r} is not a gateway id")
    if quantization not in QUANTIZATIONS:
        raise InputError(f"unknown quantisation {quantization!r} (choose from {', '.join(QUANTIZATIONS)})")
    out = Path(out)
    if out.exists() and not force:
        raise InputError(f"{out}: already exists (use --force to replace it)")
    if sign is not None:
        load_private_key(sign)
    threshold = DEFAULT_MIN_AGREEMENT[quantization] if min_agreement is None else float(min_agreement)
    if not 0.0 <= threshold <= 1.0:
        raise InputError(f"--min-agreement {threshold} must lie in [0, 1]")
    batch_sizes = parse_batch_sizes(",".join(map(str, batch_sizes)))
    if route == "fused" and quantization == "int8":
        raise InputError("--route fused: int8 is not supported (the fused int8 LSTM runs ~10x slower than float16); "
                         "use --route unrolled for int8")
    run = load_run(run_dir)
    pw = load_parity_windows(run)
    dec = _decision(run, decision or {})

    with tempfile.TemporaryDirectory(prefix="alanet-convert-") as tmp:
        work = Path(tmp)
        info = _worker(run.path, quantization, route, work, timeout_s, quiet, batch_sizes)
        tflite = (work / "model.tflite").read_bytes()
        keras_probs = np.load(work / "keras_probs.npy")
        extra = {int(b): (None if f is None else work / f) for b, f in (info.get("batch_models") or {}).items()}
        ops = model_ops(work / "model.tflite")
        for path in {p for p in extra.values() if p is not None}:
            ops = sorted({*ops, *model_ops(path)})
        bad = [o for o in ops if o.startswith("Flex") or o == "CUSTOM"]
        if bad:
            raise ConversionError(f"converted model needs non-builtin ops {bad}; nothing written")
        att = info.get("attention")
        runner = ModelRunner(work / "model.tflite", num_threads=1, outputs=att["outputs"] if att else None,
                             stateful=bool(info.get("stateful")) or bool(STATEFUL_OPS & set(ops)),
                             batch_models={b: work / "model.tflite" if p is None else p for b, p in extra.items()})
        lite_probs, lite_t, lite_b = _lite_run(runner, pw.test_x)
        parity = compare(keras_probs, lite_probs, pw.test_y, threshold, dec)
        if not parity.passed:
            raise ConversionError(
                f"parity check failed: {quantization} model agrees with Keras on {parity.agreement:.1%} of "
                f"{parity.n_windows} parity windows, below {threshold:.1%}; nothing written")
        batch_parity = {}
        for size in runner.batch_sizes[1:]:  # every batch model: the same check, one invoke per `size` windows
            got = np.concatenate([runner.predict_at(size, pw.test_x[i:i + size]) for i in range(0, len(pw.test_x), size)])
            bp = compare(keras_probs, got, pw.test_y, threshold, dec)
            if not bp.passed:
                raise ConversionError(
                    f"parity check failed at batch {size}: agrees with Keras on {bp.agreement:.1%} of "
                    f"{bp.n_windows} parity windows, below {threshold:.1%}; nothing written")
            batch_parity[str(size)] = {"agreement": bp.agreement, "max_abs_diff": bp.max_abs_diff,
                                       "max_abs_diff_vs_batch_1": float(np.max(np.abs(got - lite_probs)))}
        att_parity = None
        if att is not None:
            att_parity = compare_attention(np.load(work / "keras_temporal.npy"), lite_t, np.load(work / "keras_body.npy"),
                                           lite_b, MAX_ATTENTION_TV[quantization])
            if not att_parity.passed:
                raise ConversionError(
                    f"attention parity check failed: {quantization} model's attention differs from Keras by "
                    f"{max(att_parity.temporal_tv, att_parity.body_tv):.3f} (mean total variation) on "
                    f"{att_parity.n_windows} parity windows, above {att_parity.max_tv:g}; nothing written")
        pred = window_labels(lite_probs, dec)
        st = []
        for i in _self_test_indices(pred, N_SELF_TEST):
            # stored at 8 bits per value (a quarter of float32, and it compresses); the expected
            # outputs are the model's on exactly the stored window
            q8 = quantize_window(pw.test_x[i])
            probs, t, b = _lite_run(runner, dequantize_window(q8, pw.test_x.shape[1:])[None])
            vec: dict[str, Any] = {"input_q8": q8, "output": _expected(probs[0])}
            if att is not None:
                vec["attention"] = {"temporal": _expected(t[0]), "body": _expected(b[0])}
            st.append(vec)
        atol = self_test_atol(quantization, runner.output_quant)
        import hashlib

        manifest = build_manifest(run, quantization, info.get("route", route), runner, parity, st, atol,
                                  hashlib.sha256(tflite).hexdigest())
        manifest["training"]["inference_copy"] = info.get("copy_built_from")
        if "float_ops" in info:  # int8: ops the converter kept in float
            manifest["training"]["float_ops"] = info["float_ops"]
        manifest["decision"] = dec
        manifest["bundle_version"] = bundle_version
        if gateways:
            manifest["gateways"] = list(dict.fromkeys(gateways))
        manifest["parity"]["skipped_padded_windows"] = pw.skipped_padded
        if batch_parity:
            manifest["parity"]["batch"] = batch_parity
        manifest["parity"]["windows"] = str(run.config.get("parity_windows", "held-out participants"))
        if att is not None and att_parity is not None:
            manifest["attention"] = attention_block(run, att)
            manifest["parity"]["attention"] = att_parity.to_dict()
        batch_bytes = {b: None if p is None else p.read_bytes() for b, p in extra.items()}
        write_bundle(out, manifest, tflite, signing_key=sign, force=force, batch_models=batch_bytes)
    try:
        load_bundle(out)
    except BundleError:
        import shutil

        shutil.rmtree(out, ignore_errors=True)
        raise
    total = len(tflite) + sum(len(v) for v in batch_bytes.values() if v is not None)
    return ConvertResult(out, total, parity, route, ops, time.monotonic() - t0, att_parity)


def parse_decision(items: list[str]) -> dict[str, Any]:
    """``["raise_threshold=0.5", ...]`` → {"raise_threshold": 0.5, ...} (values parsed as JSON)."""
    return parse_assignments(items, "--decision")


def cmd_convert(args: argparse.Namespace) -> int:
    res = convert_run(args.run_dir, args.quantize, args.out, route=args.route, sign=args.sign, force=args.force,
                      min_agreement=args.min_agreement, decision=parse_decision(args.decision),
                      bundle_version=args.bundle_version, gateways=args.for_gateway,
                      batch_sizes=parse_batch_sizes(args.batch_sizes))
    p = res.parity
    f1 = "" if p.macro_f1_keras is None else f", macro F1 Keras {p.macro_f1_keras:.3f} / TFLite {p.macro_f1_tflite:.3f}"
    print(f"wrote {res.bundle} ({args.quantize}, {res.route}, {res.model_bytes / 1024:.1f} KiB): "
          f"agreement {p.agreement:.1%} on {p.n_windows} windows, max |Δp| {p.max_abs_diff:.2g}{f1}")
    if res.attention is not None:
        a = res.attention
        print(f"attention outputs: temporal/bodily total variation {a.temporal_tv:.2g}/{a.body_tv:.2g} "
              f"(limit {a.max_tv:g}), peak within a frame {a.peak_agreement:.1%}, same top part {a.top_agreement:.1%}")
    if args.archive:
        from alanet.device.bundle import pack

        print(f"wrote {pack(res.bundle)}")
    return 0
