"""EmoPain-format recordings: ``{C|P}{id}{N|D}.mat`` with variable ``BD`` (or the same 33 columns as CSV).

``BD`` is a T×33 matrix at 60 Hz (DESIGN.md):

====== =====================================================================
column meaning
====== =====================================================================
1–13   joint angles (rad), order of :data:`alanet.device.schema.EMOPAIN_ANGLES`
14–26  energies of those angles (rad²/s²)
27–30  sEMG envelopes (a.u.): upper left, upper right, lower left, lower right
31     exercise type: 0 other, 1 one-leg-stand, 2 reach-forward, 3 bend,
       4 sit-to-stand, 5 stand-to-sit, 6 sitting still, 7 standing still, 8 walking
32     pain level: 0 healthy, 1 low, 2 high, −1 not reported
33     protective behaviour: 0 no, 1 yes (per frame)
====== =====================================================================

The real data is under an academic-use licence and never ships with the toolkit;
:mod:`alanet.train.data.synthetic` writes files in exactly this format.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import numpy as np

from alanet.atomic import write_bytes
from alanet.device.schema import EMOPAIN
from alanet.device.windowing import IGNORE
from alanet.errors import InputError
from alanet.train.data.csv_generic import check_row_lengths, is_number, read_table, to_float
from alanet.train.data.recording import Dataset, Recording

BD_COLUMNS = 33
N_FEATURES = 30
COL_EXERCISE = 30  # 0-based column indices
COL_PAIN = 31
COL_PROTECTIVE = 32

EXERCISE_NAMES = ("other", "one-leg-stand", "reach-forward", "bend", "sit-to-stand", "stand-to-sit",
                  "sitting still", "standing still", "walking")
LABEL_NAMES: dict[str, list[str]] = {"protective": ["normal", "protective"], "pain": ["healthy", "low", "high"]}
_ALLOWED = {
    COL_EXERCISE: ("exercise type", set(range(len(EXERCISE_NAMES)))),
    COL_PAIN: ("pain level", {IGNORE, 0, 1, 2}),
    COL_PROTECTIVE: ("protective behaviour", {0, 1}),
}

# The EmoPain challenge split (10 patients + 6 controls train, 4 + 3 validation), over the
# participant ids the synthetic generator writes. Real EmoPain ids may differ: pass the
# test participants explicitly in that case.
CHALLENGE_TRAIN: tuple[str, ...] = tuple(f"P{i:02d}" for i in range(1, 11)) + tuple(f"C{i:02d}" for i in range(1, 7))
CHALLENGE_VALIDATION: tuple[str, ...] = tuple(f"P{i:02d}" for i in range(11, 15)) + tuple(f"C{i:02d}" for i in range(7, 10))

NAME_RE = re.compile(r"^([CP]\d+)([ND])$")


def parse_name(path: str | Path) -> tuple[str, str]:
    """``P12D.mat`` → ``("P12", "D")``: participant (prefix + id as written) and difficulty."""
    path = Path(path)
    m = NAME_RE.match(path.stem)
    if not m or path.suffix.lower() not in (".mat", ".csv"):
        raise InputError(f"{path}: not an EmoPain file name (expected {{C|P}}{{id}}{{N|D}}.mat, e.g. P01N.mat)")
    return m.group(1), m.group(2)


def is_emopain_name(path: str | Path) -> bool:
    path = Path(path)
    return bool(NAME_RE.match(path.stem)) and path.suffix.lower() in (".mat", ".csv")


def _read_mat(path: Path) -> np.ndarray:
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    try:
        mat = loadmat(str(path), variable_names=["BD"])
    except NotImplementedError:  # MATLAB v7.3 = HDF5
        return _read_mat73(path)
    except (MatReadError, ValueError, TypeError, OSError, EOFError, UnicodeDecodeError) as exc:
        if isinstance(exc, OSError) and not isinstance(exc, EOFError) and exc.errno is not None:
            raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
        raise InputError(f"{path}: not a MATLAB .mat file ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - scipy raises many types on garbage input
        raise InputError(f"{path}: not a MATLAB .mat file ({type(exc).__name__}: {exc})") from None
    if "BD" not in mat:
        raise InputError(f"{path}: no variable 'BD' in the .mat file")
    return _as_matrix(path, mat["BD"])


def _read_mat73(path: Path) -> np.ndarray:
    try:
        import h5py
    except ImportError:
        raise InputError(f"{path}: MATLAB v7.3 (HDF5) file; install h5py or re-save it with -v7") from None
    try:
        with h5py.File(path, "r") as f:
            if "BD" not in f:
                raise InputError(f"{path}: no variable 'BD' in the .mat file")
            bd = np.asarray(f["BD"]).T  # HDF5 stores MATLAB arrays column-major
    except OSError as exc:
        raise InputError(f"{path}: not a readable MATLAB v7.3 file ({exc})") from None
    return _as_matrix(path, bd)


def _as_matrix(path: Path, bd: object) -> np.ndarray:
    arr = np.asarray(bd)
    if arr.dtype.kind not in "biuf":
        raise InputError(f"{path}: variable BD is not a numeric matrix (type {arr.dtype})")
    if arr.size == 0:
        raise InputError(f"{path}: empty recording (BD has no rows)")
    if arr.ndim != 2:
        raise InputError(f"{path}: variable BD must be a 2-D matrix, got shape {arr.shape}")
    if arr.shape[1] != BD_COLUMNS:
        hint = " (transposed?)" if arr.shape[0] == BD_COLUMNS else ""
        raise InputError(f"{path}: BD has {arr.shape[1]} columns, expected {BD_COLUMNS}{hint}")
    return arr.astype(np.float64)


def _read_csv(path: Path) -> np.ndarray:
    rows = read_table(path)
    if not rows:
        raise InputError(f"{path}: empty file")
    first = 1
    if not any(is_number(c) for c in rows[0]):  # a header row
        if len(rows[0]) != BD_COLUMNS:
            raise InputError(f"{path}: header has {len(rows[0])} columns, expected {BD_COLUMNS}")
        rows, first = rows[1:], 2
        if not rows:
            raise InputError(f"{path}: empty file (header only)")
    if len(rows[0]) != BD_COLUMNS:
        raise InputError(f"{path}: row {first} has {len(rows[0])} columns, expected {BD_COLUMNS}")
    check_row_lengths(path, rows, BD_COLUMNS, first)
    return to_float(path, rows, list(range(BD_COLUMNS)), first)


def read_bd(path: str | Path) -> np.ndarray:
    """The validated T×33 float64 matrix of one .mat or .csv file.

    Checks shape, finiteness (first bad row/column named, 1-based) and that the label
    columns hold only allowed values.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".mat":
        bd = _read_mat(path)
    elif suffix == ".csv":
        bd = _read_csv(path)
    else:
        raise InputError(f"{path}: not a .mat or .csv file")
    bad = ~np.isfinite(bd)
    if bad.any():
        r, c = (int(v) for v in np.argwhere(bad)[0])
        what = "NaN" if np.isnan(bd[r, c]) else "infinite value"
        raise InputError(f"{path}: row {r + 1} column {c + 1}: {what}")
    for col, (what, allowed) in _ALLOWED.items():
        v = bd[:, col]
        ok = np.isin(v, sorted(allowed))
        if not ok.all():
            r = int(np.flatnonzero(~ok)[0])
            raise InputError(f"{path}: row {r + 1} column {col + 1}: unknown label {v[r]:g} for {what} "
                             f"(allowed: {', '.join(str(a) for a in sorted(allowed))})")
    return bd


def exercise_instances(exercise: np.ndarray) -> np.ndarray:
    """Per-frame exercise-instance id: each consecutive run of one exercise type gets its own int."""
    ex = np.asarray(exercise)
    if ex.size == 0:
        return np.zeros(0, np.int64)
    return np.concatenate([[0], np.cumsum(ex[1:] != ex[:-1])]).astype(np.int64)


def recording_from_bd(bd: np.ndarray, participant: str, name: str, path: str | None = None) -> Recording:
    """Wrap a validated T×33 matrix as a :class:`Recording` with schema EMOPAIN."""
    exercise = bd[:, COL_EXERCISE].astype(np.int64)
    labels = {
        "protective": bd[:, COL_PROTECTIVE].astype(np.int64),
        "pain": bd[:, COL_PAIN].astype(np.int64),
        "exercise": exercise,
    }
    return Recording(participant, name, np.ascontiguousarray(bd[:, :N_FEATURES], dtype=np.float32), EMOPAIN,
                     labels, exercise_instances(exercise), path)


def load_recording(path: str | Path) -> Recording:
    """Load one EmoPain ``.mat`` (variable ``BD``) or 33-column ``.csv`` file."""
    path = Path(path)
    participant, _ = parse_name(path)
    return recording_from_bd(read_bd(path), participant, path.stem, str(path))


def emopain_files(root: Path) -> list[Path]:
    """Recording files of an EmoPain folder: every ``*.mat`` plus EmoPain-named ``*.csv``, sorted."""
    out = []
    for p in sorted(root.iterdir()):
        if p.name.startswith(".") or not p.is_file():
            continue
        if p.suffix.lower() == ".mat" or (p.suffix.lower() == ".csv" and is_emopain_name(p)):
            out.append(p)
    return out


def load_emopain(root: str | Path) -> Dataset:
    """Load every EmoPain recording in a folder (sorted by file name)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder")
    files = emopain_files(root)
    if not files:
        raise InputError(f"{root}: no recordings (no {{C|P}}{{id}}{{N|D}}.mat or .csv files)")
    for p in files:
        parse_name(p)  # bad names fail before any file is read
    recs = tuple(load_recording(p) for p in files)
    return Dataset(recs, EMOPAIN, {k: list(v) for k, v in LABEL_NAMES.items()}, "emopain", str(root))


def write_bd(path: str | Path, bd: np.ndarray, dtype: type = np.float64) -> None:
    """Write ``bd`` (T×33) as a MATLAB v5 .mat file with variable ``BD``, atomically.

    ``dtype`` float64 (MATLAB double, as EmoPain ships) or float32 (single: half the
    size, lossless for float32 data such as the synthetic sessions).
    """
    from scipy.io import savemat

    bd = np.asarray(bd, dtype=dtype)
    if bd.ndim != 2 or bd.shape[1] != BD_COLUMNS:
        raise ValueError(f"BD must be [T, {BD_COLUMNS}], got shape {bd.shape}")
    buf = io.BytesIO()
    savemat(buf, {"BD": bd}, do_compression=True)
    write_bytes(path, buf.getvalue())
    os.chmod(path, 0o666 & ~current_umask())  # temp files are private; a dataset file is not


def current_umask() -> int:
    """The process umask (set and restored at once: os has no read-only call)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def challenge_split(dataset: Dataset) -> tuple[list[str], list[str]]:
    """(train ids, validation ids) of the challenge split among the dataset's participants.

    Raises InputError when the dataset holds none of the listed training or validation
    participants (real EmoPain ids may differ from the synthetic ones: then pass the test
    participants explicitly).
    """
    have = set(dataset.participants)
    train = [p for p in CHALLENGE_TRAIN if p in have]
    test = [p for p in CHALLENGE_VALIDATION if p in have]
    if not train or not test:
        side = "training" if not train else "validation"
        raise InputError(f"{dataset.root or 'dataset'}: none of the challenge {side} participants "
                         f"({', '.join(CHALLENGE_TRAIN if not train else CHALLENGE_VALIDATION)}) is in the "
                         f"dataset (has {', '.join(sorted(have)) or 'none'}); pass --test-participants")
    return train, test
