"""``alanet data synth|check`` (argparse only)."""

from __future__ import annotations

import argparse

from alanet.main import lazy


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``alanet data`` to the parser."""
    p = sub.add_parser("data", help="create synthetic data, validate and summarise datasets",
                       description="Datasets: EmoPain-format .mat/.csv folders, generic CSV folders, "
                       "synthetic EmoPain-format sessions.")
    dsub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    dsub.required = True

    s = dsub.add_parser("synth", help="write a SYNTHETIC EmoPain-format dataset (.mat files)",
                        description="Write SYNTHETIC rehab sessions as {P|C}{id}{N|D}.mat files (variable BD, "
                        "T x 33 at 60 Hz), both difficulties per participant. Synthetic data: it exists so "
                        "everything runs without the licensed EmoPain recordings. Deterministic per seed.")
    s.add_argument("--out", required=True, metavar="DIR", help="output folder (must not exist or be empty)")
    s.add_argument("--patients", type=int, default=14, metavar="N", help="number of patients (default 14)")
    s.add_argument("--controls", type=int, default=9, metavar="N", help="number of healthy controls (default 9)")
    s.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    s.add_argument("--duration", type=float, default=120.0, metavar="SECONDS",
                   help="length of each session in seconds (default 120)")
    s.add_argument("--force", action="store_true", help="replace DIR if it exists and is not empty")
    s.set_defaults(func=lazy("alanet.train.data.synthetic:cmd_synth"))

    c = dsub.add_parser("check", help="validate a dataset and print a summary",
                        description="Load every recording (checking shape, numbers and labels) and print "
                        "participants, recordings, frames, duration, class balance and channels.")
    c.add_argument("path", metavar="DIR", help="dataset folder (or a single EmoPain .mat/.csv file)")
    c.add_argument("--format", choices=["emopain", "csv"], default=None,
                   help="dataset format (default: detect; any .mat file means emopain)")
    c.set_defaults(func=lazy("alanet.train.data.check:cmd_check"))
