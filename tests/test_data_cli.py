"""``alanet data synth`` and ``alanet data check`` end to end."""

from __future__ import annotations

import numpy as np

from alanet.device.features import energy_from_angles
from alanet.train.data.emopain import load_emopain


def test_synth_then_check(tmp_path, cli):
    out = tmp_path / "synth"
    res = cli("data", "synth", "--out", str(out), "--patients", "2", "--controls", "1", "--seed", "3",
              "--duration", "30")
    assert res.returncode == 0, res.stderr
    assert "wrote 6 synthetic" in res.stdout
    assert sorted(p.name for p in out.iterdir()) == ["C01D.mat", "C01N.mat", "P01D.mat", "P01N.mat", "P02D.mat",
                                                     "P02N.mat"]
    assert [p.name for p in tmp_path.iterdir()] == ["synth"]  # no staging leftovers
    chk = cli("data", "check", str(out))
    assert chk.returncode == 0, chk.stderr
    assert "participants 3: C01, P01, P02" in chk.stdout
    assert "recordings   6" in chk.stdout and "frames       10800" in chk.stdout
    assert "task protective" in chk.stdout and "task pain" in chk.stdout
    assert "channels     30 in 14 groups" in chk.stdout
    for r in load_emopain(out).recordings:
        np.testing.assert_array_equal(r.values[:, 13:26], energy_from_angles(r.values[:, :13], 60.0))


def test_synth_refuses_non_empty_dir_without_force(tmp_path, cli):
    out = tmp_path / "d"
    out.mkdir()
    (out / "precious.txt").write_text("keep")
    res = cli("data", "synth", "--out", str(out), "--patients", "1", "--controls", "0", "--duration", "5")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        f"alanet data: error: {out}: folder exists and is not empty (use --force to replace it)"]
    assert [p.name for p in out.iterdir()] == ["precious.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]
    res = cli("data", "synth", "--out", str(out), "--patients", "1", "--controls", "0", "--duration", "5", "--force")
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in out.iterdir()) == ["P01D.mat", "P01N.mat"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_synth_into_empty_existing_dir(tmp_path, cli):
    res = cli("data", "synth", "--out", str(tmp_path), "--patients", "0", "--controls", "1", "--duration", "5")
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["C01D.mat", "C01N.mat"]


def test_synth_bad_arguments_exit_2(tmp_path, cli):
    f = tmp_path / "file"
    f.write_text("x")
    for args, msg in (
        (["--out", str(tmp_path / "a"), "--duration", "0"], "--duration must be > 0"),
        (["--out", str(tmp_path / "a"), "--patients", "0", "--controls", "0"], "not both 0"),
        (["--out", str(f)], "exists and is not a folder"),
        (["--out", str(f / "sub")], "cannot create the folder"),
    ):
        res = cli("data", "synth", *args)
        assert res.returncode == 2, (args, res.stderr)
        assert msg in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_help(cli):
    for args in (["data", "--help"], ["data", "synth", "--help"], ["data", "check", "--help"]):
        res = cli(*args)
        assert res.returncode == 0 and "usage: alanet data" in res.stdout
    assert "SYNTHETIC" in cli("data", "synth", "--help").stdout
