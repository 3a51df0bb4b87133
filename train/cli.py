"""Subcommands of alanet.train: ``data`` (synth, check), ``train``, ``evaluate``.

Argparse only here; implementations are imported lazily.
"""

from __future__ import annotations

import argparse

from alanet.train.data import cli as data_cli


def register(sub: argparse._SubParsersAction) -> None:
    """Add this area's subcommands to the ``alanet`` parser."""
    data_cli.register(sub)
