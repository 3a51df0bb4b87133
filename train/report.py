"""report.md and PNG plots for a run: learning curves, confusion matrix, temporal
attention heat map over example windows, body-attention bar chart (matplotlib Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from alanet import atomic


def attention_maps(name: str, model: Any, x: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(temporal [N, T], body [N, K]) attention weights of a trained model on windows ``x``.

    ALANet: the head's temporal softmax and its bodily weights (per encoder unit, or per
    body part for ``alanet-parts``). BANet: temporal weights averaged over parts and the
    weights across parts. Stacked-LSTM and classic models have none: ``(None, None)``.
    """
    import keras

    if name in ("alanet", "alanet-parts"):
        encoder = keras.Model(model.inputs, model.get_layer("encoder_features").output)
        head = model.get_layer("head")
        att = keras.Model(head.inputs, [head.get_layer("temporal_attention").output, head.get_layer("body_attention").output])
        t, b = att.predict(encoder.predict(x, verbose=0), verbose=0)
        return t[..., 0], b
    if name == "banet":
        parts = sorted((layer.name for layer in model.layers
                        if layer.name.startswith("temporal_attention_") and layer.name.split("_")[-1].isdigit()),
                       key=lambda s: int(s.split("_")[-1]))
        outs = [model.get_layer(p).output for p in parts] + [model.get_layer("body_attention").output]
        res = keras.Model(model.inputs, outs).predict(x, verbose=0)
        return np.mean([r[..., 0] for r in res[:-1]], axis=0), res[-1][..., 0]
    return None, None


def body_labels(name: str, groups: Sequence[Sequence[int]], group_names: dict[tuple[int, ...], str], k: int) -> list[str]:
    if name == "alanet":
        return [f"unit {i}" for i in range(k)]
    return [group_names.get(tuple(g), f"part {i}") for i, g in enumerate(groups)][:k]


def _plots(out: Path, result, dataset) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    made: dict[str, str] = {}
    names = list(result.label_names)
    cfg = result.config

    hist = result.final.history if result.final is not None else (result.folds[0].history if result.folds else {})
    curves = [(k, v) for k, v in hist.items() if v and "loss" in k]
    if curves:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for k, v in curves:
            ax.plot(range(1, len(v) + 1), v, label=k)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
        ax.set_title(f"{cfg.model}: learning curves")
        fig.tight_layout()
        fig.savefig(plots / "learning_curves.png", dpi=100)
        plt.close(fig)
        made["learning curves"] = "plots/learning_curves.png"

    cm = np.asarray(result.metrics.get("confusion_matrix", []))
    if cm.size:
        fig, ax = plt.subplots(figsize=(3.5 + 0.4 * len(names), 3 + 0.4 * len(names)))
        ax.imshow(cm, cmap="Blues")
        for (i, j), v in np.ndenumerate(cm):
            ax.text(j, i, str(v), ha="center", va="center", color="black" if v < cm.max() / 2 else "white")
        ax.set_xticks(range(len(names)), names, rotation=30)
        ax.set_yticks(range(len(names)), names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{cfg.model} {cfg.task} ({cfg.eval})")
        fig.tight_layout()
        fig.savefig(plots / "confusion_matrix.png", dpi=100)
        plt.close(fig)
        made["confusion matrix"] = "plots/confusion_matrix.png"

    if result.final is not None and not result.final.classic and len(result.example_x):
        temporal, body = attention_maps(cfg.model, result.final.model, result.example_x)
        if temporal is not None:
            fs = dataset.schema.sample_rate_hz
            fig, ax = plt.subplots(figsize=(7, 0.4 * len(temporal) + 1.2))
            im = ax.imshow(temporal, aspect="auto", cmap="magma", extent=(0, temporal.shape[1] / fs, len(temporal), 0))
            ax.set_yticks(np.arange(len(temporal)) + 0.5, [names[int(y)] for y in result.example_y], fontsize=7)
            ax.set_xlabel("time in window (s)")
            ax.set_title("temporal attention over example windows")
            fig.colorbar(im, ax=ax)
            fig.tight_layout()
            fig.savefig(plots / "temporal_attention.png", dpi=100)
            plt.close(fig)
            made["temporal attention"] = "plots/temporal_attention.png"
        if body is not None:
            mean = body.mean(axis=0)
            gnames = {tuple(v): k for k, v in dataset.schema.groups.items()}
            labels = body_labels(cfg.model, result.groups, gnames, len(mean))
            fig, ax = plt.subplots(figsize=(7, 0.22 * len(mean) + 1.2))
            ax.barh(range(len(mean)), mean)
            ax.set_yticks(range(len(mean)), labels, fontsize=7)
            ax.invert_yaxis()
            ax.set_xlabel("mean attention weight")
            ax.set_title("bodily attention" + (" (per encoder unit)" if cfg.model == "alanet" else " (per body part)"))
            fig.tight_layout()
            fig.savefig(plots / "body_attention.png", dpi=100)
            plt.close(fig)
            made["body attention"] = "plots/body_attention.png"
    return made


def results_row(model: str, task: str, ev: str, m: dict[str, Any], names: Sequence[str]) -> str:
    f1s = " / ".join(f"{v:.3f}" for v in m.get("per_class_f1", []))
    ts = m.get("train_seconds", 0.0)
    return (f"| {model} | {task} | {ev} | {m.get('accuracy', 0):.3f} | {f1s} | {m.get('macro_f1', 0):.3f} | "
            f"{m.get('mcc', 0):.3f} | {ts:.1f} | {m.get('n_params', 0)} |")


def _rows(model: str, task: str, ev: str, m: dict[str, Any], names: Sequence[str]) -> list[str]:
    """One row; LOSO gets two: the mean over folds and the pooled predictions (a fold
    whose participant shows one class only has a degenerate macro F1 / MCC)."""
    if ev != "loso" or "pooled" not in m:
        return [results_row(model, task, ev, m, names)]
    pooled = {**m["pooled"], "train_seconds": m.get("train_seconds", 0.0), "n_params": m.get("n_params", 0)}
    return [results_row(model, task, "loso, mean of folds", m, names),
            results_row(model, task, "loso, pooled", pooled, names)]


TABLE_HEAD = ("| Model | Task | Evaluation | Accuracy | F1 per class | Macro F1 | MCC | Train time / fold (s) | Params |\n"
              "|---|---|---|---|---|---|---|---|---|")


def write_report(out: Path, result, dataset) -> None:
    """Write ``report.md`` and ``plots/*.png`` into the run directory ``out``."""
    cfg, m = result.config, result.metrics
    made = _plots(out, result, dataset)
    names = list(result.label_names)
    lines = [f"# {cfg.model} — {cfg.task} ({cfg.eval})", "",
             f"Data: {dataset.format} `{dataset.root}`, {len(dataset.participants)} participants, "
             f"{dataset.schema.n_channels} channels at {dataset.schema.sample_rate_hz:g} Hz; "
             f"window {cfg.window}, stride {cfg.stride}; classes: {', '.join(names)}; seed {cfg.seed}.", ""]
    if cfg.eval == "holdout":
        lines.append(f"Hold-out test participants: {', '.join(result.test_participants)}.")
    else:
        lines.append(f"Leave-one-subject-out over {len(result.folds)} participants; mean over folds "
                     f"(± std: accuracy {m.get('accuracy_std', 0):.3f}, macro F1 {m.get('macro_f1_std', 0):.3f}).")
    lines += ["Model selection used an inner validation split of the training participants only.", "",
              TABLE_HEAD, *_rows(cfg.model, cfg.task, cfg.eval, m, names), ""]
    if cfg.eval == "loso":
        lines += ["## Folds", "", "| Test participant | Accuracy | Macro F1 | MCC | Train time (s) |", "|---|---|---|---|---|"]
        for f in result.folds:
            fm = f.metrics
            lines.append(f"| {', '.join(f.plan.test)} | {fm['accuracy']:.3f} | {fm['macro_f1']:.3f} | {fm['mcc']:.3f} | "
                         f"{fm['train_seconds']:.1f} |")
        lines.append("")
    cm = m.get("confusion_matrix")
    if cm:
        lines += ["## Confusion matrix (rows: true, columns: predicted)", "",
                  "| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        lines += [f"| {names[i]} | " + " | ".join(str(v) for v in row) + " |" for i, row in enumerate(cm)]
        lines.append("")
    if made:
        lines += ["## Plots", ""] + [f"![{k}]({v})" for k, v in made.items()] + [""]
    hp = ", ".join(f"{k}={v}" for k, v in result.hparams.items())
    lines += ["## Hyperparameters", "", hp, ""]
    atomic.write_text(out / "report.md", "\n".join(lines))


def comparison_table(run_dirs: Sequence[str | Path]) -> str:
    """A paper-style table over several run directories (their config and metrics)."""
    import json

    from alanet.errors import InputError

    rows = [TABLE_HEAD]
    for d in run_dirs:
        d = Path(d)
        try:
            cfg = json.loads((d / "config.json").read_text())
            m = json.loads((d / "metrics.json").read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"{d}: not a run directory ({exc})") from None
        rows.extend(_rows(cfg["model"], cfg["task"], cfg["eval"], m, cfg["label_names"]))
    return "\n".join(rows) + "\n"
