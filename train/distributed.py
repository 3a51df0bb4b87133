"""Training on several hosts: ``tf.distribute.MultiWorkerMirroredStrategy``.

Every worker runs the same ``alanet train`` command on the same data (``TF_CONFIG``
names the cluster and the worker): the same windows, the same seeded augmentation and
shuffling, so the same number of steps, each step's gradients all-reduced across the
workers. Model selection reads the validation predictions, which every worker gathers
in full, so every worker picks the same epoch and stops at the same step. Before
training the workers compare a digest of their data and settings and refuse to start
when they differ. The chief (task ``chief``, else worker 0) alone writes the run
directory; the others wait for it, so no worker leaves while another still needs it.

Keras 3's ``Model.fit`` does not run multi-worker as released (keras-team/keras#20585:
it all-reduces a whole input batch to build the model and reduces scalar logs along an
axis they lack). :func:`patch_keras` fixes both places, and only for multi-worker
strategies: the model is built from the worker's own slice of the first batch, and the
logs are averaged over workers.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

import numpy as np

from alanet.errors import InputError


@dataclass(frozen=True)
class WorkerTask:
    """This process's place in the ``TF_CONFIG`` cluster."""

    type: str  # "chief" | "worker" | "" (no cluster: one process)
    index: int
    workers: int  # processes taking part in training (chief included)
    cluster_has_chief: bool = False

    @property
    def is_chief(self) -> bool:
        """The chief writes the run directory: task ``chief``, else worker 0, else the only process."""
        return self.type in ("", "chief") or (self.type == "worker" and self.index == 0 and not self.cluster_has_chief)


def worker_task(env: dict[str, str] | None = None) -> WorkerTask:
    """Read ``TF_CONFIG`` (``{"cluster": {"worker": [...], "chief": [...]}, "task": {...}}``)."""
    raw = (os.environ if env is None else env).get("TF_CONFIG", "")
    if not raw.strip():
        return WorkerTask("", 0, 1)
    try:
        conf = json.loads(raw)
        cluster, task = conf.get("cluster") or {}, conf.get("task") or {}
        kind, index = str(task.get("type", "")), int(task.get("index", 0))
        n = sum(len(cluster.get(k, [])) for k in ("chief", "worker"))
    except (ValueError, TypeError, AttributeError) as exc:
        raise InputError(f"TF_CONFIG: not a cluster description ({exc})") from None
    if not cluster:
        return WorkerTask("", 0, 1)
    if kind not in ("chief", "worker") or not 0 <= index < len(cluster.get(kind, [])):
        raise InputError(f"TF_CONFIG: task {kind!r} {index} is not in the cluster "
                         f"({', '.join(f'{k}: {len(v)}' for k, v in cluster.items())})")
    return WorkerTask(kind, index, n, bool(cluster.get("chief")))


def inputs_digest(fingerprint: str, settings: dict) -> str:
    """SHA-256 over the data fingerprint and the settings that shape training."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(f"{fingerprint}\0{text}".encode()).hexdigest()


def check_same_inputs(strategy, digest: str) -> None:
    """Raise InputError on every worker unless every worker holds the same ``digest``."""
    import tensorflow as tf

    mine = np.frombuffer(bytes.fromhex(digest), np.int32)[None, :]
    values = strategy.experimental_distribute_values_from_function(lambda ctx: tf.constant(mine))
    every = strategy.gather(values, axis=0).numpy()
    if not (every == mine).all():
        raise InputError(f"the {len(every)} workers do not train on the same data and settings "
                         f"(check --data and every option on each host)")


def barrier(strategy, ok: bool) -> bool:
    """Wait for every worker; True when every worker passed ``ok=True``."""
    import tensorflow as tf

    failed = strategy.reduce("SUM", tf.constant(0.0 if ok else 1.0), axis=None)
    return float(failed) == 0.0


def patch_keras() -> None:
    """Let Keras 3 ``Model.fit`` / ``evaluate`` run under a multi-worker strategy (see the
    module notes). Single-process strategies are left to Keras unchanged."""
    import tensorflow as tf
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer as tft

    if getattr(tft, "_alanet_multiworker", False):
        return
    try:
        multi_worker = tft._collective_all_reduce_multi_worker
        reduce_per_replica = tft.reduce_per_replica
        symbolic_build = tft.TensorFlowTrainer._maybe_symbolic_build
    except AttributeError as exc:
        import keras

        raise InputError(f"--distribute multiworker: Keras {keras.__version__} has changed the training internals "
                         f"this toolkit adapts ({exc}); it is tested with Keras 3.15 on TensorFlow 2.21") from None

    def reduce_logs(values, strategy, reduction):
        if reduction in ("auto", "mean") and multi_worker(strategy):
            return tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return reduce_per_replica(values, strategy, reduction)

    def build_from_local_batch(self, iterator=None, data_batch=None):
        strategy = self._distribute_strategy
        if iterator is None or strategy is None or not multi_worker(strategy):
            return symbolic_build(self, iterator=iterator, data_batch=data_batch)
        for _, _, it in iterator:
            batch = next(it)
            data_batch = tree.map_structure(
                lambda v: strategy.experimental_local_results(v)[0]
                if isinstance(v, tf.distribute.DistributedValues) else v, batch)
            break
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    tft.reduce_per_replica = reduce_logs
    tft.TensorFlowTrainer._maybe_symbolic_build = build_from_local_batch
    tft._alanet_multiworker = True
