"""EmoPain-format loader: names, columns, labels, segments, challenge split, and every bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.io import savemat

from alanet.device.schema import EMOPAIN
from alanet.errors import InputError
from alanet.train.data.emopain import (BD_COLUMNS, CHALLENGE_TRAIN, CHALLENGE_VALIDATION, challenge_split, load_emopain,
                                       load_recording, parse_name, write_bd)
from alanet.train.data.loading import load_dataset
from alanet.train.data.recording import Dataset, Recording


def make_bd(n: int = 12, pain: int = 1) -> np.ndarray:
    """A small valid BD: features = row + column/100, exercise 1,1,1,0,0,2,2,... protective alternating."""
    bd = np.zeros((n, BD_COLUMNS))
    bd[:, :30] = np.arange(n)[:, None] + np.arange(30)[None, :] / 100
    ex = np.array([1, 1, 1, 0, 0, 2, 2, 2, 1, 1, 1, 1] * (n // 12 + 1))[:n]
    bd[:, 30] = ex
    bd[:, 31] = pain
    bd[:, 32] = np.arange(n) % 3 == 0
    return bd


def write_csv(path: Path, bd: np.ndarray, header: bool) -> None:
    lines = []
    if header:
        lines.append(",".join(f"c{i + 1}" for i in range(BD_COLUMNS)))
    lines += [",".join(f"{v:.10g}" for v in row) for row in bd]
    path.write_text("\n".join(lines) + "\n")


def test_parse_name():
    assert parse_name("data/P12N.mat") == ("P12", "N")
    assert parse_name("C3D.csv") == ("C3", "D")
    assert parse_name(Path("/x/P01D.mat")) == ("P01", "D")
    for bad in ("X01N.mat", "P01.mat", "P01N.txt", "P1xN.mat", "p01n.mat"):
        with pytest.raises(InputError, match=bad.replace(".", r"\.")):
            parse_name(bad)


def test_mat_recording_columns_labels_segments(tmp_path):
    bd = make_bd(12, pain=-1)
    write_bd(tmp_path / "P07D.mat", bd)
    rec = load_recording(tmp_path / "P07D.mat")
    assert rec.participant == "P07" and rec.name == "P07D"
    assert rec.values.dtype == np.float32 and rec.values.shape == (12, 30)
    assert rec.schema == EMOPAIN
    np.testing.assert_array_equal(rec.values, bd[:, :30].astype(np.float32))
    assert rec.labels["pain"].tolist() == [-1] * 12  # not reported stays IGNORE
    assert rec.labels["protective"].tolist() == [1, 0, 0] * 4
    assert rec.labels["exercise"].tolist() == [1, 1, 1, 0, 0, 2, 2, 2, 1, 1, 1, 1]
    # Each run of an exercise type is its own instance: the two runs of type 1 differ.
    assert rec.segment.tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 3, 3, 3, 3]


@pytest.mark.parametrize("header", [True, False])
def test_csv_recording_equals_mat(tmp_path, header):
    bd = make_bd(24)
    write_bd(tmp_path / "C2N.mat", bd)
    write_csv(tmp_path / "C2N.csv", bd, header)
    a = load_recording(tmp_path / "C2N.mat")
    b = load_recording(tmp_path / "C2N.csv")
    np.testing.assert_allclose(a.values, b.values, rtol=1e-6)
    for k in ("pain", "protective", "exercise"):
        assert a.labels[k].tolist() == b.labels[k].tolist()
    assert a.segment.tolist() == b.segment.tolist()


def test_load_folder_sorted_with_label_names(tmp_path):
    for name in ("P02N", "C01D", "P01N", "P01D"):
        write_bd(tmp_path / f"{name}.mat", make_bd(12))
    (tmp_path / "notes.txt").write_text("ignored")
    ds = load_emopain(tmp_path)
    assert [r.name for r in ds.recordings] == ["C01D", "P01D", "P01N", "P02N"]
    assert ds.participants == ["C01", "P01", "P02"]
    assert ds.label_names == {"protective": ["normal", "protective"], "pain": ["healthy", "low", "high"]}
    assert ds.format == "emopain"
    assert load_dataset(tmp_path).format == "emopain"  # any .mat → emopain
    single = load_dataset(tmp_path / "P02N.mat")
    assert [r.name for r in single.recordings] == ["P02N"]


def _dataset(ids):
    recs = tuple(Recording(p, p + "N", np.zeros((3, 30), np.float32), EMOPAIN) for p in ids)
    return Dataset(recs, EMOPAIN, {}, "emopain", "root")


def test_challenge_split():
    assert len(CHALLENGE_TRAIN) == 16 and len(CHALLENGE_VALIDATION) == 7
    assert sum(p.startswith("P") for p in CHALLENGE_TRAIN) == 10
    assert sum(p.startswith("P") for p in CHALLENGE_VALIDATION) == 4
    assert not set(CHALLENGE_TRAIN) & set(CHALLENGE_VALIDATION)
    train, test = challenge_split(_dataset([f"P{i:02d}" for i in range(1, 15)] + [f"C{i:02d}" for i in range(1, 10)]))
    assert train == list(CHALLENGE_TRAIN) and test == list(CHALLENGE_VALIDATION)
    train, test = challenge_split(_dataset(["P01", "P12", "C08", "X9"]))
    assert (train, test) == (["P01"], ["P12", "C08"])
    with pytest.raises(InputError, match="--test-participants"):
        challenge_split(_dataset(["P1", "C1"]))  # real ids unlike ours
    with pytest.raises(InputError, match="validation"):
        challenge_split(_dataset(["P01", "C01"]))


# ---- bad input: one line naming the file (and row/column), exit 2, nothing written

def _bad_mat_text(d: Path) -> str:
    (d / "P01N.mat").write_text("this is not a MATLAB file\n")
    return "P01N.mat: not a MATLAB .mat file"


def _missing_bd(d: Path) -> str:
    savemat(d / "P01N.mat", {"X": make_bd()})
    return "P01N.mat: no variable 'BD'"


def _wrong_columns(d: Path) -> str:
    savemat(d / "P01N.mat", {"BD": make_bd()[:, :32]})
    return "P01N.mat: BD has 32 columns, expected 33"


def _nan(d: Path) -> str:
    bd = make_bd()
    bd[4, 2] = np.nan
    write_bd(d / "P01N.mat", bd)
    return "P01N.mat: row 5 column 3: NaN"


def _inf(d: Path) -> str:
    bd = make_bd()
    bd[10, 28] = np.inf
    write_bd(d / "P01D.mat", bd)
    return "P01D.mat: row 11 column 29: infinite value"


def _csv_text_cell(d: Path) -> str:
    write_csv(d / "C04N.csv", make_bd(), header=True)
    lines = (d / "C04N.csv").read_text().splitlines()
    cells = lines[3].split(",")
    cells[6] = "abc"
    lines[3] = ",".join(cells)
    (d / "C04N.csv").write_text("\n".join(lines) + "\n")
    return "C04N.csv: row 4 column 7: not a number: 'abc'"


def _csv_nan(d: Path) -> str:
    write_csv(d / "C04N.csv", make_bd(), header=False)
    lines = (d / "C04N.csv").read_text().splitlines()
    cells = lines[1].split(",")
    cells[0] = "nan"
    lines[1] = ",".join(cells)
    (d / "C04N.csv").write_text("\n".join(lines) + "\n")
    return "C04N.csv: row 2 column 1: NaN"


def _csv_ragged(d: Path) -> str:
    write_csv(d / "C04N.csv", make_bd(), header=False)
    lines = (d / "C04N.csv").read_text().splitlines()
    lines[5] = lines[5].rsplit(",", 1)[0]
    (d / "C04N.csv").write_text("\n".join(lines) + "\n")
    return "C04N.csv: row 6 has 32 columns, expected 33"


def _empty_csv(d: Path) -> str:
    (d / "P03N.csv").write_text("")
    return "P03N.csv: empty file"


def _empty_mat(d: Path) -> str:
    savemat(d / "P03N.mat", {"BD": np.zeros((0, 33))})
    return "P03N.mat: empty recording"


def _unknown_protective(d: Path) -> str:
    bd = make_bd()
    bd[7, 32] = 2
    write_bd(d / "P01N.mat", bd)
    return "P01N.mat: row 8 column 33: unknown label 2 for protective behaviour"


def _unknown_pain(d: Path) -> str:
    bd = make_bd()
    bd[0, 31] = 3
    write_bd(d / "P01N.mat", bd)
    return "P01N.mat: row 1 column 32: unknown label 3 for pain level"


def _unknown_exercise(d: Path) -> str:
    bd = make_bd()
    bd[2, 30] = 1.5
    write_bd(d / "P01N.mat", bd)
    return "P01N.mat: row 3 column 31: unknown label 1.5 for exercise type"


def _bad_name(d: Path) -> str:
    write_bd(d / "P01N.mat", make_bd())
    write_bd(d / "patient1.mat", make_bd())
    return "patient1.mat: not an EmoPain file name"


def _no_recordings(d: Path) -> str:
    (d / "readme.txt").write_text("nothing here")
    return "no recordings"


BAD = [_bad_mat_text, _missing_bd, _wrong_columns, _nan, _inf, _csv_text_cell, _csv_nan, _csv_ragged, _empty_csv,
       _empty_mat, _unknown_protective, _unknown_pain, _unknown_exercise, _bad_name, _no_recordings]


@pytest.mark.parametrize("make", BAD, ids=[f.__name__.strip("_") for f in BAD])
def test_bad_input_loader_message(tmp_path, make):
    expected = make(tmp_path)
    with pytest.raises(InputError) as exc:
        load_dataset(tmp_path, "emopain")
    msg = str(exc.value)
    assert expected in msg and "\n" not in msg


@pytest.mark.parametrize("make", [_bad_mat_text, _missing_bd, _wrong_columns, _nan, _csv_text_cell, _empty_csv,
                                  _unknown_protective, _no_recordings],
                         ids=lambda f: f.__name__.strip("_"))
def test_bad_input_cli_exit_2_nothing_written(tmp_path, cli, make):
    data = tmp_path / "data"
    data.mkdir()
    expected = make(data)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    res = cli("data", "check", str(data))
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("alanet data: error: ") and expected in lines[0]
    assert res.stdout == ""
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_not_a_mat_or_csv_file(tmp_path, cli):
    f = tmp_path / "P01N.txt"
    f.write_text("1,2,3\n")
    res = cli("data", "check", str(f))
    assert res.returncode == 2 and "P01N.txt: not a .mat or .csv file" in res.stderr
