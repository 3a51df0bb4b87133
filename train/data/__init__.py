"""Datasets: EmoPain-format recordings, generic CSV, synthetic sessions, checks.

The names below are imported lazily (this package is imported by the CLI parser,
which must start fast)::

    from alanet.train.data import load_dataset, summarize
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Recording": "recording", "Dataset": "recording",
    "load_dataset": "loading", "detect_format": "loading",
    "load_emopain": "emopain", "load_recording": "emopain", "challenge_split": "emopain",
    "load_csv_dataset": "csv_generic",
    "write_synthetic_dataset": "synthetic", "synth_session": "synthetic", "synth_bd": "synthetic",
    "summarize": "check", "render_summary": "check", "DatasetSummary": "check",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
