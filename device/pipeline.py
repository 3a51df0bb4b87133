"""One wearer's processing chain: packets → features → ring window → model → decision.

Sans-I/O like the codec: :meth:`WearerPipeline.handle` takes decoded packets and
returns :class:`WindowResult` objects; the runtime does the serial and MQTT I/O.
Per frame the work is the shared :class:`~alanet.device.features.StreamingFeatures`
and one ring-buffer write; normalisation runs once per window (on the window, with
the bundle's statistics), so the per-frame cost stays a few microseconds.

Sequence gaps: a jump of at most ``max_gap_frames`` missing frames is bridged by
repeating the last frame; a longer gap (or a device restart) resets the features
and the window, which must then refill before the next decision.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from alanet.device.attention import Attention, AttentionSpec, summarise
from alanet.device.decisions import PAIN, PROTECTIVE, Event, PainDecider, ProtectiveDecider, make_decider
from alanet.device.features import EnvelopeFilter, Normalizer, StreamingFeatures
from alanet.device.windowing import RingWindow
from alanet.firmware_bridge.protocol import SEQ_MOD, T_MS_MOD, Frame, Hello, RawEmg, hello_problem

log = logging.getLogger(__name__)


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

    @classmethod
    def from_bundle(cls, bundle: Any, runner: Any) -> "ModelSpec":
        """Build from a loaded ``alanet.device.bundle.Bundle`` and its ``ModelRunner``."""
        att = AttentionSpec.from_manifest(bundle.manifest) if getattr(runner, "has_attention", False) else None
        return cls(predict=runner.predict, normalizer=bundle.normalizer, length=int(bundle.window),
                   stride=int(bundle.stride), sample_rate_hz=float(bundle.schema.sample_rate_hz),
                   n_channels=int(bundle.schema.n_channels), task=str(bundle.task), labels=tuple(bundle.labels),
                   decision=dict(bundle.manifest.get("decision") or {}), model_id=str(bundle.model_id),
                   attention=runner.attention if att else None, attention_spec=att)


@dataclass(frozen=True)
class WindowResult:
    """One classified window of one wearer (and the alert event it caused, if any)."""

    wearer: str
    window: int  # index since the pipeline started
    seq: int  # sequence number of the window's last frame
    t_start: float  # stream seconds (device clock)
    t_end: float
    probs: np.ndarray  # [K]
    smoothed: float
    state: str | None  # protective: "active"/"none"; pain: current level label or None
    event: Event | None
    inference_ms: float
    attention: Attention | None = None  # what the model attended to (models with attention outputs)


@dataclass
class PipelineCounters:
    frames: int = 0  # DATA frames accepted
    bridged: int = 0  # frames synthesised to bridge short gaps
    gaps: int = 0  # sequence gaps seen
    lost: int = 0  # frames missing inside those gaps
    resets: int = 0  # window restarts (long gap, device restart)
    windows: int = 0
    events: int = 0
    inference_s: float = 0.0
    refused: int = 0  # frames dropped because the wearable's HELLO was refused


class WearerPipeline:
    """Features, window, model and decision state of one wearer."""

    def __init__(self, wearer: str, spec: ModelSpec, max_gap_frames: int = 3) -> None:
        if spec.n_channels != 30:
            raise ValueError(f"model expects {spec.n_channels} channels; this gateway feeds the 30 EmoPain channels")
        self.wearer = wearer
        self.spec = spec
        self.max_gap = int(max_gap_frames)
        self.fs = spec.sample_rate_hz
        self.features = StreamingFeatures(self.fs)
        self.ring = RingWindow(spec.n_channels, spec.length, spec.stride)
        self.decider: ProtectiveDecider | PainDecider = make_decider(spec.task, spec.decision, spec.labels)
        self.counters = PipelineCounters()
        self._mean = spec.normalizer.mean.astype(np.float32)
        self._inv_std = (1.0 / spec.normalizer.std).astype(np.float32)
        self._norm = np.zeros((spec.length, spec.n_channels), np.float32)
        self._last: Frame | None = None
        self._t_base = 0  # unwrapped device clock offset (ms)
        self._last_t_ms: int | None = None
        self._window_t_ms: float = 0.0
        self.refusal: str | None = None
        self.hello: Hello | None = None
        self._env: EnvelopeFilter | None = None
        self._env_rate = 0.0
        self._env_last: np.ndarray | None = None

    # ---- packets ----
    def handle(self, packets: Sequence[Frame | Hello | RawEmg]) -> list[WindowResult]:
        """Process decoded packets in order; return the windows they completed."""
        out: list[WindowResult] = []
        for p in packets:
            if type(p) is Frame:
                if self.refusal is None:
                    r = self._frame(p)
                    if r is not None:
                        out.extend(r)
                else:
                    self.counters.refused += 1
            elif type(p) is Hello:
                self._hello(p)
            elif type(p) is RawEmg:
                self._raw(p)
        return out

    def _hello(self, h: Hello) -> None:
        problem = hello_problem(h)
        if problem is None and abs(h.sample_rate_hz - self.fs) > 1e-3 * self.fs:
            problem = f"wearable {h.device_id!r} samples at {h.sample_rate_hz:g} Hz, the model needs {self.fs:g} Hz"
        if problem != self.refusal:
            if problem:
                log.error("%s: %s; its frames are ignored", self.wearer, problem)
            else:
                log.info("%s: wearable %s (firmware %s, %g Hz)", self.wearer, h.device_id, h.firmware, h.sample_rate_hz)
        self.refusal = problem
        self.hello = h

    def _raw(self, r: RawEmg) -> None:
        """Raw sEMG blocks: envelope with the shared filter; the latest value replaces the frames' sEMG."""
        if not r.samples:
            return
        if self._env is None or r.rate_hz != self._env_rate:
            try:
                self._env = EnvelopeFilter(r.rate_hz, channels=len(r.samples[0]))
            except ValueError as exc:
                log.error("%s: raw sEMG at %g Hz unusable: %s", self.wearer, r.rate_hz, exc)
                return
            self._env_rate = r.rate_hz
        self._env_last = self._env.process(np.asarray(r.samples, np.float64))[-1]

    def reset(self) -> None:
        """Restart the window (the decision state is kept: an open episode stays open)."""
        self.features.reset()
        self.ring.reset()
        self._last = None
        self.counters.resets += 1

    def _frame(self, f: Frame) -> list[WindowResult] | None:
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
        w = self.ring.push(self.features.push(f.angles, emg))
        if w is None:
            return None
        return self._classify(w, seq, t_ms)

    def _stream_seconds(self, t_ms: float) -> float:
        t = int(t_ms)
        if self._last_t_ms is not None and t < self._last_t_ms - T_MS_MOD // 2:
            self._t_base += T_MS_MOD
        self._last_t_ms = t
        return (self._t_base + t_ms) / 1000.0

    # ---- per window ----
    def _attention(self) -> Attention | None:
        spec = self.spec
        if spec.attention is None or spec.attention_spec is None:
            return None
        raw = spec.attention()
        return None if raw is None else summarise(raw[0], raw[1], spec.attention_spec, self.fs)

    def _classify(self, window: np.ndarray, seq: int, t_ms: float) -> WindowResult:
        np.subtract(window, self._mean, out=self._norm)
        self._norm *= self._inv_std
        t0 = time.perf_counter()
        probs = self.spec.predict(self._norm)
        dt = time.perf_counter() - t0
        c = self.counters
        c.inference_s += dt
        t_end = self._stream_seconds(t_ms) + 1.0 / self.fs
        t_start = round(t_end - self.spec.length / self.fs, 3) + 0.0  # ms resolution, no -0.0
        t_end = round(t_end, 3) + 0.0
        ev = self.decider.update(probs, t_start, t_end)
        if ev is not None:
            c.events += 1
        d = self.decider
        if isinstance(d, ProtectiveDecider):
            smoothed = float(d.smoothed or 0.0)
            state: str | None = "active" if d.active else "none"
        else:
            sm = d.smoothed if d.smoothed is not None else probs
            smoothed = float(np.max(sm))
            state = self.spec.labels[d.level] if d.level is not None and d.level < len(self.spec.labels) else None
        r = WindowResult(self.wearer, c.windows, seq, t_start, t_end, probs, smoothed, state, ev, dt * 1000.0,
                         self._attention())
        c.windows += 1
        return r


__all__ = ["ModelSpec", "WindowResult", "WearerPipeline", "PipelineCounters", "PAIN", "PROTECTIVE"]
