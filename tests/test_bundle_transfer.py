"""A bundle's transfer form: xz-compressed archives with bounded unpacking, 8-bit self-test windows."""

from __future__ import annotations

import base64
import gzip
import io
import json
import lzma
import tarfile

import numpy as np
import pytest

from alanet.convert.tinyrun import cached_tiny_run
from alanet.device import bundle as B
from alanet.device.bundle import (BundleError, dequantize_window, load_bundle, pack, quantize_window, self_test_input,
                                  unpack, validate_manifest)
from conftest import run_cli


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    run = cached_tiny_run(tmp_path_factory.getbasetemp())
    out = tmp_path_factory.mktemp("transfer") / "bundle"
    res = run_cli("convert", str(run), "--quantize", "float16", "--out", str(out))
    assert res.returncode == 0, res.stderr
    return out


def _tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_quantized_window_round_trip_is_exact_and_close():
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(180, 30)) * rng.uniform(0.01, 5, 30) + rng.normal(size=30)).astype(np.float32)
    x[:, 7] = 1.25  # a constant channel
    q = quantize_window(x)
    back = dequantize_window(json.loads(json.dumps(q)), x.shape)  # through JSON, as in a manifest
    assert back.dtype == np.float32 and back.shape == x.shape
    step = np.asarray(q["scale"], np.float32)
    assert np.all(np.abs(back - x) <= step / 2 + 1e-6 * np.abs(x))
    assert np.all(back[:, 7] == 1.25)
    assert np.array_equal(back, dequantize_window(q, x.shape))  # the same values every time
    assert len(base64.b64decode(q["b64"])) == x.size  # one byte per value


def test_quantized_window_refuses_a_wrong_size():
    q = quantize_window(np.zeros((10, 3), np.float32))
    with pytest.raises(ValueError, match="30 bytes, expected 40"):
        dequantize_window(q, (10, 4))
    with pytest.raises(ValueError, match="3 offsets / 3 scales for 2 channels"):
        dequantize_window(q, (15, 2))


def test_converter_writes_8_bit_self_tests_the_model_reproduces(tiny_bundle):
    b = load_bundle(tiny_bundle)
    m = b.manifest
    assert all("input_q8" in st and "input_b64" not in st for st in m["self_test"])
    assert b.self_test_max_diff is not None and b.self_test_max_diff <= 1e-6
    x = self_test_input(m["self_test"][0], (b.window, b.schema.n_channels))
    assert x.shape == (b.window, b.schema.n_channels)


def test_manifest_schema_takes_exactly_one_self_test_input(tiny_bundle):
    m = json.loads((tiny_bundle / "manifest.json").read_text())
    validate_manifest(m)
    st = m["self_test"][0]
    st["input_b64"] = B.encode_window(self_test_input(st, (m["window"], len(m["channels"]))))
    with pytest.raises(BundleError, match="self_test"):
        validate_manifest(m)  # both forms
    del st["input_q8"]
    validate_manifest(m)  # the float32 form of older bundles
    del st["input_b64"]
    with pytest.raises(BundleError, match="self_test"):
        validate_manifest(m)  # neither


def test_pack_writes_xz_and_unpack_reads_both_forms(tiny_bundle, tmp_path):
    archive = pack(tiny_bundle, tmp_path / "b.tar.xz")
    raw = archive.read_bytes()
    assert raw.startswith(B.XZ_MAGIC)
    plain = lzma.decompress(raw)
    assert len(raw) < len(plain) / 2  # the unrolled model's repeated operators compress
    names = ["manifest.json", "model.tflite"]
    for src in (archive, tmp_path / "plain.tar"):
        if src.suffix == ".tar":
            src.write_bytes(plain)  # a plain tar (older archives, other tools)
        dest = unpack(src, tmp_path / f"out-{src.name}")
        assert sorted(p.name for p in dest.iterdir()) == names
        for n in names:
            assert (dest / n).read_bytes() == (tiny_bundle / n).read_bytes()
    assert load_bundle(archive).model_id == load_bundle(tiny_bundle).model_id


def test_xz_bomb_stops_at_the_unpacked_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(B, "MAX_UNPACKED", 1 << 20)
    bomb = tmp_path / "bomb.tar.xz"
    bomb.write_bytes(lzma.compress(_tar({"manifest.json": b"{}", "model.tflite": b"\0" * (4 << 20)}),
                                   format=lzma.FORMAT_XZ, filters=B.XZ_FILTERS))
    assert bomb.stat().st_size < 4096
    with pytest.raises(BundleError, match="unpacks to more than 1 MiB"):
        unpack(bomb, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_xz_asking_for_much_decoder_memory_is_refused(tmp_path):
    big_window = tmp_path / "big.tar.xz"  # xz -9: a 64 MiB dictionary, 4× the decoder memory allowed
    big_window.write_bytes(lzma.compress(_tar({"manifest.json": b"{}", "model.tflite": b"x" * 100}), preset=9))
    with pytest.raises(BundleError, match="(?i)memory"):
        unpack(big_window, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("how", ["gzip", "truncated xz", "xz of junk"])
def test_other_or_damaged_archives_are_refused(tmp_path, how):
    tar = _tar({"manifest.json": b"{}", "model.tflite": b"x" * 5000})
    xz = lzma.compress(tar, format=lzma.FORMAT_XZ, filters=B.XZ_FILTERS)
    data = {"gzip": gzip.compress(tar), "truncated xz": xz[:len(xz) // 2],
            "xz of junk": lzma.compress(b"junk" * 300, format=lzma.FORMAT_XZ, filters=B.XZ_FILTERS)}[how]
    src = tmp_path / "a.tar.xz"
    src.write_bytes(data)
    with pytest.raises(BundleError):
        unpack(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["protective-demo", "pain-demo"])
def test_shipped_bundles_batch_and_travel_within_64_kib(name, tmp_path):
    """The demo bundles run every native batch size from one model and fit the fleet-transfer budget."""
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "models" / name
    archive = pack(src, tmp_path / "b.tar.xz")
    assert archive.stat().st_size <= 64 * 1024
    b = load_bundle(archive)  # the self-test runs through every native batch size
    assert b.batch_sizes == (1, 4, 16, 64) and b.manifest["route"] == "unrolled" and not b.stateful
    from alanet.device.inference import ModelRunner

    r = ModelRunner.from_bundle(b)  # outputs found by the signature names a slimmed file keeps
    assert r.has_attention
    x = self_test_input(b.manifest["self_test"][0], (b.window, b.schema.n_channels))
    np.testing.assert_allclose(r.predict(x), b.manifest["self_test"][0]["output"], atol=1e-6)
    temporal, body = r.attention()
    assert temporal.shape == (b.window,) and body.shape == (32,)


def test_a_huge_pax_header_in_a_small_xz_archive_is_refused_before_it_is_read(tmp_path):
    """tarfile reads a PAX header whole: 40 MiB of it compress to a few KiB."""
    import tracemalloc

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("manifest.json")
        info.size = 2
        info.pax_headers = {"comment": "x" * (40 << 20)}
        tar.addfile(info, io.BytesIO(b"{}"))
    src = tmp_path / "pax.tar.xz"
    src.write_bytes(lzma.compress(buf.getvalue(), format=lzma.FORMAT_XZ, filters=B.XZ_FILTERS))
    assert src.stat().st_size < 64 << 10
    tracemalloc.start()
    try:
        with pytest.raises(BundleError, match="extended header of [0-9]+ bytes"):
            unpack(src, tmp_path / "out")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20 and not (tmp_path / "out").exists()


def test_the_sender_packs_xz_or_plain_and_refuses_what_gateways_would(tiny_bundle, tmp_path, monkeypatch):
    from alanet.device.flash.sender import read_archive

    data, name = read_archive(tiny_bundle)
    assert data.startswith(B.XZ_MAGIC) and name == load_bundle(tiny_bundle).model_id
    plain, same = read_archive(tiny_bundle, plain=True)
    assert not plain.startswith(B.XZ_MAGIC) and same == name and len(plain) > len(data)
    assert tarfile.open(fileobj=io.BytesIO(plain), mode="r:").getnames()[:2] == ["manifest.json", "model.tflite"]
    monkeypatch.setattr(B, "MAX_UNPACKED", 1 << 20)
    bomb = tmp_path / "bomb.tar.xz"
    bomb.write_bytes(lzma.compress(_tar({"manifest.json": b"{}", "model.tflite": b"\0" * (4 << 20)}),
                                   format=lzma.FORMAT_XZ, filters=B.XZ_FILTERS))
    with pytest.raises(BundleError, match="not a bundle archive .*unpacks to more than 1 MiB"):
        read_archive(bomb)
