"""Generic CSV datasets: a folder of recordings in the user's own channel layout.

Layout (documented in docs/data.md)::

    my_data/
      dataset.json          optional: sample_rate_hz, label_names, channel_groups, segment_column
      alice_walk1.csv       participant "alice", recording "alice_walk1"
      alice_walk2.csv
      bob_session.csv       participant "bob"

Each CSV has a header row, one numeric column per channel and a ``label`` column
(per-frame class: an integer index or a string name; an empty cell or ``-1`` means
unlabelled). Every file must have the same channels in the same order.

The table reader here (:func:`read_table`, :func:`to_float`) is shared with the
EmoPain CSV loader, so both report bad cells as ``file: row R column C: ...`` where
R is the line number in the file (the header is line 1) and C counts from 1.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from alanet.device.schema import generic_schema
from alanet.device.windowing import IGNORE
from alanet.errors import InputError
from alanet.train.data.recording import Dataset, Recording

LABEL_COLUMN = "label"
DEFAULT_SAMPLE_RATE_HZ = 60.0
META_FILE = "dataset.json"


def read_table(path: Path) -> list[list[str]]:
    """All rows of a CSV file as lists of stripped strings (blank lines dropped)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [[c.strip() for c in row] for row in csv.reader(f)]
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a text CSV file (cannot decode as UTF-8)") from None
    except csv.Error as exc:
        raise InputError(f"{path}: malformed CSV: {exc}") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return [r for r in rows if any(r)]


def is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def to_float(path: Path, rows: Sequence[Sequence[str]], columns: Sequence[int], first_line: int,
             names: Sequence[str] | None = None) -> np.ndarray:
    """Cells ``rows[i][columns[j]]`` → float64 [N, len(columns)], checked finite.

    ``first_line`` is the file line number of ``rows[0]`` (for messages). Errors name
    the file, the line and the 1-based column (and its header name when known).
    """
    def where(i: int, j: int) -> str:
        col = columns[j]
        name = f" ({names[col]})" if names is not None and col < len(names) else ""
        return f"{path}: row {first_line + i} column {col + 1}{name}"

    cells = [[row[c] for c in columns] for row in rows]
    try:
        out = np.asarray(cells, dtype=np.str_).astype(np.float64)
    except ValueError:
        for i, row in enumerate(cells):
            for j, cell in enumerate(row):
                if not is_number(cell):
                    shown = cell if len(cell) <= 30 else cell[:27] + "..."
                    raise InputError(f"{where(i, j)}: not a number: {shown!r}") from None
        raise InputError(f"{path}: non-numeric cells") from None
    bad = ~np.isfinite(out)
    if bad.any():
        i, j = (int(v) for v in np.argwhere(bad)[0])
        raise InputError(f"{where(i, j)}: {'NaN' if math.isnan(out[i, j]) else 'infinite value'}")
    return out


def check_row_lengths(path: Path, rows: Sequence[Sequence[str]], n: int, first_line: int) -> None:
    for i, row in enumerate(rows):
        if len(row) != n:
            raise InputError(f"{path}: row {first_line + i} has {len(row)} columns, expected {n}")


def participant_of(path: Path) -> str:
    """Participant id = file name up to the first ``_`` (the whole stem if there is none)."""
    return path.stem.split("_", 1)[0]


def _read_meta(root: Path) -> dict[str, Any]:
    meta_path = root / META_FILE
    if not meta_path.exists():
        return {}
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{meta_path}: not valid JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise InputError(f"{meta_path}: must be a JSON object")
    fs = meta.get("sample_rate_hz", DEFAULT_SAMPLE_RATE_HZ)
    if isinstance(fs, bool) or not isinstance(fs, (int, float)) or not fs > 0 or not math.isfinite(fs):
        raise InputError(f"{meta_path}: sample_rate_hz must be a positive number, got {fs!r}")
    names = meta.get("label_names")
    if names is not None and (not isinstance(names, list) or not names
                              or not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names)):
        raise InputError(f"{meta_path}: label_names must be a non-empty list of distinct strings")
    groups = meta.get("channel_groups")
    if groups is not None and (not isinstance(groups, dict) or not all(
            isinstance(v, list) and all(isinstance(c, str) for c in v) for v in groups.values())):
        raise InputError(f"{meta_path}: channel_groups must map a group name to a list of channel names")
    seg = meta.get("segment_column")
    if seg is not None and (not isinstance(seg, str) or not seg):
        raise InputError(f"{meta_path}: segment_column must be a column name")
    unknown = sorted(set(meta) - {"sample_rate_hz", "label_names", "channel_groups", "segment_column", "description"})
    if unknown:
        raise InputError(f"{meta_path}: unknown key(s): {', '.join(unknown)}")
    return {"sample_rate_hz": float(fs), "label_names": names, "channel_groups": groups, "segment_column": seg}


def csv_files(root: Path) -> list[Path]:
    """The recording files of a generic CSV folder, sorted (hidden files skipped)."""
    return sorted(p for p in root.glob("*.csv") if p.is_file() and not p.name.startswith("."))


def load_csv_dataset(root: str | Path) -> Dataset:
    """Load a folder of generic CSV recordings (see the module docstring)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder")
    meta = _read_meta(root)
    files = csv_files(root)
    if not files:
        raise InputError(f"{root}: no recordings (no .csv files)")
    fs = meta.get("sample_rate_hz", DEFAULT_SAMPLE_RATE_HZ)
    seg_col = meta.get("segment_column")
    header0: list[str] | None = None
    raw: list[tuple[Path, np.ndarray, list[str], np.ndarray | None]] = []
    for path in files:
        rows = read_table(path)
        if len(rows) < 2:
            raise InputError(f"{path}: empty file (need a header row and at least one data row)")
        header = rows[0]
        if LABEL_COLUMN not in header:
            raise InputError(f"{path}: no '{LABEL_COLUMN}' column in the header")
        if len(set(header)) != len(header) or "" in header:
            raise InputError(f"{path}: header has empty or duplicate column names")
        if seg_col is not None and seg_col not in header:
            raise InputError(f"{path}: segment_column '{seg_col}' (from {META_FILE}) is not in the header")
        if header0 is None:
            header0 = header
        elif header != header0:
            raise InputError(f"{path}: header differs from {files[0].name} "
                             f"(every file needs the same columns in the same order)")
        check_row_lengths(path, rows[1:], len(header), 2)
        ch_cols = [i for i, h in enumerate(header) if h not in (LABEL_COLUMN, seg_col)]
        if not ch_cols:
            raise InputError(f"{path}: no channel columns besides '{LABEL_COLUMN}'")
        values = to_float(path, rows[1:], ch_cols, 2, header)
        li = header.index(LABEL_COLUMN)
        labels = [r[li] for r in rows[1:]]
        seg = None
        if seg_col is not None:
            si = header.index(seg_col)
            seg_raw = [r[si] for r in rows[1:]]
            _, seg = np.unique(np.asarray(seg_raw, dtype=np.str_), return_inverse=True)
            seg = _instances(seg)
        raw.append((path, values, labels, seg))
    assert header0 is not None
    channels = [h for h in header0 if h not in (LABEL_COLUMN, seg_col)]
    try:
        schema = generic_schema(channels, fs, meta.get("channel_groups"))
    except ValueError as exc:
        raise InputError(f"{root / META_FILE}: {exc}") from None
    names = meta.get("label_names") or _infer_label_names([lab for _, _, lab, _ in raw])
    recordings = []
    for path, values, labels, seg in raw:
        y = _encode_labels(path, labels, names)
        recordings.append(Recording(participant_of(path), path.stem, values.astype(np.float32), schema,
                                    {LABEL_COLUMN: y}, seg, str(path)))
    return Dataset(tuple(recordings), schema, {LABEL_COLUMN: list(names)}, "csv", str(root))


def _instances(key: np.ndarray) -> np.ndarray:
    """Consecutive runs of equal ``key`` → distinct instance ids 0, 1, 2, ..."""
    key = np.asarray(key)
    if key.size == 0:
        return np.zeros(0, np.int64)
    return np.concatenate([[0], np.cumsum(key[1:] != key[:-1])]).astype(np.int64)


def _is_int(cell: str) -> bool:
    try:
        int(cell)
    except ValueError:
        return False
    return True


def _infer_label_names(all_labels: list[list[str]]) -> list[str]:
    cells = {c for labels in all_labels for c in labels if c != "" and c != str(IGNORE)}
    if not cells:
        return []
    if all(_is_int(c) for c in cells):
        top = max(int(c) for c in cells)
        return [str(i) for i in range(top + 1)]
    return sorted(cells)


def _encode_labels(path: Path, labels: list[str], names: Sequence[str]) -> np.ndarray:
    """Label cells → class indices into ``names`` (int cells are indices, strings names)."""
    index = {n: i for i, n in enumerate(names)}
    out = np.empty(len(labels), np.int64)
    for i, cell in enumerate(labels):
        if cell == "" or cell == str(IGNORE):
            out[i] = IGNORE
        elif cell in index:
            out[i] = index[cell]
        elif _is_int(cell) and 0 <= int(cell) < len(names):
            out[i] = int(cell)
        else:
            raise InputError(f"{path}: row {i + 2} column '{LABEL_COLUMN}': unknown label {cell!r} "
                             f"(classes: {', '.join(names) if names else 'none'})")
    return out
