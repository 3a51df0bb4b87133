"""report.md and PNG plots for a run: learning curves, confusion matrix, temporal
attention heat map over example windows, body-attention bar chart (matplotlib Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from alanet import atomic
from alanet.device.windowing import DEFAULT_WINDOW_LABEL


def attention_maps(name: str, model: Any, x: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(temporal [N, T], body [N, K]) attention weights of a trained model on windows ``x``.

    ALANet: the head's temporal softmax and its bodily weights (per encoder unit, or per
    body part for ``alanet-parts``). BANet: temporal weights averaged over parts and the
    weights across parts. Stacked-LSTM and classic models have none: ``(None, None)``.
    """
    import keras

    from alanet.train.models import model_inputs

    inputs = model_inputs(model, x)  # example windows are full: every frame real
    if name in ("alanet", "alanet-parts"):
        encoder = keras.Model(model.inputs, model.get_layer("encoder_features").output)
        head = model.get_layer("head")
        att = keras.Model(head.inputs, [head.get_layer("temporal_attention").output, head.get_layer("body_attention").output])
        feats = encoder.predict(inputs, verbose=0)
        t, b = att.predict(model_inputs(att, feats), verbose=0)
        return t[..., 0], b
    if name == "banet":
        parts = sorted((layer.name for layer in model.layers
                        if layer.name.startswith("temporal_attention_") and layer.name.split("_")[-1].isdigit()),
                       key=lambda s: int(s.split("_")[-1]))
        outs = [model.get_layer(p).output for p in parts] + [model.get_layer("body_attention").output]
        res = keras.Model(model.inputs, outs).predict(inputs, verbose=0)
        body = res[-1]  # published head: [N, units, parts] → mean over units; pooled head: [N, parts, 1]
        body = body.mean(axis=1) if body.shape[-1] != 1 else body[..., 0]
        return np.mean([r[..., 0] for r in res[:-1]], axis=0), body
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


def _num(v: Any) -> str:
    return "–" if v is None else f"{v:.3f}"


def results_row(model: str, task: str, ev: str, m: dict[str, Any], names: Sequence[str]) -> str:
    f1s = " / ".join(_num(v) for v in m.get("per_class_f1", []))
    ts = m.get("train_seconds", 0.0)
    return (f"| {model} | {task} | {ev} | {m.get('accuracy', 0):.3f} | {f1s} | {m.get('macro_f1', 0):.3f} | "
            f"{m.get('mcc', 0):.3f} | {_num(m.get('roc_auc'))} | {_num(m.get('pr_auc'))} | {ts:.1f} | "
            f"{m.get('n_params', 0)} |")


def _rows(model: str, task: str, ev: str, m: dict[str, Any], names: Sequence[str],
          folds: Sequence[str] | None = None) -> list[str]:
    """One row; LOSO gets two: the pooled predictions of every fold (the headline) and the
    per-participant vote. ``folds``: a part of a LOSO run, pooled over those folds only."""
    if ev != "loso":
        return [results_row(model, task, ev, m, names)]
    scope = "loso" if folds is None else f"loso part ({','.join(folds)})"
    rows = [results_row(model, task, f"{scope}, pooled", m, names)]
    if "participant_vote" in m:
        vote = {**m["participant_vote"], "train_seconds": m.get("train_seconds", 0.0), "n_params": m.get("n_params", 0)}
        rows.append(results_row(model, task, f"{scope}, participant vote", vote, names))
    return rows


TABLE_HEAD = ("| Model | Task | Evaluation | Accuracy | F1 per class | Macro F1 | MCC | ROC-AUC | PR-AUC "
              "| Train time / fold (s) | Params |\n|---|---|---|---|---|---|---|---|---|---|---|")


def write_report(out: Path, result, dataset) -> None:
    """Write ``report.md`` and ``plots/*.png`` into the run directory ``out``."""
    cfg, m = result.config, result.metrics
    made = _plots(out, result, dataset)
    names = list(result.label_names)
    lines = [f"# {cfg.model} — {cfg.task} ({cfg.eval})", "",
             f"Data: {dataset.format} `{dataset.root}`, {len(dataset.participants)} participants, "
             f"{dataset.schema.n_channels} channels at {dataset.schema.sample_rate_hz:g} Hz; "
             f"window {cfg.window}, stride {cfg.stride}, labelled by "
             f"{'their newest stride' if cfg.window_label == 'newest' else 'majority'}; classes: {', '.join(names)}; "
             f"seed {cfg.seed}.", ""]
    if cfg.eval == "holdout":
        lines.append(f"Hold-out test participants: {', '.join(result.test_participants)}.")
    elif cfg.folds is not None:
        held = ", ".join(f.plan.test[0] for f in result.folds) or "none"
        lines.append(f"Part of a leave-one-subject-out run: the folds holding out {held} (of "
                     f"{len(result.fold_participants)})" + (" and the final model" if result.final is not None else "")
                     + ". `alanet merge` pools the parts into the complete run; the figures here cover these "
                     "folds only.")
    else:
        mf = m.get("mean_of_folds", {})
        lines.append(f"Leave-one-subject-out over {len(result.folds)} participants: the table gives the pooled "
                     f"predictions of every fold and a per-participant vote (mean of per-fold macro F1 over each "
                     f"fold's present classes: {mf.get('macro_f1', 0):.3f} ± {mf.get('macro_f1_std', 0):.3f}).")
    lines += [*result.notes, "Model selection and decision calibration used an inner validation split of the "
              "training participants only.", ""]
    if "accuracy" in m:
        part = None if cfg.folds is None else [f.plan.test[0] for f in result.folds]
        lines += [TABLE_HEAD, *_rows(cfg.model, cfg.task, cfg.eval, m, names, part), ""]
    if cfg.eval == "loso" and result.final is None:
        lines += ["No deployable model in this run (folds only). Train it on every participant with "
                  "`alanet train ... --eval loso --folds final --out RUN` and merge that run in with "
                  "`alanet merge`.", ""]
    dec = result.decision
    if dec:
        rule = (f"class {names[dec['class_index']]!r} when p ≥ {dec['window_threshold']:.2f}"
                if "window_threshold" in dec else
                f"prior-corrected argmax, weights {dec['class_weights']}" if dec.get("class_weights") else "argmax")
        if dec.get("warmup_s"):
            rule += f"; no alert in a wearer's first {dec['warmup_s']:g} s"
        lines += [f"Decision rule of the deployed model: {rule} ({dec.get('calibration', '')}).", ""]
    if cfg.eval == "loso" and result.folds:
        lines += ["## Folds", "", "| Test participant | Accuracy | Macro F1 (present classes) | MCC | Train time (s) |",
                  "|---|---|---|---|---|"]
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
        if "accuracy" not in m:
            continue  # a part of a LOSO run holding only the final model: nothing scored
        # scored against other truth labels: say so (a run that predates the choice is a majority run)
        label = cfg.get("window_label", DEFAULT_WINDOW_LABEL)
        task = cfg["task"] if label == DEFAULT_WINDOW_LABEL else f"{cfg['task']} ({label})"
        rows.extend(_rows(cfg["model"], task, cfg["eval"], m, cfg["label_names"], cfg.get("folds")))
    return "\n".join(rows) + "\n"
