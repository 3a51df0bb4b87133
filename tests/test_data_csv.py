"""Generic CSV datasets: any channels, string or int classes, dataset.json, windows, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from alanet.device.windowing import IGNORE, WindowSpec, segment_windows
from alanet.errors import InputError
from alanet.train.data.check import render_summary, summarize
from alanet.train.data.csv_generic import load_csv_dataset
from alanet.train.data.loading import load_dataset

CHANNELS = ["acc_x", "acc_y", "acc_z", "gyro_x", "emg_a", "emg_b"]
CLASSES = ["rest", "walk", "limp", "guard"]


def write_rec(path: Path, labels: list[str], seg: list[str] | None = None, offset: float = 0.0) -> np.ndarray:
    n = len(labels)
    x = offset + np.arange(n)[:, None] * 0.5 + np.arange(len(CHANNELS))[None, :]
    header = CHANNELS + ["label"] + (["rep"] if seg is not None else [])
    lines = [",".join(header)]
    for i in range(n):
        cells = [f"{v:g}" for v in x[i]] + [labels[i]] + ([seg[i]] if seg is not None else [])
        lines.append(",".join(cells))
    path.write_text("\n".join(lines) + "\n")
    return x


@pytest.fixture
def csv_dir(tmp_path):
    d = tmp_path / "mine"
    d.mkdir()
    # alice: 40 frames walk then 40 limp; bob: guard/rest mixed with unlabelled frames
    write_rec(d / "alice_s1.csv", ["walk"] * 40 + ["limp"] * 40, seg=["a"] * 40 + ["b"] * 40)
    write_rec(d / "alice_s2.csv", ["rest"] * 30, seg=["a"] * 30, offset=100)
    write_rec(d / "bob_x.csv", ["guard"] * 25 + [""] * 5 + ["rest"] * 20, seg=["a"] * 50, offset=200)
    (d / "dataset.json").write_text(json.dumps({
        "sample_rate_hz": 50, "label_names": CLASSES, "segment_column": "rep",
        "channel_groups": {"imu": ["acc_x", "acc_y", "acc_z", "gyro_x"], "emg": ["emg_a", "emg_b"]}}))
    return d


def test_generic_csv_loads(csv_dir):
    ds = load_csv_dataset(csv_dir)
    assert ds.format == "csv" and ds.participants == ["alice", "bob"]
    assert [r.name for r in ds.recordings] == ["alice_s1", "alice_s2", "bob_x"]
    assert ds.schema.names == CHANNELS and ds.schema.sample_rate_hz == 50
    assert ds.schema.groups == {"imu": [0, 1, 2, 3], "emg": [4, 5]}
    assert ds.label_names == {"label": CLASSES}
    a = ds.recordings[0]
    assert a.values.dtype == np.float32 and a.values.shape == (80, 6)
    assert a.values[3, 2] == pytest.approx(3 * 0.5 + 2)
    assert set(a.labels["label"][:40].tolist()) == {1} and set(a.labels["label"][40:].tolist()) == {2}
    assert a.segment.tolist() == [0] * 40 + [1] * 40
    b = ds.recordings[2].labels["label"]
    assert b[:25].tolist() == [3] * 25 and b[25:30].tolist() == [IGNORE] * 5 and b[30:].tolist() == [0] * 20
    assert load_dataset(csv_dir).format == "csv"
    text = render_summary(summarize(ds))
    assert "participants 2" in text and "guard 25" in text and "(unlabelled) 5" in text


def test_generic_csv_windows(csv_dir):
    ds = load_csv_dataset(csv_dir)
    spec = WindowSpec(length=20, stride=5)
    a = ds.recordings[0]
    w = segment_windows(a.values, a.labels["label"], spec, a.segment)
    assert w.x.shape[1:] == (20, 6) and w.mask.all()
    # no window straddles the walk/limp boundary (segment 'a' → 'b'), each is pure
    for s, y in zip(w.start, w.y):
        assert (s + 20 <= 40 and y == 1) or (s >= 40 and y == 2)
        np.testing.assert_array_equal(w.x[list(w.start).index(s)], a.values[s:s + 20])
    assert sorted(set(w.y.tolist())) == [1, 2]
    b = ds.recordings[2]
    wb = segment_windows(b.values, b.labels["label"], spec, b.segment)
    assert wb.y[0] == 3 and wb.y[-1] == 0


def test_defaults_without_dataset_json(tmp_path):
    write_rec(tmp_path / "p1_a.csv", ["b", "a", "c"] * 5)
    write_rec(tmp_path / "p2.csv", ["a"] * 10)
    ds = load_csv_dataset(tmp_path)
    assert ds.schema.sample_rate_hz == 60.0 and ds.label_names == {"label": ["a", "b", "c"]}
    assert ds.participants == ["p1", "p2"] and ds.recordings[0].segment is None
    assert len(ds.schema.groups) == 6  # each channel its own group


def test_integer_labels(tmp_path):
    write_rec(tmp_path / "s1_r.csv", ["0", "2", "-1", "3"] * 3)
    ds = load_csv_dataset(tmp_path)
    assert ds.label_names == {"label": ["0", "1", "2", "3"]}
    assert ds.recordings[0].labels["label"][:4].tolist() == [0, 2, IGNORE, 3]


def _mismatch(d: Path) -> str:
    write_rec(d / "a_1.csv", ["x"] * 5)
    (d / "b_1.csv").write_text("acc_x,label\n1,x\n")
    return "b_1.csv: header differs from a_1.csv"


def _no_label(d: Path) -> str:
    (d / "a_1.csv").write_text("acc_x,acc_y\n1,2\n")
    return "a_1.csv: no 'label' column"


def _text_cell(d: Path) -> str:
    write_rec(d / "a_1.csv", ["x"] * 5)
    lines = (d / "a_1.csv").read_text().splitlines()
    lines[3] = lines[3].replace("4", "four", 1)
    (d / "a_1.csv").write_text("\n".join(lines) + "\n")
    return "a_1.csv: row 4 column"


def _nan_cell(d: Path) -> str:
    (d / "a_1.csv").write_text("u,v,label\n1,2,x\n3,inf,x\n")
    return "a_1.csv: row 3 column 2 (v): infinite value"


def _unknown_label(d: Path) -> str:
    write_rec(d / "a_1.csv", ["rest", "rest", "jump"])
    (d / "dataset.json").write_text(json.dumps({"label_names": CLASSES}))
    return "a_1.csv: row 4 column 'label': unknown label 'jump'"


def _empty(d: Path) -> str:
    (d / "a_1.csv").write_text("acc_x,label\n")
    return "a_1.csv: empty file"


def _bad_json(d: Path) -> str:
    write_rec(d / "a_1.csv", ["x"] * 5)
    (d / "dataset.json").write_text('{"sample_rate_hz": -5}')
    return "dataset.json: sample_rate_hz must be a positive number"


def _bad_group(d: Path) -> str:
    write_rec(d / "a_1.csv", ["x"] * 5)
    (d / "dataset.json").write_text(json.dumps({"channel_groups": {"arm": ["nope"]}}))
    return "dataset.json: channel_groups names unknown channels: nope"


def _none(d: Path) -> str:
    (d / "a.json").write_text("{}")
    return "no recordings"


BAD = [_mismatch, _no_label, _text_cell, _nan_cell, _unknown_label, _empty, _bad_json, _bad_group, _none]


@pytest.mark.parametrize("make", BAD, ids=[f.__name__.strip("_") for f in BAD])
def test_bad_csv_input(tmp_path, make):
    expected = make(tmp_path)
    with pytest.raises(InputError) as exc:
        load_dataset(tmp_path, "csv")
    assert expected in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize("make", [_mismatch, _text_cell, _unknown_label], ids=lambda f: f.__name__.strip("_"))
def test_bad_csv_input_cli(tmp_path, cli, make):
    d = tmp_path / "d"
    d.mkdir()
    expected = make(d)
    before = sorted(tmp_path.rglob("*"))
    res = cli("data", "check", str(d), "--format", "csv")
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0]
    assert sorted(tmp_path.rglob("*")) == before
