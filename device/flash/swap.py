"""Switch a running :class:`~alanet.device.pipeline.WearerPipeline` to a new model between two windows.

Called on the thread that feeds the pipeline, between two ``handle()`` calls, so no
window is half-classified. Nothing the wearable sent is dropped: the streaming
features and the ring buffer keep their frames. When the new model's window or
stride differ, the newest frames are carried into a new ring buffer, so the next
window is due as soon as the new length is filled (at once when it is not longer).

Decision state: when task, labels and decision parameters are unchanged the decider
(and an open episode) carries on; otherwise a fresh decider starts, since the old
smoothing and hysteresis mean nothing to the new model.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from alanet.device.decisions import make_decider
from alanet.device.features import StreamingFeatures
from alanet.device.windowing import RingWindow

log = logging.getLogger(__name__)


def _last_frames(ring: RingWindow, k: int) -> np.ndarray:
    """The newest ``k`` frames of ``ring`` (oldest first); at most what it holds."""
    L = ring.length
    k = min(k, ring.frames_since_reset, L)
    buf = ring._buf  # noqa: SLF001 - the ring's doubled buffer keeps the last L frames contiguous
    end = ring._pos + L  # noqa: SLF001
    return buf[end - k:end].copy()


def _set_norm(pipeline: Any, spec: Any) -> None:
    pipeline._mean = spec.normalizer.mean.astype(np.float32)  # noqa: SLF001
    pipeline._inv_std = (1.0 / spec.normalizer.std).astype(np.float32)  # noqa: SLF001
    pipeline._norm = np.zeros((spec.length, spec.n_channels), np.float32)  # noqa: SLF001


def swap_model(pipeline: Any, spec: Any) -> bool:
    """Point ``pipeline`` at ``spec`` (a ModelSpec); returns True when the decider was kept."""
    set_model = getattr(pipeline, "set_model", None)
    if callable(set_model):  # the pipeline knows how to do it itself
        return bool(set_model(spec))
    old = pipeline.spec
    if spec.n_channels != old.n_channels:
        raise ValueError(f"model expects {spec.n_channels} channels, the pipeline feeds {old.n_channels}")
    if abs(spec.sample_rate_hz - old.sample_rate_hz) > 1e-6 * old.sample_rate_hz:
        # Another sample rate (the old model did not fit the wearable, whose frames were refused):
        # the features and the window start afresh at the new rate, and the HELLO is judged again.
        pipeline.fs = spec.sample_rate_hz
        pipeline.features = StreamingFeatures(spec.sample_rate_hz)
        pipeline.ring = RingWindow(spec.n_channels, spec.length, spec.stride)
        pipeline._last = None  # noqa: SLF001
        pipeline.decider = make_decider(spec.task, spec.decision, spec.labels)
        _set_norm(pipeline, spec)
        pipeline.spec = spec
        if pipeline.hello is not None:
            pipeline._hello(pipeline.hello)  # noqa: SLF001
        log.info("%s: model %s → %s at %g Hz (window restarts)", getattr(pipeline, "wearer", "?"), old.model_id,
                 spec.model_id, spec.sample_rate_hz)
        return False
    ring = pipeline.ring
    if (spec.length, spec.stride) != (ring.length, ring.stride):
        new = RingWindow(spec.n_channels, spec.length, spec.stride)
        n = ring.frames_since_reset
        carried = _last_frames(ring, spec.length)
        for frame in carried:
            new.push(frame)
        if len(carried) == min(n, spec.length):
            # Continue the frame count, so windows stay aligned to the stream (no window is skipped).
            new._n = n  # noqa: SLF001
        # else: the new window is longer than what the old ring kept; it fills from the carried frames.
        pipeline.ring = new
    keep = (spec.task, tuple(spec.labels), dict(spec.decision)) == (old.task, tuple(old.labels), dict(old.decision))
    if not keep:
        pipeline.decider = make_decider(spec.task, spec.decision, spec.labels)
    _set_norm(pipeline, spec)
    pipeline.spec = spec
    log.info("%s: model %s → %s (%s decision state)", getattr(pipeline, "wearer", "?"), old.model_id, spec.model_id,
             "kept" if keep else "new")
    return keep
