"""The run directory: writing it after training and reading it back (convert, evaluate).

Layout (self-describing)::

    config.json           model, task, label names, schema, window/stride, hparams, seed,
                          eval, test participants, format, library versions, data fingerprint
    normalization.json    z-score statistics of the training participants
    model.keras | model.pkl   the full classifier (Keras) or a scikit-learn pipeline
    parity_windows.npz    calib_x, test_x (normalised windows), test_y
    folds.npz             LOSO: every fold's test predictions (what ``alanet merge`` pools)
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
from alanet.device.windowing import DEFAULT_WINDOW_LABEL, WINDOW_LABELS
from alanet.errors import InputError
from alanet.train.models import CLASSIC_MODELS, build_model, custom_objects

CONFIG, NORMALIZATION, KERAS_MODEL, CLASSIC_MODEL = "config.json", "normalization.json", "model.keras", "model.pkl"
PARITY, METRICS, HISTORY, FOLDS = "parity_windows.npz", "metrics.json", "history.json", "folds.npz"


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
    if "tensorflow" in sys.modules and out.get("keras_backend", "tensorflow") == "tensorflow":
        gpus = sys.modules["tensorflow"].config.list_physical_devices("GPU")
        out["devices"] = ", ".join(g.name for g in gpus) or "cpu"
    elif out.get("keras_backend") == "jax":
        out["devices"] = ", ".join(f"{d} ({d.device_kind})" for d in sys.modules["jax"].devices())
    elif out.get("keras_backend") == "torch":
        torch = sys.modules["torch"]
        out["devices"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
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
    def window_label(self) -> str:
        """How the run's windows were labelled (runs that predate the choice: majority)."""
        return str(self.config.get("window_label", DEFAULT_WINDOW_LABEL))

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
    if config.get("window_label", DEFAULT_WINDOW_LABEL) not in WINDOW_LABELS:
        raise InputError(f"{cfg_path}: field window_label: must be one of {', '.join(WINDOW_LABELS)}, "
                         f"got {config['window_label']!r}")
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


def write_run(stage: Path, result, dataset, fingerprint: str, overrides: dict[str, Any] | None = None) -> None:
    """Write every file of the run into ``stage`` (a staged directory); ``overrides``
    replace entries of config.json (a merged run keeps its folds' versions)."""
    cfg = result.config
    final = result.final
    config = {
        "model": cfg.model, "task": cfg.task, "label_names": list(result.label_names),
        "schema": dataset.schema.to_dict(), "window": cfg.window, "stride": cfg.stride,
        "window_label": cfg.window_label,
        "groups": result.groups, "hparams": result.hparams, "seed": cfg.seed,
        "deterministic": cfg.deterministic, "eval": cfg.eval, "normalization": result.normalizer.mode,
        "prior_seconds": cfg.prior_seconds if result.normalizer.per_wearer else None,
        "warmup_seconds": cfg.warmup_seconds,
        "test_participants": list(result.test_participants), "participants": dataset.participants,
        "format": dataset.format, "data_root": dataset.root, "distribute": cfg.distribute,
        "final_model": final is not None, "decision": result.decision,
        "parity_windows": "held-out participants" if result.parity_held_out else
        "in-sample (the LOSO final model was trained on every participant)",
        "versions": library_versions(), "data_fingerprint": fingerprint,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if cfg.eval == "loso":
        config.update(fold_participants=list(result.fold_participants),
                      folds=None if cfg.folds is None else [f.plan.test[0] for f in result.folds])
    config.update(overrides or {})
    atomic.write_text(stage / CONFIG, _json(config))
    if cfg.eval == "loso":
        atomic.write_bytes(stage / FOLDS, fold_records(result.folds))
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


def fold_records(folds) -> bytes:
    """``folds.npz``: every fold's test windows (participant, truth, decision, probabilities,
    fold index) and plan, which is all that pooling the folds needs besides metrics.json."""
    k = max((f.proba.shape[1] for f in folds if f.proba is not None and f.proba.ndim == 2), default=0)
    plans = [json.dumps({"test": list(f.plan.test), "fit": list(f.plan.fit), "val": list(f.plan.val),
                         "seen_fit": list(f.seen_fit), "seen_val": list(f.seen_val),
                         "val_by_windows": bool(f.val_by_windows)}) for f in folds]
    buf = io.BytesIO()
    np.savez_compressed(
        buf, plans=np.asarray(plans, dtype=str),
        fold=np.concatenate([np.full(len(f.y_true), i, np.int64) for i, f in enumerate(folds)] or [np.zeros(0, np.int64)]),
        participant=np.concatenate([np.asarray(f.participant, dtype=str) for f in folds] or [np.zeros(0, dtype=str)]),
        y_true=np.concatenate([np.asarray(f.y_true, np.int64) for f in folds] or [np.zeros(0, np.int64)]),
        y_pred=np.concatenate([np.asarray(f.y_pred, np.int64) for f in folds] or [np.zeros(0, np.int64)]),
        proba=np.concatenate([np.asarray(f.proba, np.float32) for f in folds] or [np.zeros((0, k), np.float32)]))
    return buf.getvalue()


def read_fold_records(run_dir: str | Path) -> list:
    """The folds of a LOSO run directory (``folds.npz`` + the per-fold metrics and
    histories), as :class:`~alanet.train.experiment.FoldResult` objects."""
    from alanet.train.experiment import FoldPlan, FoldResult

    path = Path(run_dir)
    try:
        with np.load(path / FOLDS) as z:
            arrays = {k: z[k] for k in ("plans", "fold", "participant", "y_true", "y_pred", "proba")}
        metrics = json.loads((path / METRICS).read_text())
        history = json.loads((path / HISTORY).read_text())
    except FileNotFoundError as exc:
        raise InputError(f"{path}: not a LOSO run directory (no {Path(exc.filename).name})") from None
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"{path / FOLDS}: unreadable fold records ({exc})") from None
    fold_metrics, histories = metrics.get("folds", []), history.get("folds", [])
    plans = [json.loads(str(p)) for p in arrays["plans"]]
    if not len(plans) == len(fold_metrics) == len(histories):
        raise InputError(f"{path}: {FOLDS} holds {len(plans)} folds, {METRICS} {len(fold_metrics)}, "
                         f"{HISTORY} {len(histories)}")
    out = []
    for i, (plan, m, h) in enumerate(zip(plans, fold_metrics, histories)):
        sel = arrays["fold"] == i
        out.append(FoldResult(FoldPlan(tuple(plan["test"]), tuple(plan["fit"]), tuple(plan["val"])), m,
                              arrays["y_true"][sel], arrays["y_pred"][sel], h, float(m.get("train_seconds", 0.0)),
                              int(m.get("n_params", 0)), tuple(plan["seen_fit"]), tuple(plan["seen_val"]),
                              bool(plan["val_by_windows"]), arrays["proba"][sel], arrays["participant"][sel],
                              dict(m.get("decision") or {}), dict(m.get("selection") or {})))
    return out
