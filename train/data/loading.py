"""Load any supported dataset from a folder (or one file), detecting its format."""

from __future__ import annotations

from pathlib import Path

from alanet.errors import InputError
from alanet.train.data.csv_generic import csv_files, load_csv_dataset
from alanet.train.data.emopain import LABEL_NAMES, emopain_files, is_emopain_name, load_emopain, load_recording
from alanet.train.data.recording import Dataset

FORMATS = ("emopain", "csv")


def detect_format(root: Path) -> str:
    """``emopain`` when the folder holds any ``*.mat`` or EmoPain-named ``*.csv``; else ``csv``."""
    if emopain_files(root):
        return "emopain"
    if csv_files(root):
        return "csv"
    raise InputError(f"{root}: no recordings (no .mat or .csv files)")


def load_dataset(path: str | Path, fmt: str | None = None) -> Dataset:
    """Load a dataset folder in format ``fmt`` (``emopain`` | ``csv``; ``None`` = detect).

    A single EmoPain file (``P01N.mat``) is accepted too and gives a one-recording dataset.
    """
    path = Path(path)
    if fmt is not None and fmt not in FORMATS:
        raise InputError(f"unknown dataset format {fmt!r} (choose {', '.join(FORMATS)})")
    if path.is_file():
        if fmt == "csv" or not is_emopain_name(path):
            if path.suffix.lower() not in (".mat", ".csv"):
                raise InputError(f"{path}: not a .mat or .csv file")
            raise InputError(f"{path}: a single file must be an EmoPain recording ({{C|P}}{{id}}{{N|D}}.mat); "
                             f"pass the folder for a generic CSV dataset")
        from alanet.device.schema import EMOPAIN

        rec = load_recording(path)
        return Dataset((rec,), EMOPAIN, {k: list(v) for k, v in LABEL_NAMES.items()}, "emopain", str(path.parent))
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if not path.is_dir():
        raise InputError(f"{path}: not a folder")
    fmt = fmt or detect_format(path)
    return load_emopain(path) if fmt == "emopain" else load_csv_dataset(path)
