"""Hold-out and leave-one-subject-out experiments, leak-free.

Per fold: the test participants are set aside first; the normaliser is fitted on the
training participants; an inner validation split of the *training* participants
drives early stopping / model selection; only the fitting participants' windows are
augmented and trained on. Each fold records which participants' windows reached
fitting and validation, so a test can prove the held-out participant never did.
"""

from __future__ import annotations

import math
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from alanet.device.features import NORMALIZATION_MODES, Normalizer
from alanet.device.windowing import DEFAULT_WINDOW_LABEL, WindowSpec, window_starts
from alanet.errors import InputError
from alanet.train.data.recording import Dataset
from alanet.device.decisions import window_labels
from alanet.device.scoring import macro_f1
from alanet.train.calibrate import Stream, calibrate, calibrate_stream
from alanet.train.metrics import classification_metrics, mean_over_folds, participant_vote
from alanet.train.models import ALL_MODELS, CLASSIC_MODELS, hparams_for
from alanet.train.windows import TaskWindows, fit_normalizer, make_windows, normalise_windows

EVALS = ("holdout", "loso")
PARITY_MAX = 256


@dataclass(frozen=True)
class ExperimentConfig:
    model: str
    task: str
    eval: str = "holdout"
    window: int = 180
    stride: int = 45
    epochs: int | None = None
    ae_epochs: int | None = None
    seed: int = 0
    deterministic: bool = False  # deterministic TensorFlow ops (``--seed`` given on the command line)
    jobs: int = 1
    test_participants: tuple[str, ...] = ()
    hparams: dict[str, Any] = field(default_factory=dict)  # overrides of the model defaults
    distribute: str | None = None
    final: bool = True  # LOSO: also train a deployable model on every participant
    folds: tuple[str, ...] | None = None  # LOSO: run only the folds holding out these participants (None: all)
    val_fraction: float = 0.2
    progress: bool = True
    normalization: str = "auto"  # population | per-wearer (each wearer's running statistics) | auto (see below)
    prior_seconds: float = 60.0  # per-wearer: weight of the population statistics, in seconds of stream
    warmup_seconds: float = 0.0  # protective alert rule: no raise with less of a wearer's stream behind a window
    window_label: str = DEFAULT_WINDOW_LABEL  # how a window is labelled from its frames (alanet.device.windowing.WINDOW_LABELS)

    def window_spec(self) -> WindowSpec:
        """The windows this experiment cuts and how they are labelled."""
        return WindowSpec(self.window, self.stride, label=self.window_label)

    def normalization_for(self, dataset: Dataset) -> str:
        """``auto`` resolved: per-wearer for protective behaviour on EmoPain-format data
        (an episode is a change against the wearer's own movement, and each recording is
        one wearer's continuous session, as the gateway sees a wearer), population
        otherwise: pain level is largely a property of the person over the whole session,
        which per-wearer statistics would normalise away, and a generic CSV file may be one
        short case (measured: docs/training.md, "Normalisation")."""
        if self.normalization != "auto":
            return self.normalization
        return "per-wearer" if dataset.format == "emopain" and self.task == "protective" else "population"

    def prior_frames(self, dataset: Dataset) -> float:
        """The per-wearer prior in frames (0 in population mode)."""
        if self.normalization_for(dataset) == "population":
            return 0.0
        return float(self.prior_seconds) * float(dataset.schema.sample_rate_hz)

    def resolved_hparams(self) -> dict[str, Any]:
        """The model's defaults, ``--hparam`` overrides, then ``--epochs``: an explicit epoch
        count applies to every stage (autoencoder and fine-tuning too, unless
        ``--ae-epochs`` says otherwise) and turns the optimizer-step floors and the
        automatic refit off (an explicit ``--hparam refit=...`` still applies): the
        budget is then exactly what was asked for."""
        hp = hparams_for(self.model, self.hparams)
        if self.epochs is not None and "epochs" in hp:
            for key in ("epochs", "ae_epochs", "finetune_epochs"):
                if key in hp:
                    hp[key] = int(self.epochs)
            for key in ("min_steps", "ae_min_steps"):
                if key in hp:
                    hp[key] = 0
            if hp.get("refit") == "auto" and "refit" not in self.hparams:
                hp["refit"] = "never"
        if self.ae_epochs is not None and "ae_epochs" in hp:
            hp["ae_epochs"] = int(self.ae_epochs)
            if "ae_min_steps" in hp and self.epochs is None:
                hp["ae_min_steps"] = 0
        return hp


@dataclass(frozen=True)
class FoldPlan:
    """Who is tested, who is fitted on, who selects the model."""

    test: tuple[str, ...]
    fit: tuple[str, ...]
    val: tuple[str, ...]

    @property
    def train(self) -> tuple[str, ...]:
        return tuple(sorted(self.fit + self.val))


@dataclass
class FoldResult:
    plan: FoldPlan
    metrics: dict[str, Any]
    y_true: np.ndarray
    y_pred: np.ndarray  # calibrated decisions
    history: dict[str, list[float]]
    train_seconds: float
    n_params: int
    seen_fit: tuple[str, ...]  # participants whose windows were fitted on
    seen_val: tuple[str, ...]  # participants whose windows selected the model and calibrated it
    val_by_windows: bool = False
    proba: np.ndarray | None = None  # [N, K] test probabilities
    participant: np.ndarray | None = None  # [N] participant of each test window
    decision: dict[str, Any] = field(default_factory=dict)  # the calibrated decision rule
    selection: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExperimentResult:
    config: ExperimentConfig
    hparams: dict[str, Any]
    label_names: tuple[str, ...]
    groups: list[list[int]]
    folds: list[FoldResult]
    metrics: dict[str, Any]
    final: Any  # FitResult of the deployable model (None with --no-final on LOSO)
    decision: dict[str, Any]  # the deployable model's calibrated decision rule
    normalizer: Normalizer
    test_participants: tuple[str, ...]
    calib_x: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    example_x: np.ndarray  # normalised windows for attention plots
    example_y: np.ndarray
    parity_held_out: bool = True  # test_x are windows the deployed model never saw (False for LOSO)
    fold_participants: tuple[str, ...] = ()  # LOSO: the participant each fold holds out, every fold (not only those run)
    notes: tuple[str, ...] = ()  # extra lines for report.md (a merged run names its parts)


def model_groups(model: str, dataset: Dataset) -> list[list[int]]:
    """Body-part groups a model uses. BANet, as published, leaves out the sEMG group
    (EmoPain: the 13 angle/energy pairs); every other model uses every group."""
    schema = dataset.schema
    groups = [list(v) for v in schema.groups.values()]
    if model == "banet":
        body = [g for g in groups if any(schema.channels[i].kind != "emg" for i in g)]
        if body:
            return body
    return groups


def validate(cfg: ExperimentConfig, dataset: Dataset) -> None:
    """Reject bad configurations before any training (exit 2, nothing written)."""
    if cfg.model not in ALL_MODELS:
        raise InputError(f"unknown model {cfg.model!r}; choose from {', '.join(ALL_MODELS)}")
    if cfg.eval not in EVALS:
        raise InputError(f"unknown evaluation {cfg.eval!r}; choose from {', '.join(EVALS)}")
    if cfg.task not in dataset.label_names:
        raise InputError(f"{dataset.root or 'dataset'}: unknown task {cfg.task!r} for {dataset.format} data "
                         f"(has {', '.join(sorted(dataset.label_names))})")
    if cfg.window < 2 or cfg.stride < 1:
        raise InputError(f"--window must be >= 2 and --stride >= 1 (got {cfg.window}, {cfg.stride})")
    try:
        cfg.window_spec()
    except ValueError as exc:
        raise InputError(f"--window-label: {exc}") from None
    try:
        cfg.resolved_hparams()
    except ValueError as exc:
        raise InputError(str(exc)) from None
    n = len(dataset.participants)
    if cfg.eval == "loso" and n < 3:
        raise InputError(f"LOSO needs at least 3 participants (1 test, 1 fit, 1 validation); "
                         f"{dataset.root or 'dataset'} has {n}")
    if cfg.eval == "holdout" and n < 2 and not cfg.test_participants:
        raise InputError(f"hold-out needs at least 2 participants; {dataset.root or 'dataset'} has {n}")
    unknown = sorted(set(cfg.test_participants) - set(dataset.participants))
    if unknown:
        raise InputError(f"--test-participants: {', '.join(unknown)} not in the dataset "
                         f"(has {', '.join(dataset.participants)})")
    if cfg.jobs < 1:
        raise InputError("--jobs must be >= 1")
    if cfg.normalization not in ("auto", *NORMALIZATION_MODES):
        raise InputError(f"--normalization: {cfg.normalization!r} is not one of auto, {', '.join(NORMALIZATION_MODES)}")
    if not (math.isfinite(cfg.prior_seconds) and cfg.prior_seconds > 0):
        raise InputError(f"--prior-seconds must be a number > 0 (got {cfg.prior_seconds})")
    if not (math.isfinite(cfg.warmup_seconds) and cfg.warmup_seconds >= 0):
        raise InputError(f"--warmup-seconds must be a number >= 0 (got {cfg.warmup_seconds})")
    if cfg.folds is not None:
        if cfg.eval != "loso":
            raise InputError("--folds selects leave-one-subject-out folds: it needs --eval loso")
        if not cfg.folds and not cfg.final:
            raise InputError("--folds: no fold and no final model to train")
        unknown = sorted(set(cfg.folds) - set(dataset.participants))
        if unknown:
            raise InputError(f"--folds: {', '.join(unknown)} not in the dataset (has {', '.join(dataset.participants)})")
    if cfg.distribute and cfg.model in CLASSIC_MODELS:
        raise InputError(f"--distribute {cfg.distribute}: {cfg.model!r} is a scikit-learn model; "
                         f"only neural models train with tf.distribute")
    if cfg.distribute == "multiworker" and cfg.jobs > 1:
        raise InputError("--distribute multiworker runs one process per host: use --jobs 1")


def holdout_test_ids(cfg: ExperimentConfig, dataset: Dataset) -> tuple[str, ...]:
    """--test-participants; else the EmoPain challenge split; else a seeded quarter."""
    if cfg.test_participants:
        ids = tuple(sorted(cfg.test_participants))
    elif dataset.format == "emopain":
        from alanet.train.data.emopain import challenge_split

        ids = tuple(sorted(challenge_split(dataset)[1]))
    else:
        people = dataset.participants
        k = max(1, round(0.25 * len(people)))
        ids = tuple(sorted(np.random.default_rng(cfg.seed).choice(people, k, replace=False).tolist()))
    if set(ids) >= set(dataset.participants):
        raise InputError("--test-participants leaves no participant for training")
    return ids


def inner_split(train_ids: tuple[str, ...], tw: TaskWindows, fraction: float, seed: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Split training participants into (fit, validation), keeping every class in fit.

    Tries seeded random draws of ``ceil(fraction · n)`` participants; prefers a
    validation set with the most classes. Returns ``(train_ids, ())`` when no split
    keeps all classes in fit (the caller then splits windows instead).
    """
    ids = sorted(train_ids)
    if len(ids) < 2:
        return tuple(ids), ()
    k = min(len(ids) - 1, max(1, math.ceil(fraction * len(ids))))
    classes = {p: set(np.unique(tw.y[tw.participant == p]).tolist()) for p in ids}
    every = set().union(*classes.values())
    rng = np.random.default_rng(seed)
    best: tuple[int, tuple[str, ...]] | None = None
    for _ in range(64):
        val = tuple(sorted(rng.choice(ids, k, replace=False).tolist()))
        fit_classes = set().union(*(classes[p] for p in ids if p not in val))
        if fit_classes != every:
            continue
        score = len(set().union(*(classes[p] for p in val)))
        if best is None or score > best[0]:
            best = (score, val)
        if score == len(every):
            break
    if best is None:
        return tuple(ids), ()
    val = best[1]
    return tuple(p for p in ids if p not in val), val


def plan_folds(cfg: ExperimentConfig, dataset: Dataset, tw: TaskWindows) -> list[FoldPlan]:
    people = tuple(sorted(set(tw.participant.tolist())))
    tests = [holdout_test_ids(cfg, dataset)] if cfg.eval == "holdout" else [(p,) for p in people]
    plans = []
    for i, test in enumerate(tests):
        train = tuple(p for p in people if p not in test)
        fit, val = inner_split(train, tw, cfg.val_fraction, cfg.seed + i)
        plans.append(FoldPlan(tuple(test), fit, val))
    return plans


def deployed_plan(cfg: ExperimentConfig, dataset: Dataset, tw: TaskWindows) -> FoldPlan:
    """The split of the deployable model: hold-out, the fold's; LOSO, the final model's
    (every participant, an inner validation split of them)."""
    plans = plan_folds(cfg, dataset, tw)
    if cfg.eval == "holdout":
        return plans[0]
    people = tuple(sorted(set(tw.participant.tolist())))
    fit_ids, val_ids = inner_split(people, tw, cfg.val_fraction, cfg.seed + len(plans))
    return FoldPlan((), fit_ids, val_ids)


def selected_folds(cfg: ExperimentConfig, plans: list[FoldPlan]) -> list[int]:
    """Indices of the folds to run: every one, or those holding out ``cfg.folds`` (LOSO).

    A fold keeps its index (and so its seeds) whichever others run beside it, so
    folds run separately are the folds of the full run."""
    if cfg.folds is None:
        return list(range(len(plans)))
    tests = [p.test[0] for p in plans]
    missing = sorted(set(cfg.folds) - set(tests))
    if missing:
        raise InputError(f"--folds: {', '.join(missing)} has no windows for task {cfg.task!r}, so no fold")
    return [i for i, t in enumerate(tests) if t in cfg.folds]


def check_classes(tw: TaskWindows, plan: FoldPlan) -> None:
    have = set(np.unique(tw.y[tw.of(plan.train)]).tolist())
    missing = [tw.label_names[c] for c in range(tw.n_classes) if c not in have]
    if missing:
        where = f" when {', '.join(plan.test)} is held out" if plan.test else ""
        raise InputError(f"class {', '.join(repr(m) for m in missing)} of task {tw.task!r} has no training "
                         f"windows{where}; every class needs training data")


@dataclass
class FoldJob:
    """Everything one fold needs (picklable, for worker processes)."""

    cfg: ExperimentConfig
    hp: dict[str, Any]
    plan: FoldPlan
    groups: list[list[int]]
    n_classes: int
    x: np.ndarray  # normalised windows of train + test participants of this fold
    mask: np.ndarray
    y: np.ndarray
    participant: np.ndarray
    fold_index: int = 0
    threads: int | None = None
    val_streams: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)  # (windows, starts, labels)
    sample_rate_hz: float = 60.0
    warmup_s: float = 0.0  # the alert rule's warm-up (seconds of a wearer's stream before a raise)


def prepare_job(cfg: ExperimentConfig, hp: dict[str, Any], dataset: Dataset, tw: TaskWindows, plan: FoldPlan,
                groups: list[list[int]], index: int) -> tuple[FoldJob, Normalizer]:
    norm = fit_normalizer(dataset, plan.train, cfg.prior_frames(dataset))  # training participants only
    idx = tw.of(plan.train + plan.test)
    x = normalise_windows(tw, idx, dataset, norm)
    streams = validation_streams(dataset, cfg, plan.val, norm) if tw.n_classes == 2 else []
    return FoldJob(cfg, hp, plan, groups, tw.n_classes, x, tw.mask[idx], tw.y[idx], tw.participant[idx], index,
                   val_streams=streams, sample_rate_hz=dataset.schema.sample_rate_hz,
                   warmup_s=cfg.warmup_seconds), norm


def validation_streams(dataset: Dataset, cfg: ExperimentConfig, val_ids: tuple[str, ...],
                       norm: Normalizer) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The validation participants' recordings cut the way the gateway cuts a stream:
    a window every stride over the whole recording (for calibrating the alert rule)."""
    out = []
    for rec in dataset.recordings:
        if rec.participant not in val_ids or cfg.task not in rec.labels:
            continue
        starts = window_starts(rec.n_frames, cfg.window, cfg.stride)
        if len(starts) < 2:
            continue
        out.append((norm.stream_windows(rec.values, starts, cfg.window), starts, np.asarray(rec.labels[cfg.task])))
    return out


def train_fold(job: FoldJob):
    """Augment the fitting windows, fit with inner validation, predict the test windows.

    Returns ``(FoldResult, FitResult)``.
    """
    from alanet.train.augment import PAPER_KINDS, augment
    from alanet.train.fit import configure_tensorflow, fit_model, predict_proba

    if job.cfg.model not in CLASSIC_MODELS:
        configure_tensorflow(job.threads, deterministic=job.cfg.deterministic)  # before TensorFlow touches a device
    plan, seed = job.plan, job.cfg.seed + job.fold_index
    fit_idx = np.flatnonzero(np.isin(job.participant, plan.fit))
    val_idx = np.flatnonzero(np.isin(job.participant, plan.val))
    test_idx = np.flatnonzero(np.isin(job.participant, plan.test))
    by_windows = False
    if not len(val_idx) and job.cfg.model not in CLASSIC_MODELS:
        # One training participant (or no class-preserving split): hold out a random
        # fifth of the *training* windows for early stopping.
        rng = np.random.default_rng(seed)
        perm = rng.permutation(fit_idx)
        n_val = max(1, len(perm) // 5) if len(perm) > 4 else 0
        val_idx, fit_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
        by_windows = n_val > 0
    rng = np.random.default_rng(seed)
    # Class balance comes from the loss weights, not from augmentation: every fitting
    # window gets the same number of augmented copies.
    kinds = tuple(job.hp.get("augment_kinds") or PAPER_KINDS)
    xa, ma, ya = augment(job.x[fit_idx], job.mask[fit_idx], job.y[fit_idx], job.groups, job.n_classes,
                         int(job.hp.get("augment_copies", 0)), rng, balance=False, kinds=kinds)
    has_val = len(val_idx) > 0
    result = fit_model(job.cfg.model, job.hp, x=xa, mask=ma, y=ya,
                       x_val=job.x[val_idx] if has_val else None, y_val=job.y[val_idx] if has_val else None,
                       mask_val=job.mask[val_idx] if has_val else None,
                       groups=job.groups, n_classes=job.n_classes, seed=seed, strategy=job.cfg.distribute,
                       progress=job.cfg.progress)
    decision: dict[str, Any] = {}
    if has_val:
        p_val = predict_proba(result, job.x[val_idx], job.mask[val_idx])
        counts = np.bincount(job.y[fit_idx], minlength=job.n_classes)
        decision = calibrate(p_val, job.y[val_idx], job.n_classes, counts, np.asarray(result.class_weights),
                             where="validation windows" if by_windows else
                             f"validation participants {','.join(plan.val)}")
    if decision.get("window_threshold") is not None and job.warmup_s > 0:
        decision = {**decision, "warmup_s": job.warmup_s}  # the alert rule below is chosen with it
    if job.val_streams and decision.get("window_threshold") is not None:
        streams = [Stream(predict_proba(result, w, np.ones(w.shape[:2], bool)), st, lab, job.cfg.window,
                          job.sample_rate_hz) for w, st, lab in job.val_streams]
        decision = calibrate_stream(streams, decision, job.cfg.task, [str(i) for i in range(job.n_classes)])
    if has_val and wants_refit(job.cfg.model, job.hp, len(fit_idx)):
        # Few windows: the validation share is a large part of the data. Train again on
        # fitting + validation windows for the budget selection chose (the decision rule
        # stays the one calibrated on validation).
        both = np.sort(np.concatenate([fit_idx, val_idx]))
        xb, mb, yb = augment(job.x[both], job.mask[both], job.y[both], job.groups, job.n_classes,
                             int(job.hp.get("augment_copies", 0)), np.random.default_rng(seed), balance=False,
                             kinds=kinds)
        first = result
        result = fit_model(job.cfg.model, refit_hparams(job.hp, first.selection, len(ya), len(yb)), x=xb, mask=mb,
                           y=yb, x_val=None, y_val=None, groups=job.groups, n_classes=job.n_classes, seed=seed,
                           strategy=job.cfg.distribute, progress=job.cfg.progress)
        result.selection = {**first.selection, "refit": {"windows": int(len(both)), **result.selection}}
        if decision:
            decision = {**decision, "calibration": str(decision.get("calibration", "")) +
                        "; then refit on fitting + validation windows with this decision rule"}
        result.train_seconds += first.train_seconds
        fit_idx = both
    if len(test_idx):
        proba = predict_proba(result, job.x[test_idx], job.mask[test_idx])
        y_pred = window_labels(proba, decision)
        metrics = classification_metrics(job.y[test_idx], y_pred, job.n_classes, proba)
        metrics["argmax_macro_f1"] = macro_f1(job.y[test_idx], proba.argmax(axis=1))
    else:
        proba, y_pred, metrics = np.zeros((0, job.n_classes), np.float32), np.zeros(0, np.int64), {}
    metrics.update(train_seconds=result.train_seconds, n_params=result.n_params, test_participants=list(plan.test),
                   decision=decision, selection=result.selection)
    fold = FoldResult(plan, metrics, job.y[test_idx], y_pred, result.history, result.train_seconds, result.n_params,
                      tuple(sorted(set(job.participant[fit_idx].tolist()))),
                      tuple(sorted(set(job.participant[val_idx].tolist()))), by_windows,
                      np.asarray(proba, np.float32), job.participant[test_idx], decision, result.selection)
    return fold, result


REFIT_MAX_WINDOWS = 2000  # refit on fitting + validation windows below this many fitting windows


def wants_refit(model: str, hp: dict[str, Any], n_fit: int) -> bool:
    """``refit``: ``auto`` (neural models with fewer than REFIT_MAX_WINDOWS fitting windows), ``always``, ``never``."""
    mode = hp.get("refit", "never")
    if model in CLASSIC_MODELS or mode == "never":
        return False
    return mode == "always" or n_fit < REFIT_MAX_WINDOWS


def refit_hparams(hp: dict[str, Any], selection: dict[str, Any], n_before: int, n_after: int) -> dict[str, Any]:
    """The budget of a refit: each stage's selected number of optimizer steps, as epochs of the larger set."""
    out = {**hp, "min_steps": 0, "ae_min_steps": 0, "refit": "never"}
    for stage, key in (("autoencoder", "ae_epochs"), ("classifier", "epochs"), ("head", "epochs")):
        sel = selection.get(stage)
        if not sel or key not in out:
            continue
        batch = int(sel["batch"])
        steps = int(sel["best_epoch"]) * math.ceil(n_before / batch)
        out[key] = max(1, round(steps / math.ceil(n_after / batch)))
        # The batch is planned again for the larger set: on a very small one (fewer than
        # 4 batches) it grows, and the refit then runs up to ~20 % fewer steps than were
        # selected. Pinning the batch to keep the step count exact measured worse on
        # BasicMotions (mean test accuracy over 3 seeds 0.950 vs 0.992), so it stays.
    if "finetune" in selection and not selection["finetune"].get("kept", True):
        out["finetune"] = False
    return out


def _train_fold_remote(job: FoldJob) -> FoldResult:
    return train_fold(job)[0]


def _sample(n: int, k: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(n, min(n, k), replace=False)) if n else np.zeros(0, np.int64)


def _examples(y: np.ndarray, pool: np.ndarray, k: int) -> np.ndarray:
    """Up to ``k`` windows from ``pool``, taken round-robin over classes (for the plots)."""
    by_class = [list(pool[y[pool] == c]) for c in np.unique(y[pool])]
    out: list[int] = []
    while len(out) < k and any(by_class):
        for lst in by_class:
            if lst and len(out) < k:
                out.append(int(lst.pop(0)))
    return np.asarray(sorted(out, key=lambda i: (y[i], i)), np.int64)


def run_experiment(cfg: ExperimentConfig, dataset: Dataset) -> ExperimentResult:
    """Run the whole experiment in memory (the caller writes the run directory)."""
    from tqdm.auto import tqdm

    validate(cfg, dataset)
    hp = cfg.resolved_hparams()
    tw = make_windows(dataset, cfg.task, cfg.window_spec())
    groups = model_groups(cfg.model, dataset)
    plans = plan_folds(cfg, dataset, tw)
    for plan in plans:
        check_classes(tw, plan)
    run = selected_folds(cfg, plans)

    # Fold inputs are built lazily (each is a normalised copy of the data): at most
    # ``jobs`` folds are in memory at once.
    def job(i: int) -> FoldJob:
        return prepare_job(cfg, hp, dataset, tw, plans[i], groups, i)[0]

    folds: list[FoldResult] = []
    fit_results = []
    bar = tqdm(total=len(run), desc=f"{cfg.model} {cfg.eval}", unit="fold", file=sys.stderr,
               disable=not cfg.progress or len(run) < 2)
    if cfg.jobs > 1 and len(run) > 1:
        import multiprocessing as mp
        import os
        from concurrent.futures import FIRST_COMPLETED, wait

        workers = min(cfg.jobs, len(run))
        threads = max(1, (os.cpu_count() or 1) // workers)
        quiet = replace(cfg, progress=False)
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
            pending: set = set()
            for i in run:
                if len(pending) >= workers:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    folds.extend(f.result() for f in done)
                    bar.update(len(done))
                pending.add(pool.submit(_train_fold_remote, replace(job(i), threads=threads, cfg=quiet)))
            for f in pending:
                folds.append(f.result())
                bar.update(1)
        folds.sort(key=lambda f: plans.index(f.plan))
    else:
        for i in run:
            fold, res = train_fold(job(i))
            folds.append(fold)
            fit_results.append(res if cfg.eval == "holdout" else None)
            bar.update(1)
    bar.close()

    fold_metrics = [f.metrics for f in folds]
    if cfg.eval == "holdout":
        metrics = dict(fold_metrics[0])
        final = fit_results[0] if fit_results else None
        decision = folds[0].decision
        normalizer = fit_normalizer(dataset, plans[0].train, cfg.prior_frames(dataset))
        test_ids = plans[0].test
    else:
        metrics = pooled_metrics(folds, tw.n_classes) if folds else {}
        test_ids = ()
        final, decision, normalizer = None, {}, fit_normalizer(dataset, tw.participant.tolist(),
                                                               cfg.prior_frames(dataset))
        if cfg.final:
            job, normalizer = prepare_job(cfg, hp, dataset, tw, deployed_plan(cfg, dataset, tw), groups, len(plans))
            final_fold, final = train_fold(job)
            decision = final_fold.decision
            metrics["final_train_seconds"] = final.train_seconds
            metrics["final_decision"] = decision

    # Parity / calibration windows, normalised with the deployed model's statistics.
    # Only full windows (no padding): a gateway's stream never produces padded ones,
    # and the exported model has no Masking layer.
    full = tw.mask.all(axis=1)
    train_idx = tw.of(plans[0].train) if cfg.eval == "holdout" else np.arange(len(tw))
    train_idx = train_idx[full[train_idx]]
    calib = train_idx[_sample(len(train_idx), PARITY_MAX, cfg.seed)]
    held = tw.of(test_ids) if test_ids else np.arange(len(tw))
    held = held[full[held]]
    test_sel = held[_sample(len(held), PARITY_MAX, cfg.seed + 1)]
    calib_x = normalise_windows(tw, calib, dataset, normalizer)
    test_x = normalise_windows(tw, test_sel, dataset, normalizer)
    ex = _examples(tw.y, test_sel, 8)
    return ExperimentResult(cfg, hp, tw.label_names, groups, folds, metrics, final, decision, normalizer,
                            tuple(test_ids), calib_x, test_x, tw.y[test_sel],
                            normalise_windows(tw, ex, dataset, normalizer), tw.y[ex], parity_held_out=bool(test_ids),
                            fold_participants=tuple(p.test[0] for p in plans) if cfg.eval == "loso" else ())


def pooled_metrics(folds: list[FoldResult], n_classes: int) -> dict[str, Any]:
    """LOSO: the pooled predictions of every fold as the headline, then the folds one by
    one, their mean, and a per-participant vote."""
    y = np.concatenate([f.y_true for f in folds])
    pred = np.concatenate([f.y_pred for f in folds])
    proba = np.concatenate([f.proba for f in folds if f.proba is not None])
    who = np.concatenate([f.participant for f in folds if f.participant is not None])
    metrics = classification_metrics(y, pred, n_classes, proba if len(proba) == len(y) else None)
    metrics["argmax_macro_f1"] = macro_f1(y, proba.argmax(axis=1)) if len(proba) == len(y) else None
    metrics.update(aggregation="pooled", train_seconds=float(np.mean([f.train_seconds for f in folds])),
                   n_params=folds[0].n_params, folds=[f.metrics for f in folds],
                   mean_of_folds=mean_over_folds([f.metrics for f in folds]))
    if len(who) == len(y):
        metrics["participant_vote"] = participant_vote(y, pred, who, n_classes)
    return metrics
