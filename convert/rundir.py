"""Read a training run directory for conversion (no TensorFlow here).

Layout written by ``alanet train``: ``config.json`` (model, task, label names,
channel schema, window, stride, hyper-parameters, ...), ``normalization.json``,
``model.keras`` (or ``model.pkl`` for classic models, which cannot be converted),
``parity_windows.npz`` (``calib_x``, ``test_x``, ``test_y``: normalised windows)
and ``metrics.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alanet.device.features import Normalizer
from alanet.device.schema import Schema
from alanet.errors import InputError


@dataclass(frozen=True)
class Run:
    """What the converter needs from a run directory."""

    path: Path
    config: dict
    schema: Schema
    normalizer: Normalizer
    labels: list[str]
    task: str
    window: int
    stride: int
    model_path: Path
    metrics: dict

    @property
    def model_name(self) -> str:
        return str(self.config.get("model", "model"))


@dataclass(frozen=True)
class ParityWindows:
    """Full (unpadded) windows only: a stream never yields the zero-padded windows that
    training cuts from short segments, and only there may the trained model (which masks
    padding) and the Masking-free inference copy legitimately differ."""

    calib_x: np.ndarray  # [N, L, C] float32, normalised training windows
    test_x: np.ndarray  # [M, L, C] float32, normalised held-out windows
    test_y: np.ndarray | None  # [M] int labels, or None
    skipped_padded: int = 0  # held-out windows left out because they hold padding


def full_windows(x: np.ndarray) -> np.ndarray:
    """[N] bool: windows without an all-zero (padded, masked) frame."""
    return ~np.any(np.all(x == 0.0, axis=2), axis=1)


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: missing (not a training run directory?)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: unreadable JSON ({exc})") from None


def load_run(run_dir: str | Path) -> Run:
    """Read and check a run directory; InputError naming the file and field when it is unusable."""
    p = Path(run_dir)
    if not p.is_dir():
        raise InputError(f"{p}: not a directory")
    model_path = p / "model.keras"
    if not model_path.is_file():
        if (p / "model.pkl").is_file():
            raise InputError(f"{p}: holds a classic (scikit-learn) model (model.pkl); only Keras models convert to TFLite")
        raise InputError(f"{p}/model.keras: missing (no trained Keras model in this run directory)")
    cfg = _json(p / "config.json")
    if not isinstance(cfg, dict):
        raise InputError(f"{p}/config.json: not a JSON object")
    for key in ("task", "schema", "window", "stride", "label_names"):
        if key not in cfg:
            raise InputError(f"{p}/config.json: field {key!r} missing")
    task = str(cfg["task"])
    names = cfg["label_names"]
    if isinstance(names, dict):
        if task not in names:
            raise InputError(f"{p}/config.json: field label_names has no entry for task {task!r}")
        names = names[task]
    if not isinstance(names, list) or len(names) < 2:
        raise InputError(f"{p}/config.json: field label_names: need a list of at least 2 class names")
    try:
        schema = Schema.from_dict(cfg["schema"])
    except (ValueError, TypeError) as exc:
        raise InputError(f"{p}/config.json: field schema: {exc}") from None
    try:
        normalizer = Normalizer.from_dict(_json(p / "normalization.json"), schema.n_channels)
    except ValueError as exc:
        raise InputError(f"{p}/normalization.json: {exc}") from None
    try:
        window, stride = int(cfg["window"]), int(cfg["stride"])
    except (TypeError, ValueError):
        raise InputError(f"{p}/config.json: fields window/stride must be integers") from None
    if window < 1 or stride < 1:
        raise InputError(f"{p}/config.json: window and stride must be >= 1")
    metrics_path = p / "metrics.json"
    metrics = _json(metrics_path) if metrics_path.is_file() else {}
    return Run(p, cfg, schema, normalizer, [str(n) for n in names], task, window, stride, model_path,
               metrics if isinstance(metrics, dict) else {})


def load_parity_windows(run: Run) -> ParityWindows:
    """The calibration and held-out windows saved with the run; InputError if absent or malformed."""
    path = run.path / "parity_windows.npz"
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise InputError(f"{path}: missing (needed for calibration and the parity check)") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: unreadable ({exc})") from None
    shape = (run.window, run.schema.n_channels)
    out = {}
    for key in ("calib_x", "test_x"):
        if key not in data:
            raise InputError(f"{path}: array {key!r} missing")
        x = np.asarray(data[key], dtype=np.float32)
        if x.ndim != 3 or x.shape[1:] != shape or x.shape[0] == 0:
            raise InputError(f"{path}: {key} has shape {list(x.shape)}, expected [N>0, {shape[0]}, {shape[1]}]")
        if not np.all(np.isfinite(x)):
            raise InputError(f"{path}: {key} contains NaN or inf")
        out[key] = x
    y = data.get("test_y")
    if y is not None:
        y = np.asarray(y).astype(np.int64).reshape(-1)
        if y.shape[0] != out["test_x"].shape[0]:
            raise InputError(f"{path}: test_y has {y.shape[0]} labels for {out['test_x'].shape[0]} windows")
    keep = full_windows(out["test_x"])
    if not keep.any():
        raise InputError(f"{path}: every test_x window holds padding; need full windows for the parity check")
    calib = out["calib_x"][full_windows(out["calib_x"])]
    return ParityWindows(calib if len(calib) else out["calib_x"], out["test_x"][keep],
                         None if y is None else y[keep], int((~keep).sum()))
