"""Subcommands of alanet.convert (argparse only; implementations are imported lazily)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add this area's subcommands to the ``alanet`` parser."""
