"""The C encoder (firmware) and the Python encoder produce the same bytes on the golden vectors."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from alanet.firmware_bridge import cobs
from alanet.firmware_bridge.codec import Decoder, crc16, encode_exercise, encode_frame, encode_hello, encode_raw_emg
from alanet.firmware_bridge.protocol import Frame

BRIDGE = Path(__file__).resolve().parents[1] / "firmware_bridge"
C_DIR = BRIDGE / "c"
VECTORS = json.loads((BRIDGE / "golden" / "vectors.json").read_text())["vectors"]


def python_wire(v: dict) -> bytes:
    i = v["inputs"]
    if v["kind"] == "data":
        return encode_frame(Frame(i["seq"], i["t_ms"], tuple(i["angles"]), tuple(i["emg"])))
    if v["kind"] == "hello":
        return encode_hello(
            i["seq"], i["t_ms"], i["device_id"], i["firmware"], n_angles=i["n_angles"], n_emg=i["n_emg"],
            sample_rate_hz=i["sample_rate_hz"], raw_emg_rate_hz=i["raw_emg_rate_hz"], layout=i["layout"],
        )  # fmt: skip
    if v["kind"] == "raw_emg":
        return encode_raw_emg(i["seq"], i["t_ms"], i["rate_hz"], i["samples"])
    if v["kind"] == "exercise":
        return encode_exercise(i["seq"], i["t_ms"], i["code"])
    return cobs.encode(bytes.fromhex(i["data_hex"]))


@pytest.fixture(scope="module")
def c_output(tmp_path_factory) -> dict[str, str]:
    gcc = shutil.which("gcc")
    assert gcc, "gcc is required to check the C encoder against the golden vectors (apt-get install gcc)"
    exe = tmp_path_factory.mktemp("cwire") / "test_alanet_wire"
    sources = sorted(str(p) for p in C_DIR.glob("*.c"))
    build = subprocess.run(
        [gcc, "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2", f"-I{C_DIR}", *sources, "-o", str(exe)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert build.returncode == 0, f"C build failed:\n{build.stderr}"
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, f"C self-checks failed:\n{run.stderr}"
    out = {}
    for line in run.stdout.splitlines():
        name, _, hexstr = line.partition(" ")
        out[name] = hexstr
    return out


def test_crc_check_value_matches_vectors():
    doc = json.loads((BRIDGE / "golden" / "vectors.json").read_text())
    assert crc16(doc["crc_check"]["input"].encode()) == int(doc["crc_check"]["crc16"], 16)


@pytest.mark.parametrize("vec", VECTORS, ids=[v["name"] for v in VECTORS])
def test_python_encoder_matches_golden(vec):
    assert python_wire(vec).hex() == vec["hex"]


@pytest.mark.parametrize("vec", VECTORS, ids=[v["name"] for v in VECTORS])
def test_c_encoder_matches_golden(vec, c_output):
    assert vec["name"] in c_output, f"the C test program printed no vector {vec['name']!r}"
    assert c_output[vec["name"]] == vec["hex"]


def test_c_prints_only_known_vectors(c_output):
    assert set(c_output) == {v["name"] for v in VECTORS}


def test_golden_packets_decode_to_their_inputs():
    wire = b"".join(bytes.fromhex(v["hex"]) for v in VECTORS if v["kind"] != "cobs")
    dec = Decoder()
    out = dec.feed(wire)
    assert len(out) == sum(v["kind"] != "cobs" for v in VECTORS)
    assert dec.stats.resyncs == 0
