"""The ``alanet`` command: one entry point, one subcommand per job.

Each area of the toolkit registers its own subcommands from a light ``cli`` module
(argparse only). Heavy imports (TensorFlow, LiteRT) happen inside the command
functions, so ``alanet --help`` and the gateway commands start fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Callable, Sequence

from alanet import __version__
from alanet.errors import InputError

# Areas, in the order their commands appear in --help.
AREAS = (
    "alanet.train.cli",
    "alanet.convert.cli",
    "alanet.firmware_bridge.cli",
    "alanet.device.cli",
    "alanet.device.live.cli",
    "alanet.device.flash.cli",
    "alanet.device.fleet.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alanet",
        description="ALANet Edge: train, convert and run pain / protective-behaviour "
        "detection on wearable gateways.",
    )
    parser.add_argument("--version", action="version", version=f"alanet {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in AREAS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2) if args.verbose else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    func: Callable[[argparse.Namespace], int | None] = args.func
    try:
        return int(func(args) or 0)
    except InputError as exc:
        print(f"alanet {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def lazy(target: str) -> Callable[[argparse.Namespace], int | None]:
    """``lazy("alanet.train.run:cmd_train")``: import the command only when it runs."""

    def call(args: argparse.Namespace) -> int | None:
        module, _, attr = target.partition(":")
        return getattr(importlib.import_module(module), attr)(args)

    return call
