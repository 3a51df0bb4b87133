"""One worker of a multi-worker training test: ``python multiworker_support.py WEIGHTS alanet-train-args...``.

Runs the real ``alanet train`` command line (TF_CONFIG comes from the environment) and,
when training has finished, saves to WEIGHTS (.npz) the weights this worker ended with
(``w0``, ``w1``, ...), the number of replicas its model trained on (``replicas``) and
whether deterministic ops were on (``deterministic``), so a test can compare every
worker's model, not only the one the chief writes.
"""

from __future__ import annotations

import sys

import numpy as np


def main(argv: list[str]) -> int:
    dump, args = argv[0], argv[1:]
    import alanet.train.commands as commands
    from alanet.main import main as alanet

    train_run = commands.train_run

    def observed(cfg, dataset, out, force=False):
        from tensorflow.python.framework import config as tf_config  # no public getter

        result = train_run(cfg, dataset, out, force=force)
        model = result.final.model
        weights = {f"w{i}": w for i, w in enumerate(model.get_weights())}
        np.savez(dump, **weights, replicas=model.distribute_strategy.num_replicas_in_sync,
                 deterministic=tf_config.is_op_determinism_enabled())
        return result

    commands.train_run = observed
    return alanet(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
