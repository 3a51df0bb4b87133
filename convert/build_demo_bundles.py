"""Rebuild the demo bundles shipped in ``models/`` from synthetic data.

    python -m alanet.convert.build_demo_bundles [--which protective|pain|all] [--out models]

Each bundle is made by the same three public commands a user runs:

1. ``alanet data synth`` (EmoPain format, seed 0, 120 s sessions; the default cohort of
   14 patients and 9 controls for pain level, four times as many participants, 56 and
   36, for protective behaviour: measured, the window probabilities improve with the
   data, docs/training.md),
2. ``alanet train`` with ALANet's default recipe (autoencoder pretraining, then the
   encoder and the attention head end to end; window 180 / stride 45 / 30 channels;
   hold-out on the EmoPain challenge validation participants; normalisation ``auto``:
   per-wearer running statistics for protective behaviour, population statistics for
   pain level; the protective training took 27.8 min on 2 cores). Training calibrates
   the decision rule on its inner-validation participants (window threshold, alert
   rule, with the run's warm-up if one is set; none by default);
3. ``alanet convert`` (float16, route ``unrolled`` with a dynamic batch, native sizes
   1, 4, 16, 64: a gateway classifies the windows due across its wearers in one invoke;
   56–60 KiB as the xz archive ``alanet flash`` sends; see models/README.md for the
   routes measured), which writes that rule into the manifest.

For the protective bundle, between 2 and 3, the alert rule is chosen again, on fresh
synthetic patient sessions (:data:`CALIBRATION_SEEDS`, 20 × 300 s) played through a
draft conversion of the run as the gateway plays them: of a wide grid of rules, the one
that hits the most episodes within the stream target (≤ 2 false alarms per 10 min,
active-time precision ≥ 0.7; :func:`alanet.train.calibrate.calibrate_stream_to_target`).
With the default cohort the inner-validation recordings are a few minutes: too few
false alarms to hold a rule to a rate.

The protective bundle is then checked the way the gateway runs it on fresh synthetic
patient sessions (seeds used neither for training nor for calibration), scored with
the toolkit's stream scorer. Demo models only: trained on synthetic sessions, they
show the pipeline end to end and are no clinical tool. The work folder (data, runs)
is kept for inspection.

``--from-run RUN`` rebuilds a bundle without training: RUN's model, window threshold and
normalisation stay; its alert rule is chosen again (protective: on the calibration
sessions as above; otherwise on its validation participants' recordings,
:mod:`alanet.train.recalibrate`, e.g. with a warm-up the run predates), then step 3 and
the check run as above.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

BATCH_SIZES = "1,4,16,64"  # one dynamic-batch model runs them all
#: Fresh synthetic patient sessions the protective alert rule is chosen on: seeds the
#: stream checks (101-105 here, 201-210 and 301-310 in docs) never use; 300 s each.
CALIBRATION_SEEDS = tuple(range(401, 421))


@dataclass(frozen=True)
class Demo:
    """How one demo bundle is made."""

    task: str
    quantize: str
    route: str
    train_flags: tuple[str, ...] = ()
    convert_flags: tuple[str, ...] = ("--batch-sizes", BATCH_SIZES)
    cohort: tuple[int, int] | None = None  # (patients, controls) to synthesise; None: `alanet data synth`'s own
    rule_on_sessions: bool = False  # alert rule chosen on CALIBRATION_SEEDS to the stream target (StreamTarget)


DEMOS = {
    # protective: each window labelled by its newest stride, four times the default cohort's participants,
    # the alert rule chosen on calibration sessions (docs/training.md, "Window labels" and "The protective
    # demo: data and alert rule")
    "protective": Demo("protective", "float16", "unrolled", ("--window-label", "newest"), cohort=(56, 36),
                       rule_on_sessions=True),
    "pain": Demo("pain", "float16", "unrolled"),
}


def _cli(*args: str) -> None:
    print("+ alanet " + " ".join(args), file=sys.stderr, flush=True)
    res = subprocess.run([sys.executable, "-m", "alanet", *args])
    if res.returncode != 0:
        raise SystemExit(f"alanet {args[0]} failed (exit {res.returncode})")


def session_check(bundle_dir: Path, seeds: tuple[int, ...] = (101, 102, 103, 104, 105),
                  duration_s: float = 300.0, decision: dict | None = None) -> dict:
    """Run a protective bundle the way the gateway does over fresh synthetic patient sessions.

    Per session: features → the bundle's normalisation → windows → LiteRT → the
    manifest's decision rule → alerts, scored with the toolkit's stream scorer
    (:mod:`alanet.device.scoring`, the same as ``alanet demo``): episodes hit by an
    alert raised inside them, false alarms per 10 minutes, active-time precision and
    recall; plus window-level macro F1 of the calibrated window decisions against the
    windows' labels as the bundle's model was trained on them (majority or newest
    stride, its run's ``window_label``).

    ``perfect_windows`` is the ceiling of a window classifier of the windows' majority
    label on these sessions: the same rule and scorer fed each window's true majority
    label as its probability; episodes closer together than a window cannot all be hit
    that way. ``perfect_last_stride``: the same for each window's newest stride (its
    last ``stride`` frames), a label that can tell such episodes apart.
    """
    import numpy as np

    from alanet.device.decisions import window_labels
    from alanet.device.scoring import StreamScore, macro_f1, score_windows
    from alanet.device.windowing import DEFAULT_WINDOW_LABEL, WindowSpec

    b, played = play_sessions(bundle_dir, seeds, duration_s)
    rule = decision or b.decision
    fs, L, S = b.schema.sample_rate_hz, b.window, b.stride
    run_config = (b.manifest.get("training") or {}).get("run_config") or {}
    trained = WindowSpec(L, S, label=str(run_config.get("window_label", DEFAULT_WINDOW_LABEL)))
    majority, newest = WindowSpec(L, S), WindowSpec(L, S, label="newest")
    ys, ps, scores, ceiling, ceiling_last = [], [], [], [], []

    def perfect(labels: np.ndarray, k: int) -> np.ndarray:
        return np.eye(k, dtype=np.float32)[np.clip(labels, 0, k - 1)]

    for probs, st, lab in played:
        y = np.array([majority.label_of(lab[s:s + L]) for s in st])
        ys.append(np.array([trained.label_of(lab[s:s + L]) for s in st]))
        ps.append(window_labels(probs, rule))
        scores.append(score_windows(b.task, rule, b.labels, probs, st, L, fs, lab))
        k = probs.shape[1]
        ceiling.append(score_windows(b.task, rule, b.labels, perfect(y, k), st, L, fs, lab))
        last = np.array([newest.label_of(lab[s:s + L]) for s in st])
        ceiling_last.append(score_windows(b.task, rule, b.labels, perfect(last, k), st, L, fs, lab))
    total = StreamScore.combine(scores)
    keys = ("hits", "episodes", "hit_rate", "false_alarms_per_10min", "active_precision", "active_recall")
    best, best_last = StreamScore.combine(ceiling).as_dict(), StreamScore.combine(ceiling_last).as_dict()
    return {"sessions": len(seeds), "each_session_s": duration_s, "seeds": list(seeds),
            "window_macro_f1": round(macro_f1(np.concatenate(ys), np.concatenate(ps)), 3), **total.as_dict(),
            "perfect_windows": {k: best[k] for k in keys},
            "perfect_last_stride": {k: best_last[k] for k in keys}}


def play_sessions(bundle_dir: Path, seeds: tuple[int, ...], duration_s: float = 300.0):
    """A protective bundle and its window probabilities over fresh synthetic patient sessions, as the
    gateway computes them (features → the bundle's normalisation, per wearer → windows → LiteRT).

    Returns ``(bundle, [(probabilities [N, K], window starts [N], per-frame labels [T]), ...])``, one
    entry per seed.
    """
    from alanet.device.bundle import load_bundle
    from alanet.device.features import emopain_frame_features
    from alanet.device.inference import ModelRunner
    from alanet.device.windowing import window_starts
    from alanet.train.data.synthetic import synth_session

    b = load_bundle(bundle_dir)
    runner = ModelRunner.from_bundle(b)
    fs, L, S = b.schema.sample_rate_hz, b.window, b.stride
    played = []
    for seed in seeds:
        bd = synth_session(seed=seed, duration_s=duration_s, patient=True)
        lab = bd[:, 32].astype(int)
        feats = emopain_frame_features(bd[:, :13], bd[:, 26:30], fs)
        st = window_starts(len(feats), L, S)
        played.append((runner.predict_many(b.normalizer.stream_windows(feats, st, L)), st, lab))
    return b, played


def run_config(run: Path, task: str) -> dict:
    """``run``'s config.json, checked to be a run of ``task`` (InputError naming the file otherwise)."""
    from alanet.errors import InputError

    try:
        config = json.loads((run / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{run / 'config.json'}: not a readable run config ({exc})") from None
    if not isinstance(config, dict) or config.get("task") != task:
        got = config.get("task") if isinstance(config, dict) else None
        raise InputError(f"{run / 'config.json'}: task: a {task} run is needed, this one is {got!r}")
    return config


def recalibrated_run(name: str, from_run: Path, data: Path | None, work: Path) -> Path:
    """``work/run-<name>``: a copy of ``from_run`` with its alert rule chosen again on its
    validation streams (``data``: the data it was trained on; default its recorded data_root)."""
    from alanet.train.data.loading import load_dataset
    from alanet.train.recalibrate import recalibrate_alert_rule, write_recalibrated

    from alanet.errors import InputError

    config = run_config(from_run, DEMOS[name].task)
    if data is None:
        if not config.get("data_root"):
            raise InputError(f"{from_run / 'config.json'}: data_root: not recorded; pass --data")
        data = Path(str(config["data_root"]))
    decision = recalibrate_alert_rule(from_run, load_dataset(data, config.get("format")))
    print(f"{from_run}: alert rule chosen again: {json.dumps(decision)}", flush=True)
    return write_recalibrated(from_run, work / f"run-{name}", decision, force=True)


def session_calibrated_run(name: str, run: Path, work: Path, demo: Demo,
                           seeds: tuple[int, ...] = CALIBRATION_SEEDS) -> Path:
    """``work/run-<name>-rule``: a copy of ``run`` whose alert rule is chosen on fresh synthetic
    patient sessions (``seeds``, 300 s each), played through a draft bundle of the run the way
    the gateway runs it, to the stream target (:func:`alanet.train.calibrate.calibrate_stream_to_target`).
    The window decision (class, threshold) stays the run's."""
    from alanet.train.calibrate import Stream, calibrate_stream_to_target
    from alanet.train.recalibrate import window_decision, write_recalibrated

    draft = work / f"bundle-{name}-draft"
    _cli("convert", str(run), "--quantize", demo.quantize, "--route", demo.route, "--out", str(draft), "--force",
         *demo.convert_flags)
    b, played = play_sessions(draft, seeds)
    streams = [Stream(p, st, lab, b.window, b.schema.sample_rate_hz) for p, st, lab in played]
    decision = calibrate_stream_to_target(streams, window_decision(b.decision), b.task, b.labels,
                                          where=f"synthetic session (seeds {seeds[0]}-{seeds[-1]})")
    print(f"{run}: alert rule chosen on {len(seeds)} calibration sessions: {json.dumps(decision)}", flush=True)
    return write_recalibrated(run, work / f"run-{name}-rule", decision, force=True)


def build(name: str, out_root: Path, work: Path, *, epochs: int | None, ae_epochs: int | None, seed: int,
          duration: int, from_run: Path | None = None, data: Path | None = None) -> Path:
    """Synthesize (once), train and convert demo ``name`` into ``out_root/<name>-demo``
    (``from_run``: no training; that run with its alert rule chosen again)."""
    demo = DEMOS[name]
    if from_run is not None and demo.rule_on_sessions:
        from alanet.errors import InputError

        if data is not None:
            raise InputError(f"--data: the {name} demo's alert rule is chosen on synthetic calibration sessions, "
                             "not on the run's data; leave --data out")
        run_config(from_run, demo.task)
        run = from_run
    elif from_run is not None:
        run = recalibrated_run(name, from_run, data, work)
    else:
        cohort = [] if demo.cohort is None else ["--patients", str(demo.cohort[0]), "--controls", str(demo.cohort[1])]
        data = work / ("data" if demo.cohort is None else f"data-{demo.cohort[0]}p{demo.cohort[1]}c")
        if not (data / ".complete").exists():
            _cli("data", "synth", "--out", str(data), *cohort, "--seed", str(seed), "--duration", str(duration),
                 "--force")
            (data / ".complete").write_text("ok\n")
        run = work / f"run-{name}"
        budget = ([] if epochs is None else ["--epochs", str(epochs)]) + \
            ([] if ae_epochs is None else ["--ae-epochs", str(ae_epochs)])
        _cli("train", "--data", str(data), "--task", demo.task, "--model", "alanet", "--eval", "holdout", "--window",
             "180", "--stride", "45", *budget, "--seed", str(seed), "--quiet", "--force", *demo.train_flags,
             "--out", str(run))
    if demo.rule_on_sessions:
        run = session_calibrated_run(name, run, work, demo)
    bundle = out_root / f"{name}-demo"
    _cli("convert", str(run), "--quantize", demo.quantize, "--route", demo.route, "--out", str(bundle), "--force",
         *demo.convert_flags)
    m = json.loads((bundle / "manifest.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    size = m["model_bytes"] + sum(e["bytes"] for e in m.get("batch_models") or [] if e["file"] != "model.tflite")
    print(f"{bundle}: {size / 1024:.0f} KiB of model files, hold-out macro F1 {metrics.get('macro_f1', float('nan')):.3f} "
          f"(accuracy {metrics.get('accuracy', float('nan')):.3f}), TFLite/Keras agreement {m['parity']['agreement']:.1%}",
          flush=True)
    if demo.task == "protective":
        print(f"{bundle}: on fresh synthetic patient sessions: {json.dumps(session_check(bundle))}", flush=True)
    return bundle


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--which", choices=(*DEMOS, "all"), default="all")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "models",
                    help="folder that receives <name>-demo/ (default: the repository's models/)")
    ap.add_argument("--work", type=Path, help="work folder for data and runs (default: a temporary folder)")
    ap.add_argument("--epochs", type=int, help="every training stage (default: the recipe's own budget)")
    ap.add_argument("--ae-epochs", type=int, help="autoencoder epochs (default: the recipe's own)")
    ap.add_argument("--duration", type=int, default=120, help="seconds per synthetic session")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--from-run", type=Path, metavar="RUN", help="no training: RUN's model with its alert rule chosen "
                    "again (protective: on the calibration sessions; else on its validation participants; one "
                    "--which)")
    ap.add_argument("--data", type=Path, help="with --from-run and a demo whose rule is chosen on its validation "
                    "participants (pain): the data RUN was trained on (default: its data_root)")
    args = ap.parse_args(argv)
    if args.from_run is not None and args.which == "all":
        ap.error("--from-run needs one --which")
    work = args.work or Path(tempfile.mkdtemp(prefix="alanet-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    from alanet.errors import InputError

    for name in (DEMOS if args.which == "all" else [args.which]):
        try:
            build(name, args.out, work, epochs=args.epochs, ae_epochs=args.ae_epochs, seed=args.seed,
                  duration=args.duration, from_run=args.from_run, data=args.data)
        except InputError as exc:
            print(f"build_demo_bundles: error: {exc}", file=sys.stderr)
            return 2
    print(f"work folder: {work}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
