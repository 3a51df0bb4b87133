"""The run directory: writing it after training and reading it back (convert, evaluate).

Layout (self-describing)::

    config.json           model, task, label names, schema, window/stride, hparams, seed,
                          eval, test participants, format, library versions, data fingerprint
    normalization.json    z-score statistics of the training participants
    model.keras | model.pkl   the full classifier (Keras) or a scikit-learn pipeline
    parity_windows.npz    calib_x, test_x (normalised windows), test_y
    metrics.json, history.json, report.md, plots/*.png
"""

from __future__ import annotations

import io
import json
import pickle
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alanet import atomic
from alanet.device.features import Normalizer
from alanet.device.schema import Schema
from alanet.errors import InputError
from alanet.train.models import CLASSIC_MODELS, build_model, custom_objects

CONFIG, NORMALIZATION, KERAS_MODEL, CLASSIC_MODEL = "config.json", "normalization.json", "model.keras", "model.pkl"
PARITY, METRICS, HISTORY = "parity_windows.npz", "metrics.json", "history.json"


def library_versions() -> dict[str, str]:
    import sys

    out = {"python": platform.python_version(), "numpy": np.__version__}
    try:
        from importlib.metadata import version

        out["alanet-edge"] = version("alanet-edge")
    except Exception:  # noqa: BLE001 - not installed as a distribution
        pass
    for mod in ("tensorflow", "keras", "sklearn"):
        if mod in sys.modules:
            out[mod] = getattr(sys.modules[mod], "__version__", "?")
    if "keras" in sys.modules:
        out["keras_backend"] = sys.modules["keras"].backend.backend()
    if "tensorflow" in sys.modules:
        gpus = sys.modules["tensorflow"].config.list_physical_devices("GPU")
        out["devices"] = ", ".join(g.name for g in gpus) or "cpu"
    return out


@dataclass(frozen=True)
class Run:
    """A trained run directory, read back."""

    path: Path
    config: dict[str, Any]
    normalizer: Normalizer
    schema: Schema

    @property
    def model_name(self) -> str:
        return str(self.config["model"])

    @property
    def task(self) -> str:
        return str(self.config["task"])

    @property
    def label_names(self) -> list[str]:
        return list(self.config["label_names"])

    @property
    def window(self) -> int:
        return int(self.config["window"])

    @property
    def stride(self) -> int:
        return int(self.config["stride"])

    @property
    def groups(self) -> list[list[int]]:
        return [list(g) for g in self.config["groups"]]

    @property
    def hparams(self) -> dict[str, Any]:
        return dict(self.config["hparams"])

    @property
    def decision(self) -> dict[str, Any]:
        """The calibrated decision rule chosen on validation participants ({} = argmax)."""
        return dict(self.config.get("decision") or {})

    @property
    def is_classic(self) -> bool:
        return self.model_name in CLASSIC_MODELS

    def metrics(self) -> dict[str, Any]:
        p = self.path / METRICS
        return json.loads(p.read_text()) if p.exists() else {}

    def load_model(self):
        """The trained Keras classifier (raises InputError for scikit-learn runs)."""
        if self.is_classic:
            raise InputError(f"{self.path}: model {self.model_name!r} is a scikit-learn baseline; "
                             f"only neural models (alanet, alanet-parts, banet, stacked-lstm) convert to TFLite")
        import keras

        path = self.path / KERAS_MODEL
        if not path.exists():
            raise InputError(f"{path}: missing (not a complete run directory)")
        return keras.saving.load_model(path, custom_objects=custom_objects(), compile=False)

    def load_classic(self):
        """The fitted scikit-learn pipeline of a classic run."""
        with open(self.path / CLASSIC_MODEL, "rb") as f:
            return pickle.load(f)

    def build_inference_model(self, *, unroll: bool = True, masking: bool = False, batch_size: int | None = 1):
        """A fresh copy of the classifier (e.g. unrolled, batch 1, no Masking) with the trained weights."""
        trained = self.load_model()
        infer = build_model(self.model_name, timesteps=self.window, channels=self.schema.n_channels,
                            n_classes=len(self.label_names), groups=self.groups, hparams=self.hparams,
                            unroll=unroll, masking=masking, batch_size=batch_size)
        infer.set_weights(trained.get_weights())
        return infer

    def parity_windows(self) -> dict[str, np.ndarray]:
        """``calib_x``, ``test_x`` (normalised float32 [N, L, C]) and ``test_y``."""
        with np.load(self.path / PARITY) as z:
            return {k: z[k] for k in z.files}


def load_run(run_dir: str | Path) -> Run:
    """Read a run directory; InputError naming the file when it is not a complete run."""
    path = Path(run_dir)
    if not path.is_dir():
        raise InputError(f"{path}: not a run directory (no such folder)")
    cfg_path = path / CONFIG
    if not cfg_path.exists():
        raise InputError(f"{path}: not a run directory (no {CONFIG})")
    try:
        config = json.loads(cfg_path.read_text())
        schema = Schema.from_dict(config["schema"])
        for key in ("model", "task", "label_names", "window", "stride", "groups", "hparams"):
            config[key]
    except (json.JSONDecodeError, KeyError, ValueError) as exc:
        raise InputError(f"{cfg_path}: malformed run config ({exc})") from None
    model_file = CLASSIC_MODEL if config["model"] in CLASSIC_MODELS else KERAS_MODEL
    if not (path / model_file).exists():
        raise InputError(f"{path}: not a complete run directory (no {model_file})")
    try:
        norm = Normalizer.from_dict(json.loads((path / NORMALIZATION).read_text()), schema.n_channels)
    except FileNotFoundError:
        raise InputError(f"{path}: not a complete run directory (no {NORMALIZATION})") from None
    except (json.JSONDecodeError, ValueError) as exc:
        raise InputError(f"{path / NORMALIZATION}: {exc}") from None
    return Run(path, config, norm, schema)


def _json(obj: Any) -> str:
    def default(o: Any) -> Any:
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        raise TypeError(f"not JSON serialisable: {type(o).__name__}")

    return json.dumps(obj, indent=2, default=default) + "\n"


def write_run(stage: Path, result, dataset, fingerprint: str) -> None:
    """Write every file of the run into ``stage`` (a staged directory)."""
    cfg = result.config
    final = result.final
    config = {
        "model": cfg.model, "task": cfg.task, "label_names": list(result.label_names),
        "schema": dataset.schema.to_dict(), "window": cfg.window, "stride": cfg.stride,
        "groups": result.groups, "hparams": result.hparams, "seed": cfg.seed, "eval": cfg.eval,
        "test_participants": list(result.test_participants), "participants": dataset.participants,
        "format": dataset.format, "data_root": dataset.root, "distribute": cfg.distribute,
        "final_model": final is not None, "decision": result.decision,
        "parity_windows": "held-out participants" if result.parity_held_out else
        "in-sample (the LOSO final model was trained on every participant)",
        "versions": library_versions(), "data_fingerprint": fingerprint,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic.write_text(stage / CONFIG, _json(config))
    atomic.write_text(stage / NORMALIZATION, _json(result.normalizer.to_dict()))
    if final is not None:
        if final.classic:
            atomic.write_bytes(stage / CLASSIC_MODEL, pickle.dumps(final.model))
        else:
            final.model.save(stage / KERAS_MODEL)
    buf = io.BytesIO()
    np.savez_compressed(buf, calib_x=result.calib_x.astype(np.float32), test_x=result.test_x.astype(np.float32),
                        test_y=result.test_y.astype(np.int64))
    atomic.write_bytes(stage / PARITY, buf.getvalue())
    atomic.write_text(stage / METRICS, _json(result.metrics))
    history = {"final": final.history if final is not None else {},
               "folds": [f.history for f in result.folds]}
    atomic.write_text(stage / HISTORY, _json(history))
