"""alanet convert / keygen: bad input → one-line error, exit 2, nothing written."""

from __future__ import annotations

import json
import shutil
import stat

import pytest

from alanet.convert.tinyrun import cached_tiny_run
from conftest import run_cli


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    return cached_tiny_run(tmp_path_factory.getbasetemp())


def _copy_run(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    return run


def _assert_refused(res, out, *needles):
    assert res.returncode == 2, (res.stdout, res.stderr)
    line = res.stderr.strip().splitlines()[-1]
    assert line.startswith("alanet convert: error:") or "error:" in line
    for n in needles:
        assert n in res.stderr, res.stderr
    assert not out.exists()
    assert not any(p.name.startswith(f".{out.name}") for p in out.parent.iterdir())


def test_run_dir_without_model(tiny_run, tmp_path):
    run = _copy_run(tiny_run, tmp_path)
    (run / "model.keras").unlink()
    out = tmp_path / "b"
    _assert_refused(run_cli("convert", str(run), "--quantize", "float32", "--out", str(out)), out, "model.keras: missing")


def test_classic_model_is_refused(tiny_run, tmp_path):
    run = _copy_run(tiny_run, tmp_path)
    (run / "model.keras").unlink()
    (run / "model.pkl").write_bytes(b"not really a pickle")
    out = tmp_path / "b"
    _assert_refused(run_cli("convert", str(run), "--quantize", "float16", "--out", str(out)), out, "classic")


def test_not_a_directory(tmp_path):
    out = tmp_path / "b"
    _assert_refused(run_cli("convert", str(tmp_path / "nope"), "--quantize", "float16", "--out", str(out)), out,
                    "not a directory")


def test_unknown_quantisation(tiny_run, tmp_path):
    out = tmp_path / "b"
    res = run_cli("convert", str(tiny_run), "--quantize", "int4", "--out", str(out))
    assert res.returncode == 2 and "invalid choice" in res.stderr
    assert not out.exists()


def test_config_missing_field(tiny_run, tmp_path):
    run = _copy_run(tiny_run, tmp_path)
    cfg = json.loads((run / "config.json").read_text())
    del cfg["window"]
    (run / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "b"
    _assert_refused(run_cli("convert", str(run), "--quantize", "float16", "--out", str(out)), out,
                    "config.json: field 'window' missing")


def test_parity_windows_wrong_shape(tiny_run, tmp_path):
    import numpy as np

    run = _copy_run(tiny_run, tmp_path)
    np.savez(run / "parity_windows.npz", calib_x=np.zeros((4, 5, 6), np.float32), test_x=np.zeros((4, 5, 6), np.float32))
    out = tmp_path / "b"
    _assert_refused(run_cli("convert", str(run), "--quantize", "float16", "--out", str(out)), out, "calib_x has shape")


def test_corrupt_model_file(tiny_run, tmp_path):
    run = _copy_run(tiny_run, tmp_path)
    (run / "model.keras").write_bytes(b"garbage")
    out = tmp_path / "b"
    _assert_refused(run_cli("convert", str(run), "--quantize", "float16", "--out", str(out)), out,
                    "cannot load the Keras model")


def test_bad_signing_key(tiny_run, tmp_path):
    key = tmp_path / "key.pem"
    key.write_text("not a key")
    out = tmp_path / "b"
    _assert_refused(run_cli("convert", str(tiny_run), "--quantize", "float16", "--out", str(out), "--sign", str(key)),
                    out, "key.pem")


def test_existing_output_needs_force(tiny_run, tmp_path):
    out = tmp_path / "b"
    out.mkdir()
    (out / "keep").write_text("x")
    res = run_cli("convert", str(tiny_run), "--quantize", "float16", "--out", str(out))
    assert res.returncode == 2 and "already exists" in res.stderr
    assert [p.name for p in out.iterdir()] == ["keep"]


def test_keygen_writes_private_0600_and_public(tmp_path):
    key = tmp_path / "keys" / "signing.pem"
    res = run_cli("keygen", "--out", str(key))
    assert res.returncode == 0, res.stderr
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in key.read_bytes()
    assert b"PUBLIC KEY" in (tmp_path / "keys" / "signing.pem.pub").read_bytes()
    before = key.read_bytes()
    res = run_cli("keygen", "--out", str(key))
    assert res.returncode == 2 and "already exists" in res.stderr
    assert key.read_bytes() == before


@pytest.mark.parametrize("flag, needle", [("raise_threshold=1.5", "greater than the maximum"),
                                          ("foo=1", "unknown key(s) foo"), ("novalue", "expected KEY=VALUE"),
                                          ("clear_threshold=0.9", "clear_threshold <= raise_threshold"),
                                          ("warmup_s=-5", "--decision: warmup_s: -5 is less than the minimum of 0")])
def test_bad_decision_override(tiny_run, tmp_path, flag, needle):
    out = tmp_path / "b"
    _assert_refused(run_cli("convert", str(tiny_run), "--quantize", "float16", "--out", str(out), "--decision", flag),
                    out, needle)


@pytest.mark.parametrize("args, needle", [(["--bundle-version", "-1"], "--bundle-version: must be >= 0"),
                                          (["--for-gateway", "ward/3"], "--for-gateway: 'ward/3' is not a gateway id")])
def test_bad_bundle_version_or_gateway_list(tiny_run, tmp_path, args, needle):
    out = tmp_path / "b"
    _assert_refused(run_cli("convert", str(tiny_run), "--quantize", "float16", "--out", str(out), *args), out, needle)


def test_fused_route_refuses_what_it_cannot_rebuild(tiny_run, tmp_path):
    out = tmp_path / "b"
    _assert_refused(run_cli("convert", str(tiny_run), "--quantize", "int8", "--route", "fused", "--out", str(out)),
                    out, "--route fused: int8 is not supported")
    _assert_refused(run_cli("convert", str(tiny_run), "--quantize", "float16", "--batch-sizes", "1,0", "--out",
                            str(out)), out, "--batch-sizes: 0 is out of range")
    pytest.importorskip("tf_keras")
    _assert_refused(run_cli("convert", str(tiny_run), "--quantize", "float16", "--route", "fused", "--out", str(out)),
                    out, "--route fused: rebuilds alanet only", "tiny_lstm")
