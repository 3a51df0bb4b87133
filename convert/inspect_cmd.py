"""``alanet inspect`` and ``alanet keygen`` (LiteRT and cryptography only, no TensorFlow)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from alanet.device.bundle import Bundle, load_bundle, transfer_size
from alanet.device.inference import model_ops
from alanet.device.signing import write_keypair


def inspect_bundle(path: str | Path, trusted_keys: list[Path] | None = None) -> dict[str, Any]:
    """Verify a bundle (hash, signature, self-test) and return a JSON-able report."""
    b: Bundle = load_bundle(path, trusted_keys=trusted_keys or None)
    m = b.manifest
    if b.signed_by:
        sig = f"valid, trusted key {b.signed_by}"
    elif b.signature_present:
        sig = "present, not verified (no --trust key given)"
    else:
        sig = "unsigned"
    return {
        "path": str(path),
        "model_id": b.model_id,
        "task": b.task,
        "labels": b.labels,
        "created": m["created"],
        "bundle_version": b.version,
        "gateways": b.gateways,
        "quantization": b.quantization,
        "route": m.get("route"),
        "stateful": b.stateful,
        "channels": b.schema.n_channels,
        "sample_rate_hz": b.schema.sample_rate_hz,
        "window": b.window,
        "stride": b.stride,
        "normalization": {"mode": b.normalizer.mode, "prior_frames": b.normalizer.prior_frames},
        "input": m["input"],
        "output": m["output"],
        "decision": m["decision"],
        "model_bytes": m["model_bytes"],
        "model_sha256": m["model_sha256"],
        "batch_sizes": list(b.batch_sizes),
        "batch_models": [dict(e) for e in m.get("batch_models") or []],
        "bundle_bytes": m["model_bytes"] + sum(e["bytes"] for e in m.get("batch_models") or []
                                               if e["file"] != "model.tflite"),
        "transfer_bytes": transfer_size(b.path),
        "ops": model_ops(b.model_path),
        "parity": m["parity"],
        "training": {k: m["training"].get(k) for k in ("model", "run_dir", "metrics") if k in m["training"]},
        "checks": {"manifest_schema": "ok", "model_sha256": "ok", "signature": sig,
                   "self_test": f"ok ({len(m['self_test'])} vectors, every model file, max |Δ| "
                                f"{b.self_test_max_diff:.2g} <= {m['self_test_atol']:g})"},
    }


def _text(r: dict[str, Any]) -> str:
    p = r["parity"]
    f1 = "" if p.get("macro_f1_keras") is None else \
        f", macro F1 Keras {p['macro_f1_keras']:.3f} / TFLite {p['macro_f1_tflite']:.3f}"
    lines = [
        f"bundle      {r['path']}",
        f"model id    {r['model_id']}  (created {r['created']}, bundle version {r['bundle_version']}"
        f"{', for ' + ', '.join(r['gateways']) if r['gateways'] else ''})",
        f"task        {r['task']}: {', '.join(r['labels'])}",
        f"input       {r['window']} frames x {r['channels']} channels at {r['sample_rate_hz']:g} Hz, "
        f"stride {r['stride']}; tensor {r['input']['shape']} {r['input']['dtype']}",
        f"normalise   {r['normalization']['mode']}" + (
            f" (each wearer's running statistics, prior {r['normalization']['prior_frames']:g} frames of the "
            f"training population's)" if r['normalization']['prior_frames'] else " (the training population's statistics)"),
        f"model       {r['model_bytes']} bytes, {r['quantization']}"
        f"{', ' + r['route'] if r['route'] else ''}{', stateful' if r['stateful'] else ''}; sha256 {r['model_sha256']}",
        f"batch       native sizes {', '.join(map(str, r['batch_sizes']))}"
        + "".join(f"; {e['size']}: {e['file']} ({e['bytes']} bytes, sha256 {e['sha256'][:12]}...)"
                  for e in r["batch_models"]) + f"; model files {r['bundle_bytes']} bytes in all",
        f"transfer    {r['transfer_bytes']} bytes ({r['transfer_bytes'] / 1024:.1f} KiB): the xz archive alanet flash sends",
        f"ops         {', '.join(r['ops'])}",
        f"decision    {json.dumps(r['decision'])}",
        f"parity      agreement {p['agreement']:.1%} on {p['n_windows']} windows (threshold {p['threshold']:.0%}), "
        f"max |Δp| {p['max_abs_diff']:.2g}{f1}",
    ]
    lines += [f"check       {k}: {v}" for k, v in r["checks"].items()]
    return "\n".join(lines)


def cmd_inspect(args: argparse.Namespace) -> int:
    report = inspect_bundle(args.bundle, [Path(k) for k in args.trust] if args.trust else None)
    print(json.dumps(report, indent=2) if args.json else _text(report))
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    kp = write_keypair(args.out, force=args.force)
    print(f"wrote private key {args.out} (keep it secret) and public key {args.out}.pub (key id {kp.key_id})")
    return 0
