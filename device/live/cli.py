"""``alanet live`` (argparse only; the server is imported lazily)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``alanet live`` to the parser."""
