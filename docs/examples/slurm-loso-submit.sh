#!/bin/bash
# Submit a leave-one-subject-out experiment to Slurm: a job array with one task per
# fold plus one for the final model (slurm-loso.sbatch), and `alanet merge`, which runs
# when every task has succeeded. Example:
#
#   DATA=/shared/emopain RUNS=/shared/runs/pain-alanet TRAIN_ARGS="--task pain --model alanet" \
#       bash docs/examples/slurm-loso-submit.sh
#
# IDS (participant ids, space-separated) defaults to every participant of $DATA.
# Extra arguments go to sbatch for the array job (e.g. --partition=gpu --account=...).
set -euo pipefail
: "${DATA:?set DATA to the dataset folder}" "${RUNS:?set RUNS to the run directory to create}"
: "${TRAIN_ARGS:?set TRAIN_ARGS, e.g. --task pain --model alanet}"
here=$(cd "$(dirname "$0")" && pwd)
IDS=${IDS:-$(alanet data check "$DATA" | sed -n 's/^participants *[0-9]*: //p' | tr -d ',')}
n=$(wc -w <<< "$IDS")
[ "$n" -ge 3 ] || { echo "need at least 3 participants, got: $IDS" >&2; exit 2; }
export DATA RUNS IDS TRAIN_ARGS
mkdir -p logs "$RUNS.parts"
# Tasks 0..n-1 are the folds, task n the final model; at most 8 run at once.
array=$(sbatch --parsable --array="0-$n%8" "$@" "$here/slurm-loso.sbatch")
merge=$(sbatch --parsable --dependency="afterok:${array%%;*}" --job-name=alanet-merge --output=logs/%x-%j.out \
    --wrap="alanet merge '$RUNS.parts'/* --out '$RUNS'")
echo "array job $array ($((n + 1)) tasks), merge job $merge → $RUNS"
