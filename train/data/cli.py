"""``alanet data synth|check`` (argparse only)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``alanet data`` to the parser."""
