"""Subcommands of alanet.convert (argparse only; implementations are imported lazily)."""

from __future__ import annotations

import argparse

QUANTIZATIONS = ("float32", "float16", "dynamic", "int8")


def register(sub: argparse._SubParsersAction) -> None:
    """Add this area's subcommands to the ``alanet`` parser."""
    from alanet.main import lazy

    p = sub.add_parser(
        "convert", help="convert a training run to a model bundle (TFLite + manifest)",
        description="Convert a trained Keras run to a TFLite model bundle, check parity with Keras on the "
        "run's held-out windows, and write the bundle (refused below the agreement threshold).")
    p.add_argument("run_dir", metavar="RUN_DIR", help="training run directory (config.json, model.keras, ...)")
    p.add_argument("--quantize", required=True, choices=QUANTIZATIONS, help="weight/activation precision")
    p.add_argument("--out", required=True, metavar="BUNDLE_DIR", help="bundle directory to write")
    p.add_argument("--sign", metavar="KEY", help="Ed25519 private key (PEM) to sign the manifest with")
    p.add_argument("--force", action="store_true", help="replace an existing bundle directory")
    p.add_argument("--min-agreement", type=float, metavar="F",
                   help="minimum argmax agreement with Keras (default 0.99; int8 0.97)")
    p.add_argument("--decision", action="append", metavar="KEY=VALUE", default=[],
                   help="override a decision parameter recorded in the manifest, e.g. raise_threshold=0.5 "
                   "(repeatable; defaults depend on the task)")
    p.add_argument("--bundle-version", dest="bundle_version", type=int, metavar="N",
                   help="release number signed into the manifest; gateways refuse a bundle older than the newest "
                   "they have run (default: the conversion time in seconds since 1970)")
    p.add_argument("--for-gateway", dest="for_gateway", action="append", metavar="ID", default=[],
                   help="only these gateways may install the bundle (repeatable; default: any gateway)")
    p.add_argument("--archive", action="store_true",
                   help="also write the single-file transport form BUNDLE_DIR.tar.xz (what alanet flash sends)")
    p.add_argument("--route", choices=("unrolled", "loop", "fused"), default="unrolled",
                   help="unrolled LSTM (default: every quantisation; one dynamic-batch file, ~260 KiB for ALANet, "
                   "fastest once windows are batched), WHILE loop (smaller, slow; no int8) or fused LSTM op (ALANet "
                   "only, needs tf-keras: the smallest file, does not batch; no int8)")
    p.add_argument("--batch-sizes", dest="batch_sizes", metavar="N,N", default="1",
                   help="native batch sizes the bundle runs, e.g. 1,16 (one more model file per size; unrolled: "
                   "one dynamic-batch model); default 1")
    p.set_defaults(func=lazy("alanet.convert.convert:cmd_convert"))

    p = sub.add_parser(
        "inspect", help="show and verify a model bundle (hash, signature, self-test; no TensorFlow)",
        description="Print a bundle's manifest summary and operators, and verify the model hash, the "
        "signature (with --trust) and the self-test vectors with LiteRT.")
    p.add_argument("bundle", metavar="BUNDLE", help="bundle directory or .tar.xz / .tar archive")
    p.add_argument("--trust", action="append", metavar="PUBKEY",
                   help="trusted Ed25519 public key (PEM); repeatable. With it, the bundle must be signed")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=lazy("alanet.convert.inspect_cmd:cmd_inspect"))

    p = sub.add_parser(
        "keygen", help="create an Ed25519 key pair for signing bundles",
        description="Write an Ed25519 private key (PEM, mode 0600) to KEYFILE and its public key to KEYFILE.pub.")
    p.add_argument("--out", required=True, metavar="KEYFILE", help="private key file to write")
    p.add_argument("--force", action="store_true", help="replace existing key files")
    p.set_defaults(func=lazy("alanet.convert.inspect_cmd:cmd_keygen"))
