"""Switch a running :class:`~alanet.device.pipeline.WearerPipeline` to a new model between two windows.

Called on the thread that feeds the pipeline, between two ``handle()`` calls, so no
window is half-classified. Nothing the wearable sent is dropped: the streaming
features and the ring buffer keep their frames. When the new model's window or
stride differ, the newest frames are carried into a new ring buffer, so the next
window is due as soon as the new length is filled (at once when it is not longer).

Decision state: when task, labels and decision parameters are unchanged the decider
(and an open episode) carries on; otherwise a fresh decider starts, since the old
smoothing and hysteresis mean nothing to the new model.

The switch is atomic: the pipeline builds the new model state completely (ring,
decider, normalisation) and only then switches to it, so a model it cannot use
(ValueError) leaves it exactly as it was (:meth:`~alanet.device.pipeline.WearerPipeline.set_model`).
"""

from __future__ import annotations

from typing import Any


def swap_model(pipeline: Any, spec: Any) -> bool:
    """Point ``pipeline`` at ``spec`` (a ModelSpec); returns True when the decider was kept."""
    return bool(pipeline.set_model(spec))
