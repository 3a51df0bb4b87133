"""One wearer's processing chain: packets → checks → features → ring window → model → decision.

Sans-I/O like the codec: :meth:`WearerPipeline.handle` takes decoded packets and
returns :class:`WindowResult` objects; the runtime does the serial and MQTT I/O.

The fast path (the default) takes DATA frames as :class:`FrameBlock` rows (the
decoder's ``feed_blocks``; runs of ``Frame`` objects are turned into blocks): per
frame it only checks the bounds and the sequence number and keeps the row; when the
rows kept complete a window (or anything else must see the stream state: any other
packet, a dropped or out-of-sequence frame, a model switch) the shared
:class:`~alanet.device.features.StreamingFeatures` and the ring write run once on the
whole block. Normalisation runs once per window (with the bundle's statistics, or, for
a per-wearer bundle, with the wearer's running statistics up to the window's last
frame, whose sums are kept per block).
``batch=False`` is the reference path: one packet at a time, features and ring per
frame. Both give the same windows, results, counters and faults for any packets.

What a wearable must do before its frames count (``firmware_bridge/PROTOCOL.md``):
announce itself with a HELLO the gateway accepts; then each DATA frame must have the
HELLO's channel counts and values within the physical bounds, and each RAW_EMG block
the HELLO's raw rate and channel count. Anything else is dropped and counted in
:class:`PipelineCounters` (never raised). A HELLO that changes the wearable's
description mid-stream restarts the window.

Sequence gaps: a jump of at most ``max_gap_frames`` missing frames is bridged by
repeating the last frame; a longer gap (or a device restart) resets the features
and the window, which must then refill before the next decision.

Faults: a window whose model output is not finite is skipped (no result, no
decision) and the decision smoothing restarts. Any exception while handling a packet
is caught, counted and noted (:meth:`WearerPipeline.take_faults`), and the window
restarts: one bad packet never stops the wearer, let alone the gateway.

Everything that depends on the model lives in one :class:`ModelSlot`; switching
models (:meth:`WearerPipeline.set_model`) builds the new slot completely and then
assigns it, so a refused switch changes nothing.

Immediate and deferred windows: by default (``deferred=False``) a completed window is
classified at once (batch 1) and its result returned by :meth:`WearerPipeline.handle`.
A gateway that batches across wearers sets ``deferred=True``: a completed window is
normalised into its own buffer and queued as *due*; the caller gathers the due
windows of many wearers (:meth:`WearerPipeline.due_windows`), classifies them in one
call (:func:`predict_windows`) and hands each wearer its rows back
(:meth:`WearerPipeline.conclude_due`), which runs the same decision code in window
order. A window whose prediction failed is charged to its wearer (fault, window
restart). A model switch while windows are due first classifies them with the old
model (:meth:`WearerPipeline.finish_due`): their results come with the next
:meth:`~WearerPipeline.conclude_due` or :meth:`~WearerPipeline.finish_due` call
(in deferred mode :meth:`~WearerPipeline.handle` returns no windows).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from alanet.device.attention import Attention, AttentionSpec, summarise
from alanet.device.decisions import PAIN, PROTECTIVE, Event, PainDecider, ProtectiveDecider, make_decider
from alanet.device.features import EnvelopeFilter, Normalizer, StreamingFeatures, WearerStats
from alanet.device.windowing import RingWindow
from alanet.firmware_bridge.protocol import (
    SEQ_MOD,
    T_MS_MOD,
    Frame,
    FrameBlock,
    Hello,
    RawEmg,
    frame_blocks,
    MAX_ABS_ANGLE_RAD,
    MAX_ABS_EMG,
    frame_problem,
    frames_in_bounds,
    hello_problem,
    raw_problem,
    row_frame,
    values_row,
)

log = logging.getLogger(__name__)

VET_MIN = 24  # blocks of this many rows or more are checked with numpy at once (fewer: row by row)
MAX_NOTED_FAULTS = 16  # faults kept for take_faults() between two calls (all are counted)


@dataclass(frozen=True)
class ModelSpec:
    """What a pipeline needs from a bundle: the predict function and its contract."""

    predict: Callable[[np.ndarray], np.ndarray]  # normalised [L, C] → probabilities [K]
    normalizer: Normalizer
    length: int
    stride: int
    sample_rate_hz: float
    n_channels: int
    task: str
    labels: tuple[str, ...]
    decision: dict[str, Any]
    model_id: str
    # Models with attention outputs: the last window's raw (temporal, body) weights, and what they mean.
    attention: Callable[[], tuple[np.ndarray, np.ndarray] | None] | None = None
    attention_spec: AttentionSpec | None = None
    # Many windows at once: normalised [N, L, C] → probabilities [N, K], the same as N ``predict`` calls;
    # None: :func:`predict_windows` loops over ``predict``.
    predict_batch: Callable[[np.ndarray], np.ndarray] | None = None
    # after ``predict_batch``: (temporal [N, L], body [N, P]) of its windows (models with attention outputs)
    attention_batch: Callable[[], tuple[np.ndarray, np.ndarray] | None] | None = None
    batch_sizes: tuple[int, ...] = (1,)  # batch sizes the model runs natively (always holds 1)

    @classmethod
    def from_bundle(cls, bundle: Any, runner: Any) -> "ModelSpec":
        """Build from a loaded ``alanet.device.bundle.Bundle`` and its ``ModelRunner``.

        Batches go to the runner's ``predict_batch`` / ``attention_batch``.
        """
        att = AttentionSpec.from_manifest(bundle.manifest) if getattr(runner, "has_attention", False) else None
        return cls(predict=runner.predict, normalizer=bundle.normalizer, length=int(bundle.window),
                   stride=int(bundle.stride), sample_rate_hz=float(bundle.schema.sample_rate_hz),
                   n_channels=int(bundle.schema.n_channels), task=str(bundle.task), labels=tuple(bundle.labels),
                   decision=dict(bundle.manifest.get("decision") or {}), model_id=str(bundle.model_id),
                   attention=runner.attention if att else None, attention_spec=att,
                   predict_batch=runner.predict_batch, attention_batch=runner.attention_batch if att else None,
                   batch_sizes=tuple(runner.batch_sizes))


RawAttention = tuple[np.ndarray, np.ndarray]  # (temporal [N, L], body [N, P])


def predict_windows(spec: ModelSpec, windows: np.ndarray) -> tuple[np.ndarray, RawAttention | None]:
    """Probabilities [N, K] (and raw attention [N, ...] for attention models) of normalised windows [N, L, C].

    One ``predict_batch`` call when the model has one, else one ``predict`` per window
    (attention read after each). Raises what the model raises.
    """
    want_att = spec.attention is not None and spec.attention_spec is not None
    if spec.predict_batch is not None:
        probs = np.asarray(spec.predict_batch(windows), np.float32)
        att = spec.attention_batch() if want_att and spec.attention_batch is not None else None
        return probs, att
    rows, temporal, body = [], [], []
    for x in windows:
        rows.append(spec.predict(x))
        if want_att:
            a = spec.attention()  # type: ignore[misc]
            if a is None:
                want_att = False
            else:
                temporal.append(a[0])
                body.append(a[1])
    probs = np.stack(rows).astype(np.float32, copy=False) if rows else np.zeros((0, len(spec.labels)), np.float32)
    return probs, ((np.stack(temporal), np.stack(body)) if want_att and temporal else None)


def predict_each(spec: ModelSpec, windows: np.ndarray) -> tuple[np.ndarray, RawAttention | None, dict[int, str]]:
    """Like :func:`predict_windows`, one ``predict`` per window, and a window that raises is noted
    (index → what went wrong; its row is NaN) instead of failing the others."""
    n = len(windows)
    probs = np.full((n, len(spec.labels)), np.nan, np.float32)
    want_att = spec.attention is not None and spec.attention_spec is not None
    temporal: list[np.ndarray | None] = [None] * n
    body: list[np.ndarray | None] = [None] * n
    failed: dict[int, str] = {}
    for k in range(n):
        try:
            p = np.asarray(spec.predict(windows[k]), np.float32).reshape(-1)
            probs[k, :len(p)] = p[:probs.shape[1]]
            if want_att:
                a = spec.attention()  # type: ignore[misc]
                if a is not None:
                    temporal[k], body[k] = a
        except Exception as exc:  # noqa: BLE001 - charged to this window's wearer only
            failed[k] = f"{type(exc).__name__}: {exc}"[:250]
    att = None
    if want_att:
        t0 = next((t for t in temporal if t is not None), None)
        b0 = next((b for b in body if b is not None), None)
        if t0 is not None and b0 is not None:
            att = (np.stack([t if t is not None else np.zeros_like(t0) for t in temporal]),
                   np.stack([b if b is not None else np.zeros_like(b0) for b in body]))
    return probs, att, failed


@dataclass(frozen=True)
class WindowResult:
    """One classified window of one wearer (and the alert event it caused, if any)."""

    wearer: str
    window: int  # index since the pipeline started
    seq: int  # sequence number of the window's last frame
    t_start: float  # stream seconds (device clock)
    t_end: float
    probs: np.ndarray  # [K], finite
    smoothed: float
    state: str | None  # protective: "active"/"none"; pain: current level label or None
    event: Event | None
    inference_ms: float  # model time for this window; in a batch: the batch's invoke time / its size
    attention: Attention | None = None  # what the model attended to (models with attention outputs)


@dataclass
class PipelineCounters:
    frames: int = 0  # DATA frames accepted
    bridged: int = 0  # frames synthesised to bridge short gaps
    gaps: int = 0  # sequence gaps seen
    lost: int = 0  # frames missing inside those gaps
    resets: int = 0  # window restarts (long gap, device restart, wearable changed, fault)
    windows: int = 0  # windows classified
    events: int = 0
    inference_s: float = 0.0
    refused: int = 0  # frames dropped because the wearable's HELLO was refused
    no_hello: int = 0  # frames dropped because no HELLO had been accepted yet
    bad_shape: int = 0  # frames whose channel counts differ from the HELLO's
    out_of_range: int = 0  # frames with a value outside the physical bounds
    raw_rejected: int = 0  # RAW_EMG blocks dropped (rate, shape, range, or no usable HELLO)
    skipped: int = 0  # windows skipped because the model output was not finite
    faults: int = 0  # exceptions caught while handling a packet


@dataclass
class ModelSlot:
    """The model-dependent part of a wearer's pipeline: built whole, switched in one assignment."""

    spec: ModelSpec
    ring: RingWindow
    decider: ProtectiveDecider | PainDecider
    mean: np.ndarray  # [C] float32
    inv_std: np.ndarray  # [C] float32
    norm: np.ndarray  # [L, C] float32 scratch for the normalised window

    @classmethod
    def build(cls, spec: ModelSpec, ring: RingWindow | None = None,
              decider: ProtectiveDecider | PainDecider | None = None) -> "ModelSlot":
        """A complete slot for ``spec``; ValueError (nothing built) if its settings are unusable."""
        if spec.n_channels != 30:
            raise ValueError(f"model expects {spec.n_channels} channels; this gateway feeds the 30 EmoPain channels")
        if not 1 <= spec.stride <= spec.length:
            raise ValueError(f"window {spec.length} / stride {spec.stride} is not usable")
        if decider is None:
            decider = make_decider(spec.task, spec.decision, spec.labels)  # ValueError on bad settings
        return cls(spec, ring if ring is not None else RingWindow(spec.n_channels, spec.length, spec.stride),
                   decider, spec.normalizer.mean.astype(np.float32),
                   (1.0 / spec.normalizer.std).astype(np.float32),
                   np.zeros((spec.length, spec.n_channels), np.float32))


@dataclass(frozen=True)
class ModelSwitch:
    """A planned model switch of one pipeline (:meth:`WearerPipeline.plan_model`)."""

    slot: ModelSlot
    kept_decider: bool
    features: StreamingFeatures | None = None  # set when the sample rate changes (everything restarts)
    refusal: str | None = None  # the HELLO verdict at the new rate (with ``features``)


def _wearable_identity(h: Hello) -> tuple:
    """What a HELLO says about the wearable (not when it was sent)."""
    return (h.device_id, h.firmware, h.protocol_version, h.n_angles, h.n_emg, h.sample_rate_hz, h.raw_emg_rate_hz,
            h.layout)


def _every_decade(n: int) -> bool:
    """True for 1, 10, 100, ...: log a repeating condition without flooding the log."""
    while n >= 10 and n % 10 == 0:
        n //= 10
    return n == 1


@dataclass(frozen=True)
class DueWindow:
    """A completed, normalised window waiting for its prediction (deferred mode)."""

    x: np.ndarray  # [L, C] float32, normalised with the slot's statistics (its own buffer)
    seq: int
    t_ms: float
    seen_s: float  # seconds of the wearer's stream behind the window (the decision's warm-up)


class WearerPipeline:
    """Checks, features, window, model and decision state of one wearer.

    ``deferred``: queue completed windows as due instead of classifying them at once
    (see the module docstring); it may be switched while no window is due.
    ``batch=False``: the reference path (one packet at a time, see the module docstring).
    """

    def __init__(self, wearer: str, spec: ModelSpec, max_gap_frames: int = 3, *, deferred: bool = False,
                 batch: bool = True) -> None:
        self.wearer = wearer
        self.deferred = bool(deferred)
        self.batch = bool(batch)
        # accepted DATA rows not yet through features and ring (fast path), in order: float64 arrays [k, C]
        # (a block's values, or its rows checked at once) and lists of row tuples
        self._kept: list[np.ndarray | list[tuple]] = []
        self._n_kept = 0  # rows in them
        self._last_row: tuple | None = None  # the last accepted frame as a row (seq, t_ms, *angles, *emg)
        self._last_na = 0  # its number of angles
        self._due: list[DueWindow] = []
        self._ready: list[WindowResult] = []  # concluded by a model switch, returned by the next call
        self.slot = ModelSlot.build(spec)
        self.max_gap = int(max_gap_frames)
        self.features = StreamingFeatures(spec.sample_rate_hz)
        # This wearer's running statistics, kept while the bundle normalises per wearer (a
        # switch to such a bundle starts them from its prior).
        self.stats = WearerStats(spec.n_channels)
        self._stats_identity: tuple | None = None  # the accepted wearable the statistics belong to
        self._seen_base = 0  # frames accepted and bridged before that wearable was accepted
        self.counters = PipelineCounters()
        self._t_base = 0  # unwrapped device clock offset (ms)
        self._last_t_ms: int | None = None
        self.refusal: str | None = None
        self.hello: Hello | None = None  # the last HELLO seen (accepted when ``refusal`` is None)
        self._env: EnvelopeFilter | None = None
        self._env_rate = 0.0
        self._env_last: np.ndarray | None = None
        self._faults: list[str] = []
        self.last_fault: str | None = None

    # ---- the model slot ----
    @property
    def spec(self) -> ModelSpec:
        return self.slot.spec

    @property
    def ring(self) -> RingWindow:
        return self.slot.ring

    @property
    def decider(self) -> ProtectiveDecider | PainDecider:
        return self.slot.decider

    @property
    def fs(self) -> float:
        return self.slot.spec.sample_rate_hz

    @property
    def _last(self) -> Frame | None:
        """The last accepted DATA frame (None after a window restart)."""
        r = self._last_row
        return None if r is None else row_frame(r, self._last_na)

    @_last.setter
    def _last(self, f: Frame | None) -> None:
        if f is None:
            self._last_row = None
        else:
            self._last_row, self._last_na = (f.seq, f.t_ms, *f.angles, *f.emg), len(f.angles)

    def plan_model(self, spec: ModelSpec) -> "ModelSwitch":
        """Everything a switch to ``spec`` needs, built completely; ValueError if it cannot be.

        Nothing changes until :meth:`apply_model`. Plan and apply with no packet handled
        in between (the plan carries the ring's frames as they are now).
        """
        self._flush(None)  # the ring holds every accepted frame (kept rows never complete a window)
        old = self.slot.spec
        if spec.n_channels != old.n_channels:
            raise ValueError(f"model expects {spec.n_channels} channels, the pipeline feeds {old.n_channels}")
        if abs(spec.sample_rate_hz - old.sample_rate_hz) > 1e-6 * old.sample_rate_hz:
            refusal = self._hello_verdict(self.hello, spec.sample_rate_hz) if self.hello is not None else self.refusal
            return ModelSwitch(ModelSlot.build(spec), False, StreamingFeatures(spec.sample_rate_hz), refusal)
        keep = (spec.task, tuple(spec.labels), dict(spec.decision)) == (old.task, tuple(old.labels), dict(old.decision))
        ring = self.slot.ring
        if (spec.length, spec.stride) != (ring.length, ring.stride):
            ring = ring.resized(spec.length, spec.stride)
        return ModelSwitch(ModelSlot.build(spec, ring, self.slot.decider if keep else None), keep)

    def apply_model(self, switch: "ModelSwitch") -> bool:
        """Switch to a planned model; returns True when the decider was kept.

        Windows still due (deferred mode) are first classified with the old model
        (:meth:`finish_due`, as immediate mode would have done before the switch); their
        results come with the next :meth:`conclude_due` / :meth:`finish_due` call. The
        rest is assignments only.
        """
        self._flush(None)
        if self._due:
            self._ready = self.finish_due()  # (it takes what was ready before, too)
        old = self.slot.spec
        new = switch.slot.spec
        if switch.features is not None:  # another sample rate: features and window start afresh
            self.slot, self.features, self._last, self.refusal = switch.slot, switch.features, None, switch.refusal
            self.stats.reset()
            log.info("%s: model %s → %s at %g Hz (window restarts)", self.wearer, old.model_id, new.model_id,
                     new.sample_rate_hz)
            return False
        if new.normalizer.per_wearer and not old.normalizer.per_wearer:
            self.stats.reset()  # not kept under the old bundle: start from the new one's prior
        self.slot = switch.slot
        log.info("%s: model %s → %s (%s decision state)", self.wearer, old.model_id, new.model_id,
                 "kept" if switch.kept_decider else "new")
        return switch.kept_decider

    def set_model(self, spec: ModelSpec) -> bool:
        """Switch to ``spec`` between two packets; returns True when the decision state was kept.

        Every frame already held stays: when window or stride change, the newest frames
        are carried into the new ring (:meth:`RingWindow.resized`). At another sample
        rate the features and window start afresh and the HELLO is judged again. The
        decider (and an open episode) carries on when task, labels and decision
        settings are unchanged. The new state is built completely first (ValueError,
        with nothing changed, when it cannot be); then it is switched in.
        """
        return self.apply_model(self.plan_model(spec))

    def frames_to_window(self) -> int | None:
        """DATA frames still to come before the next window completes (None while the stream
        is not classified: no accepted HELLO yet, or a refused one)."""
        if self.hello is None or self.refusal is not None:
            return None
        return max(1, self.slot.ring.until_window() - self._n_kept)

    # ---- faults ----
    def take_faults(self) -> list[str]:
        """The faults noted since the last call (at most ``MAX_NOTED_FAULTS``; all are counted)."""
        out, self._faults = self._faults, []
        return out

    def _fault(self, what: str) -> None:
        self.counters.faults += 1
        self.last_fault = what
        if len(self._faults) < MAX_NOTED_FAULTS:
            self._faults.append(what)

    # ---- packets ----
    def handle(self, packets: Sequence[Frame | FrameBlock | Hello | RawEmg]) -> list[WindowResult]:
        """Process decoded packets in order; return the windows they completed. Never raises.

        DATA frames take the fast path (:meth:`_block`); the results, counters and faults
        are exactly those of the reference path (``batch=False``: one packet at a time).
        """
        out: list[WindowResult] = []
        if not self.batch:
            for p in packets:
                if type(p) is FrameBlock:
                    for f in p.frames():
                        self._one(f, out)
                else:
                    self._one(p, out)
            return out
        for p in packets:
            t = type(p)
            if t is FrameBlock:
                self._block(p, out)
            elif t is Frame:
                self._block(frame_blocks((p,))[0], out)
            else:
                self._one(p, out)
        return out

    def _one(self, p: Frame | Hello | RawEmg, out: list[WindowResult]) -> None:
        """Handle one packet (the reference path); a fault is counted and restarts the window."""
        if self._n_kept:
            self._flush(out)  # the features and the ring first take the rows kept so far
        try:
            if type(p) is Frame:
                r = self._frame(p)
                if r:
                    out.extend(r)
            elif type(p) is Hello:
                self._hello(p)
            elif type(p) is RawEmg:
                self._raw(p)
        except Exception as exc:  # noqa: BLE001 - one packet's fault must not stop the wearer
            self._packet_fault(p, exc)

    def _packet_fault(self, p: object, exc: Exception) -> None:
        self._fault(f"{type(p).__name__} packet: {type(exc).__name__}: {exc}"[:300])
        if _every_decade(self.counters.faults):
            log.exception("%s: fault %d while handling a %s packet; the window restarts", self.wearer,
                          self.counters.faults, type(p).__name__, exc_info=exc)
        self._restart_window()

    # ---- the fast path: DATA rows kept, features and ring once per window ----
    def _block(self, b: FrameBlock, out: list[WindowResult]) -> None:
        """Handle a block of DATA rows as the reference path handles its frames one at a time.

        A row that passes the bounds check and follows the last accepted frame (seq + 1,
        or any seq right after a window restart) is counted and kept; when the rows kept
        complete a window they go through the features and the ring at once
        (:meth:`_flush`). Any other row (dropped, duplicate, gap, restart) takes the
        reference path as a ``Frame``.
        """
        h = self.hello
        na = b.n_angles
        if h is None or self.refusal is not None or na != h.n_angles or b.n_emg != h.n_emg or not na or not b.n_emg:
            for k in range(len(b.rows)):  # the reference path drops and counts them
                self._one(b.frame(k), out)
            return
        e = 2 + na
        room = self.slot.ring.until_window() - self._n_kept  # rows until the next window
        last = self._last_row
        v = b.values
        if b.vetted:  # the decoder checked every row but the first against our last
            first = b.rows[0][0] if v is None else int(v[0, 0])
            if last is None or (first - last[0]) % SEQ_MOD == 1:
                self._keep(b.rows if v is None else v, room, na, out)
                return
        elif len(b) >= VET_MIN:  # checked at once: keep them all
            v = b.array()
            if self._all_follow(v, e, last):
                self._keep(v, room, na, out)
                return
        rows = b.rows
        kept = self._tuples()
        A, E, isfinite = MAX_ABS_ANGLE_RAD, MAX_ABS_EMG, math.isfinite
        new = 0  # rows kept since the last and the frame count were last written back
        for r in rows:
            # values_in_bounds inline (this runs for every frame); seq and t_ms in the sum are finite
            a, m = r[2:e], r[e:]
            if ((last is not None and (r[0] - last[0]) % SEQ_MOD != 1)
                    or not (-A <= min(a) and max(a) <= A and -E <= min(m) and max(m) <= E and isfinite(sum(r)))):
                if new:
                    self._last_row, self._last_na = last, na
                    self.counters.frames += new
                    new = 0
                self._one(row_frame(r, na), out)
                kept, last = self._tuples(), self._last_row
                room = self.slot.ring.until_window() - self._n_kept
                continue
            kept.append(r)
            self._n_kept += 1
            last = r
            new += 1
            room -= 1
            if not room:
                self._last_row, self._last_na = last, na
                self.counters.frames += new
                new = 0
                self._flush(out)
                kept, last = self._tuples(), self._last_row
                room = self.slot.ring.until_window()
        if new:
            self._last_row, self._last_na = last, na
            self.counters.frames += new

    def _keep(self, rows: np.ndarray | list[tuple], room: int, na: int, out: list[WindowResult]) -> None:
        """Keep checked rows that follow the last accepted frame (an array of values or row tuples),
        flushing each time they complete a window (``room``: rows until the next one)."""
        i, n = 0, len(rows)
        array = type(rows) is np.ndarray
        while i < n:
            k = min(room, n - i)
            piece = rows[i:i + k]
            if array:
                self._kept.append(piece)
                self._last_row = values_row(piece[-1].tolist())
            else:
                self._tuples().extend(piece)
                self._last_row = piece[-1]
            self._last_na = na
            self._n_kept += k
            self.counters.frames += k
            i += k
            room -= k
            if not room:
                self._flush(out)
                room = self.slot.ring.until_window()

    def _tuples(self) -> list[tuple]:
        """The list of row tuples the kept rows end with (a new one when they end with an array or are none)."""
        kept = self._kept
        if kept and type(kept[-1]) is list:
            return kept[-1]
        t: list[tuple] = []
        kept.append(t)
        return t

    @staticmethod
    def _all_follow(v: np.ndarray, e: int, last: tuple | None) -> bool:
        """True when every row of ``v`` (a block's values) is within the physical bounds and follows the one
        before (the first: ``last``)."""
        if last is not None and (int(v[0, 0]) - last[0]) % SEQ_MOD != 1:
            return False
        return bool(frames_in_bounds(v[:, 2:e], v[:, e:]).all() and (np.diff(v[:, 0]) % SEQ_MOD == 1).all())

    def _flush(self, out: list[WindowResult] | None) -> None:
        """Put the kept rows through the features and the ring; classify the window the last one completes.

        Rows are kept only until they complete a window, so only a flush at that point
        gives one (``out`` may be None elsewhere).
        """
        kept = self._kept
        if not kept:
            return
        self._kept, self._n_kept = [], 0
        na = self._last_na
        try:
            parts = [p if type(p) is np.ndarray else np.array(p, np.float64) for p in kept if len(p)]
            if not parts:
                return
            v = parts[0] if len(parts) == 1 else np.concatenate(parts)
            emg = v[:, 2 + na:] if self._env_last is None else self._env_last
            feats = self.features.push_block(v[:, 2:2 + na], emg)
            wins = self.slot.ring.push_block(feats)
        except Exception as exc:  # noqa: BLE001 - none is known (checked rows); never raise, drop the block
            first = next(p for p in kept if len(p))[0]
            self._packet_fault(row_frame(first if type(first) is tuple else values_row(first.tolist()), na), exc)
            return
        per_wearer = self.slot.spec.normalizer.per_wearer
        counted = 0  # rows in the wearer's statistics (each window sees the rows up to its last one)
        for k, w in wins:
            if per_wearer:
                self.stats.push(feats[counted:k + 1])
                counted = k + 1
            try:
                res = self._classify(w, int(v[k, 0]), int(v[k, 1]))
            except Exception as exc:  # noqa: BLE001 - as _one: count, note, restart the window
                self._packet_fault(row_frame(values_row(v[k].tolist()), na), exc)
                return
            if res is not None and out is not None:
                out.append(res)
        if per_wearer and counted < len(feats):
            self.stats.push(feats[counted:])

    def _hello_verdict(self, h: Hello, fs: float) -> str | None:
        problem = hello_problem(h)
        if problem is None and abs(h.sample_rate_hz - fs) > 1e-3 * fs:
            problem = f"wearable {h.device_id!r} samples at {h.sample_rate_hz:g} Hz, the model needs {fs:g} Hz"
        return problem

    def _hello(self, h: Hello) -> None:
        problem = self._hello_verdict(h, self.fs)
        prev = self.hello if self.refusal is None else None
        if problem != self.refusal:
            if problem:
                log.error("%s: %s; its frames are ignored", self.wearer, problem)
            else:
                log.info("%s: wearable %r (firmware %r, %g Hz)", self.wearer, h.device_id, h.firmware,
                         h.sample_rate_hz)
        if problem is None and prev is not None and _wearable_identity(prev) != _wearable_identity(h):
            log.warning("%s: the wearable's HELLO changed (now %r, firmware %r, %g Hz): the window restarts",
                        self.wearer, h.device_id, h.firmware, h.sample_rate_hz)
            self._restart_window()
            self._env, self._env_rate, self._env_last = None, 0.0, None
        if problem is None:
            ident = _wearable_identity(h)
            if ident != self._stats_identity:
                if self._stats_identity is not None:
                    self.stats.reset()  # another wearable (even after a refused HELLO): its own statistics
                self._seen_base = self.counters.frames + self.counters.bridged
                self._stats_identity = ident
        self.refusal = problem
        self.hello = h

    @property
    def accepting(self) -> bool:
        """True once the wearable's HELLO is accepted: only then do its DATA (and EXERCISE) packets count."""
        return self.hello is not None and self.refusal is None

    def accepts(self, f: Frame) -> bool:
        """Whether DATA frame ``f`` passes the HELLO and physical-bounds checks now (nothing is counted)."""
        return self.hello is not None and self.refusal is None and frame_problem(f, self.hello) is None

    def _drop(self, counter: str, what: str) -> None:
        n = getattr(self.counters, counter) + 1
        setattr(self.counters, counter, n)
        if _every_decade(n):
            log.warning("%s: %s (%d so far)", self.wearer, what, n)

    def _raw(self, r: RawEmg) -> None:
        """Raw sEMG blocks: envelope with the shared filter; the latest value replaces the frames' sEMG."""
        h = self.hello
        if h is None or self.refusal is not None:
            self._drop("raw_rejected", "raw sEMG block before an accepted HELLO dropped")
            return
        problem = raw_problem(r, h)
        if problem is not None:
            self._drop("raw_rejected", f"raw sEMG block dropped ({problem} does not fit the HELLO)")
            return
        if self._env is None or r.rate_hz != self._env_rate:
            try:
                env = EnvelopeFilter(r.rate_hz, channels=h.n_emg)
            except ValueError as exc:
                self._drop("raw_rejected", f"raw sEMG at {r.rate_hz:g} Hz unusable: {exc}")
                return
            self._env, self._env_rate = env, r.rate_hz
        self._env_last = self._env.process(np.asarray(r.samples, np.float64))[-1]

    def _restart_window(self) -> None:
        if self._n_kept and self.slot.spec.normalizer.per_wearer:
            self._flush(None)  # they complete no window, but count in the wearer's statistics (as per frame)
        self._kept, self._n_kept = [], 0  # kept rows complete no window: nothing else would change
        self.features.reset()
        self.slot.ring.reset()
        self._last = None
        self.counters.resets += 1

    def reset(self) -> None:
        """Restart the window (the decision state is kept: an open episode stays open)."""
        self._restart_window()

    def _frame(self, f: Frame) -> list[WindowResult] | None:
        h = self.hello
        if h is None:
            self._drop("no_hello", "DATA before any HELLO dropped (the wearable must announce itself first)")
            return None
        if self.refusal is not None:
            self.counters.refused += 1
            return None
        problem = frame_problem(f, h)
        if problem is not None:
            if problem == "shape":
                self._drop("bad_shape", f"frame of {len(f.angles)}+{len(f.emg)} channels dropped "
                                        f"(the HELLO says {h.n_angles}+{h.n_emg})")
            else:
                self._drop("out_of_range", "frame with a value outside the physical bounds dropped")
            return None
        last = self._last
        out: list[WindowResult] | None = None
        if last is not None:
            d = (f.seq - last.seq) % SEQ_MOD
            if d == 0:
                return None  # duplicate
            if d >= SEQ_MOD // 2:
                log.info("%s: sequence went back (%d → %d): device restarted, window restarts", self.wearer, last.seq, f.seq)
                self.reset()
            elif d > 1:
                self.counters.gaps += 1
                self.counters.lost += d - 1
                if d - 1 <= self.max_gap:
                    for k in range(1, d):
                        self.counters.bridged += 1
                        r = self._push(last, (last.seq + k) % SEQ_MOD, last.t_ms + k * 1000.0 / self.fs)
                        if r is not None:
                            out = (out or []) + [r]
                else:
                    log.info("%s: %d frames missing: window restarts", self.wearer, d - 1)
                    self.reset()
        self.counters.frames += 1
        r = self._push(f, f.seq, f.t_ms)
        self._last = f
        if r is not None:
            out = (out or []) + [r]
        return out

    def _push(self, f: Frame, seq: int, t_ms: float) -> WindowResult | None:
        emg = f.emg if self._env_last is None else self._env_last
        row = self.features.push(f.angles, emg)
        if self.slot.spec.normalizer.per_wearer:
            self.stats.push(row)
        w = self.slot.ring.push(row)
        if w is None:
            return None
        return self._classify(w, seq, t_ms)

    def _stream_seconds(self, t_ms: float) -> float:
        t = int(t_ms)
        if self._last_t_ms is not None and t < self._last_t_ms - T_MS_MOD // 2:
            self._t_base += T_MS_MOD
        self._last_t_ms = t
        return (self._t_base + t_ms) / 1000.0

    # ---- per window: normalise → predict → conclude ----
    def _normalize(self, window: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The window normalised with the bundle's statistics (per-wearer mode: this wearer's running
        statistics up to the window's last frame), in ``out`` (default: the slot's scratch buffer)."""
        s = self.slot
        out = s.norm if out is None else out
        mean, inv_std = (self.stats.mean_inv_std(s.spec.normalizer) if s.spec.normalizer.per_wearer
                         else (s.mean, s.inv_std))
        np.subtract(window, mean, out=out)
        out *= inv_std
        return out

    def _attention(self, raw: RawAttention | None) -> Attention | None:
        """A prediction's raw attention (temporal [L], body [P]), summarised (models with attention outputs only)."""
        spec = self.spec
        if raw is None or spec.attention_spec is None:
            return None
        return summarise(raw[0], raw[1], spec.attention_spec, self.fs)

    def _seen_s(self) -> float:
        """Seconds of this wearer's stream behind the window just completed: the frames in its
        running statistics (per-wearer bundles), or accepted since its wearable was (population)."""
        c = self.counters
        n = self.stats.n if self.slot.spec.normalizer.per_wearer else c.frames + c.bridged - self._seen_base
        return n / self.fs

    def _classify(self, window: np.ndarray, seq: int, t_ms: float) -> WindowResult | None:
        if self.deferred:
            x = self._normalize(window, np.empty_like(self.slot.norm))  # its own buffer: the ring moves on
            self._due.append(DueWindow(x, seq, t_ms, self._seen_s()))
            return None
        x = self._normalize(window)
        spec = self.slot.spec
        t0 = time.perf_counter()
        probs = spec.predict(x)
        dt = time.perf_counter() - t0
        raw = spec.attention() if spec.attention is not None and spec.attention_spec is not None else None
        return self._conclude(probs, seq, t_ms, dt, raw, self._seen_s())

    # ---- deferred windows (batched across wearers by the caller) ----
    @property
    def due(self) -> int:
        """How many completed windows wait for their prediction (deferred mode)."""
        return len(self._due)

    def due_windows(self) -> list[np.ndarray]:
        """The due windows' normalised inputs [L, C], oldest first (they stay due until concluded)."""
        return [d.x for d in self._due]

    def conclude_due(self, probs: np.ndarray, attention: RawAttention | None = None, inference_ms: float = 0.0,
                     failed: dict[int, str] | None = None) -> list[WindowResult]:
        """Finish the due windows, in order, with their predictions.

        ``probs`` [N, K] (N = :attr:`due`), ``attention`` (temporal [N, L], body [N, P]) or
        None, ``inference_ms`` the share of the batch's invoke time each window is charged
        (batch time / batch size), ``failed`` window index → why its prediction raised: such
        a window is skipped and charged to this wearer as a fault, and the window restarts
        (as a raising ``predict`` does in immediate mode). Non-finite rows are skipped as in
        immediate mode. Never raises.
        """
        due, self._due = self._due, []
        out = self._take_ready()
        if len(probs) != len(due):
            self._fault(f"{len(probs)} prediction(s) for {len(due)} due window(s); windows skipped")
            return out
        dt = inference_ms / 1000.0
        for k, d in enumerate(due):
            try:
                if failed and k in failed:
                    self.counters.inference_s += dt
                    self._fault(f"model {self.spec.model_id}: window ending at seq {d.seq}: {failed[k]}"[:300])
                    self._restart_window()
                    continue
                raw = (attention[0][k], attention[1][k]) if attention is not None else None
                r = self._conclude(probs[k], d.seq, d.t_ms, dt, raw, d.seen_s)
                if r is not None:
                    out.append(r)
            except Exception as exc:  # noqa: BLE001 - like a packet fault: counted, the wearer goes on
                self._fault(f"concluding window ending at seq {d.seq}: {type(exc).__name__}: {exc}"[:300])
                self._restart_window()
        return out

    def finish_due(self) -> list[WindowResult]:
        """Classify this wearer's due windows now, with its own model (a batch of its own); never raises."""
        if not self._due:
            return self._take_ready()
        xs = np.stack(self.due_windows())
        t0 = time.perf_counter()
        try:
            probs, att = predict_windows(self.spec, xs)
            failed: dict[int, str] = {}
        except Exception:  # noqa: BLE001 - one window at a time: a bad one is charged alone
            probs, att, failed = predict_each(self.spec, xs)
        ms = 1000.0 * (time.perf_counter() - t0) / len(xs)
        return self.conclude_due(probs, att, ms, failed)

    def _take_ready(self) -> list[WindowResult]:
        out, self._ready = self._ready, []
        return out

    def _conclude(self, probs: np.ndarray, seq: int, t_ms: float, dt: float,
                  raw_attention: RawAttention | None = None, seen_s: float | None = None) -> WindowResult | None:
        """Decide on one window's probabilities; None (window skipped) when they are not finite.
        ``seen_s``: seconds of the wearer's stream behind the window (the decision rule's warm-up)."""
        s, c = self.slot, self.counters
        c.inference_s += dt
        t_end = self._stream_seconds(t_ms) + 1.0 / self.fs
        if not np.all(np.isfinite(probs)):
            c.skipped += 1
            s.decider.reset_smoothing()
            self._fault(f"model {s.spec.model_id}: output not finite for the window ending at seq {seq}; "
                        "window skipped, smoothing restarted")
            return None
        t_start = round(t_end - s.spec.length / self.fs, 3) + 0.0  # ms resolution, no -0.0
        t_end = round(t_end, 3) + 0.0
        ev = s.decider.update(probs, t_start, t_end, seen_s=seen_s)
        if ev is not None:
            c.events += 1
        d = s.decider
        if isinstance(d, ProtectiveDecider):
            smoothed = float(d.smoothed or 0.0)
            state: str | None = "active" if d.active else "none"
        else:
            sm = d.smoothed if d.smoothed is not None else probs
            smoothed = float(np.max(sm))
            labels = s.spec.labels
            state = labels[d.level] if d.level is not None and d.level < len(labels) else None
        r = WindowResult(self.wearer, c.windows, seq, t_start, t_end, probs, smoothed, state, ev, dt * 1000.0,
                         self._attention(raw_attention))
        c.windows += 1
        return r


__all__ = ["ModelSpec", "ModelSlot", "DueWindow", "predict_windows", "predict_each", "ModelSwitch", "WindowResult", "WearerPipeline", "PipelineCounters", "PAIN", "PROTECTIVE"]
